"""Test backend: keeps every SMS in ``outbox``, like ``django.core.mail.outbox``.

    from textflow_django.backends import locmem
    assert locmem.outbox[0].phone_number == "+12025550143"
    locmem.outbox[0].code            # the code of a verification SMS

The outbox is emptied before each test: by the pytest plugin's autouse fixture, and under
Django's own test runner whenever Django gives ``mail.outbox`` a fresh list (it does so at the
start of every test), checked whenever ``outbox`` is read as ``locmem.outbox`` or a message is
delivered. Read it as ``locmem.outbox`` rather than importing the name into your module.

``fail_next(error)`` makes the next operations raise, to test your error handling.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Sequence
from typing import Any

from django.core import mail

from ..client import BulkCountResult, BulkResult, CodeResult, SMSResult, VerifyResult
from ..exceptions import TextFlowError
from . import _emulated
from ._emulated import EmulatedBackend, SMSMessage

__all__ = ["LocMemBackend", "SMSMessage", "fail_next", "reset"]

_lock = threading.Lock()
#: The one outbox list; cleared in place, never rebound, so references to it stay valid.
_outbox: list[SMSMessage] = []
_failures: deque[TextFlowError] = deque()
#: The ``mail.outbox`` list our outbox belongs to (held strongly so identity is meaningful).
_owner: object = None


def _current() -> list[SMSMessage]:
    """The outbox, emptied first if Django has started a new test since it was filled."""
    global _owner
    owner = getattr(mail, "outbox", None)
    if owner is not _owner:
        with _lock:
            if owner is not _owner:
                _outbox.clear()
                _failures.clear()
                _emulated.codes.clear()
                _owner = owner
    return _outbox


def reset() -> None:
    """Empty the outbox, forget queued failures and live codes (the pytest plugin calls it)."""
    with _lock:
        _outbox.clear()
        _failures.clear()
        _emulated.codes.clear()


def fail_next(error: TextFlowError, times: int = 1) -> None:
    """Make the next ``times`` operations of any locmem backend raise ``error``."""
    _current()
    with _lock:
        _failures.extend([error] * times)


def __getattr__(name: str) -> Any:
    # PEP 562: ``locmem.outbox`` runs the per-test reset check on every read.
    if name == "outbox":
        return _current()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class LocMemBackend(EmulatedBackend):
    """Appends every message to ``outbox`` instead of sending it."""

    def _maybe_fail(self) -> None:
        _current()
        with _lock:
            error = _failures.popleft() if _failures else None
        if error is not None:
            raise error

    def deliver(self, message: SMSMessage) -> None:
        outbox = _current()
        with _lock:
            outbox.append(message)

    def _send_sms(self, phone_number: str, text: str) -> SMSResult:
        self._maybe_fail()
        return super()._send_sms(phone_number, text)

    def send_code(
        self, phone_number: str, service_name: str | None = None, seconds: int | None = None
    ) -> CodeResult:
        self._maybe_fail()
        return super().send_code(phone_number, service_name, seconds)

    def verify_code(self, phone_number: str, code: str) -> VerifyResult:
        self._maybe_fail()
        return super().verify_code(phone_number, code)

    def _bulk_sms(self, phone_numbers: Sequence[str], text: str) -> BulkResult:
        self._maybe_fail()
        return super()._bulk_sms(phone_numbers, text)

    def bulk_count(self) -> BulkCountResult:
        self._maybe_fail()
        return super().bulk_count()
