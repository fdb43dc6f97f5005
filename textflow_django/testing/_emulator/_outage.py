"""Outages: the whole API misbehaving until told otherwise (the demo's "TextFlow is down" switch).

A queued :class:`~._faults.Fault` spends itself on the next matching requests; an outage
applies to *every* API request until it is lifted (``outage(None)``, ``reset()``, ``stop()``)
or its ``duration`` runs out. While one is on, queued faults wait: they are neither applied
nor used up. Control requests are never affected. The modes:

- ``"down"``: nothing listens on the port any more, so every connection is refused and open
  ones are dropped: what a stopped TextFlow looks like, and the one failure a client can know
  sent nothing. The control endpoints share the port, so they are unreachable too until the
  outage ends: over HTTP it must be given a ``duration`` (Python callers may lift it).
- ``"slow"``: each request is processed at once (the SMS goes out) and answered after
  ``delay`` seconds (default 15: past textflow_django's default ``TIMEOUT`` of 10 s, and the
  demo's 5 s, so the client gives up first while the code still arrives).
- ``"error"``: each request is answered ``status`` (default 500, any 5xx) with TextFlow's JSON
  error body, and not processed.
- ``"rate_limited"``: each request is answered 429 with ``Retry-After: retry_after`` (default
  10 seconds) and TextFlow's JSON error body, and not processed.

Every mode but ``"down"`` is acted out as a fault kind (``delay``, ``status``, ``rate_limit``),
which is what a request it hits is recorded with; a request that reaches a ``"down"``
emulator anyway (on a connection opened for a control request) is dropped as ``reset``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final

from ._api import is_int
from ._faults import Fault

__all__ = ["DOWN", "MODES", "Outage", "make_outage"]

DOWN: Final = "down"
SLOW: Final = "slow"
ERROR: Final = "error"
RATE_LIMITED: Final = "rate_limited"
MODES: Final = (DOWN, SLOW, ERROR, RATE_LIMITED)

_DEFAULT_DELAY: Final = 15.0
_DEFAULT_STATUS: Final = 500
_DEFAULT_RETRY_AFTER: Final = 10


@dataclass(frozen=True, slots=True)
class Outage:
    """An outage in force: its ``mode``, the one option that mode takes (the others are
    ``None``), its ``duration`` in seconds (``None``: until lifted) and the fault it acts out."""

    mode: str
    delay: float | None = None
    status: int | None = None
    retry_after: int | None = None
    duration: float | None = None
    fault: Fault = field(default=Fault(Fault.RESET), compare=False)

    def describe(self, ends_in: float | None) -> dict[str, Any]:
        """What ``/_emulator/state`` and ``/_emulator/outage`` show: the mode, its option
        (``delay``, ``status`` or ``retry_after``, only for its mode) and ``ends_in``, the
        seconds left or ``None`` when it lasts until lifted."""
        shown: dict[str, Any] = {"mode": self.mode}
        if self.mode == SLOW:
            shown["delay"] = self.delay
        elif self.mode == ERROR:
            shown["status"] = self.status
        elif self.mode == RATE_LIMITED:
            shown["retry_after"] = self.retry_after
        shown["ends_in"] = None if ends_in is None else round(max(0.0, ends_in), 3)
        return shown


def _number(value: object) -> bool:
    return not isinstance(value, bool) and isinstance(value, int | float)


def make_outage(
    mode: str | None,
    *,
    delay: float | None,
    status: int | None,
    retry_after: int | None,
    duration: float | None,
) -> Outage | None:
    """Check the arguments of :meth:`TextFlowEmulator.outage` and build the :class:`Outage`
    (``None`` for ``mode=None``, which lifts the outage and takes no option).

    Each option belongs to one mode (``delay`` to ``"slow"``, ``status`` to ``"error"``,
    ``retry_after`` to ``"rate_limited"``); ``duration`` to any. Raises ``ValueError`` for an
    unknown mode, an option given to another mode, or a bad value.
    """
    if mode is None:
        if any(v is not None for v in (delay, status, retry_after, duration)):
            raise ValueError("lifting the outage (mode None) takes no options")
        return None
    if mode not in MODES:
        raise ValueError(f"unknown outage mode {mode!r}; expected one of {list(MODES)} or None")
    for name, value, owner in (
        ("delay", delay, SLOW),
        ("status", status, ERROR),
        ("retry_after", retry_after, RATE_LIMITED),
    ):
        if value is not None and mode != owner:
            raise ValueError(f"{name} is only for the {owner!r} outage")
    if duration is not None and (not _number(duration) or not duration > 0):
        raise ValueError("duration must be a positive number of seconds")
    duration = None if duration is None else float(duration)
    if mode == SLOW:
        if delay is not None and (not _number(delay) or delay < 0):
            raise ValueError("delay must be a non-negative number of seconds")
        seconds = _DEFAULT_DELAY if delay is None else float(delay)
        return Outage(
            mode, delay=seconds, duration=duration, fault=Fault(Fault.DELAY, delay=seconds)
        )
    if mode == ERROR:
        if status is not None and (not is_int(status) or not 500 <= status <= 599):
            raise ValueError("status must be an int between 500 and 599")
        code = _DEFAULT_STATUS if status is None else status
        return Outage(mode, status=code, duration=duration, fault=Fault(Fault.STATUS, status=code))
    if mode == RATE_LIMITED:
        if retry_after is not None and (not is_int(retry_after) or retry_after < 0):
            raise ValueError("retry_after must be a non-negative int (seconds)")
        wait = _DEFAULT_RETRY_AFTER if retry_after is None else retry_after
        return Outage(
            mode,
            retry_after=wait,
            duration=duration,
            fault=Fault(Fault.RATE_LIMIT, retry_after=wait),
        )
    return Outage(DOWN, duration=duration)
