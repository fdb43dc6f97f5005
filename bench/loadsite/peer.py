"""A TextFlow backend for django-phone-verify (the peer ``bench/load.py`` measures the app
against), as a project using that app with TextFlow would write it.

django-phone-verify ships Twilio and Nexmo backends only. This one posts each SMS to
TextFlow's ``/send-sms`` through one ``requests.Session`` per process (keep-alive, a pool as
large as a worker's threads), the plain way: the peer gets a pooled connection as the app's
client has, so the comparison is of the two apps, not of connection handshakes.

The peer builds a new backend object per call (``phone_verify.backends.get_sms_backend``
caches nothing), so the session lives in the module, not on the object.
"""

from __future__ import annotations

from typing import Any

import requests
from phone_verify.backends.base import BaseBackend  # type: ignore[import-untyped]
from requests.adapters import HTTPAdapter

__all__ = ["TextFlowPeerBackend", "TextFlowPeerError"]

#: Connections kept per host: above the threads of any worker of the bench's default runs.
_POOL = 64


def _session() -> requests.Session:
    session = requests.Session()
    adapter = HTTPAdapter(pool_connections=2, pool_maxsize=_POOL)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


_SESSION = _session()


class TextFlowPeerError(Exception):
    """TextFlow refused an SMS or could not be reached (the peer logs it and answers 200)."""


class TextFlowPeerBackend(BaseBackend):  # type: ignore[misc]  # untyped third-party base
    """``PHONE_VERIFICATION["OPTIONS"]``: ``BASE_URL``, ``API_KEY``, ``TIMEOUT`` (seconds)."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        # What the peer's send path catches (and logs) around send_sms.
        self.exception_class = TextFlowPeerError
        self._url = str(options["BASE_URL"]).rstrip("/") + "/send-sms"
        self._headers = {"Authorization": f"Bearer {options['API_KEY']}"}
        self._timeout = float(options.get("TIMEOUT", 10.0))

    def send_sms(self, number: str, message: str) -> None:
        """Send one SMS; raise :class:`TextFlowPeerError` unless TextFlow accepted it."""
        try:
            answer = _SESSION.post(
                self._url,
                json={"phone_number": str(number), "text": message},
                headers=self._headers,
                timeout=self._timeout,
            )
        except requests.RequestException as exc:
            raise TextFlowPeerError(f"TextFlow unreachable: {type(exc).__name__}") from exc
        if answer.status_code != 200:
            raise TextFlowPeerError(f"TextFlow answered {answer.status_code}")

    def send_bulk_sms(self, numbers: list[str], message: str) -> None:
        """One SMS per number (the peer's Twilio backend does the same)."""
        for number in numbers:
            self.send_sms(number, message)
