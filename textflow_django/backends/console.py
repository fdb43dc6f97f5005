"""Development backend: prints every SMS to stdout and emulates TextFlow's codes.

The printed text includes verification codes (that is its purpose: finishing a flow on a
laptop), so it must never run in production; system check ``textflow.W001`` warns when it is
configured with ``DEBUG = False``.
"""

from __future__ import annotations

import sys
import threading
from typing import Any, TextIO

from ._emulated import EmulatedBackend, SMSMessage

__all__ = ["ConsoleBackend"]

_write_lock = threading.Lock()


class ConsoleBackend(EmulatedBackend):
    """Writes each message to ``stream`` (default: the current ``sys.stdout``)."""

    def __init__(self, *, stream: TextIO | None = None, **options: Any) -> None:
        super().__init__(**options)
        self.stream = stream

    def deliver(self, message: SMSMessage) -> None:
        stream = self.stream or sys.stdout
        with _write_lock:  # keep concurrent messages from interleaving
            stream.write(
                f"[textflow] {message.kind.upper()} to {message.phone_number} "
                f"at {message.sent_at:%Y-%m-%d %H:%M:%S}Z\n{message.text}\n"
                f"{'-' * 60}\n"
            )
            stream.flush()
