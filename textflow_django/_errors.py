"""The errors of a call to TextFlow, free of Django: the client's own layer.

``TextFlowError`` is the base of everything that goes wrong *talking to TextFlow*: each carries
the HTTP status (``None`` when no response arrived), TextFlow's own message, and whether the
request may have reached TextFlow (``maybe_sent``), which decides whether a send may be retried.

``ClientConfigurationError`` (a ``ValueError``) is what the client raises for arguments it
cannot work with (a missing or impossible key, a bad URL or timeout). It sits outside the
``TextFlowError`` tree so that an ``except TextFlowError`` meant for a flaky network never
swallows a misconfiguration. The Django side turns it into ``TextFlowConfigurationError``
(an ``ImproperlyConfigured``, in :mod:`textflow_django.exceptions`).

Public homes: :mod:`textflow_django.client` (for the client used on its own) and
:mod:`textflow_django.exceptions` (for Django code) re-export every name here. No exception
text ever contains the API key or a verification code.
"""

from __future__ import annotations

__all__ = [
    "ClientConfigurationError",
    "InsufficientBalance",
    "InvalidAPIKey",
    "TextFlowAPIError",
    "TextFlowBadResponse",
    "TextFlowCircuitOpen",
    "TextFlowConnectionError",
    "TextFlowError",
    "TextFlowRateLimited",
    "TextFlowRejectedNumber",
    "TextFlowServerError",
    "TextFlowTimeout",
    "TextFlowUnavailable",
]


class ClientConfigurationError(ValueError):
    """The client was given something it cannot work with: no API key or one no HTTP header
    can carry, a timeout that is not positive, a base URL that is not a URL. The message
    says what and where, never the key."""


class TextFlowError(Exception):
    """Base class for every failure of a call to TextFlow.

    Attributes:
        message: TextFlow's ``message`` when it sent one, else a description of the failure.
        status: the HTTP status of the response, or ``None`` when there was no response.
        path: the API path that was called (``"/send-sms"``...), when known.
        maybe_sent: ``True`` when the request may have reached TextFlow and been acted on.
            A send that failed with ``maybe_sent`` must not be retried: it could send twice.
    """

    #: Default for ``maybe_sent``; subclasses set the safe answer for their kind of failure.
    default_maybe_sent = False

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        path: str | None = None,
        maybe_sent: bool | None = None,
    ) -> None:
        self.message = message
        self.status = status
        self.path = path
        self.maybe_sent = self.default_maybe_sent if maybe_sent is None else maybe_sent
        super().__init__(message)

    def __str__(self) -> str:
        where = f"TextFlow {self.path}" if self.path else "TextFlow"
        status = f" (HTTP {self.status})" if self.status is not None else ""
        return f"{where}: {self.message}{status}"

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.message!r}, status={self.status!r}, "
            f"path={self.path!r}, maybe_sent={self.maybe_sent!r})"
        )


class TextFlowAPIError(TextFlowError):
    """TextFlow answered and refused the request (a 4xx or ``"ok": false``); nothing was sent."""


class InvalidAPIKey(TextFlowAPIError):
    """TextFlow did not accept the API key (``Invalid API key``, ``API key not found``...)."""


class TextFlowRejectedNumber(TextFlowAPIError):
    """TextFlow refused the phone number (``Phone number is invalid``); nothing was sent.

    Not to be confused with :class:`textflow_django.phone.InvalidPhoneNumberError`, our own
    parser's refusal of what a user typed, which never reaches TextFlow.
    """


class InsufficientBalance(TextFlowAPIError):
    """The TextFlow account has no credit left for this message."""


class TextFlowRateLimited(TextFlowAPIError):
    """TextFlow answered 429. ``retry_after`` is the server's ``Retry-After`` in seconds, if any."""

    def __init__(self, message: str, *, retry_after: int | None = None, **kwargs: object) -> None:
        self.retry_after = retry_after
        super().__init__(message, **kwargs)  # type: ignore[arg-type]

    def __str__(self) -> str:
        base = super().__str__()
        return f"{base}; retry after {self.retry_after}s" if self.retry_after is not None else base


class TextFlowUnavailable(TextFlowError):
    """TextFlow could not be reached or did not answer sensibly; try again later.

    ``maybe_sent`` defaults to ``True``: unless we know the request never left (a refused
    connection), assume TextFlow may have acted on it.
    """

    default_maybe_sent = True


class TextFlowConnectionError(TextFlowUnavailable):
    """The connection failed: refused or unresolvable (``maybe_sent=False``), or reset mid-call."""


class TextFlowTimeout(TextFlowUnavailable):
    """No complete answer within the timeout (the request may well have been acted on)."""


class TextFlowServerError(TextFlowUnavailable):
    """TextFlow answered 5xx."""


class TextFlowCircuitOpen(TextFlowUnavailable):
    """TextFlow failed repeatedly, so the call was not even tried (it fails fast instead of
    waiting for a timeout). ``retry_after`` is when the next trial call will be let through."""

    default_maybe_sent = False

    def __init__(self, message: str, *, retry_after: int, **kwargs: object) -> None:
        self.retry_after = retry_after
        super().__init__(message, **kwargs)  # type: ignore[arg-type]


class TextFlowBadResponse(TextFlowUnavailable):
    """TextFlow answered something that is not its JSON envelope (HTML, empty, truncated)."""
