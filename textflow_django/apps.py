"""App configuration: registers the system checks."""

from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class TextFlowConfig(AppConfig):
    name = "textflow_django"
    label = "textflow"
    verbose_name = _("TextFlow SMS")
    # Pinned so a project's DEFAULT_AUTO_FIELD never produces a migration for this app.
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from . import checks  # noqa: F401  (registers the checks)
