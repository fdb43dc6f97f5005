"""The rules of sending and checking a code (see the package's docstring for the contract).

Its one job is the sequence of rules a send and a check go through; how failures become
refusals is ``_failures``, tokens are ``tokens``, client addresses ``textflow_django._client_ip``.
"""

from __future__ import annotations

import datetime as dt
import functools
import hmac
import math
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from django.core.validators import RegexValidator
from django.db import connections, router, transaction
from django.db.models import F
from django.utils import timezone
from django.utils.crypto import salted_hmac
from django.utils.translation import gettext_lazy as _

from .. import phone, signals
from .._client_ip import client_ip, ip_scope
from .._codes import CODE_LENGTH, code_sms_text, generate_code
from .._e164 import CODE_RE, is_code
from ..backends import get_backend
from ..conf import conf
from ..exceptions import (
    CountryNotAllowed,
    InvalidCode,
    RateLimited,
    ResendTooSoon,
    TextFlowError,
    TooManyAttempts,
    VerificationError,
    VerificationExpired,
)
from ..models import PhoneVerification
from ..ratelimit import Rate, get_store
from ._failures import provider_error, store_calls
from .tokens import make_token

if TYPE_CHECKING:
    from django.http import HttpRequest

__all__ = ["LOCAL_CODE_LENGTH", "CodeSent", "Verified", "check_code", "code_validator", "send_code"]


#: Digits of a code generated in "local" mode.
LOCAL_CODE_LENGTH = CODE_LENGTH
#: A code as a user may type it (the one rule forms and serializers validate with).
code_validator = RegexValidator(
    rf"\A{CODE_RE.pattern}\Z", _("Enter the code you received, digits only."), code="invalid"
)
_HASH_SALT = "textflow_django.verification.code"


@dataclass(frozen=True)
class CodeSent:
    """A code is on its way. ``resend_after`` is the cooldown in seconds."""

    phone_number: str
    expires_at: dt.datetime
    resend_after: int
    verification: PhoneVerification


@dataclass(frozen=True)
class Verified:
    """The number is verified; ``token`` proves it to a later request (``phone_from_token``)."""

    phone_number: str
    token: str
    verification: PhoneVerification


# -- helpers -------------------------------------------------------------------------------


def _user(request: HttpRequest | None, user: Any) -> Any:
    if user is None and request is not None:
        user = getattr(request, "user", None)
    return user if user is not None and getattr(user, "is_authenticated", False) else None


def _normalize(phone_number: object) -> str:
    try:
        return phone.normalize(phone_number)
    except phone.CountryNotAllowedError as err:
        raise CountryNotAllowed() from err


def _hash_code(number: str, code: str, salt: str) -> str:
    """A keyed hash (SECRET_KEY-derived HMAC-SHA256) of a local-mode code."""
    digest = salted_hmac(_HASH_SALT, f"{salt}:{number}:{code}", algorithm="sha256").hexdigest()
    return f"{salt}${digest}"


def _matches_hash(stored: str, number: str, code: str) -> bool:
    salt, _sep, _digest = stored.partition("$")
    return hmac.compare_digest(stored.encode(), _hash_code(number, code, salt).encode())


# -- sending -------------------------------------------------------------------------------


def _caps(
    kind: str, limits: Mapping[str, Sequence[Rate]], number: str, ip: str | None
) -> list[tuple[str, Rate]]:
    """The store key and rate of every ``kind`` cap ("send" or "fail") on this number and IP."""
    return [
        (f"{kind}:{scope}:{subject}", rate)
        for scope, subject in (("number", number), ("ip", ip and ip_scope(ip)))
        if subject is not None
        for rate in limits.get(scope, ())
    ]


def _send_limits(
    number: str, ip: str | None
) -> tuple[tuple[str, int] | None, list[tuple[str, Rate]]]:
    """The cooldown claim and the cap hits one send must take."""
    cooldown = conf.RESEND_COOLDOWN
    claim = (f"cooldown:{number}", cooldown) if cooldown > 0 else None
    return claim, _caps("send", conf.SEND_LIMITS, number, ip)


def send_code(
    phone_number: object,
    *,
    request: HttpRequest | None = None,
    user: Any = None,
) -> CodeSent:
    """Send a verification code to ``phone_number``.

    Raises ``InvalidPhoneNumberError`` (a ``ValidationError``), ``CountryNotAllowed``,
    ``ResendTooSoon``, ``RateLimited``, ``SMSProviderError``, ``SMSProviderUnavailable`` or
    ``LimitsUnavailable`` (the rate-limit store is down: nothing is sent).
    A failure before the SMS is out consumes nothing: no verification, no cooldown, no cap.
    Once it is out, a failure to record it (the database) keeps the cooldown and caps taken,
    so a retry cannot text the number a second time at once.
    """
    number = _normalize(phone_number)
    ip = client_ip(request)
    user = _user(request, user)
    store = get_store()
    claim, hits = _send_limits(number, ip)
    # The cooldown and every cap in one go (one round trip on Redis), all or nothing.
    # The store's clock: a refund must come off the windows the send was counted in.
    taken_at = store.clock()
    with store_calls():
        refused = store.acquire(claim, hits, taken_at)
    if refused is not None:
        if refused.kind == "claim":
            raise ResendTooSoon(retry_after=refused.retry_after)
        raise RateLimited(retry_after=refused.retry_after)
    mode = conf.VERIFY_MODE
    try:
        code_hash = _deliver(number, mode)
    except BaseException:
        with store_calls(settled=True):
            store.give_back(claim, hits, taken_at)  # a failed send consumes nothing
        raise
    # Past this point the SMS is out: whatever fails now keeps the cooldown and caps taken.
    verification = _record(number, mode, code_hash, ip, user)
    signals.code_sent.send(
        sender=PhoneVerification,
        verification=verification,
        phone_number=number,
        user=user,
        request=request,
    )
    return CodeSent(number, verification.expires_at, claim[1] if claim else 0, verification)


def _deliver(number: str, mode: str) -> str:
    """Have the code sent, by TextFlow (``"textflow"`` mode) or by us with a code of our own
    (``"local"``). Returns the code's hash to keep: ``""`` when TextFlow holds the code."""
    service = conf.SERVICE_NAME
    backend = get_backend()
    try:
        if mode == PhoneVerification.Mode.LOCAL:
            code = generate_code(LOCAL_CODE_LENGTH)
            backend.send_sms(number, code_sms_text(code, service))
            return _hash_code(number, code, secrets.token_hex(8))
        backend.send_code(number, service_name=service or None, seconds=conf.CODE_TTL)
        return ""
    except TextFlowError as err:
        raise provider_error(err, number, "send") from err


def _record(number: str, mode: str, code_hash: str, ip: str | None, user: Any) -> PhoneVerification:
    """Record the verification of a code just sent; it supersedes the number's older ones."""
    verification = PhoneVerification.objects.create(
        phone_number=number,
        mode=mode,
        code_hash=code_hash,
        user=user,
        client_ip=ip,
        expires_at=timezone.now() + dt.timedelta(seconds=conf.CODE_TTL),
    )
    _supersede_older(verification)
    return verification


def _supersede_older(verification: PhoneVerification) -> None:
    """Like TextFlow, a new code replaces the number's previous ones: mark them superseded.

    "Newest" is the highest id, here and in check_code(). Run after the new row's INSERT,
    each in autocommit, with no transaction around the two: check_code() only ever takes the
    newest row, so the moment between them (or a crash there) leaves nothing checkable that
    should not be, and ``id < new id`` means parallel sends never supersede a newer code. (A
    parallel send whose INSERT is not yet committed may stay ``pending``, unchecked, until
    the next send; a transaction would not prevent that either, and would add two round
    trips and, on SQLite, hold the database's write lock across both.) Plain SQL: on every
    send the ORM's query building costs more than the UPDATE; ``update()`` sends no signals
    either way.
    """
    # The database the new row went to (a router may pick it per instance).
    alias = verification._state.db or router.db_for_write(PhoneVerification)
    Status = PhoneVerification.Status
    with connections[alias].cursor() as cursor:
        cursor.execute(
            _supersede_sql(alias),
            [
                Status.SUPERSEDED,
                verification.phone_number,
                Status.PENDING,
                Status.LOCKED,
                verification.pk,
            ],
        )


@functools.cache
def _supersede_sql(alias: str) -> str:
    """The supersede UPDATE for one database, built once (names from the model, quoted)."""
    qn = connections[alias].ops.quote_name
    meta = PhoneVerification._meta
    table, pk = qn(meta.db_table), qn(str(meta.pk.column))
    status = qn(str(meta.get_field("status").column))
    number = qn(str(meta.get_field("phone_number").column))
    return (
        f"UPDATE {table} SET {status} = %s "  # noqa: S608 - names from the model, quoted
        f"WHERE {number} = %s AND {status} IN (%s, %s) AND {pk} < %s"
    )


# -- checking ------------------------------------------------------------------------------


def _failed(
    reason: str,
    number: str,
    verification: PhoneVerification | None,
    user: Any,
    request: HttpRequest | None,
) -> None:
    signals.verification_failed.send(
        sender=PhoneVerification,
        phone_number=number,
        reason=reason,
        verification=verification,
        user=user,
        request=request,
    )


def check_code(
    phone_number: object,
    code: object,
    *,
    request: HttpRequest | None = None,
    user: Any = None,
) -> Verified:
    """Check ``code`` for ``phone_number``; on success return a :class:`Verified` with a token.

    Raises ``InvalidPhoneNumberError``, ``CountryNotAllowed`` (the country rules apply to
    checks as to sends), ``InvalidCode`` (with ``attempts_left``), ``VerificationExpired``,
    ``TooManyAttempts``, ``RateLimited``, ``SMSProviderError``, ``SMSProviderUnavailable``
    or ``LimitsUnavailable`` (the rate-limit store is down: the code is not checked). A
    TextFlow failure counts no attempt.

    Attempts, locks and wrong-code counts are committed as they happen: call this outside
    any transaction you roll back on a refusal (the package's views run outside
    ``ATOMIC_REQUESTS`` for this reason), or a rolled-back wrong guess costs nothing.
    """
    number = _normalize(phone_number)
    ip = client_ip(request)
    user = _user(request, user)
    store = get_store()
    caps = _caps("fail", conf.FAILED_CHECK_LIMITS, number, ip)
    with store_calls():
        wait = store.peek_all(caps)  # one round trip on Redis
    if wait is not None:
        _failed("rate_limited", number, None, user, request)
        raise RateLimited(retry_after=wait)

    max_attempts = conf.MAX_ATTEMPTS
    code_text = code if isinstance(code, str) else ""
    rows = PhoneVerification.objects
    pending = PhoneVerification.Status.PENDING
    # Three steps, so no lock or transaction is held while TextFlow answers (a slow TextFlow
    # would otherwise pin a row lock and a connection per check, and all of SQLite):
    # 1. under the row lock, take one attempt (an attempt is spent before it is tried, so
    #    parallel guesses cannot exceed MAX_ATTEMPTS between them);
    with transaction.atomic():
        verification = (
            rows.select_for_update()
            .filter(
                phone_number=number,
                status__in=[pending, PhoneVerification.Status.LOCKED],
            )
            .order_by("-id")  # the newest code: the rule _supersede_older() keeps
            .first()
        )
        if verification is None or verification.expires_at <= timezone.now():
            outcome = "expired"
        elif verification.status != pending or verification.attempts >= max_attempts:
            outcome = "too_many_attempts"
        else:
            rows.filter(pk=verification.pk).update(attempts=F("attempts") + 1)
            verification.attempts += 1
            outcome = "checking"
    if outcome == "checking":
        assert verification is not None
        refund = rows.filter(pk=verification.pk, attempts__gt=0)
        # 2. ask whoever holds the code, outside any transaction (a failure refunds the
        #    attempt: TextFlow being down is not the user's wrong guess);
        try:
            right = _code_is_right(verification, number, code_text)
        except VerificationError:
            refund.update(attempts=F("attempts") - 1)
            raise
        # 3. record the answer with conditional updates: of many right codes checked at
        #    once, exactly one turns the pending row into a verified one.
        if right:
            changes: dict[str, Any] = {
                "status": PhoneVerification.Status.VERIFIED,
                "verified_at": timezone.now(),
                "attempts": F("attempts") - 1,  # a right code is not a wrong guess
            }
            if user is not None and verification.user_id is None:
                changes["user"] = user
            if rows.filter(pk=verification.pk, status=pending).update(**changes):
                verification.refresh_from_db()
                outcome = "verified"
            else:  # verified by a parallel check, or replaced by a new code meanwhile
                refund.update(attempts=F("attempts") - 1)
                outcome = "expired"
        else:
            rows.filter(pk=verification.pk, status=pending, attempts__gte=max_attempts).update(
                status=PhoneVerification.Status.LOCKED
            )
            outcome = "invalid_code"

    if outcome == "verified":
        assert verification is not None
        token = make_token(verification)
        signals.phone_verified.send(
            sender=PhoneVerification,
            verification=verification,
            phone_number=number,
            user=verification.user,
            request=request,
            token=token,
        )
        return Verified(number, token, verification)
    _failed(outcome, number, verification, user, request)
    if outcome == "expired":
        raise VerificationExpired()
    if outcome == "too_many_attempts":
        assert verification is not None
        # A locked verification stays locked; a new code can be asked for once the resend
        # cooldown of the last one is over.
        ready = verification.created_at + dt.timedelta(seconds=conf.RESEND_COOLDOWN)
        raise TooManyAttempts(
            retry_after=max(1, math.ceil((ready - timezone.now()).total_seconds()))
        )
    assert verification is not None
    with store_calls(settled=True):
        store.hit_all(caps)
    raise InvalidCode(attempts_left=max(0, max_attempts - verification.attempts))


def _code_is_right(verification: PhoneVerification, number: str, code: str) -> bool:
    """Ask whoever holds the code. Raises the service's provider errors."""
    if not is_code(code):
        return False  # cannot be right: do not spend a TextFlow call on it
    if verification.mode == PhoneVerification.Mode.LOCAL:
        return bool(verification.code_hash) and _matches_hash(verification.code_hash, number, code)
    try:
        return get_backend().verify_code(number, code).valid
    except TextFlowError as err:
        raise provider_error(err, number, "verify") from err
