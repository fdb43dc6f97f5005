"""A circuit breaker for calls to TextFlow (no Django: the client uses it on its own).

When TextFlow is down, every request would otherwise wait for the full timeout, tying up a
worker each. After ``threshold`` consecutive failures the breaker *opens*: calls fail at once
for ``reset_after`` seconds. Then it lets one trial call through (*half-open*); its success
closes the breaker, its failure opens it again.

Where the state lives (a :class:`BreakerState`):

- :class:`ProcessState`, in this process's memory: each worker process has its own breaker,
  and learns of an outage from its own ``threshold`` failures.
- :class:`StoreState`, in a store every worker shares (the rate-limit store: the database or
  a shared cache), through the store primitives ``incr``/``count``, ``hold``/``held``,
  ``claim`` and ``release``: failures seen by any workers add up and open it for all,
  every worker fails fast until the deadline, exactly one trial call among all of them goes
  through after it (an atomic claim), and that trial's success closes it for all. Its
  times are the store's (whole seconds: ``reset_after`` is rounded up).

In both, a success clears the count of failures in a row, whatever its call read before
it went out (and so closes a breaker that opened while the call was in flight: TextFlow
answered).

A :class:`CircuitBreaker` always has a per-process state; given ``shared`` (a callable that
answers the shared state in force, or None for none) it keeps its state there instead. A
shared state that raises (the store is down) is never a reason to fail a call: the breaker
falls back to its per-process state for that call and reports the error to
``on_shared_error``.
"""

from __future__ import annotations

import hashlib
import math
import threading
import time
from collections.abc import Callable
from typing import Protocol, TypeVar

__all__ = ["BreakerState", "CircuitBreaker", "ProcessState", "StoreState"]

_T = TypeVar("_T")


class BreakerState(Protocol):
    """What a breaker remembers: consecutive failures, when it opened, the trial slot.

    Each method is atomic on its own (a lock, or the store's atomic primitives)."""

    def open_remaining(self, threshold: int) -> float | None:
        """None while closed; else the seconds it stays open (0 or less: half-open, a trial
        call may be claimed)."""

    def claim_trial(self, ttl: float) -> bool:
        """Take the one trial slot (held at most ``ttl`` seconds, should its holder never
        report); False when another call holds it."""

    def release_trial(self) -> None:
        """Free the trial slot, changing nothing else (the trial was interrupted)."""

    def record_failure(self, threshold: int, reset_after: float, *, trial: bool) -> bool:
        """Count one failure; open (again) for ``reset_after`` seconds when the count
        reaches ``threshold`` or the failed call was the trial (``trial``), freeing its
        slot. True only when this failure opened a closed breaker."""

    def reset(self, threshold: int, *, trial: bool) -> bool:
        """A call succeeded (``trial``: it was the trial): no failures in a row any more,
        whatever was counted while it was in flight. True when this closed an open or
        half-open breaker (``threshold`` failures were counted)."""


class ProcessState:
    """The state in this process's memory (thread-safe). Any success closes the breaker;
    a failure while a trial is in flight reopens it."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._failures = 0
        self._opened_at: float | None = None
        self._reset_after = 0.0
        self._trial_in_flight = False

    def open_remaining(self, threshold: int) -> float | None:
        with self._lock:
            if self._opened_at is None:
                return None
            return self._reset_after - (self._clock() - self._opened_at)

    def claim_trial(self, ttl: float) -> bool:
        with self._lock:
            if self._trial_in_flight:  # exactly one trial call at a time
                return False
            self._trial_in_flight = True
            return True

    def release_trial(self) -> None:
        with self._lock:
            self._trial_in_flight = False

    def record_failure(self, threshold: int, reset_after: float, *, trial: bool) -> bool:
        with self._lock:
            self._failures += 1
            was_open = self._opened_at is not None
            if trial or self._trial_in_flight or self._failures >= threshold:
                self._opened_at = self._clock()
                self._reset_after = reset_after
                self._trial_in_flight = False
                return not was_open
            return False

    def reset(self, threshold: int, *, trial: bool) -> bool:
        with self._lock:
            was_open = self._opened_at is not None
            self._failures = 0
            self._opened_at = None
            self._trial_in_flight = False
            return was_open


class _Store(Protocol):
    """The store primitives :class:`StoreState` uses (``textflow_django.ratelimit``'s
    contract; named here so this module needs no Django)."""

    def claim(self, key: str, ttl: int) -> int | None: ...

    def release(self, key: str) -> None: ...

    def hold(self, key: str, seconds: int) -> None: ...

    def held(self, key: str) -> int | None: ...

    def incr(self, key: str, ttl: int) -> int: ...

    def count(self, key: str) -> int: ...


#: How long a shared failure count is kept after its last failure (a count only ever falls
#: back to 0 by a success: after a day with no call at all, it is forgotten).
FAILURES_KEPT_FOR = 86400


class StoreState:
    """The state in a shared store, under keys made from ``name`` (TextFlow's base URL,
    hashed: one breaker per TextFlow, whatever else differs between the workers).

    Three keys: ``breaker:<hash>:failures``, the consecutive failures (``incr``; the breaker
    is closed while it is below the threshold); ``breaker:<hash>:open``, held from the
    (re)opening for ``reset_after`` seconds (whole seconds, rounded up); and
    ``breaker:<hash>:trial``, the trial slot (``claim``, atomic: one winner among every
    worker). Closing is deleting the failure count (and the open key).

    A success reads the failure count *after* its call, and clears it when it finds any.
    The count its ``allow`` read before the call cannot decide: failures of other calls
    (other workers', other processes') may be counted while it is in flight, and a success
    that skipped its clear for having read 0 left them standing. In a burst every call
    reads 0, so interleaved failures among successes added up to the threshold and opened
    the breaker while TextFlow answered nearly every call; and a breaker that opened while
    a success was in flight stayed open. No view a process has of its own (the count it
    read, the failures it saw) tells it about another process's failures, so no success
    can skip the store and still clear them: the read after the call is the cheapest way
    to know (a ``SELECT``/``GET`` by key; the ``DELETE`` only follows when it finds
    failures).

    Which failure opened it: the one whose claim of the open key found it free (``claim``
    is atomic in every shared store), not the one whose ``incr`` answered exactly the
    threshold: where ``incr`` reads the count after its write (MySQL, a cache whose
    ``incr`` is not atomic), concurrent failures may answer the same count, so the
    threshold would be seen twice, or skipped. A non-trial failure that finds the breaker
    half-open (its call began before it opened and failed after its deadline) claims the
    open key afresh, so it reopens it and reports the opening too.

    Costs: while closed, a call reads the failure count twice (before the call, and after
    it when it succeeds), and writes nothing unless a failure was counted; a failure counts
    itself (one write), and one at or past the threshold also claims the open key; while
    tripped, a call also reads the open key.
    """

    def __init__(self, store: _Store, name: str) -> None:
        self.store = store
        digest = hashlib.sha256(name.encode()).hexdigest()[:16]
        self.failures_key = f"breaker:{digest}:failures"
        self.open_key = f"breaker:{digest}:open"
        self.trial_key = f"breaker:{digest}:trial"

    def open_remaining(self, threshold: int) -> float | None:
        if self.store.count(self.failures_key) < threshold:
            return None
        return float(self.store.held(self.open_key) or 0)  # not held: the deadline passed

    def claim_trial(self, ttl: float) -> bool:
        return self.store.claim(self.trial_key, max(1, math.ceil(ttl))) is None

    def release_trial(self) -> None:
        self.store.release(self.trial_key)

    def record_failure(self, threshold: int, reset_after: float, *, trial: bool) -> bool:
        count = self.store.incr(self.failures_key, FAILURES_KEPT_FOR)
        seconds = max(1, math.ceil(reset_after))
        if trial:
            # The trial failed: open again (it was open: no opening to report), then free
            # the slot. Below the threshold, another call's success closed the breaker while
            # the trial was in flight: this is one failure of a closed breaker.
            if count >= threshold:
                self.store.hold(self.open_key, seconds)
            self.store.release(self.trial_key)
            return False
        if count < threshold:
            return False
        if self.store.claim(self.open_key, seconds) is None:
            return True  # the open key was free: this failure opened it
        # Already open: a failure of a call that was in flight pushes the deadline back, as
        # the per-process breaker does.
        self.store.hold(self.open_key, seconds)
        return False

    def reset(self, threshold: int, *, trial: bool) -> bool:
        if trial:
            self.clear()
            return True
        failures = self.store.count(self.failures_key)  # after the call: see the class doc
        if failures == 0:
            return False
        self.store.release(self.failures_key)
        if failures < threshold:
            return False
        # It opened while this call was in flight: closed now. The open key goes too, so
        # that the next opening's claim of it finds it free (and reports). A trial in
        # flight keeps its slot and reports to it.
        self.store.release(self.open_key)
        return True

    def clear(self) -> None:
        """Forget everything, as if the breaker had never seen a call."""
        for key in (self.failures_key, self.open_key, self.trial_key):
            self.store.release(key)


class _Call(threading.local):
    """What ``allow`` decided for this thread's call in flight."""

    #: The state that answered ``allow`` (None: none yet, use the one in force).
    state: BreakerState | None = None
    #: Whether the call is the trial.
    trial: bool = False


class CircuitBreaker:
    """Thread-safe breaker. ``allow()`` before a call; ``success()``/``failure()`` after
    (or ``release()`` when the call was interrupted), on the same thread.

    Args:
        threshold: consecutive failures that open it (at least 1).
        reset_after: seconds it stays open before a trial call (more than 0).
        clock: the per-process state's clock (a shared state reads its store's).
        shared: answers the shared state in force, or None to keep it in this process;
            asked before each call.
        on_shared_error: told of an error the shared state (or ``shared``) raised; the
            call then goes on with the per-process state.
        trial_ttl: the longest a shared trial slot stays taken should its call never report
            (its worker killed): longer than a call may last, retries included (else a
            second trial goes out while the first is still in flight). ``reset_after`` by
            default.
    """

    def __init__(
        self,
        threshold: int,
        reset_after: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        shared: Callable[[], BreakerState | None] | None = None,
        on_shared_error: Callable[[BaseException], None] | None = None,
        trial_ttl: float | None = None,
    ) -> None:
        if threshold < 1 or reset_after <= 0:
            raise ValueError("threshold must be >= 1 and reset_after > 0")
        self.threshold = threshold
        self.reset_after = reset_after
        self.trial_ttl = reset_after if trial_ttl is None else trial_ttl
        self.local = ProcessState(clock)
        self._shared = shared
        self._on_shared_error = on_shared_error
        self._call = _Call()

    @property
    def scope(self) -> str:
        """``"shared"`` when the state in force is a shared one, else ``"process"``."""
        return "process" if self._in_force() is self.local else "shared"

    @property
    def state(self) -> str:
        """``"closed"``, ``"open"`` or ``"half-open"``."""
        remaining = self._with(self._in_force(), lambda state: state.open_remaining(self.threshold))
        if remaining is None:
            return "closed"
        return "open" if remaining > 0 else "half-open"

    def allow(self) -> int | None:
        """None when the call may go ahead, else the whole seconds until a retry may."""
        state = self._in_force()
        try:
            return self._allow(state)
        except Exception as err:  # the store: this call goes by the process's state
            if state is self.local:
                raise
            self._shared_failed(err)
            return self._allow(self.local)

    def _allow(self, state: BreakerState) -> int | None:
        self._call.state, self._call.trial = state, False
        remaining = state.open_remaining(self.threshold)
        if remaining is None:
            return None
        if remaining <= 0 and state.claim_trial(self.trial_ttl):
            self._call.trial = True
            return None
        self._call.state = None  # not tried: no outcome to report
        return max(1, math.ceil(remaining))

    def success(self) -> bool:
        """The call reached a working TextFlow (an answer, even a refusal, counts). True
        when this closed the breaker."""
        return self._report(lambda state, trial: state.reset(self.threshold, trial=trial))

    def release(self) -> None:
        """The call ended without telling anything about TextFlow (interrupted): free the
        trial slot if it held it, change nothing else."""

        def release(state: BreakerState, trial: bool) -> None:
            if trial or state is self.local:
                state.release_trial()

        self._report(release)

    def failure(self) -> bool:
        """TextFlow was unreachable or broken. Returns True if this failure opened it."""
        return self._report(
            lambda state, trial: state.record_failure(self.threshold, self.reset_after, trial=trial)
        )

    def _report(self, outcome: Callable[[BreakerState, bool], _T]) -> _T:
        """``outcome`` on the state that allowed this thread's call (the one in force when
        ``allow`` was not called), then forget the call."""
        state, trial = self._call.state or self._in_force(), self._call.trial
        self._call.state, self._call.trial = None, False
        return self._with(state, lambda s: outcome(s, trial if s is state else False))

    def _with(self, state: BreakerState, operation: Callable[[BreakerState], _T]) -> _T:
        """``operation`` on ``state``; on the per-process state if a shared one raises."""
        if state is self.local:
            return operation(state)
        try:
            return operation(state)
        except Exception as err:
            self._shared_failed(err)
            return operation(self.local)

    def _in_force(self) -> BreakerState:
        if self._shared is None:
            return self.local
        try:
            return self._shared() or self.local
        except Exception as err:
            self._shared_failed(err)
            return self.local

    def _shared_failed(self, err: BaseException) -> None:
        if self._on_shared_error is not None:
            self._on_shared_error(err)
