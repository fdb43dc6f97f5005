"""``manage.py demo_admin``: make sure the demo's staff account exists (for the bulk page)."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand

# UNSAFE for production: a well-known password. This command exists for the local demo only.
DEMO_ADMIN = ("admin", "admin")


class Command(BaseCommand):
    help = "Create the demo's superuser admin/admin if no user of that name exists."

    def handle(self, *args: Any, **options: Any) -> None:
        username, password = DEMO_ADMIN
        User = get_user_model()
        if User._default_manager.filter(username=username).exists():
            return
        User._default_manager.create_superuser(username=username, password=password, email="")
        self.stdout.write(f"Created the demo's staff user {username!r} (password {password!r}).")
