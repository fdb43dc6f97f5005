"""Models: phone verifications and the database store of rate-limit counters.

A ``PhoneVerification`` never holds a code in clear. In ``"local"`` mode it keeps a keyed hash
of the code (``code_hash``); in ``"textflow"`` mode TextFlow holds the code and the row keeps
nothing of it at all.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils.translation import gettext_lazy as _

from .fields import PhoneNumberField

__all__ = ["PhoneVerification", "RateLimitCounter"]


class PhoneVerification(models.Model):
    """One code sent to one number, and what became of it."""

    class Status(models.TextChoices):
        PENDING = "pending", _("pending")
        VERIFIED = "verified", _("verified")
        LOCKED = "locked", _("locked (too many wrong codes)")
        SUPERSEDED = "superseded", _("superseded by a newer code")

    class Mode(models.TextChoices):
        TEXTFLOW = "textflow", _("TextFlow holds the code")
        LOCAL = "local", _("this site holds a hash of the code")

    phone_number = PhoneNumberField(_("phone number"), db_index=True)
    status = models.CharField(
        _("status"), max_length=16, choices=Status.choices, default=Status.PENDING
    )
    mode = models.CharField(_("mode"), max_length=16, choices=Mode.choices)
    attempts = models.PositiveIntegerField(_("wrong codes"), default=0)
    #: Keyed hash of the code in "local" mode ("" in "textflow" mode). Never the code itself.
    code_hash = models.CharField(max_length=128, blank=True, editable=False)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        verbose_name=_("user"),
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="phone_verifications",
    )
    client_ip = models.GenericIPAddressField(_("client IP"), null=True, blank=True)
    created_at = models.DateTimeField(_("created"), auto_now_add=True)
    expires_at = models.DateTimeField(_("expires"))
    verified_at = models.DateTimeField(_("verified"), null=True, blank=True)

    class Meta:
        verbose_name = _("phone verification")
        verbose_name_plural = _("phone verifications")
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["phone_number", "status"], name="textflow_pv_number_status")
        ]

    def __str__(self) -> str:
        return f"{self.phone_number} ({self.get_status_display()})"


class RateLimitCounter(models.Model):
    """A counter of the database rate-limit store (``TEXTFLOW["RATELIMIT_STORE"] = "database"``).

    Rows are keyed by limit and window; expired rows are purged as new ones are written.
    """

    key = models.CharField(max_length=200, unique=True)
    count = models.PositiveIntegerField(default=0)
    expires_at = models.DateTimeField(db_index=True)

    class Meta:
        verbose_name = _("rate-limit counter")
        verbose_name_plural = _("rate-limit counters")

    def __str__(self) -> str:
        return f"{self.key}={self.count}"
