"""The rate-limit stores: semantics on every store, atomicity under real concurrency.

Every store reads the time from a fake clock that the tests advance: claims end and windows
roll over when a test says so, never by sleeping, and the waits the stores answer are exact
because the clock starts where every window starts. A server's own expiry (the cache's
timeout, Redis's TTL) only frees memory: it lasts at least as long as the claim or window it
belongs to, 30 seconds and more in these tests, far longer than a test runs.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Iterator
from typing import Any, TypeAlias, cast

import pytest
from django.core.cache import caches
from django.core.cache.backends.base import BaseCache

from textflow_django.models import RateLimitCounter
from textflow_django.ratelimit import (
    CacheStore,
    DatabaseStore,
    Rate,
    RedisCacheStore,
    Refusal,
    _window,
    get_store,
    parse_rate,
)

from .conftest import race, requires_postgres, requires_redis, tf

#: CacheStore covers RedisCacheStore, its subclass.
Store: TypeAlias = DatabaseStore | CacheStore

#: Where the fake clock starts: a midnight (UTC), so a window of a second, a minute, an hour
#: or a day starts there and the seconds left in it are whole and known.
T0 = 20_000 * 86_400.0


class FakeClock:
    """A clock for the stores (``clock=``) that moves only when the test advances it."""

    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.mark.parametrize(
    ("text", "rate"),
    [
        ("5/h", Rate(5, 3600)),
        ("10/d", Rate(10, 86400)),
        ("3/10m", Rate(3, 600)),
        ("1/s", Rate(1, 1)),
        (" 20 / hour ", Rate(20, 3600)),
        ("7/days", Rate(7, 86400)),
    ],
)
def test_parse_rate(text: str, rate: Rate) -> None:
    assert parse_rate(text) == rate


@pytest.mark.parametrize("text", ["", "5", "5/", "h/5", "5/w", "-1/h", "5/0h", None, 5])
def test_parse_rate_rejects(text: object) -> None:
    with pytest.raises(ValueError):
        parse_rate(text)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("rate", "now", "expected"),
    [
        (Rate(1, 1), T0, (int(T0), 1)),
        (Rate(1, 1), T0 + 0.25, (int(T0), 1)),  # a part of a second left waits a whole one
        (Rate(1, 1), T0 + 1, (int(T0) + 1, 1)),
        (Rate(3, 3600), T0, (int(T0) // 3600, 3600)),
        (Rate(3, 3600), T0 + 1000.5, (int(T0) // 3600, 2600)),
        (Rate(3, 3600), T0 + 3599.99, (int(T0) // 3600, 1)),
        (Rate(3, 3600), T0 + 3600, (int(T0) // 3600 + 1, 3600)),
        (Rate(3, 86400), T0 - 1, (int(T0) // 86400 - 1, 1)),
    ],
)
def test_window_index_and_seconds_left(rate: Rate, now: float, expected: tuple[int, int]) -> None:
    assert _window(rate, now) == expected


@pytest.fixture(params=["database", "locmem", pytest.param("redis", marks=requires_redis)])
def store(request: pytest.FixtureRequest, db: None, clock: FakeClock) -> Iterator[Store]:
    if request.param == "database":
        yield DatabaseStore(clock=clock)
    else:
        alias = "default" if request.param == "locmem" else "redis"
        caches[alias].clear()
        yield (
            CacheStore(alias, clock=clock)
            if alias == "default"
            else RedisCacheStore(alias, clock=clock)
        )
        caches[alias].clear()


def test_claim_is_exclusive_until_released(store: Store) -> None:
    assert store.claim("cooldown:+1", 30) is None
    assert store.claim("cooldown:+1", 30) == 30
    assert store.claim("cooldown:+2", 30) is None  # other keys are independent
    store.release("cooldown:+1")
    assert store.claim("cooldown:+1", 30) is None


def test_claim_ends_when_the_clock_reaches_its_deadline(store: Store, clock: FakeClock) -> None:
    """The store's clock ends a claim, though the cache or Redis still keeps its key (their
    own expiry is 30 real seconds away): the claim is taken over, and held anew."""
    assert store.claim("cooldown:+1", 30) is None
    clock.advance(29.5)
    assert store.claim("cooldown:+1", 30) == 1  # half a second left waits a whole one
    clock.advance(0.5)
    assert store.claim("cooldown:+1", 30) is None
    assert store.claim("cooldown:+1", 30) == 30  # the new claim holds from now
    clock.advance(10)
    assert store.claim("cooldown:+1", 30) == 20


def test_hit_counts_to_the_limit(store: Store, clock: FakeClock) -> None:
    rate = Rate(3, 3600)
    assert [store.hit("k", rate) for _ in range(3)] == [None, None, None]
    assert store.peek("k", rate) == 3600  # reached: the whole hour is left
    assert store.hit("k", rate) == 3600
    assert store.hit("other", rate) is None  # other keys are independent
    clock.advance(1000.5)
    assert store.hit("k", rate) == 2600
    assert store.peek("k", rate) == 2600
    assert store.peek("other", rate) is None


def test_refused_hits_are_not_counted_and_unhit_refunds(store: Store) -> None:
    rate = Rate(2, 3600)
    assert store.hit("k", rate) is None
    assert store.hit("k", rate) is None
    assert [store.hit("k", rate) for _ in range(5)] == [3600] * 5
    store.unhit("k", rate)  # one refund frees one slot, the refused five took none
    assert store.peek("k", rate) is None
    assert store.hit("k", rate) is None
    assert store.hit("k", rate) == 3600


def test_windows_roll_over(store: Store, clock: FakeClock) -> None:
    """A minute's window, not a second's: with the fake clock the length costs nothing, and
    the server's expiry of a one-second window's counter (two real seconds) would be close
    enough to a slow test's run time to matter."""
    rate = Rate(1, 60)
    assert store.hit("k", rate) is None
    assert store.hit("k", rate) == 60
    clock.advance(59.5)
    assert store.hit("k", rate) == 1  # the same window, half a second left
    clock.advance(0.5)
    assert store.hit("k", rate) is None  # the next window counts from zero
    assert store.hit("k", rate) == 60
    assert store.peek("k", rate) == 60


def test_zero_limit_refuses_everything(store: Store) -> None:
    assert store.hit("k", Rate(0, 60)) == 60
    assert store.peek("k", Rate(0, 60)) == 60


def test_acquire_takes_everything_or_nothing(store: Store, clock: FakeClock) -> None:
    hourly, daily = Rate(2, 3600), Rate(3, 86400)
    hits = [("send:number:+1", hourly), ("send:ip:1.2.3.4", daily)]
    assert store.acquire(("cooldown:+1", 30), hits, clock()) is None
    assert store.acquire(("cooldown:+1", 30), hits, clock()) == Refusal("claim", 30)
    assert store.acquire(None, hits, clock()) is None  # the second of two an hour
    assert store.acquire(None, hits, clock()) == Refusal("hit", 3600)
    # The refusal undid its own count on the daily cap: one more fits there.
    assert store.hit("send:ip:1.2.3.4", daily) is None
    assert store.hit("send:ip:1.2.3.4", daily) == 86400


def test_a_refused_cap_releases_the_claim(store: Store, clock: FakeClock) -> None:
    hits = [("send:number:+1", Rate(0, 3600))]
    assert store.acquire(("cooldown:+1", 30), hits, clock()) == Refusal("hit", 3600)
    assert store.claim("cooldown:+1", 30) is None  # the claim was undone too


def test_give_back_refunds_claim_and_hits(store: Store, clock: FakeClock) -> None:
    rate = Rate(1, 3600)
    hits = [("send:number:+1", rate)]
    assert store.acquire(("cooldown:+1", 30), hits, clock()) is None
    store.give_back(("cooldown:+1", 30), hits, clock())
    assert store.acquire(("cooldown:+1", 30), hits, clock()) is None
    assert store.acquire(None, hits, clock()) == Refusal("hit", 3600)  # counted again


def test_give_back_refunds_the_windows_the_hits_were_counted_in(
    store: Store, clock: FakeClock
) -> None:
    """A send that fails after its window closed is refunded in that window; the next
    window's count is left alone (a refund there would be a free extra send)."""
    rate = Rate(1, 60)
    hits = [("send:number:+1", rate)]
    clock.advance(10)
    now = clock()
    before = T0 - 0.5  # in the previous minute's window
    assert store.acquire(None, hits, now) is None  # this window: full (1 of 1)
    assert store.acquire(None, hits, before) is None
    store.give_back(None, hits, before)  # refunded where it was counted...
    assert store.acquire(None, hits, now) == Refusal("hit", 50)  # ...so this one stays full
    assert store.acquire(None, hits, before) is None  # and the old one has room again


def test_a_refund_after_its_window_expired_leaves_no_counter_behind(
    store: Store, clock: FakeClock
) -> None:
    """The counter's window ended (its key expired) before the refund: nothing is recreated
    (a bare DECR would leave a -1 key with no expiry on Redis)."""
    rate = Rate(5, 3600)
    hits = [("send:number:+1", rate)]
    now = clock()
    assert store.acquire(None, hits, now) is None
    if isinstance(store, DatabaseStore):
        RateLimitCounter.objects.all().delete()
        store.give_back(None, hits, now)
        assert not RateLimitCounter.objects.exists()
    else:
        index, _left = _window(rate, now)
        key = store._key("send:number:+1", rate, index)
        assert store.cache.get(key) == 1
        store.cache.delete(key)
        store.give_back(None, hits, now)
        assert store.cache.get(key) is None


def test_peek_all_and_hit_all_count_each_cap_on_its_own(store: Store) -> None:
    number, ip = ("fail:number:+1", Rate(2, 3600)), ("fail:ip:1.2.3.4", Rate(3, 3600))
    caps = [number, ip]
    assert store.peek_all(caps) is None
    store.hit_all(caps)
    assert store.peek_all(caps) is None
    store.hit_all(caps)  # the number's cap is reached; the IP's is at 2 of 3
    assert store.peek_all(caps) == 3600
    assert store.peek_all([ip]) is None
    store.hit_all(caps)  # a reached cap stays at its limit; the IP's reaches 3
    assert store.peek_all([ip]) == 3600
    store.unhit(*number)  # so one refund frees the number's cap
    assert store.peek_all([number]) is None
    assert store.peek_all([]) is None
    store.hit_all([])


def test_peek_all_answers_the_longest_wait(store: Store, clock: FakeClock) -> None:
    minute, day = ("fail:ip:1.2.3.4", Rate(1, 60)), ("fail:number:+1", Rate(1, 86400))
    store.hit_all([minute, day])
    clock.advance(20)
    assert store.peek_all([minute, day]) == 86400 - 20
    assert store.peek_all([minute]) == 40


def test_a_cache_claims_takeover_is_won_once(db: None, clock: FakeClock) -> None:
    """Two callers read the same ended deadline: the first takes the claim over, the second,
    whose read came before the first one's write, finds the takeover taken (the interleaving
    is replayed here by putting the old deadline back)."""
    caches["default"].clear()
    store = CacheStore("default", clock=clock)
    key = "textflow:rl:cooldown:+1"
    assert store.claim("cooldown:+1", 30) is None
    ended = caches["default"].get(key)
    clock.advance(30)
    assert store.claim("cooldown:+1", 30) is None
    caches["default"].set(key, ended, 30)
    assert store.claim("cooldown:+1", 30) == 1
    caches["default"].clear()


@requires_redis
def test_a_claim_redis_cannot_read_still_holds(db: None, clock: FakeClock) -> None:
    """A claim written by Django's cache API (pickled, as ``RedisCacheStore`` wrote them
    before its claims went through its script) has no deadline the script can read: it holds
    until Redis expires it, and the wait is Redis's TTL for it."""
    caches["redis"].clear()
    CacheStore("redis", clock=clock).claim("cooldown:+1", 30)
    clock.advance(60)  # past the pickled deadline: only the TTL is known to the script
    wait = RedisCacheStore("redis", clock=clock).claim("cooldown:+1", 30)
    # The TTL is the server's, counted by its real clock from the claim a moment ago.
    assert wait is not None and 1 <= wait <= 30
    caches["redis"].clear()


@requires_redis
def test_a_single_redis_gets_the_one_round_trip_store(settings: Any) -> None:
    settings.TEXTFLOW = {
        **settings.TEXTFLOW,
        "RATELIMIT_STORE": "cache",
        "RATELIMIT_CACHE": "redis",
    }
    assert type(get_store()) is RedisCacheStore
    tf(settings, RATELIMIT_CACHE="default")
    assert type(get_store()) is CacheStore


def test_database_store_purges_expired_rows(db: None, clock: FakeClock) -> None:
    store = DatabaseStore(clock=clock)
    store.purge_one_in = 1  # every insert purges
    store.claim("old", 1)
    store.claim("live", 60)
    store.hit("first", Rate(5, 60))  # a purge while "old" still runs keeps it
    assert RateLimitCounter.objects.filter(key="old").exists()
    clock.advance(1)
    store.hit("new", Rate(5, 60))
    assert not RateLimitCounter.objects.filter(key="old").exists()
    assert RateLimitCounter.objects.filter(key="live").exists()


def test_get_store_follows_settings(settings: Any) -> None:
    settings.TEXTFLOW = {
        **settings.TEXTFLOW,
        "RATELIMIT_STORE": "cache",
        "RATELIMIT_CACHE": "default",
    }
    store = get_store()
    assert isinstance(store, CacheStore)
    assert store.clock is time.time  # the real clock, unless a caller gives another
    tf(settings, RATELIMIT_STORE="database")
    store = get_store()
    assert isinstance(store, DatabaseStore)
    assert store.clock is time.time


# -- concurrency: many threads, one limit -------------------------------------------------


def _concurrent_store_cases() -> list[Any]:
    return [
        pytest.param(
            "database", marks=[requires_postgres, pytest.mark.django_db(transaction=True)]
        ),
        pytest.param("redis", marks=requires_redis),
    ]


def _shared_store(kind: str, clock: FakeClock) -> Store:
    """A store for threads to share (the tests' locmem cache is one per process)."""
    if kind == "database":
        return DatabaseStore(clock=clock)
    alias = "redis" if kind == "redis" else "default"
    caches[alias].clear()
    return (
        RedisCacheStore(alias, clock=clock) if kind == "redis" else CacheStore(alias, clock=clock)
    )


@pytest.mark.parametrize("kind", _concurrent_store_cases())
def test_concurrent_claims_have_one_winner(kind: str, clock: FakeClock) -> None:
    store = _shared_store(kind, clock)
    results = race(lambda: store.claim("cooldown:+race", 30))
    assert results.count(None) == 1
    assert [result for result in results if result is not None] == [30] * 19


@pytest.mark.parametrize("kind", [*_concurrent_store_cases(), "locmem"])
def test_concurrent_takeovers_of_an_ended_claim_have_one_winner(
    kind: str, clock: FakeClock
) -> None:
    """The claim's deadline has passed by the clock while its key is still stored: of many
    callers taking it over at once, one wins and the others see it held anew."""
    store = _shared_store(kind, clock)
    assert store.claim("cooldown:+race", 30) is None
    clock.advance(30)
    results = race(lambda: store.claim("cooldown:+race", 30))
    assert results.count(None) == 1
    assert all(result in (None, 1, 30) for result in results), results


@pytest.mark.parametrize("kind", _concurrent_store_cases())
def test_concurrent_hits_never_pass_the_limit(kind: str, clock: FakeClock) -> None:
    store = _shared_store(kind, clock)
    results = race(lambda: store.hit("cap:+race", Rate(5, 3600)), n=20)
    assert results.count(None) == 5
    assert results.count(3600) == 15


# -- the cache store between two of its calls -----------------------------------------------


class Interleaved:
    """A Django cache in which something happens between two of the store's calls: after
    the n-th call of a method (whether it returned or raised), the n-th function queued for
    that method runs with the key (the cache's own expiry, or another process). Replays an
    interleaving exactly, where real concurrency would hit it once in a million runs."""

    def __init__(self, cache: Any, **after: list[Any]) -> None:
        self.cache = cache
        self.after = after

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.cache, name)
        queued = self.after.get(name)
        if not queued:
            return method

        def call(key: str, *args: Any, **kwargs: Any) -> Any:
            try:
                return method(key, *args, **kwargs)
            finally:
                if queued:
                    queued.pop(0)(key)

        return call


def interleave(store: CacheStore, **after: list[Any]) -> None:
    """Put ``store``'s cache behind :class:`Interleaved` with ``after``."""
    store.cache = cast(BaseCache, Interleaved(store.cache, **after))


@pytest.fixture(
    params=["default", pytest.param("redis", marks=requires_redis)], ids=["locmem", "redis"]
)
def cache_store(request: pytest.FixtureRequest, db: None, clock: FakeClock) -> Iterator[CacheStore]:
    """A ``CacheStore`` on the tests' per-process cache, and on Redis (the ``hit`` of
    ``RedisCacheStore`` is this one)."""
    caches[request.param].clear()
    yield CacheStore(request.param, clock=clock)
    caches[request.param].clear()


def test_a_claim_the_cache_expires_between_add_and_get_is_taken(
    cache_store: CacheStore, clock: FakeClock
) -> None:
    """The cache drops a claim early (Memcached rounds its timeout to the second, and its
    clock is not the store's): ``add`` still saw it, ``get`` no longer does. The claim is
    free: taken by this caller, held anew for its whole ``ttl``."""
    cache = cache_store.cache
    assert cache_store.claim("cooldown:+1", 30) is None
    clock.advance(10)
    interleave(cache_store, add=[cache.delete])
    assert cache_store.claim("cooldown:+1", 30) is None
    assert cache_store.claim("cooldown:+1", 30) == 30


def test_a_claim_expired_between_add_and_get_then_taken_by_another_is_held(
    cache_store: CacheStore, clock: FakeClock
) -> None:
    """As above, but another caller's ``add`` comes in between this one's ``get`` and its
    second ``add``: that caller holds the claim."""
    cache = cache_store.cache
    assert cache_store.claim("cooldown:+1", 30) is None
    rival = copy.copy(cache_store)  # another process: the same cache and clock
    interleave(cache_store, add=[cache.delete], get=[lambda key: rival.claim("cooldown:+1", 30)])
    assert cache_store.claim("cooldown:+1", 30) == 1
    assert rival.claim("cooldown:+1", 30) == 30  # the rival's claim, from now


def test_a_count_the_cache_expires_between_add_and_incr_starts_again(
    cache_store: CacheStore,
) -> None:
    """The cache drops a window's counter between the ``add`` that found it and the
    ``incr`` (its timeout runs on its own clock): the hit is the window's first again."""
    rate = Rate(3, 60)
    cache = cache_store.cache
    assert cache_store.hit("k", rate) is None
    assert cache_store.hit("k", rate) is None
    interleave(cache_store, add=[cache.delete])
    assert cache_store.hit("k", rate) is None  # counted as 1, not 3
    assert [cache_store.hit("k", rate) for _ in range(3)] == [None, None, 60]
    assert cache_store.peek("k", rate) == 60


def test_a_count_re_created_by_another_hit_in_between_is_incremented(
    cache_store: CacheStore,
) -> None:
    """The counter vanished before this hit's ``incr``, and another hit created it anew
    before this one's second ``add``: both hits count."""
    rate = Rate(3, 60)
    cache = cache_store.cache
    assert cache_store.hit("k", rate) is None
    rival = copy.copy(cache_store)
    interleave(cache_store, add=[cache.delete], incr=[lambda key: rival.hit("k", rate)])
    assert cache_store.hit("k", rate) is None  # the rival's 1, then this one's 2
    assert cache_store.hit("k", rate) is None  # 3
    assert cache_store.hit("k", rate) == 60
