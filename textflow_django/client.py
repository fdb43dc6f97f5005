"""A typed client for the TextFlow SMS API, usable on its own (no Django settings needed).

    >>> client = TextFlowClient(api_key="...")
    >>> client.send_sms("+11234567890", "Hello").price
    0.05

Contract:

- One pooled ``requests.Session`` per client (pass ``session=`` to share or instrument one),
  a timeout on every call, and a ``User-Agent`` naming this library and its version. The
  client's own session is configured once, and its requests go straight to the urllib3 pool
  of its adapter (TLS settings, retries and the session's headers apply; its auth, cookies
  and hooks are not used): ``Session.request`` re-merges every session setting on every
  call and ``HTTPAdapter.send`` rebuilds what never changes, which together cost more CPU
  than the call itself to a nearby server. A session passed with ``session=``, a proxied
  URL, another adapter mounted on the client's session, or a patched ``HTTPAdapter.send``
  (the ``responses`` test library) all go through requests as usual.
- Every failure raises a :class:`~textflow_django.exceptions.TextFlowError` subclass carrying
  the HTTP status and TextFlow's message, never the API key.
- A request is retried only when the connection failed *before* the request was sent
  (refused, unresolvable, connect timeout). Anything later (a 5xx, a read timeout, a reset,
  a garbled body) may mean TextFlow acted on it: re-sending could deliver a second SMS, so it
  is raised with ``maybe_sent=True`` instead.
- The whole answer must arrive within ``timeout`` seconds: a server that trickles its body
  byte by byte cannot hold a worker for longer.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import json
import logging
import os
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any, cast

import requests
import urllib3
from requests.adapters import HTTPAdapter
from requests.structures import CaseInsensitiveDict
from urllib3 import BaseHTTPResponse
from urllib3.exceptions import (
    ConnectTimeoutError,
    MaxRetryError,
    NewConnectionError,
    ReadTimeoutError,
)
from urllib3.util.retry import Retry

from . import __version__
from ._breaker import CircuitBreaker
from .exceptions import (
    InsufficientBalance,
    InvalidAPIKey,
    InvalidPhoneNumber,
    TextFlowAPIError,
    TextFlowBadResponse,
    TextFlowCircuitOpen,
    TextFlowConfigurationError,
    TextFlowConnectionError,
    TextFlowError,
    TextFlowRateLimited,
    TextFlowServerError,
    TextFlowTimeout,
    TextFlowUnavailable,
)

__all__ = [
    "DEFAULT_BASE_URL",
    "api_key_problem",
    "CircuitBreaker",
    "DEFAULT_TIMEOUT",
    "BalanceResult",
    "BulkCountResult",
    "BulkResult",
    "CodeResult",
    "SMSResult",
    "TextFlowClient",
    "VerifyResult",
]

logger = logging.getLogger("textflow_django")

DEFAULT_BASE_URL = "https://textflow.me/api"
DEFAULT_TIMEOUT = 10.0
#: Connection attempts retried when nothing was sent yet (refused, DNS, connect timeout).
CONNECT_RETRIES = 2
#: A TextFlow answer is a small JSON envelope; anything larger is not TextFlow talking.
MAX_RESPONSE_BYTES = 1024 * 1024

_INVALID_KEY_MESSAGES = ("invalid api key", "api key not found")


def _from_ms(value: object) -> dt.datetime | None:
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


def _adapter_send_is_genuine() -> bool:
    """Whether ``HTTPAdapter.send`` is requests' own, not a patch (``responses``, ``mock``).

    Decided on every call, from the code object: a patch applied before this module was
    imported must be seen as well, and ``functools.wraps`` copies a function's names but not
    its code. A mock has no ``__code__``; ``create_autospec`` builds its code from a string.
    """
    code = getattr(HTTPAdapter.send, "__code__", None)
    return (
        code is not None
        and code.co_qualname == "HTTPAdapter.send"
        and code.co_filename == requests.adapters.__file__
    )


def _retry_after(value: str | None) -> int | None:
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
        TextFlowConfigurationError: ``api_key`` is empty or not a possible key (see
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
            raise TextFlowConfigurationError(
                "TextFlow API key is missing: set TEXTFLOW['API_KEY'] (or pass api_key=)."
            )
        problem = api_key_problem(api_key)
        if problem is not None:
            raise TextFlowConfigurationError(problem)
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
            raise TextFlowConfigurationError("The TextFlow timeout must be a positive number.")
        self._api_key = api_key
        self.base_url = base_url.rstrip("/")
        self.timeout = float(timeout)
        self.session = session if session is not None else self._new_session(self.base_url)
        self._own_session = session is None
        # Normalised once (IDNA, quoting), as Session.request would on every call.
        root = requests.PreparedRequest()
        try:
            root.prepare_url(self.base_url, None)
        except requests.RequestException as err:
            raise TextFlowConfigurationError(
                f"The TextFlow base URL {self.base_url!r} is not a valid URL."
            ) from err
        self._url_root = (root.url or self.base_url).rstrip("/")
        self._path_root = root.path_url.rstrip("/")
        # The own session's urllib3 pool, once used, and the TLS settings it was made for.
        self._pool: Any = None
        self._pool_tls: tuple[Any, Any] = (None, None)
        self._pool_timeout = urllib3.Timeout(connect=self.timeout, read=self.timeout)
        self.breaker = breaker
        self._headers = {
            "Authorization": f"Bearer {api_key}",
            "Accept": "application/json",
            "User-Agent": f"textflow-django/{__version__} python-requests/{requests.__version__}",
        }

    def __repr__(self) -> str:
        # Never the key: reprs end up in logs and tracebacks.
        return f"<TextFlowClient base_url={self.base_url!r} timeout={self.timeout!r}>"

    @staticmethod
    def _new_session(base_url: str) -> requests.Session:
        session = requests.Session()
        # Read the environment (proxies, CA bundle) once, here: requests re-reads it on every
        # call otherwise, which costs more than a whole call to a nearby server.
        session.trust_env = False
        session.proxies.update(requests.utils.get_environ_proxies(base_url))
        bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
        if bundle:
            session.verify = bundle
        # Retry only connection-level failures (nothing was sent). read=0, status=0 and
        # other=0 make sure nothing that may have reached TextFlow is ever repeated.
        retry = Retry(
            total=None,
            connect=CONNECT_RETRIES,
            read=0,
            redirect=0,
            status=0,
            other=0,
            backoff_factor=0.1,
            raise_on_status=False,
        )
        adapter = HTTPAdapter(max_retries=retry, pool_connections=4, pool_maxsize=16)
        session.mount("https://", adapter)
        session.mount("http://", adapter)
        return session

    def close(self) -> None:
        """Close the pooled connections (a later call opens a new one)."""
        # urllib3 2 drops a cleared PoolManager's pools without closing them: close ours.
        if self._pool is not None:
            self._pool.close()
            self._pool = None
        self.session.close()

    def __enter__(self) -> TextFlowClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the API -------------------------------------------------------------------------

    def send_sms(self, phone_number: str, text: str) -> SMSResult:
        """Send one SMS.

        Raises ``InvalidPhoneNumber``, ``InsufficientBalance`` or another ``TextFlowError``.
        """
        body = self._call("POST", "/send-sms", {"phone_number": phone_number, "text": text})
        data = _data(body)
        price = data.get("price")
        return SMSResult(
            to=str(data.get("to") or phone_number),
            content=str(data.get("content") or text),
            country_code=_str_or_none(data.get("country_code")),
            price=float(price)
            if isinstance(price, int | float) and not isinstance(price, bool)
            else None,
            timestamp=_from_ms(data.get("timestamp")),
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
        data = _data(self._call("POST", "/send-code", payload))
        code = data.get("verification_code")
        return CodeResult(
            phone_number=phone_number,
            expires=_from_ms(data.get("expires")),
            verification_code=None if code is None else str(code),
            message_text=_str_or_none(data.get("message_text")),
        )

    def verify_code(self, phone_number: str, code: str) -> VerifyResult:
        """Ask TextFlow whether ``code`` is the live code for ``phone_number``.

        A wrong or expired code is ``valid=False``, not an error.
        """
        body = self._call("POST", "/verify-code", {"phone_number": phone_number, "code": code})
        # The fields are at the top level in the documented answer; tolerate them in "data".
        valid = body.get("valid", _data(body).get("valid"))
        if not isinstance(valid, bool):
            raise TextFlowBadResponse(
                "TextFlow's answer has no boolean 'valid'", status=200, path="/verify-code"
            )
        return VerifyResult(
            phone_number=phone_number,
            valid=valid,
            expires=_from_ms(body.get("expires", _data(body).get("expires"))),
        )

    def bulk_sms(self, phone_numbers: Iterable[str], text: str) -> BulkResult:
        """Start a TextFlow bulk job sending ``text`` to every number (one batch, one call)."""
        numbers = list(phone_numbers)
        body = self._call("POST", "/bulk-sms", {"phone_numbers": numbers, "text": text})
        accepted = _int_or_none(_data(body).get("count"))
        return BulkResult(
            submitted=len(numbers), message=str(body.get("message") or ""), accepted=accepted
        )

    def bulk_count(self) -> BulkCountResult:
        """Recipients of started bulk jobs that have not yet received their SMS."""
        body = self._call("POST", "/bulk-count", {})
        count = _int_or_none(_data(body).get("count"))
        if count is None:
            count = _int_or_none(body.get("count"))
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
                logger.warning(
                    "TextFlow failed %s times in a row: failing fast for %ss",
                    breaker.threshold,
                    breaker.reset_after,
                )
            raise
        except TextFlowError:
            breaker.success()
            raise
        except BaseException:
            breaker.release()  # interrupted: says nothing about TextFlow
            raise
        breaker.success()
        return body

    def _send(self, method: str, path: str, payload: dict[str, Any] | None) -> BaseHTTPResponse:
        """Send one request (no redirects followed); return urllib3's unread response.

        Raises the transport's errors (requests' or urllib3's, or ``OSError``):
        :meth:`_transport_error` classifies them."""
        session = self.session
        if not self._own_session:
            raw: BaseHTTPResponse = session.request(
                method,
                self.base_url + path,
                json=payload,
                headers=self._headers,
                timeout=self.timeout,
                stream=True,
                allow_redirects=False,
            ).raw
            return raw
        url = self._url_root + path
        headers = CaseInsensitiveDict(session.headers)
        headers.update(self._headers)
        body = None
        if payload is not None:
            # As requests' json=: UTF-8, and NaN/Infinity refused rather than sent.
            body = json.dumps(payload, allow_nan=False).encode("utf-8")
            headers["Content-Type"] = "application/json"
            headers["Content-Length"] = str(len(body))
        adapter = session.get_adapter(url)
        verify = True if session.verify is None else session.verify
        direct = (
            type(adapter) is HTTPAdapter
            and _adapter_send_is_genuine()
            and not (session.proxies and requests.utils.select_proxy(url, session.proxies))
        )
        tls = (verify, session.cert)
        if not direct or self._pool is None or self._pool_tls != tls:
            prepared = requests.PreparedRequest()
            prepared.method = method
            prepared.url = url
            prepared.headers = headers  # type: ignore[assignment]  # str | bytes, as requests
            prepared.body = body
            prepared.hooks = {"response": []}
            if not direct:
                raw = adapter.send(
                    prepared,
                    stream=True,
                    timeout=self.timeout,
                    verify=verify,
                    cert=session.cert,
                    proxies=session.proxies,
                ).raw
                return raw
            # The pool requests would pick, built with the session's TLS settings; kept
            # until those change or close().
            self._pool = cast(HTTPAdapter, adapter).get_connection_with_tls_context(
                prepared, verify, cert=session.cert
            )
            self._pool_tls = tls
        # What HTTPAdapter.send passes, minus what it recomputes on every call.
        response: BaseHTTPResponse = self._pool.urlopen(
            method=method,
            url=self._path_root + path,
            body=body,
            headers=headers,
            redirect=False,
            assert_same_host=False,
            preload_content=False,
            decode_content=False,
            retries=cast(HTTPAdapter, adapter).max_retries,
            timeout=self._pool_timeout,
            chunked=False,
        )
        return response

    def _transport_error(self, err: BaseException, path: str) -> TextFlowError:
        """The ``TextFlowError`` for a failure of the transport, requests' or urllib3's.

        ``maybe_sent`` is False only when the failure happened while connecting, before the
        request could leave (refused, unresolvable, connect timeout); anything later may
        have reached TextFlow.
        """
        cause: BaseException = err
        if isinstance(err, requests.RequestException) and err.args:
            inner = err.args[0]  # requests wraps urllib3's error
            if isinstance(inner, BaseException):
                cause = inner
        if isinstance(cause, MaxRetryError) and cause.reason is not None:
            cause = cause.reason
        # NewConnectionError (and its NameResolutionError) subclass ConnectTimeoutError.
        if isinstance(cause, NewConnectionError):
            return TextFlowConnectionError("could not connect", path=path, maybe_sent=False)
        no_answer = f"no answer within {self.timeout:g}s"
        if isinstance(err, requests.ConnectTimeout) or isinstance(cause, ConnectTimeoutError):
            return TextFlowTimeout(no_answer, path=path, maybe_sent=False)
        if isinstance(err, requests.Timeout) or isinstance(cause, ReadTimeoutError | TimeoutError):
            return TextFlowTimeout(no_answer, path=path, maybe_sent=True)
        return TextFlowConnectionError(
            "the connection broke before TextFlow answered", path=path, maybe_sent=True
        )

    def _call_once(self, method: str, path: str, payload: dict[str, Any] | None) -> dict[str, Any]:
        deadline = time.monotonic() + self.timeout
        withheld: Exception | None = None
        try:
            response = self._send(method, path, payload)
        except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as err:
            withheld = self._transport_error(err, path)
            if not self._carries_key(err):
                raise withheld from err
        except Exception as err:
            # http.client refuses a bad header with a ValueError quoting it, Authorization
            # included; nothing else that builds a request should mention the key.
            if not self._carries_key(err):
                raise
            withheld = TextFlowConfigurationError(
                f"The request to TextFlow {path} could not be built or sent "
                f"({type(err).__name__}: {self._redact(str(err))})"
            )
        if withheld is not None:
            # Raised outside the except clause so that neither __cause__ nor __context__
            # holds the error that quotes the key.
            raise withheld
        content = self._read(response, deadline, path)
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

    def _read(self, response: BaseHTTPResponse, deadline: float, path: str) -> bytes:
        """Read the body, giving up at the deadline or past ``MAX_RESPONSE_BYTES``.

        ``read1`` returns whatever has arrived, and the socket's timeout is cut to the time
        left before each read, so a server trickling its answer byte by byte is stopped at
        the deadline rather than after its last byte.
        """
        sock = getattr(getattr(response, "connection", None), "sock", None)
        chunks: list[bytes] = []
        size = 0
        try:
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TextFlowTimeout(
                        f"the answer did not arrive within {self.timeout:g}s",
                        status=response.status,
                        path=path,
                    )
                if sock is not None:
                    sock.settimeout(left)
                chunk = response.read1(16384, decode_content=True)
                if not chunk:
                    break
                chunks.append(chunk)
                size += len(chunk)
                if size > MAX_RESPONSE_BYTES:
                    raise TextFlowBadResponse(
                        "the answer is too large to be TextFlow's",
                        status=response.status,
                        path=path,
                    )
        except TextFlowError:
            _discard(response)
            raise
        except ReadTimeoutError as err:
            _discard(response)
            raise TextFlowTimeout(
                f"the answer did not arrive within {self.timeout:g}s",
                status=response.status,
                path=path,
            ) from err
        except (urllib3.exceptions.HTTPError, OSError) as err:
            _discard(response)
            raise TextFlowConnectionError(
                "the connection broke while TextFlow answered",
                status=response.status,
                path=path,
                maybe_sent=True,
            ) from err
        return b"".join(chunks)

    def _interpret(self, response: BaseHTTPResponse, content: bytes, path: str) -> dict[str, Any]:
        status = response.status
        body = self._json(content)
        message = self._message(body, status)
        if body is not None and status < 400 and body.get("ok") is not False:
            return body
        if status == 429:
            raise TextFlowRateLimited(
                message,
                retry_after=_retry_after(response.headers.get("Retry-After")),
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
            raise InvalidPhoneNumber(message, status=status, path=path)
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


def _discard(response: BaseHTTPResponse) -> None:
    """Close a half-read answer and give its (now closed) connection back to the pool, as
    requests' ``Response.close()`` does: the pool opens a fresh one next time."""
    response.close()
    response.release_conn()


def _data(body: dict[str, Any]) -> dict[str, Any]:
    data = body.get("data")
    return data if isinstance(data, dict) else {}


def _str_or_none(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _int_or_none(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    return None
