"""Replies: what TextFlow does when a phone answers: it POSTs the reply to the URL the account
configured and retries until that URL answers 200 (``textflow-api.md``, "Incoming replies").

The body is JSON ``{"phone_number": "+1...", "text": "...", "secret": "..."}`` (the secret
the site configured, which it checks in constant time). Any answer but HTTP 200 (a redirect,
a 201, a 403, a 500) or no answer at all (refused, reset, timed out) is retried, after
``backoff`` seconds, then twice that, and so on, up to ``attempts`` tries in all; what waiting
means is the caller's (:meth:`TextFlowEmulator.reply` waits on the emulator's clock).

:class:`Reply` is the record of one reply and what its delivery met; :func:`forward` makes
the attempts. Standard library only (``urllib``): the emulator stands alone, and a redirect
is not followed, nor a proxy from the environment used: TextFlow posts to the URL as given.
"""

from __future__ import annotations

import http.client
import json
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import urlsplit

from ..._e164 import is_e164

__all__ = [
    "DEFAULT_ATTEMPTS",
    "DEFAULT_BACKOFF",
    "Reply",
    "check_reply_url",
    "check_schedule",
    "forward",
    "payload",
]

#: Tries in all (the first and three retries), and the wait before the first retry (seconds;
#: each later wait doubles it: 1, 2, 4).
DEFAULT_ATTEMPTS: Final = 4
DEFAULT_BACKOFF: Final = 1.0
#: Seconds one attempt waits for the site's answer.
TIMEOUT: Final = 10.0
#: The longest reply text taken: ten SMS segments of GSM-7 (a phone's long reply).
MAX_TEXT: Final = 1530


@dataclass(frozen=True, slots=True)
class Reply:
    """One reply the emulator received from a phone and forwarded, and what that met.

    ``statuses`` holds each attempt's HTTP status, in order (``None``: no answer: refused,
    reset or timed out). The secret sent is not kept.
    """

    phone_number: str
    text: str
    url: str
    statuses: tuple[int | None, ...]

    @property
    def attempts(self) -> int:
        """How many POSTs were made."""
        return len(self.statuses)

    @property
    def status(self) -> int | None:
        """The last attempt's HTTP status (``None``: it got no answer)."""
        return self.statuses[-1]

    @property
    def delivered(self) -> bool:
        """Whether the site took it: its last answer was HTTP 200."""
        return self.status == 200

    def as_dict(self) -> dict[str, Any]:
        """What the control endpoints show of it."""
        return {
            "phone_number": self.phone_number,
            "text": self.text,
            "url": self.url,
            "attempts": self.attempts,
            "status": self.status,
            "statuses": list(self.statuses),
            "delivered": self.delivered,
        }


def check_reply_url(url: str | None) -> str | None:
    """``url`` if it is an http(s) URL with a host (or ``None``: no replies forwarded);
    ``ValueError`` otherwise."""
    if url is None:
        return None
    try:
        parts = urlsplit(url) if isinstance(url, str) else None
    except ValueError:
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"reply_url must be an http(s) URL, not {url!r}")
    return url


def payload(phone_number: object, text: object, secret: str) -> bytes:
    """The JSON body TextFlow posts for a reply; ``ValueError`` for a number that is not
    E.164 or a text that is empty or longer than :data:`MAX_TEXT`."""
    if not is_e164(phone_number):
        raise ValueError("phone_number must be an E.164 number like +12025550143")
    if not isinstance(text, str) or not text.strip() or len(text) > MAX_TEXT:
        raise ValueError(f"text must be a non-empty str of at most {MAX_TEXT} characters")
    return json.dumps({"phone_number": phone_number, "text": text, "secret": secret}).encode()


def check_schedule(attempts: object, backoff: object) -> tuple[int, float]:
    """``attempts`` (a whole number from 1 to 10) and ``backoff`` (seconds, 0 to 60) as
    given, or ``ValueError``."""
    if not isinstance(attempts, int) or isinstance(attempts, bool) or not 1 <= attempts <= 10:
        raise ValueError("attempts must be a whole number from 1 to 10")
    if not isinstance(backoff, int | float) or isinstance(backoff, bool) or not 0 <= backoff <= 60:
        raise ValueError("backoff must be a number of seconds from 0 to 60")
    return attempts, float(backoff)


def forward(
    url: str,
    body: bytes,
    *,
    attempts: int,
    backoff: float,
    wait: Callable[[float], None],
    timeout: float = TIMEOUT,
) -> tuple[int | None, ...]:
    """POST ``body`` to ``url`` until it answers 200 or ``attempts`` tries are made, calling
    ``wait(backoff * 2**n)`` before the retry ``n + 1``; each attempt's status, in order."""
    statuses: list[int | None] = []
    for attempt in range(attempts):
        if attempt:
            wait(backoff * 2 ** (attempt - 1))
        status = _post(url, body, timeout)
        statuses.append(status)
        if status == 200:
            break
    return tuple(statuses)


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """A redirect is the site's answer, not a new address: it raises as any non-2xx does."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_OPENER: Final = urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirects())


def _post(url: str, body: bytes, timeout: float) -> int | None:
    """One POST: the answer's status, or ``None`` when there was none."""
    request = urllib.request.Request(  # noqa: S310 - http(s) only (check_reply_url)
        url,
        data=body,
        method="POST",
        headers={"Content-Type": "application/json", "User-Agent": "textflow-emulator"},
    )
    try:
        with _OPENER.open(request, timeout=timeout) as response:
            response.read()
            return int(response.status)
    except urllib.error.HTTPError as err:  # a status outside 2xx, redirects included
        err.close()
        return int(err.code)
    except (OSError, http.client.HTTPException):  # refused, reset, timed out, garbled
        return None
