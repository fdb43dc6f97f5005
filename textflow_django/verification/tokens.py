"""Verification tokens: an opaque, single-use proof that a number was verified, which
verify-code hands out and a later request (signup) turns back into the number.

A token is 192 random bits; only its SHA-256 digest is stored, on the verification it proves.
It reveals nothing (no number, no id) and is accepted while younger than ``TOKEN_MAX_AGE``
and not yet consumed. :func:`consume_token` spends it atomically: of two requests presenting
the same token, one gets the number and the other ``InvalidToken``. With
``TOKEN_SESSION_BINDING``, a token verified in a session is accepted only from that session
(a verifying request without a session yet is given one; a call with no request at all, the
site's own, makes an unbound token).
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

from django.utils import timezone

from ..conf import conf
from ..exceptions import InvalidToken
from ..models import PhoneVerification
from ._secrets import MAX_SECRET_LENGTH, digest, new_secret, session_digest

if TYPE_CHECKING:
    from django.http import HttpRequest

__all__ = ["consume_token", "make_token", "phone_from_token", "token_fields"]


def token_fields(request: HttpRequest | None) -> tuple[str, dict[str, str]]:
    """A fresh token and the fields that store it on its verification (its digest, and the
    session it is bound to when ``TOKEN_SESSION_BINDING`` is on), for the caller's UPDATE."""
    token, token_hash = new_secret()
    bound = ""
    if conf.TOKEN_SESSION_BINDING:
        session = getattr(request, "session", None)
        if session is not None and not session.session_key:
            # A client with no session yet (an API client passing verification_id) gets one
            # now, so the token is bound to it; SessionMiddleware then sends its cookie.
            session.save()
            session.modified = True
        bound = session_digest(request)
    return token, {"token_hash": token_hash, "token_session": bound}


def make_token(verification: PhoneVerification, request: HttpRequest | None = None) -> str:
    """A fresh token proving that ``verification`` (a verified one) verified its number; it
    replaces the verification's earlier token, if any. Raises ``InvalidToken`` when the
    verification is not verified."""
    token, fields = token_fields(request)
    updated = PhoneVerification.objects.filter(
        pk=verification.pk, status=PhoneVerification.Status.VERIFIED
    ).update(token_used_at=None, **fields)
    if not updated:
        raise InvalidToken()
    return token


def _find(
    token: object, max_age: int | dt.timedelta | None, request: HttpRequest | None
) -> PhoneVerification:
    """The verification a live, unspent token proves, or ``InvalidToken``."""
    if not isinstance(token, str) or not token or len(token) > MAX_SECRET_LENGTH:
        raise InvalidToken()
    age = conf.TOKEN_MAX_AGE if max_age is None else max_age
    if not isinstance(age, dt.timedelta):
        age = dt.timedelta(seconds=age)
    verification = (
        PhoneVerification.objects.filter(
            token_hash=digest(token),
            status=PhoneVerification.Status.VERIFIED,
            token_used_at__isnull=True,
            verified_at__gt=timezone.now() - age,
        )
        .only("pk", "phone_number", "token_session")
        .first()
    )
    if verification is None:
        raise InvalidToken()
    if verification.token_session and verification.token_session != session_digest(request):
        raise InvalidToken()  # bound to another session (or presented without one)
    return verification


def phone_from_token(
    token: str,
    max_age: int | dt.timedelta | None = None,
    *,
    consume: bool = False,
    request: HttpRequest | None = None,
) -> str:
    """The E.164 number a token proves, if it is genuine, unspent and younger than
    ``max_age`` (default ``TOKEN_MAX_AGE``); with ``consume=True`` it is spent too (see
    :func:`consume_token`). ``request``: the request presenting it, needed when tokens are
    bound to sessions. Raises ``InvalidToken``."""
    if consume:
        return consume_token(token, max_age, request=request)
    return str(_find(token, max_age, request).phone_number)


def consume_token(
    token: str,
    max_age: int | dt.timedelta | None = None,
    *,
    request: HttpRequest | None = None,
) -> str:
    """Spend a token and return the E.164 number it proves: a token proves a number once.

    Atomic: the spend is one conditional UPDATE, so of parallel requests with one token
    exactly one gets the number. Raises ``InvalidToken`` for a forged, expired, spent or
    (with ``TOKEN_SESSION_BINDING``) foreign-session token. Call it in the transaction that
    uses the number, so that a rollback leaves the token unspent.
    """
    verification = _find(token, max_age, request)
    spent = PhoneVerification.objects.filter(pk=verification.pk, token_used_at__isnull=True).update(
        token_used_at=timezone.now()
    )
    if not spent:
        raise InvalidToken()
    return str(verification.phone_number)
