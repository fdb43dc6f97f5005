"""What the Fraud Guard adds to a send's one round trip to the rate-limit store: its block
keys, its counters and its waiver (no database, no judgement here: ``_judge`` does that).

The keys, all in the rate-limit store (``RATELIMIT_STORE``), shared by every process:

- ``fraud:block:prefix:<prefix>`` and ``fraud:block:country:<region>``: held (``hold``)
  while the destination is blocked; the send is refused when either is held.
- ``fraud:prefix:<prefix>``: the prefix's codes still in their grace period, capped at
  ``MIN_SENDS`` per ``GRACE`` seconds: the guard cannot judge a code before its grace is
  over, so it does not let more of them pile up than it needs to judge a prefix.
- ``fraud:country_sends:<region>``: the country's codes per ``WINDOW``, no cap: its count says when
  to judge the country (every ``MIN_SENDS``-th code).
- ``fraud:new_country:<region>``: the new-country cap (``NEW_COUNTRY_LIMIT``), waived while
  ``fraud:known:<region>`` is held: for 30 days after a number of the country verified.
"""

from __future__ import annotations

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

    @property
    def fresh(self) -> tuple[str, Rate] | None:
        """The prefix's grace-period cap, when the guard applies it."""
        return next((hit for hit in self.hits if hit[0].startswith("fraud:prefix:")), None)

    def without_prefix_cap(self) -> Plan:
        """This plan for a prefix allowed from the admin: no grace-period cap."""
        hits = [hit for hit in self.hits if hit != self.fresh]
        return Plan(self.prefix, self.region, hits, self.blocks, self.waivers)

    @property
    def country_sends(self) -> tuple[str, int] | None:
        """The counts key of the country's codes, when the guard counts them."""
        found = next((h for h in self.hits if h[0].startswith("fraud:country_sends:")), None)
        return None if found is None else (found[0], found[1].window)


def plan(number: str, region: str, guard: FraudGuardSettings) -> Plan:
    """The guard's part of a send of a code to ``number`` (E.164) in ``region``. Empty when
    the guard is off or the number is in ``ALLOW_PREFIXES`` (those are never blocked nor
    slowed; a prefix allowed from the admin is checked when the guard judges it)."""
    prefix = guard.prefix_of(number)
    if not guard.enabled or number.startswith(guard.allow_prefixes or ("\0",)):
        return Plan(prefix, region)
    new = f"fraud:new_country:{region}"
    return Plan(
        prefix,
        region,
        hits=[
            (f"fraud:prefix:{prefix}", Rate(guard.min_sends, guard.grace)),
            (f"fraud:country_sends:{region}", _uncapped(guard.window)),
            (new, guard.new_country_limit),
        ],
        blocks=[block_key("prefix", prefix), block_key("country", region)],
        waivers={new: known_key(region)},
    )
