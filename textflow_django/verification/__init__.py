"""The verification service: the one place where the product's rules live.

Views, forms and your own code call :func:`send_code` and :func:`check_code` (and, for
codes another package makes and checks, ``send_code(code=...)`` then :func:`confirm`);
none of them re-implements a rule. Whatever the backend and ``VERIFY_MODE``:

- the number is normalised to E.164 and must pass the country rules (``phone.py``);
- sends are refused inside ``RESEND_COOLDOWN`` and past ``SEND_LIMITS`` (per number, per
  client address and per network), and checks past ``FAILED_CHECK_LIMITS`` (per address and
  network: never per number, which anyone could spend), in rolling windows shared by every
  process; a wrong-code slot is taken before the code is compared;
- a code is bound to the client that asked for it (``verification_id``, or its session):
  nobody else's guesses reach it, and a caller with no code is answered as a wrong code;
- a verification locks after ``MAX_ATTEMPTS`` wrong codes and then refuses even the right
  code without asking TextFlow; a code verifies once, and its token proves the number once;
- a TextFlow failure that certainly sent nothing consumes nothing (retry at once); one that
  may have sent the SMS keeps what it took and is recorded, so a late code verifies;
- codes, handles and tokens are never stored, logged or put in an exception in clear.

The package: ``_sending`` and ``_checking`` (the rules of a send and of a check, in order),
``_service`` (the rules both share), ``_texts`` (the code SMS's wording), ``_failures`` (TextFlow
failures and store outages as refusals), ``_outcomes`` (the ``textflow.send_code.*`` and
``textflow.verify_code.*`` event of every call), ``tokens`` (proof of a verified number),
``_secrets`` (handles and tokens, kept as digests), ``odds`` (the guessing arithmetic); the
client's address comes from ``textflow_django._client_ip``.

Every refusal is a :class:`~textflow_django.exceptions.VerificationError` subclass (with
``code``, ``status_code`` and ``retry_after``) or, for a malformed number, a
:class:`~textflow_django.phone.InvalidPhoneNumberError` (a ``ValidationError``).
"""

from .._client_ip import client_ip
from ._checking import Verified, check_code, confirm
from ._sending import CodeSent, send_code
from ._service import LOCAL_CODE_LENGTH, code_validator
from ._texts import code_template_problem, code_text
from .tokens import consume_token, make_token, phone_from_token

__all__ = [
    "LOCAL_CODE_LENGTH",
    "CodeSent",
    "Verified",
    "check_code",
    "client_ip",
    "code_template_problem",
    "code_text",
    "code_validator",
    "confirm",
    "consume_token",
    "make_token",
    "phone_from_token",
    "send_code",
]
