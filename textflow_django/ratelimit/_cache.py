"""``CacheStore``: counters in a Django cache (``RATELIMIT_STORE = "cache"``).

Contract: the semantics of :mod:`._base`, on the cache named by ``RATELIMIT_CACHE``. It is
atomic where the cache's ``add`` and ``incr`` are (Redis, Memcached); a per-process cache
(LocMemCache) does not hold limits across workers (system check ``textflow.W004``).
A claim is stored as its deadline by the store's clock (epoch seconds) under
``textflow:rl:<key>``; a window's count as a plain integer under
``textflow:rl:<key>:<window>:<index>``, given a cache timeout of one second past the end of
the next window (while it is that window's previous one). A hit reads the previous window's
count, then counts itself with ``add``/``incr`` and takes itself back with ``decr`` when that
passed the room the previous window leaves: as many concurrent hits are allowed as fit,
because ``incr`` hands each its own number. ``RedisCacheStore`` reads and writes the same keys
and values (it rounds a claim's deadline up to a whole second).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Sequence

from django.core.cache import caches
from django.core.cache.backends.dummy import DummyCache
from django.core.cache.backends.filebased import FileBasedCache
from django.core.cache.backends.locmem import LocMemCache

from .._rates import Rate
from ..conf import conf
from ._base import Clock, Counts, _OneByOne, _position, _room, _wait

__all__ = ["CacheStore"]

_PREFIX = "textflow:rl:"


def _configured_windows() -> set[int]:
    """The window lengths (seconds) of every rate the settings count with: the send caps,
    the failed-check caps and the Fraud Guard's (its grace period's, its counting window's
    and the new-country cap's). What :meth:`CacheStore.forget` can reach."""
    guard = conf.FRAUD_GUARD
    rates = [rate for limits in conf.SEND_LIMITS.values() for rate in limits]
    rates += [rate for limits in conf.FAILED_CHECK_LIMITS.values() for rate in limits]
    return {rate.window for rate in rates} | {
        guard.grace,
        guard.window,
        guard.new_country_limit.window,
    }


class CacheStore(_OneByOne):
    """Counters in a Django cache (Redis or Memcached for more than one process)."""

    def __init__(self, alias: str, *, clock: Clock = time.time) -> None:
        self.cache = caches[alias]
        self.clock = clock

    @property
    def shared(self) -> bool:
        """False on Django's ``LocMemCache`` (one per process), ``DummyCache`` (keeps
        nothing) and ``FileBasedCache`` (no atomic ``add``/``incr`` across processes), or a
        subclass of one: the caches system check ``textflow.W004`` warns about."""
        return not isinstance(self.cache, LocMemCache | DummyCache | FileBasedCache)

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

    def hold(self, key: str, seconds: int) -> None:
        # A whole second, as a claim's deadline on Redis (its script reads integers).
        self.cache.set(_PREFIX + key, math.ceil(self.clock() + seconds), timeout=seconds + 1)

    def held(self, key: str) -> int | None:
        deadline = self.cache.get(_PREFIX + key)
        now = self.clock()
        if deadline is None or float(deadline) <= now:
            return None
        return max(1, math.ceil(float(deadline) - now))

    def incr(self, key: str, ttl: int) -> int:
        """``add``, else ``incr`` (atomic on Redis and Memcached), then ``touch`` to keep it
        ``ttl`` seconds from now: the cache's own timeout, its expiry."""
        full = _PREFIX + key
        if self.cache.add(full, 1, timeout=ttl):
            return 1
        try:
            count = int(self.cache.incr(full))
        except ValueError:  # expired between add and incr
            count = 1 if self.cache.add(full, 1, timeout=ttl) else int(self.cache.incr(full))
        self.cache.touch(full, ttl)
        return count

    def count(self, key: str) -> int:
        return int(self.cache.get(_PREFIX + key) or 0)

    def forget(self, keys: Sequence[str], *, windows: Iterable[int] = ()) -> int:
        """Delete each key's claim, hold or counter, and its counts in the current and
        previous windows (a count is kept no longer) of every window length in
        ``windows`` and in the settings (:func:`_configured_windows`). A cache cannot list
        its keys: the counts of a rate no longer configured (and not in ``windows``) are
        not reached, and go when their cache timeout does (two windows at most); so do the
        takeover markers of claims (``<key>:over:<deadline>``, which hold no count).
        Answers how many of these entries were there (read just before the delete)."""
        now = self.clock()
        lengths = sorted(_configured_windows().union(windows))
        names = []
        for key in dict.fromkeys(keys):
            names.append(_PREFIX + key)
            for window in lengths:
                index = _position(Rate(1, window), now).index
                names += [f"{_PREFIX}{key}:{window}:{i}" for i in (index, index - 1)]
        if not names:
            return 0
        found = self.cache.get_many(names)
        self.cache.delete_many(names)
        return len(found)

    def _current(self, hits: Sequence[tuple[str, Rate]], now: float) -> Counts:
        keys = {
            (key, rate.window): self._key(key, rate, _position(rate, now).index)
            for key, rate in hits
        }
        found = self.cache.get_many(list(keys.values()))
        return {name: int(found.get(full) or 0) for name, full in keys.items()}

    def _key(self, key: str, rate: Rate, index: int) -> str:
        return f"{_PREFIX}{key}:{rate.window}:{index}"

    def hit(self, key: str, rate: Rate, now: float | None = None) -> int | None:
        at = _position(rate, self.clock() if now is None else now)
        full = self._key(key, rate, at.index)
        prev = int(self.cache.get(self._key(key, rate, at.index - 1)) or 0)
        room = _room(rate, at, prev)
        if room < 1:  # no room whatever the count: count nothing
            return _wait(rate, at, prev, int(self.cache.get(full) or 0))
        if self.cache.add(full, 1, timeout=at.keep):
            count = 1
        else:
            try:
                count = self.cache.incr(full)
            except ValueError:  # the count just expired
                count = 1 if self.cache.add(full, 1, timeout=at.keep) else self.cache.incr(full)
        if count > room:
            self.cache.decr(full)
            # The numbers 1 to ``room`` went to hits that were allowed; a number above it
            # includes other refused hits in flight (each takes itself back): the wait is
            # that of a full window. (One after another, ``count - 1`` is ``room``.)
            return _wait(rate, at, prev, room)
        return None

    def unhit(self, key: str, rate: Rate, now: float | None = None) -> None:
        at = _position(rate, self.clock() if now is None else now)
        try:
            self.cache.decr(self._key(key, rate, at.index))
        except ValueError:  # expired (its window is past): nothing left to take back
            pass

    def peek(self, key: str, rate: Rate) -> int | None:
        at = _position(rate, self.clock())
        full, before = self._key(key, rate, at.index), self._key(key, rate, at.index - 1)
        counts = self.cache.get_many([full, before])
        return _wait(rate, at, int(counts.get(before) or 0), int(counts.get(full) or 0))
