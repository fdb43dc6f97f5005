"""A circuit breaker the whole site shares (issue 16).

Finding: the breaker was per process. With 8 worker processes, TextFlow's outage cost
8 x ``BREAKER_THRESHOLD`` timeouts (each worker learnt of it from its own failures), and
the workers reopened at different times. Now, with a shared rate-limit store (the
database, Redis), the breaker's state lives in the store: after ``THRESHOLD`` failures seen
by any workers every worker fails fast, without a request, until the deadline; then
exactly one trial call among all of them reaches TextFlow; its success closes the breaker
for all.

A *worker* here is what a process of the site has: its own thread (its own database
connection), its own client, and its own process-wide breaker (``breaker_for`` after
``reset_breakers``, as in a fresh process). The workers share one store, on a fake clock:
no test sleeps; the only real waits are the client's timeouts against the emulator's
"slow" outage (a quarter of a second each), which are what the breaker saves. The last
test runs real processes over PostgreSQL.

This module imports nothing that the per-process code lacked, so the finding's tests fail
on that code by their assertions (24 timeouts, not 3). The review's findings on the first
shared version (below the processes: the trial slot's length, a call inside the caller's
transaction, a success's clearing, who reports the opening) fail on that version alike.
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from django.core.cache import caches
from django.db import connection, transaction

from textflow_django import _events, ratelimit
from textflow_django._breaker import CircuitBreaker, StoreState
from textflow_django.backends import textflow as textflow_backend
from textflow_django.client import TextFlowClient
from textflow_django.exceptions import TextFlowCircuitOpen, TextFlowError
from textflow_django.models import OptOut
from textflow_django.ratelimit import CacheStore, DatabaseStore, RedisCacheStore
from textflow_django.testing import EMULATOR_API_KEY, TextFlowEmulator

from .conftest import requires_postgres, requires_redis

pytestmark = pytest.mark.django_db(transaction=True)  # threads: one connection each

ROOT = Path(__file__).resolve().parent.parent
NUMBER = "+12025550143"
THRESHOLD = 3
RESET = 30
WORKERS = 8
#: The client's timeout against the "slow" outage (which answers after SLOW seconds).
TIMEOUT = 0.25
SLOW = 3.0
#: Where the fake clock starts (epoch seconds).
T0 = 1_750_000_000.0
#: The TextFlow of the tests that drive breakers without a client.
URL = "https://textflow.example/api"


class FakeClock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def outcome(call: Callable[[], object]) -> str:
    """``"ok"``, ``"open"`` (failed fast: not tried) or ``"failed"`` (tried, no answer)."""
    try:
        call()
    except TextFlowCircuitOpen:
        return "open"
    except TextFlowError:
        return "failed"
    return "ok"


class Worker:
    """One worker process's share of the site: a thread of its own (its own database
    connection), a client of its own, and a process-wide breaker made anew."""

    def __init__(self, url: str) -> None:
        self._thread = ThreadPoolExecutor(1)
        self.client = self._thread.submit(self._build, url).result()

    @staticmethod
    def _build(url: str) -> TextFlowClient:
        textflow_backend.reset_breakers()  # a fresh process: no breaker yet
        breaker = textflow_backend.breaker_for(url, THRESHOLD, RESET)
        return TextFlowClient(EMULATOR_API_KEY, base_url=url, timeout=TIMEOUT, breaker=breaker)

    def start(self) -> Any:
        """Send one SMS on the worker's thread; ``.result()`` is its outcome."""
        return self._thread.submit(outcome, lambda: self.client.send_sms(NUMBER, "Hi"))

    def send(self) -> str:
        return str(self.start().result())

    def close(self) -> None:
        if connection.vendor != "sqlite":  # SQLite's in-memory test database: one, shared
            self._thread.submit(lambda: connection.close()).result()  # the thread's own
        self._thread.shutdown()
        self.client.close()


def all_at_once(workers: list[Worker]) -> list[str]:
    """Every worker sends one SMS at the same time; their outcomes, in worker order.

    On SQLite one after the other: the test database is in memory, one connection shared
    by every thread, whose concurrent writers meet "database table is locked" at once (no
    busy timeout, unlike a database file); the store then fails and each worker falls back
    to its process's breaker, which is another test's subject."""
    if connection.vendor == "sqlite":
        return [worker.send() for worker in workers]
    return [str(future.result()) for future in [w.start() for w in workers]]


@pytest.fixture(params=["database", pytest.param("redis", marks=requires_redis)])
def shared(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[FakeClock, DatabaseStore | CacheStore]]:
    """The site's one store (the database configured for the run, PostgreSQL or SQLite;
    or Redis), on a fake clock, for every worker."""
    clock = FakeClock()
    store: DatabaseStore | CacheStore = (
        DatabaseStore(clock=clock)
        if request.param == "database"
        else RedisCacheStore("redis", clock=clock)
    )
    monkeypatch.setattr(ratelimit, "get_store", lambda: store)
    yield clock, store
    if request.param == "redis":  # the breaker's keys, of this run's emulator and URL only
        textflow_backend.reset_breakers()
        StoreState(store, URL).clear()


@pytest.fixture
def events() -> Iterator[list[tuple[str, Mapping[str, object]]]]:
    seen: list[tuple[str, Mapping[str, object]]] = []

    def listen(name: str, fields: Mapping[str, object]) -> None:
        if name.startswith(("textflow.breaker.", "textflow.store.")):
            seen.append((name, dict(fields)))

    _events.add_listener(listen)
    yield seen
    _events.remove_listener(listen)


@pytest.fixture
def workers(textflow_emulator: TextFlowEmulator) -> Iterator[list[Worker]]:
    made = [Worker(textflow_emulator.url) for _ in range(WORKERS)]
    yield made
    textflow_emulator.outage(None)
    for worker in made:
        worker.close()


def reached(emulator: TextFlowEmulator) -> int:
    """How many calls reached TextFlow."""
    return len(emulator.calls("/send-sms"))


def test_the_threshold_opens_it_for_every_worker(
    shared: tuple[FakeClock, Any],
    workers: list[Worker],
    textflow_emulator: TextFlowEmulator,
    events: list[tuple[str, Mapping[str, object]]],
) -> None:
    """The finding: 8 workers in turn while TextFlow hangs. Each process's own breaker let
    each worker time out THRESHOLD times (24 timeouts); the shared one, THRESHOLD in all."""
    textflow_emulator.outage("slow", delay=SLOW)
    outcomes = [worker.send() for _round in range(THRESHOLD) for worker in workers]
    assert reached(textflow_emulator) == THRESHOLD, outcomes
    assert outcomes == ["failed"] * THRESHOLD + ["open"] * (WORKERS * THRESHOLD - THRESHOLD)
    # Until the deadline, every worker fails fast, all at once too, and nothing is tried.
    clock, _store = shared
    for _ in range(3):
        assert all_at_once(workers) == ["open"] * WORKERS
        clock.advance(RESET / 3 - 1)
    assert reached(textflow_emulator) == THRESHOLD
    opened = [fields for name, fields in events if name == "textflow.breaker.opened"]
    assert opened == [{"failures": THRESHOLD, "seconds": RESET, "scope": "shared"}]


def test_failures_spread_over_workers_add_up(
    shared: tuple[FakeClock, Any], workers: list[Worker], textflow_emulator: TextFlowEmulator
) -> None:
    """Consecutive failures are the site's: one each from three workers open it."""
    textflow_emulator.outage("slow", delay=SLOW)
    assert [workers[i].send() for i in (0, 3, 6)] == ["failed"] * THRESHOLD
    assert [worker.send() for worker in workers] == ["open"] * WORKERS
    assert reached(textflow_emulator) == THRESHOLD


def test_a_success_anywhere_resets_the_count(
    shared: tuple[FakeClock, Any], workers: list[Worker], textflow_emulator: TextFlowEmulator
) -> None:
    textflow_emulator.outage("slow", delay=SLOW)
    assert [workers[i].send() for i in range(THRESHOLD - 1)] == ["failed"] * (THRESHOLD - 1)
    textflow_emulator.outage(None)
    assert workers[5].send() == "ok"
    textflow_emulator.outage("slow", delay=SLOW)
    assert [workers[i].send() for i in range(THRESHOLD - 1)] == ["failed"] * (THRESHOLD - 1)
    assert workers[7].send() == "failed"  # the THRESHOLD-th in a row: now it opens
    assert workers[0].send() == "open"


def test_after_the_deadline_one_trial_and_its_success_closes_it_for_all(
    shared: tuple[FakeClock, Any],
    workers: list[Worker],
    textflow_emulator: TextFlowEmulator,
    events: list[tuple[str, Mapping[str, object]]],
) -> None:
    clock, _store = shared
    textflow_emulator.outage("slow", delay=SLOW)
    for i in range(THRESHOLD):
        assert workers[i].send() == "failed"
    clock.advance(RESET - 1)
    assert all_at_once(workers) == ["open"] * WORKERS  # a second before the deadline
    assert reached(textflow_emulator) == THRESHOLD

    # Past the deadline, all at once: exactly one of them is the trial. TextFlow still
    # hangs, so it fails, and the breaker is open again for everyone.
    clock.advance(1)
    outcomes = all_at_once(workers)
    assert sorted(outcomes) == ["failed"] + ["open"] * (WORKERS - 1), outcomes
    assert reached(textflow_emulator) == THRESHOLD + 1
    assert all_at_once(workers) == ["open"] * WORKERS
    clock.advance(RESET - 1)
    assert all_at_once(workers) == ["open"] * WORKERS
    assert reached(textflow_emulator) == THRESHOLD + 1

    # TextFlow is back. After the deadline one worker's trial succeeds: closed for all.
    textflow_emulator.outage(None)
    clock.advance(1)
    assert workers[4].send() == "ok"
    assert reached(textflow_emulator) == THRESHOLD + 2
    assert [worker.send() for worker in workers] == ["ok"] * WORKERS
    assert all_at_once(workers) == ["ok"] * WORKERS
    assert reached(textflow_emulator) == THRESHOLD + 2 + 2 * WORKERS
    names = [name for name, _fields in events]
    assert names == ["textflow.breaker.opened", "textflow.breaker.closed"]


def test_the_trial_slot_of_a_worker_that_died_frees_itself(
    shared: tuple[FakeClock, Any], workers: list[Worker], textflow_emulator: TextFlowEmulator
) -> None:
    """A trial whose worker never reports (killed mid-call) holds the slot for the trial's
    time-to-live (BREAKER_RESET, or the timeout if longer, plus a second), not forever."""
    clock, _store = shared
    textflow_emulator.outage("slow", delay=SLOW)
    for i in range(THRESHOLD):
        assert workers[i].send() == "failed"
    clock.advance(RESET)
    dead = workers[0].client.breaker
    assert dead is not None
    assert workers[0]._thread.submit(dead.allow).result() is None  # takes the trial, dies
    assert all_at_once(workers[1:]) == ["open"] * (WORKERS - 1)
    clock.advance(RESET + 1)
    textflow_emulator.outage(None)
    assert workers[1].send() == "ok"  # the slot freed: a new trial, which closes it
    assert [worker.send() for worker in workers] == ["ok"] * WORKERS


def test_what_the_shared_breaker_costs_a_call_on_the_database(
    monkeypatch: pytest.MonkeyPatch,
    textflow_emulator: TextFlowEmulator,
    django_assert_num_queries: Any,
) -> None:
    """Closed: two reads per call (the count before it, and after it: a success must clear
    what other workers counted while it was in flight), and no write when no failure was
    counted; a success after failures: those reads and one delete (the count); a failure:
    the read and its count (one upsert on PostgreSQL and SQLite) and, once the count
    reaches the threshold, the claim of the open key."""
    clock = FakeClock()
    store = DatabaseStore(clock=clock)
    store.purge_one_in = 10**9  # no occasional purge in the counts below
    monkeypatch.setattr(ratelimit, "get_store", lambda: store)
    client = Worker(textflow_emulator.url).client  # its first call runs on this thread
    try:
        with django_assert_num_queries(2):
            client.send_sms(NUMBER, "Hi")
        textflow_emulator.fault("status", path="/send-sms", status=503)
        with django_assert_num_queries(2):
            assert outcome(lambda: client.send_sms(NUMBER, "Hi")) == "failed"
        with django_assert_num_queries(3):
            client.send_sms(NUMBER, "Hi")
        with django_assert_num_queries(2):
            client.send_sms(NUMBER, "Hi")
    finally:
        client.close()


# -- which breaker is in force -------------------------------------------------------------


def test_breaker_scope_follows_the_store(settings: Any) -> None:
    settings.CACHES = {
        **settings.CACHES,
        "dummy": {"BACKEND": "django.core.cache.backends.dummy.DummyCache"},
        "files": {
            "BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
            "LOCATION": "/tmp/textflow-breaker-scope-test",  # noqa: S108 - never written
        },
    }
    settings.TEXTFLOW = {**settings.TEXTFLOW, "RATELIMIT_STORE": "database"}
    assert textflow_backend.breaker_scope() == "shared"
    for alias in ("default", "dummy", "files"):  # local memory, nothing, one host's files
        settings.TEXTFLOW = {
            **settings.TEXTFLOW,
            "RATELIMIT_STORE": "cache",
            "RATELIMIT_CACHE": alias,
        }
        assert textflow_backend.breaker_scope() == "process", alias


@requires_redis
def test_breaker_scope_on_redis(settings: Any) -> None:
    settings.TEXTFLOW = {
        **settings.TEXTFLOW,
        "RATELIMIT_STORE": "cache",
        "RATELIMIT_CACHE": "redis",
    }
    assert textflow_backend.breaker_scope() == "shared"


def test_a_per_process_store_keeps_each_process_its_own_breaker(
    monkeypatch: pytest.MonkeyPatch, workers: list[Worker], textflow_emulator: TextFlowEmulator
) -> None:
    """The local-memory cache is one per process: so is the breaker (each worker here stands
    for a process and learns of the outage from its own failures)."""
    caches["default"].clear()
    store = CacheStore("default", clock=FakeClock())
    monkeypatch.setattr(ratelimit, "get_store", lambda: store)
    textflow_emulator.outage("slow", delay=SLOW)
    assert [workers[0].send() for _ in range(THRESHOLD + 1)] == ["failed"] * THRESHOLD + ["open"]
    assert workers[1].send() == "failed"
    assert reached(textflow_emulator) == THRESHOLD + 1
    assert workers[0].client.breaker is not None
    assert workers[0].client.breaker.scope == "process"


def test_a_failing_store_falls_back_to_the_process_breaker(
    settings: Any,
    monkeypatch: pytest.MonkeyPatch,
    textflow_emulator: TextFlowEmulator,
    events: list[tuple[str, Mapping[str, object]]],
) -> None:
    """A store that fails (its server gone) never fails a send: the breaker of the process
    stands in for that call, and the store's failure is reported."""
    settings.CACHES = {**settings.CACHES, "broken": {"BACKEND": "tests.conftest.BrokenCache"}}
    store = CacheStore("broken")
    monkeypatch.setattr(ratelimit, "get_store", lambda: store)
    worker = Worker(textflow_emulator.url)
    try:
        assert worker.send() == "ok"
        failed = [fields for name, fields in events if name == "textflow.store.failed"]
        assert failed and all(f["part"] == "breaker" for f in failed)
        assert failed[0]["error"] == "ConnectionError"
        textflow_emulator.outage("slow", delay=SLOW)
        outcomes = [worker.send() for _ in range(THRESHOLD + 2)]
        assert outcomes == ["failed"] * THRESHOLD + ["open"] * 2
        assert reached(textflow_emulator) == 1 + THRESHOLD
        opened = [fields for name, fields in events if name == "textflow.breaker.opened"]
        assert len(opened) == 1
    finally:
        textflow_emulator.outage(None)
        worker.close()


# -- real processes over PostgreSQL -------------------------------------------------------

#: A worker process: Django with the test settings on the test database, the real backend
#: against the emulator, the store's clock read from a file the test writes. It answers
#: each "send" line on stdin with the outcome of one SMS.
WORKER = textwrap.dedent(
    """
    import sys

    import django
    from django.conf import settings

    django.setup()
    settings.TEXTFLOW = {
        **settings.TEXTFLOW,
        "BREAKER_THRESHOLD": %(threshold)d,
        "BREAKER_RESET": %(reset)d,
        "TIMEOUT": %(timeout)r,
    }

    from textflow_django import ratelimit
    from textflow_django.backends import get_backend
    from textflow_django.exceptions import TextFlowCircuitOpen, TextFlowError


    def clock():
        with open(sys.argv[1]) as f:
            return float(f.read())


    ratelimit.get_store = lambda: ratelimit.DatabaseStore(clock=clock)
    backend = get_backend()
    print("ready", flush=True)
    for line in sys.stdin:
        try:
            backend.send_sms("%(number)s", "Hi")
            answer = "ok"
        except TextFlowCircuitOpen:
            answer = "open"
        except TextFlowError:
            answer = "failed"
        print(answer, flush=True)
    """
) % {"threshold": THRESHOLD, "reset": RESET, "timeout": TIMEOUT, "number": NUMBER}


@requires_postgres
def test_worker_processes_share_one_breaker_on_postgresql(
    tmp_path: Path, textflow_emulator: TextFlowEmulator
) -> None:
    """Four processes: THRESHOLD timeouts in all (4 x THRESHOLD before), all failing fast
    until the deadline, one trial after it, and all closed by its success."""
    clock_file = tmp_path / "clock"
    clock_file.write_text(repr(T0))
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "TEXTFLOW_TEST_EMULATOR_URL": textflow_emulator.url,
        "PGDATABASE": connection.settings_dict["NAME"],  # the test database
        "PYTHONPATH": str(ROOT),
    }
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, str(clock_file)],
            env=env,
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]

    def ask(proc: subprocess.Popen[str]) -> str:
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write("send\n")
        proc.stdin.flush()
        return proc.stdout.readline().strip()

    try:
        for proc in procs:
            assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        textflow_emulator.outage("slow", delay=SLOW)
        outcomes = [ask(proc) for _round in range(THRESHOLD) for proc in procs]
        assert outcomes == ["failed"] * THRESHOLD + ["open"] * (len(procs) * THRESHOLD - 3)
        assert reached(textflow_emulator) == THRESHOLD
        clock_file.write_text(repr(T0 + RESET))  # the deadline: one trial, which fails
        assert sorted(ask(proc) for proc in procs) == ["failed"] + ["open"] * (len(procs) - 1)
        textflow_emulator.outage(None)
        clock_file.write_text(repr(T0 + 2 * RESET))
        assert [ask(proc) for proc in procs] == ["ok"] * len(procs)  # the first one's trial
        assert reached(textflow_emulator) == THRESHOLD + 1 + len(procs)
    finally:
        textflow_emulator.outage(None)
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.close()
        for proc in procs:
            proc.wait(timeout=30)


# -- review findings: the trial slot outlasts the trial call -------------------------------


def test_the_trial_slot_outlasts_the_longest_call(shared: tuple[FakeClock, Any]) -> None:
    """Finding: the shared trial slot was kept max(BREAKER_RESET, TIMEOUT) + 1 seconds, but
    a call makes up to 1 + CONNECT_RETRIES connection attempts of TIMEOUT each, then waits
    TIMEOUT for the answer: with TIMEOUT 10 and BREAKER_RESET 5 the slot freed itself after
    11 s while the trial could still be in flight until 40 s, and a second worker's call
    went out as a second trial."""
    from textflow_django.client import CONNECT_RETRIES

    clock, _store = shared
    timeout, reset = 10.0, 5
    longest = (CONNECT_RETRIES + 2) * timeout  # what a call may last: 40 s
    trial, other, *failing = (
        textflow_backend.new_breaker(URL, THRESHOLD, reset, timeout=timeout)
        for _ in range(2 + THRESHOLD)
    )
    for breaker in failing:
        assert breaker.allow() is None
        breaker.failure()
    clock.advance(reset)
    assert trial.allow() is None  # the trial, in flight: its connection attempts time out
    clock.advance(longest - 1)
    assert other.allow() is not None  # the trial may still be in flight: no second trial
    clock.advance(3)  # past the longest call and the second the slot adds
    assert other.allow() is None  # the trial's worker died: a new trial


def test_the_process_breaker_follows_the_timeout() -> None:
    """Its trial slot's time-to-live is sized from the timeout, so a breaker made for one
    TIMEOUT is not the one for another (the first was kept: the slot of a longer TIMEOUT
    freed itself too soon)."""
    textflow_backend.reset_breakers()
    short = textflow_backend.breaker_for(URL, THRESHOLD, 5, timeout=1.0)
    long = textflow_backend.breaker_for(URL, THRESHOLD, 5, timeout=10.0)
    assert short is not None and long is not None
    assert long.trial_ttl > 40 > short.trial_ttl
    assert textflow_backend.breaker_for(URL, THRESHOLD, 5, timeout=10.0) is long


# -- review findings: a call inside the caller's transaction -------------------------------


def breakers(n: int, **options: Any) -> list[Any]:
    """``n`` breakers over the store in force (as in ``n`` processes), each with one call
    at a time (so one thread can keep all ``n`` in flight at once)."""
    return [textflow_backend.new_breaker(URL, THRESHOLD, RESET, **options) for _ in range(n)]


class BrokenUnderTheBreaker(DatabaseStore):
    """The database store, each of whose statements for the breaker fails on the server (as
    a lock timeout does): in a transaction, one such error leaves it aborted on PostgreSQL.
    ``touched`` lists the primitives asked."""

    def __init__(self, clock: FakeClock) -> None:
        super().__init__(clock=clock)
        self.touched: list[str] = []

    def _fail(self, name: str) -> None:
        self.touched.append(name)
        with connection.cursor() as cursor:
            cursor.execute("SELECT * FROM textflow_no_such_table")

    def count(self, key: str) -> int:
        self._fail("count")
        return 0

    def incr(self, key: str, ttl: int) -> int:
        self._fail("incr")
        return 0

    def held(self, key: str) -> int | None:
        self._fail("held")
        return None

    def hold(self, key: str, seconds: int) -> None:
        self._fail("hold")

    def claim(self, key: str, ttl: int) -> int | None:
        self._fail("claim")
        return None

    def release(self, key: str) -> None:
        self._fail("release")


def test_inside_a_transaction_the_breaker_is_the_process_and_the_store_is_left_alone(
    monkeypatch: pytest.MonkeyPatch, events: list[tuple[str, Mapping[str, object]]]
) -> None:
    """Finding: inside the caller's transaction (ATOMIC_REQUESTS, an ``atomic()`` around a
    send), the breaker's statements joined it: a store error there (a lock timeout) left the
    caller's transaction aborted on PostgreSQL (its next query: InternalError), and the
    failures it counted went with a rollback. Now such a call keeps its breaker state in the
    process: the store is not asked at all (here every statement to it would fail), the
    caller's transaction goes on, and a rollback takes nothing from the breaker."""
    clock = FakeClock()
    store = BrokenUnderTheBreaker(clock)
    monkeypatch.setattr(ratelimit, "get_store", lambda: store)
    monkeypatch.setattr(
        textflow_backend, "CircuitBreaker", functools.partial(CircuitBreaker, clock=clock)
    )
    breaker = textflow_backend.new_breaker(URL, THRESHOLD, RESET)
    with transaction.atomic():
        OptOut.objects.create(phone_number=NUMBER, source="admin")  # the caller's work
        for _ in range(THRESHOLD):
            assert breaker.allow() is None
            breaker.failure()
        assert (breaker.scope, breaker.state) == ("process", "open")
        clock.advance(RESET)
        assert breaker.allow() is None  # the trial, the process's
        breaker.failure()
        assert breaker.allow() == RESET  # open again
        assert OptOut.objects.count() == 1  # the caller's transaction is usable
        transaction.set_rollback(True)  # the view raised
    assert store.touched == []
    assert [name for name, _fields in events if name == "textflow.store.failed"] == []
    assert OptOut.objects.count() == 0
    assert breaker.local.open_remaining(THRESHOLD) == RESET  # the rollback took nothing


@requires_postgres
def test_a_trial_taken_inside_a_transaction_holds_up_no_other_worker(
    monkeypatch: pytest.MonkeyPatch, events: list[tuple[str, Mapping[str, object]]]
) -> None:
    """Finding: a trial claimed inside a request's transaction held its row, uncommitted,
    until the request ended: every other worker's claim waited on it (here its lock timeout
    gives up at once, and the store failed under the breaker) instead of failing fast or
    trying. Now the request's call goes by its process's breaker, and the site's one trial
    is claimed, committed, by a worker in autocommit."""
    clock = FakeClock()
    store = DatabaseStore(clock=clock)
    monkeypatch.setattr(ratelimit, "get_store", lambda: store)
    state = StoreState(store, URL)
    for _ in range(THRESHOLD):  # opened long ago: half-open, the trial is due
        store.incr(state.failures_key, 86400)
    in_request, outside = ThreadPoolExecutor(1), ThreadPoolExecutor(1)
    a, b = breakers(2)
    request = transaction.atomic()

    def a_asks() -> int | None:
        request.__enter__()  # the request's transaction (ATOMIC_REQUESTS)
        return a.allow()  # type: ignore[no-any-return]

    def b_asks() -> int | None:
        with connection.cursor() as cursor:
            cursor.execute("SET lock_timeout = '100ms'")  # never wait on a row for long
        return b.allow()  # type: ignore[no-any-return]

    try:
        assert in_request.submit(a_asks).result() is None  # the process's breaker: closed
        assert outside.submit(b_asks).result() is None  # the trial, at once
        assert store.held(state.trial_key) is not None  # B's claim, committed
        assert [name for name, _fields in events if name == "textflow.store.failed"] == []
    finally:
        in_request.submit(lambda: request.__exit__(None, None, None)).result()
        for pool in (in_request, outside):
            pool.submit(lambda: connection.close()).result()
            pool.shutdown()


# -- review findings: a success clears what was counted while it was in flight ------------


def test_failures_interleaved_with_successes_do_not_open_it(
    shared: tuple[FakeClock, Any],
) -> None:
    """Finding: a burst of 20 calls all read a count of 0 before going out; 4 of them fail,
    each followed by successes. A success cleared the count only if its own read had found
    failures, so none of them did, and the 4 failures opened the breaker for the whole site
    (THRESHOLD 3) while TextFlow answered 16 calls of 20. A process's own breaker stays
    closed: each success clears the count."""
    workers = breakers(20)
    assert [breaker.allow() for breaker in workers] == [None] * 20  # all in flight
    for i, breaker in enumerate(workers):
        if i % 5 == 0:
            assert breaker.failure() is False
        else:
            breaker.success()
    assert [breaker.state for breaker in workers] == ["closed"] * 20
    assert breakers(1)[0].allow() is None


def test_a_success_in_flight_closes_a_breaker_that_opened_meanwhile(
    shared: tuple[FakeClock, Any],
) -> None:
    """Finding: a call that went out before the breaker opened and came back with an
    answer did not close it (its read had found no failure), nor said so: TextFlow had
    answered, and every worker went on failing fast for BREAKER_RESET."""
    slow, *others = breakers(THRESHOLD + 1)
    assert slow.allow() is None  # in flight
    for breaker in others:
        assert breaker.allow() is None
    assert [breaker.failure() for breaker in others] == [False] * (THRESHOLD - 1) + [True]
    assert breakers(1)[0].allow() is not None  # open for everyone
    assert slow.success() is True  # closed, and it says so (textflow.breaker.closed)
    assert [breaker.allow() for breaker in breakers(3)] == [None] * 3
    # Closed for good: the next opening opens it afresh, and is reported once.
    again = breakers(THRESHOLD)
    for breaker in again:
        assert breaker.allow() is None
    assert [breaker.failure() for breaker in again] == [False] * (THRESHOLD - 1) + [True]


# -- review findings: who reports the opening ----------------------------------------------


class ReadAfter:
    """The store in force, its ``incr`` answering the count as read after the write (MySQL's
    ``UPDATE`` then ``SELECT``; a cache whose ``incr`` is not atomic): ``between`` runs
    between the two, as another worker's failures do."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self.between: list[Callable[[], object]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)

    def incr(self, key: str, ttl: int) -> int:
        self.store.incr(key, ttl)
        while self.between:
            self.between.pop(0)()
        return int(self.store.count(key))


@pytest.mark.parametrize(
    ("before", "racing"),
    [(1, 1), (1, 2)],
    ids=["two-answer-the-threshold", "none-answers-the-threshold"],
)
def test_the_opening_is_reported_once_when_incr_reads_after_writing(
    shared: tuple[FakeClock, Any], before: int, racing: int
) -> None:
    """Finding: the failure whose ``incr`` answered exactly THRESHOLD reported the opening.
    Where ``incr`` reads the count after writing it, racing failures answer the same count:
    two failures both answered 3 (reported twice), or three answered 4 (never reported).
    The report now follows the open key's claim, which one failure wins."""
    _clock, store = shared
    proxy = ReadAfter(store)
    workers = [
        CircuitBreaker(THRESHOLD, RESET, shared=lambda: StoreState(proxy, URL))
        for _ in range(before + 1 + racing)
    ]
    for breaker in workers:
        assert breaker.allow() is None
    opened = [workers[i].failure() for i in range(before)]
    first, *others = workers[before:]
    for breaker in others:  # they count while the first one's incr is between its steps
        proxy.between.append(functools.partial(lambda b: opened.append(b.failure()), breaker))
    opened.append(first.failure())
    assert sorted(opened) == [False] * (before + racing) + [True]
    assert workers[0].state == "open"
