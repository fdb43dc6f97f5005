"""``RedisCacheStore``: ``CacheStore`` with one round trip per operation on a single Redis.

Chosen by :func:`textflow_django.ratelimit.get_store` when ``RATELIMIT_CACHE`` is Django's
``RedisCache`` with one server. Contract: the semantics of :mod:`._base`, with ``acquire``,
``hit_all`` and ``hit`` as one Lua script (atomic on the server: it reads each cap's two
windows and counts in the current one without another client in between), ``give_back``
and ``unhit`` as another, ``peek_all`` and ``peek`` as one ``MGET``, and ``claim`` through
the ``acquire`` script; keys and values are ``CacheStore``'s, so the two read each other's
counters. The scripts take the time from the store's clock (as arguments computed from it):
Redis's TTLs only free memory (see :mod:`._base`). A refusal's wait is computed in Python
from the counts the script answers, by the function every store uses.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple, cast

from django.core.cache import caches

from .._rates import Rate
from ._base import Counts, Refusal, _Position, _position, _wait
from ._cache import _PREFIX, CacheStore

if TYPE_CHECKING:
    from django.core.cache.backends.redis import RedisCache

__all__ = ["RedisCacheStore"]


# One round trip for a whole send: the blocks, the cooldown and every cap. KEYS: the claim key
# (when ARGV[1] is 1), then the block keys (ARGV[6] of them), then for each cap its current
# window's key, its previous window's key and its waiver key (its own current key when it
# has none); ARGV: has_claim, claim ttl, claim deadline, now, all_or_nothing, block count,
# then (limit, span, overlap, keep, has_waiver) for each cap (see _base._Position:
# milliseconds, integers, and the seconds a count is kept).
# A block or waiver key is held while its value, a deadline in epoch seconds, is past now
# (CacheStore.hold writes whole seconds); a held block answers {3, seconds left} and takes
# nothing. A cap whose waiver is held is skipped (neither checked nor counted).
# all_or_nothing = 1 (acquire, hit): the first cap without room undoes every count made and
# the claim, and answers {2, its position among the caps, prev, curr}. 0 (hit_all): a cap
# without room is left as it is, the others are counted.
# Success answers {0, 0, then each cap's current count after it, or -1 when waived}.
# A cap's rule is _base._room's: a hit fits while prev * overlap + (curr + 1) * span <=
# limit * span (integers below 2**53: exact in Lua's doubles). It counts (INCR) and takes
# itself back (DECR) when it did not fit, as CacheStore.hit does.
# Time comes from the caller's clock (ARGV): a claim whose deadline has passed by it is taken
# over though Redis still keeps it. A deadline is stored rounded up to a whole second
# (RedisCache reads integers back as such), so a claim's wait is capped at the cooldown
# itself. The TTLs set here only free memory (a count is kept until the next window ends,
# plus a second). A value that is not a number (a claim pickled by a CacheStore on the same
# keys) has no deadline to read: its TTL stands in for one.
_HITS_LUA = """
local has_claim = ARGV[1] == '1'
local now = tonumber(ARGV[4])
local all_or_nothing = ARGV[5] == '1'
local nblocks = tonumber(ARGV[6])
local first = 1
if has_claim then first = 2 end
local longest = 0
for b = first, first + nblocks - 1 do
  local held = tonumber(redis.call('GET', KEYS[b]))
  if held ~= nil and held > now then longest = math.max(longest, math.ceil(held - now)) end
end
if longest > 0 then return {3, longest} end
if has_claim then
  if not redis.call('SET', KEYS[1], ARGV[3], 'NX', 'EX', ARGV[2]) then
    local held = tonumber(redis.call('GET', KEYS[1]))
    if held == nil then return {1, redis.call('TTL', KEYS[1])} end
    if held > now then return {1, math.min(math.ceil(held - now), tonumber(ARGV[2]))} end
    redis.call('SET', KEYS[1], ARGV[3], 'EX', ARGV[2])
  end
end
local a = 7
local cap = 0
local counted = {}
local answer = {0, 0}
for i = first + nblocks, #KEYS, 3 do
  local limit, span = tonumber(ARGV[a]), tonumber(ARGV[a + 1])
  local overlap, keep = tonumber(ARGV[a + 2]), ARGV[a + 3]
  local has_waiver = ARGV[a + 4] == '1'
  a = a + 5
  cap = cap + 1
  local waiver = nil
  if has_waiver then waiver = tonumber(redis.call('GET', KEYS[i + 2])) end
  if waiver ~= nil and waiver > now then
    table.insert(answer, -1)
  else
    local prev = tonumber(redis.call('GET', KEYS[i + 1])) or 0
    local n = redis.call('INCR', KEYS[i])
    if n == 1 then redis.call('EXPIRE', KEYS[i], keep) end
    if prev * overlap + n * span > limit * span then
      if all_or_nothing then
        redis.call('DECR', KEYS[i])
        for _, key in ipairs(counted) do redis.call('DECR', key) end
        if has_claim then redis.call('DEL', KEYS[1]) end
        return {2, cap, prev, n - 1}
      end
      redis.call('DECR', KEYS[i])
      n = n - 1
    else
      table.insert(counted, KEYS[i])
    end
    table.insert(answer, n)
  end
end
return answer
"""


# Undo an acquire: drop the claim (when ARGV[1] is 1, KEYS[1]), then take one off each cap
# key (the window each hit was counted in) that still exists. A key that expired meanwhile
# (its window and the next one ended) is left alone: a bare DECR would create it at -1 with
# no expiry, a key that is never read nor freed.
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
    hits: Any  # redis.commands.core.Script
    give_back: Any


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
                client.register_script(_HITS_LUA),
                client.register_script(_GIVE_BACK_LUA),
            )
        return found

    def claim(self, key: str, ttl: int) -> int | None:
        """A claim alone, by the acquire script: one home for a claim on Redis (its deadline
        stored as a whole second, which the script can read)."""
        refused = self.acquire((key, ttl), (), self.clock())
        return None if refused is None else refused.retry_after

    def _caps(
        self, hits: Sequence[tuple[str, Rate]], now: float
    ) -> list[tuple[str, str, Rate, _Position]]:
        """(current window's Redis key, previous window's, rate, position) for each cap."""
        caps = []
        for key, rate in hits:
            at = _position(rate, now)
            caps.append(
                (
                    self.cache.make_key(self._key(key, rate, at.index)),
                    self.cache.make_key(self._key(key, rate, at.index - 1)),
                    rate,
                    at,
                )
            )
        return caps

    def _run_hits(
        self,
        claim: tuple[str, int] | None,
        hits: Sequence[tuple[str, Rate]],
        now: float,
        *,
        all_or_nothing: bool,
        blocks: Sequence[str] = (),
        waivers: Mapping[str, str] | None = None,
        counts: Counts | None = None,
    ) -> Refusal | None:
        """The hits script: see ``_HITS_LUA``."""
        waivers = waivers or {}
        keys: list[str] = []
        args: list[int | float] = [1 if claim else 0, claim[1] if claim else 0, 0, now]
        args += [1 if all_or_nothing else 0, len(blocks)]
        if claim is not None:
            keys.append(self.cache.make_key(_PREFIX + claim[0]))
            args[2] = math.ceil(now + claim[1])  # an int: RedisCache reads it back as such
        keys += [self.cache.make_key(_PREFIX + block) for block in blocks]
        caps = self._caps(hits, now)
        for (key, _rate), (current, previous, rate, at) in zip(hits, caps, strict=True):
            waiver = waivers.get(key)
            keys += [
                current,
                previous,
                current if waiver is None else self.cache.make_key(_PREFIX + waiver),
            ]
            args += [rate.limit, at.span, at.overlap, at.keep, 0 if waiver is None else 1]
        answer = self._redis().hits(keys=keys, args=args)
        if answer[0] == 0:
            if counts is not None:
                for (key, rate), count in zip(hits, answer[2:], strict=True):
                    if key not in waivers:
                        counts[key, rate.window] = int(count)
            return None
        if answer[0] == 3:
            return Refusal("blocked", max(1, int(answer[1])))
        if answer[0] == 1:
            return Refusal("claim", max(1, int(answer[1])))
        _current, _previous, rate, at = caps[int(answer[1]) - 1]
        # The script refused these counts by _room's rule, so _wait answers a wait (>= 1),
        # never None; the window's length stands in should the two ever disagree.
        return Refusal("hit", _wait(rate, at, int(answer[2]), int(answer[3])) or rate.window)

    def acquire(
        self,
        claim: tuple[str, int] | None,
        hits: Sequence[tuple[str, Rate]],
        now: float,
        *,
        blocks: Sequence[str] = (),
        waivers: Mapping[str, str] | None = None,
        counts: Counts | None = None,
    ) -> Refusal | None:
        return self._run_hits(
            claim,
            hits,
            now,
            all_or_nothing=True,
            blocks=blocks,
            waivers=waivers,
            counts=counts,
        )

    def hit(self, key: str, rate: Rate, now: float | None = None) -> int | None:
        """One hit in one round trip: the script reads both windows and counts atomically."""
        refused = self.acquire(None, [(key, rate)], self.clock() if now is None else now)
        return None if refused is None else refused.retry_after

    def hit_all(self, hits: Sequence[tuple[str, Rate]]) -> None:
        if hits:
            self._run_hits(None, hits, self.clock(), all_or_nothing=False)

    def give_back(
        self, claim: tuple[str, int] | None, hits: Sequence[tuple[str, Rate]], now: float
    ) -> None:
        keys = [self.cache.make_key(_PREFIX + claim[0])] if claim is not None else []
        keys += [current for current, _previous, _rate, _at in self._caps(hits, now)]
        self._redis().give_back(keys=keys, args=[1 if claim is not None else 0])

    def unhit(self, key: str, rate: Rate, now: float | None = None) -> None:
        self.give_back(None, [(key, rate)], self.clock() if now is None else now)

    def peek_all(self, hits: Sequence[tuple[str, Rate]]) -> int | None:
        if not hits:
            return None
        caps = self._caps(hits, self.clock())
        keys = [key for current, previous, _rate, _at in caps for key in (current, previous)]
        counts = self._redis().client.mget(keys)
        # Values as RedisCache stores them: plain integers for counters.
        waits = [
            wait
            for i, (_current, _previous, rate, at) in enumerate(caps)
            if (wait := _wait(rate, at, int(counts[2 * i + 1] or 0), int(counts[2 * i] or 0)))
            is not None
        ]
        return max(waits) if waits else None

    def peek(self, key: str, rate: Rate) -> int | None:
        return self.peek_all([(key, rate)])

    def incr(self, key: str, ttl: int) -> int:
        """``INCR`` and ``EXPIRE`` in one ``MULTI``/``EXEC``: one round trip, atomic."""
        pipe = self._redis().client.pipeline(transaction=True)
        pipe.incr(self.cache.make_key(_PREFIX + key))
        pipe.expire(self.cache.make_key(_PREFIX + key), ttl)
        count, _expired = pipe.execute()
        return int(count)

    def forget(self, keys: Sequence[str], *, windows: Iterable[int] = ()) -> int:
        """``DEL`` of each key and of every Redis key under ``<key>:`` (every window's
        count, whatever its rate, and the claims' takeover markers), found by ``SCAN``
        with a ``MATCH`` pattern per key (a walk of the whole keyspace, in pages of 1000:
        for an erasure, not for the hot path). ``windows`` is not needed."""
        client = self._redis().client
        deleted = 0
        for key in dict.fromkeys(keys):
            full = self.cache.make_key(_PREFIX + key)
            names = [full, *client.scan_iter(match=_glob_escape(full) + ":*", count=1000)]
            for start in range(0, len(names), 500):
                deleted += int(client.delete(*names[start : start + 500]))
        return deleted


def _glob_escape(text: str) -> str:
    """``text`` as a Redis ``MATCH`` pattern matching itself alone."""
    return "".join("\\" + char if char in "\\*?[]" else char for char in text)


def _single_redis(alias: str) -> bool:
    from django.core.cache.backends.redis import RedisCache

    cache = caches[alias]
    return isinstance(cache, RedisCache) and len(cache._cache._servers) == 1  # type: ignore[attr-defined]
