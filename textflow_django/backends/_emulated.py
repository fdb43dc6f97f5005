"""In-process emulation of TextFlow shared by the console, locmem and dummy backends.

They generate codes and word the code SMS as local mode does (``textflow_django._codes``),
keep only a salted hash with the expiry, compare in constant time, and, like TextFlow, let a
new code replace the number's previous one. The state is per process (these backends are
for development and tests, not for a fleet of workers; system check ``textflow.W001`` says
so when ``DEBUG`` is off).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import secrets
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal

from .._codes import CODE_LENGTH, code_sms_text, generate_code
from .._e164 import is_code, is_e164
from ..client import BalanceResult, BulkCountResult, BulkResult, CodeResult, SMSResult, VerifyResult
from ..conf import MAX_CODE_TTL
from ..exceptions import TextFlowAPIError, TextFlowRejectedNumber
from .base import BaseBackend

__all__ = ["EmulatedBackend", "SMSMessage"]

#: TextFlow's default code lifetime when ``seconds`` is not given.
_DEFAULT_SECONDS = 600


@dataclass(frozen=True)
class SMSMessage:
    """One SMS an emulating backend delivered.

    ``kind`` is ``"sms"``, ``"code"`` or ``"bulk"``. For a code SMS, ``code`` holds the code
    so tests need not parse ``text``; it is kept out of ``repr``.
    """

    phone_number: str
    text: str
    kind: str
    sent_at: dt.datetime
    code: str | None = field(default=None, repr=False)


class _CodeStore:
    """Hashes of live codes, per number, shared by all threads of the process.

    ``clock`` (epoch seconds, ``time.time`` by default) is what codes are made and expire
    by; a test replaces it to let a code expire without waiting.
    """

    def __init__(self) -> None:
        self.clock: Callable[[], float] = time.time
        self._lock = threading.Lock()
        self._salt = secrets.token_bytes(16)
        self._codes: dict[str, tuple[bytes, float]] = {}

    def _digest(self, phone_number: str, code: str) -> bytes:
        return hashlib.sha256(self._salt + phone_number.encode() + b"\0" + code.encode()).digest()

    def put(self, phone_number: str, code: str, expires: float) -> None:
        with self._lock:
            self._codes[phone_number] = (self._digest(phone_number, code), expires)

    def check(self, phone_number: str, code: str) -> float | None:
        """The expiry if ``code`` is live for the number, else None (constant-time compare)."""
        with self._lock:
            entry = self._codes.get(phone_number)
        candidate = self._digest(phone_number, code)
        if entry is None:
            # Compare anyway so a number with no code takes as long as one with a wrong code.
            hmac.compare_digest(candidate, candidate)
            return None
        digest, expires = entry
        if not hmac.compare_digest(candidate, digest) or self.clock() >= expires:
            return None
        return expires

    def clear(self) -> None:
        with self._lock:
            self._codes.clear()


#: One store per process: every emulating backend instance (one per thread) shares it.
codes = _CodeStore()


class EmulatedBackend(BaseBackend):
    """Answers like TextFlow without the network; subclasses decide what delivery means.

    Subclasses implement :meth:`deliver`. ``code_length`` sets the digits of a code.
    """

    code_length = CODE_LENGTH

    def deliver(self, message: SMSMessage) -> None:
        """Hand one message to wherever this backend "sends" it."""
        raise NotImplementedError

    def generate_code(self) -> str:
        """A fresh random numeric code of ``code_length`` digits."""
        return generate_code(self.code_length)

    @staticmethod
    def _check_number(phone_number: str) -> None:
        if not is_e164(phone_number):
            raise TextFlowRejectedNumber("Phone number is invalid", status=400)

    @staticmethod
    def _check_text(text: str) -> None:
        if not isinstance(text, str) or not text:
            raise TextFlowAPIError("Text is required", status=400)

    def _send_sms(self, phone_number: str, text: str) -> SMSResult:
        self._check_number(phone_number)
        self._check_text(text)
        now = dt.datetime.now(dt.UTC)
        self.deliver(SMSMessage(phone_number, text, "sms", now))
        return SMSResult(to=phone_number, content=text, price=0.0, timestamp=now)

    def send_code(
        self, phone_number: str, service_name: str | None = None, seconds: int | None = None
    ) -> CodeResult:
        self._check_number(phone_number)
        seconds = _DEFAULT_SECONDS if seconds is None else seconds
        if (
            isinstance(seconds, bool)
            or not isinstance(seconds, int)
            or not (1 <= seconds <= MAX_CODE_TTL)
        ):
            raise TextFlowAPIError("Invalid seconds", status=400)
        code = self.generate_code()
        expires = codes.clock() + seconds
        codes.put(phone_number, code, expires)
        text = code_sms_text(code, service_name)
        self.deliver(SMSMessage(phone_number, text, "code", dt.datetime.now(dt.UTC), code=code))
        return CodeResult(
            phone_number=phone_number,
            expires=dt.datetime.fromtimestamp(expires, tz=dt.UTC),
            verification_code=code,
            message_text=text,
        )

    def verify_code(self, phone_number: str, code: str) -> VerifyResult:
        self._check_number(phone_number)
        if not is_code(code):
            return VerifyResult(phone_number=phone_number, valid=False)
        expires = codes.check(phone_number, code)
        if expires is None:
            return VerifyResult(phone_number=phone_number, valid=False)
        return VerifyResult(
            phone_number=phone_number,
            valid=True,
            expires=dt.datetime.fromtimestamp(expires, tz=dt.UTC),
        )

    def _bulk_sms(self, phone_numbers: Sequence[str], text: str) -> BulkResult:
        numbers = list(phone_numbers)
        if not numbers:
            raise TextFlowAPIError("No phone numbers given", status=400)
        for number in numbers:
            self._check_number(number)
        self._check_text(text)
        now = dt.datetime.now(dt.UTC)
        # Delivery is immediate here, so nothing is ever left pending for bulk_count().
        for number in numbers:
            self.deliver(SMSMessage(number, text, "bulk", now))
        return BulkResult(
            submitted=len(numbers), message="Bulk SMS job started", accepted=len(numbers)
        )

    def bulk_count(self) -> BulkCountResult:
        return BulkCountResult(count=0)

    def balance(self) -> BalanceResult:
        return BalanceResult(credits=Decimal("0"), packages={})
