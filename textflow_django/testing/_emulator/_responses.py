"""What every answer of the emulator is made of, and TextFlow's error body.

An answer is a status, a body, a content type and extra headers (:class:`Response`), written
in one piece by the HTTP layer. Errors take TextFlow's shape, ``{"ok": false, "status": n,
"message": "..."}``, whoever produces them (the API, a fault, the control endpoints or the
HTTP layer refusing an unreadable request), so a client sees one error format everywhere;
:func:`for_path` adds what one endpoint's refusals carry besides.
"""

from __future__ import annotations

import json
from functools import lru_cache
from http import HTTPStatus
from typing import Final

__all__ = ["JSON_TYPE", "MSG_BODY", "Response", "dumps", "error", "for_path", "ok", "phrase"]

JSON_TYPE: Final = "application/json"
#: TextFlow's message for a body it cannot read; also what unreadable framing gets.
MSG_BODY: Final = "Invalid request body"


class Response:
    """A response ready to be written: status, body, content type and extra headers.

    ``content_type=None`` sends no ``Content-Type`` header at all.
    """

    __slots__ = ("body", "content_type", "headers", "status")

    def __init__(
        self,
        status: int,
        body: bytes,
        content_type: str | None = JSON_TYPE,
        headers: tuple[tuple[str, str], ...] = (),
    ) -> None:
        self.status = status
        self.body = body
        self.content_type = content_type
        self.headers = headers


def dumps(obj: object) -> bytes:
    """Compact JSON bytes, as TextFlow sends them."""
    return json.dumps(obj, separators=(",", ":")).encode()


@lru_cache(maxsize=64)
def _error_body(status: int, message: str) -> bytes:
    # Error bodies repeat constantly under load (auth failures, faults); build each once.
    return dumps({"ok": False, "status": status, "message": message})


def error(status: int, message: str, headers: tuple[tuple[str, str], ...] = ()) -> Response:
    """A TextFlow error answer: JSON ``{"ok": false, "status", "message"}`` with ``status``."""
    return Response(status, _error_body(status, message), JSON_TYPE, headers)


def for_path(path: str, response: Response) -> Response:
    """``response`` as TextFlow answers it on ``path``: an error answer of ``/verify-code``
    (any JSON ``{"ok": false, ...}``) also says ``"valid": false``.

    TextFlow's own Python client reads ``valid`` from every verify-code answer, errors
    included, and puts ``valid: false`` in the errors it makes itself: the real API evidently
    does the same. Anything else is returned as it is.
    """
    if path != "/verify-code" or response.content_type != JSON_TYPE or response.status < 400:
        return response
    try:
        body = json.loads(response.body)
    except ValueError:
        return response
    if not isinstance(body, dict) or body.get("ok") is not False:
        return response
    body["valid"] = False
    return Response(response.status, dumps(body), response.content_type, response.headers)


def ok(payload: object) -> Response:
    """A 200 answer with ``payload`` as JSON."""
    return Response(200, dumps(payload))


@lru_cache(maxsize=64)
def phrase(status: int) -> str:
    """The reason phrase for ``status`` (``"Unknown"`` for a code HTTP does not name)."""
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"
