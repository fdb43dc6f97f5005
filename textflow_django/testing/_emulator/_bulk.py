"""Bulk delivery: the recipients of accepted bulk jobs, reached at a steady rate.

TextFlow works through a bulk job in the background and ``/bulk-count`` says how many
recipients still wait. The emulator delivers ``rate`` recipients per second of its own clock
(the one ``advance_clock()`` moves), computed when the count is read: no thread runs, and a
test that moves the clock knows exactly how many were reached. ``rate`` 0 delivers nothing by
itself (only ``deliver_bulk()`` does).
"""

from __future__ import annotations

import math
from typing import Final

__all__ = ["BulkDrain", "check_rate"]

# A rate times an elapsed time that should be a whole number may land a hair below it.
_EPSILON: Final = 1e-9


def check_rate(rate: float) -> float:
    """``rate`` as a float, or ``ValueError`` unless it is a finite number >= 0."""
    if isinstance(rate, bool) or not isinstance(rate, int | float):
        raise ValueError("bulk_rate must be a number of recipients per second")
    if not math.isfinite(rate) or rate < 0:
        raise ValueError("bulk_rate must be a finite number >= 0")
    return float(rate)


class BulkDrain:
    """Pending bulk recipients, delivered at ``rate`` per second of the clock passed in.

    Every method takes ``now``, the emulator's clock in seconds, and first delivers what the
    time since the last call allows. Progress between whole recipients is carried over, so
    reading often does not slow delivery down; nothing is banked while nothing is pending.
    Not locked itself: the emulator's lock guards every call.
    """

    __slots__ = ("_carry", "_pending", "_since", "rate")

    def __init__(self, rate: float) -> None:
        self.rate = check_rate(rate)
        self._pending = 0
        self._since = 0.0
        self._carry = 0.0

    def pending(self, now: float) -> int:
        """Recipients not yet reached at ``now``."""
        self._drain(now)
        return self._pending

    def add(self, count: int, now: float) -> None:
        """A job of ``count`` recipients was accepted at ``now``."""
        self._drain(now)
        self._pending += count

    def deliver(self, n: int | None, now: float) -> None:
        """Reach ``n`` more recipients at once (``None``: all); clamps at zero."""
        self._drain(now)
        self._pending = 0 if n is None else max(0, self._pending - n)

    def set_rate(self, rate: float, now: float) -> None:
        """Deliver at ``rate`` from ``now`` on (what was due at the old rate is delivered)."""
        rate = check_rate(rate)
        self._drain(now)
        self.rate = rate

    def clear(self, now: float) -> None:
        """Forget every pending recipient."""
        self._pending = 0
        self._drain(now)

    def _drain(self, now: float) -> None:
        elapsed = max(0.0, now - self._since)
        # Set even when the clock went back (reset()), so delivery never stalls waiting for it.
        self._since = now
        if self._pending == 0 or self.rate == 0:
            self._carry = 0.0
            return
        due = self._carry + elapsed * self.rate
        reached = int(due + _EPSILON)
        if reached >= self._pending:
            self._pending = 0
            self._carry = 0.0
        else:
            self._pending -= reached
            self._carry = max(0.0, due - reached)
