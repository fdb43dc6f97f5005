"""``CacheStore``: counters in a Django cache (``RATELIMIT_STORE = "cache"``).

Contract: the semantics of :mod:`._base`, on the cache named by ``RATELIMIT_CACHE``. It is
atomic where the cache's ``add`` and ``incr`` are (Redis, Memcached); a per-process cache
(LocMemCache) does not hold limits across workers (system check ``textflow.W004``).
A claim is stored as its deadline (epoch seconds) under ``textflow:rl:<key>``; a count as a
plain integer under ``textflow:rl:<key>:<window>:<index>``, expiring one second after its
window ends. ``RedisCacheStore`` reads and writes the same keys and values.
"""

from __future__ import annotations

import math
import time

from django.core.cache import caches

from .._rates import Rate
from ._base import _OneByOne, _wait_if_reached, _window

__all__ = ["CacheStore"]

_PREFIX = "textflow:rl:"


class CacheStore(_OneByOne):
    """Counters in a Django cache (Redis or Memcached for more than one process)."""

    def __init__(self, alias: str) -> None:
        self.cache = caches[alias]

    def claim(self, key: str, ttl: int) -> int | None:
        until = time.time() + ttl
        if self.cache.add(_PREFIX + key, until, timeout=ttl):
            return None
        held = self.cache.get(_PREFIX + key)
        if held is None:  # expired between add and get: try once more
            return None if self.cache.add(_PREFIX + key, until, timeout=ttl) else 1
        return max(1, math.ceil(float(held) - time.time()))

    def release(self, key: str) -> None:
        self.cache.delete(_PREFIX + key)

    def _key(self, key: str, rate: Rate, index: int) -> str:
        return f"{_PREFIX}{key}:{rate.window}:{index}"

    def hit(self, key: str, rate: Rate, now: float | None = None) -> int | None:
        index, left = _window(rate, time.time() if now is None else now)
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
        index, _left = _window(rate, time.time() if now is None else now)
        try:
            self.cache.decr(self._key(key, rate, index))
        except ValueError:
            pass

    def peek(self, key: str, rate: Rate) -> int | None:
        index, left = _window(rate, time.time())
        count = self.cache.get(self._key(key, rate, index), 0)
        return _wait_if_reached(count, rate, left)
