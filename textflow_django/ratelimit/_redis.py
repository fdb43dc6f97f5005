"""``RedisCacheStore``: ``CacheStore`` with one round trip per operation on a single Redis.

Chosen by :func:`textflow_django.ratelimit.get_store` when ``RATELIMIT_CACHE`` is Django's
``RedisCache`` with one server. Contract: the semantics of :mod:`._base`, with ``acquire``,
``give_back`` and ``hit_all`` as one Lua script each (atomic on the server) and ``peek_all``
as one ``MGET``, and ``claim`` through the ``acquire`` script; keys and values are
``CacheStore``'s, so the two read each other's counters. The scripts take the time from the
store's clock as an argument: Redis's TTLs only free memory (see :mod:`._base`).
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NamedTuple, cast

from django.core.cache import caches

from .._rates import Rate
from ._base import Refusal, _wait_if_reached, _window
from ._cache import _PREFIX, CacheStore

if TYPE_CHECKING:
    from django.core.cache.backends.redis import RedisCache

__all__ = ["RedisCacheStore"]


# One round trip for a whole send: the cooldown and every cap, all or nothing. KEYS: the
# claim key (when ARGV[1] is 1), then the cap keys; ARGV: has_claim, claim ttl, claim
# deadline, now, then (limit, seconds left in its window) for each cap key.
# Time comes from the caller's clock (ARGV): a claim whose deadline has passed by it is taken
# over though Redis still keeps it, and a refused cap answers the seconds left in its window.
# A deadline is stored rounded up to a whole second (RedisCache reads integers back as such),
# so a claim's wait is capped at the cooldown itself.
# The TTLs set here only free memory (they last as long as the claim or the window, plus a
# second for a window). A value that is not a number (a claim pickled by a CacheStore on the
# same keys) has no deadline to read: its TTL stands in for one.
_ACQUIRE_LUA = """
local has_claim = ARGV[1] == '1'
local now = tonumber(ARGV[4])
local first = 1
if has_claim then
  if not redis.call('SET', KEYS[1], ARGV[3], 'NX', 'EX', ARGV[2]) then
    local held = tonumber(redis.call('GET', KEYS[1]))
    if held == nil then return {1, redis.call('TTL', KEYS[1])} end
    if held > now then return {1, math.min(math.ceil(held - now), tonumber(ARGV[2]))} end
    redis.call('SET', KEYS[1], ARGV[3], 'EX', ARGV[2])
  end
  first = 2
end
local a = 5
for i = first, #KEYS do
  local limit = tonumber(ARGV[a])
  local left = tonumber(ARGV[a + 1])
  a = a + 2
  local n = redis.call('INCR', KEYS[i])
  if n == 1 then redis.call('EXPIRE', KEYS[i], left + 1) end
  if n > limit then
    for j = first, i do redis.call('DECR', KEYS[j]) end
    if has_claim then redis.call('DEL', KEYS[1]) end
    return {2, left}
  end
end
return {0, 0}
"""


# Count one event against each cap key, each on its own (a full cap stays full, as
# CacheStore.hit leaves it). KEYS: the cap keys; ARGV: (limit, ttl) for each.
_HIT_ALL_LUA = """
for i = 1, #KEYS do
  local n = redis.call('INCR', KEYS[i])
  if n == 1 then redis.call('EXPIRE', KEYS[i], ARGV[2 * i]) end
  if n > tonumber(ARGV[2 * i - 1]) then redis.call('DECR', KEYS[i]) end
end
return 0
"""


# Undo an acquire: drop the claim (when ARGV[1] is 1, KEYS[1]), then take one off each cap
# key that still exists. A key that expired meanwhile (its window ended) is left alone: a
# bare DECR would create it at -1 with no expiry, a key that is never read nor freed.
_GIVE_BACK_LUA = """
local first = 1
if ARGV[1] == '1' then
  redis.call('DEL', KEYS[1])
  first = 2
end
for i = first, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 1 then redis.call('DECR', KEYS[i]) end
end
return 0
"""


class _Redis(NamedTuple):
    client: Any  # redis.Redis
    acquire: Any  # redis.commands.core.Script
    give_back: Any
    hit_all: Any


# redis-py clients (with their scripts) per Django RedisCacheClient: building a
# ``redis.Redis`` costs more than the round trip it makes, so each is built once. Weak keys:
# a cache object dropped by Django (a new thread's, or after override_settings) frees its own.
_clients: weakref.WeakKeyDictionary[Any, _Redis] = weakref.WeakKeyDictionary()


class RedisCacheStore(CacheStore):
    """``CacheStore`` on Django's ``RedisCache`` with one server: ``claim``, ``acquire``,
    ``give_back``, ``peek_all`` and ``hit_all`` are single round trips (a Lua script, an
    MGET) instead of one per key.
    Keys and values stay those of ``CacheStore``, so both read each other's counters.
    (``make_key``, not ``make_and_validate_key``: validation only warns about keys Memcached
    would refuse, and these keys are ours, short and plain ASCII.)"""

    def _redis(self) -> _Redis:
        """The redis-py client Django's RedisCache writes with, and the scripts registered
        on it (run by EVALSHA: a script's text is not sent every call)."""
        owner = cast("RedisCache", self.cache)._cache
        found = _clients.get(owner)
        if found is None:
            client = owner.get_client(None, write=True)
            found = _clients[owner] = _Redis(
                client,
                client.register_script(_ACQUIRE_LUA),
                client.register_script(_GIVE_BACK_LUA),
                client.register_script(_HIT_ALL_LUA),
            )
        return found

    def claim(self, key: str, ttl: int) -> int | None:
        """A claim alone, by the acquire script: one home for a claim on Redis (its deadline
        stored as a whole second, which the script can read)."""
        refused = self.acquire((key, ttl), (), self.clock())
        return None if refused is None else refused.retry_after

    def _cap_keys(
        self, hits: Sequence[tuple[str, Rate]], now: float
    ) -> list[tuple[str, Rate, int]]:
        """(Redis key, rate, seconds left in the window) for each cap."""
        keys = []
        for key, rate in hits:
            index, left = _window(rate, now)
            keys.append((self.cache.make_key(self._key(key, rate, index)), rate, left))
        return keys

    def acquire(
        self, claim: tuple[str, int] | None, hits: Sequence[tuple[str, Rate]], now: float
    ) -> Refusal | None:
        keys: list[str] = []
        args: list[int | float] = [1 if claim else 0, claim[1] if claim else 0, 0, now]
        if claim is not None:
            keys.append(self.cache.make_key(_PREFIX + claim[0]))
            args[2] = math.ceil(now + claim[1])  # an int: RedisCache reads it back as such
        for key, rate, left in self._cap_keys(hits, now):
            keys.append(key)
            args += [rate.limit, left]
        kind, wait = self._redis().acquire(keys=keys, args=args)
        if kind == 0:
            return None
        return Refusal("claim" if kind == 1 else "hit", max(1, int(wait)))

    def give_back(
        self, claim: tuple[str, int] | None, hits: Sequence[tuple[str, Rate]], now: float
    ) -> None:
        keys = [self.cache.make_key(_PREFIX + claim[0])] if claim is not None else []
        keys += [key for key, _rate, _left in self._cap_keys(hits, now)]
        self._redis().give_back(keys=keys, args=[1 if claim is not None else 0])

    def peek_all(self, hits: Sequence[tuple[str, Rate]]) -> int | None:
        if not hits:
            return None
        caps = self._cap_keys(hits, self.clock())
        counts = self._redis().client.mget([key for key, _rate, _left in caps])
        # Values as RedisCache stores them: plain integers for counters.
        waits = [
            wait
            for (_key, rate, left), count in zip(caps, counts, strict=True)
            if (wait := _wait_if_reached(count, rate, left)) is not None
        ]
        return max(waits) if waits else None

    def hit_all(self, hits: Sequence[tuple[str, Rate]]) -> None:
        if not hits:
            return
        caps = self._cap_keys(hits, self.clock())
        args: list[int] = []
        for _key, rate, left in caps:
            args += [rate.limit, left + 1]
        self._redis().hit_all(keys=[key for key, _rate, _left in caps], args=args)


def _single_redis(alias: str) -> bool:
    from django.core.cache.backends.redis import RedisCache

    cache = caches[alias]
    return isinstance(cache, RedisCache) and len(cache._cache._servers) == 1  # type: ignore[attr-defined]
