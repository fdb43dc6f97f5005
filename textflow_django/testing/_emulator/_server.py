"""A fake TextFlow server: a real HTTP server on loopback speaking the TextFlow API.

The emulator answers ``/send-sms``, ``/send-code``, ``/verify-code``, ``/bulk-sms``,
``/bulk-count`` and ``/balance`` under ``/api`` the way ``textflow-api.md`` describes, keeps
codes, credits and bulk counts, records every request, and can be told to misbehave
(:meth:`TextFlowEmulator.fault`). Tests, benchmarks and the demo talk to it over real sockets
instead of mocking ``requests``, so connection pooling, timeouts and resets are exercised for
real.

It deliberately imports nothing from Django (or any third-party package): it runs in a plain
pytest session, in a subprocess (``python -m textflow_django.testing``) and inside benchmarks.

Control endpoints (no auth, never recorded, never faulted) let a separately-run emulator be
inspected and steered; they are served both at ``/_emulator/...`` and ``/api/_emulator/...``:

- ``GET  /_emulator/messages[?phone_number=+1...&limit=N]`` -> ``{"messages": [...], "total": n}``
- ``GET  /_emulator/requests`` -> ``{"counts": {"/send-sms": 3, ...}, "total": n}``
- ``GET  /_emulator/state`` -> ``{"bulk_pending": n, "credits": "...", ...}``
- ``GET  /_emulator/last-code?phone_number=+1...`` -> ``{"phone_number": ..., "code": str|null}``
- ``POST /_emulator/reset``
- ``POST /_emulator/fault`` with the keyword arguments of :meth:`TextFlowEmulator.fault` as JSON
- ``POST /_emulator/deliver-bulk`` with ``{"n": int | null}``
"""

from __future__ import annotations

import hmac
import json as _json
import secrets
import socket
import socketserver
import ssl
import struct
import sys
import threading
import time
import traceback
from collections.abc import Mapping
from dataclasses import dataclass
from email.message import Message
from functools import lru_cache
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, ClassVar, Final, TypeGuard
from urllib.parse import parse_qs

from ..._e164 import E164_RE

__all__ = [
    "EMULATOR_API_KEY",
    "Fault",
    "RecordedRequest",
    "SentSMS",
    "TextFlowEmulator",
]

#: The key the emulator accepts unless told otherwise: 64 alphanumerics like a real key, and
#: obviously fake so it is harmless in fixtures, settings files and logs.
EMULATOR_API_KEY: Final[str] = "tfemuLocalTextFlowEmulatorKeyNotValidOnTextFlowMe000000000000000"

# The one validity rule for numbers, shared with the client and the backends.
_E164: Final = E164_RE

# Country calling codes are prefix-free, so looking up the first 1, 2 and 3 digits finds at
# most one entry. Names, as the current TextFlow docs return them (``"Serbia"``).
_COUNTRIES: Final[dict[str, str]] = {
    "1": "United States",
    "7": "Russia",
    "20": "Egypt",
    "27": "South Africa",
    "30": "Greece",
    "31": "Netherlands",
    "32": "Belgium",
    "33": "France",
    "34": "Spain",
    "36": "Hungary",
    "39": "Italy",
    "40": "Romania",
    "41": "Switzerland",
    "43": "Austria",
    "44": "United Kingdom",
    "45": "Denmark",
    "46": "Sweden",
    "47": "Norway",
    "48": "Poland",
    "49": "Germany",
    "52": "Mexico",
    "55": "Brazil",
    "61": "Australia",
    "62": "Indonesia",
    "63": "Philippines",
    "64": "New Zealand",
    "65": "Singapore",
    "81": "Japan",
    "82": "South Korea",
    "86": "China",
    "90": "Turkey",
    "91": "India",
    "234": "Nigeria",
    "351": "Portugal",
    "353": "Ireland",
    "358": "Finland",
    "359": "Bulgaria",
    "380": "Ukraine",
    "381": "Serbia",
    "382": "Montenegro",
    "385": "Croatia",
    "386": "Slovenia",
    "387": "Bosnia and Herzegovina",
    "389": "North Macedonia",
    "420": "Czech Republic",
    "971": "United Arab Emirates",
    "972": "Israel",
}

_API_ROOT: Final = "/api"
# Endpoint -> the one method it answers.
_ROUTES: Final[dict[str, str]] = {
    "/send-sms": "POST",
    "/send-code": "POST",
    "/verify-code": "POST",
    "/bulk-sms": "POST",
    "/bulk-count": "POST",
    "/balance": "GET",
}
_CONTROL_ROUTES: Final[dict[str, str]] = {
    "/messages": "GET",
    "/requests": "GET",
    "/state": "GET",
    "/last-code": "GET",
    "/reset": "POST",
    "/fault": "POST",
    "/deliver-bulk": "POST",
}
_CONTROL_PREFIXES: Final = ("/_emulator", "/api/_emulator")

# Credits are kept as an integer number of 1e-5 units (the precision ``/balance`` shows), so
# thousands of deductions of 0.05 never drift the way summed floats do.
_UNITS: Final = 100_000
_PACKAGES: Final[dict[str, int]] = {"USA Canada": 2100, "UK": 500}
_DEFAULT_CODE_SECONDS: Final = 600
_MAX_CODE_SECONDS: Final = 86_400

_MSG_PHONE: Final = "Phone number is invalid"
_MSG_BODY: Final = "Invalid request body"
_MSG_TEXT: Final = "Text is required"
_MSG_BALANCE: Final = "Insufficient balance"
_MALFORMED_BODY: Final = b'{"ok": true, "status": 20'
_JSON: Final = "application/json"
_LINGER_RST: Final = struct.pack("ii", 1, 0)


@dataclass(frozen=True, slots=True, repr=False)
class RecordedRequest:
    """One request the emulator received on the TextFlow API (control requests excluded).

    ``path`` is relative to the API root (``"/send-sms"``, query string and trailing slash
    removed); a request outside ``/api`` keeps its absolute path. ``headers`` has lower-cased
    names (the last value wins for a repeated header). ``json`` is the parsed body, or ``None``
    when the body is empty or not JSON. ``fault`` is the kind of fault applied, if any.
    """

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    json: Any
    fault: str | None

    def __repr__(self) -> str:
        # Keep the bearer token out of assertion messages and CI logs.
        shown = {k: ("<redacted>" if k == "authorization" else v) for k, v in self.headers.items()}
        return (
            f"RecordedRequest(method={self.method!r}, path={self.path!r}, headers={shown!r}, "
            f"body=<{len(self.body)} bytes>, json={self.json!r}, fault={self.fault!r})"
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


@dataclass(frozen=True, slots=True)
class Fault:
    """A queued misbehaviour; see :meth:`TextFlowEmulator.fault` for what each kind does.

    ``times`` is the number of matching requests still to be faulted when read back from
    :attr:`TextFlowEmulator.pending_faults`.
    """

    STATUS: ClassVar[str] = "status"
    RATE_LIMIT: ClassVar[str] = "rate_limit"
    HTML: ClassVar[str] = "html"
    EMPTY: ClassVar[str] = "empty"
    MALFORMED: ClassVar[str] = "malformed"
    DELAY: ClassVar[str] = "delay"
    RESET: ClassVar[str] = "reset"
    TRICKLE: ClassVar[str] = "trickle"
    RESPOND: ClassVar[str] = "respond"
    KINDS: ClassVar[frozenset[str]] = frozenset(
        {
            "status",
            "rate_limit",
            "html",
            "empty",
            "malformed",
            "delay",
            "reset",
            "trickle",
            "respond",
        }
    )

    kind: str
    path: str | None = None
    times: int = 1
    status: int | None = None
    retry_after: int | str | None = None
    delay: float | None = None
    body: bytes | None = None
    content_type: str | None = None


class _QueuedFault:
    """A :class:`Fault` plus how many more requests it applies to (mutated under the lock)."""

    __slots__ = ("fault", "remaining")

    def __init__(self, fault: Fault) -> None:
        self.fault = fault
        self.remaining = fault.times


class _Response:
    """A response ready to be written: status, body, content type and extra headers."""

    __slots__ = ("body", "content_type", "headers", "status")

    def __init__(
        self,
        status: int,
        body: bytes,
        content_type: str | None = _JSON,
        headers: tuple[tuple[str, str], ...] = (),
    ) -> None:
        self.status = status
        self.body = body
        self.content_type = content_type
        self.headers = headers


def _dumps(obj: object) -> bytes:
    return _json.dumps(obj, separators=(",", ":")).encode()


@lru_cache(maxsize=64)
def _error_body(status: int, message: str) -> bytes:
    # Error bodies repeat constantly under load (auth failures, faults); build each once.
    return _dumps({"ok": False, "status": status, "message": message})


def _error(status: int, message: str, headers: tuple[tuple[str, str], ...] = ()) -> _Response:
    return _Response(status, _error_body(status, message), _JSON, headers)


def _ok(payload: object) -> _Response:
    return _Response(200, _dumps(payload))


@lru_cache(maxsize=64)
def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


def _valid_number(value: object) -> TypeGuard[str]:
    return isinstance(value, str) and _E164.fullmatch(value) is not None


def _country_name(number: str) -> str:
    digits = number[1:4]
    for size in (1, 2, 3):
        name = _COUNTRIES.get(digits[:size])
        if name is not None:
            return name
    return "Unknown"


def _format_units(units: int) -> str:
    sign = "-" if units < 0 else ""
    whole, frac = divmod(abs(units), _UNITS)
    return f"{sign}{whole}.{frac:05d}"


def _to_units(amount: float) -> int:
    return round(amount * _UNITS)


def _normalize_path(path: str) -> str:
    """Turn ``"send-sms"``, ``"/send-sms/"`` or ``"/api/send-sms"`` into ``"/send-sms"``."""
    if not path.startswith("/"):
        path = "/" + path
    if path == _API_ROOT or path.startswith(_API_ROOT + "/"):
        path = path[len(_API_ROOT) :]
    return path.rstrip("/") or "/"


def _is_int(value: object) -> bool:
    # bool is an int subclass; ``True`` seconds or ``False`` counts are client bugs.
    return isinstance(value, int) and not isinstance(value, bool)


class _Server(ThreadingHTTPServer):
    """The listening server; one daemon thread per TCP connection."""

    daemon_threads = True
    # The default backlog of 5 drops SYNs (1 s retransmits) when a non-pooled benchmark
    # opens connections faster than the accept loop runs.
    request_queue_size = 256

    def __init__(self, address: tuple[str, int], emulator: TextFlowEmulator) -> None:
        self.emulator = emulator
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, _Handler)

    def get_request(self) -> tuple[socket.socket, Any]:
        sock, address = super().get_request()
        context = self.emulator._ssl_context
        if context is not None:
            # The TLS handshake runs in the connection's own thread (setup()), not in this
            # accept loop, so one slow or broken client cannot hold up the others.
            sock = context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        return sock, address

    def server_bind(self) -> None:
        # HTTPServer.server_bind calls socket.getfqdn(), a reverse DNS lookup that can stall
        # for seconds in a sandbox; the emulator never needs the name.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that hangs up mid-response (timeouts, the "delay" fault, stop()) is routine
        # here, not an error worth a traceback on stderr.
        if isinstance(sys.exc_info()[1], OSError):
            return
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    """Parses one HTTP/1.1 request at a time on a kept-alive connection and answers it."""

    protocol_version = "HTTP/1.1"
    server_version = "TextFlowEmulator/1"
    # Trickled bytes must leave one by one, and small responses must not wait on the peer's
    # delayed ACK.
    disable_nagle_algorithm = True
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.server.emulator._connection_opened(self.connection)
        if isinstance(self.connection, ssl.SSLSocket):
            try:
                self.connection.do_handshake()
            except BaseException:
                # finish() does not run when setup() fails.
                self.server.emulator._connection_closed(self.connection)
                raise

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.emulator._connection_closed(self.connection)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - base signature
        # The access log is noise in test output and costs throughput in benchmarks.
        return

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        # The base class answers unparseable requests, unknown methods and oversized headers
        # with an HTML page; the emulator answers JSON everywhere, then hangs up since the
        # stream may be out of sync.
        self.close_connection = True
        response = _error(code, message or _phrase(code))
        if getattr(self, "command", None) == "HEAD":
            self.wfile.write(self._head(response))
        else:
            self._write(response)

    def do_GET(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def do_PUT(self) -> None:
        self._handle()

    def do_PATCH(self) -> None:
        self._handle()

    def do_DELETE(self) -> None:
        self._handle()

    def _handle(self) -> None:
        emulator = self.server.emulator
        raw_path, _, query = self.path.partition("?")
        body = self._read_body()
        if body is None:
            return
        for prefix in _CONTROL_PREFIXES:
            if raw_path == prefix or raw_path.startswith(prefix + "/"):
                sub = raw_path[len(prefix) :].rstrip("/") or "/"
                self._write(emulator._control(self.command, sub, query, body))
                return
        emulator._serve_api(self, raw_path, body)

    def _read_body(self) -> bytes | None:
        """Read the whole request body, so the next request on the connection parses.

        Returns ``None`` after answering 400 (and closing) when the framing is unreadable.
        """
        encoding = self.headers.get("Transfer-Encoding")
        if encoding is not None and encoding.strip().lower() == "chunked":
            return self._read_chunked()
        length = self.headers.get("Content-Length")
        if length is None:
            return b""
        try:
            size = int(length)
        except ValueError:
            size = -1
        if size < 0:
            self._bad_framing()
            return None
        if size == 0:
            return b""
        data = self.rfile.read(size)
        if len(data) != size:
            self.close_connection = True
            return None
        return data

    def _read_chunked(self) -> bytes | None:
        parts: list[bytes] = []
        while True:
            line = self.rfile.readline(65_537)
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                self._bad_framing()
                return None
            if size == 0:
                while self.rfile.readline(65_537) not in (b"\r\n", b"\n", b""):
                    pass  # trailers carry nothing the emulator needs
                return b"".join(parts)
            chunk = self.rfile.read(size)
            if len(chunk) != size:
                self.close_connection = True
                return None
            parts.append(chunk)
            self.rfile.readline(65_537)  # the CRLF after the chunk

    def _bad_framing(self) -> None:
        self.close_connection = True
        self._write(_error(400, _MSG_BODY))

    def _head(self, response: _Response) -> bytes:
        lines = [f"HTTP/1.1 {response.status} {_phrase(response.status)}"]
        if response.content_type is not None:
            lines.append(f"Content-Type: {response.content_type}")
        lines.append(f"Content-Length: {len(response.body)}")
        for name, value in response.headers:
            lines.append(f"{name}: {value}")
        if self.close_connection:
            lines.append("Connection: close")
        lines.append("\r\n")
        return "\r\n".join(lines).encode("latin-1")

    def _write(self, response: _Response) -> None:
        # Head and body in one send: two small writes would stall on Nagle/delayed ACK.
        self.wfile.write(self._head(response) + response.body)

    def _trickle(self, response: _Response, interval: float) -> None:
        self.wfile.write(self._head(response))
        body = response.body
        for i in range(len(body)):
            time.sleep(interval)
            self.wfile.write(body[i : i + 1])

    def _abort(self) -> None:
        """Drop the connection with a TCP RST and no response (the "reset" fault)."""
        self.close_connection = True
        sock = self.connection
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RST)
        except OSError:
            pass
        # rfile holds a reference on the socket: the descriptor (and the RST) only goes once
        # both are closed. finish() and shutdown_request() tolerate the closed socket.
        self.rfile.close()
        sock.close()


class TextFlowEmulator:
    """A fake TextFlow server on a real socket; see the module docstring for the endpoints.

    All state lives behind one lock, so the server threads and the test thread may read and
    steer it concurrently. ``start()`` binds (port 0 picks a free port) and serves from a
    daemon thread; ``stop()`` closes the listener and every open connection. Use it as a
    context manager, or call ``reset()`` between tests to reuse one instance.

    Extra keyword options beyond the TextFlow knobs: ``record_messages=False`` and
    ``record_requests=False`` stop keeping every SMS / request (counts are still kept), for
    benchmarks that push millions of recipients. ``ssl_context`` (a server-side
    ``ssl.SSLContext`` with a certificate loaded, e.g. from ``trustme``) serves HTTPS, as
    the real TextFlow does; ``url`` then starts with ``https://``.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        api_key: str = EMULATOR_API_KEY,
        delay: float = 0.0,
        code_length: int = 4,
        credits: float = 1000.0,
        price: float = 0.05,
        record_messages: bool = True,
        record_requests: bool = True,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        if not 1 <= code_length <= 18:
            raise ValueError("code_length must be between 1 and 18")
        if delay < 0:
            raise ValueError("delay must not be negative")
        if price < 0:
            raise ValueError("price must not be negative")
        self._host = host
        self._port = port
        self._key = api_key.encode()
        self._initial_delay = float(delay)
        self._delay = float(delay)
        self._code_length = code_length
        self._initial_credits = _to_units(credits)
        self._price = float(price)
        self._price_units = _to_units(price)
        self._record_messages = record_messages
        self._record_requests = record_requests
        self._ssl_context = ssl_context

        self._lock = threading.Lock()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._open: set[socket.socket] = set()

        self._requests: list[RecordedRequest] = []
        self._counts: dict[str, int] = {}
        self._request_total = 0
        # (phone_number, text, kind) tuples: a 500-number bulk batch appends 500 of these,
        # far cheaper than 500 frozen dataclasses; ``messages`` builds SentSMS on read.
        self._messages: list[tuple[str, str, str]] = []
        self._message_count = 0
        self._codes: dict[str, tuple[str, int]] = {}
        self._bulk_pending = 0
        self._credits = self._initial_credits
        self._faults: list[_QueuedFault] = []
        self._connection_count = 0
        self._clock_offset = 0.0

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> TextFlowEmulator:
        """Bind and serve from a daemon thread; return ``self``.

        Raises ``RuntimeError`` if already running and ``OSError`` if the port is taken.
        A restarted emulator rebinds the port it had, so ``url`` stays valid.
        """
        if self._server is not None:
            raise RuntimeError("the emulator is already running")
        server = _Server((self._host, self._port), self)
        self._port = int(server.server_address[1])
        self._server = server
        # A short poll interval keeps stop() fast; the wakeups cost nothing measurable.
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"textflow-emulator:{self._port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and drop open connections (pooled clients then see a closed socket).

        Safe to call twice, or on an emulator that never started.
        """
        server, thread = self._server, self._thread
        if server is None:
            return
        self._server = self._thread = None
        server.shutdown()
        server.server_close()
        with self._lock:
            open_sockets = list(self._open)
        for sock in open_sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if thread is not None:
            thread.join(timeout=5)

    def __enter__(self) -> TextFlowEmulator:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- where it is -----------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The bound port (the requested one before ``start()``)."""
        return self._port

    @property
    def url(self) -> str:
        """Base URL for clients, e.g. ``http://127.0.0.1:54321/api`` (``https`` with TLS).

        Raises ``RuntimeError`` before ``start()`` when the port is still to be picked.
        """
        if self._port == 0:
            raise RuntimeError("start() the emulator before asking for its url")
        host = f"[{self._host}]" if ":" in self._host else self._host
        scheme = "http" if self._ssl_context is None else "https"
        return f"{scheme}://{host}:{self._port}{_API_ROOT}"

    # -- knobs -----------------------------------------------------------------------------

    @property
    def delay(self) -> float:
        """Seconds slept before handling every API request (control requests excluded)."""
        return self._delay

    @delay.setter
    def delay(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("delay must not be negative")
        self._delay = float(seconds)

    @property
    def credits(self) -> float:
        """Credits left; ``/balance`` shows them with five decimals. Settable."""
        with self._lock:
            return self._credits / _UNITS

    @credits.setter
    def credits(self, amount: float) -> None:
        with self._lock:
            self._credits = _to_units(amount)

    def advance_clock(self, seconds: float) -> None:
        """Move the emulator's clock forward, e.g. past a code's expiry, without sleeping.

        Affects code expiry and every ``timestamp``/``expires`` it reports; ``reset()``
        puts the clock back.
        """
        with self._lock:
            self._clock_offset += seconds

    # -- what happened ---------------------------------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every API request in arrival order, faulted and rejected ones included (a copy)."""
        with self._lock:
            return list(self._requests)

    def calls(self, path: str) -> list[RecordedRequest]:
        """The recorded requests to one endpoint, e.g. ``calls("/send-sms")``."""
        path = _normalize_path(path)
        with self._lock:
            return [r for r in self._requests if r.path == path]

    @property
    def request_counts(self) -> dict[str, int]:
        """Requests per endpoint path, kept even when ``record_requests`` is off."""
        with self._lock:
            return dict(self._counts)

    @property
    def messages(self) -> list[SentSMS]:
        """Every SMS accepted, in order (a copy; empty when ``record_messages`` is off)."""
        with self._lock:
            recorded = list(self._messages)
        return [SentSMS(phone, text, kind) for phone, text, kind in recorded]

    @property
    def message_count(self) -> int:
        """How many SMS were accepted (one per bulk recipient), recorded or not."""
        with self._lock:
            return self._message_count

    @property
    def connection_count(self) -> int:
        """TCP connections accepted since start (or the last ``reset()``)."""
        with self._lock:
            return self._connection_count

    def last_code(self, phone_number: str) -> str | None:
        """The live (unexpired) code last issued by ``/send-code`` to that number, if any."""
        with self._lock:
            entry = self._codes.get(phone_number)
            now = self._now_ms_locked()
        if entry is None or entry[1] <= now:
            return None
        return entry[0]

    @property
    def bulk_pending(self) -> int:
        """Recipients of accepted bulk jobs not yet "delivered" (what ``/bulk-count`` says)."""
        with self._lock:
            return self._bulk_pending

    def deliver_bulk(self, n: int | None = None) -> None:
        """Mark ``n`` (default: all) pending bulk recipients delivered; clamps at zero."""
        if n is not None and (not _is_int(n) or n < 0):
            raise ValueError("n must be a non-negative int or None")
        with self._lock:
            self._bulk_pending = 0 if n is None else max(0, self._bulk_pending - n)

    @property
    def pending_faults(self) -> list[Fault]:
        """Queued faults in FIFO order, ``times`` being what is left of each."""
        with self._lock:
            queued = [(q.fault, q.remaining) for q in self._faults]
        return [
            Fault(
                f.kind, f.path, remaining, f.status, f.retry_after, f.delay, f.body, f.content_type
            )
            for f, remaining in queued
        ]

    def reset(self) -> None:
        """Forget requests, messages, codes, pending bulk, faults and connection counts.

        Credits, ``delay`` and the clock go back to their initial values; the port, the key
        and open connections are kept, so pooled clients keep working across tests.
        """
        with self._lock:
            self._requests = []
            self._counts = {}
            self._request_total = 0
            self._messages = []
            self._message_count = 0
            self._codes = {}
            self._bulk_pending = 0
            self._credits = self._initial_credits
            self._faults = []
            self._connection_count = 0
            self._clock_offset = 0.0
            self._delay = self._initial_delay

    # -- faults ----------------------------------------------------------------------------

    def fault(
        self,
        kind: str,
        *,
        path: str | None = None,
        times: int = 1,
        status: int | None = None,
        retry_after: int | str | None = None,
        delay: float | None = None,
        body: str | bytes | None = None,
        content_type: str | None = None,
    ) -> None:
        """Misbehave on the next ``times`` API requests to ``path`` (``None``: any endpoint).

        Queued faults apply in FIFO order, each to the requests its ``path`` matches. A faulted
        request is recorded with ``fault=kind`` and *not* processed (no SMS sent, no code
        changed), except for ``delay`` and ``trickle``. Kinds:

        - ``"status"``: JSON error with HTTP ``status`` (default 500); ``Retry-After`` if
          ``retry_after`` is given.
        - ``"rate_limit"``: 429 JSON with ``Retry-After: retry_after`` (default 1).
        - ``"html"``: ``status`` (default 502) with an HTML error page, ``text/html``.
        - ``"empty"``: ``status`` (default 200) with an empty body.
        - ``"malformed"``: ``status`` (default 200), JSON content type, truncated JSON body.
        - ``"delay"``: processed (the SMS goes out), then answered after ``delay`` s (default 5).
        - ``"reset"``: the request is read, then the connection is dropped with a TCP RST.
        - ``"trickle"``: processed, then the body is sent a byte at a time, ``delay`` s
          (default 0.05) apart.
        - ``"respond"``: answer ``status`` (default 200) with exactly ``body`` (str is sent
          UTF-8 encoded; required) as ``content_type`` (default ``application/json``): for
          replaying documented or odd server answers. ``body``/``content_type`` are only
          accepted with this kind.

        ``retry_after`` is delta seconds (an int >= 0), or a str sent verbatim as the
        ``Retry-After`` value: the HTTP-date form (``email.utils.formatdate(when,
        usegmt=True)``) or anything odd a client must tolerate; it must be printable ASCII
        (header-safe). Only the ``status`` and ``rate_limit`` kinds send it.

        For the answering kinds other than ``delay``/``trickle``, ``delay`` (if given) is slept
        before the faulty answer. Raises ``ValueError`` for an unknown kind or bad values.
        """
        if kind not in Fault.KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; expected one of {sorted(Fault.KINDS)}")
        if not _is_int(times) or times < 1:
            raise ValueError("times must be an int >= 1")
        if status is not None and (not _is_int(status) or not 100 <= status <= 599):
            raise ValueError("status must be an int between 100 and 599")
        if isinstance(retry_after, str):
            # Printable ASCII only: a CR or LF would let a test inject headers by accident.
            if not retry_after or not all(" " <= c <= "~" for c in retry_after):
                raise ValueError("a retry_after str must be non-empty printable ASCII")
        elif retry_after is not None and (not _is_int(retry_after) or retry_after < 0):
            raise ValueError("retry_after must be a non-negative int or a header value str")
        if delay is not None and (
            isinstance(delay, bool) or not isinstance(delay, int | float) or delay < 0
        ):
            raise ValueError("delay must be a non-negative number")
        if kind == Fault.RESPOND:
            if body is None:
                raise ValueError("a 'respond' fault needs a body")
        elif body is not None or content_type is not None:
            raise ValueError("body and content_type are only for the 'respond' fault")
        if body is not None and not isinstance(body, str | bytes):
            raise ValueError("body must be str or bytes")
        if content_type is not None and (
            not isinstance(content_type, str) or "\r" in content_type or "\n" in content_type
        ):
            raise ValueError("content_type must be a one-line str")
        queued = _QueuedFault(
            Fault(
                kind=kind,
                path=None if path is None else _normalize_path(path),
                times=times,
                status=status,
                retry_after=retry_after,
                delay=None if delay is None else float(delay),
                body=body.encode() if isinstance(body, str) else body,
                content_type=content_type,
            )
        )
        with self._lock:
            self._faults.append(queued)

    # -- serving (called from server threads) ----------------------------------------------

    def _connection_opened(self, sock: socket.socket) -> None:
        with self._lock:
            self._connection_count += 1
            self._open.add(sock)

    def _connection_closed(self, sock: socket.socket) -> None:
        with self._lock:
            self._open.discard(sock)

    def _now_ms_locked(self) -> int:
        return int((time.time() + self._clock_offset) * 1000)

    def _now_ms(self) -> int:
        with self._lock:
            return self._now_ms_locked()

    def _arrive(
        self, method: str, path: str, headers: Message, body: bytes, parsed: Any
    ) -> Fault | None:
        """Count and record one API request and take the fault that applies to it, if any."""
        recorded_headers = (
            {name.lower(): value for name, value in headers.items()}
            if self._record_requests
            else {}
        )
        with self._lock:
            self._request_total += 1
            self._counts[path] = self._counts.get(path, 0) + 1
            fault: Fault | None = None
            for index, queued in enumerate(self._faults):
                if queued.fault.path is None or queued.fault.path == path:
                    fault = queued.fault
                    queued.remaining -= 1
                    if queued.remaining <= 0:
                        del self._faults[index]
                    break
            if self._record_requests:
                self._requests.append(
                    RecordedRequest(
                        method=method,
                        path=path,
                        headers=recorded_headers,
                        body=body,
                        json=parsed,
                        fault=None if fault is None else fault.kind,
                    )
                )
        return fault

    def _serve_api(self, handler: _Handler, raw_path: str, body: bytes) -> None:
        """Answer one TextFlow API request on ``handler``'s connection, faults included."""
        if raw_path == _API_ROOT or raw_path.startswith(_API_ROOT + "/"):
            path = raw_path[len(_API_ROOT) :].rstrip("/") or "/"
        else:
            path = raw_path  # outside the API root: recorded as is, answered 404
        parsed: Any = None
        if body:
            try:
                parsed = _json.loads(body)
            except (ValueError, RecursionError):
                parsed = None
        method = handler.command
        fault = self._arrive(method, path, handler.headers, body, parsed)

        if self._delay > 0:
            time.sleep(self._delay)

        if fault is None:
            handler._write(self._respond(method, path, handler.headers, body, parsed))
            return
        kind = fault.kind
        if kind == Fault.DELAY:
            response = self._respond(method, path, handler.headers, body, parsed)
            time.sleep(5.0 if fault.delay is None else fault.delay)
            handler._write(response)
        elif kind == Fault.TRICKLE:
            response = self._respond(method, path, handler.headers, body, parsed)
            handler._trickle(response, 0.05 if fault.delay is None else fault.delay)
        else:
            if fault.delay:
                time.sleep(fault.delay)
            if kind == Fault.RESET:
                handler._abort()
            else:
                handler._write(_fault_response(fault))

    def _respond(
        self, method: str, path: str, headers: Message, body: bytes, parsed: Any
    ) -> _Response:
        """Route, authenticate and process; never raises (a bug answers 500 and is printed)."""
        try:
            expected = _ROUTES.get(path)
            if expected is None:
                return _error(404, "Not found")
            if method != expected:
                return _error(405, "Method not allowed", (("Allow", expected),))
            if not self._authorized(headers.get("Authorization")):
                return _error(400, "Invalid API key")
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
            return _error(500, "Emulator error")

    def _authorized(self, header: str | None) -> bool:
        if header is None:
            return False
        scheme, _, token = header.strip().partition(" ")
        if scheme.lower() != "bearer":
            return False
        # Constant time even in a fake: the app's tests should not learn bad habits here.
        return hmac.compare_digest(token.strip().encode(), self._key)

    # -- the endpoints ---------------------------------------------------------------------

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

    def _send_sms(self, data: Any) -> _Response:
        if not isinstance(data, dict):
            return _error(400, _MSG_BODY)
        phone = data.get("phone_number")
        if not _valid_number(phone):
            return _error(400, _MSG_PHONE)
        text = data.get("text")
        if not isinstance(text, str) or not text:
            return _error(400, _MSG_TEXT)
        with self._lock:
            if not self._charge_locked(1):
                return _error(400, _MSG_BALANCE)
            self._record_locked(phone, text, "sms")
            now = self._now_ms_locked()
        return _ok(
            {
                "ok": True,
                "status": 200,
                "message": "Message sent successfully",
                "data": {
                    "to": phone,
                    "content": text,
                    "country_code": _country_name(phone),
                    "price": self._price,
                    "timestamp": now,
                },
            }
        )

    def _send_code(self, data: Any) -> _Response:
        if not isinstance(data, dict):
            return _error(400, _MSG_BODY)
        phone = data.get("phone_number")
        if not _valid_number(phone):
            return _error(400, _MSG_PHONE)
        service = data.get("service_name")
        if service is not None and not isinstance(service, str):
            return _error(400, _MSG_BODY)
        seconds = data.get("seconds", _DEFAULT_CODE_SECONDS)
        if seconds is None:
            seconds = _DEFAULT_CODE_SECONDS
        if not _is_int(seconds) or not 1 <= seconds <= _MAX_CODE_SECONDS:
            return _error(400, "Invalid seconds")
        code = f"{secrets.randbelow(10**self._code_length):0{self._code_length}d}"
        if service:
            text = f"Your verification code for {service} is: {code}"
        else:
            text = f"Your verification code is: {code}"
        with self._lock:
            if not self._charge_locked(1):
                return _error(400, _MSG_BALANCE)
            expires = self._now_ms_locked() + seconds * 1000
            # A new code replaces the previous one (the contract's stated assumption).
            self._codes[phone] = (code, expires)
            self._record_locked(phone, text, "code")
        return _ok(
            {
                "ok": True,
                "status": 200,
                "message": "Message sent successfully",
                "data": {"verification_code": code, "expires": expires, "message_text": text},
            }
        )

    def _verify_code(self, data: Any) -> _Response:
        if not isinstance(data, dict):
            return _error(400, _MSG_BODY)
        phone = data.get("phone_number")
        if not _valid_number(phone):
            return _error(400, _MSG_PHONE)
        code = data.get("code")
        if _is_int(code):
            code = str(code)
        if not isinstance(code, str):
            return _error(400, "Code is required")
        with self._lock:
            entry = self._codes.get(phone)
            now = self._now_ms_locked()
        # Not consumed on success: the contract tells the app not to rely on that.
        if (
            entry is not None
            and entry[1] > now
            and hmac.compare_digest(code.encode(), entry[0].encode())
        ):
            return _ok(
                {
                    "ok": True,
                    "status": 200,
                    "message": "Code is valid",
                    "valid": True,
                    "valid_code": entry[0],
                    "expires": entry[1],
                }
            )
        return _Response(200, _NOT_VALID_BODY)

    def _bulk_sms(self, data: Any) -> _Response:
        if not isinstance(data, dict):
            return _error(400, _MSG_BODY)
        numbers = data.get("phone_numbers")
        if numbers is None or numbers == []:
            return _error(400, "Phone numbers are required")
        if not isinstance(numbers, list):
            return _error(400, _MSG_BODY)
        match = _E164.fullmatch
        for number in numbers:
            # One bad number rejects the batch, so nothing of it is half-sent.
            if not isinstance(number, str) or match(number) is None:
                return _error(400, _MSG_PHONE)
        text = data.get("text")
        if not isinstance(text, str) or not text:
            return _error(400, _MSG_TEXT)
        count = len(numbers)
        with self._lock:
            if not self._charge_locked(count):
                return _error(400, _MSG_BALANCE)
            self._message_count += count
            if self._record_messages:
                self._messages.extend([(number, text, "bulk") for number in numbers])
            self._bulk_pending += count
        return _ok(
            {"ok": True, "status": 200, "message": "Bulk SMS job started", "data": {"count": count}}
        )

    def _bulk_count(self) -> _Response:
        with self._lock:
            pending = self._bulk_pending
        return _ok(
            {"ok": True, "status": 200, "message": "Bulk SMS count", "data": {"count": pending}}
        )

    def _balance(self) -> _Response:
        with self._lock:
            credits = _format_units(self._credits)
        return _ok({"ok": True, "credits": credits, "packages": dict(_PACKAGES)})

    # -- control endpoints -----------------------------------------------------------------

    def _control(self, method: str, sub: str, query: str, body: bytes) -> _Response:
        """Answer a ``/_emulator/...`` request: no auth, not recorded, never faulted."""
        expected = _CONTROL_ROUTES.get(sub)
        if expected is None:
            return _error(404, "Not found")
        if method != expected:
            return _error(405, "Method not allowed", (("Allow", expected),))
        params = _query_params(query)
        data: Any = {}
        if body:
            try:
                data = _json.loads(body)
            except (ValueError, RecursionError):
                return _error(400, _MSG_BODY)
            if not isinstance(data, dict):
                return _error(400, _MSG_BODY)
        try:
            if sub == "/messages":
                return self._control_messages(params)
            if sub == "/requests":
                with self._lock:
                    counts, total = dict(self._counts), self._request_total
                return _ok({"counts": counts, "total": total})
            if sub == "/state":
                return _ok(self._state())
            if sub == "/last-code":
                phone = params.get("phone_number", "")
                return _ok({"phone_number": phone, "code": self.last_code(phone)})
            if sub == "/reset":
                self.reset()
                return _ok({"ok": True})
            if sub == "/fault":
                kind = data.pop("kind", None)
                if not isinstance(kind, str):
                    return _error(400, "kind is required")
                unknown = set(data) - {
                    "path",
                    "times",
                    "status",
                    "retry_after",
                    "delay",
                    "body",
                    "content_type",
                }
                if unknown:
                    return _error(400, f"Unknown fault options: {', '.join(sorted(unknown))}")
                self.fault(kind, **data)
                return _ok({"ok": True, "pending": len(self.pending_faults)})
            # /deliver-bulk
            self.deliver_bulk(data.get("n"))
            return _ok(self._state())
        except (ValueError, TypeError) as exc:
            return _error(400, str(exc))

    def _control_messages(self, params: Mapping[str, str]) -> _Response:
        phone = params.get("phone_number")
        limit_text = params.get("limit")
        limit: int | None = None
        if limit_text is not None:
            if not limit_text.isdigit():
                return _error(400, "limit must be a non-negative integer")
            limit = int(limit_text)
        with self._lock:
            recorded = (
                [m for m in self._messages if m[0] == phone]
                if phone is not None
                else list(self._messages)
            )
            total = self._message_count
        if limit is not None:
            # The most recent ``limit`` messages, still oldest first: what an inbox page shows.
            recorded = recorded[-limit:] if limit else []
        return _ok(
            {
                "messages": [{"phone_number": p, "text": t, "kind": k} for p, t, k in recorded],
                "total": total,
            }
        )

    def _state(self) -> dict[str, Any]:
        with self._lock:
            return {
                "bulk_pending": self._bulk_pending,
                "credits": _format_units(self._credits),
                "message_count": self._message_count,
                "request_total": self._request_total,
                "connection_count": self._connection_count,
                "pending_faults": sum(q.remaining for q in self._faults),
            }


_NOT_VALID_BODY: Final = _dumps(
    {"ok": True, "status": 200, "message": "Code is not valid", "valid": False}
)


def _fault_response(fault: Fault) -> _Response:
    """The answer for a fault kind that replaces the real response."""
    kind = fault.kind
    if kind == Fault.RATE_LIMIT:
        status = fault.status or 429
        retry = str(1 if fault.retry_after is None else fault.retry_after)
        return _error(status, "Too many requests", (("Retry-After", retry),))
    if kind == Fault.STATUS:
        status = fault.status or 500
        message = "Too many requests" if status == 429 else "Internal server error"
        extra = () if fault.retry_after is None else (("Retry-After", str(fault.retry_after)),)
        return _error(status, message, extra)
    if kind == Fault.HTML:
        status = fault.status or 502
        page = f"<html><body><h1>{status} {_phrase(status)}</h1></body></html>"
        return _Response(status, page.encode(), "text/html")
    if kind == Fault.EMPTY:
        return _Response(fault.status or 200, b"")
    if kind == Fault.RESPOND:
        return _Response(fault.status or 200, fault.body or b"", fault.content_type or _JSON)
    # malformed
    return _Response(fault.status or 200, _MALFORMED_BODY)


def _query_params(query: str) -> dict[str, str]:
    """Last value per name. A literal ``+`` in a hand-typed URL decodes to a space, so a value
    starting with a space is read as a phone number's leading ``+``."""
    params = {k: v[-1] for k, v in parse_qs(query, keep_blank_values=True).items()}
    phone = params.get("phone_number")
    if phone is not None and phone.startswith(" "):
        params["phone_number"] = "+" + phone[1:]
    return params
