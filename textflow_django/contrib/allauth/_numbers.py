"""Where a user's phone number is kept: the app's :class:`~.models.PhoneNumber` rows, or two
fields of the project's user model (``TEXTFLOW["ALLAUTH_PHONE_FIELD"]`` and
``TEXTFLOW["ALLAUTH_PHONE_VERIFIED_FIELD"]``, default ``<phone field>_verified``).

Numbers arrive here in E.164 (allauth's phone field is cleaned by the adapter's
``clean_phone``) and are normalised once more, so a caller that skipped the form cannot
store a national-format number that lookups would then miss. A number identifies a user
only once verified: an unverified number is something somebody typed.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.db import transaction

from ...conf import conf
from ...phone import InvalidPhoneNumberError, normalize
from .models import PhoneNumber

__all__ = ["fields", "find_user", "get_phone", "set_phone"]


def fields() -> tuple[str, str] | None:
    """The user model's number and verified-flag fields, or ``None`` for the app's model."""
    name = conf.ALLAUTH_PHONE_FIELD
    if name is None:
        return None
    return name, conf.ALLAUTH_PHONE_VERIFIED_FIELD or f"{name}_verified"


def _e164(number: str) -> str:
    # Stored numbers stay valid when the country rules change: those apply to sends.
    return normalize(number, check_countries=False)


def get_phone(user: Any) -> tuple[str, bool] | None:
    """``(number, verified)`` of ``user``, or ``None`` when it has no number."""
    on_user = fields()
    if on_user is not None:
        number = getattr(user, on_user[0], None)
        return (str(number), bool(getattr(user, on_user[1]))) if number else None
    if user.pk is None:
        return None
    # One row per user as the adapter writes them; were there more, the verified one.
    row = PhoneNumber.objects.filter(user=user).order_by("-verified", "-pk").first()
    return None if row is None else (row.number, row.verified)


def set_phone(user: Any, number: str, verified: bool) -> None:
    """Make ``number`` the number of ``user`` (its only one), verified or not.

    Raises ``IntegrityError`` when ``verified`` and another user's verified number is the
    same: allauth asks ``get_user_by_phone`` first, so only a race gets here, and the
    number must not silently change hands.
    """
    number = _e164(number)
    on_user = fields()
    if on_user is not None:
        setattr(user, on_user[0], number)
        setattr(user, on_user[1], verified)
        user.save(update_fields=list(on_user))
        return
    with transaction.atomic():
        PhoneNumber.objects.filter(user=user).exclude(number=number).delete()
        PhoneNumber.objects.update_or_create(
            user=user, number=number, defaults={"verified": verified}
        )


def find_user(number: str) -> Any:
    """The user whose *verified* number ``number`` is, or ``None`` (also for what is no
    phone number: allauth's login form asks about whatever looks like one)."""
    try:
        number = _e164(number)
    except InvalidPhoneNumberError:
        return None
    User = get_user_model()
    on_user = fields()
    if on_user is not None:
        return User._default_manager.filter(**{on_user[0]: number, on_user[1]: True}).first()
    row = PhoneNumber.objects.filter(number=number, verified=True).select_related("user").first()
    return None if row is None else row.user
