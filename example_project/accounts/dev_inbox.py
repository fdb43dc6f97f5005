"""The dev inbox (``/dev/inbox/``): the SMS the TextFlow emulator received, codes visible,
switches for TextFlow's faults (down, slow, failing, rate-limited), for trying the site's
answers to an outage by hand, and a "Reply as this number" box on each SMS: the emulator
forwards the reply to the site's reply webhook as TextFlow would, so STOP can be tried in the
browser (``make demo`` gives the emulator the webhook's URL and the demo's secret).

It talks to the emulator's control endpoints (``/_emulator/...``, next to ``BASE_URL``; see
``textflow_django.testing``), and exists only while :func:`dev_inbox_enabled`.
"""

from __future__ import annotations

import logging
import math
import re
import time
from typing import Any, Final
from urllib.parse import urlsplit

import requests
from django.conf import settings
from django.contrib import messages
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseBadRequest
from django.shortcuts import redirect, render
from textflow_django.conf import conf
from textflow_django.phone import is_valid
from textflow_django.testing import EMULATOR_API_KEY

__all__ = ["OUTAGES", "REPLY_SCHEDULE", "dev_inbox", "dev_inbox_enabled"]

logger = logging.getLogger(__name__)

#: The faults the page switches, as bodies of the emulator's ``POST /_emulator/outage``.
#: "down" closes the emulator's port, control endpoints included, so it must end by itself.
OUTAGES: Final[dict[str, dict[str, Any]]] = {
    "down": {"mode": "down", "duration": 60},
    "slow": {"mode": "slow", "delay": 10},
    "error": {"mode": "error", "status": 500},
    "rate_limited": {"mode": "rate_limited", "retry_after": 30},
    "none": {"mode": None},
}

#: How the emulator retries a reply the site did not take (``POST /_emulator/reply``):
#: fewer and quicker tries than TextFlow's, since this page waits for the outcome.
REPLY_SCHEDULE: Final[dict[str, Any]] = {"attempts": 3, "backoff": 0.25}
#: Seconds this page waits for the emulator's answer to a reply: every try and wait.
REPLY_TIMEOUT: Final = 35.0
#: What "Reply as this number" takes: a phone's text (the emulator's own limit).
_MAX_REPLY = 1530

#: Session key: when an outage "down" switched on here ends (epoch seconds). While the
#: emulator is down its control endpoints are unreachable too; this tells the page that a
#: refused connection is the outage it asked for, not an emulator that is not running.
SESSION_DOWN_UNTIL: Final = "demo_textflow_down_until"

#: A code SMS, as TextFlow's /send-code words it and as textflow-django words its own
#: (the default "local" VERIFY_MODE sends them as plain SMS): the code is the last word.
# With WEBOTP_DOMAIN the SMS ends with the WebOTP line of the same code (``@host #123456``).
_CODE_SMS = re.compile(
    r"\AYour verification code (?:for .* )?is: ([0-9]{4,10})(?:\n\n@\S+ #\1)?\s*\Z"
)


def dev_inbox_enabled() -> bool:
    """Whether the dev inbox (a page showing every code sent) exists: only while DEBUG is on
    AND the project runs against the emulator, with the emulator's key. Anywhere else, a
    page that shows the codes would let anyone verify any number."""
    return bool(settings.DEBUG and settings.DEMO_USES_EMULATOR and conf.API_KEY == EMULATOR_API_KEY)


class _NotAnswering(Exception):
    """The emulator could not be reached (not running, or down on purpose)."""


class _Misunderstood(Exception):
    """The emulator answered, but not as its control endpoints do."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


def _emulator_root() -> str:
    """``scheme://host:port`` of the emulator ``BASE_URL`` points at."""
    parts = urlsplit(conf.BASE_URL)
    return f"{parts.scheme}://{parts.netloc}"


def _control(method: str, name: str, timeout: float = 3, **kwargs: Any) -> dict[str, Any]:
    """Call the emulator's control endpoint ``/_emulator/<name>``; its JSON answer.

    Raises _NotAnswering or _Misunderstood (what happened is logged for the terminal, where
    the details help; the page says it in a sentence).
    """
    url = f"{_emulator_root()}/_emulator/{name}"
    try:
        answer = requests.request(method, url, timeout=timeout, **kwargs)
    except requests.RequestException as err:
        # The exception's class says enough (ConnectionError, ReadTimeout); its text is a
        # paragraph of urllib3's.
        logger.warning("The TextFlow emulator at %s did not answer (%s)", url, type(err).__name__)
        raise _NotAnswering() from err
    try:
        if answer.status_code != 200:
            raise ValueError(answer.status_code)
        data = answer.json()
        if not isinstance(data, dict):
            raise ValueError("not an object")
    except ValueError as err:
        logger.warning("The TextFlow emulator at %s answered HTTP %s", url, answer.status_code)
        raise _Misunderstood(answer.status_code) from err
    return data


def _not_answering() -> str:
    root = _emulator_root()
    port = urlsplit(root).port or 80
    return (
        f"The TextFlow emulator at {root} is not answering. Start it with make demo (with "
        f"the site), or on its own with python -m textflow_django.testing --port {port}."
    )


def _misunderstood(err: _Misunderstood) -> str:
    return (
        f"The TextFlow emulator at {_emulator_root()} answered in a way this page does not "
        f"understand (HTTP {err.status}). Is it textflow-django's own, of the same version?"
    )


def _down_for(request: HttpRequest) -> float | None:
    """Seconds left of a "down" switched on from this session, or None."""
    until = request.session.get(SESSION_DOWN_UNTIL)
    if until is None:
        return None
    left = float(until) - time.time()
    return left if left > 0 else None


def describe_outage(outage: dict[str, Any] | None) -> str:
    """What the page says of TextFlow's state: the emulator's view of its outage
    (``/_emulator/state``'s ``"outage"``), in a sentence."""
    if outage is None:
        return "TextFlow (the emulator) is working normally."
    ends_in = outage.get("ends_in")
    until = (
        f"for {math.ceil(ends_in)} more seconds"
        if ends_in is not None
        else "until switched back here"
    )
    mode = outage["mode"]
    if mode == "down":
        return (
            f"TextFlow is down: it refuses every connection, {until}. Its SMS cannot be read "
            "meanwhile."
        )
    if mode == "slow":
        return (
            f"TextFlow is slow: each answer takes {outage['delay']:g} s, and the site waits "
            f"{conf.TIMEOUT:g} s at most (TIMEOUT), {until}."
        )
    if mode == "error":
        return (
            f"TextFlow is failing: it answers every request with HTTP {outage['status']}, {until}."
        )
    if mode == "rate_limited":
        return (
            "TextFlow is rate-limiting: it refuses every request with HTTP 429 "
            f"(Retry-After {outage['retry_after']} s), {until}."
        )
    return f"TextFlow is in an outage this page does not know ({mode}), {until}."


def _switch(request: HttpRequest) -> HttpResponse:
    """Switch the fault named by the form's ``outage`` on (or off: ``none``), then show the
    page again."""
    outage = OUTAGES.get(request.POST.get("outage", ""))
    if outage is None:
        return HttpResponseBadRequest("Unknown outage.")
    if _down_for(request) is not None:
        messages.error(
            request,
            "TextFlow is down on purpose and cannot be reached until it is back by itself.",
        )
        return redirect("dev-inbox")
    try:
        answer = _control("POST", "outage", json=outage)
    except _NotAnswering:
        messages.error(request, _not_answering())
    except _Misunderstood as err:
        messages.error(request, _misunderstood(err))
    else:
        view = answer.get("outage")
        if isinstance(view, dict) and view.get("mode") == "down":
            request.session[SESSION_DOWN_UNTIL] = time.time() + float(view["ends_in"])
    return redirect("dev-inbox")


def _reply(request: HttpRequest) -> HttpResponse:
    """Ask the emulator to reply the form's ``text`` as its ``phone_number`` (a phone
    answering one of the site's SMS), then show the page again with what the site made of it."""
    number = request.POST.get("phone_number", "")
    text = request.POST.get("text", "").strip()
    if not is_valid(number, check_countries=False):
        return HttpResponseBadRequest("Not a phone number.")
    if not text or len(text) > _MAX_REPLY:
        messages.error(
            request, f"Type the reply first (at most {_MAX_REPLY} characters), e.g. STOP."
        )
        return redirect("dev-inbox")
    body = {"phone_number": number, "text": text, **REPLY_SCHEDULE}
    try:
        made = _control("POST", "reply", timeout=REPLY_TIMEOUT, json=body)
    except _NotAnswering:
        messages.error(request, _not_answering())
    except _Misunderstood as err:
        messages.error(request, _no_reply_url() if err.status == 409 else _misunderstood(err))
    else:
        if made.get("delivered"):
            messages.success(request, f"{number} replied “{text}”: the site took it.")
        else:
            messages.error(request, _not_taken(number, made))
    return redirect("dev-inbox")


def _no_reply_url() -> str:
    return (
        "The TextFlow emulator has nowhere to send replies: make demo starts it with the site's "
        "reply webhook (--reply-url) and the demo's secret (--reply-secret)."
    )


def _not_taken(number: str, made: dict[str, Any]) -> str:
    """What the page says of a reply the site did not take (answered other than 200)."""
    status, tries = made.get("status"), made.get("attempts")
    why = {
        None: "did not answer",
        403: "refused it (HTTP 403): the emulator's --reply-secret is not the site's "
        "TEXTFLOW['REPLY_SECRET']",
        404: "has no reply webhook there (HTTP 404): TEXTFLOW['REPLY_SECRET'] turns it on",
    }.get(status, f"answered HTTP {status}")
    return f"The reply from {number} did not get through: the site {why} ({tries} tries)."


def dev_inbox(request: HttpRequest) -> HttpResponse:
    """The SMS the emulator received, newest first, codes visible, and TextFlow's state with
    the switches of its faults (POST ``outage``: one of :data:`OUTAGES`).

    A 404 unless :func:`dev_inbox_enabled`: a page that shows codes must never exist next to
    a real key, nor on a site running with DEBUG off. A 503 when the emulator is not
    answering (unless it is down because this page said so).
    """
    if not dev_inbox_enabled():
        raise Http404(
            "The dev inbox exists only while DEBUG is on and the project runs against the emulator."
        )
    if request.method == "POST":
        return _reply(request) if "text" in request.POST else _switch(request)
    context: dict[str, Any] = {"outages": OUTAGES}
    try:
        state = _control("GET", "state")
        received = _control("GET", "messages", params={"limit": 50}).get("messages")
        replies = _control("GET", "replies").get("replies")
        if not isinstance(received, list) or not isinstance(replies, list):
            raise _Misunderstood(200)
    except _NotAnswering:
        left = _down_for(request)
        if left is None:
            context["error_alert"] = _not_answering()
            return render(request, "accounts/inbox.html", context, status=503)
        context["mode"] = describe_outage({"mode": "down", "ends_in": left})
        context["down"] = True
        return render(request, "accounts/inbox.html", context)
    except _Misunderstood as err:
        context["error_alert"] = _misunderstood(err)
        return render(request, "accounts/inbox.html", context, status=503)
    request.session.pop(SESSION_DOWN_UNTIL, None)  # it answers: whatever was down is up
    context["mode"] = describe_outage(state.get("outage"))
    context["sms_list"] = [{**item, "code": _code_in(item)} for item in reversed(received)]
    context["replies"] = list(reversed(replies[-50:]))
    return render(request, "accounts/inbox.html", context)


def _code_in(sms: dict[str, Any]) -> str:
    """The code an SMS carries, or "" (bulk texts are never codes, whatever they say)."""
    found = _CODE_SMS.match(sms["text"]) if sms["kind"] != "bulk" else None
    return found.group(1) if found else ""
