"""Signals of textflow-django. Receivers must accept ``**kwargs``: arguments may be added.

from django.dispatch import receiver
from textflow_django.signals import phone_verified

@receiver(phone_verified)
def mark_profile_verified(sender, phone_number, user, **kwargs):
    ...
"""

from __future__ import annotations

from django.dispatch import Signal

__all__ = [
    "bulk_job_finished",
    "code_sent",
    "destination_blocked",
    "opted_in",
    "opted_out",
    "phone_number_erased",
    "phone_verified",
    "rate_limited",
    "sms_received",
    "verification_failed",
]

#: A verification code was sent.
#: Arguments: ``sender`` (the ``PhoneVerification`` class), ``verification`` (the row),
#: ``phone_number`` (E.164), ``user`` (or None), ``request`` (or None).
code_sent = Signal()

#: A number was verified. Sent exactly once per successful verification, right after the
#: verification row is saved (inside the caller's transaction, if there is one, so a
#: receiver's database writes commit or roll back with it).
#: Arguments: ``sender`` (the ``PhoneVerification`` class), ``verification``,
#: ``phone_number`` (E.164), ``user`` (or None), ``request`` (or None), ``token`` (the signed
#: proof returned to the client).
phone_verified = Signal()

#: A check failed. Arguments: ``sender`` (the ``PhoneVerification`` class),
#: ``phone_number`` (E.164), ``reason`` (``"invalid_code"``, ``"expired"``,
#: ``"too_many_attempts"`` or ``"rate_limited"``), ``verification`` (or None), ``user``,
#: ``request``.
verification_failed = Signal()

#: A send or a check was refused by a cap (``SEND_LIMITS``, ``FAILED_CHECK_LIMITS``).
#: Arguments: ``sender`` (the ``PhoneVerification`` class), ``phone_number`` (E.164),
#: ``action`` (``"send"`` or ``"check"``), ``scopes`` (the scopes at their cap, a tuple of
#: ``"number"``, ``"ip"``, ``"network"``), ``retry_after`` (seconds), ``request`` (or None).
#: A ``"send"`` refused by the ``"number"`` scope is what a stranger can still do to a
#: number's owner: spend its codes, and make the owner wait.
rate_limited = Signal()

#: The Fraud Guard blocked a destination (for alerting). Arguments: ``sender`` (the
#: ``FraudBlock`` class), ``block`` (the row: ``scope`` ``"prefix"`` or ``"country"``,
#: ``value``, ``reason``, ``sends``, ``conversions``, ``until``).
destination_blocked = Signal()

#: A bulk SMS job ended. Arguments: ``sender`` (the ``BulkSMSJob`` class), ``job``.
bulk_job_finished = Signal()

#: An SMS reply arrived through the replies webhook and was stored (once per delivery: a
#: delivery TextFlow retries does not fire it again). Arguments: ``sender`` (the ``SMSReply``
#: class), ``reply`` (the row), ``phone_number`` (E.164), ``text``.
sms_received = Signal()

#: A number joined the opt-out list (``OptOut``). Sent once, when the row is created: an
#: opt-out of a number already opted out fires nothing. Arguments: ``sender`` (the ``OptOut``
#: class), ``phone_number`` (E.164), ``source`` (``"reply"``, ``"admin"``, ``"import"`` or
#: ``"api"``).
opted_out = Signal()

#: A number left the opt-out list. Sent once, when the row is deleted. Arguments: ``sender``
#: (the ``OptOut`` class), ``phone_number`` (E.164), ``source``.
opted_in = Signal()

#: ``privacy.erase_phone_number`` erased a number's rows; receivers erase what they keep of
#: it (the allauth integration's ``PhoneNumber`` does). Arguments: ``sender`` (the function's
#: module name), ``phone_number`` (E.164), ``erased`` (a dict: what was removed so far,
#: ``{label: count}``; a receiver adds its own counts to it), ``dry_run`` (True for a dry
#: run: the erasure's transaction is rolled back afterwards, so a receiver's database writes
#: are undone and its counts still exact; one that does anything else must skip it then).
#: Sent inside the erasure's transaction: a receiver that raises undoes the erasure.
phone_number_erased = Signal()
