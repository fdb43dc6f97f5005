"""Atomic counters for cooldowns and caps, shared by every process of a site.

Two primitives, ``claim`` (the resend cooldown) and ``hit`` (the send and wrong-code caps),
both undoable so a failed SMS send consumes nothing; their contract is in
:mod:`textflow_django.ratelimit._base`. Three stores implement them, one module each, and
:func:`get_store` picks one from ``TEXTFLOW["RATELIMIT_STORE"]``:

- ``"database"`` (the default): :class:`DatabaseStore`, rows of ``RateLimitCounter``
  (``_database``);
- ``"cache"``: :class:`CacheStore` on the Django cache named by ``RATELIMIT_CACHE``
  (``_cache``), or :class:`RedisCacheStore` (``_redis``), the same with one round trip per
  operation, when that cache is Django's ``RedisCache`` with one server.

Each store takes ``clock=`` (``time.time`` unless given), the one source of time for its
claims and windows; ``get_store`` builds them with the real clock.

Rolling windows. A cap such as ``"10/d"`` counts on a window that slides with the clock, so
no cap resets at a calendar boundary (midnight UTC, the top of an hour). Every store uses the
*sliding window counter* (Cloudflare, "Counting things, a lot of different things", 2017):
one count per fixed window of the rate's length, and for the window of that length ending
now the estimate ``prev * (1 - elapsed / window) + curr`` (``prev``: the previous fixed
window's count, ``curr``: the current one's, ``elapsed``: the time into the current one). A
hit is allowed while ``estimate + 1 <= limit``; a refusal's ``retry_after`` is the whole
seconds until one would be, from the two counts. The arithmetic is in :mod:`._base`.

It is an approximation: it assumes the previous window's hits were spread evenly over it.
What it guarantees, for a rate of ``L`` per ``W`` seconds:

- Any span of ``W`` seconds holds at most ``L + x - p * d / W`` hits, where ``p`` is the
  count of the fixed window in which the span starts, ``d`` the part of that window inside
  the span and ``x`` that window's hits inside it (the last hit in the span had to fit beside
  ``p`` weighted by at least ``d / W``). That is ``L`` when the previous window's hits were
  spread evenly (``x = p * d / W``), and at worst ``2 * L - 1``: ``L`` hits at the very end
  of a window, then ``L - 1`` more just before ``W`` has passed since them (``20 + 19 = 39``
  for ``"20/d"``, over a day; calendar windows let 40 through in seconds around midnight).
- Each fixed window holds at most ``L``, so over long spans the rate is at most ``L`` per
  ``W``; a window that holds ``L`` leaves at most ``L - 1`` to the next one.
- The longest wait a refusal answers is ``W + ceil(W / L)`` seconds (a cap filled at the
  very start of a window weighs on the next one as if spread over this one): 72 minutes
  for ``"5/h"``, 26.4 hours for ``"10/d"``.

Hits at one moment are atomic on every store: of many concurrent hits exactly as many are
allowed as fit. A hit whose ``now`` was read before a window boundary but counted after
hits made in the new window (a request in flight across the boundary) lands in the old
window, which those hits already read: only such stragglers can pass the bounds above, by
their own number.

``Rate`` and ``parse_rate`` live in the leaf ``textflow_django._rates`` (the settings parse
rates, below this layer) and are re-exported here, their public home.
"""

from __future__ import annotations

from .._rates import Rate, parse_rate
from ..conf import conf
from ._base import Counts, RateLimitStore, Refusal
from ._base import _position as _position  # for tests that compute a window's key
from ._cache import CacheStore
from ._database import DatabaseStore, epoch_datetime
from ._redis import RedisCacheStore, _single_redis

__all__ = [
    "CacheStore",
    "Counts",
    "DatabaseStore",
    "Rate",
    "RateLimitStore",
    "RedisCacheStore",
    "Refusal",
    "epoch_datetime",
    "get_store",
    "parse_rate",
]


def get_store() -> RateLimitStore:
    """The store configured now (``RATELIMIT_STORE``, ``RATELIMIT_CACHE``)."""
    if conf.RATELIMIT_STORE == "cache":
        alias = conf.RATELIMIT_CACHE
        return RedisCacheStore(alias) if _single_redis(alias) else CacheStore(alias)
    return DatabaseStore()
