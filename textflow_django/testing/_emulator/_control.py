"""The control endpoints: inspect and steer a running emulator over HTTP.

They let a separately-run emulator (``python -m textflow_django.testing``, the demo, the
benchmarks) be inspected and steered. They need no auth, are never recorded and never
faulted, and are served both at ``/_emulator/...`` and ``/api/_emulator/...``:

- ``GET  /_emulator/messages[?phone_number=+1...&limit=N]`` -> ``{"messages": [...], "total": n}``
- ``GET  /_emulator/requests`` -> ``{"counts": {"/send-sms": 3, ...}, "total": n}``
- ``GET  /_emulator/state`` -> ``{"bulk_pending": n, "bulk_rate": r, "credits": "...",
  "message_count": n, "request_total": n, "connection_count": n, "pending_faults": n,
  "outage": {...} | null}``
- ``GET  /_emulator/last-code?phone_number=+1...`` -> ``{"phone_number": ..., "code": str|null}``
  (the code in the newest code SMS to that number, by ``/send-code`` or local mode)
- ``POST /_emulator/reset``
- ``POST /_emulator/fault`` with the keyword arguments of :meth:`TextFlowEmulator.fault` as JSON
- ``POST /_emulator/deliver-bulk`` with ``{"n": int | null}``
- ``POST /_emulator/outage`` with ``{"mode": "down" | "slow" | "error" | "rate_limited" | null}``
  and the options of :meth:`TextFlowEmulator.outage` (``"down"`` needs ``duration`` here:
  nothing could reach the emulator to lift it) -> ``{"outage": {...} | null}``
- ``POST /_emulator/reply`` with ``{"phone_number": "+1...", "text": "STOP"}`` (and
  optionally ``attempts``, ``backoff``): a phone replies, forwarded to the reply URL as
  TextFlow does (:meth:`TextFlowEmulator.reply`) -> the reply's record (``attempts``,
  ``status``, ``statuses``, ``delivered``...); 409 when no reply URL is set
- ``GET  /_emulator/replies`` -> ``{"replies": [...], "total": n}``, oldest first

Each one is a thin HTTP face on a method of the emulator (:class:`Steerable` lists them).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Final, Protocol
from urllib.parse import parse_qs

from ._faults import Fault
from ._replies import Reply
from ._responses import MSG_BODY, Response, error, ok

__all__ = ["Steerable", "answer", "control_path"]

_PREFIXES: Final = ("/_emulator", "/api/_emulator")
# Endpoint -> the one method it answers.
_ROUTES: Final[dict[str, str]] = {
    "/messages": "GET",
    "/requests": "GET",
    "/state": "GET",
    "/last-code": "GET",
    "/reset": "POST",
    "/fault": "POST",
    "/deliver-bulk": "POST",
    "/outage": "POST",
    "/reply": "POST",
    "/replies": "GET",
}
_FAULT_OPTIONS: Final = frozenset(
    {"path", "times", "status", "retry_after", "delay", "body", "content_type"}
)
_OUTAGE_OPTIONS: Final = frozenset({"delay", "status", "retry_after", "duration"})
_REPLY_FIELDS: Final = frozenset({"phone_number", "text", "attempts", "backoff"})


class Steerable(Protocol):
    """What the control endpoints read and steer: the emulator's own methods."""

    def reset(self) -> None: ...

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
    ) -> None: ...

    def deliver_bulk(self, n: int | None = None) -> None: ...

    def outage(
        self,
        mode: str | None,
        *,
        delay: float | None = None,
        status: int | None = None,
        retry_after: int | None = None,
        duration: float | None = None,
    ) -> None: ...

    def last_code(self, phone_number: str) -> str | None: ...

    def reply(
        self, phone_number: str, text: str, *, attempts: int = ..., backoff: float = ...
    ) -> Reply: ...

    @property
    def reply_url(self) -> str | None: ...

    @property
    def replies(self) -> list[Reply]: ...

    @property
    def pending_faults(self) -> list[Fault]: ...

    def _state(self) -> dict[str, Any]:
        """What ``/_emulator/state`` shows, read in one snapshot."""
        ...

    def _request_totals(self) -> tuple[dict[str, int], int]:
        """Requests per path and in all, read together."""
        ...

    def _recorded_messages(
        self, phone_number: str | None
    ) -> tuple[list[tuple[str, str, str]], int]:
        """Recorded ``(phone_number, text, kind)`` (all, or to one number) and the total sent."""
        ...


def control_path(raw_path: str) -> str | None:
    """The control endpoint ``raw_path`` names (``"/state"``), or ``None`` if it is no
    control request."""
    for prefix in _PREFIXES:
        if raw_path == prefix or raw_path.startswith(prefix + "/"):
            return raw_path[len(prefix) :].rstrip("/") or "/"
    return None


def answer(emulator: Steerable, method: str, sub: str, query: str, body: bytes) -> Response:
    """Answer the control request ``method sub?query`` with JSON ``body`` (may be empty)."""
    expected = _ROUTES.get(sub)
    if expected is None:
        return error(404, "Not found")
    if method != expected:
        return error(405, "Method not allowed", (("Allow", expected),))
    params = _query_params(query)
    data: Any = {}
    if body:
        try:
            data = json.loads(body)
        except (ValueError, RecursionError):
            return error(400, MSG_BODY)
        if not isinstance(data, dict):
            return error(400, MSG_BODY)
    try:
        if sub == "/messages":
            return _messages(emulator, params)
        if sub == "/requests":
            counts, total = emulator._request_totals()
            return ok({"counts": counts, "total": total})
        if sub == "/state":
            return ok(emulator._state())
        if sub == "/last-code":
            phone = params.get("phone_number", "")
            return ok({"phone_number": phone, "code": emulator.last_code(phone)})
        if sub == "/reset":
            emulator.reset()
            return ok({"ok": True})
        if sub == "/fault":
            kind = data.pop("kind", None)
            if not isinstance(kind, str):
                return error(400, "kind is required")
            unknown = set(data) - _FAULT_OPTIONS
            if unknown:
                return error(400, f"Unknown fault options: {', '.join(sorted(unknown))}")
            emulator.fault(kind, **data)
            return ok({"ok": True, "pending": len(emulator.pending_faults)})
        if sub == "/outage":
            return _outage(emulator, data)
        if sub == "/reply":
            return _reply(emulator, data)
        if sub == "/replies":
            made = emulator.replies
            return ok({"replies": [r.as_dict() for r in made], "total": len(made)})
        # /deliver-bulk
        emulator.deliver_bulk(data.get("n"))
        return ok(emulator._state())
    except (ValueError, TypeError) as exc:
        return error(400, str(exc))


def _outage(emulator: Steerable, data: dict[str, Any]) -> Response:
    if "mode" not in data:
        return error(400, "mode is required (null lifts the outage)")
    mode = data.pop("mode")
    if mode is not None and not isinstance(mode, str):
        return error(400, "mode must be a str or null")
    unknown = set(data) - _OUTAGE_OPTIONS
    if unknown:
        return error(400, f"Unknown outage options: {', '.join(sorted(unknown))}")
    if mode == "down" and data.get("duration") is None:
        # Down means the port is closed: no later request could reach the emulator to lift it.
        return error(400, "a 'down' outage needs a duration (seconds) over HTTP")
    emulator.outage(mode, **data)
    return ok({"outage": emulator._state()["outage"]})


def _reply(emulator: Steerable, data: dict[str, Any]) -> Response:
    unknown = set(data) - _REPLY_FIELDS
    if unknown:
        return error(400, f"Unknown reply fields: {', '.join(sorted(unknown))}")
    if emulator.reply_url is None:
        return error(
            409, "No reply URL: start the emulator with --reply-url URL (and --reply-secret)"
        )
    if "phone_number" not in data or "text" not in data:
        return error(400, "phone_number and text are required")
    schedule = {key: data[key] for key in ("attempts", "backoff") if key in data}
    made = emulator.reply(data["phone_number"], data["text"], **schedule)
    return ok(made.as_dict())


def _messages(emulator: Steerable, params: Mapping[str, str]) -> Response:
    limit_text = params.get("limit")
    limit: int | None = None
    if limit_text is not None:
        if not limit_text.isdigit():
            return error(400, "limit must be a non-negative integer")
        limit = int(limit_text)
    recorded, total = emulator._recorded_messages(params.get("phone_number"))
    if limit is not None:
        # The most recent ``limit`` messages, still oldest first: what an inbox page shows.
        recorded = recorded[-limit:] if limit else []
    return ok(
        {
            "messages": [{"phone_number": p, "text": t, "kind": k} for p, t, k in recorded],
            "total": total,
        }
    )


def _query_params(query: str) -> dict[str, str]:
    """Last value per name. A literal ``+`` in a hand-typed URL decodes to a space, so a value
    starting with a space is read as a phone number's leading ``+``."""
    params = {k: v[-1] for k, v in parse_qs(query, keep_blank_values=True).items()}
    phone = params.get("phone_number")
    if phone is not None and phone.startswith(" "):
        params["phone_number"] = "+" + phone[1:]
    return params
