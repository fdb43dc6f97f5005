"""A user's profile with a phone number, and the numbers proven by SMS awaiting a signup."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from textflow_django.fields import PhoneNumberField


class Profile(models.Model):
    """One per user. ``phone_verified`` is only ever set from a ``phone_verified`` signal:
    directly by the receiver for a signed-in user, or through the :class:`VerifiedNumber` it
    recorded for a signup."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="profile"
    )
    phone = PhoneNumberField("phone number")
    phone_verified = models.BooleanField("phone verified", default=False)

    def __str__(self) -> str:
        return f"{self.user} {self.phone}{' (verified)' if self.phone_verified else ''}"


class VerifiedNumber(models.Model):
    """A number someone proved by SMS before having an account, recorded by the
    ``phone_verified`` receiver under the token the verification answered.

    A signup presents the token: it must be genuine, young and unspent (``consume_token``
    spends it), *and* match a row here that no account has claimed yet, so one
    verification makes one account.
    Only a SHA-256 of the token is kept: a copy of this table proves nothing.
    """

    phone = PhoneNumberField("phone number")
    token_digest = models.CharField(max_length=64, unique=True, editable=False)
    verified_at = models.DateTimeField(auto_now_add=True)
    claimed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )

    def __str__(self) -> str:
        return f"{self.phone} verified {self.verified_at:%Y-%m-%d %H:%M}"
