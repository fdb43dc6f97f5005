"""The Fraud Guard's judgement: a destination whose codes are sent and not used is blocked.

A destination (a number prefix, or a whole country) is judged on the codes sent to it in the
``WINDOW`` seconds before the last ``GRACE`` seconds: only codes old enough to have been
used count, as sent and as verified (a younger code is neither yet). It is blocked when
enough of them were sent (``MIN_SENDS``; for a country, ``COUNTRY_SENDS_FACTOR`` times that)
and too few were verified (below ``MIN_CONVERSION``; for a country,
``COUNTRY_CONVERSION_FACTOR`` times that). Judging a country also judges its busiest
prefixes, which catches a slow attack spread over time that never crowds one prefix.

The figures are the ``PhoneVerification`` rows themselves (a code sent is a row, a code used
a verified row): exact, paired send to use, and read through indexes (the number's, and
``(country, created_at)``). Judgements are rare: the send path asks for one only when a
prefix fills its grace-period cap or a country's count reaches a multiple of
``MIN_SENDS`` (``textflow_django.verification``).

A block is a ``FraudBlock`` row (for people: the admin, the ``destination_blocked`` signal,
one WARNING log line naming the destination, never a full number) and a key held in the
rate-limit store (for the send path, which checks it in its one round trip).
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db.models import CharField, Count, Max, Q, QuerySet
from django.db.models.functions import Substr
from django.utils import translation
from django.utils.translation import ngettext

from .. import signals
from .._events import emit
from ..conf import FraudGuardSettings
from ..models import FraudAllowedPrefix, FraudBlock, PhoneVerification
from ..ratelimit import Counts, RateLimitStore, epoch_datetime
from ._plan import Plan, block_key

__all__ = [
    "JUDGE_EVERY",
    "NEW_COUNTRY_WINDOW",
    "allow_prefix",
    "due",
    "is_allowed",
    "judge_counted",
    "judge_country",
    "judge_prefix",
    "judge_refused",
    "lift",
    "prefix_sql",
]


#: The window a country the new-country cap holds back is judged over: the cap lets too
#: few codes through in ``WINDOW`` to judge it.
NEW_COUNTRY_WINDOW = 86400
#: A destination is judged after a refusal at most this often per process (:func:`due`).
JUDGE_EVERY = 30

#: (scope, value) -> when this process last judged it after a refusal (a store clock's reading).
_judged_at: dict[tuple[str, str], float] = {}


def due(scope: str, value: str, now: float) -> bool:
    """Whether a refusal may judge this destination now (and it is noted as judged)."""
    if now - _judged_at.get((scope, value), now - JUDGE_EVERY) < JUDGE_EVERY:
        return False
    _judged_at[scope, value] = now
    return True


def _judged(
    guard: FraudGuardSettings, now: float, scope: str, value: str, window: int | None = None
) -> QuerySet[PhoneVerification]:
    """The codes old enough to judge: sent in the ``window`` (``WINDOW`` unless given)
    before the last ``grace``, and after the destination's last block was lifted by hand (a
    person judged that evidence: the guard does not block again on it)."""
    end = now - guard.grace
    start = epoch_datetime(end - (guard.window if window is None else window))
    lifted = FraudBlock.objects.filter(scope=scope, value=value, lifted_at__gt=start)
    last_lift = lifted.aggregate(last=Max("lifted_at"))["last"]
    return PhoneVerification.objects.filter(
        created_at__gte=last_lift or start, created_at__lt=epoch_datetime(end)
    )


def prefix_sql(digits: int) -> Substr:
    """A number's prefix in SQL (``+`` and ``digits`` digits): ``FraudGuardSettings.prefix_of``
    for the database to group by."""
    return Substr("phone_number", 1, 1 + digits, output_field=CharField())


def _of_prefix(rows: QuerySet[PhoneVerification], prefix: str) -> QuerySet[PhoneVerification]:
    # A range, not LIKE: the number's btree index serves a range in any collation. Numbers of
    # the prefix are the prefix and more digits, and every collation puts letters after
    # digits: they all fall in [prefix, prefix + "Z").
    return rows.filter(phone_number__gte=prefix, phone_number__lt=prefix + "Z")


_FIGURES = {
    "sends": Count("pk"),
    "conversions": Count("pk", filter=Q(status=PhoneVerification.Status.VERIFIED)),
}


def is_allowed(prefix: str, guard: FraudGuardSettings) -> bool:
    """Whether a prefix may not be blocked: it is in, or contains, an allowed prefix
    (``ALLOW_PREFIXES`` or a ``FraudAllowedPrefix`` row)."""
    if any(prefix.startswith(a) or a.startswith(prefix) for a in guard.allow_prefixes):
        return True
    leading = [prefix[:end] for end in range(2, len(prefix) + 1)]
    rows = FraudAllowedPrefix.objects.filter(Q(prefix__in=leading) | Q(prefix__startswith=prefix))
    return rows.exists()


def _active(scope: str, value: str, now: float) -> FraudBlock | None:
    return (
        FraudBlock.objects.filter(
            FraudBlock.in_force(epoch_datetime(now)), scope=scope, value=value
        )
        .order_by("-until")
        .first()
    )


def _reason(sends: int, conversions: int, minutes: int, share: str, least: str) -> str:
    """Why a destination was blocked, in the site's language (``LANGUAGE_CODE``).

    Not the active language: the judgement runs in the request of whichever user's send
    triggered it, and the row is a record for the site's staff, written once.
    """
    with translation.override(settings.LANGUAGE_CODE):
        return ngettext(
            "%(sends)d code sent in %(minutes)d min, %(verified)d verified "
            "(%(share)s, below %(least)s)",
            "%(sends)d codes sent in %(minutes)d min, %(verified)d verified "
            "(%(share)s, below %(least)s)",
            sends,
        ) % {
            "sends": sends,
            "minutes": minutes,
            "verified": conversions,
            "share": share,
            "least": least,
        }


def _block(
    scope: str,
    value: str,
    sends: int,
    conversions: int,
    guard: FraudGuardSettings,
    store: RateLimitStore,
    now: float,
) -> FraudBlock:
    found = _active(scope, value, now)
    if found is not None:  # judged by another request meanwhile
        return found
    share = conversions / sends if sends else 0.0
    least = guard.min_conversion if scope == "prefix" else guard.country_min_conversion
    block = FraudBlock.objects.create(
        scope=scope,
        value=value,
        reason=_reason(sends, conversions, guard.window // 60, f"{share:.0%}", f"{least:.0%}"),
        sends=sends,
        conversions=conversions,
        until=epoch_datetime(now + guard.block_seconds),
    )
    store.hold(block_key(scope, value), guard.block_seconds)
    # A prefix or a country, never a whole number: nothing to mask.
    emit(
        "textflow.fraud.blocked",
        scope=scope,
        value=value,
        seconds=guard.block_seconds,
        sends=sends,
        verified=conversions,
    )
    signals.destination_blocked.send(sender=FraudBlock, block=block)
    return block


def _failing(sends: int, conversions: int, least: int, share: float) -> bool:
    return sends >= least and conversions < share * sends


def judge_prefix(
    prefix: str, guard: FraudGuardSettings, store: RateLimitStore, now: float
) -> FraudBlock | None:
    """Judge one prefix now (a store clock's reading); its block, if it is or gets one."""
    figures = _of_prefix(_judged(guard, now, "prefix", prefix), prefix).aggregate(**_FIGURES)
    sends, conversions = figures["sends"], figures["conversions"]
    if not _failing(sends, conversions, guard.min_sends, guard.min_conversion):
        return None
    if is_allowed(prefix, guard):
        return None
    return _block("prefix", prefix, sends, conversions, guard, store, now)


def judge_country(
    region: str,
    guard: FraudGuardSettings,
    store: RateLimitStore,
    now: float,
    *,
    window: int | None = None,
) -> list[FraudBlock]:
    """Judge a country and its prefixes now, over ``window`` seconds (``WINDOW`` unless
    given); the blocks it made or found."""
    rows = _judged(guard, now, "country", region, window).filter(country=region)
    figures = rows.aggregate(**_FIGURES)
    blocks = []
    if _failing(
        figures["sends"],
        figures["conversions"],
        guard.country_min_sends,
        guard.country_min_conversion,
    ):
        blocks.append(
            _block("country", region, figures["sends"], figures["conversions"], guard, store, now)
        )
    # The country's prefixes with enough codes to judge, worst first.
    prefixes = (
        rows.annotate(prefix=prefix_sql(guard.prefix_digits))
        .values("prefix")
        .annotate(sends=_FIGURES["sends"], conversions=_FIGURES["conversions"])
        .filter(sends__gte=guard.min_sends)
        .order_by("conversions")
    )
    row: dict[str, Any]
    for row in prefixes[:50]:  # type: ignore[assignment]  # values() rows, annotated
        if _failing(row["sends"], row["conversions"], guard.min_sends, guard.min_conversion):
            if not is_allowed(row["prefix"], guard):
                blocks.append(
                    _block(
                        "prefix",
                        row["prefix"],
                        row["sends"],
                        row["conversions"],
                        guard,
                        store,
                        now,
                    )
                )
    return blocks


def lift(block: FraudBlock, store: RateLimitStore, now: float) -> None:
    """End a block now: its row says when, and the store lets sends through at once."""
    if block.lifted_at is None:
        block.lifted_at = epoch_datetime(now)
        block.save(update_fields=["lifted_at"])
    store.release(block_key(block.scope, block.value))


def allow_prefix(
    prefix: str, store: RateLimitStore, now: float, note: str = ""
) -> FraudAllowedPrefix:
    """Never block ``prefix`` again, and lift its blocks (and those of the prefixes it
    contains or is contained in)."""
    allowed, _created = FraudAllowedPrefix.objects.get_or_create(
        prefix=prefix, defaults={"note": note}
    )
    active = FraudBlock.objects.filter(
        FraudBlock.in_force(epoch_datetime(now)), scope=FraudBlock.Scope.PREFIX
    )
    for block in active:
        if block.value.startswith(prefix) or prefix.startswith(block.value):
            lift(block, store, now)
    return allowed


def judge_refused(
    plan: Plan, guard: FraudGuardSettings, store: RateLimitStore, now: float
) -> tuple[bool, bool]:
    """After a cap refused a send: when the guard's own cap is the one full, judge what it
    guards; ``(the send's destination is blocked now, its prefix is allowed)``.

    The prefix's grace-period cap full: it has as many unjudged codes as the guard needs to
    judge it. The new-country cap full: the country has had codes all along and nobody
    verified one; it is judged over a day (``NEW_COUNTRY_WINDOW``), since the cap lets too
    few through in an hour to judge. Each destination is judged on a refusal at most once
    in ``JUDGE_EVERY`` seconds per process: refused requests cost a read, not one each."""
    blocked = allowed = False
    if plan.fresh is not None and store.peek(*plan.fresh) is not None:
        if due("prefix", plan.prefix, now):
            blocked = judge_prefix(plan.prefix, guard, store, now) is not None
        allowed = not blocked and is_allowed(plan.prefix, guard)
    new = plan.new_country
    if not blocked and new is not None and store.peek(*new) is not None:
        if due("country", plan.region, now):
            made = judge_country(plan.region, guard, store, now, window=NEW_COUNTRY_WINDOW)
            blocked = any(block.value in (plan.prefix, plan.region) for block in made)
    return blocked, allowed


def judge_counted(
    plan: Plan, counts: Counts, guard: FraudGuardSettings, store: RateLimitStore, now: float
) -> bool:
    """After a send's counters were taken: judge its destination when their ``counts``
    call for it (a prefix with a quarter of ``MIN_SENDS`` codes in their grace period, then
    every quarter more; a country at every ``MIN_SENDS``-th code of a window once it has
    enough to judge); whether the send's destination is blocked now. Rare: normal traffic
    never calls for a prefix's judgement, and calls for its country's once in
    ``MIN_SENDS`` codes."""
    step = max(2, guard.min_sends // 4)
    blocked = False
    fresh = plan.fresh
    prefix = 0 if fresh is None else counts.get((fresh[0], fresh[1].window), 0)
    if prefix and prefix % step == 0:
        blocked = judge_prefix(plan.prefix, guard, store, now) is not None
    sends = plan.country_count
    country = 0 if sends is None else counts.get(sends, 0)
    if country >= guard.country_min_sends and country % guard.min_sends == 0:
        made = judge_country(plan.region, guard, store, now)
        blocked = blocked or any(block.value in (plan.prefix, plan.region) for block in made)
    return blocked
