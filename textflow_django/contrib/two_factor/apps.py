"""App configuration: the system checks (:mod:`.checks`) and the receivers that report the
tokens two-factor accepted (:mod:`._receivers`)."""

from __future__ import annotations

from django.apps import AppConfig


class TwoFactorConfig(AppConfig):
    name = "textflow_django.contrib.two_factor"
    # "two_factor" is django-two-factor-auth's own label.
    label = "textflow_two_factor"
    verbose_name = "TextFlow for django-two-factor-auth"

    def ready(self) -> None:
        from . import _receivers, checks  # noqa: F401  (registers the checks)

        _receivers.connect()
