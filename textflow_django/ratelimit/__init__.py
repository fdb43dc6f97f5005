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

``Rate`` and ``parse_rate`` live in the leaf ``textflow_django._rates`` (the settings parse
rates, below this layer) and are re-exported here, their public home.
"""

from __future__ import annotations

from .._rates import Rate, parse_rate
from ..conf import conf
from ._base import RateLimitStore, Refusal
from ._base import _window as _window  # for tests that compute a window's key
from ._cache import CacheStore
from ._database import DatabaseStore
from ._redis import RedisCacheStore, _single_redis

__all__ = [
    "CacheStore",
    "DatabaseStore",
    "Rate",
    "RateLimitStore",
    "RedisCacheStore",
    "Refusal",
    "get_store",
    "parse_rate",
]


def get_store() -> RateLimitStore:
    """The store configured now (``RATELIMIT_STORE``, ``RATELIMIT_CACHE``)."""
    if conf.RATELIMIT_STORE == "cache":
        alias = conf.RATELIMIT_CACHE
        return RedisCacheStore(alias) if _single_redis(alias) else CacheStore(alias)
    return DatabaseStore()
