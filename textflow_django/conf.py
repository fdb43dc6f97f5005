"""textflow-django's settings: one dict, ``settings.TEXTFLOW``, read on every access.

Nothing is cached at import, so ``override_settings(TEXTFLOW={...})`` takes effect at once.
``DEFAULTS`` is the one place a default lives; ``checks.py`` validates the values at start-up
and the README documents every key (a test keeps the two in step).

Why one module of over 400 lines: every key has its default, its typed property and the
shape of its value here, once each; the checks, the README's table and the tests are held
to this one list.

    from textflow_django.conf import conf
    conf.CODE_TTL  # -> 600 unless settings.TEXTFLOW says otherwise
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Final

from django.conf import settings
from django.utils.functional import Promise
from django.utils.translation import gettext, gettext_noop

from ._codes import CODE_LENGTH
from ._rates import Rate, parse_rate

__all__ = [
    "DEFAULTS",
    "MAX_RETENTION_DAYS",
    "FraudGuardSettings",
    "RetentionSettings",
    "Settings",
    "conf",
    "retention_problems",
]

#: Every key textflow-django reads, with its default. Keys not listed here are typos
#: (system check ``textflow.W002``).
DEFAULTS: Final[Mapping[str, Any]] = {
    # Credentials and transport.
    "API_KEY": "",
    "BASE_URL": "https://textflow.me/api",
    "BACKEND": "textflow_django.backends.textflow.TextFlowBackend",
    "TIMEOUT": 10.0,
    "BREAKER_THRESHOLD": 5,
    "BREAKER_RESET": 30,
    # Verification codes.
    "SERVICE_NAME": "",
    "CODE_TTL": 600,
    # The code SMS ("local" mode and the contrib integrations): a template with {code} and
    # {service}; None is the translated default. WEBOTP_DOMAIN adds the "@domain #code" line.
    "CODE_MESSAGE": None,
    "WEBOTP_DOMAIN": None,
    # Phone numbers.
    "DEFAULT_REGION": None,
    "ALLOWED_COUNTRIES": None,
    "BLOCKED_COUNTRIES": (),
    # Verification rules.
    "VERIFY_MODE": "local",
    "CODE_LENGTH": CODE_LENGTH,
    "MAX_ATTEMPTS": 5,
    "RESEND_COOLDOWN": 30,
    "SEND_LIMITS": {
        "number": ("5/h", "10/d"),
        "ip": ("20/h", "100/d"),
        "network": ("60/h", "300/d"),
        # Budgets no botnet rotates around: every code the site sends, and per destination
        # country. A normal site never meets them; they cap a disaster (README: sizing).
        "global": ("1000/h", "10000/d"),
        "country": ("300/h",),
    },
    # No "number" scope: anyone could spend it, and lock the number's owner out.
    "FAILED_CHECK_LIMITS": {"ip": ("60/h",), "network": ("200/h",)},
    "RATELIMIT_STORE": "database",
    "RATELIMIT_CACHE": "default",
    "NUM_PROXIES": 0,
    # The Fraud Guard (textflow_django.fraud): a dict; keys left out keep these defaults.
    "FRAUD_GUARD": {
        "ENABLED": True,
        "PREFIX_DIGITS": 7,
        "WINDOW": 3600,
        "GRACE": 300,
        "MIN_SENDS": 20,
        "MIN_CONVERSION": 0.2,
        "BLOCK_SECONDS": 86400,
        "ALLOW_PREFIXES": (),
        "NEW_COUNTRY_LIMIT": "10/h",
    },
    # django-allauth (textflow_django.contrib.allauth): where a user's phone number lives.
    # None: the contrib app's PhoneNumber model. A name: that field of the user model
    # (E.164), with its verified flag in ALLAUTH_PHONE_VERIFIED_FIELD
    # (None: "<ALLAUTH_PHONE_FIELD>_verified").
    "ALLAUTH_PHONE_FIELD": None,
    "ALLAUTH_PHONE_VERIFIED_FIELD": None,
    "TOKEN_MAX_AGE": 3600,
    "TOKEN_SESSION_BINDING": False,
    # Bulk SMS.
    "BULK_BATCH_SIZE": 500,
    "MAX_TEXT_LENGTH": 10,
    # Retention (manage.py textflow_cleanup, textflow_django.retention): days each kind of
    # row is kept, None to keep it forever; a dict, keys left out keep these defaults.
    # Expired rate-limit counters and ended Fraud Guard blocks always go.
    "RETENTION": {"VERIFICATIONS": 90, "BULK_RECIPIENTS": 30, "REPLIES": 90},
    # Seconds a claimed batch is its sender's: a resume leaves younger claims alone.
    "BULK_LEASE": 300,
    # The line appended to every bulk text (after a newline), counted in MAX_TEXT_LENGTH.
    # The default is translated into the active language; None or "" leaves it off.
    "BULK_OPT_OUT_FOOTER": gettext_noop("Reply STOP to opt out"),
    # Replies (the webhook TextFlow forwards incoming SMS to) and their opt-out keywords.
    # REPLY_SECRET "" turns the webhook off (404). Keyword lists: None is the built-in
    # lists of every shipped language (textflow_django.replies); a list replaces them.
    "REPLY_SECRET": "",
    "REPLY_RATE": "600/m",
    "REPLY_CONFIRMATIONS": False,
    "OPT_OUT_KEYWORDS": None,
    "OPT_IN_KEYWORDS": None,
    # Prometheus metrics (textflow_django.contrib.prometheus), when prometheus_client is
    # installed (the "prometheus" extra); without it nothing is imported either way.
    "METRICS": True,
    # The HTTP API.
    "AUTHENTICATION_CLASSES": ("rest_framework.authentication.SessionAuthentication",),
    "PERMISSION_CLASSES": ("rest_framework.permissions.AllowAny",),
    "THROTTLE_CLASSES": (),
}

#: The digits a local-mode code may have (``CODE_LENGTH``): NIST SP 800-63B asks for 6 at least.
MIN_CODE_LENGTH: Final = 6
MAX_CODE_LENGTH: Final = 10
#: The longest code lifetime TextFlow accepts (``seconds`` on ``/send-code``).
MAX_CODE_TTL: Final = 86400
#: Most numbers one ``/bulk-sms`` call may carry (``BULK_BATCH_SIZE``, ``--batch-size``).
#: TextFlow documents no limit; this keeps a request body around 200 kB, and a batch whose
#: outcome is unknown to a bounded number of recipients.
MAX_BATCH_SIZE: Final = 10_000


@dataclass(frozen=True)
class FraudGuardSettings:
    """``TEXTFLOW["FRAUD_GUARD"]`` merged over its defaults (see the README's Fraud Guard)."""

    #: Whether the guard judges and blocks destinations (the budgets of ``SEND_LIMITS``
    #: apply either way).
    enabled: bool
    #: Digits of the E.164 number after ``+`` that make a prefix (7: ``+1202555``).
    prefix_digits: int
    #: Seconds of sends a judgement looks back over.
    window: int
    #: Seconds a code may take to be verified: younger codes are not judged yet.
    grace: int
    #: Codes judged to a prefix before it may be blocked; also the most codes a prefix may
    #: have in their grace period (the guard cannot judge them yet).
    min_sends: int
    #: Share of judged codes verified below which a prefix is blocked.
    min_conversion: float
    #: Seconds a block lasts.
    block_seconds: int
    #: Prefixes never blocked nor slowed (``+`` and digits).
    allow_prefixes: tuple[str, ...]
    #: Codes per hour (a rate) to a country with no verified number in 30 days.
    new_country_limit: Rate

    #: A country is judged on this many times ``min_sends`` codes, and blocked below this
    #: share of ``min_conversion``: a country is many prefixes, its judgement is slower.
    COUNTRY_SENDS_FACTOR: ClassVar[int] = 2
    COUNTRY_CONVERSION_FACTOR: ClassVar[float] = 0.5

    @property
    def country_min_sends(self) -> int:
        return self.min_sends * self.COUNTRY_SENDS_FACTOR

    @property
    def country_min_conversion(self) -> float:
        return self.min_conversion * self.COUNTRY_CONVERSION_FACTOR

    def prefix_of(self, number: str) -> str:
        """The prefix of an E.164 number: ``+`` and its first ``prefix_digits`` digits."""
        return number[: 1 + self.prefix_digits]


#: The longest retention a kind of row may have, in days (a century: a date arithmetic
#: never overflows); None keeps rows forever.
MAX_RETENTION_DAYS: Final = 36_500


@dataclass(frozen=True)
class RetentionSettings:
    """``TEXTFLOW["RETENTION"]`` merged over its defaults: how many days each kind of row is
    kept before ``textflow_cleanup`` deletes it (None: kept forever). The rules of each kind
    (whole days, counted from when) are ``textflow_django.retention``'s."""

    #: Whole calendar days of ``PhoneVerification`` rows kept besides today; older days are
    #: kept as daily totals (``VerificationDay``).
    verifications: int | None
    #: Days a finished bulk job keeps its ``BulkRecipient`` (and ``BulkBatch``) rows.
    bulk_recipients: int | None
    #: Days an ``SMSReply`` is kept.
    replies: int | None


def retention_problems(value: object) -> list[str]:
    """What is wrong with a ``TEXTFLOW["RETENTION"]`` value (empty: nothing): the one rule
    the setting's property and its system check (``textflow.E019``) both apply."""
    if not isinstance(value, Mapping):
        return [f"it must be a dict, not {type(value).__name__}"]
    known = DEFAULTS["RETENTION"]
    problems = [f"unknown key {key!r}" for key in value if key not in known]
    for key in known:
        days = value.get(key, known[key])
        whole = isinstance(days, int) and not isinstance(days, bool)
        if days is not None and not (whole and 1 <= days <= MAX_RETENTION_DAYS):
            problems.append(
                f"{key} must be a whole number of days from 1 to {MAX_RETENTION_DAYS:,} or "
                f"None (kept forever), not {days!r}"
            )
    return problems


class Settings:
    """Typed, read-through access to ``settings.TEXTFLOW``; one property per key."""

    @property
    def raw(self) -> Mapping[str, Any]:
        """The ``TEXTFLOW`` dict as the project set it (empty when unset)."""
        value = getattr(settings, "TEXTFLOW", None)
        return value if isinstance(value, Mapping) else {}

    def get(self, key: str) -> Any:
        """The value of ``key``, or its default. Raises ``KeyError`` for an unknown key."""
        default = DEFAULTS[key]
        return self.raw.get(key, default)

    @property
    def API_KEY(self) -> str:
        """The TextFlow API key (a secret: never logged)."""
        return str(self.get("API_KEY") or "")

    @property
    def BASE_URL(self) -> str:
        """The API root; tests and the demo point it at the bundled emulator."""
        return str(self.get("BASE_URL"))

    @property
    def BACKEND(self) -> str:
        """Dotted path of the backend class."""
        return str(self.get("BACKEND"))

    @property
    def TIMEOUT(self) -> float:
        """Seconds allowed for one whole call to TextFlow."""
        return float(self.get("TIMEOUT"))

    @property
    def BREAKER_THRESHOLD(self) -> int:
        """Consecutive TextFlow failures that open the circuit breaker (0: no breaker)."""
        return int(self.get("BREAKER_THRESHOLD"))

    @property
    def BREAKER_RESET(self) -> float:
        """Seconds the breaker stays open before one trial call is let through."""
        return float(self.get("BREAKER_RESET"))

    @property
    def SERVICE_NAME(self) -> str:
        """Name shown in the code SMS (``Your verification code for <name> is: ...``)."""
        return str(self.get("SERVICE_NAME") or "")

    @property
    def CODE_MESSAGE(self) -> str | None:
        """The code SMS as a template with ``{code}`` and ``{service}``; None: the default,
        translated into the active language."""
        value = self.get("CODE_MESSAGE")
        return None if value is None else str(value)

    @property
    def WEBOTP_DOMAIN(self) -> str | None:
        """The site's host name for the WebOTP line (``@example.com #123456``); None: none."""
        value = self.get("WEBOTP_DOMAIN")
        return str(value) if value else None

    @property
    def ALLAUTH_PHONE_FIELD(self) -> str | None:
        """django-allauth integration: the user model's phone field; None: the contrib
        app's ``PhoneNumber`` model."""
        value = self.get("ALLAUTH_PHONE_FIELD")
        return str(value) if value else None

    @property
    def ALLAUTH_PHONE_VERIFIED_FIELD(self) -> str | None:
        """The user model's flag that its phone number is verified; None:
        ``<ALLAUTH_PHONE_FIELD>_verified``."""
        value = self.get("ALLAUTH_PHONE_VERIFIED_FIELD")
        return str(value) if value else None

    @property
    def CODE_TTL(self) -> int:
        """Seconds a verification code stays valid (1..86400)."""
        return int(self.get("CODE_TTL"))

    @property
    def DEFAULT_REGION(self) -> str | None:
        """ISO 3166-1 alpha-2 region for numbers typed without ``+`` (None: E.164 only)."""
        value = self.get("DEFAULT_REGION")
        return str(value).upper() if value else None

    @property
    def ALLOWED_COUNTRIES(self) -> frozenset[str] | None:
        """ISO codes numbers may belong to; None allows every country."""
        value = self.get("ALLOWED_COUNTRIES")
        return None if value is None else frozenset(str(c).upper() for c in value)

    @property
    def BLOCKED_COUNTRIES(self) -> frozenset[str]:
        """ISO codes whose numbers are refused (checked after ``ALLOWED_COUNTRIES``)."""
        return frozenset(str(c).upper() for c in self.get("BLOCKED_COUNTRIES") or ())

    @property
    def VERIFY_MODE(self) -> str:
        """``"local"`` (our own codes, a keyed hash kept here; the default) or ``"textflow"``
        (TextFlow makes and holds the code: 4 digits)."""
        return str(self.get("VERIFY_MODE"))

    @property
    def CODE_LENGTH(self) -> int:
        """Digits of a code in ``"local"`` mode (6 to 10)."""
        return int(self.get("CODE_LENGTH"))

    @property
    def MAX_ATTEMPTS(self) -> int:
        """Wrong codes allowed per verification before it locks."""
        return int(self.get("MAX_ATTEMPTS"))

    @property
    def RESEND_COOLDOWN(self) -> int:
        """Seconds between two codes sent to one number (0 disables)."""
        return int(self.get("RESEND_COOLDOWN"))

    @property
    def SEND_LIMITS(self) -> dict[str, tuple[Rate, ...]]:
        """Codes sent per ``"number"``, per ``"ip"`` (an IPv6 /64) and per ``"network"`` (an
        IPv4 /24, an IPv6 /48): rates such as ``"5/h"``."""
        return _rates(self.get("SEND_LIMITS"))

    @property
    def FAILED_CHECK_LIMITS(self) -> dict[str, tuple[Rate, ...]]:
        """Wrong codes per ``"ip"`` and per ``"network"`` across verifications (a
        ``"number"`` scope is possible, and lets strangers lock the owner out: W006)."""
        return _rates(self.get("FAILED_CHECK_LIMITS"))

    @property
    def RATELIMIT_STORE(self) -> str:
        """Where counters live: ``"database"`` or ``"cache"``."""
        return str(self.get("RATELIMIT_STORE"))

    @property
    def RATELIMIT_CACHE(self) -> str:
        """The cache alias used when ``RATELIMIT_STORE`` is ``"cache"``."""
        return str(self.get("RATELIMIT_CACHE"))

    @property
    def NUM_PROXIES(self) -> int:
        """Reverse proxies in front of the site that append to ``X-Forwarded-For``."""
        return int(self.get("NUM_PROXIES"))

    @property
    def FRAUD_GUARD(self) -> FraudGuardSettings:
        """The Fraud Guard's settings, ``TEXTFLOW["FRAUD_GUARD"]`` over the defaults."""
        value = {**DEFAULTS["FRAUD_GUARD"], **(self.get("FRAUD_GUARD") or {})}
        allow = value["ALLOW_PREFIXES"]
        return FraudGuardSettings(
            enabled=bool(value["ENABLED"]),
            prefix_digits=int(value["PREFIX_DIGITS"]),
            window=int(value["WINDOW"]),
            grace=int(value["GRACE"]),
            min_sends=int(value["MIN_SENDS"]),
            min_conversion=float(value["MIN_CONVERSION"]),
            block_seconds=int(value["BLOCK_SECONDS"]),
            allow_prefixes=tuple(str(p) for p in ([allow] if isinstance(allow, str) else allow)),
            new_country_limit=parse_rate(str(value["NEW_COUNTRY_LIMIT"])),
        )

    @property
    def TOKEN_MAX_AGE(self) -> int:
        """Seconds a verification token stays valid."""
        return int(self.get("TOKEN_MAX_AGE"))

    @property
    def TOKEN_SESSION_BINDING(self) -> bool:
        """Whether a token verified in a session is accepted only in that session."""
        return bool(self.get("TOKEN_SESSION_BINDING"))

    @property
    def BULK_BATCH_SIZE(self) -> int:
        """Most numbers one ``/bulk-sms`` call carries."""
        return int(self.get("BULK_BATCH_SIZE"))

    @property
    def MAX_TEXT_LENGTH(self) -> int:
        """Most SMS segments a bulk text may take (GSM-7: 160 characters in one SMS, 153 a
        part beyond; UCS-2: 70, then 67)."""
        return int(self.get("MAX_TEXT_LENGTH"))

    @property
    def BULK_LEASE(self) -> float:
        """Seconds a batch claimed for sending stays its sender's: a resume leaves a claim
        younger than this to the sender that holds it and judges an older one its dead
        sender's (``uncertain``). It must exceed the longest a live sender goes without
        stamping its claim (:func:`textflow_django.bulk.sending.lease_floor`; check E020)."""
        return float(self.get("BULK_LEASE"))

    @property
    def REPLY_SECRET(self) -> str:
        """The secret TextFlow sends with each forwarded reply (a secret: never logged);
        ``""`` (the default): the replies webhook is off and answers 404."""
        return str(self.get("REPLY_SECRET") or "")

    @property
    def REPLY_RATE(self) -> Rate:
        """Requests the replies webhook takes per source address (an IPv6 /64) before it
        answers 429."""
        return parse_rate(str(self.get("REPLY_RATE")))

    @property
    def REPLY_CONFIRMATIONS(self) -> bool:
        """Whether an opt-out or opt-in by reply is confirmed by one SMS (at most one a
        day per number)."""
        return bool(self.get("REPLY_CONFIRMATIONS"))

    @property
    def OPT_OUT_KEYWORDS(self) -> tuple[str, ...] | None:
        """Replies that put their number on the opt-out list; None: the built-in lists of
        every shipped language (``textflow_django.replies``)."""
        return _keywords(self.get("OPT_OUT_KEYWORDS"))

    @property
    def OPT_IN_KEYWORDS(self) -> tuple[str, ...] | None:
        """Replies that take their number off the list; None: the built-in lists."""
        return _keywords(self.get("OPT_IN_KEYWORDS"))

    @property
    def BULK_OPT_OUT_FOOTER(self) -> str | None:
        """The line appended to every bulk text, after a newline; None: no footer (the
        setting is None or ""). The default is translated into the active language, and a
        project's lazy translation resolved, at call time.

        Raises:
            TypeError: the setting is not a string, a lazy string or None (``textflow.E022``).
        """
        value = self.get("BULK_OPT_OUT_FOOTER")
        if value is None:
            return None
        if not isinstance(value, str | Promise):
            raise TypeError(
                "TEXTFLOW['BULK_OPT_OUT_FOOTER'] must be a string or None, not "
                f"{type(value).__name__}"
            )
        if value == DEFAULTS["BULK_OPT_OUT_FOOTER"]:
            return gettext(DEFAULTS["BULK_OPT_OUT_FOOTER"]) or None
        return str(value) or None

    @property
    def RETENTION(self) -> RetentionSettings:
        """Days each kind of row is kept, ``TEXTFLOW["RETENTION"]`` over the defaults;
        ValueError saying what is wrong with a bad value (system check E019 says it at
        start-up)."""
        value = self.get("RETENTION")
        problems = retention_problems(value)
        if problems:
            raise ValueError(f"TEXTFLOW['RETENTION'] is not valid: {'; '.join(problems)}")
        days = {**DEFAULTS["RETENTION"], **value}
        return RetentionSettings(
            verifications=days["VERIFICATIONS"],
            bulk_recipients=days["BULK_RECIPIENTS"],
            replies=days["REPLIES"],
        )

    @property
    def METRICS(self) -> bool:
        """Whether the app counts its events as Prometheus metrics (read once, when the app
        is ready; only with prometheus_client installed)."""
        return bool(self.get("METRICS"))

    @property
    def AUTHENTICATION_CLASSES(self) -> tuple[str, ...]:
        """DRF authentication classes (dotted paths) of the send/verify endpoints."""
        return tuple(self.get("AUTHENTICATION_CLASSES"))

    @property
    def PERMISSION_CLASSES(self) -> tuple[str, ...]:
        """DRF permission classes (dotted paths) of the send/verify endpoints."""
        return tuple(self.get("PERMISSION_CLASSES"))

    @property
    def THROTTLE_CLASSES(self) -> tuple[str, ...]:
        """DRF throttle classes (dotted paths) of the send/verify endpoints, on top of the
        built-in limits."""
        return tuple(self.get("THROTTLE_CLASSES"))


def _keywords(value: Any) -> tuple[str, ...] | None:
    """A keyword setting: None, or its keywords (one string is one keyword)."""
    if value is None:
        return None
    return (value,) if isinstance(value, str) else tuple(str(k) for k in value)


def _rates(value: Mapping[str, Any] | None) -> dict[str, tuple[Rate, ...]]:
    return {
        scope: tuple(parse_rate(r) for r in ([rates] if isinstance(rates, str) else rates or ()))
        for scope, rates in (value or {}).items()
    }


#: The one instance everyone imports.
conf = Settings()
