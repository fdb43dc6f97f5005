"""The rate-limit stores: semantics on every store, atomicity under real concurrency.

Every store reads the time from a fake clock that the tests advance: claims end and windows
slide when a test says so, never by sleeping, and the waits the stores answer are exact
because the clock starts where every window starts. A server's own expiry (the cache's
timeout, Redis's TTL) only frees memory: it lasts at least as long as the claim or window it
belongs to, 30 seconds and more in these tests, far longer than a test runs.

Caps count on a sliding window (the sliding window counter: the previous fixed window's count
weighted by how much of it the window ending now covers, plus the current one's): the waits
below are worked out by hand from ``prev * (1 - elapsed / window) + curr + 1 <= limit``, and
a model of it in this file (exact fractions, the wait found by trying each whole second)
checks every store's answers, waits included, over a random run.
"""

from __future__ import annotations

import copy
import datetime as dt
import ipaddress
import random
import time
from collections.abc import Iterator
from fractions import Fraction
from typing import Any, TypeAlias, cast

import pytest
from django.core.cache import caches
from django.core.cache.backends.base import BaseCache

from textflow_django._client_ip import ip_scope, network_scope
from textflow_django.models import RateLimitCounter
from textflow_django.ratelimit import (
    CacheStore,
    DatabaseStore,
    Rate,
    RedisCacheStore,
    Refusal,
    _position,
    get_store,
    parse_rate,
)
from textflow_django.ratelimit._base import _OneByOne, _wait

from .conftest import race, requires_postgres, requires_redis

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
    ("rate", "now", "index", "elapsed", "overlap"),
    [
        (Rate(1, 1), T0, int(T0), 0, 1000),
        (Rate(1, 1), T0 + 0.25, int(T0), 250, 750),
        (Rate(1, 1), T0 + 1, int(T0) + 1, 0, 1000),
        (Rate(3, 3600), T0, int(T0) // 3600, 0, 3_600_000),
        (Rate(3, 3600), T0 + 1000.5, int(T0) // 3600, 1_000_500, 2_599_500),
        (Rate(3, 3600), T0 + 3599.999, int(T0) // 3600, 3_599_999, 1),
        (Rate(3, 3600), T0 + 3600, int(T0) // 3600 + 1, 0, 3_600_000),
        (Rate(3, 86400), T0 - 1, int(T0) // 86400 - 1, 86_399_000, 1000),
    ],
)
def test_where_a_moment_falls(
    rate: Rate, now: float, index: int, elapsed: int, overlap: int
) -> None:
    """The current window, the milliseconds into it, and how much of the previous window
    the sliding window ending now still covers."""
    at = _position(rate, now)
    assert (at.index, at.elapsed, at.overlap) == (index, elapsed, overlap)
    # A count is kept until the next window ends (then it is nobody's previous window).
    assert at.keep_ms == rate.window * 1000 + overlap


@pytest.mark.parametrize(
    ("rate", "elapsed", "prev", "curr", "wait"),
    [
        # Room in the current window: the wait is for the previous one's weight to fall.
        (Rate(20, 86400), 180, 20, 0, 4140),  # 20 * (1 - e/day) + 1 <= 20 from e = 72 min
        (Rate(5, 3600), 1800, 5, 2, 360),  # 5 * (1 - e/h) + 3 <= 5 from e = 36 min
        (Rate(5, 3600), 1800, 5, 1, None),  # 2.5 + 1 + 1 <= 5
        (Rate(5, 3600), 2159, 5, 2, 1),
        (Rate(5, 3600), 2160, 5, 2, None),
        # The current window is full: from the next one, where it is the previous one.
        (Rate(3, 3600), 0, 0, 3, 4800),  # 3 * (1 - e/h) + 1 <= 3 from e = 20 min
        (Rate(3, 3600), 1000.5, 0, 3, 3800),  # 3799.5 s: a part of a second waits a whole one
        (Rate(1, 60), 0, 0, 1, 120),  # one hit weighs on the whole next window
        (Rate(1, 60), 59.5, 7, 1, 61),
        (Rate(10, 86400), 0, 0, 10, 86400 + 8640),  # the longest wait: W + W/L
        (Rate(0, 60), 30, 0, 0, 60),  # a zero limit: the window's length
        (Rate(2, 60), 0, 0, 0, None),
    ],
)
def test_the_wait_is_computed_from_the_two_counts(
    rate: Rate, elapsed: float, prev: int, curr: int, wait: int | None
) -> None:
    assert _wait(rate, _position(rate, T0 + elapsed), prev, curr) == wait
    assert _wait(rate, _position(rate, T0 + elapsed), prev, curr) == model_wait(
        rate, {-1: prev, 0: curr}, round(elapsed * 1000)
    )


# -- a model of the sliding window counter, independent of the stores' arithmetic ---------


def model_allows(rate: Rate, counts: dict[int, int], t_ms: int) -> bool:
    """Whether a hit at ``t_ms`` (milliseconds after T0) fits: the rule as the issue states
    it, ``prev * (1 - elapsed / window) + curr + 1 <= limit``, in exact fractions; ``counts``
    maps a window's index (window 0 starts at T0) to its count."""
    index, elapsed = divmod(t_ms, rate.window * 1000)
    weight = 1 - Fraction(elapsed, rate.window * 1000)
    return counts.get(index - 1, 0) * weight + counts.get(index, 0) + 1 <= rate.limit


def model_wait(rate: Rate, counts: dict[int, int], t_ms: int) -> int | None:
    """None when a hit at ``t_ms`` fits, else the first whole second from then at which one
    would (found by trying each; nothing else counted meanwhile)."""
    if model_allows(rate, counts, t_ms):
        return None
    if rate.limit < 1:
        return rate.window
    # Once a hit fits it keeps fitting while nothing is counted (the estimate only falls:
    # the previous window's weight shrinks, then the full one becomes the previous), and
    # two windows on both counts are gone: the first second that fits, by bisection.
    low, high = 0, 2 * rate.window + 1  # refused at low, allowed at high
    while high - low > 1:
        middle = (low + high) // 2
        if model_allows(rate, counts, t_ms + 1000 * middle):
            high = middle
        else:
            low = middle
    return high


class OneByOneDatabaseStore(DatabaseStore):
    """The database store as it runs on MySQL and MariaDB (no ``RETURNING`` on an upsert):
    a request's claim and caps taken by the single-key operations one after the other."""

    acquire = _OneByOne.acquire
    give_back = _OneByOne.give_back


@pytest.fixture(
    params=[
        "database",
        "database-one-by-one",
        "locmem",
        pytest.param("redis", marks=requires_redis),
    ]
)
def store(request: pytest.FixtureRequest, db: None, clock: FakeClock) -> Iterator[Store]:
    if request.param == "database":
        yield DatabaseStore(clock=clock)
    elif request.param == "database-one-by-one":
        yield OneByOneDatabaseStore(clock=clock)
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
    # Full: a hit fits again once the next window is a third in (3 * (1 - 1/3) + 1 <= 3).
    assert store.peek("k", rate) == 4800
    assert store.hit("k", rate) == 4800
    assert store.hit("other", rate) is None  # other keys are independent
    clock.advance(1000.5)
    assert store.hit("k", rate) == 3800  # 3799.5 s: a part of a second waits a whole one
    assert store.peek("k", rate) == 3800
    assert store.peek("other", rate) is None
    clock.advance(3799.5)  # 20 minutes into the next window
    assert store.hit("k", rate) is None
    assert store.hit("k", rate) == 1200  # 3 * (1 - e/h) + 2 <= 3 from e = 40 min


def test_refused_hits_are_not_counted_and_unhit_refunds(store: Store) -> None:
    rate = Rate(2, 3600)
    assert store.hit("k", rate) is None
    assert store.hit("k", rate) is None
    assert [store.hit("k", rate) for _ in range(5)] == [5400] * 5
    store.unhit("k", rate)  # one refund frees one slot, the refused five took none
    assert store.peek("k", rate) is None
    assert store.hit("k", rate) is None
    assert store.hit("k", rate) == 5400


def test_the_window_slides(store: Store, clock: FakeClock) -> None:
    """A hit weighs on the next window as if spread over its own: with one a minute, a hit
    at the start of a window leaves no room until the next one ends. A minute's window, not
    a second's: with the fake clock the length costs nothing, and the server's expiry of a
    one-second window's counter would be close enough to a slow test's run time to matter."""
    rate = Rate(1, 60)
    assert store.hit("k", rate) is None
    assert store.hit("k", rate) == 120
    clock.advance(59.5)
    assert store.hit("k", rate) == 61  # 60.5 s to go
    clock.advance(0.5)
    assert store.hit("k", rate) == 60  # the next window: the previous one weighs in full
    clock.advance(30)
    assert store.peek("k", rate) == 30  # half of it
    clock.advance(30)
    assert store.hit("k", rate) is None
    assert store.hit("k", rate) == 120


def test_zero_limit_refuses_everything(store: Store, clock: FakeClock) -> None:
    assert store.hit("k", Rate(0, 60)) == 60
    assert store.peek("k", Rate(0, 60)) == 60
    clock.advance(30)
    assert store.hit("k", Rate(0, 60)) == 60  # a wait of a window, wherever in it


def test_acquire_takes_everything_or_nothing(store: Store, clock: FakeClock) -> None:
    hourly, daily = Rate(2, 3600), Rate(3, 86400)
    hits = [("send:number:+1", hourly), ("send:ip:1.2.3.4", daily)]
    assert store.acquire(("cooldown:+1", 30), hits, clock()) is None
    assert store.acquire(("cooldown:+1", 30), hits, clock()) == Refusal("claim", 30)
    assert store.acquire(None, hits, clock()) is None  # the second of two an hour
    assert store.acquire(None, hits, clock()) == Refusal("hit", 5400)
    # The refusal undid its own count on the daily cap: one more fits there.
    assert store.hit("send:ip:1.2.3.4", daily) is None
    assert store.hit("send:ip:1.2.3.4", daily) == 2 * 86400 - 2 * 86400 // 3


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
    assert store.acquire(None, hits, clock()) == Refusal("hit", 7200)  # counted again


def test_give_back_refunds_the_windows_the_hits_were_counted_in(
    store: Store, clock: FakeClock
) -> None:
    """A send that fails after its window closed is refunded in that window, which is now
    the previous one; the current window's count is left alone. The waits tell the two
    apart: one hit in the current window waits for the next one to end (90 s); one in the
    previous window, weighing half, would be gone in 30 s."""
    rate = Rate(1, 60)
    hits = [("send:number:+1", rate)]
    clock.advance(30)
    now = clock()
    before = T0 - 0.5  # in the previous minute's window
    assert store.acquire(None, hits, now) is None  # this window: 1 of 1
    assert store.acquire(None, hits, before) is None  # the previous one, as it was then
    store.give_back(None, hits, before)  # refunded where it was counted...
    assert store.acquire(None, hits, now) == Refusal("hit", 90)  # ...so this one stays full
    assert store.acquire(None, hits, before) is None  # and the old one has room again
    store.unhit("send:number:+1", rate, before)  # unhit takes a time too
    assert store.acquire(None, hits, before) is None


def test_a_refund_after_its_window_expired_leaves_no_counter_behind(
    store: Store, clock: FakeClock
) -> None:
    """The counter expired (two windows ended) before the refund: nothing is recreated (a
    bare DECR would leave a -1 key with no expiry on Redis)."""
    rate = Rate(5, 3600)
    hits = [("send:number:+1", rate)]
    now = clock()
    assert store.acquire(None, hits, now) is None
    if isinstance(store, DatabaseStore):
        RateLimitCounter.objects.all().delete()
        store.give_back(None, hits, now)
        assert not RateLimitCounter.objects.exists()
    else:
        key = store._key("send:number:+1", rate, _position(rate, now).index)
        assert store.cache.get(key) == 1
        store.cache.delete(key)
        store.give_back(None, hits, now)
        assert store.cache.get(key) is None


def test_a_count_is_kept_until_the_next_window_ends(store: Store, clock: FakeClock) -> None:
    """A window's count is read as the previous one's until the next window ends: the row
    expires then (by the store's clock), the cache or Redis keeps it that long and a second
    more (by its own clock)."""
    rate = Rate(5, 3600)
    clock.advance(1000)
    assert store.hit("k", rate) is None
    clock.advance(3600)  # the next window: the count is its previous one
    assert store.peek("k", rate) is None
    if isinstance(store, DatabaseStore):
        row = RateLimitCounter.objects.get()
        assert row.expires_at == dt.datetime.fromtimestamp(T0 + 7200, tz=dt.UTC)
        clock.advance(2600)  # the next window ends: the purge may drop the row
        store.purge_one_in = 1
        store.hit("other", rate)
        assert list(RateLimitCounter.objects.values_list("key", flat=True)) == [
            f"other:3600:{int(T0 + 7200) // 3600}"
        ]
    else:
        key = store.cache.make_key(store._key("k", rate, int(T0) // 3600))
        if isinstance(store, RedisCacheStore):
            left = store._redis().client.ttl(key)
        else:
            left = store.cache._expire_info[key] - time.time()  # type: ignore[attr-defined]
        # Set an hour ago by the fake clock, a moment ago by the server's: 6200 s + 1.
        assert 6190 <= left <= 6201


def test_peek_all_and_hit_all_count_each_cap_on_its_own(store: Store) -> None:
    number, ip = ("fail:number:+1", Rate(2, 3600)), ("fail:ip:1.2.3.4", Rate(3, 3600))
    caps = [number, ip]
    assert store.peek_all(caps) is None
    store.hit_all(caps)
    assert store.peek_all(caps) is None
    store.hit_all(caps)  # the number's cap is reached; the IP's is at 2 of 3
    assert store.peek_all(caps) == 5400
    assert store.peek_all([ip]) is None
    store.hit_all(caps)  # a reached cap stays at its limit; the IP's reaches 3
    assert store.peek_all([ip]) == 4800
    assert store.peek_all(caps) == 5400
    store.unhit(*number)  # so one refund frees the number's cap
    assert store.peek_all([number]) is None
    assert store.peek_all([]) is None
    store.hit_all([])


def test_peek_all_answers_the_longest_wait(store: Store, clock: FakeClock) -> None:
    minute, day = ("fail:ip:1.2.3.4", Rate(1, 60)), ("fail:number:+1", Rate(1, 86400))
    store.hit_all([minute, day])
    clock.advance(20)
    assert store.peek_all([minute, day]) == 2 * 86400 - 20
    assert store.peek_all([minute]) == 100


# -- rolling windows: no calendar boundary resets a cap (issue 11) -------------------------


def test_no_cap_resets_at_midnight(store: Store, clock: FakeClock) -> None:
    """Issue 11, "Calendar windows": 40 wrong codes against one number in 5.5 minutes
    around midnight UTC, 20 before and 20 after, against a cap of "20/d". On a rolling
    window the 20 at 23:57 still weigh 20 * (1 - 3 min / 1 day) at 00:03: nothing more
    fits until the previous day's weight has fallen by one hit, at 01:12 (4140 s later)."""
    daily = parse_rate("20/d")
    clock.now = T0 - 180  # 23:57 UTC
    assert [store.hit("fail:number:+1", daily) for _ in range(20)] == [None] * 20
    clock.now = T0 + 180  # 00:03 the next day
    assert [store.hit("fail:number:+1", daily) for _ in range(20)] == [4140] * 20
    assert store.peek("fail:number:+1", daily) == 4140
    clock.advance(4139)
    assert store.hit("fail:number:+1", daily) == 1
    clock.advance(1)
    assert store.hit("fail:number:+1", daily) is None
    assert store.hit("fail:number:+1", daily) == 4320  # one more each 1/20 of a day


def test_the_worst_case_is_twice_the_limit_less_one(store: Store, clock: FakeClock) -> None:
    """The documented worst case, reached: L hits in the last millisecond of a window, then
    L - 1 more once the previous window weighs one hit (W/L before the day since them is
    over). 2L - 1 in a day's span for "20/d", and the 2L-th is refused."""
    daily = parse_rate("20/d")
    first = T0 - 0.001
    clock.now = first
    assert [store.hit("k", daily) for _ in range(20)] == [None] * 20
    clock.now = T0 + 86400 - 4320  # 20 * (4320 / 86400) = 1: room for 19
    assert [store.hit("k", daily) for _ in range(19)] == [None] * 19
    assert store.hit("k", daily) == 4320  # the 40th waits for this window's end
    assert clock.now - first < 86400


def attempt_times(rate: Rate, rng: random.Random) -> list[int]:
    """When an attacker tries, in milliseconds over an hour: a few tries spread at random,
    and at every other window boundary a burst of ``limit + 1`` tries in the two seconds
    before it, another in the two seconds after (where calendar windows let twice the limit
    through), and ``limit + 1`` more spread over the last ``1 / limit`` of the next window
    (where the sliding window counter lets through up to ``2 * limit - 1`` in a span of
    one window, the previous window's burst weighing little by then)."""
    span, hour = rate.window * 1000, 3_600_000
    times = {rng.randrange(hour) for _ in range(3600 // rate.window * rate.limit // 3)}
    for boundary in range(span, hour, 2 * span):
        times |= {boundary - rng.randrange(1, 2000) for _ in range(rate.limit + 1)}
        times |= {boundary + rng.randrange(2000) for _ in range(rate.limit + 1)}
        late = boundary + span - span // rate.limit
        times |= {late + rng.randrange(span // rate.limit) for _ in range(rate.limit + 1)}
    return sorted(times)


@pytest.mark.parametrize("rate", [Rate(5, 600), Rate(3, 90)], ids=str)
def test_no_span_of_a_window_holds_more_than_the_bound(
    store: Store, clock: FakeClock, rate: Rate
) -> None:
    """For a simulated hour of tries (seeded), every span of one window's length holds at
    most the bound the package documents: ``L + x - p * d / W``, where the span starts
    ``d`` before the end of a fixed window holding ``p`` hits, ``x`` of them in the span;
    so at most L when the previous window's hits were spread evenly, and never 2L."""
    rng = random.Random(f"issue 11 {rate}")
    span = rate.window * 1000
    allowed: list[int] = []
    for t in attempt_times(rate, rng):
        clock.now = T0 + t / 1000
        if store.hit("k", rate) is None:
            allowed.append(t)
    windows = [t // span for t in allowed]
    assert max(windows.count(w) for w in set(windows)) <= rate.limit  # each fixed window
    worst = 0
    for start in allowed:  # a span holding the most hits starts at a hit
        inside = sum(1 for t in allowed if start <= t <= start + span)
        window = start // span
        held = windows.count(window)
        in_span = sum(
            1 for t, w in zip(allowed, windows, strict=True) if w == window and t >= start
        )
        room_left = (window + 1) * span - start
        assert inside <= rate.limit + in_span - Fraction(held * room_left, span), start
        worst = max(worst, inside)
    assert rate.limit < worst <= 2 * rate.limit - 1  # the bursts did pass L: a real test


def test_every_store_answers_what_the_sliding_window_counter_does(
    store: Store, clock: FakeClock
) -> None:
    """A random run of hits, refunds and peeks at random moments (several at one moment,
    across window boundaries), each answer, waits included, compared with the model above
    (exact fractions, the wait found by trying whole seconds). Parametrized over every
    store, so the stores answer alike."""
    rate = Rate(4, 60)
    key = "fail:ip:1.2.3.4"
    rng = random.Random(11)
    counts: dict[int, int] = {}
    taken: list[int] = []  # the moments of the hits counted, for refunds
    t = 0
    for _ in range(300):
        t += rng.choice([0, 0, 1, 250, 999, 1000, 7000, 15_001, 31_000, 59_999])
        clock.now = T0 + t / 1000
        expected = model_wait(rate, counts, t)
        action = rng.choice(["hit", "hit", "acquire", "hit_all", "peek", "peek_all", "refund"])
        if action == "refund" and taken:
            moment = taken.pop(rng.randrange(len(taken)))
            if rng.random() < 0.5:
                store.unhit(key, rate, T0 + moment / 1000)
            else:
                store.give_back(None, [(key, rate)], T0 + moment / 1000)
            counts[moment // 60_000] -= 1
            continue
        if action in ("hit", "acquire", "hit_all"):
            if action == "hit":
                got = store.hit(key, rate)
            elif action == "acquire":
                refused = store.acquire(None, [(key, rate)], clock())
                got = None if refused is None else refused.retry_after
            else:
                store.hit_all([(key, rate)])
                got = store.peek(key, rate) if expected is not None else None
            if expected is None:
                counts[t // 60_000] = counts.get(t // 60_000, 0) + 1
                taken.append(t)
        else:
            got = store.peek(key, rate) if action == "peek" else store.peek_all([(key, rate)])
        assert got == expected, (action, t, counts)
    assert len(set(counts)) > 5 and taken  # the run crossed windows and counted


# -- the network a per-network cap counts (issue 11, "Networks, not just addresses") -------


@pytest.mark.parametrize(
    ("ip", "network"),
    [
        ("203.0.113.7", "203.0.113.0/24"),
        ("203.0.113.255", "203.0.113.0/24"),
        ("10.1.2.3", "10.1.2.0/24"),
        ("2001:db8:1234:5678::1", "2001:db8:1234::/48"),
        ("2001:db8:1234:ffff:ffff:ffff:ffff:ffff", "2001:db8:1234::/48"),
        ("2001:DB8:1234::", "2001:db8:1234::/48"),
        ("::ffff:203.0.113.7", "203.0.113.0/24"),  # IPv4-mapped: its IPv4 /24
        (" 203.0.113.7 ", "203.0.113.0/24"),
    ],
)
def test_network_scope(ip: str, network: str) -> None:
    assert network_scope(ip) == network


def test_one_network_holds_many_per_ip_scopes() -> None:
    """Issue 11, "IPv6": per-IP caps count a /64, and one /48 holds 65,536 of them; the
    network scope is the same for every one of them, and differs in the next /48."""
    site = ipaddress.IPv6Network("2001:db8:1234::/48")
    addresses = [str(site[1]), str(site[-1])]  # in its first /64 and in its last
    assert len({ip_scope(a) for a in addresses}) == 2
    assert {network_scope(a) for a in addresses} == {"2001:db8:1234::/48"}
    assert network_scope("2001:db8:1235::1") != network_scope(addresses[0])
    assert network_scope("203.0.113.1") != network_scope("203.0.114.1")


@pytest.mark.parametrize("text", ["", "not an ip", "203.0.113.0/24", "256.1.1.1"])
def test_network_scope_refuses_what_is_not_an_address(text: str) -> None:
    with pytest.raises(ValueError):
        network_scope(text)


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
    settings.TEXTFLOW = {**settings.TEXTFLOW, "RATELIMIT_CACHE": "default"}
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
    settings.TEXTFLOW = {**settings.TEXTFLOW, "RATELIMIT_STORE": "database"}
    store = get_store()
    assert isinstance(store, DatabaseStore)
    assert store.clock is time.time


# -- concurrency: many threads, one limit -------------------------------------------------


def _concurrent_store_cases() -> list[Any]:
    return [
        pytest.param(
            "database", marks=[requires_postgres, pytest.mark.django_db(transaction=True)]
        ),
        pytest.param(
            "database-one-by-one",
            marks=[requires_postgres, pytest.mark.django_db(transaction=True)],
        ),
        pytest.param("redis", marks=requires_redis),
    ]


def _hit_store_cases() -> list[Any]:
    """The stores whose hits must hold under a race: also ``CacheStore`` itself on Redis
    (``add``/``incr``/``decr``, as on Memcached or a Redis cluster)."""
    return [*_concurrent_store_cases(), pytest.param("cache-on-redis", marks=requires_redis)]


def _shared_store(kind: str, clock: FakeClock) -> Store:
    """A store for threads to share (the tests' locmem cache is one per process)."""
    if kind == "database":
        return DatabaseStore(clock=clock)
    if kind == "database-one-by-one":
        return OneByOneDatabaseStore(clock=clock)
    alias = "default" if kind == "locmem" else "redis"
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


@pytest.mark.parametrize("kind", _hit_store_cases())
def test_concurrent_hits_never_pass_the_limit(kind: str, clock: FakeClock) -> None:
    """20 threads, a cap of 5: exactly 5 hits allowed. (Issue 11, "Reserve, then check":
    a wrong-code slot is taken by a hit before the code is compared, so the hit alone must
    hold under a race.)"""
    store = _shared_store(kind, clock)
    rate = Rate(5, 3600)
    results = race(lambda: store.hit("cap:+race", rate), n=20)
    assert results.count(None) == 5
    assert results.count(4320) == 15, results
    assert store.peek("cap:+race", rate) == 4320


@pytest.mark.parametrize("kind", _hit_store_cases())
def test_concurrent_hits_leave_the_previous_windows_share(kind: str, clock: FakeClock) -> None:
    """The previous window's 5 hits weigh 2.5 halfway through this one: of 20 hits at once,
    exactly 2 fit, though the current window's own count starts at 0."""
    store = _shared_store(kind, clock)
    rate = Rate(5, 3600)
    clock.now = T0 - 1800
    assert [store.hit("cap:+race", rate) for _ in range(5)] == [None] * 5
    clock.now = T0 + 1800
    results = race(lambda: store.hit("cap:+race", rate), n=20)
    assert results.count(None) == 2
    assert results.count(360) == 18, results


@pytest.mark.parametrize("kind", _hit_store_cases())
def test_concurrent_acquires_take_all_or_nothing(kind: str, clock: FakeClock) -> None:
    """20 sends at once against a number's cap of 5 and an address's cap of 3: exactly 3
    go, and the refused ones leave no count behind on the number's cap."""
    store = _shared_store(kind, clock)
    number, ip = ("send:number:+race", Rate(5, 3600)), ("send:ip:race", Rate(3, 3600))
    results = race(lambda: store.acquire(None, [number, ip], clock()), n=20)
    assert results.count(None) == 3
    refusals = [result for result in results if result is not None]
    # Refused by the address's cap (4800 s), or by the number's while others' counts were
    # on it for a moment (4320 s): either way a refusal.
    assert all(isinstance(r, Refusal) and r.retry_after in (4320, 4800) for r in refusals)
    assert [store.hit(*number) for _ in range(3)] == [None, None, 4320]
    assert store.peek(*ip) == 4800


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
    assert [cache_store.hit("k", rate) for _ in range(3)] == [None, None, 80]
    assert cache_store.peek("k", rate) == 80


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
    assert cache_store.hit("k", rate) == 80


# -- the database store: one round trip per request (issue 12) -------------------------------


def _every_scope() -> list[tuple[str, Rate]]:
    """A send's caps on five scopes, two rates each: what the Fraud Guard's scopes add."""
    scopes = ["number:+12025550143", "ip:1.2.3.4", "network:1.2.3.0/24", "global:*", "country:US"]
    return [(f"send:{s}", rate) for s in scopes for rate in (Rate(5, 3600), Rate(20, 86400))]


def test_database_acquire_is_one_statement_whatever_the_scopes(
    db: None, clock: FakeClock, django_assert_num_queries: Any
) -> None:
    """Finding: a send-code issued 12 statements, 2 per cap. Now the claim and every cap of
    a request are one statement on PostgreSQL and SQLite, however many scopes count, and the
    refund one more."""
    store = DatabaseStore(clock=clock)
    store.purge_one_in = 10**9  # the occasional purge has its own test
    hits = _every_scope()
    with django_assert_num_queries(1):
        assert store.acquire(("cooldown:+12025550143", 30), hits, clock()) is None
    assert RateLimitCounter.objects.count() == 11  # the claim and ten windows' rows
    with django_assert_num_queries(1):
        store.give_back(("cooldown:+12025550143", 30), hits, clock())
    assert set(
        RateLimitCounter.objects.exclude(key__startswith="cooldown:").values_list(
            "count", flat=True
        )
    ) == {0}
    with django_assert_num_queries(1):
        assert store.acquire(("cooldown:+12025550143", 30), hits, clock()) is None


def test_database_acquire_refused_takes_nothing_and_says_why(db: None, clock: FakeClock) -> None:
    """All or nothing in one statement: a refused cap undoes the claim and the other caps."""
    store = DatabaseStore(clock=clock)
    tight = ("send:ip:1.2.3.4", Rate(1, 3600))
    assert store.acquire(None, [tight], clock()) is None
    hits = [*_every_scope(), tight]
    assert store.acquire(("cooldown:+1", 30), hits, clock()) == Refusal("hit", 7200)
    counted = RateLimitCounter.objects.filter(key__startswith="send:", count__gt=0)
    assert list(counted.values_list("key", flat=True)) == [
        "send:ip:1.2.3.4:3600:" + str(int(clock() // 3600))
    ]
    assert store.claim("cooldown:+1", 30) is None  # the claim was given back too
    assert store.acquire(("cooldown:+1", 30), _every_scope(), clock()) == Refusal("claim", 30)
    # The refused claim counted nothing either.
    assert set(
        RateLimitCounter.objects.filter(key__startswith="send:number").values_list(
            "count", flat=True
        )
    ) == {0}


def test_two_rates_of_one_window_share_a_row_once(db: None, clock: FakeClock) -> None:
    """Settings cannot give a scope two rates of one window (textflow.E012); a caller that
    does gets one row counted once per request, against the tighter rate (one statement
    cannot write a row twice)."""
    store = DatabaseStore(clock=clock)
    hits = [("send:number:+1", Rate(5, 3600)), ("send:number:+1", Rate(3, 3600))]
    assert [store.acquire(None, hits, clock()) for _ in range(3)] == [None] * 3
    assert store.acquire(None, hits, clock()) == Refusal("hit", 4800)


@pytest.mark.parametrize("kind", _concurrent_store_cases())
def test_concurrent_acquires_sharing_rows_in_any_order_never_deadlock(
    kind: str, clock: FakeClock
) -> None:
    """One address, many numbers, caps listed in either order: the rows are locked in key
    order, so no two requests wait on each other (PostgreSQL would abort one as a deadlock)."""
    store = _shared_store(kind, clock)
    ip = ("send:ip:9.9.9.9", Rate(12, 3600))
    orders = iter(range(20))

    def send() -> Refusal | None:
        i = next(orders)
        number = (f"send:number:+1202555{i:04d}", Rate(5, 3600))
        hits = [number, ip] if i % 2 else [ip, number]
        return store.acquire((f"cooldown:{i}", 30), hits, clock())

    results = race(send, n=20)
    assert not [r for r in results if isinstance(r, Exception)], results
    assert results.count(None) == 12


# -- what the Fraud Guard asks of acquire: blocks, waivers, counts (issue 13) ---------------


def test_a_held_block_refuses_and_takes_nothing(store: Store, clock: FakeClock) -> None:
    hits = [("send:number:+1", Rate(5, 3600))]
    assert store.held("block:prefix:+1202555") is None
    store.hold("block:prefix:+1202555", 600)
    assert store.held("block:prefix:+1202555") == 600
    blocks = ["block:prefix:+1202555", "block:country:US"]
    refused = store.acquire(("cooldown:+1", 30), hits, clock(), blocks=blocks)
    assert refused == Refusal("blocked", 600)
    assert store.claim("cooldown:+1", 30) is None  # the cooldown was not spent
    assert store.peek_all(hits) is None  # nor any cap
    clock.advance(600)
    assert store.held("block:prefix:+1202555") is None
    assert store.acquire(None, hits, clock(), blocks=blocks) is None
    store.hold("block:country:US", 60)
    assert store.acquire(None, hits, clock(), blocks=blocks) == Refusal("blocked", 60)
    store.release("block:country:US")
    assert store.acquire(None, hits, clock(), blocks=blocks) is None


def test_a_waived_hit_is_neither_checked_nor_counted(store: Store, clock: FakeClock) -> None:
    new_country = ("guard:new:CU", Rate(1, 3600))
    waivers = {"guard:new:CU": "guard:known:CU"}
    assert store.acquire(None, [new_country], clock(), waivers=waivers) is None
    refused = store.acquire(None, [new_country], clock(), waivers=waivers)
    assert refused == Refusal("hit", 7200)
    store.hold("guard:known:CU", 30 * 86400)  # a number of the country was verified
    for _ in range(3):
        assert store.acquire(None, [new_country], clock(), waivers=waivers) is None
    assert store.peek(*new_country) == 7200  # the waived ones counted nothing


def test_counts_answer_each_hits_current_window(store: Store, clock: FakeClock) -> None:
    sends = ("guard:sends:+1202555", Rate(10**9, 3600))
    new_country = ("guard:new:US", Rate(100, 3600))
    waivers = {"guard:new:US": "guard:known:US"}
    for expected in (1, 2, 3):
        counts: dict[tuple[str, int], int] = {}
        hits = [sends, ("send:number:+1", Rate(10, 86400)), new_country]
        assert store.acquire(None, hits, clock(), waivers=waivers, counts=counts) is None
        # Hits with a waiver are not reported, waived or not.
        assert counts == {
            ("guard:sends:+1202555", 3600): expected,
            ("send:number:+1", 86400): expected,
        }
    clock.advance(3600)  # a new window
    counts = {}
    assert store.acquire(None, [sends], clock(), counts=counts) is None
    assert counts == {("guard:sends:+1202555", 3600): 1}


@pytest.mark.parametrize("kind", _concurrent_store_cases())
def test_concurrent_refunds_crossing_sends_on_shared_rows_never_deadlock(
    kind: str, clock: FakeClock
) -> None:
    """Sends and refunds of sends that share rows (one address, the site's budgets), all at
    once: a refund locks its rows in the key order the send's upsert takes them in. (Found
    by the suite: PostgreSQL aborted one of twenty parallel sends to one number as a
    deadlock when the refund's UPDATE locked rows in the order it found them.)"""
    store = _shared_store(kind, clock)
    shared = [(f"send:shared:{name}", Rate(10**6, 3600)) for name in "abcdefgh"]
    turns = iter(range(20))

    def send_and_refund() -> None:
        i = next(turns)
        hits = [*shared[i % 8 :], (f"send:number:+1202555{i:04d}", Rate(5, 3600)), *shared]
        for _ in range(15):
            claim = (f"cooldown:{i}", 30)
            assert store.acquire(claim, hits, clock()) is None
            store.give_back(claim, hits, clock())

    results = race(send_and_refund, n=20)
    assert [r for r in results if r is not None] == []
    assert store.peek_all(shared) is None


@requires_postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_purge_never_waits_for_a_row_another_statement_holds(clock: FakeClock) -> None:
    """The purge skips expired rows other statements hold, instead of waiting for them in
    the order it finds them. (Found by the suite: two purges and a refund at once deadlocked
    on PostgreSQL, 1 run in 2 of 20 threads of sends and refunds.) Here a row is held by
    another connection while the purge runs under a lock timeout: a purge that waited would
    fail with it."""
    import threading

    from django.db import connection, connections, transaction

    store = DatabaseStore(clock=clock)
    store.purge_one_in = 1
    past = dt.datetime.fromtimestamp(clock() - 1, tz=dt.UTC)
    for key in ("expired:held", "expired:free"):
        RateLimitCounter.objects.create(key=key, count=1, expires_at=past)
    holding, release = threading.Event(), threading.Event()

    def hold_a_row() -> None:
        try:
            with transaction.atomic():
                RateLimitCounter.objects.select_for_update().get(key="expired:held")
                holding.set()
                release.wait(30)
        finally:
            connections.close_all()

    holder = threading.Thread(target=hold_a_row)
    holder.start()
    try:
        assert holding.wait(30)
        with connection.cursor() as cursor:
            cursor.execute("SET lock_timeout = '2s'")
        try:
            assert store.hit("live", Rate(5, 3600)) is None  # purges first
        finally:
            with connection.cursor() as cursor:
                cursor.execute("RESET lock_timeout")
    finally:
        release.set()
        holder.join(30)
    left = set(RateLimitCounter.objects.values_list("key", flat=True))
    assert left == {"expired:held", f"live:3600:{int(clock()) // 3600}"}
