"""``TextFlowClient``: TextFlow's API as typed calls (what to send, how to read the answer).

How bytes travel is :mod:`._transport`'s job; what the answers become is :mod:`._results`'.
This module owns the rules of the contract: which answer is which error, the circuit
breaker, and that the API key never reaches an exception, a log or a repr.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from decimal import Decimal, InvalidOperation
from typing import Any

import requests
from urllib3 import BaseHTTPResponse

from .. import __version__
from .._breaker import CircuitBreaker
from .._errors import (
    ClientConfigurationError,
    InsufficientBalance,
    InvalidAPIKey,
    TextFlowAPIError,
    TextFlowBadResponse,
    TextFlowCircuitOpen,
    TextFlowError,
    TextFlowRateLimited,
    TextFlowRejectedNumber,
    TextFlowServerError,
    TextFlowUnavailable,
)
from .._events import emit
from ._report import reported
from ._results import (
    BalanceResult,
    BulkCountResult,
    BulkResult,
    CodeResult,
    SMSResult,
    VerifyResult,
    data_of,
    from_ms,
    int_or_none,
    retry_after_seconds,
    str_or_none,
)
from ._transport import TRANSPORT_ERRORS, Transport

__all__ = ["DEFAULT_BASE_URL", "DEFAULT_TIMEOUT", "TextFlowClient", "api_key_problem"]


DEFAULT_BASE_URL = "https://textflow.me/api"
DEFAULT_TIMEOUT = 10.0

_INVALID_KEY_MESSAGES = ("invalid api key", "api key not found")


def api_key_problem(api_key: str) -> str | None:
    """Why ``api_key`` cannot be a TextFlow API key, or ``None`` when it can.

    A key must be printable ASCII without spaces (TextFlow issues 64 letters and digits; any
    printable ASCII is allowed here so that a future key format is not refused): anything
    else cannot travel in the ``Authorization`` header, and http.client would refuse it
    with the whole key in its error message. The sentence returned never contains the key.
    An empty key is not judged here: whether one is needed depends on the backend.
    """
    for position, char in enumerate(api_key, start=1):
        if "!" <= char <= "~":
            continue
        where = f"at position {position} of {len(api_key)}"
        if char.isspace() or not char.isprintable():
            cause = (
                "a trailing newline from a secrets file?"
                if api_key.rstrip() != api_key
                else "a space or line break copied with it?"
            )
            kind = f"whitespace or control characters (U+{ord(char):04X} {where})"
        else:
            cause = "a look-alike character pasted from a document or a chat?"
            kind = f"non-ASCII characters ({where})"
        return (
            f"The TextFlow API key contains {kind}: {cause} TextFlow keys are printable ASCII "
            "without spaces (64 letters and digits)."
        )
    return None


class TextFlowClient:
    """Talks to TextFlow over HTTPS. Thread-compatible: share one per thread or guard it.

    Args:
        api_key: the TextFlow API key (required; sent as a Bearer token, never logged).
        base_url: the API root, ``https://textflow.me/api`` by default.
        timeout: seconds allowed for a whole call (connect, send and read the answer).
        session: a ``requests.Session`` to use instead of a new pooled one.
        breaker: a :class:`CircuitBreaker` to fail fast while TextFlow is down (shared by
            every client of one process that talks to the same TextFlow).

    Raises:
        ClientConfigurationError: ``api_key`` is empty or not a possible key (see
            :func:`api_key_problem`), ``timeout`` is not positive, or ``base_url`` is not
            a URL. The message never contains the key.
    """

    def __init__(
        self,
        api_key: str,
        *,
        base_url: str = DEFAULT_BASE_URL,
        timeout: float = DEFAULT_TIMEOUT,
        session: requests.Session | None = None,
        breaker: CircuitBreaker | None = None,
    ) -> None:
        if not api_key or not isinstance(api_key, str):
            raise ClientConfigurationError(
                "TextFlow API key is missing: set TEXTFLOW['API_KEY'] (or pass api_key=)."
            )
        problem = api_key_problem(api_key)
        if problem is not None:
            raise ClientConfigurationError(problem)
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
            raise ClientConfigurationError("The TextFlow timeout must be a positive number.")
        self._api_key = api_key
        self.base_url = base_url.rstrip("/")
        self.timeout = float(timeout)
        self.breaker = breaker
        self._transport = Transport(
            self.base_url,
            timeout=self.timeout,
            headers={
                "Authorization": f"Bearer {api_key}",
                "Accept": "application/json",
                "User-Agent": (
                    f"textflow-django/{__version__} python-requests/{requests.__version__}"
                ),
            },
            session=session,
        )

    def __repr__(self) -> str:
        # Never the key: reprs end up in logs and tracebacks.
        return f"<TextFlowClient base_url={self.base_url!r} timeout={self.timeout!r}>"

    @property
    def session(self) -> requests.Session:
        """The ``requests.Session`` the client sends through (its own, or the one passed)."""
        return self._transport.session

    def close(self) -> None:
        """Close the pooled connections (a later call opens a new one)."""
        self._transport.close()

    def __enter__(self) -> TextFlowClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the API -------------------------------------------------------------------------

    def send_sms(self, phone_number: str, text: str) -> SMSResult:
        """Send one SMS.

        Raises ``TextFlowRejectedNumber``, ``InsufficientBalance`` or another ``TextFlowError``.
        """
        body = self._call("POST", "/send-sms", {"phone_number": phone_number, "text": text})
        data = data_of(body)
        price = data.get("price")
        return SMSResult(
            to=str(data.get("to") or phone_number),
            content=str(data.get("content") or text),
            country_code=str_or_none(data.get("country_code")),
            price=float(price)
            if isinstance(price, int | float) and not isinstance(price, bool)
            else None,
            timestamp=from_ms(data.get("timestamp")),
        )

    def send_code(
        self, phone_number: str, service_name: str | None = None, seconds: int | None = None
    ) -> CodeResult:
        """Have TextFlow generate and text a verification code valid for ``seconds``."""
        payload: dict[str, Any] = {"phone_number": phone_number}
        if service_name:
            payload["service_name"] = service_name
        if seconds is not None:
            payload["seconds"] = int(seconds)
        data = data_of(self._call("POST", "/send-code", payload))
        code = data.get("verification_code")
        return CodeResult(
            phone_number=phone_number,
            expires=from_ms(data.get("expires")),
            verification_code=None if code is None else str(code),
            message_text=str_or_none(data.get("message_text")),
        )

    def verify_code(self, phone_number: str, code: str) -> VerifyResult:
        """Ask TextFlow whether ``code`` is the live code for ``phone_number``.

        A wrong or expired code is ``valid=False``, not an error.
        """
        body = self._call("POST", "/verify-code", {"phone_number": phone_number, "code": code})
        # The fields are at the top level in the documented answer; tolerate them in "data".
        valid = body.get("valid", data_of(body).get("valid"))
        if not isinstance(valid, bool):
            raise TextFlowBadResponse(
                "TextFlow's answer has no boolean 'valid'", status=200, path="/verify-code"
            )
        return VerifyResult(
            phone_number=phone_number,
            valid=valid,
            expires=from_ms(body.get("expires", data_of(body).get("expires"))),
        )

    def bulk_sms(self, phone_numbers: Iterable[str], text: str) -> BulkResult:
        """Start a TextFlow bulk job sending ``text`` to every number (one batch, one call)."""
        numbers = list(phone_numbers)
        body = self._call("POST", "/bulk-sms", {"phone_numbers": numbers, "text": text})
        accepted = int_or_none(data_of(body).get("count"))
        return BulkResult(
            submitted=len(numbers), message=str(body.get("message") or ""), accepted=accepted
        )

    def bulk_count(self) -> BulkCountResult:
        """Recipients of started bulk jobs that have not yet received their SMS."""
        body = self._call("POST", "/bulk-count", {})
        count = int_or_none(data_of(body).get("count"))
        if count is None:
            count = int_or_none(body.get("count"))
        if count is None:
            raise TextFlowBadResponse(
                "TextFlow's answer has no 'count'", status=200, path="/bulk-count"
            )
        return BulkCountResult(count=count)

    def balance(self) -> BalanceResult:
        """The account's credit and per-region message packages."""
        body = self._call("GET", "/balance", None)
        try:
            credits = Decimal(str(body.get("credits")))
        except InvalidOperation:
            raise TextFlowBadResponse(
                "TextFlow's answer has no decimal 'credits'", status=200, path="/balance"
            ) from None
        packages = body.get("packages")
        return BalanceResult(
            credits=credits,
            packages={
                str(k): int(v)
                for k, v in (packages.items() if isinstance(packages, dict) else ())
                if isinstance(v, int | float) and not isinstance(v, bool)
            },
        )

    # -- transport -----------------------------------------------------------------------

    @reported  # textflow.api.call for every call (metrics), textflow.api.failed if it fails
    def _call(self, method: str, path: str, payload: dict[str, Any] | None) -> dict[str, Any]:
        """Make one call and return TextFlow's JSON envelope, or raise a ``TextFlowError``.

        With a breaker, a call is not even tried while it is open, and every outcome is
        reported to it: an answer from TextFlow (even a refusal) is a success, anything
        ``TextFlowUnavailable`` a failure.
        """
        breaker = self.breaker
        if breaker is None:
            return self._call_once(method, path, payload)
        wait = breaker.allow()
        if wait is not None:
            raise TextFlowCircuitOpen(
                "not tried: TextFlow failed repeatedly", retry_after=wait, path=path
            )
        try:
            body = self._call_once(method, path, payload)
        except TextFlowUnavailable:
            if breaker.failure():
                emit(
                    "textflow.breaker.opened",
                    failures=breaker.threshold,
                    seconds=breaker.reset_after,
                    scope=breaker.scope,
                )
            raise
        except TextFlowError:
            self._breaker_success(breaker)
            raise
        except BaseException:
            breaker.release()  # interrupted: says nothing about TextFlow
            raise
        self._breaker_success(breaker)
        return body

    @staticmethod
    def _breaker_success(breaker: CircuitBreaker) -> None:
        if breaker.success():
            emit("textflow.breaker.closed", scope=breaker.scope)

    def _call_once(self, method: str, path: str, payload: dict[str, Any] | None) -> dict[str, Any]:
        deadline = time.monotonic() + self.timeout
        withheld: Exception | None = None
        try:
            response = self._transport.send(method, path, payload)
        except TRANSPORT_ERRORS as err:
            withheld = self._transport.error_for(err, path)
            if not self._carries_key(err):
                raise withheld from err
        except Exception as err:
            # http.client refuses a bad header with a ValueError quoting it, Authorization
            # included; nothing else that builds a request should mention the key.
            if not self._carries_key(err):
                raise
            withheld = ClientConfigurationError(
                f"The request to TextFlow {path} could not be built or sent "
                f"({type(err).__name__}: {self._redact(str(err))})"
            )
        if withheld is not None:
            # Raised outside the except clause so that neither __cause__ nor __context__
            # holds the error that quotes the key.
            raise withheld
        content = self._transport.read(response, deadline, path)
        return self._interpret(response, content, path)

    def _redact(self, text: str) -> str:
        """The one redaction rule: the API key, wherever it is echoed, becomes ``[redacted]``."""
        return text.replace(self._api_key, "[redacted]")

    def _carries_key(self, err: BaseException) -> bool:
        """Whether ``err`` or an exception it chains to mentions the key (by :meth:`_redact`)."""
        pending: list[BaseException] = [err]
        seen: set[int] = set()
        while pending:
            current = pending.pop()
            if id(current) in seen:
                continue
            seen.add(id(current))
            for text in (str(current), repr(current)):
                if self._redact(text) != text:
                    return True
            pending.extend(e for e in (current.__cause__, current.__context__) if e is not None)
        return False

    def _interpret(self, response: BaseHTTPResponse, content: bytes, path: str) -> dict[str, Any]:
        status = response.status
        body = self._json(content)
        message = self._message(body, status)
        if body is not None and status < 400 and body.get("ok") is not False:
            return body
        if status == 429:
            raise TextFlowRateLimited(
                message,
                retry_after=retry_after_seconds(response.headers.get("Retry-After")),
                status=status,
                path=path,
            )
        if status >= 500:
            raise TextFlowServerError(message, status=status, path=path)
        if body is None:
            # A 2xx/4xx that is not TextFlow's JSON: a proxy page, an empty or cut body.
            # TextFlow may have acted on it, so it counts as "maybe sent".
            raise TextFlowBadResponse(message, status=status, path=path)
        lowered = message.lower()
        if any(m in lowered for m in _INVALID_KEY_MESSAGES):
            raise InvalidAPIKey(message, status=status, path=path)
        if "phone number" in lowered:
            raise TextFlowRejectedNumber(message, status=status, path=path)
        if "balance" in lowered or "credit" in lowered:
            raise InsufficientBalance(message, status=status, path=path)
        raise TextFlowAPIError(message, status=status, path=path)

    @staticmethod
    def _json(content: bytes) -> dict[str, Any] | None:
        """The JSON object in the body, or None for anything else (HTML, empty, truncated)."""
        if not content.strip():
            return None
        try:
            parsed = json.loads(content)
        except ValueError:  # includes UnicodeDecodeError
            return None
        return parsed if isinstance(parsed, dict) else None

    def _message(self, body: dict[str, Any] | None, status: int) -> str:
        if body is not None and isinstance(body.get("message"), str) and body["message"]:
            text: str = body["message"]
        elif body is not None:
            text = "TextFlow refused the request"
        elif status >= 500:
            text = f"TextFlow is unavailable (HTTP {status} without a TextFlow answer)"
        else:
            text = "TextFlow's answer is not JSON"
        # Defence in depth: never let a server that echoes the key put it in our errors.
        return self._redact(text)[:500]
