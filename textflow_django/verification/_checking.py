"""Checking a code: the sequence of rules :func:`check_code` goes through (the shared ones
are ``_service``'s), and :func:`confirm`, for a code its maker checked.

Why one module of over 400 lines: a check and a confirmation end in the same conditional
UPDATE that turns a pending code into a verified one (of many at once, one wins) and in
the same aftermath (the country known to the Fraud Guard, ``phone_verified``); kept apart,
the two would each need the other's private SQL.
"""

from __future__ import annotations

import datetime as dt
import functools
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from django.core.exceptions import ValidationError
from django.db import connections, router, transaction
from django.db.models import F, Field, QuerySet
from django.utils import timezone

from .. import _sql, fraud, ratelimit, signals
from .._client_ip import client_ip
from .._e164 import is_code
from ..backends import get_backend
from ..conf import conf
from ..exceptions import (
    InvalidCode,
    RateLimited,
    TextFlowError,
    TooManyAttempts,
    VerificationError,
    VerificationExpired,
)
from ..models import PhoneVerification
from ._failures import provider_error, store_calls
from ._outcomes import reported_check, reported_confirm
from ._secrets import MAX_SECRET_LENGTH, digest
from ._service import caller, caps, matches_hash, normalize, recall, report_refusal
from .tokens import token_fields

if TYPE_CHECKING:
    from django.http import HttpRequest

__all__ = ["Verified", "check_code", "confirm"]


@dataclass(frozen=True)
class Verified:
    """The number is verified; ``token`` proves it, once, to a later request
    (:func:`~textflow_django.verification.consume_token`)."""

    phone_number: str
    token: str
    verification: PhoneVerification


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


@reported_check  # textflow.verify_code.verified / .failed
def check_code(
    phone_number: object,
    code: object,
    *,
    request: HttpRequest | None = None,
    user: Any = None,
    verification_id: str | None = None,
) -> Verified:
    """Check ``code`` for ``phone_number``; on success return a :class:`Verified` with a token.

    Which code is checked: the one ``verification_id`` names (from :class:`CodeSent`), else
    the one the request's session asked for. A caller holding neither (every stranger) has
    no code to guess at: it is answered exactly like a wrong code (``InvalidCode``), and its
    guess counts against its own failed-check caps, so probing which numbers are being
    verified finds nothing. Only the site's own calls, with no ``request`` and no
    ``verification_id``, check the number's newest code.

    A wrong-code slot of the caller's caps (per address and network) is taken *before* the
    code is compared and given back when the code was right (or was never compared), so
    parallel guesses cannot pass a cap.

    Raises ``InvalidPhoneNumberError``, ``CountryNotAllowed`` (the country rules apply to
    checks too), ``InvalidCode`` (with ``attempts_left``), ``VerificationExpired`` (only to
    the holder of that code's handle), ``TooManyAttempts``, ``RateLimited``,
    ``SMSProviderError``, ``SMSProviderUnavailable`` or ``LimitsUnavailable`` (the
    rate-limit store is down: the code is not checked). A TextFlow failure counts no attempt.

    Attempts, locks and wrong-code counts are committed as they happen: call this outside
    any transaction you roll back on a refusal (the package's views run outside
    ``ATOMIC_REQUESTS`` for this reason), or a rolled-back wrong guess costs nothing.
    """
    number = normalize(phone_number)
    ip = client_ip(request)
    user = caller(request, user)
    store = ratelimit.get_store()
    fail_caps = caps("fail", conf.FAILED_CHECK_LIMITS, number, ip)
    taken_at = store.clock()
    # Reserve: the slot is taken before the code is compared (one round trip on Redis).
    with store_calls():
        refusal = store.acquire(None, fail_caps, taken_at)
    if refusal is not None:
        _failed("rate_limited", number, None, user, request)
        report_refusal("check", number, store, fail_caps, refusal.retry_after, request)
        raise RateLimited(retry_after=refusal.retry_after)

    bound = request is not None or verification_id is not None
    handle = verification_id if verification_id is not None else recall(request, number)
    try:
        outcome, verification, token = _check(number, code, bound, handle, user, request)
    except BaseException:
        with store_calls(settled=True):
            store.give_back(None, fail_caps, taken_at)  # never compared: not a guess
        raise
    if outcome not in ("invalid_code", "no_code"):
        with store_calls(settled=True):
            store.give_back(None, fail_caps, taken_at)  # a right code, or none compared
    if outcome == "verified":
        assert verification is not None and token is not None
        return _verified(verification, token, store, request)
    reason = "invalid_code" if outcome == "no_code" else outcome
    _failed(reason, number, verification, user, request)
    max_attempts = conf.MAX_ATTEMPTS
    if outcome == "no_code":
        # Indistinguishable from a first wrong code for a live verification.
        raise InvalidCode(attempts_left=max(0, max_attempts - 1))
    if outcome == "expired":
        raise VerificationExpired()
    assert verification is not None
    if outcome == "too_many_attempts":
        # A locked verification stays locked; a new code can be asked for once the resend
        # cooldown of the last one is over.
        ready = verification.created_at + dt.timedelta(seconds=conf.RESEND_COOLDOWN)
        raise TooManyAttempts(
            retry_after=max(1, math.ceil((ready - timezone.now()).total_seconds()))
        )
    raise InvalidCode(attempts_left=max(0, max_attempts - verification.attempts))


@reported_confirm  # textflow.verify_code.verified via=confirm / .failed
def confirm(
    phone_number: object, *, request: HttpRequest | None = None, user: Any = None
) -> Verified | None:
    """Record that another package checked a code it made and the code was right.

    For codes sent with ``send_code(code=...)`` and checked by their maker (django-allauth,
    django-two-factor-auth): the number's newest pending, unexpired code sent for the same
    user (``user``, else the request's; none for an anonymous caller) becomes verified, as
    :func:`check_code` would have made it, so the Fraud Guard and the insights count the
    conversion and ``phone_verified`` is sent (with a token, as after a check). Returns
    ``None``, changing nothing, when there is no such code (already confirmed, superseded,
    expired, or sent for someone else: nobody's code is confirmed by another's success). An
    SMS sent with no code (``text`` alone) is never confirmed. It checks no code: call it
    only once the maker has.
    """
    number = normalize(phone_number)
    user = caller(request, user)
    Status = PhoneVerification.Status
    sent_for = {"user": user} if user is not None else {"user__isnull": True}
    verification = (
        PhoneVerification.objects.filter(
            phone_number=number, status=Status.PENDING, expires_at__gt=timezone.now()
        )
        .filter(**sent_for)
        .exclude(code_hash="")
        .order_by("-id")
        .first()
    )
    if verification is None:
        return None
    token = _verify(verification, user, request, give_back=False)
    if token is None:
        return None  # confirmed, or replaced, in parallel
    return _verified(verification, token, ratelimit.get_store(), request)


def _verified(
    verification: PhoneVerification,
    token: str,
    store: ratelimit.RateLimitStore,
    request: HttpRequest | None,
) -> Verified:
    """What follows a verification: its country is known to the Fraud Guard, and
    ``phone_verified`` is sent."""
    with store_calls(settled=True):
        fraud.mark_known(store, verification.country)
    number = verification.phone_number
    signals.phone_verified.send(
        sender=PhoneVerification,
        verification=verification,
        phone_number=number,
        user=verification.user,
        request=request,
        token=token,
    )
    return Verified(number, token, verification)


def _check(
    number: str,
    code: object,
    bound: bool,
    handle: str | None,
    user: Any,
    request: HttpRequest | None,
) -> tuple[str, PhoneVerification | None, str | None]:
    """Find the caller's verification and compare the code: ``(outcome, verification,
    token)`` with outcome ``"verified"``, ``"invalid_code"``, ``"no_code"`` (the caller
    holds no live code of this number), ``"expired"`` or ``"too_many_attempts"``.

    Three steps, so no lock or transaction is held while TextFlow answers (a slow TextFlow
    would otherwise pin a row lock and a connection per check, and all of SQLite).
    """
    max_attempts = conf.MAX_ATTEMPTS
    code_text = code if isinstance(code, str) else ""
    rows = PhoneVerification.objects
    Status = PhoneVerification.Status
    pending = Status.PENDING
    if bound and (handle is None or len(handle) > MAX_SECRET_LENGTH):
        # No handle: look one up that cannot exist (handles are random), so the answer
        # takes the same queries as for a caller whose code is gone.
        handle = ""
    # 1. take one attempt of the newest live code (an attempt is spent before it is tried,
    #    so parallel guesses cannot exceed MAX_ATTEMPTS between them);
    handle_hash = digest(handle) if bound and handle is not None else None
    verification = _take_attempt(number, handle_hash, max_attempts)
    if verification is not None:
        outcome = "checking"
    else:
        verification = _newest(number, handle_hash)
        if verification is None:
            outcome = "no_code" if bound else "expired"
        elif verification.expires_at <= timezone.now():
            outcome = "expired"
        else:
            # Locked, or out of attempts (a live code with attempts left was taken just
            # now by _take_attempt, but for a refund landing in between: as good as spent).
            outcome = "too_many_attempts"
    if outcome == "no_code":
        _code_is_right(None, number, code_text)  # the same work as a real wrong code
    if outcome != "checking":
        return outcome, verification, None
    assert verification is not None
    refund = rows.filter(pk=verification.pk, attempts__gt=0)
    # 2. ask whoever holds the code, outside any transaction (a failure refunds the
    #    attempt: TextFlow being down is not the user's wrong guess);
    try:
        right = _code_is_right(verification, number, code_text)
    except (VerificationError, ValidationError):
        refund.update(attempts=F("attempts") - 1)
        raise
    # 3. record the answer with conditional updates: of many right codes checked at once,
    #    exactly one turns the pending row into a verified one, with its token.
    if right:
        # A right code is not a wrong guess: its attempt is given back in the same UPDATE.
        token = _verify(verification, user, request, give_back=True)
        if token is not None:
            # Attempts as this check left it: a parallel wrong guess's own is not counted.
            verification.attempts -= 1
            return "verified", verification, token
        # Verified by a parallel check, or replaced by a new code meanwhile.
        refund.update(attempts=F("attempts") - 1)
        return ("no_code" if bound else "expired"), verification, None
    if verification.attempts >= max_attempts:
        # This guess spent the last attempt (the count _take_attempt returned is exact: it
        # was read under the row's lock), and it was wrong: the code is locked.
        rows.filter(pk=verification.pk, status=pending).update(status=Status.LOCKED)
    return "invalid_code", verification, None


def _verify(
    verification: PhoneVerification, user: Any, request: HttpRequest | None, *, give_back: bool
) -> str | None:
    """Make the pending ``verification`` verified, with a new token (and ``user`` when it
    had none); its token, or None when a parallel check or a new code got there first. On
    success the instance holds what the UPDATE wrote, without reading the row back."""
    token, token_fields_ = token_fields(request)
    changes: dict[str, Any] = {
        "status": PhoneVerification.Status.VERIFIED,
        "verified_at": timezone.now(),
        **token_fields_,
    }
    if user is not None and verification.user_id is None:
        changes["user"] = user
    if not _mark_verified(verification, changes, give_back=give_back):
        return None
    for name, value in changes.items():
        setattr(verification, name, value)
    return token


def _mark_verified(
    verification: PhoneVerification, changes: dict[str, Any], *, give_back: bool
) -> bool:
    """Turn the pending ``verification`` into a verified one with ``changes`` (status,
    verified_at, the token's fields, maybe user), giving back the attempt the check took
    (``give_back``; :func:`confirm` took none), in one UPDATE that only a pending row takes
    (of many right codes checked at once, one wins)."""
    alias = verification._state.db or router.db_for_write(PhoneVerification)
    connection = connections[alias]
    meta = PhoneVerification._meta
    columns, params = [], []
    for name, value in changes.items():
        field = meta.get_field(name)
        assert isinstance(field, Field)  # concrete fields only, never a relation's reverse
        columns.append(str(field.column))
        # The field's own conversion to the database (a datetime, a user's pk).
        db_value = value.pk if name == "user" else value
        params.append(field.get_db_prep_save(db_value, connection))
    params += [verification.pk, PhoneVerification.Status.PENDING]
    with connection.cursor() as cursor:
        cursor.execute(_verified_sql(alias, tuple(columns), give_back), params)
        return bool(cursor.rowcount)


@functools.cache
def _verified_sql(alias: str, columns: tuple[str, ...], give_back: bool) -> str:
    """:func:`_mark_verified`'s UPDATE, built once per database, set of columns and
    whether it gives an attempt back."""
    qn = connections[alias].ops.quote_name
    meta = PhoneVerification._meta
    table, pk, attempts = qn(meta.db_table), qn(str(meta.pk.column)), qn("attempts")
    sets = ", ".join(f"{qn(column)} = %s" for column in columns)
    refund = f"{attempts} = {attempts} - 1, " if give_back else ""
    return (
        f"UPDATE {table} SET {refund}{sets} "  # noqa: S608 - names from the model
        f"WHERE {pk} = %s AND {qn('status')} = %s"
    )


def _live(number: str, handle_hash: str | None) -> QuerySet[PhoneVerification]:
    """The codes of ``number`` a check may reach (pending or locked), only the one of
    ``handle_hash`` when given. Served by the (phone_number, status) index."""
    Status = PhoneVerification.Status
    found = PhoneVerification.objects.filter(
        phone_number=number, status__in=[Status.PENDING, Status.LOCKED]
    )
    return found if handle_hash is None else found.filter(handle_hash=handle_hash)


def _newest(number: str, handle_hash: str | None) -> PhoneVerification | None:
    """The newest code a check may reach: the rule _supersede_older() keeps."""
    return _live(number, handle_hash).order_by("-id").first()


def _take_attempt(
    number: str, handle_hash: str | None, max_attempts: int
) -> PhoneVerification | None:
    """Spend one attempt of the newest code a check may reach, if it is pending, live and
    has attempts left; return it (with the attempt counted), else None and change nothing.

    Atomic: the conditions are checked under the row's lock, so of parallel guesses no
    more than ``max_attempts`` get an attempt. One ``UPDATE ... RETURNING`` on PostgreSQL and
    SQLite 3.35+; elsewhere a ``SELECT ... FOR UPDATE`` and an ``UPDATE`` in a transaction.
    """
    alias = router.db_for_write(PhoneVerification)
    now = timezone.now()
    if _sql.returning(alias):
        sql, params = _take_attempt_sql(alias, number, handle_hash, max_attempts, now)
        found = list(PhoneVerification.objects.using(alias).raw(sql, params))
        return found[0] if found else None
    with transaction.atomic(using=alias):
        verification = _live(number, handle_hash).select_for_update().order_by("-id").first()
        if (
            verification is None
            or verification.status != PhoneVerification.Status.PENDING
            or verification.expires_at <= now
            or verification.attempts >= max_attempts
        ):
            return None
        PhoneVerification.objects.filter(pk=verification.pk).update(attempts=F("attempts") + 1)
        verification.attempts += 1
        return verification


def _take_attempt_sql(
    alias: str, number: str, handle_hash: str | None, max_attempts: int, now: dt.datetime
) -> tuple[str, list[Any]]:
    """The single statement of :func:`_take_attempt` and its parameters: the newest
    reachable code's id found by the (phone_number, status) index, updated only while
    pending, live and below ``max_attempts``."""
    Status = PhoneVerification.Status
    params: list[Any] = [number, Status.PENDING, Status.LOCKED]
    if handle_hash is not None:
        params.append(handle_hash)
    adapt = connections[alias].ops.adapt_datetimefield_value
    params += [Status.PENDING, max_attempts, adapt(now)]
    return _attempt_sql(alias, handle_hash is not None), params


@functools.cache
def _attempt_sql(alias: str, one_handle: bool) -> str:
    """:func:`_take_attempt_sql`'s statement, built once per database and shape (plain SQL:
    compiling the ORM's subquery cost more than running the statement)."""
    qn = connections[alias].ops.quote_name
    meta = PhoneVerification._meta
    table, pk = qn(meta.db_table), qn(str(meta.pk.column))
    number, status = qn(str(meta.get_field("phone_number").column)), qn("status")
    attempts, handle = qn("attempts"), qn(str(meta.get_field("handle_hash").column))
    expires = qn(str(meta.get_field("expires_at").column))
    columns = ", ".join(qn(str(field.column)) for field in meta.concrete_fields)
    # _live()'s rule, as SQL: the number's pending or locked codes, the handle's only.
    newest = (
        f"SELECT {pk} FROM {table} WHERE {number} = %s AND {status} IN (%s, %s)"  # noqa: S608
        + (f" AND {handle} = %s" if one_handle else "")
        + f" ORDER BY {pk} DESC LIMIT 1"
    )
    return (
        f"UPDATE {table} SET {attempts} = {attempts} + 1 "  # noqa: S608 - names from the model
        f"WHERE {pk} = ({newest}) AND {status} = %s AND {attempts} < %s AND {expires} > %s "
        f"RETURNING {columns}"
    )


#: Compared against when the caller has no code, so that answer costs what a wrong one does.
_NO_CODE_HASH = "0" * 16 + "$" + "0" * 64


def _code_is_right(verification: PhoneVerification | None, number: str, code: str) -> bool:
    """Ask whoever holds the code. Raises the service's provider errors."""
    if verification is None:
        matches_hash(_NO_CODE_HASH, number, code)
        return False
    if not is_code(code):
        return False  # cannot be right: do not spend a TextFlow call on it
    if verification.mode == PhoneVerification.Mode.LOCAL:
        return bool(verification.code_hash) and matches_hash(verification.code_hash, number, code)
    try:
        return get_backend().verify_code(number, code).valid
    except TextFlowError as err:
        raise provider_error(err) from err
