"""The rate-limit stores: semantics on every store, atomicity under real concurrency."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from django.core.cache import caches

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
def test_parse_rate(text, rate):
    assert parse_rate(text) == rate


@pytest.mark.parametrize("text", ["", "5", "5/", "h/5", "5/w", "-1/h", "5/0h", None, 5])
def test_parse_rate_rejects(text):
    with pytest.raises(ValueError):
        parse_rate(text)


@pytest.fixture(params=["database", "locmem", pytest.param("redis", marks=requires_redis)])
def store(request, db) -> Iterator[DatabaseStore | CacheStore]:
    if request.param == "database":
        yield DatabaseStore()
    else:
        alias = "default" if request.param == "locmem" else "redis"
        caches[alias].clear()
        yield CacheStore(alias) if alias == "default" else RedisCacheStore(alias)
        caches[alias].clear()


def test_claim_is_exclusive_until_released(store):
    assert store.claim("cooldown:+1", 30) is None
    wait = store.claim("cooldown:+1", 30)
    assert wait is not None and 1 <= wait <= 30
    assert store.claim("cooldown:+2", 30) is None  # other keys are independent
    store.release("cooldown:+1")
    assert store.claim("cooldown:+1", 30) is None


def test_claim_expires(store):
    assert store.claim("cooldown:+1", 1) is None
    time.sleep(1.1)
    assert store.claim("cooldown:+1", 1) is None


def test_hit_counts_to_the_limit(store):
    rate = Rate(3, 3600)
    assert [store.hit("k", rate) for _ in range(3)] == [None, None, None]
    wait = store.hit("k", rate)
    assert wait is not None and 1 <= wait <= 3600
    assert store.peek("k", rate) == wait or store.peek("k", rate) is not None
    assert store.hit("other", rate) is None


def test_refused_hits_are_not_counted_and_unhit_refunds(store):
    rate = Rate(2, 3600)
    store.hit("k", rate)
    store.hit("k", rate)
    for _ in range(5):
        assert store.hit("k", rate) is not None
    store.unhit("k", rate)
    assert store.peek("k", rate) is None
    assert store.hit("k", rate) is None
    assert store.hit("k", rate) is not None


def test_windows_roll_over(store):
    rate = Rate(1, 1)
    assert store.hit("k", rate) is None
    assert store.hit("k", rate) is not None
    time.sleep(1.05)
    assert store.hit("k", rate) is None


def test_zero_limit_refuses_everything(store):
    assert store.hit("k", Rate(0, 60)) is not None


def test_acquire_takes_everything_or_nothing(store):
    hourly, daily = Rate(2, 3600), Rate(3, 86400)
    hits = [("send:number:+1", hourly), ("send:ip:1.2.3.4", daily)]
    assert store.acquire(("cooldown:+1", 30), hits, time.time()) is None
    refused = store.acquire(("cooldown:+1", 30), hits, time.time())
    assert refused is not None and refused.kind == "claim" and 1 <= refused.retry_after <= 30
    assert store.acquire(None, hits, time.time()) is None  # the second of two an hour
    refused = store.acquire(None, hits, time.time())
    assert refused == Refusal("hit", refused.retry_after) and refused.retry_after >= 1
    # The refusal undid its own count on the daily cap: one more fits there.
    assert store.hit("send:ip:1.2.3.4", daily) is None
    assert store.hit("send:ip:1.2.3.4", daily) is not None


def test_a_refused_cap_releases_the_claim(store):
    hits = [("send:number:+1", Rate(0, 3600))]
    assert store.acquire(("cooldown:+1", 30), hits, time.time()).kind == "hit"
    assert store.claim("cooldown:+1", 30) is None  # the claim was undone too


def test_give_back_refunds_claim_and_hits(store):
    rate = Rate(1, 3600)
    hits = [("send:number:+1", rate)]
    assert store.acquire(("cooldown:+1", 30), hits, time.time()) is None
    store.give_back(("cooldown:+1", 30), hits, time.time())
    assert store.acquire(("cooldown:+1", 30), hits, time.time()) is None


def test_give_back_refunds_the_windows_the_hits_were_counted_in(store):
    """A send that fails after its window closed is refunded in that window; the next
    window's count is left alone (a refund there would be a free extra send)."""
    rate = Rate(1, 60)
    hits = [("send:number:+1", rate)]
    now = time.time()
    before = (now // 60) * 60 - 0.5  # in the previous minute's window
    assert store.acquire(None, hits, now) is None  # this window: full (1 of 1)
    assert store.acquire(None, hits, before) is None
    store.give_back(None, hits, before)  # refunded where it was counted...
    assert store.acquire(None, hits, now) is not None  # ...so this window stays full
    assert store.acquire(None, hits, before) is None  # and the old one has room again


def test_a_refund_after_its_window_expired_leaves_no_counter_behind(store):
    """The counter's window ended (its key expired) before the refund: nothing is recreated
    (a bare DECR would leave a -1 key with no expiry on Redis)."""
    from textflow_django.models import RateLimitCounter

    rate = Rate(5, 3600)
    hits = [("send:number:+1", rate)]
    now = time.time()
    assert store.acquire(None, hits, now) is None
    if isinstance(store, DatabaseStore):
        RateLimitCounter.objects.all().delete()
        store.give_back(None, hits, now)
        assert not RateLimitCounter.objects.exists()
    else:
        index, _left = _window(rate, now)
        key = store._key("send:number:+1", rate, index)
        store.cache.delete(key)
        store.give_back(None, hits, now)
        assert store.cache.get(key) is None


def test_peek_all_and_hit_all_count_each_cap_on_its_own(store):
    number, ip = ("fail:number:+1", Rate(2, 3600)), ("fail:ip:1.2.3.4", Rate(3, 3600))
    caps = [number, ip]
    assert store.peek_all(caps) is None
    store.hit_all(caps)
    assert store.peek_all(caps) is None
    store.hit_all(caps)  # the number's cap is reached; the IP's is at 2 of 3
    wait = store.peek_all(caps)
    assert wait is not None and 1 <= wait <= 3600
    assert store.peek_all([ip]) is None
    store.hit_all(caps)  # a reached cap stays at its limit; the IP's reaches 3
    assert store.peek_all([ip]) is not None
    store.unhit(*number)  # so one refund frees the number's cap
    assert store.peek_all([number]) is None
    assert store.peek_all([]) is None
    store.hit_all([])


def test_peek_all_answers_the_longest_wait(store):
    minute, day = ("fail:ip:1.2.3.4", Rate(1, 60)), ("fail:number:+1", Rate(1, 86400))
    store.hit_all([minute, day])
    wait = store.peek_all([minute, day])
    assert wait is not None and wait > 60


@requires_redis
def test_a_single_redis_gets_the_one_round_trip_store(settings):
    settings.TEXTFLOW = {
        **settings.TEXTFLOW,
        "RATELIMIT_STORE": "cache",
        "RATELIMIT_CACHE": "redis",
    }
    assert type(get_store()) is RedisCacheStore
    tf(settings, RATELIMIT_CACHE="default")
    assert type(get_store()) is CacheStore


def test_database_store_purges_expired_rows(db):
    store = DatabaseStore()
    store.purge_one_in = 1
    store.claim("old", 1)
    time.sleep(1.05)
    store.hit("new", Rate(5, 60))
    assert not RateLimitCounter.objects.filter(key="old").exists()


def test_get_store_follows_settings(settings):
    settings.TEXTFLOW = {
        **settings.TEXTFLOW,
        "RATELIMIT_STORE": "cache",
        "RATELIMIT_CACHE": "default",
    }
    assert isinstance(get_store(), CacheStore)
    tf(settings, RATELIMIT_STORE="database")
    assert isinstance(get_store(), DatabaseStore)


# -- concurrency: many threads, one limit -------------------------------------------------


def _concurrent_store_cases():
    return [
        pytest.param(
            "database", marks=[requires_postgres, pytest.mark.django_db(transaction=True)]
        ),
        pytest.param("redis", marks=requires_redis),
    ]


@pytest.mark.parametrize("kind", _concurrent_store_cases())
def test_concurrent_claims_have_one_winner(kind):
    store = DatabaseStore() if kind == "database" else RedisCacheStore("redis")
    if kind == "redis":
        caches["redis"].clear()
    results = race(lambda: store.claim("cooldown:+race", 30))
    assert results.count(None) == 1


@pytest.mark.parametrize("kind", _concurrent_store_cases())
def test_concurrent_hits_never_pass_the_limit(kind):
    store = DatabaseStore() if kind == "database" else RedisCacheStore("redis")
    if kind == "redis":
        caches["redis"].clear()
    results = race(lambda: store.hit("cap:+race", Rate(5, 3600)), n=20)
    assert results.count(None) == 5
