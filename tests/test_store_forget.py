"""Store primitives beyond the limits, on every store: ``forget`` (drop everything kept
under some keys: a person's erasure) and ``incr``/``count`` (a plain shared counter: the
circuit breaker's consecutive failures).

Redis is shared with other test runs: every test here uses keys of its own (a random tag)
and never clears the whole cache.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any, TypeAlias

import pytest
from django.core.cache import caches

from textflow_django import _sql
from textflow_django.models import RateLimitCounter
from textflow_django.ratelimit import CacheStore, DatabaseStore, Rate, RedisCacheStore

from .conftest import race, requires_postgres, requires_redis

Store: TypeAlias = DatabaseStore | CacheStore

#: A midnight (UTC): every window of the tests starts there.
T0 = 20_000 * 86_400.0
HOUR = Rate(5, 3600)  # configured (SEND_LIMITS["number"])
DAY = Rate(10, 86400)  # configured
ODD = Rate(3, 1200)  # a window no default setting counts with (20 min)


class FakeClock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


def _make(kind: str, clock: FakeClock, monkeypatch: pytest.MonkeyPatch) -> Store:
    if kind == "database-no-returning":  # MySQL's path: no upsert with RETURNING
        monkeypatch.setattr(_sql, "returning", lambda alias: False)
    if kind.startswith("database"):
        return DatabaseStore(clock=clock)
    if kind == "locmem":
        caches["default"].clear()
        return CacheStore("default", clock=clock)
    if kind == "cache-on-redis":
        return CacheStore("redis", clock=clock)
    return RedisCacheStore("redis", clock=clock)


STORES = [
    "database",
    "database-no-returning",
    "locmem",
    pytest.param("redis", marks=requires_redis),
    pytest.param("cache-on-redis", marks=requires_redis),
]


@pytest.fixture(params=STORES)
def store(
    request: pytest.FixtureRequest, db: None, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Store]:
    yield _make(request.param, FakeClock(), monkeypatch)


@pytest.fixture
def tag() -> str:
    """A prefix no other test (nor another run on the same Redis) uses."""
    return f"t{uuid.uuid4().hex[:12]}"


def _fill(store: Store, key: str) -> None:
    """Everything a store keeps under ``key``: a claim, then counts in two windows of each
    of three rates (the clock moved on a window between), of which ``ODD``'s are not in
    the settings."""
    assert store.claim(key, 30) is None
    for rate in (HOUR, DAY, ODD):
        assert store.hit(key, rate, T0 - 1) is None  # the previous window of each
        assert store.hit(key, rate, T0) is None


def _left(store: Store, key: str) -> dict[str, Any]:
    """What a read of ``key`` still finds: the claim, each rate's two windows."""
    return {
        "claim": store.held(key),
        **{f"{rate.window}": store.peek(key, Rate(1, rate.window)) for rate in (HOUR, DAY, ODD)},
    }


GONE = {"claim": None, "3600": None, "86400": None, "1200": None}


def test_forget_drops_the_claim_and_every_window(store: Store, tag: str) -> None:
    number, other = f"{tag}:send:number:+12025550143", f"{tag}:send:number:+1202555014"
    _fill(store, number)
    _fill(store, other)  # a key that is a prefix of the first, without its colon
    assert _left(store, number) != GONE
    dropped = store.forget([number], windows=[ODD.window])
    assert dropped == 1 + 3 * 2  # the claim, two windows of each of the three rates
    assert _left(store, number) == GONE
    # A limit of one would be met in each window: nothing counts any more.
    assert all(store.peek(number, rate) is None for rate in (Rate(1, 3600), Rate(1, 1200)))
    assert store.claim(number, 30) is None  # free again
    # The other key is whole.
    assert _left(store, other)["claim"] == 30
    assert all(_left(store, other)[w] is not None for w in ("3600", "86400", "1200"))
    assert store.forget([number, other, f"{tag}:never"], windows=[1200]) == 1 + 1 + 3 * 2
    assert store.forget([]) == 0


def test_forget_reaches_an_unconfigured_window_where_the_store_can_list(
    request: pytest.FixtureRequest, store: Store, tag: str
) -> None:
    """The database and Redis find every count under ``<key>:``; a plain cache (no way to
    list keys) only those of the configured windows and of ``windows``."""
    key = f"{tag}:ip:203.0.113.7"
    _fill(store, key)
    dropped = store.forget([key])
    if type(store) is CacheStore:
        assert dropped == 1 + 2 * 2
        left = _left(store, key)
        assert left["1200"] is not None  # ODD's counts outlive the forget
        assert {**left, "1200": None} == GONE
        assert store.forget([key], windows=[1200]) == 2
    else:
        assert dropped == 1 + 3 * 2
    assert _left(store, key) == GONE


def test_forget_drops_holds_and_counters(store: Store, tag: str) -> None:
    block, counter = f"{tag}:fraud:block:prefix:+1202555", f"{tag}:breaker:x:failures"
    store.hold(block, 600)
    assert store.incr(counter, 600) == 1
    assert store.forget([block, counter]) == 2
    assert store.held(block) is None
    assert store.incr(counter, 600) == 1


@pytest.mark.parametrize("kind", ["database", "database-no-returning"])
def test_database_forget_matches_keys_exactly(
    kind: str, db: None, monkeypatch: pytest.MonkeyPatch, tag: str
) -> None:
    """A key's own rows only: not another key differing in case (SQLite's ``LIKE`` ignores
    it), nor one its ``_`` or ``%`` would match as a ``LIKE`` wildcard."""
    store = _make(kind, FakeClock(), monkeypatch)
    kept = [f"{tag}:AB", f"{tag}:axc", f"{tag}:a%c-not"]
    for key in [f"{tag}:ab", f"{tag}:a_c", f"{tag}:a%c", *kept]:
        _fill(store, key)
    assert store.forget([f"{tag}:ab", f"{tag}:a_c", f"{tag}:a%c"]) == 3 * (1 + 3 * 2)
    left = set(RateLimitCounter.objects.filter(key__startswith=tag).values_list("key", flat=True))
    assert {key.split(":")[1] for key in left} == {"AB", "axc", "a%c-not"}
    assert len(left) == 3 * (1 + 3 * 2)


@requires_redis
def test_redis_forget_escapes_its_pattern(db: None, tag: str) -> None:
    store = RedisCacheStore("redis", clock=FakeClock())
    for key in [f"{tag}:[ab]*?", f"{tag}:a", f"{tag}:b"]:
        _fill(store, key)
    assert store.forget([f"{tag}:[ab]*?"]) == 1 + 3 * 2
    assert store.held(f"{tag}:a") == 30 and store.held(f"{tag}:b") == 30
    assert store.forget([f"{tag}:a", f"{tag}:b"]) == 2 * (1 + 3 * 2)


# -- incr --------------------------------------------------------------------------------


def test_incr_counts_until_released(store: Store, tag: str) -> None:
    key = f"{tag}:breaker:failures"
    assert store.count(key) == 0
    assert [store.incr(key, 60) for _ in range(3)] == [1, 2, 3]
    assert store.count(key) == 3
    assert store.incr(f"{tag}:other", 60) == 1  # keys are independent
    store.release(key)
    assert store.count(key) == 0
    assert store.incr(key, 60) == 1
    store.release(key)
    store.release(f"{tag}:other")


def _race_stores() -> list[Any]:
    return [
        pytest.param(
            "database", marks=[requires_postgres, pytest.mark.django_db(transaction=True)]
        ),
        pytest.param(
            "database-no-returning",
            marks=[requires_postgres, pytest.mark.django_db(transaction=True)],
        ),
        pytest.param("redis", marks=requires_redis),
        pytest.param("cache-on-redis", marks=requires_redis),
    ]


@pytest.mark.parametrize("kind", _race_stores())
def test_concurrent_increments_each_get_their_own_value(
    kind: str, monkeypatch: pytest.MonkeyPatch, tag: str
) -> None:
    store = _make(kind, FakeClock(), monkeypatch)
    key = f"{tag}:breaker:failures"
    results = race(lambda: store.incr(key, 60))
    if kind == "database-no-returning":
        # The count is read after the UPDATE: each reads at least its own increment, and
        # all twenty were counted.
        assert all(isinstance(r, int) and 1 <= r <= 20 for r in results), results
        assert max(results) == 20
    else:
        assert sorted(results) == list(range(1, 21)), results
    store.forget([key])
