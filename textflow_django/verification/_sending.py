"""Sending a code: the sequence of rules :func:`send_code` goes through (the shared ones are
``_service``'s)."""

from __future__ import annotations

import datetime as dt
import functools
import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from django.db import connections, router
from django.utils import timezone

from .. import fraud, ratelimit, signals
from .._client_ip import client_ip
from .._codes import generate_code
from ..backends import get_backend
from ..conf import conf
from ..exceptions import (
    MAYBE_SENT_MESSAGE,
    DestinationBlocked,
    RateLimited,
    ResendTooSoon,
    TextFlowError,
    VerificationError,
)
from ..models import PhoneVerification
from ..ratelimit import Counts, Rate, RateLimitStore, Refusal
from ._failures import provider_error, store_calls
from ._outcomes import reported_send
from ._secrets import digest, new_secret
from ._service import caller, caps, destination, hash_code, remember, report_refusal
from ._texts import code_text

if TYPE_CHECKING:
    from django.http import HttpRequest

__all__ = ["CodeSent", "send_code"]


@dataclass(frozen=True)
class CodeSent:
    """A code is on its way. ``resend_after`` is the cooldown in seconds; ``verification_id``
    is the opaque handle only whose holder's guesses reach this code (:func:`check_code`)."""

    phone_number: str
    expires_at: dt.datetime
    resend_after: int
    verification: PhoneVerification
    verification_id: str = ""


def _send_limits(
    number: str, ip: str | None, region: str
) -> tuple[tuple[str, int] | None, list[tuple[str, Rate]]]:
    """The cooldown claim and the cap hits one send must take."""
    cooldown = conf.RESEND_COOLDOWN
    claim = (f"cooldown:{number}", cooldown) if cooldown > 0 else None
    return claim, caps("send", conf.SEND_LIMITS, number, ip, region)


@reported_send  # textflow.send_code.sent / .refused
def send_code(
    phone_number: object,
    *,
    request: HttpRequest | None = None,
    user: Any = None,
    session: bool = True,
    code: str | None = None,
    text: str | None = None,
) -> CodeSent:
    """Send a verification code to ``phone_number``.

    For another package that makes and checks its codes itself (django-allauth,
    django-two-factor-auth: ``textflow_django.contrib``), ``code`` is that code: it is sent
    whatever ``VERIFY_MODE`` is and its keyed hash kept, and the caller reports a right code
    with :func:`confirm`. ``text`` is the whole SMS to send instead of :func:`code_text`'s
    (the caller's own wording, with the code in it if there is one); with ``text`` and no
    ``code``, an SMS that carries no code (allauth's "unknown account" SMS). Every SMS sent
    here is held to the same cooldown, caps and Fraud Guard, and recorded as a verification
    (a code nobody enters counts against its destination's conversion, as pumping does).

    The result's ``verification_id`` is the handle :func:`check_code` needs: only its
    holder's guesses reach this code. With ``session`` (the default, what forms need), the
    request's session remembers it too, for clients that do not pass it back; ``False``
    leaves the session alone (the JSON API passes it for a client that holds no session
    yet: it has the id in the answer, and a session row per send would be pure cost).

    Raises ``InvalidPhoneNumberError`` (a ``ValidationError``), ``CountryNotAllowed``,
    ``DestinationBlocked`` (the Fraud Guard: nothing is sent, nothing spent),
    ``ResendTooSoon``, ``RateLimited``, ``SMSProviderError``, ``SMSProviderUnavailable`` or
    ``LimitsUnavailable`` (the rate-limit store is down: nothing is sent).
    A failure that certainly sent nothing (refused, a 4xx, the breaker open) consumes
    nothing: no verification, cooldown or cap. One that may have sent the SMS (a timeout, a
    5xx, a garbled answer) keeps the cooldown and caps it took and records the verification,
    so the code verifies if it arrives: the ``SMSProviderError``/``SMSProviderUnavailable``
    then says so (``extra["code_may_arrive"]``) and carries the ``verification_id``.
    """
    if code == "" or text == "":  # before anything is taken
        raise ValueError("send_code: code and text may be None, never empty")
    number, region = destination(phone_number)
    ip = client_ip(request)
    user = caller(request, user)
    store = ratelimit.get_store()
    claim, limits = _send_limits(number, ip, region)
    guard = conf.FRAUD_GUARD
    with store_calls():  # the plan may read whether the country is known (once a process)
        shield = fraud.plan(number, region, guard, limits, lambda: fraud.is_known(store, region))
    # The store's clock: a refund must come off the windows the send was counted in.
    taken_at = store.clock()
    # The Fraud Guard's blocks, the cooldown and every cap in one round trip, all or nothing.
    hits = [*limits, *shield.hits]
    refusal, counts = _acquire(store, claim, hits, shield, taken_at)
    if refusal is not None and refusal.kind == "hit":
        # A cap of the guard's may be the one full: judge what it guards now.
        with store_calls():
            judged, allowed = fraud.judge_refused(shield, guard, store, taken_at)
        if judged:
            raise DestinationBlocked()
        if allowed:  # a prefix allowed from the admin is not held to the prefix's cap
            shield = shield.without_prefix_cap()
            hits = [*limits, *shield.hits]
            refusal, counts = _acquire(store, claim, hits, shield, taken_at)
    if refusal is not None:
        if refusal.kind == "blocked":
            raise DestinationBlocked()
        if refusal.kind == "claim":
            raise ResendTooSoon(retry_after=refusal.retry_after)
        report_refusal("send", number, store, hits, refusal.retry_after, request)
        raise RateLimited(retry_after=refusal.retry_after)
    try:
        with store_calls():
            blocked = fraud.judge_counted(shield, counts, guard, store, taken_at)
    except BaseException:
        with store_calls(settled=True):
            store.give_back(claim, hits, taken_at)  # the judgement failed: nothing is sent
        raise
    if blocked:
        with store_calls(settled=True):
            store.give_back(claim, hits, taken_at)  # refused: nothing was sent
        raise DestinationBlocked()
    # A caller's own code or text is sent as a plain SMS, whatever VERIFY_MODE says.
    mode = (
        PhoneVerification.Mode.LOCAL if code is not None or text is not None else conf.VERIFY_MODE
    )
    handle, _digest = new_secret()
    # Made before the send, so a send that may have gone out is recorded with its code's hash.
    if code is None and mode == PhoneVerification.Mode.LOCAL and text is None:
        code = generate_code(conf.CODE_LENGTH)
    code_hash = "" if code is None else hash_code(number, code, secrets.token_hex(8))
    try:
        _deliver(number, code, text)
    except TextFlowError as err:
        answer = provider_error(err)
        if not err.maybe_sent:
            with store_calls(settled=True):
                store.give_back(claim, hits, taken_at)  # certainly not sent: nothing spent
            raise answer from err
        # It may have gone out: it keeps what it took, and is recorded so that the code,
        # if it arrives, verifies (TextFlow holds it, or we hold its hash).
        _record(number, region, mode, code_hash, handle, ip, user, request, session)
        if isinstance(answer, VerificationError):
            answer.message = MAYBE_SENT_MESSAGE
            answer.extra.update(code_may_arrive=True, verification_id=handle)
            if claim is not None:  # the cooldown it kept: when a new code may be asked for
                answer.retry_after = claim[1]
        raise answer from err
    except BaseException:
        with store_calls(settled=True):
            store.give_back(claim, hits, taken_at)  # a failed send consumes nothing
        raise
    # Past this point the SMS is out: whatever fails now keeps the cooldown and caps taken.
    verification = _record(number, region, mode, code_hash, handle, ip, user, request, session)
    signals.code_sent.send(
        sender=PhoneVerification,
        verification=verification,
        phone_number=number,
        user=user,
        request=request,
    )
    return CodeSent(number, verification.expires_at, claim[1] if claim else 0, verification, handle)


def _acquire(
    store: RateLimitStore,
    claim: tuple[str, int] | None,
    hits: list[tuple[str, Rate]],
    shield: fraud.Plan,
    now: float,
) -> tuple[Refusal | None, Counts]:
    """The store's one round trip for a send: the guard's blocks, the claim, every cap."""
    counts: Counts = {}
    with store_calls():
        refusal = store.acquire(
            claim, hits, now, blocks=shield.blocks, waivers=shield.waivers, counts=counts
        )
    return refusal, counts


def _deliver(number: str, code: str | None, text: str | None) -> None:
    """Have the SMS sent: ``text`` as it is, or ``code`` (ours, or the caller's) in
    :func:`code_text`'s SMS, or with neither a code TextFlow makes and holds (``"textflow"``
    mode, in TextFlow's own words). Raises the backend's ``TextFlowError``.

    Every SMS here is transactional: the person (or the integration acting on their
    request: a login, a signup, a second factor) asked for it, so a number on the opt-out
    list still gets it; the send caps, cooldown and Fraud Guard hold it instead."""
    backend = get_backend()
    if text is not None:
        backend.send_sms(number, text, transactional=True)
    elif code is not None:
        backend.send_sms(number, code_text(code), transactional=True)
    else:
        service = conf.SERVICE_NAME
        backend.send_code(number, service_name=service or None, seconds=conf.CODE_TTL)


def _record(
    number: str,
    region: str,
    mode: str,
    code_hash: str,
    handle: str,
    ip: str | None,
    user: Any,
    request: HttpRequest | None,
    session: bool,
) -> PhoneVerification:
    """Record the verification of a code just sent, its handle remembered in the request's
    session when ``session``. It supersedes the older codes of the same client: the one the
    session remembered for the number, or, for the site's own calls (no request), every
    older one, as TextFlow replaces a number's code."""
    verification = PhoneVerification.objects.create(
        phone_number=number,
        country=region,
        mode=mode,
        code_hash=code_hash,
        handle_hash=digest(handle),
        user=user,
        client_ip=ip,
        expires_at=timezone.now() + dt.timedelta(seconds=conf.CODE_TTL),
    )
    if request is None:
        _supersede_older(verification, None)
    elif session:
        previous = remember(request, number, handle)
        if previous is not None:
            _supersede_older(verification, digest(previous))
    return verification


def _supersede_older(verification: PhoneVerification, handle_hash: str | None) -> None:
    """A new code replaces older ones: mark them superseded. ``handle_hash``: only the one
    verification that handle belongs to (a client's own previous code), or with ``None``
    every older code of the number (the site's own calls, like TextFlow itself).

    "Older" is a lower id. Run after the new row's INSERT, each in autocommit, with no
    transaction around the two: the moment between them (or a crash there) leaves nothing
    checkable that should not be, and ``id < new id`` means parallel sends never supersede
    a newer code. Plain SQL: on every send the ORM's query building costs more than the
    UPDATE; ``update()`` sends no signals either way.
    """
    # The database the new row went to (a router may pick it per instance).
    alias = verification._state.db or router.db_for_write(PhoneVerification)
    Status = PhoneVerification.Status
    params: list[str | int] = [
        Status.SUPERSEDED,
        verification.phone_number,
        Status.PENDING,
        Status.LOCKED,
        verification.pk,
    ]
    if handle_hash is not None:
        params.append(handle_hash)
    with connections[alias].cursor() as cursor:
        cursor.execute(_supersede_sql(alias, handle_hash is not None), params)


@functools.cache
def _supersede_sql(alias: str, one_handle: bool) -> str:
    """The supersede UPDATE for one database, built once (names from the model, quoted)."""
    qn = connections[alias].ops.quote_name
    meta = PhoneVerification._meta
    table, pk = qn(meta.db_table), qn(str(meta.pk.column))
    status = qn(str(meta.get_field("status").column))
    number = qn(str(meta.get_field("phone_number").column))
    handle = qn(str(meta.get_field("handle_hash").column))
    return (
        f"UPDATE {table} SET {status} = %s "  # noqa: S608 - names from the model, quoted
        f"WHERE {number} = %s AND {status} IN (%s, %s) AND {pk} < %s"
        + (f" AND {handle} = %s" if one_handle else "")
    )
