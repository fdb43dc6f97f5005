"""App configuration: registers the system checks, and the Prometheus metrics when
``prometheus_client`` is installed and ``TEXTFLOW["METRICS"]`` is true."""

from __future__ import annotations

from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _

__all__ = ["TextFlowConfig"]


class TextFlowConfig(AppConfig):
    name = "textflow_django"
    label = "textflow"
    verbose_name = _("TextFlow SMS")
    # Pinned so a project's DEFAULT_AUTO_FIELD never produces a migration for this app.
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from . import checks  # registers the checks
        from .conf import conf

        if conf.METRICS and checks.metrics_available():
            from .contrib import prometheus

            prometheus.install()  # idempotent: ready() may run again (tests)
