"""Rates such as ``"5/h"``: the value type and its parser (a leaf: stdlib only, no Django).

``conf`` parses the rate settings with it and ``checks`` validates them, so it sits below
both; ``textflow_django.ratelimit`` counts against these rates and re-exports both names,
their public home.

Contract: ``parse_rate(text)`` returns ``Rate(limit, window)`` for ``"<n>/<period>"`` where
the period is an optional positive multiplier and a unit (``s``/``sec``/``second``, ``m``/
``min``/``minute``, ``h``/``hour``, ``d``/``day``, each optionally plural), spaces allowed
around the parts; anything else, a non-string included, raises ``ValueError`` naming it.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

__all__ = ["Rate", "parse_rate"]

_RATE_RE = re.compile(r"\s*(\d+)\s*/\s*(\d*)\s*(s|sec|second|m|min|minute|h|hour|d|day)s?\s*")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


@dataclass(frozen=True)
class Rate:
    """``limit`` events per ``window`` seconds (from ``"5/h"``, ``"10/day"``, ``"3/10m"``)."""

    limit: int
    window: int

    def __str__(self) -> str:
        return f"{self.limit}/{self.window}s"


@functools.lru_cache(maxsize=256)
def _parse_rate(text: str) -> Rate:
    match = _RATE_RE.fullmatch(text)
    if not match:
        raise ValueError(f"{text!r} is not a rate like '5/h', '10/d' or '3/10m'")
    limit, multiplier, unit = int(match[1]), int(match[2] or 1), match[3][0]
    if multiplier < 1:
        raise ValueError(f"{text!r} has an empty period")
    return Rate(limit=limit, window=multiplier * _UNITS[unit])


def parse_rate(text: str) -> Rate:
    """Parse ``"<n>/<period>"``. Raises ``ValueError`` naming the bad text.

    Cached: the settings are re-read on every send (``override_settings`` works), the few
    distinct rate strings in them are parsed once."""
    if not isinstance(text, str):
        raise ValueError(f"{text!r} is not a rate like '5/h', '10/d' or '3/10m'")
    return _parse_rate(text)
