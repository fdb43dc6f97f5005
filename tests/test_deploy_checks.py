"""``manage.py check --deploy``: what would hurt in production, each said once, with a hint.

The checks run as ``check --deploy`` runs them (``run_checks(include_deployment_checks=True)``:
every registered check, the deploy-tagged ones too) against the same settings without
``--deploy``. The story (textflow_django/checks.py's docstring): what is wrong in production
whatever else is set is said at every check while ``DEBUG`` is False (W001, W003, W004,
W007); what is right on a laptop and wrong in production only under ``--deploy`` (W008,
W010-W012). One problem, one ID, reported once: never a second ID for it under ``--deploy``.

Also the run-time side of ``NUM_PROXIES``: the event ``textflow.deploy.proxy_header_ignored``,
once per process, when a request carries ``X-Forwarded-For`` while ``NUM_PROXIES`` is 0.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from django.core.cache.backends.locmem import LocMemCache
from django.core.checks import CheckMessage, Warning, run_checks
from django.test import RequestFactory, override_settings

from textflow_django import _client_ip, _events
from textflow_django._client_ip import client_ip
from textflow_django.testing import EMULATOR_API_KEY

#: A production configuration that passes every check, ``--deploy`` included.
PRODUCTION: dict[str, Any] = {"API_KEY": "k" * 64, "ALLOWED_COUNTRIES": ["US", "CA"]}
LOCMEM = "textflow_django.backends.locmem.LocMemBackend"
PROXY_EVENT = "textflow.deploy.proxy_header_ignored"
EXAMPLE = Path(__file__).resolve().parent.parent / "example_project"


class SiteCache(LocMemCache):
    """A project's own cache class on top of Django's per-process one (still per process)."""


def _messages(deploy: bool, debug: bool, textflow: Mapping[str, object]) -> list[CheckMessage]:
    with override_settings(DEBUG=debug, TEXTFLOW=dict(textflow)):
        found = run_checks(include_deployment_checks=deploy)
    return [m for m in found if m.id and m.id.startswith("textflow.")]


def deploy(*, debug: bool = False, **textflow: object) -> list[str]:
    """The textflow IDs ``manage.py check --deploy`` reports for ``TEXTFLOW = textflow``."""
    return sorted(m.id for m in _messages(True, debug, textflow) if m.id)


def plain(*, debug: bool = False, **textflow: object) -> list[str]:
    """The textflow IDs ``manage.py check`` (at every start-up) reports."""
    return sorted(m.id for m in _messages(False, debug, textflow) if m.id)


def only(check_id: str, **textflow: object) -> Warning:
    """The one message ``check --deploy`` reports for these settings, which is ``check_id``."""
    messages = _messages(True, False, textflow)
    assert [m.id for m in messages] == [check_id]
    [message] = messages
    assert isinstance(message, Warning)
    assert message.hint and message.hint.strip() and message.hint != message.msg
    assert EMULATOR_API_KEY not in f"{message.msg} {message.hint}"
    return message


def test_a_production_configuration_passes_with_and_without_deploy() -> None:
    assert deploy(**PRODUCTION) == []
    assert plain(**PRODUCTION) == []


def test_with_debug_on_deploy_adds_nothing_of_textflows() -> None:
    """Django's security.W018 says DEBUG is on; textflow judges production's settings."""
    risky = {"API_KEY": EMULATOR_API_KEY, "BASE_URL": "http://127.0.0.1:8025/api"}
    assert deploy(debug=True, **risky) == plain(debug=True, **risky) == []


# -- the emulator's key (W010) -------------------------------------------------------------


@pytest.mark.parametrize("base_url", ["https://emulator.internal/api", "http://[::1]:8025/api"])
def test_w010_the_emulators_key_under_deploy_only(base_url: str) -> None:
    settings: dict[str, Any] = {**PRODUCTION, "API_KEY": EMULATOR_API_KEY, "BASE_URL": base_url}
    assert "textflow.W010" in deploy(**settings)
    assert "textflow.W010" not in plain(**settings)
    assert "textflow.W010" not in deploy(**{**settings, "API_KEY": "k" * 64})


def test_w010_message_and_hint() -> None:
    message = only(
        "textflow.W010",
        **{**PRODUCTION, "API_KEY": EMULATOR_API_KEY, "BASE_URL": "https://emu.test/api"},
    )
    assert "emulator's key" in message.msg and "textflow.me" in str(message.hint)


def test_the_emulators_key_with_textflows_url_is_e017_alone() -> None:
    """E017 (an error at every check: TextFlow refuses the key) already says it: --deploy
    adds no W010 for the same key."""
    settings: dict[str, Any] = {
        **PRODUCTION,
        "API_KEY": EMULATOR_API_KEY,
    }  # the default BASE_URL: TextFlow's
    assert deploy(**settings) == plain(**settings) == ["textflow.E017"]


def test_the_emulators_key_on_a_loopback_url_is_two_settings_two_ids() -> None:
    # The demo's settings: BASE_URL (W008) and API_KEY (W010) each need changing.
    settings: dict[str, Any] = {
        **PRODUCTION,
        "API_KEY": EMULATOR_API_KEY,
        "BASE_URL": "http://127.0.0.1:8025/api",
    }
    assert deploy(**settings) == ["textflow.W008", "textflow.W010"]


def test_the_emulators_key_with_an_emulating_backend_is_w001s() -> None:
    # The backend sends nothing with the key: the backend is the problem, said by W001.
    settings: dict[str, Any] = {
        **PRODUCTION,
        "API_KEY": EMULATOR_API_KEY,
        "BASE_URL": "https://emu.test/api",
        "BACKEND": LOCMEM,
    }
    assert deploy(**settings) == plain(**settings) == ["textflow.W001"]


# -- a loopback or plain-http BASE_URL (W008, W003) ----------------------------------------


@pytest.mark.parametrize(
    "base_url",
    [
        "http://127.0.0.1:8025/api",
        "https://localhost/api",
        # Loopback spelt otherwise: W008 missed each before (_is_loopback knew three names),
        # and W003 called the plain-http ones a remote host.
        "http://[::ffff:127.0.0.1]:8025/api",
        "http://[0:0:0:0:0:0:0:1]:8025/api",
        "http://localhost.:8025/api",
        "http://emulator.localhost:8025/api",
        "http://0.0.0.0:8025/api",
        # The short and numeric IPv4 forms the resolver connects to 127.0.0.1 for.
        "http://127.1:8025/api",
        "http://2130706433:8025/api",
        "http://0x7f.1:8025/api",
    ],
)
def test_w008_a_loopback_base_url_under_deploy_only(base_url: str) -> None:
    message = only("textflow.W008", **PRODUCTION, BASE_URL=base_url)
    assert "loopback" in message.msg
    assert plain(**PRODUCTION, BASE_URL=base_url) == []


@pytest.mark.parametrize("host", ["1.2", "16909060", "beef", "deadbeef.cafe"])
def test_short_forms_of_other_addresses_are_no_loopback(host: str) -> None:
    assert plain(**PRODUCTION, BASE_URL=f"http://{host}/api") == ["textflow.W003"]


def test_a_loopback_base_url_with_an_emulating_backend_is_w001s() -> None:
    """The backend calls no URL: the backend is the problem, said by W001 (as for W010)."""
    settings: dict[str, Any] = {
        **PRODUCTION,
        "BASE_URL": "http://127.0.0.1:8025/api",
        "BACKEND": LOCMEM,
    }
    assert deploy(**settings) == plain(**settings) == ["textflow.W001"]


@pytest.mark.parametrize(
    ("textflow", "check_id", "shown"),
    [
        (
            {"BASE_URL": "http://user:hunter2@localhost:8025/api?t=s3cret#f"},
            "textflow.W008",
            "http://localhost:8025",
        ),
        (
            {
                "BASE_URL": "https://user:hunter2@textflow.me/api?t=s3cret",
                "API_KEY": EMULATOR_API_KEY,
            },
            "textflow.E017",
            "https://textflow.me",
        ),
        (
            {"BASE_URL": "ftp://user:hunter2@host.test/api?t=s3cret"},
            "textflow.E006",
            "ftp://host.test",
        ),
        ({"BASE_URL": "user:hunter2@host.test/api"}, "textflow.E006", "host.test/api"),
        ({"BASE_URL": "http://user:hunter2@[::1/api"}, "textflow.E006", "[::1/api"),
    ],
    ids=["w008", "e017", "e006", "e006-no-scheme", "e006-no-url"],
)
def test_base_url_messages_show_no_credentials(
    textflow: dict[str, Any], check_id: str, shown: str
) -> None:
    """A password (or a token in the query) in BASE_URL is never printed: messages show
    scheme://host:port."""
    messages = [m for m in _messages(True, False, {**PRODUCTION, **textflow}) if m.id == check_id]
    assert len(messages) == 1
    text = f"{messages[0].msg} {messages[0].hint}"
    assert shown in text
    for secret in ("hunter2", "user", "s3cret"):
        assert secret not in text


def test_plain_http_to_another_host_is_w003s_at_every_check_and_not_again() -> None:
    settings: dict[str, Any] = {**PRODUCTION, "BASE_URL": "http://sms-proxy.internal/api"}
    assert plain(**settings) == ["textflow.W003"]
    assert deploy(**settings) == ["textflow.W003"]  # once, not again under --deploy
    assert plain(debug=True, **settings) == ["textflow.W003"]


def test_a_base_url_with_an_unclosed_bracket_is_e006_not_a_traceback() -> None:
    # urlsplit raises ValueError on it: the checks crashed before.
    settings: dict[str, Any] = {**PRODUCTION, "BASE_URL": "http://[::1/api"}
    assert deploy(**settings) == plain(**settings) == ["textflow.E006"]


# -- an emulating backend (W001) -----------------------------------------------------------


@pytest.mark.parametrize(
    "backend", ["console.ConsoleBackend", "locmem.LocMemBackend", "dummy.DummyBackend"]
)
def test_an_emulating_backend_is_w001_once_under_deploy(backend: str) -> None:
    settings: dict[str, Any] = {**PRODUCTION, "BACKEND": f"textflow_django.backends.{backend}"}
    assert deploy(**settings) == ["textflow.W001"]  # reported once, by the start-up check
    assert plain(**settings) == ["textflow.W001"]
    assert deploy(**PRODUCTION) == []


# -- a per-process rate-limit store (W004) -------------------------------------------------


@pytest.mark.parametrize(
    "backend",
    [
        "django.core.cache.backends.locmem.LocMemCache",
        "django.core.cache.backends.dummy.DummyCache",
        "django.core.cache.backends.filebased.FileBasedCache",
        # A subclass keeps its parent's storage: the check read the class's name before,
        # and missed it.
        f"{__name__}.SiteCache",
    ],
)
def test_a_per_process_rate_limit_store_is_w004_once_under_deploy(backend: str) -> None:
    settings: dict[str, Any] = {**PRODUCTION, "RATELIMIT_STORE": "cache"}
    with override_settings(CACHES={"default": {"BACKEND": backend, "LOCATION": "never-opened"}}):
        assert deploy(**settings) == ["textflow.W004"]
        assert plain(**settings) == ["textflow.W004"]


def test_a_shared_rate_limit_store_passes() -> None:
    redis = {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": "redis://x"}
    with override_settings(CACHES={"default": redis}):
        assert deploy(**PRODUCTION, RATELIMIT_STORE="cache") == []
    assert deploy(**PRODUCTION, RATELIMIT_STORE="database") == []


# -- NUM_PROXIES behind a proxy (W011) -----------------------------------------------------


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("SECURE_PROXY_SSL_HEADER", ("HTTP_X_FORWARDED_PROTO", "https")),
        ("USE_X_FORWARDED_HOST", True),
        ("USE_X_FORWARDED_PORT", True),
    ],
)
def test_w011_num_proxies_0_behind_a_proxy_under_deploy_only(setting: str, value: object) -> None:
    with override_settings(**{setting: value}):
        message = only("textflow.W011", **PRODUCTION)
        assert setting in message.msg and PROXY_EVENT in str(message.hint)
        assert plain(**PRODUCTION) == []
        assert deploy(**PRODUCTION, NUM_PROXIES=1) == []
    assert deploy(**PRODUCTION) == []  # no proxy in the settings: 0 is right


def test_w011_leaves_a_bad_num_proxies_to_e011() -> None:
    with override_settings(USE_X_FORWARDED_HOST=True):
        assert deploy(**PRODUCTION, NUM_PROXIES=False) == ["textflow.E011"]


# -- the Fraud Guard off (W007) ------------------------------------------------------------


def test_the_fraud_guard_off_is_w007_once_under_deploy() -> None:
    settings: dict[str, Any] = {**PRODUCTION, "FRAUD_GUARD": {"ENABLED": False}}
    assert deploy(**settings) == plain(**settings) == ["textflow.W007"]
    assert deploy(**PRODUCTION, FRAUD_GUARD={"ENABLED": True}) == []


# -- ALLOWED_COUNTRIES unset (W012) --------------------------------------------------------


def test_w012_no_allowed_countries_under_deploy_only() -> None:
    settings: dict[str, Any] = {"API_KEY": "k" * 64}
    message = only("textflow.W012", **settings)
    assert "every country" in message.msg and "SILENCED_SYSTEM_CHECKS" in str(message.hint)
    assert plain(**settings) == []
    assert deploy(**settings, ALLOWED_COUNTRIES=["GB"]) == []
    assert deploy(**settings, ALLOWED_COUNTRIES="GB") == ["textflow.E009"]  # E009's, alone


# -- the settings this repository runs with ------------------------------------------------


def test_the_test_settings_under_deploy() -> None:
    """tests/settings.py: DEBUG off with the locmem backend (W001, at every check) and no
    country list (W012, --deploy only); nothing else of textflow's."""
    plain_run = sorted(m.id for m in run_checks() if m.id and m.id.startswith("textflow."))
    deploy_run = sorted(
        m.id
        for m in run_checks(include_deployment_checks=True)
        if m.id and m.id.startswith("textflow.")
    )
    assert plain_run == ["textflow.W001"]
    assert deploy_run == ["textflow.W001", "textflow.W012"]


def _example_check_deploy(env: Mapping[str, str]) -> list[str]:
    run_env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "TEXTFLOW_"))}
    run_env.update(DJANGO_SETTINGS_MODULE="demo.settings", **env)
    done = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy"],
        cwd=EXAMPLE,
        env=run_env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "Traceback" not in done.stderr, done.stderr
    output = done.stdout + done.stderr
    return sorted(set(re.findall(r"\(?(textflow\.[EW]\d{3})\)?", output)))


@pytest.mark.slow
def test_the_example_projects_settings_under_deploy() -> None:
    """The demo is no production configuration, and check --deploy says where: with DEBUG
    off against the emulator, its URL and key; against TextFlow, only the country list."""
    assert _example_check_deploy({}) == []  # DEBUG on, as the demo runs
    assert _example_check_deploy({"DJANGO_DEBUG": "0"}) == [
        "textflow.W008",
        "textflow.W010",
        "textflow.W012",
    ]
    assert _example_check_deploy({"DJANGO_DEBUG": "0", "TEXTFLOW_API_KEY": "k" * 64}) == [
        "textflow.W012"
    ]


# -- at run time: X-Forwarded-For while NUM_PROXIES is 0 -----------------------------------


@pytest.fixture
def proxy_events() -> Iterator[list[Mapping[str, object]]]:
    """The proxy_header_ignored events emitted during the test, from a fresh process state."""
    seen: list[Mapping[str, object]] = []

    def listen(name: str, fields: Mapping[str, object]) -> None:
        if name == PROXY_EVENT:
            seen.append(dict(fields))

    _client_ip._forget_header_ignored()
    _events.add_listener(listen)
    yield seen
    _events.remove_listener(listen)
    _client_ip._forget_header_ignored()


def test_a_forwarded_request_with_num_proxies_0_is_logged_once_per_process(
    proxy_events: list[Mapping[str, object]], rf: RequestFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="textflow_django")
    forwarded = rf.post("/", HTTP_X_FORWARDED_FOR="198.51.100.7, 10.0.0.2", REMOTE_ADDR="10.0.0.9")
    with override_settings(TEXTFLOW={"NUM_PROXIES": 0}):
        assert client_ip(rf.post("/", REMOTE_ADDR="10.0.0.9")) == "10.0.0.9"
        assert proxy_events == []  # no header: nothing to say
        for _ in range(3):
            assert client_ip(forwarded) == "10.0.0.9"  # the header is still ignored
    assert proxy_events == [{"remote_addr": "10.0.0.9", "forwarded_hops": 2, "num_proxies": 0}]
    [line] = [r.getMessage() for r in caplog.records if PROXY_EVENT in r.getMessage()]
    assert line == f"{PROXY_EVENT} remote_addr=10.0.0.9 forwarded_hops=2 num_proxies=0"
    assert "198.51.100.7" not in caplog.text  # never the addresses the header names


def test_no_event_when_num_proxies_is_set_or_the_header_is_blank(
    proxy_events: list[Mapping[str, object]], rf: RequestFactory
) -> None:
    with override_settings(TEXTFLOW={"NUM_PROXIES": 1}):
        assert client_ip(rf.post("/", HTTP_X_FORWARDED_FOR="198.51.100.7")) == "198.51.100.7"
    with override_settings(TEXTFLOW={"NUM_PROXIES": 0}):
        assert client_ip(rf.post("/", HTTP_X_FORWARDED_FOR=" , ")) == "127.0.0.1"
    assert proxy_events == []


def test_requests_racing_log_the_event_exactly_once(
    proxy_events: list[Mapping[str, object]], rf: RequestFactory
) -> None:
    requests = [rf.post("/", HTTP_X_FORWARDED_FOR=f"198.51.100.{n}") for n in range(16)]
    start = threading.Barrier(len(requests))

    def one(request: object) -> None:
        start.wait(timeout=10)
        client_ip(request)  # type: ignore[arg-type]

    threads = [threading.Thread(target=one, args=(r,)) for r in requests]
    with override_settings(TEXTFLOW={"NUM_PROXIES": 0}):
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=10)
    assert len(proxy_events) == 1


def test_the_api_reads_the_address_through_it(
    proxy_events: list[Mapping[str, object]], client: object, sms_outbox: object, db: None
) -> None:
    """Through send-code over HTTP: the view's address is client_ip's, so it tells."""
    from django.test import Client

    assert isinstance(client, Client)
    response = client.post(
        "/api/phone/send-code/",
        {"phone_number": "+12025550171"},
        content_type="application/json",
        HTTP_X_FORWARDED_FOR="198.51.100.7",
    )
    assert response.status_code == 200, response.content
    assert proxy_events == [{"remote_addr": "127.0.0.1", "forwarded_hops": 1, "num_proxies": 0}]
