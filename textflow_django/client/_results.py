"""What TextFlow's answers become: small frozen dataclasses, and the lenient readers of its
JSON envelope (and ``Retry-After`` header) that build them: a missing or odd field is ``None``,
never a crash."""

from __future__ import annotations

import datetime as dt
import email.utils
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

__all__ = [
    "BalanceResult",
    "BulkCountResult",
    "BulkResult",
    "CodeResult",
    "SMSResult",
    "VerifyResult",
]


def from_ms(value: object) -> dt.datetime | None:
    """Epoch milliseconds (TextFlow's timestamps) to an aware UTC datetime; junk gives None."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        return dt.datetime.fromtimestamp(value / 1000, tz=dt.UTC)
    except (OverflowError, OSError, ValueError):
        return None


@dataclass(frozen=True)
class SMSResult:
    """TextFlow accepted one SMS (``/send-sms``).

    ``country_code`` is whatever TextFlow said: a country name in current answers, an ISO-2
    code in older ones.
    """

    to: str
    content: str
    country_code: str | None = None
    price: float | None = None
    timestamp: dt.datetime | None = None


@dataclass(frozen=True)
class CodeResult:
    """TextFlow sent a verification code (``/send-code``).

    TextFlow echoes the code back; it is kept out of ``repr`` so that logging a result never
    leaks it. Do not store it.
    """

    phone_number: str
    expires: dt.datetime | None = None
    verification_code: str | None = field(default=None, repr=False)
    message_text: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class VerifyResult:
    """The answer of ``/verify-code``: ``valid`` is always a bool."""

    phone_number: str
    valid: bool
    expires: dt.datetime | None = None


@dataclass(frozen=True)
class BulkResult:
    """TextFlow started a bulk job for ``submitted`` numbers (``/bulk-sms``).

    ``accepted`` is TextFlow's own count when it reports one.
    """

    submitted: int
    message: str = ""
    accepted: int | None = None


@dataclass(frozen=True)
class BulkCountResult:
    """How many recipients of started bulk jobs are still waiting for their SMS."""

    count: int


@dataclass(frozen=True)
class BalanceResult:
    """Account credit (a ``Decimal``) and messages left per package region."""

    credits: Decimal
    packages: Mapping[str, int] = field(default_factory=dict)


def data_of(body: dict[str, Any]) -> dict[str, Any]:
    data = body.get("data")
    return data if isinstance(data, dict) else {}


def str_or_none(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def int_or_none(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    return None


def retry_after_seconds(value: str | None) -> int | None:
    """Parse ``Retry-After`` (delta seconds or an HTTP date) to whole seconds."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return int(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return max(0, int((when - dt.datetime.now(dt.UTC)).total_seconds()))
