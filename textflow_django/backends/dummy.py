"""A backend that accepts everything and delivers nothing.

It still validates numbers and keeps code hashes like TextFlow, so code paths behave the
same, and checks a code as TextFlow would. No SMS carries the code: only the
``CodeResult`` of ``send_code`` does, so in practice nobody can enter the right one.
"""

from __future__ import annotations

from ._emulated import EmulatedBackend, SMSMessage

__all__ = ["DummyBackend"]


class DummyBackend(EmulatedBackend):
    """Discards every message."""

    def deliver(self, message: SMSMessage) -> None:
        pass
