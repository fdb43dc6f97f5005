"""The guessing arithmetic: how likely a stranger is to guess a number's code, from the
settings. The one home of it: the system check (``textflow.W005``), the README's figures and
the simulation test all use these functions.

An attacker who wants a given number's code can make the site text codes to that number
(each spends the number's send cap) and try ``MAX_ATTEMPTS`` guesses on each code it holds
the ``verification_id`` of; nobody else's guesses reach those codes. So, per day, at most
``codes a day × MAX_ATTEMPTS`` guesses, each right with a chance of ``10 ** -digits``:
by the union bound, the chance of a right guess is at most their product.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Final

from .._rates import Rate
from ..conf import conf

__all__ = ["DAY", "TEXTFLOW_CODE_LENGTH", "codes_per_day", "guess_chance"]

DAY: Final = 86400
#: Digits of TextFlow's own codes (``VERIFY_MODE = "textflow"``): 4 in every documented
#: example of ``/send-code``.
TEXTFLOW_CODE_LENGTH: Final = 4


def codes_per_day(rates: Sequence[Rate]) -> int | None:
    """The most codes ``rates`` (one scope's caps, all applying) can let through in any 24
    hours, or ``None`` without a cap; the tightest rate decides.

    A bound, not the typical figure: the rolling windows (``textflow_django.ratelimit``)
    never count more than ``n`` in one fixed window of the rate's length, and any 24 hours
    overlap at most ``⌈day / window⌉ + 1`` of those, so ``n × (⌈day / window⌉ + 1)`` (for
    ``"10/d"``: 20, reached only by an attacker timing its sends around a window's edge).
    """
    if not rates:
        return None
    return min(rate.limit * (math.ceil(DAY / rate.window) + 1) for rate in rates)


def guess_chance(digits: int, number_send_rates: Sequence[Rate] | None = None) -> float | None:
    """The most likely a stranger is to guess a number's code within a day (0..1), with
    ``digits``-digit codes, the per-number send caps ``number_send_rates`` (default: the
    settings') and ``MAX_ATTEMPTS``; ``None`` when no per-number send cap bounds it."""
    if number_send_rates is None:
        number_send_rates = conf.SEND_LIMITS.get("number", ())
    codes = codes_per_day(number_send_rates)
    if codes is None:
        return None
    chance: float = codes * conf.MAX_ATTEMPTS / 10**digits
    return min(1.0, chance)
