"""A backend that accepts everything and delivers nothing.

It still validates numbers and keeps code hashes like TextFlow, so code paths behave the
same; nobody ever sees a code, so every check answers ``valid=False``.
"""

from __future__ import annotations

from ._emulated import EmulatedBackend, SMSMessage

__all__ = ["DummyBackend"]


class DummyBackend(EmulatedBackend):
    """Discards every message."""

    def deliver(self, message: SMSMessage) -> None:
        pass
