"""Atomic counters for cooldowns and caps, shared by every process of a site.

Two primitives, implemented by two stores chosen with ``TEXTFLOW["RATELIMIT_STORE"]``:

- ``claim(key, ttl)``: take a lock-like slot for ``ttl`` seconds (the resend cooldown).
  Atomic: of many concurrent claims exactly one wins.
- ``hit(key, rate)``: count one event in the current window of ``rate`` and refuse past its
  limit (the send and wrong-code caps). Windows are aligned to the epoch, so a key that a
  racing writer left without expiry can only ever belong to a past window.

Both answer ``None`` when allowed, or the seconds until the caller may try again; both can be
undone (``release``/``unhit``) so a failed SMS send consumes nothing.

``"database"`` (the default) keeps counters in ``RateLimitCounter`` rows using single-row
``UPDATE``s and unique inserts, so no lock is held across calls. ``"cache"`` uses the Django
cache named by ``RATELIMIT_CACHE``: ``add`` and ``incr`` are atomic on Redis and Memcached.
A per-process cache (LocMemCache) does not hold limits across workers: ``textflow.W004``.
"""

from __future__ import annotations

import datetime as dt
import math
import random
import time
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol, cast

from django.core.cache import caches
from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from ._rates import Rate, parse_rate
from .conf import conf

if TYPE_CHECKING:
    from django.core.cache.backends.redis import RedisCache

__all__ = ["Rate", "RateLimitStore", "Refusal", "get_store", "parse_rate"]

_PREFIX = "textflow:rl:"


class RateLimitStore(Protocol):
    """What a store must do; see the module docstring for the semantics."""

    def claim(self, key: str, ttl: int) -> int | None: ...

    def release(self, key: str) -> None: ...

    def hit(self, key: str, rate: Rate, now: float | None = None) -> int | None: ...

    def unhit(self, key: str, rate: Rate, now: float | None = None) -> None: ...

    def peek(self, key: str, rate: Rate) -> int | None: ...

    def acquire(
        self, claim: tuple[str, int] | None, hits: Sequence[tuple[str, Rate]], now: float
    ) -> Refusal | None: ...

    def give_back(
        self, claim: tuple[str, int] | None, hits: Sequence[tuple[str, Rate]], now: float
    ) -> None: ...

    def peek_all(self, hits: Sequence[tuple[str, Rate]]) -> int | None: ...

    def hit_all(self, hits: Sequence[tuple[str, Rate]]) -> None: ...


@dataclass(frozen=True)
class Refusal:
    """Why :meth:`acquire` refused: ``"claim"`` (held) or ``"hit"`` (a limit), and the wait."""

    kind: str
    retry_after: int


class _OneByOne:
    """``acquire``/``give_back`` from the single-key operations, undoing on refusal."""

    def acquire(
        self, claim: tuple[str, int] | None, hits: Sequence[tuple[str, Rate]], now: float
    ) -> Refusal | None:
        """All or nothing: take ``claim`` and count every hit in the windows of ``now``
        (``time.time()``), or change nothing."""
        store: Any = self
        if claim is not None:
            wait = store.claim(*claim)
            if wait is not None:
                return Refusal("claim", wait)
        counted: list[tuple[str, Rate]] = []
        for key, rate in hits:
            wait = store.hit(key, rate, now)
            if wait is not None:
                self.give_back(claim, counted, now)
                return Refusal("hit", wait)
            counted.append((key, rate))
        return None

    def give_back(
        self, claim: tuple[str, int] | None, hits: Sequence[tuple[str, Rate]], now: float
    ) -> None:
        """Undo a successful :meth:`acquire` made at ``now`` (the action it guarded did not
        happen): the hits come off the windows they were counted in, even if the clock has
        crossed into the next one since."""
        store: Any = self
        if claim is not None:
            store.release(claim[0])
        for key, rate in hits:
            store.unhit(key, rate, now)

    def peek_all(self, hits: Sequence[tuple[str, Rate]]) -> int | None:
        """The longest wait among the limits already reached, or None (changes nothing)."""
        store: Any = self
        waits = [w for key, rate in hits if (w := store.peek(key, rate)) is not None]
        return max(waits) if waits else None

    def hit_all(self, hits: Sequence[tuple[str, Rate]]) -> None:
        """Count one event against each limit; one already reached stays at its limit."""
        store: Any = self
        for key, rate in hits:
            store.hit(key, rate)


def _wait_if_reached(count: int | str | bytes | None, rate: Rate, left: int) -> int | None:
    """What ``peek`` answers for a counter at ``count`` (None or a stored value): the
    seconds left in its window once the limit is reached, else None."""
    return left if int(count or 0) >= rate.limit else None


def _window(rate: Rate, now: float) -> tuple[int, int]:
    """(window index, seconds left in it) for ``now``."""
    index = int(now // rate.window)
    left = max(1, math.ceil((index + 1) * rate.window - now))
    return index, left


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


class DatabaseStore(_OneByOne):
    """Counters in ``RateLimitCounter`` rows; works on every database Django supports."""

    #: One write in this many also purges expired rows, which keeps the table small
    #: without a scheduled job.
    purge_one_in = 50

    def __init__(self, using: str = "default") -> None:
        self.using = using

    @property
    def _model(self):  # type: ignore[no-untyped-def]
        from .models import RateLimitCounter

        return RateLimitCounter

    def _insert(self, key: str, count: int, expires_at: dt.datetime) -> bool:
        """Insert a fresh row; False when another writer holds the key."""
        model = self._model
        if random.randrange(self.purge_one_in) == 0:  # noqa: S311 - not security
            model.objects.using(self.using).filter(expires_at__lte=timezone.now()).delete()
        try:
            with transaction.atomic(using=self.using):
                model.objects.using(self.using).create(key=key, count=count, expires_at=expires_at)
        except IntegrityError:
            return False
        return True

    def claim(self, key: str, ttl: int) -> int | None:
        model = self._model
        now = timezone.now()
        rows = model.objects.using(self.using)
        until = now + dt.timedelta(seconds=ttl)
        # Take over an expired claim in one UPDATE (atomic), else insert a new one.
        if rows.filter(key=key, expires_at__lte=now).update(count=1, expires_at=until):
            return None
        if self._insert(key, 1, until):
            return None
        if rows.filter(key=key, expires_at__lte=now).update(count=1, expires_at=until):
            return None
        held = rows.filter(key=key).values_list("expires_at", flat=True).first()
        return 1 if held is None else max(1, math.ceil((held - now).total_seconds()))

    def release(self, key: str) -> None:
        self._model.objects.using(self.using).filter(key=key).delete()

    def hit(self, key: str, rate: Rate, now: float | None = None) -> int | None:
        index, left = _window(rate, time.time() if now is None else now)
        full = f"{key}:{rate.window}:{index}"
        rows = self._model.objects.using(self.using)
        # UPDATE ... WHERE count < limit is atomic: concurrent hits cannot pass the limit.
        if rows.filter(key=full, count__lt=rate.limit).update(count=F("count") + 1):
            return None
        if rate.limit > 0 and self._insert(
            full, 1, timezone.now() + dt.timedelta(seconds=left + 1)
        ):
            return None
        if rows.filter(key=full, count__lt=rate.limit).update(count=F("count") + 1):
            return None
        return left

    def unhit(self, key: str, rate: Rate, now: float | None = None) -> None:
        index, _left = _window(rate, time.time() if now is None else now)
        self._model.objects.using(self.using).filter(
            key=f"{key}:{rate.window}:{index}", count__gt=0
        ).update(count=F("count") - 1)

    def peek(self, key: str, rate: Rate) -> int | None:
        index, left = _window(rate, time.time())
        count = (
            self._model.objects.using(self.using)
            .filter(key=f"{key}:{rate.window}:{index}")
            .values_list("count", flat=True)
            .first()
        )
        return _wait_if_reached(count, rate, left)


# One round trip for a whole send: the cooldown and every cap, all or nothing. KEYS: the
# claim key (when ARGV[1] is 1), then the cap keys; ARGV: has_claim, claim ttl, claim value,
# then (limit, ttl) for each cap key.
_ACQUIRE_LUA = """
local has_claim = tonumber(ARGV[1])
local first = 1
if has_claim == 1 then
  if not redis.call('SET', KEYS[1], ARGV[3], 'NX', 'EX', ARGV[2]) then
    return {1, redis.call('TTL', KEYS[1])}
  end
  first = 2
end
local a = 4
for i = first, #KEYS do
  local limit = tonumber(ARGV[a])
  local ttl = tonumber(ARGV[a + 1])
  a = a + 2
  local n = redis.call('INCR', KEYS[i])
  if n == 1 then redis.call('EXPIRE', KEYS[i], ttl) end
  if n > limit then
    local left = redis.call('TTL', KEYS[i])
    for j = first, i do redis.call('DECR', KEYS[j]) end
    if has_claim == 1 then redis.call('DEL', KEYS[1]) end
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
    """``CacheStore`` on Django's ``RedisCache`` with one server: ``acquire``, ``give_back``,
    ``peek_all`` and ``hit_all`` are single round trips (a Lua script, an MGET) instead of
    one per key.
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
        args: list[int | float] = [1 if claim else 0, claim[1] if claim else 0, 0]
        if claim is not None:
            keys.append(self.cache.make_key(_PREFIX + claim[0]))
            args[2] = math.ceil(now + claim[1])  # an int: RedisCache reads it back as such
        for key, rate, left in self._cap_keys(hits, now):
            keys.append(key)
            args += [rate.limit, left + 1]
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
        caps = self._cap_keys(hits, time.time())
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
        caps = self._cap_keys(hits, time.time())
        args: list[int] = []
        for _key, rate, left in caps:
            args += [rate.limit, left + 1]
        self._redis().hit_all(keys=[key for key, _rate, _left in caps], args=args)


def _single_redis(alias: str) -> bool:
    from django.core.cache.backends.redis import RedisCache

    cache = caches[alias]
    return isinstance(cache, RedisCache) and len(cache._cache._servers) == 1  # type: ignore[attr-defined]


def get_store() -> RateLimitStore:
    """The store configured now (``RATELIMIT_STORE``, ``RATELIMIT_CACHE``)."""
    if conf.RATELIMIT_STORE == "cache":
        alias = conf.RATELIMIT_CACHE
        return RedisCacheStore(alias) if _single_redis(alias) else CacheStore(alias)
    return DatabaseStore()
