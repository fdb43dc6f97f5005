"""The verification service: the one place where the product's rules live.

Views, forms and your own code call :func:`send_code` and :func:`check_code`;
none of them re-implements a rule. Whatever the backend and ``VERIFY_MODE``:

- the number is normalised to E.164 and must pass the country rules (``phone.py``);
- sends are refused inside ``RESEND_COOLDOWN`` and past ``SEND_LIMITS`` (per number and per
  client IP), and checks past ``FAILED_CHECK_LIMITS``, with counters shared by every process;
- a verification locks after ``MAX_ATTEMPTS`` wrong codes and then refuses even the right
  code without asking TextFlow; a code verifies once;
- a TextFlow failure consumes nothing (no verification, cooldown or cap): retry at once;
- codes are never stored, logged or put in an exception in clear.

The package: ``_service`` (the rules of a send and a check), ``_failures`` (TextFlow
failures and store outages as refusals), ``tokens`` (proof of a verified number); the
client's address comes from ``textflow_django._client_ip``.

Every refusal is a :class:`~textflow_django.exceptions.VerificationError` subclass (with
``code``, ``status_code`` and ``retry_after``) or, for a malformed number, a
:class:`~textflow_django.phone.InvalidPhoneNumberError` (a ``ValidationError``).
"""

from .._client_ip import client_ip
from ._service import (
    LOCAL_CODE_LENGTH,
    CodeSent,
    Verified,
    check_code,
    code_validator,
    send_code,
)
from .tokens import make_token, phone_from_token

__all__ = [
    "LOCAL_CODE_LENGTH",
    "CodeSent",
    "Verified",
    "check_code",
    "client_ip",
    "code_validator",
    "make_token",
    "phone_from_token",
    "send_code",
]
