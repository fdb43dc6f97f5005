"""What every rate-limit store does, and the arithmetic they share (no Django here).

Two primitives, each answering ``None`` when allowed, or the whole seconds (at least 1)
until the caller may try again:

- ``claim(key, ttl)``: take a lock-like slot for ``ttl`` seconds (the resend cooldown).
  Atomic: of many concurrent claims exactly one wins. ``release(key)`` frees it.
- ``hit(key, rate, now)``: count one event against ``rate`` on a sliding window and refuse
  past its limit (the send and wrong-code caps); a refused hit is not counted. Atomic: of
  many concurrent hits at one moment, exactly as many as fit are allowed. ``unhit(key, rate,
  now)`` takes back a hit counted at ``now``; ``peek`` answers what a hit would, counting
  nothing.

The sliding window (the "sliding window counter" of Cloudflare's rate limiter): a key keeps
one count per fixed window of the rate's length, aligned to the epoch (window ``i`` spans
``[i * window, (i + 1) * window)`` seconds), and a hit reads two of them, the current
window's (``curr``) and the previous one's (``prev``). The previous window is weighted by how
much of it the sliding window ending now still covers::

    estimate = prev * (1 - elapsed / window) + curr      (elapsed: time into the current window)

and a hit is allowed while ``estimate + 1 <= limit`` (:func:`_room`, the one home of this
rule; the Redis scripts check the same inequality). The arithmetic is in integers, time in
whole milliseconds (:func:`_position`), so every store decides alike, with no rounding.
It is an approximation, and what it bounds is stated in :mod:`textflow_django.ratelimit`.
A refusal's wait (:func:`_wait`) is computed from the two counts: the whole seconds until a
hit would be allowed if nothing else were counted or taken back meanwhile.

A count is kept until the window after its own ends (then it is nobody's previous window):
:meth:`_Position.keep_ms`. A count written at a past ``now`` (a refund, :meth:`unhit`) goes
to the window of that ``now``, which is the one the hit was counted in.

``acquire``/``give_back`` do a claim and several hits all or nothing, and undo them (a failed
SMS send consumes nothing); ``peek_all``/``hit_all`` read or count several caps at once.
:class:`_OneByOne` builds these four from the single-key operations; a store that can do
them in one round trip (``RedisCacheStore``, ``DatabaseStore`` on PostgreSQL and SQLite)
overrides them.

The Fraud Guard asks three more things of ``acquire``, in the same round trip:

- ``blocks``: keys held like claims (by :meth:`hold`, until a deadline); when any of them is
  held, nothing is taken and the refusal is ``Refusal("blocked", seconds left)``, checked
  before the claim (a blocked destination spends no cooldown).
- ``waivers``: ``{hit key: waiver key}``; such a hit is neither checked nor counted while its
  waiver key is held (the new-country cap, waived for a country verified in). A waived hit
  given back takes one from its window all the same: harmless, as the cap it belongs to is
  waived in that window (a key turns held or free for good, not back and forth).
- ``counts``: a dict the acquire fills, on success, with the current window's count of each
  hit that has no waiver, keyed ``(key, window)`` (the guard judges a destination once its
  count says so).

``hold(key, seconds)`` holds a key until ``seconds`` from now, whatever held it before;
``held(key)`` answers the whole seconds it is still held, or None; ``release`` frees it.

Two more, for what is not a limit:

- ``incr(key, ttl)``: add one to the plain counter ``key`` (created at 0) and answer its new
  value; atomic where the store's writes are (the database, Redis, Memcached): of ``n``
  concurrent increments each answers a different value (on MySQL, where the value is read
  after the ``UPDATE``, each is counted but two may answer the same). It is kept at least
  ``ttl`` seconds after its last increment (then the store may drop it, by its own clock
  or the server's: a counter's expiry only frees memory), and dropped by ``release`` or
  ``forget``. ``count(key)`` reads it (0 when there is none). Its key must not be one a
  claim or a hit uses (the circuit breaker's consecutive failures, shared by every worker).
- ``forget(keys)``: drop everything the store keeps under each key: its claim or hold (or
  counter) and every window count of it, and answer how many stored entries went. For a
  person's erasure (the counters keyed by a number). The database and Redis find every
  entry under ``<key>:`` (a scan: not for the hot path); a plain cache cannot list its
  keys, so ``CacheStore`` drops the current and previous windows (the only ones kept) of
  every window length the settings count with, and of the ``windows`` given.

Time: every store reads the time from the ``clock`` it was built with (``time.time`` unless
given; epoch seconds), and a ``now`` argument is a reading of that clock. That clock decides
when a claim ends (its deadline is stored with it) and which windows a hit reads and counts
in (windows are keyed by their index). A server's own expiry (a cache timeout, a Redis TTL),
set for the same length, only frees memory: with the real clock it falls when the clock's
deadline does; with a test's fake clock, claims and windows end when the test advances the
clock, not when the server's clock gets there.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeAlias

from .._rates import Rate

__all__ = ["Clock", "Counts", "RateLimitStore", "Refusal"]

#: What a store reads the time from: epoch seconds, like ``time.time`` (the default).
Clock: TypeAlias = Callable[[], float]
#: What ``acquire(counts=...)`` fills: ``(key, window)`` -> the current window's count.
Counts: TypeAlias = dict[tuple[str, int], int]


class RateLimitStore(Protocol):
    """What a store must do; see the module docstring for the semantics."""

    #: The store's time (epoch seconds); a ``now`` passed to a method is a reading of it.
    clock: Clock

    @property
    def shared(self) -> bool:
        """Whether every process of the site sees the same counters (the database, a
        shared cache); False for a cache kept in each process (or in none)."""
        ...

    def claim(self, key: str, ttl: int) -> int | None: ...

    def release(self, key: str) -> None: ...

    def hit(self, key: str, rate: Rate, now: float | None = None) -> int | None: ...

    def unhit(self, key: str, rate: Rate, now: float | None = None) -> None: ...

    def peek(self, key: str, rate: Rate) -> int | None: ...

    def acquire(
        self,
        claim: tuple[str, int] | None,
        hits: Sequence[tuple[str, Rate]],
        now: float,
        *,
        blocks: Sequence[str] = (),
        waivers: Mapping[str, str] | None = None,
        counts: Counts | None = None,
    ) -> Refusal | None: ...

    def hold(self, key: str, seconds: int) -> None: ...

    def held(self, key: str) -> int | None: ...

    def incr(self, key: str, ttl: int) -> int: ...

    def count(self, key: str) -> int: ...

    def forget(self, keys: Sequence[str], *, windows: Iterable[int] = ()) -> int: ...

    def give_back(
        self, claim: tuple[str, int] | None, hits: Sequence[tuple[str, Rate]], now: float
    ) -> None: ...

    def peek_all(self, hits: Sequence[tuple[str, Rate]]) -> int | None: ...

    def hit_all(self, hits: Sequence[tuple[str, Rate]]) -> None: ...


@dataclass(frozen=True)
class Refusal:
    """Why :meth:`acquire` refused: ``"blocked"`` (a block key is held), ``"claim"`` (held)
    or ``"hit"`` (a limit), and the wait."""

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

    @abstractmethod
    def hold(self, key: str, seconds: int) -> None: ...

    @abstractmethod
    def held(self, key: str) -> int | None: ...

    @abstractmethod
    def incr(self, key: str, ttl: int) -> int: ...

    @abstractmethod
    def count(self, key: str) -> int: ...

    @abstractmethod
    def forget(self, keys: Sequence[str], *, windows: Iterable[int] = ()) -> int: ...

    @abstractmethod
    def _current(self, hits: Sequence[tuple[str, Rate]], now: float) -> Counts:
        """The current window's count of each hit at ``now`` (a read)."""

    def acquire(
        self,
        claim: tuple[str, int] | None,
        hits: Sequence[tuple[str, Rate]],
        now: float,
        *,
        blocks: Sequence[str] = (),
        waivers: Mapping[str, str] | None = None,
        counts: Counts | None = None,
    ) -> Refusal | None:
        """All or nothing: take ``claim`` and count every hit in the windows of ``now`` (a
        reading of the store's clock), or change nothing (see the module docstring for
        ``blocks``, ``waivers`` and ``counts``)."""
        waits = [wait for key in blocks if (wait := self.held(key)) is not None]
        if waits:
            return Refusal("blocked", max(waits))
        waived = {key for key, waiver in (waivers or {}).items() if self.held(waiver) is not None}
        hits = [(key, rate) for key, rate in hits if key not in waived]
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
        if counts is not None:
            counts.update(self._current([h for h in counted if h[0] not in (waivers or {})], now))
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


#: The windows' arithmetic counts time in whole milliseconds: integers, so every store (the
#: database's and the cache's in Python, Redis's in Lua, whose numbers are doubles, exact
#: for integers below 2**53) takes the same decision. ``limit * window_ms`` and
#: ``count * window_ms`` must stay below 2**53 for Redis: a million hits a window of 100 days.
_MS = 1000


@dataclass(frozen=True)
class _Position:
    """Where a moment falls for a rate: the current fixed window and the time into it."""

    #: The current window's index: it spans ``[index * span, (index + 1) * span)`` ms.
    index: int
    #: Milliseconds of the current window gone by (0 to ``span - 1``).
    elapsed: int
    #: The window's length in milliseconds.
    span: int

    @property
    def overlap(self) -> int:
        """Milliseconds of the previous window that the sliding window ending now covers
        (1 to ``span``): its weight is ``overlap / span``."""
        return self.span - self.elapsed

    @property
    def keep_ms(self) -> int:
        """How long the current window's count is needed: until the next window ends (the
        count is then the previous window's no more), in milliseconds from now."""
        return 2 * self.span - self.elapsed

    @property
    def keep(self) -> int:
        """``keep_ms`` as the whole seconds a server's expiry takes, plus one: a server's own
        clock a little ahead of ours must not drop a count still read."""
        return -(-self.keep_ms // _MS) + 1


def _position(rate: Rate, now: float) -> _Position:
    """Where ``now`` (epoch seconds) falls in ``rate``'s windows.

    ``now`` is read to the microsecond first (a float holds epoch seconds to about 0.2 us),
    then cut to the millisecond: ``T0 + 0.001``, stored a hair below, is still 1 ms in."""
    index, elapsed = divmod(round(now * 1_000_000) // 1000, rate.window * _MS)
    return _Position(index, elapsed, rate.window * _MS)


def _room(rate: Rate, at: _Position, prev: int) -> int:
    """The most hits the current window may hold at ``at`` when the previous one holds
    ``prev``: a hit is allowed while the current count is below it, the integer form of
    ``prev * (1 - elapsed / window) + curr + 1 <= limit``, that is
    ``prev * overlap + (curr + 1) * span <= limit * span``. (May be 0 or less.)"""
    return (rate.limit * at.span - prev * at.overlap) // at.span


def _wait(rate: Rate, at: _Position, prev: int, curr: int) -> int | None:
    """None when a hit at ``at`` would be allowed with these counts; else the whole seconds
    (at least 1) until one would be, if no hit is counted or taken back meanwhile.

    The estimate only falls as time passes: the previous window's weight shrinks while the
    current window has room for one more (``curr < limit``); otherwise a hit needs the next
    window, in which this one is the previous. A zero limit never allows: the wait is the
    window's length (any answer would be wrong; this one does not invite a retry storm).
    """
    if curr < _room(rate, at, prev):
        return None
    if rate.limit < 1:
        return rate.window
    span = at.span
    if curr < rate.limit:
        # Refused now, so prev > 0. Allowed from the elapsed time e at which
        # prev * (span - e) <= (limit - curr - 1) * span.
        due = span - (rate.limit - curr - 1) * span // prev
    else:
        # From the next window, where prev is curr (> 0) and curr is 0: allowed from its
        # elapsed time e at which curr * (span - e) <= (limit - 1) * span.
        due = 2 * span - (rate.limit - 1) * span // curr
    return max(1, -(-(due - at.elapsed) // _MS))
