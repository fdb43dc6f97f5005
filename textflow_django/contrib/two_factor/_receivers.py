"""Report the tokens two-factor accepted with :func:`textflow_django.verification.confirm`,
so the Fraud Guard and the insights count the SMS as used (a two-factor SMS nobody confirms
counts against its destination, as SMS pumping does).

Two moments, since two-factor checks its tokens itself and says so in two ways:

- a login with a phone token: two-factor's ``user_verified`` signal, with the device used
  (also sent for a browser two-factor remembers, which confirms a code only if one is
  pending for the number: a harmless miscount, the owner having logged in);
- a phone set up (the setup wizard, or a backup phone): the ``PhoneDevice`` is saved for
  the first time once its token was right. A device another user creates (staff in the
  admin) confirms nothing; with no request known (the shell), the device is taken as set up.

Only SMS devices (``method == "sms"``) are reported. Confirming never breaks a login: a
number ``confirm`` cannot take (a country no longer accepted) or a store outage is logged
and passed over.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.db.models.signals import post_save
from django.http import HttpRequest
from two_factor.middleware.threadlocals import (  # type: ignore[import-untyped, unused-ignore]
    get_current_request,
)
from two_factor.plugins.phonenumber.models import (  # type: ignore[import-untyped, unused-ignore]
    PhoneDevice,
)
from two_factor.signals import user_verified  # type: ignore[import-untyped, unused-ignore]

from ... import verification
from ..._events import emit
from ...exceptions import VerificationError
from .gateway import e164


def connect() -> None:
    """Connect the receivers (the app's ``ready()``); idempotent."""
    user_verified.connect(on_user_verified, dispatch_uid="textflow_two_factor_login")
    post_save.connect(
        on_phone_device_saved, sender=PhoneDevice, dispatch_uid="textflow_two_factor_setup"
    )


def on_user_verified(
    sender: object, request: HttpRequest, user: Any, device: Any, **kwargs: Any
) -> None:
    """Two-factor logged ``user`` in with ``device``'s token."""
    if _is_sms(device):
        _confirm(device, request, user)


def on_phone_device_saved(
    sender: object, instance: Any, created: bool, raw: bool = False, **kwargs: Any
) -> None:
    """A ``PhoneDevice`` was saved: its first save ends two-factor's setup wizards, which
    save it only once its token was right."""
    if not created or raw or not _is_sms(instance):
        return
    request: HttpRequest | None = get_current_request()
    if request is not None and _user_pk(request) != instance.user_id:
        return  # set up for someone else (staff in the admin): no token was entered
    _confirm(instance, request, instance.user)


def _user_pk(request: HttpRequest) -> object:
    return getattr(getattr(request, "user", None), "pk", None)


def _is_sms(device: object) -> bool:
    return isinstance(device, PhoneDevice) and device.method == "sms"


def _confirm(device: Any, request: HttpRequest | None, user: Any) -> None:
    try:
        verification.confirm(e164(device.number), request=request, user=user)
    except (VerificationError, ValidationError) as err:
        # Never a reason to refuse a login two-factor accepted; the Fraud Guard misses one.
        emit(
            "textflow.two_factor.confirm_failed",
            device=device.pk,
            reason=getattr(err, "code", None) or type(err).__name__,
        )
