"""The emulator's HTTP server: sockets, threads, TLS and HTTP/1.1 framing, and nothing else.

:class:`Server` accepts connections (wrapping them in TLS when given a context) and serves
each from its own daemon thread; :class:`Handler` reads one request at a time off a kept-alive
connection (``Content-Length`` or chunked), hands it whole to its :class:`Host` (the
emulator), and writes answers: in one piece, a byte at a time (the "trickle" fault), or not
at all, dropping the connection with a TCP RST (the "reset" fault). What to answer is the
host's business.
"""

from __future__ import annotations

import socket
import socketserver
import ssl
import struct
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Final, Protocol

from ._responses import MSG_BODY, Response, error, phrase

__all__ = ["Handler", "Host", "Server"]

_LINGER_RST: Final = struct.pack("ii", 1, 0)


class Host(Protocol):
    """What the HTTP layer needs from the emulator that owns it (called from server threads)."""

    def _connection_opened(self, sock: socket.socket) -> None:
        """A connection was accepted (before any TLS handshake)."""

    def _connection_closed(self, sock: socket.socket) -> None:
        """A connection is done with, whatever the reason."""

    def _serve(self, handler: Handler, raw_path: str, query: str, body: bytes) -> None:
        """Answer one request whose body is read, through ``handler``'s write methods."""


class Server(ThreadingHTTPServer):
    """The listening server; one daemon thread per TCP connection."""

    daemon_threads = True
    # The default backlog of 5 drops SYNs (1 s retransmits) when a non-pooled benchmark
    # opens connections faster than the accept loop runs.
    request_queue_size = 256

    def __init__(
        self, address: tuple[str, int], host: Host, ssl_context: ssl.SSLContext | None
    ) -> None:
        self.host = host
        self.ssl_context = ssl_context
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, Handler)

    def get_request(self) -> tuple[socket.socket, Any]:
        sock, address = super().get_request()
        context = self.ssl_context
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


class Handler(BaseHTTPRequestHandler):
    """Parses one HTTP/1.1 request at a time on a kept-alive connection and answers it."""

    protocol_version = "HTTP/1.1"
    server_version = "TextFlowEmulator/1"
    # Trickled bytes must leave one by one, and small responses must not wait on the peer's
    # delayed ACK.
    disable_nagle_algorithm = True
    server: Server

    def setup(self) -> None:
        super().setup()
        self.server.host._connection_opened(self.connection)
        if isinstance(self.connection, ssl.SSLSocket):
            try:
                self.connection.do_handshake()
            except BaseException:
                # finish() does not run when setup() fails.
                self.server.host._connection_closed(self.connection)
                raise

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.host._connection_closed(self.connection)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - base signature
        # The access log is noise in test output and costs throughput in benchmarks.
        return

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        # The base class answers unparseable requests, unknown methods and oversized headers
        # with an HTML page; the emulator answers JSON everywhere, then hangs up since the
        # stream may be out of sync.
        self.close_connection = True
        response = error(code, message or phrase(code))
        if getattr(self, "command", None) == "HEAD":
            self.wfile.write(self._head(response))
        else:
            self.write_response(response)

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
        raw_path, _, query = self.path.partition("?")
        body = self._read_body()
        if body is None:
            return
        self.server.host._serve(self, raw_path, query, body)

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
        self.write_response(error(400, MSG_BODY))

    def _head(self, response: Response) -> bytes:
        lines = [f"HTTP/1.1 {response.status} {phrase(response.status)}"]
        if response.content_type is not None:
            lines.append(f"Content-Type: {response.content_type}")
        lines.append(f"Content-Length: {len(response.body)}")
        for name, value in response.headers:
            lines.append(f"{name}: {value}")
        if self.close_connection:
            lines.append("Connection: close")
        lines.append("\r\n")
        return "\r\n".join(lines).encode("latin-1")

    def write_response(self, response: Response) -> None:
        """Send ``response``, head and body together."""
        # Head and body in one send: two small writes would stall on Nagle/delayed ACK.
        self.wfile.write(self._head(response) + response.body)

    def trickle_response(self, response: Response, interval: float) -> None:
        """Send the head of ``response``, then its body a byte every ``interval`` seconds."""
        self.wfile.write(self._head(response))
        body = response.body
        for i in range(len(body)):
            time.sleep(interval)
            self.wfile.write(body[i : i + 1])

    def reset_connection(self) -> None:
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
