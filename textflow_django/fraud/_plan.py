"""What the Fraud Guard adds to a send's one round trip to the rate-limit store: its block
keys, its counters and its waiver (no database, no judgement here: ``_judge`` does that).

The keys, all in the rate-limit store (``RATELIMIT_STORE``), shared by every process:

- ``fraud:block:prefix:<prefix>`` and ``fraud:block:country:<region>``: held (``hold``)
  while the destination is blocked; the send is refused when either is held.
- ``fraud:prefix:<prefix>``: the prefix's codes still in their grace period, capped at
  ``MIN_SENDS`` per ``GRACE`` seconds: the guard cannot judge a code before its grace is
  over, so it does not let more of them pile up than it needs to judge a prefix.
- ``fraud:country_sends:<region>``: the country's codes per ``WINDOW``, no cap: its count says when
  to judge the country (every ``MIN_SENDS``-th code); the country budget's own counter
  instead, when one of its rates counts over ``WINDOW`` (the default's does).
- ``fraud:new_country:<region>``: the new-country cap (``NEW_COUNTRY_LIMIT``), waived while
  ``fraud:known:<region>`` is held: for 30 days after a number of the country verified.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from .._rates import Rate
from ..conf import FraudGuardSettings

__all__ = ["KNOWN_SECONDS", "Plan", "block_key", "known_key", "plan"]

#: How long a verified number makes its country known (not new) to the guard.
KNOWN_SECONDS = 30 * 86400


def block_key(scope: str, value: str) -> str:
    """The store key held while a destination (``scope`` "prefix" or "country") is blocked."""
    return f"fraud:block:{scope}:{value}"


def known_key(region: str) -> str:
    """The store key held while ``region`` has a number verified in the last 30 days."""
    return f"fraud:known:{region}"


def _uncapped(window: int) -> Rate:
    """A rate that only counts: the largest limit the stores' exact arithmetic allows."""
    return Rate(2**53 // (window * 1000) - 1, window)


@dataclass(frozen=True)
class Plan:
    """The guard's part of one send: what it adds to the store's ``acquire``."""

    prefix: str
    region: str
    hits: list[tuple[str, Rate]] = field(default_factory=list)
    blocks: list[str] = field(default_factory=list)
    waivers: dict[str, str] = field(default_factory=dict)
    #: The ``counts`` key (key, window) of the country's codes over ``WINDOW``, when the
    #: guard counts them.
    country_count: tuple[str, int] | None = None

    @property
    def fresh(self) -> tuple[str, Rate] | None:
        """The prefix's grace-period cap, when the guard applies it."""
        return next((hit for hit in self.hits if hit[0].startswith("fraud:prefix:")), None)

    @property
    def new_country(self) -> tuple[str, Rate] | None:
        """The new-country cap, when the plan has it (the country is not known)."""
        return next((h for h in self.hits if h[0].startswith("fraud:new_country:")), None)

    def without_prefix_cap(self) -> Plan:
        """This plan for a prefix allowed from the admin: no grace-period cap."""
        hits = [hit for hit in self.hits if hit != self.fresh]
        return Plan(self.prefix, self.region, hits, self.blocks, self.waivers, self.country_count)


def plan(
    number: str,
    region: str,
    guard: FraudGuardSettings,
    limits: Sequence[tuple[str, Rate]],
    known: Callable[[], bool],
) -> Plan:
    """The guard's part of a send of a code to ``number`` (E.164) in ``region``, beside the
    send's ``limits`` (its caps' hits). Empty when the guard is off or the number is in
    ``ALLOW_PREFIXES`` (those are never blocked nor slowed; a prefix allowed from the admin
    is checked when the guard judges it). ``known()``: whether the country had a number
    verified in the last 30 days, as this process knows (``_known``), asked only when the
    guard applies; if it says no, the new-country cap is added with the country's mark as
    its waiver, so the store has the last word.

    The country's count is its budget's (``SEND_LIMITS["country"]``) when one of its rates
    counts over ``WINDOW``: one counter, not two, for every send."""
    prefix = guard.prefix_of(number)
    if not guard.enabled or number.startswith(guard.allow_prefixes or ("\0",)):
        return Plan(prefix, region)
    hits = [(f"fraud:prefix:{prefix}", Rate(guard.min_sends, guard.grace))]
    count = f"send:country:{region}"
    if not any(key == count and rate.window == guard.window for key, rate in limits):
        count = f"fraud:country_sends:{region}"
        hits.append((count, _uncapped(guard.window)))
    waivers = {}
    if not known():
        new = f"fraud:new_country:{region}"
        hits.append((new, guard.new_country_limit))
        waivers[new] = known_key(region)
    return Plan(
        prefix,
        region,
        hits=hits,
        blocks=[block_key("prefix", prefix), block_key("country", region)],
        waivers=waivers,
        country_count=(count, guard.window),
    )
