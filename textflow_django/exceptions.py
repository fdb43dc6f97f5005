"""The errors textflow-django raises.

``TextFlowError`` is the base of everything that goes wrong *talking to TextFlow*: each carries
the HTTP status (``None`` when no response arrived), TextFlow's own message, and whether the
request may have reached TextFlow (``maybe_sent``), which decides whether a send may be retried.

The configuration error deliberately sits *outside* that tree (it is an
``ImproperlyConfigured``), so an ``except TextFlowError`` meant for a flaky network never
swallows a missing API key. Only ``django.core.exceptions`` is imported, which needs no
settings, so the client stays usable without a configured Django project.

No exception text ever contains the API key or a verification code.
"""

from __future__ import annotations

from typing import TypeAlias

from django.core.exceptions import ImproperlyConfigured
from django.utils.functional import Promise
from django.utils.translation import gettext_lazy as _

StrOrPromise: TypeAlias = str | Promise

__all__ = [
    "CountryNotAllowed",
    "InsufficientBalance",
    "InvalidCode",
    "InvalidToken",
    "LimitsUnavailable",
    "RateLimited",
    "ResendTooSoon",
    "SMSProviderError",
    "SMSProviderUnavailable",
    "TooManyAttempts",
    "VerificationError",
    "VerificationExpired",
    "InvalidAPIKey",
    "InvalidPhoneNumber",
    "TextFlowAPIError",
    "TextFlowBadResponse",
    "TextFlowCircuitOpen",
    "TextFlowConfigurationError",
    "TextFlowConnectionError",
    "TextFlowError",
    "TextFlowRateLimited",
    "TextFlowServerError",
    "TextFlowTimeout",
    "TextFlowUnavailable",
]


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


class InvalidPhoneNumber(TextFlowAPIError):
    """TextFlow rejected the phone number (``Phone number is invalid``)."""


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


class TextFlowConfigurationError(ImproperlyConfigured):
    """textflow-django is misconfigured (no API key, unknown backend...).

    Not a ``TextFlowError`` on purpose: a misconfiguration must never be mistaken for an
    outage and retried or swallowed.
    """


# -- refusals of the verification service ------------------------------------------------
# Each carries what the HTTP layer needs (status, a machine code, a human message) so the
# views map them without knowing any rule.


class VerificationError(Exception):
    """The verification service refused a request. Base of the refusals below.

    Attributes:
        code: a stable machine-readable code (``"invalid_code"``...), used in API answers.
        status_code: the HTTP status the API answers with.
        retry_after: seconds until a retry may succeed, when that is known.
    """

    code = "verification_error"
    status_code = 400
    default_message: StrOrPromise = _("The phone number could not be verified.")

    def __init__(
        self, message: StrOrPromise | None = None, *, retry_after: int | None = None
    ) -> None:
        self.message: StrOrPromise = message or self.default_message
        self.retry_after = retry_after
        super().__init__(self.message)


class InvalidCode(VerificationError):
    """The code is wrong. ``attempts_left`` wrong codes remain before the verification locks."""

    code = "invalid_code"
    default_message: StrOrPromise = _("The code is not valid.")

    def __init__(
        self, message: StrOrPromise | None = None, *, attempts_left: int | None = None
    ) -> None:
        self.attempts_left = attempts_left
        super().__init__(message)


class VerificationExpired(VerificationError):
    """There is no live verification for the number: never sent, expired, used or replaced."""

    code = "expired"
    default_message: StrOrPromise = _("The code has expired or was never sent. Request a new code.")


class TooManyAttempts(VerificationError):
    """Too many wrong codes: the verification is locked, whatever code comes next."""

    code = "too_many_attempts"
    status_code = 429
    default_message: StrOrPromise = _("Too many wrong codes. Request a new code later.")


class ResendTooSoon(VerificationError):
    """A code was sent to this number moments ago (``RESEND_COOLDOWN``)."""

    code = "resend_too_soon"
    status_code = 429
    default_message: StrOrPromise = _(
        "A code was sent a moment ago. Wait before asking for another."
    )


class RateLimited(VerificationError):
    """A send or wrong-code cap (per number or per client IP) is reached."""

    code = "rate_limited"
    status_code = 429
    default_message: StrOrPromise = _("Too many requests. Try again later.")


class CountryNotAllowed(VerificationError):
    """The number belongs to a country outside ``ALLOWED_COUNTRIES`` or in ``BLOCKED_COUNTRIES``."""

    code = "country_not_allowed"
    default_message: StrOrPromise = _("Phone numbers from this country are not accepted.")


class SMSProviderError(VerificationError):
    """TextFlow answered, but not with success: a refusal the user cannot fix (key, balance),
    a 5xx, or something that is not TextFlow's JSON (HTTP 502, Bad Gateway)."""

    code = "sms_provider_error"
    status_code = 502
    default_message: StrOrPromise = _("The SMS could not be sent. Try again later.")


class SMSProviderUnavailable(VerificationError):
    """TextFlow could not be reached, did not answer in time, or is throttling us (HTTP 503);
    the user can retry."""

    code = "sms_provider_unavailable"
    status_code = 503
    default_message: StrOrPromise = _("The SMS service is unavailable. Try again in a moment.")


class LimitsUnavailable(VerificationError):
    """The rate-limit store (``RATELIMIT_STORE``: its cache or database) failed, so the
    cooldown and caps cannot be checked. The service fails closed: it refuses rather than send
    an SMS or check a code without its limits (HTTP 503); the user can retry in a moment."""

    code = "service_unavailable"
    status_code = 503
    default_message: StrOrPromise = _("The service is unavailable. Try again in a moment.")

    def __init__(
        self, message: StrOrPromise | None = None, *, retry_after: int | None = 10
    ) -> None:
        super().__init__(message, retry_after=retry_after)


class InvalidToken(VerificationError):
    """A verification token is forged, corrupted or older than its ``max_age``."""

    code = "invalid_token"
    default_message: StrOrPromise = _("The verification token is invalid or has expired.")
