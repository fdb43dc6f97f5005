"""The TextFlow API's behaviour: the endpoints and the account they act on.

:class:`TextFlowAPI` answers ``/send-sms``, ``/send-code``, ``/verify-code``, ``/bulk-sms``,
``/bulk-count`` and ``/balance`` the way ``textflow-api.md`` describes: routing, the bearer
key (400 ``Invalid API key`` when none is given, 404 ``API key not found`` for another
one), validation, credits, codes and their expiry, bulk counts (delivered over time by
``_bulk``), and the country names TextFlow reports. It knows nothing of sockets or faults;
the server hands it one parsed request at a time and writes what it returns. It also reads
the codes a site in local mode sends by ``/send-sms`` in TextFlow's wording, so that
``last_code()`` finds them, and tells a listener (``on_message``) of each SMS it accepts.

This module stands for TextFlow, not for the app. It keeps its own code generator and its
own code SMS text (``"Your verification code for {service} is: {code}"``) on purpose, although
``textflow_django._codes`` holds the app's copy for local mode and the emulating backends:
sharing one would test the client's reading of the contract against itself, while an
independent copy tests it against TextFlow's. Its country names (what ``/send-sms`` reports
as ``country_code``) are TextFlow's too. The only thing it imports from ``textflow_django`` is
the ``_e164`` leaf, which says what a valid number looks like.

Why one module of over 400 lines: the six endpoints and the account they change are one
job. A charge, the message it pays for and the code it issues happen under one lock
acquisition, so the endpoints cannot live apart from the state they keep consistent. What
has a rule of its own lives elsewhere: bulk delivery in ``_bulk``, the error body and the
verify-code refusal's ``valid`` in ``_responses``.
"""

from __future__ import annotations

import hmac
import re
import secrets
import threading
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from email.message import Message
from typing import Any, Final, TypeGuard

from ..._e164 import E164_RE
from ._bulk import BulkDrain
from ._countries import country_name
from ._responses import MSG_BODY, Response, dumps, error, for_path, ok

__all__ = ["API_ROOT", "ROUTES", "SentSMS", "TextFlowAPI", "is_int", "normalize_path"]

# The one E.164 shape rule (the ``_e164`` leaf), shared with the emulating backends and phone.
_E164: Final = E164_RE

API_ROOT: Final = "/api"
#: Endpoint -> the methods it answers. ``/bulk-count`` is documented as POST, and TextFlow's
#: clients are free to ask it by GET (it has no body): both are accepted.
ROUTES: Final[dict[str, tuple[str, ...]]] = {
    "/send-sms": ("POST",),
    "/send-code": ("POST",),
    "/verify-code": ("POST",),
    "/bulk-sms": ("POST",),
    "/bulk-count": ("GET", "POST"),
    "/balance": ("GET",),
}

# Credits are kept as an integer number of 1e-5 units (the precision ``/balance`` shows), so
# thousands of deductions of 0.05 never drift the way summed floats do.
_UNITS: Final = 100_000
_PACKAGES: Final[dict[str, int]] = {"USA Canada": 2100, "UK": 500}
_DEFAULT_CODE_SECONDS: Final = 600
_MAX_CODE_SECONDS: Final = 86_400

#: A request with no bearer key at all (no header, another scheme, an empty token).
_MSG_NO_KEY: Final = "Invalid API key"
#: A bearer key the account does not have: TextFlow's own clients' READMEs show this answer.
_MSG_UNKNOWN_KEY: Final = "API key not found"
_MSG_PHONE: Final = "Phone number is invalid"
_MSG_TEXT: Final = "Text is required"
_MSG_BALANCE: Final = "Insufficient balance"
_NOT_VALID_BODY: Final = dumps(
    {"ok": True, "status": 200, "message": "Code is not valid", "valid": False}
)


@dataclass(frozen=True, slots=True)
class SentSMS:
    """One SMS the emulator accepted for delivery.

    ``kind`` is ``"sms"`` (``/send-sms``), ``"code"`` (``/send-code``; ``text`` holds the code)
    or ``"bulk"`` (``/bulk-sms``, one entry per recipient).
    """

    phone_number: str
    text: str
    kind: str


def is_int(value: object) -> bool:
    """True for an int that is not a bool."""
    # bool is an int subclass; ``True`` seconds or ``False`` counts are client bugs.
    return isinstance(value, int) and not isinstance(value, bool)


def normalize_path(path: str) -> str:
    """Turn ``"send-sms"``, ``"/send-sms/"`` or ``"/api/send-sms"`` into ``"/send-sms"``."""
    if not path.startswith("/"):
        path = "/" + path
    if path == API_ROOT or path.startswith(API_ROOT + "/"):
        path = path[len(API_ROOT) :]
    return path.rstrip("/") or "/"


def _valid_number(value: object) -> TypeGuard[str]:
    return isinstance(value, str) and _E164.fullmatch(value) is not None


def _format_units(units: int) -> str:
    sign = "-" if units < 0 else ""
    whole, frac = divmod(abs(units), _UNITS)
    return f"{sign}{whole}.{frac:05d}"


def _to_units(amount: float) -> int:
    return round(amount * _UNITS)


# TextFlow's code and its SMS, as TextFlow makes them: deliberately not the app's copy (see
# the module docstring), so a change on either side shows up as a failing test.
def _new_code(length: int) -> str:
    return f"{secrets.randbelow(10**length):0{length}d}"


def _code_text(service: str | None, code: str) -> str:
    if service:
        return f"Your verification code for {service} is: {code}"
    return f"Your verification code is: {code}"


# ``_code_text`` read backwards: a site in local mode sends this same wording by /send-sms,
# maybe with the WebOTP line of the same code after a blank line (``@example.com #123456``).
_CODE_TEXT_RE: Final = re.compile(
    r"Your verification code(?: for .+)? is: ([0-9]+)(?:\n\n@\S+ #\1)?", re.DOTALL
)


class TextFlowAPI:
    """TextFlow's side of every API call, and the account it acts on.

    The account is the credits, the live codes, the accepted messages and the pending bulk
    recipients. All of it is guarded by ``lock``, the emulator's one lock, so the emulator can
    read it together with its own state in one snapshot; methods ending in ``_locked`` expect
    the caller to hold it, the others take it. ``now_ms_locked`` is the emulator's clock in
    milliseconds (called with the lock held), so ``advance_clock()`` moves code expiry and bulk
    delivery here. ``on_message`` is called with each SMS accepted, outside the lock.
    The emulator validates ``code_length`` and ``price`` before building this.
    """

    def __init__(
        self,
        *,
        lock: threading.Lock,
        now_ms_locked: Callable[[], int],
        api_key: str,
        code_length: int,
        credits: float,
        price: float,
        record_messages: bool,
        bulk_rate: float,
        on_message: Callable[[SentSMS], None] | None = None,
    ) -> None:
        self._lock = lock
        self._now_ms_locked = now_ms_locked
        self._key = api_key.encode()
        self._code_length = code_length
        self._initial_credits = _to_units(credits)
        self._credits = self._initial_credits
        self._price = float(price)
        self._price_units = _to_units(price)
        self._record_messages = record_messages
        # (phone_number, text, kind) tuples: a 500-number bulk batch appends 500 of these,
        # far cheaper than 500 frozen dataclasses; ``messages()`` builds SentSMS on read.
        self._messages: list[tuple[str, str, str]] = []
        self._message_count = 0
        self._codes: dict[str, tuple[str, int]] = {}
        # The code in the newest code SMS to each number, by /send-code (with its expiry) or
        # by /send-sms in TextFlow's code wording (a site in local mode; no expiry known).
        self._latest_codes: dict[str, tuple[str, int | None]] = {}
        self._initial_bulk_rate = bulk_rate
        self._bulk = BulkDrain(bulk_rate)
        self._on_message = on_message

    # -- the account, read and steered by the emulator -------------------------------------

    @property
    def credits(self) -> float:
        """Credits left, as a float."""
        with self._lock:
            return self._credits / _UNITS

    @credits.setter
    def credits(self, amount: float) -> None:
        with self._lock:
            self._credits = _to_units(amount)

    def messages(self) -> list[SentSMS]:
        """Every SMS accepted, in order (empty when messages are not recorded)."""
        with self._lock:
            recorded = list(self._messages)
        return [SentSMS(phone, text, kind) for phone, text, kind in recorded]

    def recorded_locked(self, phone_number: str | None) -> tuple[list[tuple[str, str, str]], int]:
        """The recorded ``(phone_number, text, kind)`` tuples, all or to one number, and the
        count of every SMS accepted (recorded or not)."""
        if phone_number is None:
            return list(self._messages), self._message_count
        return [m for m in self._messages if m[0] == phone_number], self._message_count

    def message_count(self) -> int:
        """How many SMS were accepted (one per bulk recipient), recorded or not."""
        with self._lock:
            return self._message_count

    def last_code(self, phone_number: str) -> str | None:
        """The code in the newest code SMS to ``phone_number``, if any: one ``/send-code``
        issued (while it is live), or one a site in local mode sent by ``/send-sms`` in
        TextFlow's wording (``Your verification code for Acme is: 123456``)."""
        with self._lock:
            entry = self._latest_codes.get(phone_number)
            now = self._now_ms_locked()
        if entry is None or (entry[1] is not None and entry[1] <= now):
            return None
        return entry[0]

    def _now_locked(self) -> float:
        """The emulator's clock in seconds (what bulk delivery runs on)."""
        return self._now_ms_locked() / 1000

    def bulk_pending(self) -> int:
        """Recipients of accepted bulk jobs not yet delivered (what ``/bulk-count`` says)."""
        with self._lock:
            return self._bulk.pending(self._now_locked())

    def deliver_bulk(self, n: int | None) -> None:
        """Mark ``n`` (``None``: all) pending bulk recipients delivered; clamps at zero."""
        if n is not None and (not is_int(n) or n < 0):
            raise ValueError("n must be a non-negative int or None")
        with self._lock:
            self._bulk.deliver(n, self._now_locked())

    @property
    def bulk_rate(self) -> float:
        """Bulk recipients delivered per second of the emulator's clock (0: only by hand)."""
        with self._lock:
            return self._bulk.rate

    @bulk_rate.setter
    def bulk_rate(self, rate: float) -> None:
        with self._lock:
            self._bulk.set_rate(rate, self._now_locked())

    def snapshot_locked(self) -> dict[str, Any]:
        """``bulk_pending``, ``bulk_rate``, ``credits`` (as ``/balance`` shows them) and
        ``message_count``."""
        return {
            "bulk_pending": self._bulk.pending(self._now_locked()),
            "bulk_rate": self._bulk.rate,
            "credits": _format_units(self._credits),
            "message_count": self._message_count,
        }

    def reset_locked(self) -> None:
        """Forget messages, codes and pending bulk; credits and the bulk rate go back to their
        initial values."""
        self._messages = []
        self._message_count = 0
        self._codes = {}
        self._latest_codes = {}
        self._bulk.clear(self._now_locked())
        self._bulk.rate = self._initial_bulk_rate
        self._credits = self._initial_credits

    # -- one request -----------------------------------------------------------------------

    def respond(self, method: str, path: str, headers: Message, parsed: Any) -> Response:
        """Route, authenticate and process one request to ``path`` (relative to the API root,
        ``parsed`` being its JSON body or ``None``). Never raises: a bug in the emulator
        answers 500 and prints its traceback. Every refusal of ``/verify-code`` carries
        ``"valid": false`` (:func:`for_path`)."""
        return for_path(path, self._answer(method, path, headers, parsed))

    def _answer(self, method: str, path: str, headers: Message, parsed: Any) -> Response:
        try:
            allowed = ROUTES.get(path)
            if allowed is None:
                return error(404, "Not found")
            if method not in allowed:
                return error(405, "Method not allowed", (("Allow", ", ".join(allowed)),))
            refusal = self._refuse_key(headers.get("Authorization"))
            if refusal is not None:
                return refusal
            if path == "/send-sms":
                return self._send_sms(parsed)
            if path == "/send-code":
                return self._send_code(parsed)
            if path == "/verify-code":
                return self._verify_code(parsed)
            if path == "/bulk-sms":
                return self._bulk_sms(parsed)
            if path == "/bulk-count":
                return self._bulk_count()
            return self._balance()
        except Exception:  # noqa: BLE001 - the emulator must answer, and show its own bug
            traceback.print_exc()
            return error(500, "Emulator error")

    def _refuse_key(self, header: str | None) -> Response | None:
        """``None`` for the account's bearer key; otherwise the refusal: 400 ``Invalid API
        key`` when no bearer key was given at all (nothing to look up), 404 ``API key not
        found`` for a key that is not the account's, as TextFlow's clients' READMEs show."""
        scheme, _, token = (header or "").strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            return error(400, _MSG_NO_KEY)
        # Constant time even in a fake: the app's tests should not learn bad habits here.
        if hmac.compare_digest(token.encode(errors="replace"), self._key):
            return None
        return error(404, _MSG_UNKNOWN_KEY)

    def _tell(self, sent: list[tuple[str, str, str]]) -> None:
        """Hand each SMS just accepted to ``on_message`` (outside the lock). A failing
        callback is printed, never turned into the API's answer: the SMS went out."""
        if self._on_message is None:
            return
        try:
            for phone, text, kind in sent:
                self._on_message(SentSMS(phone, text, kind))
        except Exception:  # noqa: BLE001 - the answer stands whatever the callback does
            traceback.print_exc()

    def _charge_locked(self, count: int) -> bool:
        cost = self._price_units * count
        if self._credits < cost:
            return False
        self._credits -= cost
        return True

    def _record_locked(self, phone_number: str, text: str, kind: str) -> None:
        self._message_count += 1
        if self._record_messages:
            self._messages.append((phone_number, text, kind))

    # -- the endpoints ---------------------------------------------------------------------

    def _send_sms(self, data: Any) -> Response:
        if not isinstance(data, dict):
            return error(400, MSG_BODY)
        phone = data.get("phone_number")
        if not _valid_number(phone):
            return error(400, _MSG_PHONE)
        text = data.get("text")
        if not isinstance(text, str) or not text:
            return error(400, _MSG_TEXT)
        carried = _CODE_TEXT_RE.fullmatch(text)
        with self._lock:
            if not self._charge_locked(1):
                return error(400, _MSG_BALANCE)
            self._record_locked(phone, text, "sms")
            if carried is not None:
                self._latest_codes[phone] = (carried[1], None)
            now = self._now_ms_locked()
        self._tell([(phone, text, "sms")])
        return ok(
            {
                "ok": True,
                "status": 200,
                "message": "Message sent successfully",
                "data": {
                    "to": phone,
                    "content": text,
                    "country_code": country_name(phone),
                    "price": self._price,
                    "timestamp": now,
                },
            }
        )

    def _send_code(self, data: Any) -> Response:
        if not isinstance(data, dict):
            return error(400, MSG_BODY)
        phone = data.get("phone_number")
        if not _valid_number(phone):
            return error(400, _MSG_PHONE)
        service = data.get("service_name")
        if service is not None and not isinstance(service, str):
            return error(400, MSG_BODY)
        seconds = data.get("seconds", _DEFAULT_CODE_SECONDS)
        if seconds is None:
            seconds = _DEFAULT_CODE_SECONDS
        if not is_int(seconds) or not 1 <= seconds <= _MAX_CODE_SECONDS:
            return error(400, "Invalid seconds")
        code = _new_code(self._code_length)
        text = _code_text(service, code)
        with self._lock:
            if not self._charge_locked(1):
                return error(400, _MSG_BALANCE)
            expires = self._now_ms_locked() + seconds * 1000
            # A new code replaces the previous one (the contract's stated assumption).
            self._codes[phone] = self._latest_codes[phone] = (code, expires)
            self._record_locked(phone, text, "code")
        self._tell([(phone, text, "code")])
        return ok(
            {
                "ok": True,
                "status": 200,
                "message": "Message sent successfully",
                "data": {"verification_code": code, "expires": expires, "message_text": text},
            }
        )

    def _verify_code(self, data: Any) -> Response:
        if not isinstance(data, dict):
            return error(400, MSG_BODY)
        phone = data.get("phone_number")
        if not _valid_number(phone):
            return error(400, _MSG_PHONE)
        code = data.get("code")
        if is_int(code):
            code = str(code)
        if not isinstance(code, str):
            return error(400, "Code is required")
        with self._lock:
            entry = self._codes.get(phone)
            now = self._now_ms_locked()
        # Not consumed on success: the contract tells the app not to rely on that.
        if (
            entry is not None
            and entry[1] > now
            # A code that cannot be UTF-8 (a lone surrogate) is simply not the code.
            and hmac.compare_digest(code.encode(errors="replace"), entry[0].encode())
        ):
            return ok(
                {
                    "ok": True,
                    "status": 200,
                    "message": "Code is valid",
                    "valid": True,
                    "valid_code": entry[0],
                    "expires": entry[1],
                }
            )
        return Response(200, _NOT_VALID_BODY)

    def _bulk_sms(self, data: Any) -> Response:
        if not isinstance(data, dict):
            return error(400, MSG_BODY)
        numbers = data.get("phone_numbers")
        if numbers is None or numbers == []:
            return error(400, "Phone numbers are required")
        if not isinstance(numbers, list):
            return error(400, MSG_BODY)
        match = _E164.fullmatch
        for number in numbers:
            # One bad number rejects the batch, so nothing of it is half-sent.
            if not isinstance(number, str) or match(number) is None:
                return error(400, _MSG_PHONE)
        text = data.get("text")
        if not isinstance(text, str) or not text:
            return error(400, _MSG_TEXT)
        count = len(numbers)
        with self._lock:
            if not self._charge_locked(count):
                return error(400, _MSG_BALANCE)
            self._message_count += count
            if self._record_messages:
                self._messages.extend([(number, text, "bulk") for number in numbers])
            self._bulk.add(count, self._now_locked())
        if self._on_message is not None:
            self._tell([(number, text, "bulk") for number in numbers])
        return ok(
            {"ok": True, "status": 200, "message": "Bulk SMS job started", "data": {"count": count}}
        )

    def _bulk_count(self) -> Response:
        with self._lock:
            pending = self._bulk.pending(self._now_locked())
        return ok(
            {"ok": True, "status": 200, "message": "Bulk SMS count", "data": {"count": pending}}
        )

    def _balance(self) -> Response:
        with self._lock:
            credits = _format_units(self._credits)
        return ok({"ok": True, "credits": credits, "packages": dict(_PACKAGES)})
