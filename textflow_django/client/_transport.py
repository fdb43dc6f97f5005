"""The client's transport: one HTTP request to TextFlow and its raw answer, with no knowledge of
TextFlow's API.

Two paths, one contract:

- The client's *own* session is configured once, and its requests go straight to the urllib3
  pool of its adapter (TLS settings, retries and the session's headers apply; its auth,
  cookies and hooks are not used): ``Session.request`` re-merges every session setting on
  every call and ``HTTPAdapter.send`` rebuilds what never changes, which together cost more
  CPU than the call itself to a nearby server.
- A session passed with ``session=``, a proxied URL, another adapter mounted on the own
  session, or a patched ``HTTPAdapter.send`` (the ``responses`` test library) all go through
  requests as usual.

Whatever the path, a failure is classified by :meth:`Transport.error_for` into a
``TextFlowError`` whose ``maybe_sent`` says whether the request may have left; only
connection failures before sending are retried (by urllib3's ``Retry``, ``connect`` only).
"""

from __future__ import annotations

import json
import os
import time
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

from .._errors import (
    ClientConfigurationError,
    TextFlowBadResponse,
    TextFlowConnectionError,
    TextFlowError,
    TextFlowTimeout,
)

__all__ = [
    "CONNECT_RETRIES",
    "MAX_RESPONSE_BYTES",
    "TRANSPORT_ERRORS",
    "Transport",
    "longest_call",
]

#: Connection attempts retried when nothing was sent yet (refused, DNS, connect timeout).
CONNECT_RETRIES = 2
#: A TextFlow answer is a small JSON envelope; anything larger is not TextFlow talking.
MAX_RESPONSE_BYTES = 1024 * 1024
#: What :meth:`Transport.send` may raise for a failed request (see :meth:`Transport.error_for`).
TRANSPORT_ERRORS = (requests.RequestException, urllib3.exceptions.HTTPError, OSError)


def longest_call(timeout: float) -> float:
    """The longest one call of a client with this ``timeout`` may last, in seconds: up to
    ``1 + CONNECT_RETRIES`` connection attempts of ``timeout`` each (retried only while
    nothing was sent), then ``timeout`` waiting for the answer (whose body must arrive by
    a deadline ``timeout`` after the call began: :meth:`Transport.read`).

    The one home of this bound: what must outlast a call in flight is sized from it (the
    circuit breaker's shared trial slot, the bulk sender's lease floor). Not counted:
    urllib3's backoff between connection attempts (0.2 s in all with two retries) and name
    resolution: the trial slot adds a whole second for them, the lease floor leaves them
    to the lease's margin over it.
    """
    return (CONNECT_RETRIES + 2) * timeout


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


def _discard(response: BaseHTTPResponse) -> None:
    """Close a half-read answer and give its (now closed) connection back to the pool, as
    requests' ``Response.close()`` does: the pool opens a fresh one next time."""
    response.close()
    response.release_conn()


class Transport:
    """Sends requests under ``base_url`` with ``headers`` and a whole-call ``timeout``.

    Args:
        base_url: the API root, without a trailing slash.
        timeout: seconds allowed for a whole call (connect, send and read the answer).
        headers: sent with every request, over the session's own headers.
        session: a ``requests.Session`` to use instead of a new pooled one.

    Raises:
        ClientConfigurationError: ``base_url`` is not a URL.
    """

    def __init__(
        self,
        base_url: str,
        *,
        timeout: float,
        headers: dict[str, str],
        session: requests.Session | None = None,
    ) -> None:
        self.base_url = base_url
        self.timeout = timeout
        self.headers = headers
        self.session = session if session is not None else self._new_session(base_url)
        self.own_session = session is None
        # Normalised once (IDNA, quoting), as Session.request would on every call.
        root = requests.PreparedRequest()
        try:
            root.prepare_url(base_url, None)
        except requests.RequestException as err:
            raise ClientConfigurationError(
                f"The TextFlow base URL {base_url!r} is not a valid URL."
            ) from err
        self._url_root = (root.url or base_url).rstrip("/")
        self._path_root = root.path_url.rstrip("/")
        # The own session's urllib3 pool, once used, and the TLS settings it was made for.
        self._pool: Any = None
        self._pool_tls: tuple[Any, Any] = (None, None)
        self._pool_timeout = urllib3.Timeout(connect=timeout, read=timeout)

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

    def send(self, method: str, path: str, payload: dict[str, Any] | None) -> BaseHTTPResponse:
        """Send one request (no redirects followed); return urllib3's unread response.

        Raises one of :data:`TRANSPORT_ERRORS` (requests', urllib3's, or ``OSError``), which
        :meth:`error_for` classifies, or whatever building the request raised."""
        session = self.session
        if not self.own_session:
            raw: BaseHTTPResponse = session.request(
                method,
                self.base_url + path,
                json=payload,
                headers=self.headers,
                timeout=self.timeout,
                stream=True,
                allow_redirects=False,
            ).raw
            return raw
        url = self._url_root + path
        headers = CaseInsensitiveDict(session.headers)
        headers.update(self.headers)
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

    def error_for(self, err: BaseException, path: str) -> TextFlowError:
        """The ``TextFlowError`` for a failure of :meth:`send`, requests' or urllib3's.

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

    def read(self, response: BaseHTTPResponse, deadline: float, path: str) -> bytes:
        """Read the body, giving up at the ``deadline`` (a ``time.monotonic()`` value) or past
        ``MAX_RESPONSE_BYTES``; either raises a ``TextFlowError`` with ``maybe_sent``.

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
