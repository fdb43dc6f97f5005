"""``CacheStore``: counters in a Django cache (``RATELIMIT_STORE = "cache"``).

Contract: the semantics of :mod:`._base`, on the cache named by ``RATELIMIT_CACHE``. It is
atomic where the cache's ``add`` and ``incr`` are (Redis, Memcached); a per-process cache
(LocMemCache) does not hold limits across workers (system check ``textflow.W004``).
A claim is stored as its deadline by the store's clock (epoch seconds) under
``textflow:rl:<key>``; a count as a plain integer under ``textflow:rl:<key>:<window>:<index>``,
given a cache timeout of one second past its window's end. ``RedisCacheStore`` reads and
writes the same keys and values (it rounds a claim's deadline up to a whole second).
"""

from __future__ import annotations

import math
import time

from django.core.cache import caches

from .._rates import Rate
from ._base import Clock, _OneByOne, _wait_if_reached, _window

__all__ = ["CacheStore"]

_PREFIX = "textflow:rl:"


class CacheStore(_OneByOne):
    """Counters in a Django cache (Redis or Memcached for more than one process)."""

    def __init__(self, alias: str, *, clock: Clock = time.time) -> None:
        self.cache = caches[alias]
        self.clock = clock

    def claim(self, key: str, ttl: int) -> int | None:
        now = self.clock()
        until = now + ttl
        full = _PREFIX + key
        if self.cache.add(full, until, timeout=ttl):
            return None
        held = self.cache.get(full)
        if held is None:  # expired between add and get: try once more
            return None if self.cache.add(full, until, timeout=ttl) else 1
        if float(held) > now:
            return max(1, math.ceil(float(held) - now))
        # Ended by the clock, still kept by the cache (its timeout runs on its own clock, and
        # Memcached's to the second): take it over. Of the callers that read this deadline,
        # only the one whose ``add`` (atomic) of a marker named after it succeeds overwrites
        # it; to the others the claim is held, by that one.
        if self.cache.add(f"{full}:over:{held!r}", 1, timeout=ttl):
            self.cache.set(full, until, timeout=ttl)
            return None
        return 1

    def release(self, key: str) -> None:
        self.cache.delete(_PREFIX + key)

    def _key(self, key: str, rate: Rate, index: int) -> str:
        return f"{_PREFIX}{key}:{rate.window}:{index}"

    def hit(self, key: str, rate: Rate, now: float | None = None) -> int | None:
        index, left = _window(rate, self.clock() if now is None else now)
        full = self._key(key, rate, index)
        if self.cache.add(full, 1, timeout=left + 1):
            count = 1
        else:
            try:
                count = self.cache.incr(full)
            except ValueError:  # the window just expired
                count = 1 if self.cache.add(full, 1, timeout=left + 1) else self.cache.incr(full)
        if count > rate.limit:
            self.cache.decr(full)
            return left
        return None

    def unhit(self, key: str, rate: Rate, now: float | None = None) -> None:
        index, _left = _window(rate, self.clock() if now is None else now)
        try:
            self.cache.decr(self._key(key, rate, index))
        except ValueError:
            pass

    def peek(self, key: str, rate: Rate) -> int | None:
        index, left = _window(rate, self.clock())
        count = self.cache.get(self._key(key, rate, index), 0)
        return _wait_if_reached(count, rate, left)
