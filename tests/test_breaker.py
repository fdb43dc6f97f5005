"""The circuit breaker: opened by consecutive failed attempts, reopened to a trial call by a
clock the tests move (no real sleep)."""

from __future__ import annotations

import functools
import math
from typing import Any

import pytest
from django.core.cache import caches
from rest_framework.test import APIClient

from textflow_django import ratelimit
from textflow_django._breaker import CircuitBreaker, StoreState
from textflow_django.backends import textflow as textflow_backend
from textflow_django.client import TextFlowClient
from textflow_django.exceptions import TextFlowCircuitOpen, TextFlowServerError
from textflow_django.models import PhoneVerification
from textflow_django.ratelimit import CacheStore, DatabaseStore
from textflow_django.testing import EMULATOR_API_KEY

NUMBER = "+12025550143"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_opens_after_threshold_then_lets_one_trial_through() -> None:
    clock = Clock()
    breaker = CircuitBreaker(3, 30, clock=clock)
    assert breaker.allow() is None
    assert [breaker.failure() for _ in range(3)] == [False, False, True]
    assert breaker.state == "open"
    assert breaker.allow() == 30
    clock.now += 29.5
    assert breaker.allow() == 1
    clock.now += 1
    assert breaker.state == "half-open"
    assert breaker.allow() is None  # the trial
    assert breaker.allow() is not None  # only one at a time
    breaker.success()
    assert breaker.state == "closed" and breaker.allow() is None


def test_a_failed_trial_reopens_at_once() -> None:
    clock = Clock()
    breaker = CircuitBreaker(2, 10, clock=clock)
    breaker.failure()
    breaker.failure()
    clock.now += 10
    assert breaker.allow() is None
    breaker.failure()
    assert breaker.state == "open" and breaker.allow() == 10


def test_a_success_resets_the_count() -> None:
    breaker = CircuitBreaker(3, 10)
    breaker.failure()
    breaker.failure()
    breaker.success()
    breaker.failure()
    breaker.failure()
    assert breaker.state == "closed"


@pytest.mark.parametrize(("threshold", "reset"), [(0, 1), (1, 0)])
def test_bad_settings(threshold: int, reset: float) -> None:
    with pytest.raises(ValueError):
        CircuitBreaker(threshold, reset)


def test_client_fails_fast_while_open(textflow_emulator: Any) -> None:
    breaker = CircuitBreaker(3, 60)
    client = TextFlowClient(EMULATOR_API_KEY, base_url=textflow_emulator.url, breaker=breaker)
    textflow_emulator.fault("status", status=503, times=100)
    for _ in range(3):
        with pytest.raises(TextFlowServerError):
            client.send_sms(NUMBER, "Hi")
    for _ in range(20):
        with pytest.raises(TextFlowCircuitOpen) as info:
            client.send_sms(NUMBER, "Hi")
        assert info.value.maybe_sent is False
        assert 1 <= info.value.retry_after <= 60
    # 23 calls, 3 reached TextFlow: the other 20 cost no request and no timeout.
    assert len(textflow_emulator.calls("/send-sms")) == 3


def test_refusals_do_not_open_the_breaker(textflow_emulator: Any) -> None:
    breaker = CircuitBreaker(2, 60)
    client = TextFlowClient(EMULATOR_API_KEY, base_url=textflow_emulator.url, breaker=breaker)
    for _ in range(5):
        with pytest.raises(Exception):  # noqa: B017 - TextFlowRejectedNumber: TextFlow is up
            client.send_sms("+1", "Hi")
    assert breaker.state == "closed"
    assert len(textflow_emulator.calls("/send-sms")) == 5


@pytest.mark.django_db
@pytest.mark.parametrize("scope", ["process", "shared"])
def test_the_api_answers_503_at_once_while_textflow_is_down(
    scope: str, settings: Any, textflow_live: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a per-process store (the local-memory cache) the breaker is the process's; with
    the database, the store's. Either way the API fails fast while it is open."""
    # The breaker and the store run on a clock the test moves: no sleep.
    clock = Clock()
    clock.now = 1_700_000_000.0
    monkeypatch.setattr(
        textflow_backend, "CircuitBreaker", functools.partial(CircuitBreaker, clock=clock)
    )
    caches["default"].clear()
    store = CacheStore("default", clock=clock) if scope == "process" else DatabaseStore(clock=clock)
    monkeypatch.setattr(ratelimit, "get_store", lambda: store)
    settings.TEXTFLOW = {
        **settings.TEXTFLOW,
        "BREAKER_THRESHOLD": 3,
        "BREAKER_RESET": 2,  # whole seconds: a shared breaker's times are the store's
        "RESEND_COOLDOWN": 0,
    }
    assert textflow_backend.breaker_scope() == scope
    api = APIClient()
    # The default "local" mode sends its own code as a plain SMS.
    textflow_live.fault("status", path="/send-sms", status=500, times=100)
    answers = [
        api.post("/api/phone/send-code/", {"phone_number": NUMBER}, format="json")
        for _ in range(10)
    ]
    assert [a.status_code for a in answers] == [502] * 3 + [503] * 7
    # A 5xx may have sent the SMS: recorded, and said so. The open breaker sent nothing.
    assert [a.json().get("code_may_arrive") for a in answers] == [True] * 3 + [None] * 7
    assert PhoneVerification.objects.count() == 3
    assert {a.json()["code"] for a in answers[3:]} == {"sms_provider_unavailable"}
    assert all(int(a["Retry-After"]) >= 1 for a in answers[3:])
    assert len(textflow_live.calls("/send-sms")) == 3  # 7 requests never waited on TextFlow

    # TextFlow recovers; after BREAKER_RESET one trial goes through and closes the breaker.
    textflow_live.reset()
    clock.now += 1  # half of BREAKER_RESET: still open, TextFlow not asked
    assert (
        api.post("/api/phone/send-code/", {"phone_number": NUMBER}, format="json").status_code
        == 503
    )
    clock.now += 1.5  # past BREAKER_RESET: one trial call goes through
    assert (
        api.post("/api/phone/send-code/", {"phone_number": NUMBER}, format="json").status_code
        == 200
    )
    assert (
        api.post(
            "/api/phone/send-code/", {"phone_number": "+12025550144"}, format="json"
        ).status_code
        == 200
    )
    assert len(textflow_live.calls("/send-sms")) == 2  # none while open, then the two
    assert PhoneVerification.objects.count() == 5


# -- the state kept in a shared store (StoreState), on a stand-in for the store ------------


class MemoryStore:
    """The store primitives ``StoreState`` uses, in dicts, on a clock; ``down`` names the
    primitives that raise, as a store whose server went away. (The real stores, shared by
    threads and processes, are tests/test_shared_breaker.py's.)"""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.counts: dict[str, int] = {}
        self.deadlines: dict[str, float] = {}
        self.down: set[str] = set()

    def _up(self, name: str) -> None:
        if name in self.down:
            raise ConnectionError("store went away")

    def claim(self, key: str, ttl: int) -> int | None:
        self._up("claim")
        left = self.held(key)
        if left is None:
            self.deadlines[key] = self.clock() + ttl
        return left

    def release(self, key: str) -> None:
        self._up("release")
        self.deadlines.pop(key, None)
        self.counts.pop(key, None)

    def hold(self, key: str, seconds: int) -> None:
        self._up("hold")
        self.deadlines[key] = self.clock() + seconds

    def held(self, key: str) -> int | None:
        self._up("held")
        left = self.deadlines.get(key, 0) - self.clock()
        return math.ceil(left) if left > 0 else None

    def incr(self, key: str, ttl: int) -> int:
        self._up("incr")
        self.counts[key] = self.counts.get(key, 0) + 1
        return self.counts[key]

    def count(self, key: str) -> int:
        self._up("count")
        return self.counts.get(key, 0)


def shared_breakers(store: MemoryStore, n: int, errors: list[BaseException]) -> list[Any]:
    """``n`` breakers (as in ``n`` processes) keeping their state in ``store``."""
    return [
        CircuitBreaker(
            3,
            30,
            clock=store.clock,
            shared=lambda: StoreState(store, "https://textflow.example/api"),
            on_shared_error=errors.append,
        )
        for _ in range(n)
    ]


def test_breakers_sharing_a_store_open_and_close_together() -> None:
    clock = Clock()
    store = MemoryStore(clock)
    errors: list[BaseException] = []
    a, b, c = shared_breakers(store, 3, errors)
    assert a.scope == "shared"
    for breaker in (a, b):
        assert breaker.allow() is None
        assert breaker.failure() is False
    assert c.allow() is None
    assert c.failure() is True  # the third failure in a row, wherever: opened, once
    assert [x.allow() for x in (a, b, c)] == [30, 30, 30]
    assert a.state == b.state == "open"
    clock.now += 30
    assert [x.allow() for x in (b, a, c)] == [None, 1, 1]  # b's is the one trial
    assert b.failure() is False  # the trial failed: open again, for all
    assert [x.allow() for x in (a, b, c)] == [30, 30, 30]
    clock.now += 30
    assert c.allow() is None
    assert a.allow() == 1
    assert c.success() is True  # the trial succeeded: closed, for all
    assert [x.allow() for x in (a, b, c)] == [None, None, None]
    assert a.state == "closed"
    assert store.counts == {} and store.deadlines == {} and errors == []


def test_a_closed_shared_breaker_writes_only_after_failures() -> None:
    store = MemoryStore(Clock())
    (breaker,) = shared_breakers(store, 1, [])
    store.down = {"release", "incr", "hold", "claim"}  # any write would raise
    assert breaker.allow() is None
    assert breaker.success() is False
    store.down = set()
    breaker.allow()
    breaker.failure()
    assert breaker.allow() is None
    assert breaker.success() is False
    assert store.counts == {}  # the failure count is cleared


def test_a_store_failing_mid_call_leaves_the_call_to_the_process_breaker() -> None:
    store = MemoryStore(Clock())
    errors: list[BaseException] = []
    (breaker,) = shared_breakers(store, 1, errors)
    store.down = {"incr"}
    for _ in range(3):
        assert breaker.allow() is None  # read from the store
        breaker.failure()  # counted by the process's breaker instead
    assert len(errors) == 3 and all(isinstance(e, ConnectionError) for e in errors)
    assert breaker.local.open_remaining(3) == 30
    store.down = {"count"}  # now the store cannot even be read: the process's breaker
    assert breaker.allow() == 30
    assert breaker.scope == "shared"  # still the one in force, when the store answers


def test_a_trial_failing_after_another_success_closed_it_is_one_failure() -> None:
    """A call in flight since before the opening succeeds while the trial is out: closed. The
    trial then fails: one failure of a closed breaker, which reopens nothing and leaves no
    hold behind, so the next opening is the one its failures make, and it is reported."""
    clock = Clock()
    store = MemoryStore(clock)
    errors: list[BaseException] = []
    early, trial, *others = shared_breakers(store, 5, errors)
    assert early.allow() is None  # in flight
    for breaker in others:
        assert breaker.allow() is None
    assert [breaker.failure() for breaker in others] == [False, False, True]
    clock.now += 30
    assert trial.allow() is None  # the trial
    assert early.success() is True  # TextFlow answered: closed
    assert trial.failure() is False
    failures = StoreState(store, "https://textflow.example/api").failures_key
    assert trial.state == "closed" and store.counts == {failures: 1}
    for breaker in others[:2]:
        assert breaker.allow() is None
    assert [breaker.failure() for breaker in others[:2]] == [False, True]
    assert trial.state == "open" and errors == []
