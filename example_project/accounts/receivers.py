"""The example's receiver of ``phone_verified``: the one place a number becomes verified."""

from __future__ import annotations

from typing import Any

from django.dispatch import receiver
from textflow_django.signals import phone_verified

from .models import Profile, VerifiedNumber
from .services import token_digest


@receiver(phone_verified, dispatch_uid="accounts.record_verified_number")
def record_verified_number(
    sender: Any, phone_number: str, token: str, user: Any = None, **kwargs: Any
) -> None:
    """Record the proof for a signup to claim; for a signed-in user, verify their profile.

    Only the profile of the user who verified the number is marked: someone else's profile
    that happens to hold the same number proves nothing about its owner.
    """
    VerifiedNumber.objects.create(phone=phone_number, token_digest=token_digest(token))
    if user is not None:
        Profile.objects.update_or_create(
            user=user, defaults={"phone": phone_number, "phone_verified": True}
        )
