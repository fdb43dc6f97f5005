"""What every rate-limit store does, and the arithmetic they share (no Django here).

Two primitives, each answering ``None`` when allowed, or the whole seconds (at least 1)
until the caller may try again:

- ``claim(key, ttl)``: take a lock-like slot for ``ttl`` seconds (the resend cooldown).
  Atomic: of many concurrent claims exactly one wins. ``release(key)`` frees it.
- ``hit(key, rate)``: count one event in the current window of ``rate`` and refuse past its
  limit (the send and wrong-code caps); a refused hit is not counted. Windows are aligned to
  the epoch (:func:`_window`), so a key that a racing writer left without expiry can only
  ever belong to a past window. ``unhit`` takes one back; ``peek`` reads without counting.

``acquire``/``give_back`` do a claim and several hits all or nothing, and undo them (a failed
SMS send consumes nothing); ``peek_all``/``hit_all`` read or count several caps at once.
:class:`_OneByOne` builds these four from the single-key operations; a store that can do
them in one round trip (``RedisCacheStore``) overrides them.

Time: every store reads the time from the ``clock`` it was built with (``time.time`` unless
given; epoch seconds), and a ``now`` argument is a reading of that clock. That clock decides
when a claim ends (its deadline is stored with it) and which window a hit counts in (windows
are keyed by their index). A server's own expiry (a cache timeout, a Redis TTL), set for the
same length, only frees memory: with the real clock it falls when the clock's deadline does;
with a test's fake clock, claims and windows end when the test advances the clock, not when
the server's clock gets there.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeAlias

from .._rates import Rate

__all__ = ["Clock", "RateLimitStore", "Refusal"]

#: What a store reads the time from: epoch seconds, like ``time.time`` (the default).
Clock: TypeAlias = Callable[[], float]


class RateLimitStore(Protocol):
    """What a store must do; see the module docstring for the semantics."""

    #: The store's time (epoch seconds); a ``now`` passed to a method is a reading of it.
    clock: Clock

    def claim(self, key: str, ttl: int) -> int | None: ...

    def release(self, key: str) -> None: ...

    def hit(self, key: str, rate: Rate, now: float | None = None) -> int | None: ...

    def unhit(self, key: str, rate: Rate, now: float | None = None) -> None: ...

    def peek(self, key: str, rate: Rate) -> int | None: ...

    def acquire(
        self, claim: tuple[str, int] | None, hits: Sequence[tuple[str, Rate]], now: float
    ) -> Refusal | None: ...

    def give_back(
        self, claim: tuple[str, int] | None, hits: Sequence[tuple[str, Rate]], now: float
    ) -> None: ...

    def peek_all(self, hits: Sequence[tuple[str, Rate]]) -> int | None: ...

    def hit_all(self, hits: Sequence[tuple[str, Rate]]) -> None: ...


@dataclass(frozen=True)
class Refusal:
    """Why :meth:`acquire` refused: ``"claim"`` (held) or ``"hit"`` (a limit), and the wait."""

    kind: str
    retry_after: int


class _OneByOne(ABC):
    """``acquire``/``give_back``/``peek_all``/``hit_all`` from the single-key operations,
    undoing on refusal."""

    @abstractmethod
    def claim(self, key: str, ttl: int) -> int | None: ...

    @abstractmethod
    def release(self, key: str) -> None: ...

    @abstractmethod
    def hit(self, key: str, rate: Rate, now: float | None = None) -> int | None: ...

    @abstractmethod
    def unhit(self, key: str, rate: Rate, now: float | None = None) -> None: ...

    @abstractmethod
    def peek(self, key: str, rate: Rate) -> int | None: ...

    def acquire(
        self, claim: tuple[str, int] | None, hits: Sequence[tuple[str, Rate]], now: float
    ) -> Refusal | None:
        """All or nothing: take ``claim`` and count every hit in the windows of ``now`` (a
        reading of the store's clock), or change nothing."""
        if claim is not None:
            wait = self.claim(*claim)
            if wait is not None:
                return Refusal("claim", wait)
        counted: list[tuple[str, Rate]] = []
        for key, rate in hits:
            wait = self.hit(key, rate, now)
            if wait is not None:
                self.give_back(claim, counted, now)
                return Refusal("hit", wait)
            counted.append((key, rate))
        return None

    def give_back(
        self, claim: tuple[str, int] | None, hits: Sequence[tuple[str, Rate]], now: float
    ) -> None:
        """Undo a successful :meth:`acquire` made at ``now`` (the action it guarded did not
        happen): the hits come off the windows they were counted in, even if the clock has
        crossed into the next one since."""
        if claim is not None:
            self.release(claim[0])
        for key, rate in hits:
            self.unhit(key, rate, now)

    def peek_all(self, hits: Sequence[tuple[str, Rate]]) -> int | None:
        """The longest wait among the limits already reached, or None (changes nothing)."""
        waits = [w for key, rate in hits if (w := self.peek(key, rate)) is not None]
        return max(waits) if waits else None

    def hit_all(self, hits: Sequence[tuple[str, Rate]]) -> None:
        """Count one event against each limit; one already reached stays at its limit."""
        for key, rate in hits:
            self.hit(key, rate)


def _wait_if_reached(count: int | str | bytes | None, rate: Rate, left: int) -> int | None:
    """What ``peek`` answers for a counter at ``count`` (None or a stored value): the
    seconds left in its window once the limit is reached, else None."""
    return left if int(count or 0) >= rate.limit else None


def _window(rate: Rate, now: float) -> tuple[int, int]:
    """(window index, whole seconds left in it, at least 1) for ``now``."""
    index = int(now // rate.window)
    left = max(1, math.ceil((index + 1) * rate.window - now))
    return index, left
