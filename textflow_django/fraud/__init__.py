"""The Fraud Guard: SMS pumping stopped by budgets no botnet rotates around, and by blocking
destinations whose codes are sent and never used.

SMS pumping: a botnet asks for codes to numbers whose carriers pay the attacker per SMS.
Rotating addresses and numbers walks past per-number and per-address caps; it cannot walk
past what the guard watches, which is the destination and what becomes of its codes:

- ``SEND_LIMITS["global"]`` and ``["country"]`` (budgets, in ``textflow_django.verification``
  with the other caps);
- a prefix (``PREFIX_DIGITS`` digits of the number) is blocked for ``BLOCK_SECONDS`` when
  enough of its codes (``MIN_SENDS``), old enough to have been used (``GRACE``), were sent in
  ``WINDOW`` and too few verified (``MIN_CONVERSION``); a whole country likewise, on scaled
  thresholds; codes still in their grace period are capped per prefix at ``MIN_SENDS``;
- a country no number was verified in for 30 days gets ``NEW_COUNTRY_LIMIT`` codes at most.

The send path (``verification.send_code``) checks the blocks and counts the guard's
counters in its one round trip to the rate-limit store (:func:`plan` says what it adds); a
blocked destination is refused with ``DestinationBlocked`` (403 ``destination_blocked``),
sending nothing and asking TextFlow nothing. The judgement (``_judge``) runs when the
counters call for it. Blocks are ``FraudBlock`` rows, lifted or turned into allowed
prefixes from the admin (:func:`lift`, :func:`allow_prefix`).
"""

from __future__ import annotations

from ._judge import (
    JUDGE_EVERY,
    NEW_COUNTRY_WINDOW,
    allow_prefix,
    due,
    is_allowed,
    judge_counted,
    judge_country,
    judge_prefix,
    judge_refused,
    lift,
    prefix_sql,
)
from ._known import forget, is_known, mark_known
from ._plan import KNOWN_SECONDS, Plan, block_key, known_key, plan

__all__ = [
    "JUDGE_EVERY",
    "KNOWN_SECONDS",
    "NEW_COUNTRY_WINDOW",
    "Plan",
    "allow_prefix",
    "block_key",
    "due",
    "forget",
    "is_allowed",
    "is_known",
    "judge_counted",
    "judge_country",
    "judge_prefix",
    "judge_refused",
    "known_key",
    "lift",
    "mark_known",
    "plan",
    "prefix_sql",
]
