"""Which countries the site has verified a number in (the new-country cap spares them),
as this process knows it.

The truth is a key in the rate-limit store, held for 30 days after a verification
(:func:`mark_known`). A send reads it through this process's memory: a known country is
remembered until its key's deadline (it cannot become unknown sooner: marks only extend
it), an unknown one for a minute. So a send to a known country adds nothing to the store's
round trip, and the first send to a country after a process starts (or a minute after it
was found unknown) reads the key once. A country found unknown still gets the cap with the
key as its waiver, checked in the same round trip: a verification elsewhere meanwhile
waives it at once.

Memory per process, so tests that change stores call :func:`forget` (the package's pytest
fixtures do).
"""

from __future__ import annotations

from ..ratelimit import RateLimitStore
from ._judge import _judged_at
from ._plan import KNOWN_SECONDS, known_key

__all__ = ["forget", "is_known", "mark_known"]

#: Seconds an unknown country is remembered as unknown.
UNKNOWN_FOR = 60
#: A verification renews its country's mark at most this often per process (the mark lasts
#: 30 days: once a day is plenty, and a verification pays the write only then).
MARK_EVERY = 86400

#: region -> (known, until when this answer holds: a store clock's reading).
_known: dict[str, tuple[bool, float]] = {}
#: region -> when this process last marked it known.
_marked: dict[str, float] = {}


def is_known(store: RateLimitStore, region: str) -> bool:
    """Whether a number of ``region`` was verified on this site in the last 30 days."""
    now = store.clock()
    answer = _known.get(region)
    if answer is not None and answer[1] > now:
        return answer[0]
    left = store.held(known_key(region))
    _known[region] = (False, now + UNKNOWN_FOR) if left is None else (True, now + left)
    return left is not None


def mark_known(store: RateLimitStore, region: str) -> None:
    """A number of ``region`` was verified: the country is known for 30 days from now."""
    now = store.clock()
    if not region or now - _marked.get(region, now - MARK_EVERY) < MARK_EVERY:
        return
    store.hold(known_key(region), KNOWN_SECONDS)
    _marked[region] = now
    _known[region] = (True, now + KNOWN_SECONDS)


def forget() -> None:
    """Drop what this process remembers (tests that switch stores or clocks): the known
    countries, and when it last judged each destination after a refusal."""
    _known.clear()
    _marked.clear()
    _judged_at.clear()
