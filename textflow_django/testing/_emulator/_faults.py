"""Fault injection: what a fault is, how it is checked and queued, and how each kind misbehaves.

A test queues faults with :meth:`TextFlowEmulator.fault` (whose docstring describes every
kind); the emulator takes the first queued fault matching each API request's path
(:class:`FaultQueue`) and, instead of or on top of the real answer, acts it out on the
connection (:func:`misbehave`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import ClassVar, Final

from ._api import is_int, normalize_path
from ._http import Handler
from ._responses import JSON_TYPE, Response, error, for_path, phrase

__all__ = ["Fault", "FaultQueue", "make_fault", "misbehave"]

_MALFORMED_BODY: Final = b'{"ok": true, "status": 20'


@dataclass(frozen=True, slots=True)
class Fault:
    """A queued misbehaviour; see :meth:`TextFlowEmulator.fault` for what each kind does.

    ``times`` is the number of matching requests still to be faulted when read back from
    :attr:`TextFlowEmulator.pending_faults`.
    """

    STATUS: ClassVar[str] = "status"
    RATE_LIMIT: ClassVar[str] = "rate_limit"
    HTML: ClassVar[str] = "html"
    EMPTY: ClassVar[str] = "empty"
    MALFORMED: ClassVar[str] = "malformed"
    DELAY: ClassVar[str] = "delay"
    RESET: ClassVar[str] = "reset"
    TRICKLE: ClassVar[str] = "trickle"
    RESPOND: ClassVar[str] = "respond"
    KINDS: ClassVar[frozenset[str]] = frozenset(
        {
            "status",
            "rate_limit",
            "html",
            "empty",
            "malformed",
            "delay",
            "reset",
            "trickle",
            "respond",
        }
    )

    kind: str
    path: str | None = None
    times: int = 1
    status: int | None = None
    retry_after: int | str | None = None
    delay: float | None = None
    body: bytes | None = None
    content_type: str | None = None


def make_fault(
    kind: str,
    *,
    path: str | None,
    times: int,
    status: int | None,
    retry_after: int | str | None,
    delay: float | None,
    body: str | bytes | None,
    content_type: str | None,
) -> Fault:
    """Check the arguments of :meth:`TextFlowEmulator.fault` and build the :class:`Fault`.

    ``path`` is normalised (``"/api/send-sms/"`` -> ``"/send-sms"``), ``delay`` made a float
    and a str ``body`` UTF-8 encoded. Raises ``ValueError`` for an unknown kind or bad values.
    """
    if kind not in Fault.KINDS:
        raise ValueError(f"unknown fault kind {kind!r}; expected one of {sorted(Fault.KINDS)}")
    if not is_int(times) or times < 1:
        raise ValueError("times must be an int >= 1")
    if status is not None and (not is_int(status) or not 100 <= status <= 599):
        raise ValueError("status must be an int between 100 and 599")
    if isinstance(retry_after, str):
        # Printable ASCII only: a CR or LF would let a test inject headers by accident.
        if not retry_after or not all(" " <= c <= "~" for c in retry_after):
            raise ValueError("a retry_after str must be non-empty printable ASCII")
    elif retry_after is not None and (not is_int(retry_after) or retry_after < 0):
        raise ValueError("retry_after must be a non-negative int or a header value str")
    if delay is not None and (
        isinstance(delay, bool) or not isinstance(delay, int | float) or delay < 0
    ):
        raise ValueError("delay must be a non-negative number")
    if kind == Fault.RESPOND:
        if body is None:
            raise ValueError("a 'respond' fault needs a body")
    elif body is not None or content_type is not None:
        raise ValueError("body and content_type are only for the 'respond' fault")
    if body is not None and not isinstance(body, str | bytes):
        raise ValueError("body must be str or bytes")
    if content_type is not None and (
        not isinstance(content_type, str) or "\r" in content_type or "\n" in content_type
    ):
        raise ValueError("content_type must be a one-line str")
    if path is not None and not isinstance(path, str):
        raise ValueError("path must be a str such as '/send-sms'")
    return Fault(
        kind=kind,
        path=None if path is None else normalize_path(path),
        times=times,
        status=status,
        retry_after=retry_after,
        delay=None if delay is None else float(delay),
        body=body.encode() if isinstance(body, str) else body,
        content_type=content_type,
    )


class _QueuedFault:
    """A :class:`Fault` plus how many more requests it applies to."""

    __slots__ = ("fault", "remaining")

    def __init__(self, fault: Fault) -> None:
        self.fault = fault
        self.remaining = fault.times


class FaultQueue:
    """Queued faults in FIFO order, each applying to the requests its ``path`` matches.

    Not locked itself: the emulator's lock guards every call.
    """

    __slots__ = ("_queued",)

    def __init__(self) -> None:
        self._queued: list[_QueuedFault] = []

    def add(self, fault: Fault) -> None:
        """Queue ``fault`` behind the others, for its ``times`` next matching requests."""
        self._queued.append(_QueuedFault(fault))

    def take(self, path: str) -> Fault | None:
        """The first queued fault for ``path`` (or for any path), used up once more."""
        for index, queued in enumerate(self._queued):
            if queued.fault.path is None or queued.fault.path == path:
                queued.remaining -= 1
                if queued.remaining <= 0:
                    del self._queued[index]
                return queued.fault
        return None

    def pending(self) -> list[Fault]:
        """The queued faults in order, ``times`` being what is left of each."""
        return [replace(q.fault, times=q.remaining) for q in self._queued]

    def remaining(self) -> int:
        """How many requests the queued faults will still fault, in all."""
        return sum(q.remaining for q in self._queued)

    def clear(self) -> None:
        """Drop every queued fault."""
        self._queued = []


def misbehave(handler: Handler, fault: Fault, respond: Callable[[], Response], path: str) -> None:
    """Answer the request to ``path`` on ``handler``'s connection as ``fault`` says.

    ``respond`` processes the request for real (the SMS goes out); only ``delay`` and
    ``trickle`` call it. The other kinds replace the answer, after sleeping ``fault.delay``
    if given. The TextFlow errors a fault makes up (``status``, ``rate_limit``) take the
    endpoint's shape (:func:`for_path`); a ``respond`` fault's body is sent exactly.
    """
    kind = fault.kind
    if kind == Fault.DELAY:
        response = respond()
        time.sleep(5.0 if fault.delay is None else fault.delay)
        handler.write_response(response)
    elif kind == Fault.TRICKLE:
        response = respond()
        handler.trickle_response(response, 0.05 if fault.delay is None else fault.delay)
    else:
        if fault.delay:
            time.sleep(fault.delay)
        if kind == Fault.RESET:
            handler.reset_connection()
        else:
            response = _fault_response(fault)
            if kind in (Fault.STATUS, Fault.RATE_LIMIT):
                response = for_path(path, response)
            handler.write_response(response)


def _fault_response(fault: Fault) -> Response:
    """The answer for a fault kind that replaces the real response."""
    kind = fault.kind
    if kind == Fault.RATE_LIMIT:
        status = fault.status or 429
        retry = str(1 if fault.retry_after is None else fault.retry_after)
        return error(status, "Too many requests", (("Retry-After", retry),))
    if kind == Fault.STATUS:
        status = fault.status or 500
        message = "Too many requests" if status == 429 else "Internal server error"
        extra = () if fault.retry_after is None else (("Retry-After", str(fault.retry_after)),)
        return error(status, message, extra)
    if kind == Fault.HTML:
        status = fault.status or 502
        page = f"<html><body><h1>{status} {phrase(status)}</h1></body></html>"
        return Response(status, page.encode(), "text/html")
    if kind == Fault.EMPTY:
        return Response(fault.status or 200, b"")
    if kind == Fault.RESPOND:
        return Response(fault.status or 200, fault.body or b"", fault.content_type or JSON_TYPE)
    # malformed
    return Response(fault.status or 200, _MALFORMED_BODY)
