"""The errors textflow-django raises, for Django code: one import for all of them.

Two families:

- ``TextFlowError`` and its subclasses: what goes wrong *talking to TextFlow*. They are
  defined below Django, in the client's layer (``textflow_django._errors``), so that the
  client stays usable without Django; they are re-exported here unchanged.
- What the Django side adds: ``TextFlowConfigurationError`` (an ``ImproperlyConfigured``) and
  the verification service's refusals, with translatable messages.

The configuration error deliberately sits *outside* the ``TextFlowError`` tree, so an
``except TextFlowError`` meant for a flaky network never swallows a missing API key.

No exception text ever contains the API key or a verification code.
"""

from __future__ import annotations

import warnings
from typing import Any, TypeAlias

from django.core.exceptions import ImproperlyConfigured
from django.utils.functional import Promise
from django.utils.translation import gettext_lazy as _

from ._errors import (
    ClientConfigurationError,
    InsufficientBalance,
    InvalidAPIKey,
    TextFlowAPIError,
    TextFlowBadResponse,
    TextFlowCircuitOpen,
    TextFlowConnectionError,
    TextFlowError,
    TextFlowRateLimited,
    TextFlowRejectedNumber,
    TextFlowServerError,
    TextFlowTimeout,
    TextFlowUnavailable,
)

StrOrPromise: TypeAlias = str | Promise

__all__ = [
    "ClientConfigurationError",
    "CountryNotAllowed",
    "DestinationBlocked",
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
    "TextFlowAPIError",
    "TextFlowBadResponse",
    "TextFlowCircuitOpen",
    "TextFlowConfigurationError",
    "TextFlowConnectionError",
    "TextFlowError",
    "TextFlowOptedOut",
    "TextFlowRateLimited",
    "TextFlowRejectedNumber",
    "TextFlowServerError",
    "TextFlowTimeout",
    "TextFlowUnavailable",
]

#: Old names kept importable for one release, each with a ``DeprecationWarning``.
_DEPRECATED: dict[str, tuple[type[Exception], str]] = {
    # Two names for two meanings read alike: TextFlow's refusal of a number, and our parser's
    # (``textflow_django.phone.InvalidPhoneNumberError``). The first one got a clearer name.
    "InvalidPhoneNumber": (TextFlowRejectedNumber, "TextFlowRejectedNumber"),
}


def __getattr__(name: str) -> Any:
    if name in _DEPRECATED:
        cls, new_name = _DEPRECATED[name]
        warnings.warn(
            f"textflow_django.exceptions.{name} is deprecated and will be removed in the next "
            f"release: use {new_name} (TextFlow refused the number; a number our parser "
            "refuses is textflow_django.phone.InvalidPhoneNumberError).",
            DeprecationWarning,
            stacklevel=2,
        )
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class TextFlowConfigurationError(ImproperlyConfigured):
    """textflow-django is misconfigured (no API key, unknown backend...).

    Not a ``TextFlowError`` on purpose: a misconfiguration must never be mistaken for an
    outage and retried or swallowed.
    """


class TextFlowOptedOut(TextFlowError):
    """A backend refused to send an SMS to a number on the opt-out list
    (:mod:`textflow_django.optouts`): nothing reached TextFlow (``maybe_sent`` is False).

    Raised by ``send_sms`` unless the caller passes ``transactional=True`` (a message the
    person asked for, such as a verification code). A ``TextFlowError`` because it is a
    send that did not happen, caught wherever failed sends are; not a
    ``TextFlowRejectedNumber``, which would say the number itself is invalid. The message
    names the number masked (``phone.mask``), never in full.
    """

    def __init__(self, masked_number: str) -> None:
        #: The number as ``phone.mask`` shows it.
        self.masked_number = masked_number
        super().__init__(
            f"{masked_number} opted out of SMS from this site: not sent "
            "(pass transactional=True only for a message the person asked for)",
            maybe_sent=False,
        )

    def __str__(self) -> str:
        return self.message  # our refusal, not TextFlow's: no "TextFlow:" prefix


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
        #: More fields for the API's answer (``attempts_left``, ``verification_id``...).
        self.extra: dict[str, object] = {}
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
        if attempts_left is not None:
            self.extra["attempts_left"] = attempts_left


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


class DestinationBlocked(VerificationError):
    """The Fraud Guard stopped sending codes to this number's prefix or country (its codes
    were sent and not used: the mark of SMS pumping). Nothing was sent; the message does not
    accuse the user, who may well be legitimate."""

    code = "destination_blocked"
    status_code = 403
    default_message: StrOrPromise = _("We cannot send codes to this number right now.")


#: The answer to a send that failed after it may have reached TextFlow: it counted, and the
#: code it carried verifies if it arrives.
MAYBE_SENT_MESSAGE: StrOrPromise = _(
    "The SMS service did not confirm the send, so the code may still arrive: enter it if it "
    "does, or ask for a new one once the wait is over."
)


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
