"""One test per system check ID (see the ledger in textflow_django/checks.py)."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
from django.core.checks import CheckMessage, Error, Warning
from django.db import models
from django.test import override_settings
from django.test.utils import isolate_apps

import textflow_django.checks
import textflow_django.fields
from textflow_django.checks import check_deploy, check_settings
from textflow_django.client import api_key_problem
from textflow_django.fields import PhoneNumberField
from textflow_django.testing import EMULATOR_API_KEY

GOOD = {
    "API_KEY": "k" * 64,
    "BACKEND": "textflow_django.backends.textflow.TextFlowBackend",
}
#: The Fraud Guard's budgets, which a SEND_LIMITS dict must list (or textflow.W007 says so).
BUDGETS = {"global": ("1000/h",), "country": ("300/h",)}


def ids(**textflow: object) -> list[str]:
    return [m.id for m in _run(**textflow)]


def test_a_good_configuration_passes():
    assert ids(**GOOD) == []


def test_checks_are_registered():
    from django.core.checks import registry

    assert check_settings in registry.registry.get_checks()


def test_e001_not_a_dict():
    with override_settings(TEXTFLOW=["API_KEY"]):
        [message] = check_settings()
    assert message.id == "textflow.E001" and isinstance(message, Error)
    assert message.hint


def test_e002_missing_api_key():
    [message] = [m for m in _run(BACKEND=GOOD["BACKEND"]) if m.id == "textflow.E002"]
    assert isinstance(message, Error)
    assert "API_KEY" in message.msg and "TEXTFLOW_API_KEY" in message.hint


def test_e002_not_raised_for_emulating_backends():
    with override_settings(DEBUG=True):
        assert ids(BACKEND="textflow_django.backends.console.ConsoleBackend") == []


@pytest.mark.parametrize("path", ["nope.Backend", "textflow_django.conf.Settings"])
def test_e003_bad_backend(path):
    assert ids(**{**GOOD, "BACKEND": path}) == ["textflow.E003"]


@pytest.mark.parametrize("value", [0, -1, "10", True, None])
def test_e004_timeout(value):
    assert ids(**GOOD, TIMEOUT=value) == ["textflow.E004"]


@pytest.mark.parametrize("value", [0, 86401, 1.5, "600", True])
def test_e005_code_ttl(value):
    assert ids(**GOOD, CODE_TTL=value) == ["textflow.E005"]


@pytest.mark.parametrize("value", [1, 86400])
def test_e005_code_ttl_bounds_are_allowed(value):
    assert ids(**GOOD, CODE_TTL=value) == []


@pytest.mark.parametrize(
    "value", ["ftp://textflow.me/api", "textflow.me/api", "", None, "https://"]
)
def test_e006_base_url(value):
    assert ids(**GOOD, BASE_URL=value) == ["textflow.E006"]


def test_e007_api_key_type_is_reported_without_the_value():
    with override_settings(TEXTFLOW={**GOOD, "API_KEY": 1234567890}):
        messages = check_settings()
    assert [m.id for m in messages] == ["textflow.E007"]
    assert "1234567890" not in messages[0].msg


@pytest.mark.parametrize(
    ("key", "says"),
    [
        ("k" * 64 + "\n", "(U+000A at position 65 of 65): a trailing newline"),
        ("k" * 32 + " " + "k" * 32, "(U+0020 at position 33 of 65)"),
        ("k" * 63 + "é", "non-ASCII characters (at position 64 of 64)"),
    ],
    ids=["trailing-newline", "inner-space", "non-ascii"],
)
def test_e007_api_key_no_header_can_carry(key, says):
    messages = _run(**{**GOOD, "API_KEY": key})
    assert [m.id for m in messages] == ["textflow.E007"]
    [message] = messages
    assert isinstance(message, Error)
    # The client's own rule and sentence: the check and TextFlowClient never disagree.
    problem = api_key_problem(key)
    assert problem is not None and says in problem
    assert message.msg == f"TEXTFLOW['API_KEY'] cannot be sent to TextFlow. {problem}"
    assert "os.environ['TEXTFLOW_API_KEY'].strip()" in message.hint
    for text in (message.msg, message.hint, repr(message)):
        assert "k" * 12 not in text  # no part of the key


def test_e007_a_bad_key_is_flagged_whatever_the_backend():
    with override_settings(DEBUG=True):
        assert ids(BACKEND="textflow_django.backends.locmem.LocMemBackend", API_KEY="k\n") == [
            "textflow.E007"
        ]


def test_e007_service_name_type():
    assert ids(**GOOD, SERVICE_NAME=["Acme"]) == ["textflow.E007"]


@pytest.mark.parametrize(
    "backend", ["console.ConsoleBackend", "locmem.LocMemBackend", "dummy.DummyBackend"]
)
def test_w001_emulating_backend_without_debug(backend):
    with override_settings(DEBUG=False):
        messages = _run(BACKEND=f"textflow_django.backends.{backend}")
    assert [m.id for m in messages] == ["textflow.W001"]
    assert isinstance(messages[0], Warning)
    with override_settings(DEBUG=True):
        assert ids(BACKEND=f"textflow_django.backends.{backend}") == []


def test_w002_unknown_key():
    with override_settings(TEXTFLOW={**GOOD, "API_KEYS": "x", "CODE_TIL": 5}):
        [message] = check_settings()
    assert message.id == "textflow.W002"
    assert "API_KEYS" in message.msg and "CODE_TIL" in message.msg


def test_w003_plain_http_to_a_remote_host():
    assert ids(**GOOD, BASE_URL="http://textflow.me/api") == ["textflow.W003"]
    assert ids(**GOOD, BASE_URL="http://127.0.0.1:8025/api") == []
    assert ids(**GOOD, BASE_URL="http://localhost:8025/api") == []


def test_e002_a_missing_key_is_a_check_error_not_a_traceback():
    """The README's settings read the key with os.environ.get: without it, manage.py stops
    with textflow.E002 (naming the setting and how to try without an account), no KeyError."""
    [message] = [m for m in _run(BACKEND=GOOD["BACKEND"], API_KEY="") if m.id == "textflow.E002"]
    assert "os.environ.get('TEXTFLOW_API_KEY', '')" in message.hint
    assert "without an account" in message.hint


@pytest.mark.parametrize(
    "base_url", ["https://textflow.me/api", "https://textflow.me/api/", "https://api.textflow.me/"]
)
def test_e017_the_emulators_key_with_textflows_own_url(base_url):
    [message] = _run(API_KEY=EMULATOR_API_KEY, BASE_URL=base_url)
    assert message.id == "textflow.E017" and isinstance(message, Error)
    assert "python -m textflow_django.testing" in message.hint
    assert EMULATOR_API_KEY not in message.msg + message.hint  # never the key itself
    # The default BASE_URL is TextFlow's: the key alone is enough to be told.
    assert ids(API_KEY=EMULATOR_API_KEY) == ["textflow.E017"]


@pytest.mark.parametrize(
    "base_url", ["http://127.0.0.1:8025/api", "http://localhost:9/api", "http://emu.internal/api"]
)
def test_e017_not_raised_with_the_emulators_url(base_url):
    assert "textflow.E017" not in ids(API_KEY=EMULATOR_API_KEY, BASE_URL=base_url)


def _deploy(debug: bool, **textflow: object) -> list[CheckMessage]:
    # With ALLOWED_COUNTRIES, unless a test says otherwise: without it is textflow.W012's
    # (tests/test_deploy_checks.py has the deploy checks' own tests).
    with override_settings(DEBUG=debug, TEXTFLOW={"ALLOWED_COUNTRIES": ["US"], **textflow}):
        return check_deploy()


@pytest.mark.parametrize(
    "base_url",
    ["http://127.0.0.1:8025/api", "https://localhost:8025/api", "https://127.0.0.2/api"],
)
def test_w008_deploy_warns_on_a_loopback_base_url_without_debug(base_url):
    [message] = _deploy(False, **GOOD, BASE_URL=base_url)
    assert message.id == "textflow.W008" and isinstance(message, Warning)
    assert "loopback" in message.msg
    assert _deploy(True, **GOOD, BASE_URL=base_url) == []  # development: no warning


def test_plain_http_to_another_host_is_w003s_alone_and_127_x_is_loopback_to_both():
    # One warning for one problem: W003 says it, with DEBUG on or off; W008 adds nothing.
    assert _deploy(False, **GOOD, BASE_URL="http://sms-proxy.internal/api") == []
    assert ids(**GOOD, BASE_URL="http://sms-proxy.internal/api") == ["textflow.W003"]
    assert ids(**GOOD, BASE_URL="http://127.0.0.2:8025/api") == []


def test_w008_only_with_check_deploy():
    from django.core.checks import registry

    assert check_deploy in registry.registry.get_checks(include_deployment_checks=True)
    assert check_deploy not in registry.registry.get_checks()
    assert _deploy(False, **GOOD) == []  # the default BASE_URL is fine
    assert _deploy(False, **GOOD, BASE_URL="ftp://x") == []  # E006's to report


@pytest.mark.parametrize(
    ("options", "says"),
    [
        ({"CODE_MESSAGE": "Your code"}, "CODE_MESSAGE"),
        ({"CODE_MESSAGE": "{code} for {site}"}, "CODE_MESSAGE"),
        ({"CODE_MESSAGE": "{code.real}"}, "CODE_MESSAGE"),
        ({"CODE_MESSAGE": "{code"}, "CODE_MESSAGE"),
        ({"CODE_MESSAGE": 5}, "CODE_MESSAGE"),
        ({"WEBOTP_DOMAIN": "https://example.com"}, "WEBOTP_DOMAIN"),
        ({"WEBOTP_DOMAIN": "example.com/path"}, "WEBOTP_DOMAIN"),
        ({"WEBOTP_DOMAIN": "exa mple.com"}, "WEBOTP_DOMAIN"),
    ],
)
def test_e018_code_message_and_webotp_domain(options, says):
    [message] = _run(**GOOD, **options)
    assert message.id == "textflow.E018" and says in message.msg


@pytest.mark.parametrize(
    "options",
    [
        {"CODE_MESSAGE": "{code} is your {service} code"},
        {"CODE_MESSAGE": "{code}", "WEBOTP_DOMAIN": "www.example.com"},
        {"SERVICE_NAME": "Acme", "WEBOTP_DOMAIN": "localhost", "CODE_LENGTH": 10},
    ],
)
def test_good_code_messages_pass(options):
    assert ids(**GOOD, **options) == []


def test_w009_a_code_sms_over_one_segment():
    # 160 GSM-7 characters fit one SMS: the default text with 6 digits and a long name.
    fits = "A" * (160 - len("Your verification code for  is: 123456"))
    assert ids(**GOOD, SERVICE_NAME=fits) == []
    [message] = _run(**GOOD, SERVICE_NAME=fits + "A")
    assert message.id == "textflow.W009" and "2 SMS segments" in message.msg
    # Outside GSM-7 (UCS-2), 70 units make one SMS.
    [message] = _run(**GOOD, CODE_MESSAGE="{code} " + "ж" * 64)
    assert message.id == "textflow.W009" and "UCS-2" in message.msg
    # The WebOTP line counts too.
    assert "textflow.W009" in ids(**GOOD, SERVICE_NAME=fits, WEBOTP_DOMAIN="example.com")


def _ledger() -> set[str]:
    return set(re.findall(r"``(textflow\.[EW]\d{3})``", textflow_django.checks.__doc__ or ""))


def test_ids_are_documented_in_the_ledger():
    source = "".join(
        open(module.__file__).read() for module in (textflow_django.checks, textflow_django.fields)
    )
    used = set(re.findall(r'id="(textflow\.[EW]\d{3})"', source))
    assert used == _ledger()


def _field_messages(**options: object) -> list[CheckMessage]:
    with isolate_apps("tests.testapp"):

        class Holder(models.Model):  # noqa: DJ008
            phone = PhoneNumberField(**options)  # type: ignore[arg-type]

            class Meta:
                app_label = "testapp"

        return Holder._meta.get_field("phone").check()


def _settings_messages(debug: bool = True, **textflow: object) -> list[CheckMessage]:
    with override_settings(DEBUG=debug, TEXTFLOW=textflow):
        return check_settings()


def _not_a_dict() -> list[CheckMessage]:
    with override_settings(TEXTFLOW=["API_KEY"]):
        return check_settings()


def _behind_a_proxy(
    run: Callable[..., list[CheckMessage]], *args: object, **kwargs: object
) -> list[CheckMessage]:
    with override_settings(SECURE_PROXY_SSL_HEADER=("HTTP_X_FORWARDED_PROTO", "https")):
        return run(*args, **kwargs)


def _metrics_messages(available: bool, **textflow: object) -> list[CheckMessage]:
    """``check_metrics`` with prometheus_client importable (``available``) or not."""
    checks = textflow_django.checks
    found = checks.metrics_available
    checks.metrics_available = lambda: available  # type: ignore[assignment]
    try:
        with override_settings(TEXTFLOW=textflow):
            return checks.check_metrics()
    finally:
        checks.metrics_available = found  # type: ignore[assignment]


#: One way to trigger each ID of the ledger.
TRIGGERS: dict[str, Callable[[], list[CheckMessage]]] = {
    "textflow.E001": _not_a_dict,
    "textflow.E002": lambda: _settings_messages(BACKEND=GOOD["BACKEND"]),
    "textflow.E003": lambda: _settings_messages(**{**GOOD, "BACKEND": "nope.Backend"}),
    "textflow.E004": lambda: _settings_messages(**GOOD, BREAKER_RESET=0),
    "textflow.E005": lambda: _settings_messages(**GOOD, CODE_TTL=0),
    "textflow.E006": lambda: _settings_messages(**GOOD, BASE_URL="ftp://textflow.me/api"),
    "textflow.E007": lambda: _settings_messages(**{**GOOD, "API_KEY": "k" * 64 + "\n"}),
    "textflow.E008": lambda: _settings_messages(**GOOD, DEFAULT_REGION="XX"),
    "textflow.E009": lambda: _settings_messages(**GOOD, BLOCKED_COUNTRIES=["ZZ"]),
    "textflow.E010": lambda: _settings_messages(**GOOD, VERIFY_MODE="sms"),
    "textflow.E011": lambda: _settings_messages(**GOOD, BULK_BATCH_SIZE=0),
    "textflow.E012": lambda: _settings_messages(**GOOD, FAILED_CHECK_LIMITS={"ip": [5]}),
    "textflow.E013": lambda: _settings_messages(**GOOD, RATELIMIT_STORE="redis"),
    "textflow.E014": lambda: _settings_messages(**GOOD, THROTTLE_CLASSES=["nope.Nope"]),
    "textflow.E015": lambda: _settings_messages(**GOOD, MAX_TEXT_LENGTH=0),
    "textflow.E016": lambda: _settings_messages(**GOOD, FRAUD_GUARD={"MIN_CONVERSION": 2}),
    "textflow.E017": lambda: _settings_messages(API_KEY=EMULATOR_API_KEY),
    "textflow.E018": lambda: _settings_messages(**GOOD, CODE_MESSAGE="Your code"),
    "textflow.E019": lambda: _settings_messages(**GOOD, RETENTION={"VERIFICATIONS": 0}),
    "textflow.E020": lambda: _settings_messages(**GOOD, BULK_LEASE=10),
    "textflow.E021": lambda: _settings_messages(**GOOD, REPLY_SECRET="too-short"),
    "textflow.E022": lambda: _settings_messages(**GOOD, BULK_OPT_OUT_FOOTER=42),
    "textflow.E023": lambda: _metrics_messages(True, METRICS="yes"),
    # The default footer ("Reply STOP to opt out") with a keyword list that lacks STOP.
    "textflow.W020": lambda: _settings_messages(
        **GOOD,
        OPT_OUT_KEYWORDS=["UNSUBSCRIBE"],
        REPLY_SECRET="w020-Reply-Webhook-Secret-0123456789abcdef",  # keywords alone: W017
    ),
    "textflow.E101": lambda: _field_messages(max_length=12),
    "textflow.E102": lambda: _field_messages(region="XX"),
    "textflow.W001": lambda: _settings_messages(
        debug=False, BACKEND="textflow_django.backends.dummy.DummyBackend"
    ),
    "textflow.W002": lambda: _settings_messages(**GOOD, CODE_TIL=5),
    "textflow.W003": lambda: _settings_messages(**GOOD, BASE_URL="http://textflow.me/api"),
    "textflow.W004": lambda: _settings_messages(debug=False, **GOOD, RATELIMIT_STORE="cache"),
    "textflow.W005": lambda: _settings_messages(**GOOD, VERIFY_MODE="textflow"),
    "textflow.W006": lambda: _settings_messages(
        **GOOD, FAILED_CHECK_LIMITS={"number": ("20/d",), "ip": ("60/h",)}
    ),
    "textflow.W007": lambda: _settings_messages(**GOOD, FRAUD_GUARD={"ENABLED": False}),
    "textflow.W008": lambda: _deploy(False, **GOOD, BASE_URL="http://127.0.0.1:8025/api"),
    "textflow.W009": lambda: _settings_messages(**GOOD, SERVICE_NAME="A" * 140),
    "textflow.W019": lambda: _metrics_messages(False, METRICS=True),
    "textflow.W017": lambda: _settings_messages(**GOOD, REPLY_SECRET="0123456789abcdefghij"),
    "textflow.W010": lambda: _deploy(False, API_KEY=EMULATOR_API_KEY, BASE_URL="https://e.test"),
    "textflow.W011": lambda: _behind_a_proxy(_deploy, False, **GOOD),
    "textflow.W012": lambda: _deploy(False, **GOOD, ALLOWED_COUNTRIES=None),
}


def test_every_ledger_id_has_a_trigger_below():
    assert set(TRIGGERS) == _ledger()


@pytest.mark.parametrize("check_id", sorted(TRIGGERS))
def test_every_check_id_comes_with_a_message_and_a_hint(check_id):
    messages = TRIGGERS[check_id]()
    assert [m.id for m in messages] == [check_id]
    [message] = messages
    assert isinstance(message, Error if check_id.startswith("textflow.E") else Warning)
    assert isinstance(message.msg, str) and message.msg.strip()
    assert isinstance(message.hint, str) and message.hint.strip()
    assert message.hint != message.msg


def _run(**textflow: object) -> list[CheckMessage]:
    """The messages for ``TEXTFLOW = textflow``; every one of them must come with a hint."""
    with override_settings(TEXTFLOW=textflow):
        messages = check_settings()
    for message in messages:
        assert isinstance(message.hint, str) and message.hint.strip(), message.id
    return messages


@pytest.mark.parametrize("value", ["XX", "usa", 1])
def test_e008_default_region(value):
    assert ids(**GOOD, DEFAULT_REGION=value) == ["textflow.E008"]


def test_e008_accepts_known_regions():
    assert ids(**GOOD, DEFAULT_REGION="us") == []
    assert ids(**GOOD, DEFAULT_REGION=None) == []


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("ALLOWED_COUNTRIES", "US"),
        ("ALLOWED_COUNTRIES", ["US", "ZZ"]),
        ("BLOCKED_COUNTRIES", None),
        ("BLOCKED_COUNTRIES", [1]),
    ],
)
def test_e009_country_lists(key, value):
    assert ids(**GOOD, **{key: value}) == ["textflow.E009"]


def test_e009_accepts_lists_of_regions():
    assert ids(**GOOD, ALLOWED_COUNTRIES=["us", "CA"], BLOCKED_COUNTRIES=("GB",)) == []


def test_e010_verify_mode():
    assert ids(**GOOD, VERIFY_MODE="sms") == ["textflow.E010"]
    assert ids(**GOOD, VERIFY_MODE="local") == []


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("MAX_ATTEMPTS", 0),
        ("MAX_ATTEMPTS", "5"),
        ("RESEND_COOLDOWN", -1),
        ("NUM_PROXIES", 1.5),
        ("TOKEN_MAX_AGE", 0),
        ("TOKEN_MAX_AGE", True),
        ("BULK_BATCH_SIZE", 0),
        ("BULK_BATCH_SIZE", 10_001),  # past MAX_BATCH_SIZE: caught at start-up, not mid-run
    ],
)
def test_e011_whole_numbers(key, value):
    assert ids(**GOOD, **{key: value}) == ["textflow.E011"]


def test_e011_the_largest_batch_size_passes():
    assert ids(**GOOD, BULK_BATCH_SIZE=10_000) == []


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("SEND_LIMITS", ["5/h"]),
        ("SEND_LIMITS", {"phone": ["5/h"]}),
        ("SEND_LIMITS", {"number": ["5 per hour"]}),
        ("FAILED_CHECK_LIMITS", {"ip": [5]}),
        # Two rates of one window would share one counter.
        ("SEND_LIMITS", {"number": ["5/h", "3/60m"]}),
    ],
)
def test_e012_limits(key, value):
    assert ids(**GOOD, **{key: value}) == ["textflow.E012"]


def test_e012_accepts_a_single_rate_string():
    assert ids(**GOOD, SEND_LIMITS={"number": "5/h", **BUDGETS}) == []


def test_e013_ratelimit_store():
    assert ids(**GOOD, RATELIMIT_STORE="redis") == ["textflow.E013"]
    assert ids(**GOOD, RATELIMIT_STORE="cache", RATELIMIT_CACHE="nope") == ["textflow.E013"]


def test_e014_unimportable_api_classes():
    assert ids(**GOOD, PERMISSION_CLASSES=["nope.Nope"]) == ["textflow.E014"]
    assert ids(**GOOD, THROTTLE_CLASSES=[None]) == ["textflow.E014"]


@pytest.mark.parametrize("value", [0, -1, 256, 2.5, "10", True, None])
def test_e015_max_text_length(value):
    [message] = _run(**GOOD, MAX_TEXT_LENGTH=value)
    assert message.id == "textflow.E015"
    assert "MAX_TEXT_LENGTH" in message.msg and "segments" in message.msg


@pytest.mark.parametrize("value", [1, 10, 255])
def test_e015_accepts_segment_counts_in_range(value):
    assert ids(**GOOD, MAX_TEXT_LENGTH=value) == []


def test_w004_per_process_cache_without_debug():
    with override_settings(DEBUG=False):
        assert ids(**GOOD, RATELIMIT_STORE="cache") == ["textflow.W004"]
    with override_settings(DEBUG=True):
        assert ids(**GOOD, RATELIMIT_STORE="cache") == []
    with override_settings(
        DEBUG=False,
        CACHES={
            "default": {
                "BACKEND": "django.core.cache.backends.redis.RedisCache",
                "LOCATION": "redis://127.0.0.1:6379",
            }
        },
    ):
        assert ids(**GOOD, RATELIMIT_STORE="cache") == []


def test_w005_states_the_guessing_odds_of_textflows_codes_under_the_caps():
    [message] = _run(**GOOD, VERIFY_MODE="textflow")
    # The defaults: at most 20 codes in any 24 h to one number x 5 attempts / 10**4.
    assert message.id == "textflow.W005"
    assert "1.00% a day" in message.msg and "4 digits" in message.msg
    [tighter] = _run(**GOOD, VERIFY_MODE="textflow", SEND_LIMITS={"number": ("1/d",), **BUDGETS})
    assert "0.10% a day" in tighter.msg
    [unbounded] = _run(**GOOD, VERIFY_MODE="textflow", SEND_LIMITS={"ip": ("20/h",), **BUDGETS})
    assert "no bound" in unbounded.msg
    # Local codes (the default): no warning.
    assert ids(**GOOD) == [] and ids(**GOOD, VERIFY_MODE="local") == []


def test_w006_a_number_scope_on_wrong_codes_lets_strangers_lock_the_owner_out():
    assert ids(**GOOD, FAILED_CHECK_LIMITS={"number": ("20/d",)}) == ["textflow.W006"]
    assert ids(**GOOD, FAILED_CHECK_LIMITS={"ip": ("60/h",), "network": ("200/h",)}) == []


@pytest.mark.parametrize("value", [5, 11, "6", True, 6.5])
def test_e011_code_length_is_6_to_10(value):
    assert ids(**GOOD, CODE_LENGTH=value) == ["textflow.E011"]


@pytest.mark.parametrize("value", [6, 8, 10])
def test_e011_accepts_code_lengths_6_to_10(value):
    assert ids(**GOOD, CODE_LENGTH=value) == []


def test_e012_knows_the_network_scope():
    limits = {"number": ("5/h",), "ip": ("20/h",), "network": ("60/h", "300/d")}
    assert ids(**GOOD, SEND_LIMITS={**limits, **BUDGETS}) == []
    assert ids(**GOOD, SEND_LIMITS={"subnet": ("60/h",)}) == ["textflow.E012"]


# -- the Fraud Guard (issue 13) ------------------------------------------------------------


@pytest.mark.parametrize(
    "guard",
    [
        ["ENABLED"],
        {"ENABLE": True},
        {"PREFIX_DIGITS": 0},
        {"WINDOW": "1h"},
        {"GRACE": True},
        {"MIN_SENDS": 0},
        {"MIN_CONVERSION": -0.1},
        {"BLOCK_SECONDS": 10},
        {"ALLOW_PREFIXES": ["1202555"]},
        {"ALLOW_PREFIXES": "+12O2"},
        {"ALLOW_PREFIXES": ["+\u0661\u0662\u0660\u0662"]},  # non-ASCII digits: as the admin says
        {"ALLOW_PREFIXES": ["+" + "1" * 16]},  # longer than any number
        {"NEW_COUNTRY_LIMIT": "10 an hour"},
        {"ENABLED": "yes"},
    ],
)
def test_e016_fraud_guard(guard):
    assert ids(**GOOD, FRAUD_GUARD=guard) == ["textflow.E016"]


def test_the_fraud_guard_takes_the_keys_it_changes():
    assert ids(**GOOD, FRAUD_GUARD={"MIN_SENDS": 50, "ALLOW_PREFIXES": ["+1202555"]}) == []


@pytest.mark.parametrize(
    "settings_",
    [
        {"FRAUD_GUARD": {"ENABLED": False}},
        {"SEND_LIMITS": {"number": ("5/h",), "ip": ("20/h",), "country": ("300/h",)}},
        {"SEND_LIMITS": {"number": ("5/h",), "global": ("1000/h",)}},
    ],
)
def test_w007_a_protection_against_pumping_turned_off(settings_):
    messages = _run(**GOOD, **settings_)
    assert [m.id for m in messages] == ["textflow.W007"]
    assert messages[0].hint


def test_send_limits_take_the_budget_scopes_and_checks_do_not():
    budgets = {"number": ("5/h",), "global": ("1000/h",), "country": ("300/h",)}
    assert ids(**GOOD, SEND_LIMITS=budgets) == []
    assert ids(**GOOD, FAILED_CHECK_LIMITS={"global": ("60/h",)}) == ["textflow.E012"]
