"""System checks for ``settings.TEXTFLOW``: bad values fail at start-up, with a hint.

Why one module of over 400 lines: its one job is to judge every setting, one ID per problem,
and the ledger below must stay next to the checks it numbers so that an ID is never reused.

ID ledger (an ID is never reused, even when its check is removed):

- ``textflow.E001``: ``TEXTFLOW`` is not a dict.
- ``textflow.E002``: no ``API_KEY`` while the TextFlow backend is configured.
- ``textflow.E003``: ``BACKEND`` cannot be imported or is not a backend class.
- ``textflow.E004``: ``TIMEOUT`` or ``BREAKER_RESET`` is not a positive number.
- ``textflow.E005``: ``CODE_TTL`` is not a whole number of seconds in 1..86400.
- ``textflow.E006``: ``BASE_URL`` is not an http(s) URL.
- ``textflow.E007``: ``SERVICE_NAME`` or ``API_KEY`` is not a string, or ``API_KEY`` holds
  what no TextFlow key has (whitespace, control or non-ASCII characters).
- ``textflow.E008``: ``DEFAULT_REGION`` is not a region phonenumbers knows.
- ``textflow.E009``: ``ALLOWED_COUNTRIES``/``BLOCKED_COUNTRIES`` hold something else than
  ISO region codes.
- ``textflow.E010``: ``VERIFY_MODE`` is not ``"textflow"`` or ``"local"``.
- ``textflow.E011``: ``MAX_ATTEMPTS``, ``RESEND_COOLDOWN``, ``NUM_PROXIES``,
  ``TOKEN_MAX_AGE``, ``CODE_LENGTH`` (6 to 10), ``BULK_BATCH_SIZE`` or
  ``BREAKER_THRESHOLD`` is not a whole number in its range.
- ``textflow.E012``: ``SEND_LIMITS``/``FAILED_CHECK_LIMITS`` is not a dict of scopes
  (``"number"``/``"ip"``/``"network"``, and for sends ``"global"``/``"country"``) to rates
  like ``"5/h"``, two of one scope with different windows.
- ``textflow.E013``: ``RATELIMIT_STORE`` is not ``"database"`` or ``"cache"``, or
  ``RATELIMIT_CACHE`` names no configured cache.
- ``textflow.E014``: an ``AUTHENTICATION_CLASSES``/``PERMISSION_CLASSES``/``THROTTLE_CLASSES``
  entry cannot be imported.
- ``textflow.E015``: ``MAX_TEXT_LENGTH`` is not a whole number of SMS segments from 1 to 255.
- ``textflow.E016``: ``FRAUD_GUARD`` is not a dict of its keys with values in range.
- ``textflow.E017``: ``API_KEY`` is the bundled emulator's key while ``BASE_URL`` points at
  TextFlow itself, which refuses that key.
- ``textflow.E018``: ``CODE_MESSAGE`` is not a template with ``{code}`` (and at most
  ``{service}``), or ``WEBOTP_DOMAIN`` is not a bare host name.
- ``textflow.E019``: ``RETENTION`` is not a dict of its keys to whole numbers of days (or
  None), or keeps verifications for less time than a code and its token live, or than the
  Fraud Guard looks back.
- ``textflow.E020``: ``BULK_LEASE`` is not a positive number of seconds, or not longer than
  a live bulk sender may go without stamping its claim (one call to TextFlow, connection
  retries included, after one Retry-After wait: ``bulk.sending.lease_floor(TIMEOUT)``).
- ``textflow.E021``: a replies setting is not valid: ``REPLY_SECRET`` is not a string, is
  shorter than 16 characters or begins or ends with whitespace,
  ``OPT_OUT_KEYWORDS``/``OPT_IN_KEYWORDS`` is not a list of keywords or the two share one,
  ``REPLY_RATE`` is not a rate, ``REPLY_CONFIRMATIONS`` is not True or False.
- ``textflow.E022``: ``BULK_OPT_OUT_FOOTER`` is not a string (or a lazy translation) or
  None, or holds a control or invisible formatting character.
- ``textflow.W020``: the bulk opt-out footer names no opt-out keyword in effect (a
  customised ``OPT_OUT_KEYWORDS`` or footer), so replying as it says opts nobody out.
- ``textflow.E023``: ``METRICS`` is not True or False.
- ``textflow.E101``: a ``PhoneNumberField`` with ``max_length`` below 16 (in ``fields.py``).
- ``textflow.E102``: a ``PhoneNumberField`` with an unknown ``region`` (in ``fields.py``).
- ``textflow.W001``: a console, locmem or dummy backend while ``DEBUG`` is False.
- ``textflow.W002``: an unknown key in ``TEXTFLOW`` (a typo silently keeps the default).
- ``textflow.W003``: ``BASE_URL`` sends the API key over plain http to a non-loopback host
  (with ``DEBUG`` on or off).
- ``textflow.W004``: rate limits kept in a per-process cache while ``DEBUG`` is False.
- ``textflow.W005``: ``VERIFY_MODE`` is ``"textflow"`` (TextFlow's 4-digit codes): the
  chance of guessing a targeted number's code under the configured caps, per day and year.
- ``textflow.W006``: ``FAILED_CHECK_LIMITS`` has a ``"number"`` scope, which anyone can spend
  to lock the number's owner out.
- ``textflow.W008`` (``check --deploy``): ``BASE_URL`` is a loopback host while ``DEBUG`` is
  False: production would be talking to an emulator (plain http elsewhere is W003's; with an
  emulating backend, which calls no URL, W001's).
- ``textflow.W009``: the code SMS (``CODE_MESSAGE`` or its default, ``SERVICE_NAME``,
  ``CODE_LENGTH`` digits, the WebOTP line) takes more than one SMS segment.
- ``textflow.W017``: the replies webhook is weakly set up: ``REPLY_SECRET`` is shorter than
  32 characters, has few distinct characters or is the API key; or replies are configured
  (``REPLY_CONFIRMATIONS``, keyword lists) while no ``REPLY_SECRET`` turns the webhook on.
- ``textflow.W019``: ``METRICS`` is set to True but ``prometheus_client`` (the
  ``prometheus`` extra) is not installed: no metrics. (Left at its default, ``METRICS``
  quietly means "if installed".)
- ``textflow.W007``: a Fraud Guard protection is off: ``FRAUD_GUARD["ENABLED"]`` is False,
  or ``SEND_LIMITS`` has no ``"global"`` or no ``"country"`` budget.
- ``textflow.W010`` (``check --deploy``): ``API_KEY`` is the bundled emulator's key with the
  TextFlow backend (with TextFlow's own ``BASE_URL`` that is ``textflow.E017``'s alone).
- ``textflow.W011`` (``check --deploy``): ``NUM_PROXIES`` is 0 while the site is set up
  behind a proxy (``SECURE_PROXY_SSL_HEADER``, ``USE_X_FORWARDED_HOST``/``_PORT``).
- ``textflow.W012`` (``check --deploy``): ``ALLOWED_COUNTRIES`` is not set: codes may go
  to every country.

``check --deploy`` and production (``DEBUG`` False). One problem has one ID, reported once:
what is wrong in production whatever else is set is said at every check while ``DEBUG`` is
False, so start-up shows it too (``W001`` an emulating backend, ``W004`` a per-process
rate-limit store; ``W003`` plain http and ``W007`` a Fraud Guard protection off, with
``DEBUG`` on as well); what is right on a laptop and wrong in production is said only by
``check --deploy`` with ``DEBUG`` False (``W008``, ``W010``-``W012``). With ``DEBUG`` on,
``check --deploy`` adds nothing here: Django's ``security.W018`` says ``DEBUG`` is on.
``W013``-``W016``, reserved for these checks, stay unused.
"""

from __future__ import annotations

import importlib.util
import ipaddress
import re
import socket
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import SplitResult, urlsplit

from django.apps import AppConfig
from django.conf import settings
from django.core.checks import CheckMessage, Error, Tags, Warning, register

from ._e164 import is_prefix
from ._emulator_key import EMULATOR_API_KEY
from ._rates import parse_rate
from ._sms import MAX_SEGMENTS, segments
from .client import api_key_problem
from .conf import (
    DEFAULTS,
    MAX_BATCH_SIZE,
    MAX_CODE_LENGTH,
    MAX_CODE_TTL,
    MIN_CODE_LENGTH,
    conf,
    retention_problems,
)
from .exceptions import TextFlowConfigurationError

_LOOPBACK_HOSTS = {"localhost"}  # and every loopback address: _is_loopback
#: The characters of an IPv4 address in the short or numeric forms ``inet_aton`` reads
#: (``127.1``, ``0x7f.0.0.1``, ``2130706433``); a host name of other characters is no address.
_IPV4_SHORT_RE = re.compile(r"[0-9a-fA-FxX.]+")
#: The scopes a send cap may count per, and a failed-check cap.
SEND_SCOPES = ("number", "ip", "network", "global", "country")
CHECK_SCOPES = ("number", "ip", "network")


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


@register(Tags.compatibility)
def check_settings(
    app_configs: Sequence[AppConfig] | None = None, **kwargs: Any
) -> list[CheckMessage]:
    """Validate ``settings.TEXTFLOW``; one message per problem."""
    raw = getattr(settings, "TEXTFLOW", {})
    if not isinstance(raw, Mapping):
        return [
            Error(
                "settings.TEXTFLOW must be a dict.",
                hint="Set TEXTFLOW = {'API_KEY': '...'} in your settings.",
                id="textflow.E001",
            )
        ]
    errors: list[CheckMessage] = []
    errors += _check_backend()
    errors += _check_values(raw)
    errors += _check_phone_rules(raw)
    errors += _check_verification_rules(raw)
    errors += _check_bulk(raw)
    errors += _check_lease(raw)
    errors += _check_opt_out_footer(raw)
    errors += _check_code_message(raw)
    errors += _check_replies(raw)
    errors += _check_retention(raw)
    unknown = sorted(set(raw) - set(DEFAULTS))
    if unknown:
        errors.append(
            Warning(
                f"Unknown TEXTFLOW keys: {', '.join(map(str, unknown))}.",
                hint=f"Known keys: {', '.join(DEFAULTS)}. A misspelt key keeps its default.",
                id="textflow.W002",
            )
        )
    return errors


def _check_backend() -> list[CheckMessage]:
    from .backends import load_backend_class
    from .backends._emulated import EmulatedBackend
    from .backends.textflow import TextFlowBackend

    try:
        cls = load_backend_class(conf.BACKEND)
    except TextFlowConfigurationError as err:
        return [
            Error(
                str(err),
                hint="Use textflow_django.backends.textflow.TextFlowBackend (the default), "
                "or the console, locmem or dummy backend for development and tests.",
                id="textflow.E003",
            )
        ]
    errors: list[CheckMessage] = []
    if issubclass(cls, TextFlowBackend) and not conf.raw.get("API_KEY"):
        errors.append(
            Error(
                "TEXTFLOW['API_KEY'] is not set, and the TextFlow backend needs it.",
                hint="Set it from the environment, e.g. "
                "TEXTFLOW = {'API_KEY': os.environ.get('TEXTFLOW_API_KEY', '')}; to try "
                "without an account, use the bundled emulator (README: Try it without an "
                "account), or BACKEND 'textflow_django.backends.console.ConsoleBackend'.",
                id="textflow.E002",
            )
        )
    if issubclass(cls, EmulatedBackend) and not settings.DEBUG:
        errors.append(
            Warning(
                f"TEXTFLOW['BACKEND'] is {cls.__name__}, which sends no real SMS, while "
                "DEBUG is False.",
                hint="In production use textflow_django.backends.textflow.TextFlowBackend.",
                id="textflow.W001",
            )
        )
    return errors


def _check_values(raw: Mapping[str, Any]) -> list[CheckMessage]:
    errors: list[CheckMessage] = []
    timeout = raw.get("TIMEOUT", DEFAULTS["TIMEOUT"])
    if not _is_number(timeout) or timeout <= 0:
        errors.append(
            Error(
                f"TEXTFLOW['TIMEOUT'] must be a positive number of seconds, not {timeout!r}.",
                hint="For example 10.",
                id="textflow.E004",
            )
        )
    reset = raw.get("BREAKER_RESET", DEFAULTS["BREAKER_RESET"])
    if not _is_number(reset) or reset <= 0:
        errors.append(
            Error(
                f"TEXTFLOW['BREAKER_RESET'] must be a positive number of seconds, not {reset!r}.",
                hint="For example 30.",
                id="textflow.E004",
            )
        )
    ttl = raw.get("CODE_TTL", DEFAULTS["CODE_TTL"])
    if isinstance(ttl, bool) or not isinstance(ttl, int) or not 1 <= ttl <= MAX_CODE_TTL:
        errors.append(
            Error(
                f"TEXTFLOW['CODE_TTL'] must be a whole number of seconds from 1 to "
                f"{MAX_CODE_TTL}, not {ttl!r}.",
                hint="TextFlow accepts code lifetimes up to a day; the default is 600.",
                id="textflow.E005",
            )
        )
    base_url = raw.get("BASE_URL", DEFAULTS["BASE_URL"])
    parts = _base_url_parts(raw)
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        errors.append(
            Error(
                "TEXTFLOW['BASE_URL'] must be an http(s) URL, not "
                f"{_shown_url(base_url) if isinstance(base_url, str) else base_url!r}.",
                hint="The default is https://textflow.me/api.",
                id="textflow.E006",
            )
        )
    elif parts.scheme == "http" and not _is_loopback(parts.hostname):
        errors.append(
            Warning(
                "TEXTFLOW['BASE_URL'] uses plain http: the API key would cross the network "
                "unencrypted.",
                hint="Use https, or a loopback address for the bundled emulator.",
                id="textflow.W003",
            )
        )
    if _emulator_key_sent_to_textflow(raw):
        errors.append(
            Error(
                "TEXTFLOW['API_KEY'] is the bundled emulator's key, but BASE_URL is TextFlow "
                f"itself ({_shown_url(base_url)}), which refuses it.",
                hint="To try without an account, start the emulator (python -m "
                "textflow_django.testing) and set BASE_URL to 'http://127.0.0.1:8025/api'; "
                "to use TextFlow, set API_KEY to your key from textflow.me.",
                id="textflow.E017",
            )
        )
    for key in ("API_KEY", "SERVICE_NAME"):
        value = raw.get(key, DEFAULTS[key])
        if not isinstance(value, str):
            errors.append(
                Error(
                    f"TEXTFLOW['{key}'] must be a string, not {type(value).__name__}.",
                    hint="Strings only.",
                    id="textflow.E007",
                )
            )
    api_key = raw.get("API_KEY", DEFAULTS["API_KEY"])
    # The client's own rule, so the check and TextFlowClient never disagree on a key.
    problem = api_key_problem(api_key) if isinstance(api_key, str) else None
    if problem is not None:
        errors.append(
            Error(
                f"TEXTFLOW['API_KEY'] cannot be sent to TextFlow. {problem}",
                hint="Strip the value where it is read, e.g. "
                "os.environ['TEXTFLOW_API_KEY'].strip(), or copy the key again from the "
                "TextFlow dashboard.",
                id="textflow.E007",
            )
        )
    return errors


def _is_loopback(host: str | None) -> bool:
    """Whether ``host`` (a URL's lower-cased host name, IPv6 without brackets) is this
    machine: where the bundled emulator listens, and where the key crosses no network.

    ``localhost`` and its sub-domains (RFC 6761), with or without the root's trailing dot;
    a loopback address in any spelling (``127.x.y.z``, ``::1`` or ``0:0:0:0:0:0:0:1``, an
    IPv4-mapped ``::ffff:127.0.0.1``, the short and numeric IPv4 forms the resolver takes:
    ``127.1``, ``2130706433``, ``0x7f.1``); the unspecified address (``0.0.0.0``, ``::``),
    which connects to this machine.
    """
    if host is None:
        return False
    name = host.rstrip(".")
    if name in _LOOPBACK_HOSTS or name.endswith(".localhost"):
        return True
    address: ipaddress.IPv4Address | ipaddress.IPv6Address
    try:
        address = ipaddress.ip_address(name.partition("%")[0])  # without an IPv6 zone
    except ValueError:
        if not name or not _IPV4_SHORT_RE.fullmatch(name):
            return False
        try:  # what the resolver (getaddrinfo, so requests) connects to for "127.1"
            address = ipaddress.IPv4Address(socket.inet_aton(name))
        except OSError:
            return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback or address.is_unspecified


def _is_textflow_itself(host: str | None) -> bool:
    return host is not None and (host == "textflow.me" or host.endswith(".textflow.me"))


def _is_emulator_key(raw: Mapping[str, Any]) -> bool:
    return raw.get("API_KEY") == EMULATOR_API_KEY


def _base_url_parts(raw: Mapping[str, Any]) -> SplitResult | None:
    """``BASE_URL`` split, or None when it is no string or no URL (``textflow.E006``)."""
    base_url = raw.get("BASE_URL", DEFAULTS["BASE_URL"])
    try:
        return urlsplit(base_url) if isinstance(base_url, str) else None
    except ValueError:  # "http://[::1": an unclosed IPv6 bracket
        return None


def _shown_url(base_url: str) -> str:
    """``base_url`` as a check message shows it: ``scheme://host:port``, never the user,
    password, path or query a URL may carry (a password in ``BASE_URL`` must not reach a
    terminal or a CI log). What is no URL shows only what follows its last ``@``."""
    try:
        parts = urlsplit(base_url)
    except ValueError:  # "http://[::1": an unclosed IPv6 bracket
        parts = None
    if parts is not None and parts.scheme and parts.netloc:
        return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"
    return base_url.rpartition("@")[2]


def _emulating_backend() -> bool | None:
    """Whether ``BACKEND`` is an emulating one (console, locmem, dummy), which calls no URL
    and sends nothing with the key: ``textflow.W001`` says so, and the deploy checks of the
    URL and the key (W008, W010) leave it to W001. None when it cannot be loaded
    (``textflow.E003``'s)."""
    from .backends import load_backend_class
    from .backends._emulated import EmulatedBackend

    try:
        return issubclass(load_backend_class(conf.BACKEND), EmulatedBackend)
    except TextFlowConfigurationError:
        return None


def _emulator_key_sent_to_textflow(raw: Mapping[str, Any]) -> bool:
    """``textflow.E017``'s case: the emulator's key with TextFlow's own ``BASE_URL``."""
    parts = _base_url_parts(raw)
    return parts is not None and _is_textflow_itself(parts.hostname) and _is_emulator_key(raw)


@register(Tags.compatibility, deploy=True)
def check_deploy(
    app_configs: Sequence[AppConfig] | None = None, **kwargs: Any
) -> list[CheckMessage]:
    """What ``manage.py check --deploy`` adds for ``settings.TEXTFLOW`` (``DEBUG`` False):
    what is right in development and wrong in production (see the module's docstring)."""
    raw = getattr(settings, "TEXTFLOW", {})
    if settings.DEBUG or not isinstance(raw, Mapping):
        return []
    return [
        *_deploy_base_url(raw),
        *_deploy_api_key(raw),
        *_deploy_proxies(raw),
        *_deploy_countries(raw),
    ]


def _deploy_base_url(raw: Mapping[str, Any]) -> list[CheckMessage]:
    """W008: a loopback ``BASE_URL`` (plain http to another host is W003's, at every check;
    an emulating backend, which calls no URL, W001's)."""
    parts = _base_url_parts(raw)
    if parts is None or not parts.hostname:  # textflow.E006 says what is wrong
        return []
    if not _is_loopback(parts.hostname) or _emulating_backend():
        return []
    shown = _shown_url(raw.get("BASE_URL", DEFAULTS["BASE_URL"]))
    return [
        Warning(
            f"TEXTFLOW['BASE_URL'] is {shown}: a loopback host, where only the bundled "
            "emulator listens, while DEBUG is False.",
            hint="In production leave BASE_URL at its default, https://textflow.me/api, "
            "and set API_KEY to your TextFlow key.",
            id="textflow.W008",
        )
    ]


def _deploy_api_key(raw: Mapping[str, Any]) -> list[CheckMessage]:
    """W010: the emulator's key where it would be used: not with TextFlow's own URL
    (``textflow.E017``, an error at every check), nor with an emulating backend, which
    sends nothing with it (``textflow.W001``)."""
    if not _is_emulator_key(raw) or _emulator_key_sent_to_textflow(raw):
        return []
    if _emulating_backend() is not False:  # W001's, or textflow.E003's when it cannot load
        return []
    return [
        Warning(
            "TEXTFLOW['API_KEY'] is the bundled emulator's key, which is public: production "
            "would be texting through an emulator, which sends no SMS.",
            hint="Set API_KEY to your key from textflow.me, read from the environment "
            "(os.environ['TEXTFLOW_API_KEY']), and leave BASE_URL at its default.",
            id="textflow.W010",
        )
    ]


#: Django's settings that say requests reach the site through a proxy.
_PROXY_SETTINGS = ("SECURE_PROXY_SSL_HEADER", "USE_X_FORWARDED_HOST", "USE_X_FORWARDED_PORT")


def _deploy_proxies(raw: Mapping[str, Any]) -> list[CheckMessage]:
    """W011: ``NUM_PROXIES`` 0 on a site its settings put behind a proxy. The same mistake
    seen at run time is the event ``textflow.deploy.proxy_header_ignored`` (``_client_ip``)."""
    proxies = raw.get("NUM_PROXIES", DEFAULTS["NUM_PROXIES"])
    if proxies != 0 or isinstance(proxies, bool):  # a bool is textflow.E011's
        return []
    behind = [name for name in _PROXY_SETTINGS if getattr(settings, name, None)]
    if not behind:
        return []
    return [
        Warning(
            f"TEXTFLOW['NUM_PROXIES'] is 0, but {' and '.join(behind)} put the site behind a "
            "proxy: every client would count as the proxy's address, so one client could use "
            "up the per-IP and per-network caps of all.",
            hint="Set NUM_PROXIES to the number of proxies in front of Django that append to "
            "X-Forwarded-For (1 for one load balancer or nginx). At run time, "
            "textflow.deploy.proxy_header_ignored is logged once per process when a request "
            "carries X-Forwarded-For while NUM_PROXIES is 0.",
            id="textflow.W011",
        )
    ]


def _deploy_countries(raw: Mapping[str, Any]) -> list[CheckMessage]:
    """W012: no ``ALLOWED_COUNTRIES`` (a value that is no list is textflow.E009's)."""
    if raw.get("ALLOWED_COUNTRIES", DEFAULTS["ALLOWED_COUNTRIES"]) is not None:
        return []
    return [
        Warning(
            "TEXTFLOW['ALLOWED_COUNTRIES'] is not set: codes may be sent to numbers of every "
            "country, the premium-rate destinations SMS pumping targets included.",
            hint="List the countries your users are in, e.g. ALLOWED_COUNTRIES = ['US', 'CA'] "
            "(README: Fraud Guard). To serve every country on purpose, add 'textflow.W012' "
            "to SILENCED_SYSTEM_CHECKS.",
            id="textflow.W012",
        )
    ]


#: A host name as WebOTP's origin-bound line names it (no scheme, port or path).
_HOST_RE = re.compile(
    r"(?=.{1,253}\Z)([A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)*"
    r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
)


def _check_code_message(raw: Mapping[str, Any]) -> list[CheckMessage]:
    from .verification import code_template_problem, code_text

    template = raw.get("CODE_MESSAGE")
    domain = raw.get("WEBOTP_DOMAIN")
    problems = []
    problem = None if template is None else code_template_problem(template)
    if problem is not None:
        problems.append(f"CODE_MESSAGE {problem}: {template!r}")
    if domain is not None and (not isinstance(domain, str) or not _HOST_RE.fullmatch(domain)):
        problems.append(f"WEBOTP_DOMAIN must be a host name like 'example.com', not {domain!r}")
    if problems:
        return [
            Error(
                "; ".join(problems) + ".",
                hint="For example CODE_MESSAGE = '{code} is your {service} code' and "
                "WEBOTP_DOMAIN = 'www.example.com' (the host your pages are served from).",
                id="textflow.E018",
            )
        ]
    # The longest code the settings make; the default text is measured in English.
    length = raw.get("CODE_LENGTH", DEFAULTS["CODE_LENGTH"])
    sample = "0" * (length if isinstance(length, int) and length > 0 else MAX_CODE_LENGTH)
    try:
        text = code_text(sample)
    except (KeyError, IndexError, ValueError, TypeError):  # E007 or E018 says what is wrong
        return []
    parts = segments(text)
    if parts.count <= 1:
        return []
    return [
        Warning(
            f"The code SMS takes {parts.count} SMS segments ({parts.units} {parts.encoding} "
            "units): each code costs that many SMS.",
            hint="Shorten CODE_MESSAGE or SERVICE_NAME; a GSM-7 SMS holds 160 characters, "
            "one with other characters (UCS-2) 70.",
            id="textflow.W009",
        )
    ]


def _check_phone_rules(raw: Mapping[str, Any]) -> list[CheckMessage]:
    import phonenumbers

    regions = phonenumbers.SUPPORTED_REGIONS
    errors: list[CheckMessage] = []
    region = raw.get("DEFAULT_REGION")
    if region is not None and (not isinstance(region, str) or region.upper() not in regions):
        errors.append(
            Error(
                f"TEXTFLOW['DEFAULT_REGION'] {region!r} is not a known region.",
                hint="Use an ISO 3166-1 alpha-2 code such as 'US' or 'GB', or None.",
                id="textflow.E008",
            )
        )
    for key in ("ALLOWED_COUNTRIES", "BLOCKED_COUNTRIES"):
        value = raw.get(key, DEFAULTS[key])
        if value is None and key == "ALLOWED_COUNTRIES":
            continue
        bad = (
            [value]
            if isinstance(value, str) or not isinstance(value, list | tuple | set | frozenset)
            else [c for c in value if not isinstance(c, str) or c.upper() not in regions]
        )
        if bad:
            errors.append(
                Error(
                    f"TEXTFLOW['{key}'] must be a list of ISO region codes; "
                    f"not valid: {', '.join(map(repr, bad))}.",
                    hint="For example ['US', 'CA'].",
                    id="textflow.E009",
                )
            )
    return errors


def _whole(value: object, minimum: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def _check_bulk(raw: Mapping[str, Any]) -> list[CheckMessage]:
    """E015: ``MAX_TEXT_LENGTH`` counts SMS segments; 255 parts is all a concatenated SMS
    can carry."""
    value = raw.get("MAX_TEXT_LENGTH", DEFAULTS["MAX_TEXT_LENGTH"])
    if _whole(value, 1) and value <= MAX_SEGMENTS:
        return []
    return [
        Error(
            f"TEXTFLOW['MAX_TEXT_LENGTH'] must be a whole number of SMS segments from 1 to "
            f"{MAX_SEGMENTS}, not {value!r}.",
            hint=f"The default is {DEFAULTS['MAX_TEXT_LENGTH']!r} segments: 1,530 GSM-7 "
            "characters, or 670 characters of other scripts or emoji (UCS-2).",
            id="textflow.E015",
        )
    ]


def _check_opt_out_footer(raw: Mapping[str, Any]) -> list[CheckMessage]:
    """E022: the footer appended to bulk texts is text (bulk._text.footer's rules).
    W020: the footer names a word the replies webhook takes as an opt-out (in the language
    the check runs in, the settings' LANGUAGE_CODE for manage.py)."""
    from . import replies
    from .bulk._text import footer

    try:
        line = footer()
    except ValueError as err:
        if "BULK_OPT_OUT_FOOTER" not in raw:
            return []
        return [
            Error(
                str(err),
                hint='A string such as "Reply STOP to opt out" (a gettext_lazy one is '
                'translated when a job is made), or None or "" for no footer.',
                id="textflow.E022",
            )
        ]
    try:
        keywords = replies.opt_out_keywords()
    except (TypeError, ValueError):
        return []  # OPT_OUT_KEYWORDS is malformed: E021 says so
    if not line or keywords.intersection(map(replies.keyword_form, line.split())):
        return []
    return [
        Warning(
            f"TEXTFLOW['BULK_OPT_OUT_FOOTER'] ({line!r}) names no opt-out keyword in effect: "
            "a person who replies as it says is not taken off the list.",
            hint="Name a word of OPT_OUT_KEYWORDS in the footer (and in its translations), "
            "or add the footer's word to OPT_OUT_KEYWORDS.",
            id="textflow.W020",
        )
    ]


def _check_lease(raw: Mapping[str, Any]) -> list[CheckMessage]:
    """E020: a resume judges a claim older than ``BULK_LEASE`` its dead sender's, so the
    lease must outlast what a live sender may go without stamping its claim; with a
    shorter one a resume would mark a batch uncertain while it is being sent."""
    from .bulk.sending import lease_floor

    lease = raw.get("BULK_LEASE", DEFAULTS["BULK_LEASE"])
    timeout = raw.get("TIMEOUT", DEFAULTS["TIMEOUT"])
    if _is_number(lease) and lease > 0:
        if not _is_number(timeout) or timeout <= 0:  # E004 says what is wrong
            return []
        floor = lease_floor(timeout)
        if lease > floor:
            return []
        problem = (
            f"TEXTFLOW['BULK_LEASE'] ({lease:g} s) must be longer than a live bulk sender "
            f"may go without renewing its claim on a batch: {floor:g} s with TIMEOUT "
            f"{timeout:g} s (one call to TextFlow with its connection retries, after one "
            "Retry-After wait). A resume would mark batches uncertain while they are sent."
        )
    else:
        problem = f"TEXTFLOW['BULK_LEASE'] must be a positive number of seconds, not {lease!r}."
    return [
        Error(
            problem,
            hint=f"The default is {DEFAULTS['BULK_LEASE']!r} seconds; the lease only delays "
            "how soon a resume gives up on a sender that died, so err on the long side.",
            id="textflow.E020",
        )
    ]


def _limits_problem(key: str, value: object) -> str | None:
    """What is wrong with ``SEND_LIMITS`` or ``FAILED_CHECK_LIMITS`` (E012), or None."""
    if not isinstance(value, Mapping):
        return "it is not a dict"
    scopes = SEND_SCOPES if key == "SEND_LIMITS" else CHECK_SCOPES
    for scope, rates in value.items():
        if scope not in scopes:
            return f"unknown scope {scope!r}"
        try:
            windows = [
                parse_rate(rate).window
                for rate in ([rates] if isinstance(rates, str) else list(rates))
            ]
        except (TypeError, ValueError) as err:
            return str(err)
        if len(set(windows)) < len(windows):
            # They would share one counter (a counter is per scope and window).
            return f"two rates of {scope!r} have the same window; keep the tighter"
    return None


def _check_verification_rules(raw: Mapping[str, Any]) -> list[CheckMessage]:
    from django.utils.module_loading import import_string

    errors: list[CheckMessage] = []
    mode = raw.get("VERIFY_MODE", DEFAULTS["VERIFY_MODE"])
    if mode not in ("textflow", "local"):
        errors.append(
            Error(
                f"TEXTFLOW['VERIFY_MODE'] must be 'textflow' or 'local', not {mode!r}.",
                hint="'textflow' lets TextFlow hold the codes; 'local' keeps hashes here.",
                id="textflow.E010",
            )
        )
    for key, minimum, maximum in (
        ("MAX_ATTEMPTS", 1, None),
        ("RESEND_COOLDOWN", 0, None),
        ("NUM_PROXIES", 0, None),
        ("TOKEN_MAX_AGE", 1, None),
        ("CODE_LENGTH", MIN_CODE_LENGTH, MAX_CODE_LENGTH),
        ("BULK_BATCH_SIZE", 1, MAX_BATCH_SIZE),
        ("BREAKER_THRESHOLD", 0, None),
    ):
        value = raw.get(key, DEFAULTS[key])
        if not _whole(value, minimum) or (maximum is not None and value > maximum):
            span = f">= {minimum}" if maximum is None else f"from {minimum} to {maximum:,}"
            errors.append(
                Error(
                    f"TEXTFLOW['{key}'] must be a whole number {span}, not {value!r}.",
                    hint=f"The default is {DEFAULTS[key]!r}.",
                    id="textflow.E011",
                )
            )
    for key in ("SEND_LIMITS", "FAILED_CHECK_LIMITS"):
        problem = _limits_problem(key, raw.get(key, DEFAULTS[key]))
        if problem:
            errors.append(
                Error(
                    f"TEXTFLOW['{key}'] is not valid: {problem}.",
                    hint="For example {'number': ['5/h', '10/d'], 'ip': ['20/h'], "
                    "'network': ['60/h']}.",
                    id="textflow.E012",
                )
            )
    errors.extend(_check_guessing())
    errors.extend(_check_fraud_guard(raw))
    store = raw.get("RATELIMIT_STORE", DEFAULTS["RATELIMIT_STORE"])
    alias = raw.get("RATELIMIT_CACHE", DEFAULTS["RATELIMIT_CACHE"])
    if store not in ("database", "cache"):
        errors.append(
            Error(
                f"TEXTFLOW['RATELIMIT_STORE'] must be 'database' or 'cache', not {store!r}.",
                hint="'database' works everywhere; 'cache' wants Redis or Memcached.",
                id="textflow.E013",
            )
        )
    elif store == "cache":
        if alias not in settings.CACHES:
            errors.append(
                Error(
                    f"TEXTFLOW['RATELIMIT_CACHE'] {alias!r} is not in settings.CACHES.",
                    hint="Name a cache alias from settings.CACHES.",
                    id="textflow.E013",
                )
            )
        else:
            backend = settings.CACHES[alias].get("BACKEND", "")
            if not settings.DEBUG and _per_process_cache(backend):
                errors.append(
                    Warning(
                        f"Rate limits are kept in cache {alias!r} ({backend}), which is not "
                        "shared between processes: each worker would allow the full limit.",
                        hint="Use Redis or Memcached, or RATELIMIT_STORE = 'database'.",
                        id="textflow.W004",
                    )
                )
    for key in ("AUTHENTICATION_CLASSES", "PERMISSION_CLASSES", "THROTTLE_CLASSES"):
        for path in raw.get(key, DEFAULTS[key]) or ():
            try:
                import_string(path)
            except (ImportError, AttributeError, TypeError, ValueError) as err:
                errors.append(
                    Error(
                        f"TEXTFLOW['{key}'] entry {path!r} cannot be imported: {err}",
                        hint="Give dotted paths of DRF permission or throttle classes.",
                        id="textflow.E014",
                    )
                )
    return errors


def _per_process_cache(backend: str) -> bool:
    """Whether the cache class at ``backend`` keeps what it stores in each process (or in
    no process: ``DummyCache``), or holds no counter atomically across them (files): one of
    Django's three, or a subclass of one."""
    from django.core.cache.backends.dummy import DummyCache
    from django.core.cache.backends.filebased import FileBasedCache
    from django.core.cache.backends.locmem import LocMemCache
    from django.utils.module_loading import import_string

    try:
        cls = import_string(backend)
    except (ImportError, ValueError):  # Django's cache framework reports it when used
        return False
    return isinstance(cls, type) and issubclass(cls, LocMemCache | DummyCache | FileBasedCache)


def _check_guessing() -> list[CheckMessage]:
    """W005 and W006: the two ways the settings open a number's code to guessing or its
    owner to a lockout. Only when the rates themselves are valid (E012 reports them)."""
    from .verification.odds import TEXTFLOW_CODE_LENGTH, guess_chance

    try:
        send_limits, failed_limits = conf.SEND_LIMITS, conf.FAILED_CHECK_LIMITS
    except (TypeError, ValueError, AttributeError):
        return []
    found: list[CheckMessage] = []
    if conf.VERIFY_MODE == "textflow":
        daily = guess_chance(TEXTFLOW_CODE_LENGTH, send_limits.get("number", ()))
        odds = (
            "without a per-number send cap the chance has no bound"
            if daily is None
            else f"a targeted number's code is guessed with a chance of {daily:.2%} a day "
            f"({1 - (1 - daily) ** 365:.0%} a year)"
        )
        found.append(
            Warning(
                f"TEXTFLOW['VERIFY_MODE'] is 'textflow': TextFlow's codes have "
                f"{TEXTFLOW_CODE_LENGTH} digits, and at these caps {odds}.",
                hint="Use VERIFY_MODE 'local' (the default: CODE_LENGTH digits, 6 at least, as "
                "NIST SP 800-63B asks), or lower SEND_LIMITS['number'] and MAX_ATTEMPTS.",
                id="textflow.W005",
            )
        )
    if failed_limits.get("number"):
        found.append(
            Warning(
                "TEXTFLOW['FAILED_CHECK_LIMITS'] has a 'number' scope: anyone's wrong codes "
                "spend it, so strangers can lock a number's owner out of verifying.",
                hint="Guessing is bounded per verification (MAX_ATTEMPTS) and per client; "
                "remove the 'number' scope unless that lockout is what you want.",
                id="textflow.W006",
            )
        )
    return found


_GUARD_INTS = {  # key: (least, most)
    "PREFIX_DIGITS": (1, 15),
    "WINDOW": (60, 30 * 86400),
    "GRACE": (10, 86400),
    "MIN_SENDS": (1, 1_000_000),
    "BLOCK_SECONDS": (60, 365 * 86400),
}


def _check_fraud_guard(raw: Mapping[str, Any]) -> list[CheckMessage]:
    """E016 (the guard's settings) and W007 (a protection the settings turned off)."""
    value = raw.get("FRAUD_GUARD", DEFAULTS["FRAUD_GUARD"])
    problems: list[str] = []
    if not isinstance(value, Mapping):
        problems.append("it is not a dict")
        value = {}
    unknown = sorted(set(value) - set(DEFAULTS["FRAUD_GUARD"]))
    if unknown:
        problems.append(f"unknown keys {unknown}")
    guard = {**DEFAULTS["FRAUD_GUARD"], **value}
    for key, (least, most) in _GUARD_INTS.items():
        number = guard[key]
        if not isinstance(number, int) or isinstance(number, bool) or not least <= number <= most:
            problems.append(f"{key} must be a whole number from {least} to {most}")
    share = guard["MIN_CONVERSION"]
    if not _is_number(share) or not 0 <= share <= 1:
        problems.append("MIN_CONVERSION must be a share from 0 to 1")
    if not isinstance(guard["ENABLED"], bool):
        problems.append("ENABLED must be True or False")
    allow = guard["ALLOW_PREFIXES"]
    prefixes = [allow] if isinstance(allow, str) else allow
    if not isinstance(prefixes, list | tuple) or not all(is_prefix(p) for p in prefixes):
        problems.append("ALLOW_PREFIXES must be a list of prefixes like '+1202555'")
    try:
        parse_rate(guard["NEW_COUNTRY_LIMIT"])
    except (TypeError, ValueError) as err:
        problems.append(f"NEW_COUNTRY_LIMIT: {err}")
    found: list[CheckMessage] = []
    if problems:
        found.append(
            Error(
                f"TEXTFLOW['FRAUD_GUARD'] is not valid: {'; '.join(problems)}.",
                hint=f"Keys and defaults: {dict(DEFAULTS['FRAUD_GUARD'])!r}; give only the "
                "keys you change.",
                id="textflow.E016",
            )
        )
        return found
    off = []
    if guard["ENABLED"] is False:
        off.append(
            "FRAUD_GUARD['ENABLED'] is False: destinations whose codes are never used "
            "are not blocked"
        )
    send_limits = raw.get("SEND_LIMITS", DEFAULTS["SEND_LIMITS"])
    if _limits_problem("SEND_LIMITS", send_limits) is None:  # else E012 says what is wrong
        off += [
            f"SEND_LIMITS has no {scope!r} budget"
            for scope in ("global", "country")
            if not send_limits.get(scope)
        ]
    if off:
        found.append(
            Warning(
                "A Fraud Guard protection against SMS pumping is off: " + "; ".join(off) + ".",
                hint="Keep the defaults (README: Fraud Guard) unless another layer stops "
                "pumping; a SEND_LIMITS dict replaces the defaults' scopes, so list them all.",
                id="textflow.W007",
            )
        )
    return found


def _check_retention(raw: Mapping[str, Any]) -> list[CheckMessage]:
    """E019: ``RETENTION``'s values (conf's rule), and verifications kept long enough for
    what reads them (``retention.verification_days_problems``, the rule ``cleanup`` applies
    too)."""
    from .retention import verification_days_problems

    value = raw.get("RETENTION", DEFAULTS["RETENTION"])
    problems = retention_problems(value)
    if not problems:
        try:
            problems = verification_days_problems(
                {**DEFAULTS["RETENTION"], **value}["VERIFICATIONS"]
            )
        except (TypeError, ValueError):  # E005, E011 or E016 says what is wrong
            pass
    if not problems:
        return []
    return [
        Error(
            f"TEXTFLOW['RETENTION'] is not valid: {'; '.join(problems)}.",
            hint=f"Days per kind, None to keep forever; the defaults: "
            f"{dict(DEFAULTS['RETENTION'])!r}. Give only the keys you change.",
            id="textflow.E019",
        )
    ]


#: A replies-webhook secret shorter than this is refused (E021), one shorter than
#: ``REPLY_SECRET_ADVISED`` or of fewer distinct characters than ``REPLY_SECRET_DISTINCT``
#: warned about (W017): the secret is all that tells TextFlow's posts from anyone's, and
#: anyone who guesses it can opt every number out.
REPLY_SECRET_MIN = 16
REPLY_SECRET_ADVISED = 32
REPLY_SECRET_DISTINCT = 10
_REPLIES_HINT = (
    "Make one with python -c 'import secrets; print(secrets.token_urlsafe(32))', set it "
    "from the environment, and give TextFlow the same secret for its reply forwarding."
)


def _check_replies(raw: Mapping[str, Any]) -> list[CheckMessage]:
    """E021 (a replies setting is not valid) and W017 (the webhook is weakly set up)."""
    from .replies import (
        OPT_IN_KEYWORDS_BY_LANGUAGE,
        OPT_OUT_KEYWORDS_BY_LANGUAGE,
        keyword_forms,
        keywords_problem,
    )

    problems: list[str] = []
    secret = raw.get("REPLY_SECRET", DEFAULTS["REPLY_SECRET"])
    if secret is not None and not isinstance(secret, str):
        problems.append(f"REPLY_SECRET must be a string, not {type(secret).__name__}")
        secret = None
    elif secret and len(secret) < REPLY_SECRET_MIN:
        problems.append(f"REPLY_SECRET has {len(secret)} characters, fewer than {REPLY_SECRET_MIN}")
    elif secret and secret != secret.strip():
        # As API_KEY's (E007): a newline from a secrets file, which no TextFlow post carries.
        problems.append("REPLY_SECRET begins or ends with whitespace")
    lists: dict[str, set[str]] = {}
    for key, built_in in (
        ("OPT_OUT_KEYWORDS", OPT_OUT_KEYWORDS_BY_LANGUAGE),
        ("OPT_IN_KEYWORDS", OPT_IN_KEYWORDS_BY_LANGUAGE),
    ):
        value = raw.get(key, DEFAULTS[key])
        problem = keywords_problem(value)
        if problem is not None:
            problems.append(f"{key} {problem}")
            continue
        lists[key] = set(keyword_forms(value, built_in))
    both = lists.get("OPT_OUT_KEYWORDS", set()) & lists.get("OPT_IN_KEYWORDS", set())
    if both:
        problems.append(
            f"{', '.join(sorted(both))} is in both OPT_OUT_KEYWORDS and OPT_IN_KEYWORDS"
        )
    try:
        parse_rate(raw.get("REPLY_RATE", DEFAULTS["REPLY_RATE"]))
    except (TypeError, ValueError) as err:
        problems.append(f"REPLY_RATE: {err}")
    confirmations = raw.get("REPLY_CONFIRMATIONS", DEFAULTS["REPLY_CONFIRMATIONS"])
    if not isinstance(confirmations, bool):
        problems.append("REPLY_CONFIRMATIONS must be True or False")
    if problems:
        return [
            Error(
                f"The replies settings are not valid: {'; '.join(problems)}.",
                hint=f"Keyword lists are lists of strings such as ['STOP', 'QUIT'] (None: "
                f"the built-in lists); REPLY_RATE is a rate such as '600/m'. {_REPLIES_HINT}",
                id="textflow.E021",
            )
        ]
    weak: list[str] = []
    if secret:
        if len(secret) < REPLY_SECRET_ADVISED:
            weak.append(
                f"REPLY_SECRET has {len(secret)} characters, fewer than {REPLY_SECRET_ADVISED}"
            )
        elif len(set(secret)) < REPLY_SECRET_DISTINCT:
            weak.append(f"REPLY_SECRET has only {len(set(secret))} distinct characters")
        if secret == raw.get("API_KEY"):
            weak.append(
                "REPLY_SECRET is the API key: it would travel in every forwarded reply and "
                "sit on the forwarding phone"
            )
    else:
        configured = [
            key
            for key in ("REPLY_CONFIRMATIONS", "OPT_OUT_KEYWORDS", "OPT_IN_KEYWORDS")
            if raw.get(key, DEFAULTS[key]) not in (None, False)
        ]
        if configured:
            weak.append(
                f"{', '.join(configured)} {'is' if len(configured) == 1 else 'are'} set, but "
                "REPLY_SECRET is not: the replies webhook answers 404 and no reply arrives"
            )
    if not weak:
        return []
    return [
        Warning(
            f"The replies webhook is weakly set up: {'; '.join(weak)}.",
            hint=_REPLIES_HINT,
            id="textflow.W017",
        )
    ]


def metrics_available() -> bool:
    """Whether ``prometheus_client`` (the ``prometheus`` extra) can be imported: found on the
    path, without importing it (a site without the extra imports nothing for metrics). The
    app's ``ready()`` installs the metrics on the same answer."""
    try:
        return importlib.util.find_spec("prometheus_client") is not None
    except (ImportError, ValueError):  # a finder refusing it; a stub in sys.modules
        return False


@register(Tags.compatibility)
def check_metrics(
    app_configs: Sequence[AppConfig] | None = None, **kwargs: Any
) -> list[CheckMessage]:
    """E023 and W019: ``METRICS`` is a bool, and a site that asks for metrics gets them."""
    raw = getattr(settings, "TEXTFLOW", {})
    if not isinstance(raw, Mapping) or "METRICS" not in raw:
        return []  # the default: metrics if prometheus_client is installed, silently
    value = raw["METRICS"]
    if not isinstance(value, bool):
        return [
            Error(
                f"TEXTFLOW['METRICS'] must be True or False, not {value!r}.",
                hint="True counts the app's events as Prometheus metrics when "
                "prometheus_client is installed; False never does.",
                id="textflow.E023",
            )
        ]
    if value and not metrics_available():
        return [
            Warning(
                "TEXTFLOW['METRICS'] is True but prometheus_client is not installed: "
                "textflow-django records no metrics.",
                hint="pip install textflow-django[prometheus] (or set METRICS to False).",
                id="textflow.W019",
            )
        ]
    return []
