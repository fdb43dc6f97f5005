"""Verification tokens: a signed, timestamped proof that a number was verified, which
verify-code hands out and a later request (signup) turns back into the number.
"""

from __future__ import annotations

import datetime as dt

from django.core import signing

from ..conf import conf
from ..exceptions import InvalidToken
from ..models import PhoneVerification

__all__ = ["make_token", "phone_from_token"]

_TOKEN_SALT = "textflow_django.verification.token"  # noqa: S105 - a namespace, not a secret


def make_token(verification: PhoneVerification) -> str:
    """A signed, timestamped proof that ``verification.phone_number`` was verified."""
    return signing.dumps({"p": verification.phone_number, "v": verification.pk}, salt=_TOKEN_SALT)


def phone_from_token(token: str, max_age: int | dt.timedelta | None = None) -> str:
    """The E.164 number a token proves, if it is genuine and younger than ``max_age``
    (default ``TOKEN_MAX_AGE``). Raises ``InvalidToken``."""
    if not isinstance(token, str) or not token or len(token) > 1000:
        raise InvalidToken()
    try:
        data = signing.loads(
            token, salt=_TOKEN_SALT, max_age=conf.TOKEN_MAX_AGE if max_age is None else max_age
        )
    except signing.BadSignature as err:  # SignatureExpired is a BadSignature
        raise InvalidToken() from err
    number = data.get("p") if isinstance(data, dict) else None
    if not isinstance(number, str):
        raise InvalidToken()
    return number
