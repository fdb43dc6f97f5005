"""What the client tells operators about each call to TextFlow: one ``textflow.api.call``
event per call (its operation, outcome and seconds; what metrics count), and a
``textflow.api.failed`` warning for every call that did not succeed.

Neither carries TextFlow's message: a server may quote the number, a code or the key in it,
and this layer has no masking (the services mask what they log). The error's class says
what happened (:data:`OUTCOMES`), its HTTP status and ``maybe_sent`` the rest.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Mapping
from typing import Any, Final, TypeVar

from .._errors import (
    InsufficientBalance,
    InvalidAPIKey,
    TextFlowAPIError,
    TextFlowBadResponse,
    TextFlowCircuitOpen,
    TextFlowError,
    TextFlowRateLimited,
    TextFlowRejectedNumber,
    TextFlowServerError,
    TextFlowTimeout,
    TextFlowUnavailable,
)
from .._events import emit

__all__ = ["OUTCOMES", "operation_of", "outcome_of", "reported"]

#: The outcome class of a failed call, by the most specific error class it is an instance
#: of. A call that returned is ``"ok"``; an error that is no ``TextFlowError`` (arguments
#: the client could not send) is ``"error"``.
OUTCOMES: Final[Mapping[type[BaseException], str]] = {
    TextFlowRejectedNumber: "rejected",
    InvalidAPIKey: "invalid_key",
    InsufficientBalance: "insufficient_balance",
    TextFlowRateLimited: "rate_limited",
    TextFlowAPIError: "refused",
    TextFlowCircuitOpen: "circuit_open",
    TextFlowTimeout: "timeout",
    TextFlowServerError: "server_error",
    TextFlowBadResponse: "bad_response",
    TextFlowUnavailable: "unavailable",
    TextFlowError: "error",
}

_Call = TypeVar("_Call", bound=Callable[..., Any])


def operation_of(path: str) -> str:
    """The operation a path calls: ``"/send-code"`` -> ``"send_code"``."""
    return path.strip("/").replace("-", "_").replace("/", "_") or "root"


def outcome_of(error: BaseException | None) -> str:
    """The outcome class of a call that raised ``error`` (``None``: it returned)."""
    if error is None:
        return "ok"
    for cls in type(error).__mro__:
        if cls in OUTCOMES:
            return OUTCOMES[cls]
    return "error"


def reported(call: _Call) -> _Call:
    """Decorate the client's ``_call(self, method, path, payload)`` so that every call is
    reported: ``textflow.api.call operation=send_code outcome=ok seconds=0.123``, and for a
    failure also ``textflow.api.failed`` with the error's class, status and ``maybe_sent``.
    An interruption (``KeyboardInterrupt``, a worker's timeout) is not a call's outcome and
    is not reported."""

    @functools.wraps(call)
    def report(self: Any, method: str, path: str, *args: Any, **kwargs: Any) -> Any:
        started = time.monotonic()
        try:
            result = call(self, method, path, *args, **kwargs)
        except Exception as err:
            _emit(path, err, time.monotonic() - started)
            raise
        _emit(path, None, time.monotonic() - started)
        return result

    return report  # type: ignore[return-value]


def _emit(path: str, error: Exception | None, seconds: float) -> None:
    operation, outcome = operation_of(path), outcome_of(error)
    emit("textflow.api.call", operation=operation, outcome=outcome, seconds=seconds)
    if error is not None:
        emit(
            "textflow.api.failed",
            operation=operation,
            outcome=outcome,
            error=type(error).__name__,
            status=getattr(error, "status", None),
            maybe_sent=getattr(error, "maybe_sent", None),
        )
