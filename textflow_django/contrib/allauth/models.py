"""Where a user's phone number lives, unless ``TEXTFLOW["ALLAUTH_PHONE_FIELD"]`` names a
field of the user model instead: :class:`PhoneNumber`."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils.translation import gettext_lazy as _
from django.utils.translation import pgettext_lazy

from ...fields import PhoneNumberField

__all__ = ["PhoneNumber"]


class PhoneNumber(models.Model):
    """A user's phone number in E.164, and whether its owner proved it with a code.

    The adapter keeps one row per user (allauth knows one number per user: ``set_phone``
    replaces it). The database holds what must never break whatever writes the rows: a user
    has at most one *verified* number, and a verified number belongs to one user. Unverified
    numbers are not unique: anyone may type anyone's number, and that must not lock its
    owner out; they identify nobody (``get_user_by_phone`` finds verified numbers only).
    """

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        related_name="textflow_phone_numbers",
        verbose_name=_("user"),
    )
    number = PhoneNumberField(_("phone number"))
    # The adjective of one number: "verified" alone is the admin's count column's plural.
    verified = models.BooleanField(pgettext_lazy("phone number", "verified"), default=False)
    created_at = models.DateTimeField(_("created"), auto_now_add=True)

    class Meta:
        verbose_name = _("phone number")
        verbose_name_plural = _("phone numbers")
        constraints = [
            models.UniqueConstraint(
                fields=["user", "number"], name="textflow_allauth_one_row_per_user_number"
            ),
            models.UniqueConstraint(
                fields=["user"],
                condition=Q(verified=True),
                name="textflow_allauth_one_verified_number_per_user",
            ),
            models.UniqueConstraint(
                fields=["number"],
                condition=Q(verified=True),
                name="textflow_allauth_verified_number_unique",
            ),
        ]

    def __str__(self) -> str:
        return str(self.number)
