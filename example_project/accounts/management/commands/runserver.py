"""``manage.py runserver`` with a listen queue sized for bursts of requests.

Django's dev server accepts from a queue of 10 connections. A burst of more at once (a
page's parallel fetches, or the 30 simultaneous verify-codes of the example's load test)
overflows it, and the kernel then drops or resets the extra connections: the client sees
"connection reset", although nothing went wrong in the site. This command is the staticfiles
app's runserver (which serves the admin's files while DEBUG is on) with a longer queue; the
``accounts`` app comes before ``django.contrib.staticfiles`` in ``INSTALLED_APPS`` so that
its ``runserver`` is the one ``manage.py`` runs.
"""

from __future__ import annotations

from django.contrib.staticfiles.management.commands.runserver import (
    Command as StaticfilesRunserver,
)
from django.core.servers.basehttp import WSGIServer

__all__ = ["Command"]


class DemoWSGIServer(WSGIServer):
    """Django's dev server with room for 128 connections waiting to be accepted."""

    request_queue_size = 128


class Command(StaticfilesRunserver):
    server_cls = DemoWSGIServer
