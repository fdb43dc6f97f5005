"""App configuration: the phone-number model, the system checks (:mod:`.checks`) and the
receiver that erases its rows of an erased number (:mod:`._erasure`)."""

from __future__ import annotations

from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class AllauthConfig(AppConfig):
    name = "textflow_django.contrib.allauth"
    # "account" and "allauth" are allauth's own labels.
    label = "textflow_allauth"
    verbose_name = _("TextFlow for django-allauth")
    # Pinned so a project's DEFAULT_AUTO_FIELD never produces a migration for this app.
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from . import _erasure, checks  # noqa: F401  (registers the checks)

        _erasure.connect()
