"""The emulator itself: a TextFlow stand-in that runs a real HTTP server on loopback.

:class:`TextFlowEmulator` owns what a test steers and asserts on: the server's lifecycle
(listening socket, serving thread, TLS), its clock, the record of API requests and the queue
of faults, and the outage in force. It ties the other pieces together: ``_http`` moves bytes,
``_api`` answers as TextFlow would, ``_faults`` misbehaves on request, ``_outage`` says what
each outage mode does and ``_control`` serves ``/_emulator/...``. All state, the API's account
included, lives behind one lock.

Why one module of over 400 lines: :class:`TextFlowEmulator` is the one object a test holds,
and its public surface (lifecycle, knobs, its views of what happened, ``fault()`` with the
catalogue of fault kinds, and ``outage()``) is documented where it is called. The work behind
each member lives in the other modules; this one records requests and delegates. An outage
stays here because a ``"down"`` one closes and reopens the listening socket, which is the
lifecycle's own business.
"""

from __future__ import annotations

import json
import socket
import ssl
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from email.message import Message
from types import TracebackType
from typing import Any

from ..._emulator_key import EMULATOR_API_KEY
from . import _control
from ._api import API_ROOT, SentSMS, TextFlowAPI, normalize_path
from ._bulk import check_rate
from ._faults import Fault, FaultQueue, make_fault, misbehave
from ._http import Handler, Server
from ._outage import DOWN, Outage, make_outage
from ._replies import (
    DEFAULT_ATTEMPTS,
    DEFAULT_BACKOFF,
    Reply,
    check_reply_url,
    check_schedule,
    forward,
    payload,
)

__all__ = ["EMULATOR_API_KEY", "RecordedRequest", "TextFlowEmulator"]


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


class TextFlowEmulator:
    """A fake TextFlow server on a real socket, answering the API endpoints listed in the
    package docstring and the control endpoints listed in ``_control``'s.

    All state lives behind one lock, so the server threads and the test thread may read and
    steer it concurrently. ``start()`` binds (port 0 picks a free port) and serves from a
    daemon thread; ``stop()`` closes the listener and every open connection. Use it as a
    context manager, or call ``reset()`` between tests to reuse one instance.

    ``bulk_rate`` is how many bulk recipients TextFlow reaches per second of the emulator's
    clock (``advance_clock()`` moves it too): ``/bulk-count`` drops by itself, a 10-recipient
    job in two seconds at the default 5.0. ``0`` delivers only on ``deliver_bulk()``, for tests
    that count exactly (the pytest plugin's emulator uses 0). ``on_message`` is called with
    each :class:`SentSMS` accepted (one per bulk recipient), from the server's threads.

    Extra keyword options beyond the TextFlow knobs: ``record_messages=False`` and
    ``record_requests=False`` stop keeping every SMS / request (counts are still kept), for
    benchmarks that push millions of recipients. ``ssl_context`` (a server-side
    ``ssl.SSLContext`` with a certificate loaded, e.g. from ``trustme``) serves HTTPS, as
    the real TextFlow does; ``url`` then starts with ``https://``.

    ``reply_url`` and ``reply_secret`` are the account's reply settings: where
    :meth:`reply` POSTs what a phone answers, with which secret (both settable; ``reset()``
    puts back the constructor's).
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
        bulk_rate: float = 5.0,
        on_message: Callable[[SentSMS], None] | None = None,
        clock: Callable[[], float] = time.time,
        reply_url: str | None = None,
        reply_secret: str = "",
    ) -> None:
        if not 1 <= code_length <= 18:
            raise ValueError("code_length must be between 1 and 18")
        if delay < 0:
            raise ValueError("delay must not be negative")
        if price < 0:
            raise ValueError("price must not be negative")
        self._host = host
        self._port = port
        self._initial_delay = float(delay)
        self._delay = float(delay)
        self._record_requests = record_requests
        self._ssl_context = ssl_context
        # Seconds since the epoch: the wall clock, or a test's fixed one, which then moves
        # only by advance_clock() (code expiry and bulk delivery, whatever the machine's speed).
        self._clock = clock

        self._lock = threading.Lock()
        # Held to change what listens (start, stop, an outage going down or up); taken before
        # ``_lock`` when both are needed, never while holding it.
        self._life = threading.RLock()
        self._running = False
        self._server: Server | None = None
        self._thread: threading.Thread | None = None
        self._open: set[socket.socket] = set()
        # Connections answering a control request right now (spared by an outage going down).
        self._controlling: set[socket.socket] = set()
        self._outage: Outage | None = None
        self._outage_ends: float | None = None  # time.monotonic() when it lifts itself
        self._outage_timer: threading.Timer | None = None

        self._api = TextFlowAPI(
            lock=self._lock,
            now_ms_locked=self._now_ms_locked,
            api_key=api_key,
            code_length=code_length,
            credits=credits,
            price=price,
            record_messages=record_messages,
            bulk_rate=check_rate(bulk_rate),
            on_message=on_message,
        )
        self._requests: list[RecordedRequest] = []
        self._counts: dict[str, int] = {}
        self._request_total = 0
        self._faults = FaultQueue()
        self._connection_count = 0
        self._clock_offset = 0.0
        self._initial_reply = (check_reply_url(reply_url), _check_secret(reply_secret))
        self._reply_url, self._reply_secret = self._initial_reply
        self._replies: list[Reply] = []

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> TextFlowEmulator:
        """Bind and serve from a daemon thread; return ``self``.

        Raises ``RuntimeError`` if already running and ``OSError`` if the port is taken.
        A restarted emulator rebinds the port it had, so ``url`` stays valid.
        """
        with self._life:
            if self._running:
                raise RuntimeError("the emulator is already running")
            self._listen()
            self._running = True
        return self

    def stop(self) -> None:
        """Stop serving and drop open connections (pooled clients then see a closed socket).

        Lifts an outage. Safe to call twice, or on an emulator that never started.
        """
        with self._life:
            if not self._running:
                return
            self._running = False
            self._end_outage_locked()
            self._unlisten()
            self._drop_connections(spare_control=False)

    def _listen(self) -> None:
        """Bind the port (the one it had, once picked) and serve it from a daemon thread."""
        server = Server((self._host, self._port), self, self._ssl_context)
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

    def _unlisten(self) -> None:
        """Close the listening socket (connections are refused from now on); open
        connections stay. Nothing to do when not listening."""
        server, thread = self._server, self._thread
        if server is None:
            return
        self._server = self._thread = None
        server.shutdown()
        server.server_close()
        if thread is not None:
            thread.join(timeout=5)

    def _drop_connections(self, *, spare_control: bool) -> None:
        """Shut down every open connection, except (``spare_control``) those answering a
        control request right now: the request that took the emulator down gets its answer."""
        with self._lock:
            doomed = [s for s in self._open if not (spare_control and s in self._controlling)]
        for sock in doomed:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

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
        return f"{scheme}://{host}:{self._port}{API_ROOT}"

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
        return self._api.credits

    @credits.setter
    def credits(self, amount: float) -> None:
        self._api.credits = amount

    @property
    def reply_url(self) -> str | None:
        """Where :meth:`reply` POSTs replies (an http(s) URL), or ``None``. Settable."""
        return self._reply_url

    @reply_url.setter
    def reply_url(self, url: str | None) -> None:
        self._reply_url = check_reply_url(url)

    @property
    def reply_secret(self) -> str:
        """The ``secret`` each reply carries (``""`` unless set). Settable; never shown."""
        return self._reply_secret

    @reply_secret.setter
    def reply_secret(self, secret: str) -> None:
        self._reply_secret = _check_secret(secret)

    def advance_clock(self, seconds: float) -> None:
        """Move the emulator's clock forward, e.g. past a code's expiry, without sleeping.

        Affects code expiry, bulk delivery (``bulk_rate``) and every ``timestamp``/``expires``
        it reports; ``reset()`` puts the clock back.
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
        path = normalize_path(path)
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
        return self._api.messages()

    @property
    def message_count(self) -> int:
        """How many SMS were accepted (one per bulk recipient), recorded or not."""
        return self._api.message_count()

    @property
    def connection_count(self) -> int:
        """TCP connections accepted since start (or the last ``reset()``)."""
        with self._lock:
            return self._connection_count

    def last_code(self, phone_number: str) -> str | None:
        """The code in the newest code SMS to that number, if any: the live (unexpired) one
        ``/send-code`` issued, or the one a site in local mode sent by ``/send-sms`` in
        TextFlow's wording (``Your verification code for Acme is: 123456``), whichever came
        last. Bulk SMS are not read."""
        return self._api.last_code(phone_number)

    @property
    def bulk_pending(self) -> int:
        """Recipients of accepted bulk jobs not yet "delivered" (what ``/bulk-count`` says):
        they are delivered at ``bulk_rate`` per second of the emulator's clock."""
        return self._api.bulk_pending()

    def deliver_bulk(self, n: int | None = None) -> None:
        """Mark ``n`` (default: all) pending bulk recipients delivered; clamps at zero."""
        self._api.deliver_bulk(n)

    @property
    def bulk_rate(self) -> float:
        """Bulk recipients delivered per second of the emulator's clock; 0 delivers only on
        ``deliver_bulk()``. Settable (what was due at the old rate is delivered first);
        ``reset()`` puts back the constructor's value."""
        return self._api.bulk_rate

    @bulk_rate.setter
    def bulk_rate(self, rate: float) -> None:
        self._api.bulk_rate = rate

    @property
    def replies(self) -> list[Reply]:
        """Every reply :meth:`reply` forwarded (or tried to), oldest first (a copy)."""
        with self._lock:
            return list(self._replies)

    @property
    def pending_faults(self) -> list[Fault]:
        """Queued faults in FIFO order, ``times`` being what is left of each."""
        with self._lock:
            return self._faults.pending()

    def reset(self) -> None:
        """Forget requests, messages, codes, pending bulk, faults and connection counts.

        Credits, ``delay``, the clock and the reply settings go back to their initial values,
        replies are forgotten and an outage is lifted; the port, the key and open connections
        are kept, so pooled clients keep working across tests.
        """
        with self._life:
            if self._running:
                self._set_outage_locked(None)
        with self._lock:
            self._requests = []
            self._counts = {}
            self._request_total = 0
            self._api.reset_locked()
            self._faults.clear()
            self._connection_count = 0
            self._clock_offset = 0.0
            self._delay = self._initial_delay
            self._replies = []
            self._reply_url, self._reply_secret = self._initial_reply

    # -- replies ---------------------------------------------------------------------------

    def reply(
        self,
        phone_number: str,
        text: str,
        *,
        attempts: int = DEFAULT_ATTEMPTS,
        backoff: float = DEFAULT_BACKOFF,
    ) -> Reply:
        """A phone at ``phone_number`` answers ``text``: POST it to ``reply_url`` as TextFlow
        does, JSON ``{"phone_number", "text", "secret"}``, and return what happened (also kept
        in :attr:`replies`).

        Any answer but HTTP 200, or none, is retried: ``attempts`` tries in all, waiting
        ``backoff`` seconds before the first retry and twice as long before each next one, on
        the emulator's clock: a real wait on the wall clock; on a test's ``clock``, which moves
        only when told, the emulator moves it forward itself (as :meth:`advance_clock` does),
        so no time really passes. Blocks until the last attempt. Raises ``RuntimeError`` when
        no ``reply_url`` is set and ``ValueError`` for a number that is not E.164, an empty
        text, or ``attempts`` (1 to 10) or ``backoff`` (0 to 60 s) out of range.
        """
        url = self._reply_url
        body = payload(phone_number, text, self._reply_secret)
        attempts, backoff = check_schedule(attempts, backoff)
        if url is None:
            raise RuntimeError("no reply_url: set where replies go before replying")
        statuses = forward(url, body, attempts=attempts, backoff=backoff, wait=self._wait)
        made = Reply(phone_number, text, url, statuses)
        with self._lock:
            self._replies.append(made)
        return made

    def _wait(self, seconds: float) -> None:
        """Let ``seconds`` pass on the emulator's clock (see :meth:`reply`)."""
        if self._clock is time.time:
            time.sleep(seconds)
        else:
            self.advance_clock(seconds)

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
        made = make_fault(
            kind,
            path=path,
            times=times,
            status=status,
            retry_after=retry_after,
            delay=delay,
            body=body,
            content_type=content_type,
        )
        with self._lock:
            self._faults.add(made)

    # -- outages ---------------------------------------------------------------------------

    def outage(
        self,
        mode: str | None,
        *,
        delay: float | None = None,
        status: int | None = None,
        retry_after: int | None = None,
        duration: float | None = None,
    ) -> None:
        """Make every API request misbehave from now on, until ``outage(None)``, ``reset()``,
        ``stop()`` or ``duration`` seconds (real time) have passed; replaces any outage in force.

        - ``"down"``: the port is closed (every connection refused, open ones dropped), as if
          TextFlow were stopped; the control endpoints are unreachable until it ends.
        - ``"slow"``: processed at once, answered after ``delay`` seconds (default 15, past
          textflow_django's default ``TIMEOUT`` of 10 s).
        - ``"error"``: answered ``status`` (default 500; 500-599), not processed.
        - ``"rate_limited"``: answered 429 with ``Retry-After: retry_after`` (default 10),
          not processed.
        - ``None``: lift the outage (a ``"down"`` emulator listens on its port again).

        Queued faults are neither applied nor used up during an outage; control requests are
        never affected. Raises ``ValueError`` for a bad mode or option (each option belongs
        to one mode), ``RuntimeError`` if the emulator is not running, and ``OSError`` if
        the port was taken meanwhile when coming back up (it then stays down).
        """
        made = make_outage(
            mode, delay=delay, status=status, retry_after=retry_after, duration=duration
        )
        with self._life:
            if not self._running:
                raise RuntimeError("start() the emulator before switching an outage")
            self._set_outage_locked(made)

    @property
    def current_outage(self) -> Outage | None:
        """The outage in force, or ``None``."""
        with self._lock:
            return self._outage

    def _set_outage_locked(self, made: Outage | None) -> None:
        """Put ``made`` in force (``None``: lift), going down or up as needed. Holds ``_life``."""
        was_down = self._outage is not None and self._outage.mode == DOWN
        goes_down = made is not None and made.mode == DOWN
        self._end_outage_locked()
        if was_down and not goes_down:
            try:
                self._listen()
            except OSError:
                with self._lock:
                    self._outage = Outage(DOWN)  # still down, with nothing to lift it by itself
                raise
        with self._lock:
            self._outage = made
            if made is not None and made.duration is not None:
                self._outage_ends = time.monotonic() + made.duration
        if goes_down and not was_down:
            self._unlisten()
            self._drop_connections(spare_control=True)
        if made is not None and made.duration is not None:
            timer = threading.Timer(made.duration, self._outage_over, args=(made,))
            timer.daemon = True
            self._outage_timer = timer
            timer.start()

    def _end_outage_locked(self) -> None:
        """Forget the outage in force and its timer; what listens is the caller's business."""
        if self._outage_timer is not None:
            self._outage_timer.cancel()
            self._outage_timer = None
        with self._lock:
            self._outage = None
            self._outage_ends = None

    def _outage_over(self, outage: Outage) -> None:
        """The timer of ``outage`` ran out: lift it, unless another replaced it meanwhile."""
        with self._life:
            if not self._running or self._outage is not outage:
                return
            try:
                self._set_outage_locked(None)
            except OSError as exc:
                print(f"textflow emulator: could not listen again: {exc}", file=sys.stderr)

    def _outage_view_locked(self) -> dict[str, Any] | None:
        outage = self._outage
        if outage is None:
            return None
        ends = self._outage_ends
        return outage.describe(None if ends is None else ends - time.monotonic())

    # -- serving (called from server threads) ----------------------------------------------

    def _connection_opened(self, sock: socket.socket) -> None:
        with self._lock:
            self._connection_count += 1
            self._open.add(sock)

    def _connection_closed(self, sock: socket.socket) -> None:
        with self._lock:
            self._open.discard(sock)

    def _now_ms_locked(self) -> int:
        # The emulator's clock, in ms: wall time plus what advance_clock() added.
        return int((self._clock() + self._clock_offset) * 1000)

    def _serve(self, handler: Handler, raw_path: str, query: str, body: bytes) -> None:
        """Answer one request: a control request, or one to the TextFlow API."""
        sub = _control.control_path(raw_path)
        if sub is None:
            self._serve_api(handler, raw_path, body)
            return
        sock = handler.connection
        with self._lock:
            self._controlling.add(sock)
        try:
            response = _control.answer(self, handler.command, sub, query, body)
        finally:
            with self._lock:
                self._controlling.discard(sock)
                down = self._outage is not None and self._outage.mode == DOWN
        if down:
            handler.close_connection = True  # nothing stays connected to a stopped TextFlow
        handler.write_response(response)

    def _serve_api(self, handler: Handler, raw_path: str, body: bytes) -> None:
        """Answer one TextFlow API request on ``handler``'s connection, faults included."""
        if raw_path == API_ROOT or raw_path.startswith(API_ROOT + "/"):
            path = raw_path[len(API_ROOT) :].rstrip("/") or "/"
        else:
            path = raw_path  # outside the API root: recorded as is, answered 404
        parsed: Any = None
        if body:
            try:
                parsed = json.loads(body)
            except (ValueError, RecursionError):
                parsed = None
        method = handler.command
        fault = self._arrive(method, path, handler.headers, body, parsed)

        if self._delay > 0:
            time.sleep(self._delay)

        if fault is None:
            handler.write_response(self._api.respond(method, path, handler.headers, parsed))
        else:
            misbehave(
                handler,
                fault,
                lambda: self._api.respond(method, path, handler.headers, parsed),
                path,
            )

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
            outage = self._outage
            # An outage masks the queued faults: they wait, unspent, for the service to return.
            fault = self._faults.take(path) if outage is None else outage.fault
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

    # -- read by the control endpoints -----------------------------------------------------

    def _state(self) -> dict[str, Any]:
        with self._lock:
            return {
                **self._api.snapshot_locked(),
                "request_total": self._request_total,
                "connection_count": self._connection_count,
                "pending_faults": self._faults.remaining(),
                "outage": self._outage_view_locked(),
            }

    def _request_totals(self) -> tuple[dict[str, int], int]:
        with self._lock:
            return dict(self._counts), self._request_total

    def _recorded_messages(
        self, phone_number: str | None
    ) -> tuple[list[tuple[str, str, str]], int]:
        with self._lock:
            return self._api.recorded_locked(phone_number)


def _check_secret(secret: object) -> str:
    if not isinstance(secret, str):
        raise ValueError("reply_secret must be a str")
    return secret
