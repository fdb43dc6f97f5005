"""A circuit breaker for calls to TextFlow (no Django: the client uses it on its own).

When TextFlow is down, every request would otherwise wait for the full timeout, tying up a
worker each. After ``threshold`` consecutive failures the breaker *opens*: calls fail at once
for ``reset_after`` seconds. Then it lets one trial call through (*half-open*); its success
closes the breaker, its failure opens it again. State is per process.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable

__all__ = ["CircuitBreaker"]


class CircuitBreaker:
    """Thread-safe breaker. ``allow()`` before a call; ``success()``/``failure()`` after."""

    def __init__(
        self,
        threshold: int,
        reset_after: float,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if threshold < 1 or reset_after <= 0:
            raise ValueError("threshold must be >= 1 and reset_after > 0")
        self.threshold = threshold
        self.reset_after = reset_after
        self._clock = clock
        self._lock = threading.Lock()
        self._failures = 0
        self._opened_at: float | None = None
        self._trial_in_flight = False

    @property
    def state(self) -> str:
        """``"closed"``, ``"open"`` or ``"half-open"``."""
        with self._lock:
            if self._opened_at is None:
                return "closed"
            if self._clock() - self._opened_at < self.reset_after:
                return "open"
            return "half-open"

    def allow(self) -> int | None:
        """None when the call may go ahead, else the whole seconds until a retry may."""
        with self._lock:
            if self._opened_at is None:
                return None
            waited = self._clock() - self._opened_at
            if waited >= self.reset_after and not self._trial_in_flight:
                self._trial_in_flight = True  # exactly one trial call at a time
                return None
            return max(1, math.ceil(self.reset_after - waited))

    def success(self) -> None:
        """The call reached a working TextFlow (an answer, even a refusal, counts)."""
        with self._lock:
            self._failures = 0
            self._opened_at = None
            self._trial_in_flight = False

    def release(self) -> None:
        """The call ended without telling anything about TextFlow (interrupted): free the
        trial slot, change nothing else."""
        with self._lock:
            self._trial_in_flight = False

    def failure(self) -> bool:
        """TextFlow was unreachable or broken. Returns True if this failure opened it."""
        with self._lock:
            self._failures += 1
            was_open = self._opened_at is not None
            if self._trial_in_flight or self._failures >= self.threshold:
                self._opened_at = self._clock()
                self._trial_in_flight = False
                return not was_open
            return False
