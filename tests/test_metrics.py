"""Prometheus metrics (``textflow_django.contrib.prometheus``): counters move on real flows
through the HTTP API (locmem and the emulator's real HTTP path), the metrics page and
django-prometheus's ``/metrics`` show them, the setting and its checks, and without
``prometheus_client`` nothing of it is imported.

Each counting test makes its metrics in a registry of its own (``metrics``), so no count
leaks from one test to the next; the default registry (what the app's ``ready()`` filled)
is only read as before/after differences.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.apps import apps as django_apps
from django.urls import include, path
from prometheus_client import REGISTRY, CollectorRegistry
from rest_framework.test import APIClient

from textflow_django import _events, bulk, checks
from textflow_django.conf import conf
from textflow_django.contrib import prometheus
from textflow_django.testing import TextFlowEmulator

from .conftest import tf

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("no_secrets_in_logs")]

ROOT = Path(__file__).resolve().parent.parent
NUMBER = "+12025550143"
OTHER = "+12025550178"
UK = "+447400123456"
SEND = "/api/phone/send-code/"
VERIFY = "/api/phone/verify-code/"

#: This module is the URLconf of the page tests: django-prometheus's /metrics, the app's own
#: page under internal/, and the API.
urlpatterns = [
    path("", include("django_prometheus.urls")),
    path("internal/", include("textflow_django.contrib.prometheus.urls")),
    path("api/phone/", include("textflow_django.urls")),
]


@pytest.fixture
def metrics() -> Iterator[CollectorRegistry]:
    """A registry of the test's own with textflow-django's metrics counting into it."""
    registry = CollectorRegistry()
    prometheus.install(registry)
    yield registry
    prometheus.uninstall(registry)


def value(registry: CollectorRegistry, name: str, **labels: str) -> float:
    """A sample's value; 0 for a series not yet created (a label set never counted)."""
    found = registry.get_sample_value(name, labels)
    return 0.0 if found is None else found


def code_of(outbox: list[Any]) -> str:
    return str(outbox[-1].text.rsplit(" ", 1)[-1])


# -- counters on real flows --------------------------------------------------------------------


def test_codes_sent_verified_refused_and_failed_through_the_api(
    metrics: CollectorRegistry, settings: Any, sms_outbox: list[Any]
) -> None:
    api = APIClient()
    tf(settings, SEND_LIMITS={"number": ["2/h"]}, ALLOWED_COUNTRIES=["US", "GB"])
    handle = api.post(SEND, {"phone_number": NUMBER}, format="json").json()["verification_id"]
    api.post(SEND, {"phone_number": UK}, format="json")
    assert api.post(SEND, {"phone_number": NUMBER}, format="json").status_code == 429  # cooldown
    wrong = "000000" if code_of(sms_outbox) != "000000" else "111111"
    answer = api.post(
        VERIFY,
        {"phone_number": UK, "code": wrong, "verification_id": "none of yours"},
        format="json",
    )
    assert answer.status_code == 400
    data = {"phone_number": NUMBER, "code": code_of(sms_outbox[:1]), "verification_id": handle}
    assert api.post(VERIFY, data, format="json").status_code == 200
    tf(settings, RESEND_COOLDOWN=0)
    api.post(SEND, {"phone_number": NUMBER}, format="json")
    assert api.post(SEND, {"phone_number": NUMBER}, format="json").status_code == 429  # the cap
    assert value(metrics, "textflow_codes_sent_total", country="US") == 2
    assert value(metrics, "textflow_codes_sent_total", country="GB") == 1
    assert value(metrics, "textflow_codes_verified_total", country="US") == 1
    assert value(metrics, "textflow_codes_refused_total", reason="resend_too_soon") == 1
    assert value(metrics, "textflow_codes_refused_total", reason="rate_limited") == 1
    assert value(metrics, "textflow_code_checks_failed_total", reason="invalid_code") == 1
    # locmem calls no TextFlow: no call is counted.
    assert value(metrics, "textflow_api_calls_total", operation="send_sms", outcome="ok") == 0


def test_textflow_calls_by_operation_and_outcome_with_latency(
    metrics: CollectorRegistry, settings: Any, textflow_live: TextFlowEmulator
) -> None:
    api = APIClient()
    tf(settings, VERIFY_MODE="textflow")
    handle = api.post(SEND, {"phone_number": NUMBER}, format="json").json()["verification_id"]
    code = textflow_live.last_code(NUMBER)
    data = {"phone_number": NUMBER, "code": code, "verification_id": handle}
    assert api.post(VERIFY, data, format="json").status_code == 200
    textflow_live.fault("status", path="/send-code", status=500)
    assert api.post(SEND, {"phone_number": OTHER}, format="json").status_code == 502

    def calls(operation: str, outcome: str) -> float:
        return value(metrics, "textflow_api_calls_total", operation=operation, outcome=outcome)

    assert calls("send_code", "ok") == 1
    assert calls("verify_code", "ok") == 1
    assert calls("send_code", "server_error") == 1
    seconds = "textflow_api_call_seconds"
    assert value(metrics, f"{seconds}_count", operation="send_code") == 2
    assert value(metrics, f"{seconds}_count", operation="verify_code") == 1
    assert value(metrics, f"{seconds}_sum", operation="send_code") > 0
    assert value(metrics, f"{seconds}_bucket", operation="send_code", le="+Inf") == 2
    assert value(metrics, "textflow_codes_refused_total", reason="sms_provider_error") == 1


def test_the_breaker_gauge_follows_calls_that_fail_fast_and_calls_that_answer(
    metrics: CollectorRegistry, settings: Any, textflow_live: TextFlowEmulator
) -> None:
    api = APIClient()
    tf(settings, BREAKER_THRESHOLD=1)
    assert value(metrics, "textflow_breaker_open") == 0
    textflow_live.fault("status", path="/send-sms", status=503)
    assert api.post(SEND, {"phone_number": NUMBER}, format="json").status_code == 502
    assert api.post(SEND, {"phone_number": OTHER}, format="json").status_code == 503
    assert value(metrics, "textflow_breaker_open") == 1
    outcome = {"operation": "send_sms", "outcome": "circuit_open"}
    assert value(metrics, "textflow_api_calls_total", **outcome) == 1
    # Not tried: no latency observed for it.
    assert value(metrics, "textflow_api_call_seconds_count", operation="send_sms") == 1
    tf(settings, BREAKER_THRESHOLD=0)  # no breaker: the next call goes through, and answers
    assert api.post(SEND, {"phone_number": UK}, format="json").status_code == 200
    assert value(metrics, "textflow_breaker_open") == 0


def test_the_breaker_events_set_the_gauge(metrics: CollectorRegistry) -> None:
    _events.emit("textflow.breaker.opened")
    assert value(metrics, "textflow_breaker_open") == 1
    _events.emit("textflow.breaker.closed")
    assert value(metrics, "textflow_breaker_open") == 0


def test_bulk_recipients_sent(
    metrics: CollectorRegistry, settings: Any, sms_outbox: list[Any]
) -> None:
    tf(settings, BULK_BATCH_SIZE=2)
    job = bulk.create_job(text="Hi", numbers=[NUMBER, OTHER, "+12025550199"])
    assert bulk.run_job(job.pk).sent == 3
    assert value(metrics, "textflow_bulk_recipients_sent_total") == 3


def test_store_failures_and_fraud_blocks(
    metrics: CollectorRegistry, settings: Any, sms_outbox: list[Any]
) -> None:
    settings.CACHES = {**settings.CACHES, "limits": {"BACKEND": "tests.conftest.BrokenCache"}}
    tf(settings, RATELIMIT_STORE="cache", RATELIMIT_CACHE="limits")
    assert APIClient().post(SEND, {"phone_number": NUMBER}, format="json").status_code == 503
    assert value(metrics, "textflow_store_failures_total") == 1
    assert value(metrics, "textflow_codes_refused_total", reason="service_unavailable") == 1
    _events.emit("textflow.fraud.blocked", scope="prefix", value="+1202555", sends=20)
    assert value(metrics, "textflow_fraud_blocks_total", scope="prefix") == 1


def test_no_number_and_no_unbounded_label(
    metrics: CollectorRegistry, settings: Any, sms_outbox: list[Any]
) -> None:
    APIClient().post(SEND, {"phone_number": NUMBER}, format="json")
    page = _page(metrics)
    assert "202555" not in page
    labels = {
        name for family in metrics.collect() for sample in family.samples for name in sample.labels
    }
    assert labels <= {"country", "reason", "operation", "outcome", "scope", "le"}


def _page(registry: CollectorRegistry) -> str:
    from prometheus_client import generate_latest

    return generate_latest(registry).decode()


def test_every_metric_is_named_in_metric_names(metrics: CollectorRegistry) -> None:
    _events.emit("textflow.breaker.opened")
    shown = {family.name for family in metrics.collect()}
    # A counter's family drops the _total its samples carry.
    named = {name.removesuffix("_total") for name in prometheus.METRIC_NAMES}
    assert shown == named


# -- the pages --------------------------------------------------------------------------------


@pytest.mark.urls("tests.test_metrics")
@pytest.mark.parametrize("url", ["/metrics", "/internal/metrics"])
def test_the_default_registry_is_on_django_prometheus_and_on_the_apps_page(
    url: str, settings: Any, sms_outbox: list[Any]
) -> None:
    """``ready()`` installed the metrics in the default registry (the tests run with
    prometheus_client installed and METRICS at its default): django-prometheus's /metrics
    and the app's own page both show them, moving with a send through the API."""
    before = value(REGISTRY, "textflow_codes_sent_total", country="US")
    api = APIClient()
    assert api.post(SEND, {"phone_number": NUMBER}, format="json").status_code == 200
    assert value(REGISTRY, "textflow_codes_sent_total", country="US") == before + 1
    response = api.get(url)
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain; version=")
    page = response.content.decode()
    assert f'textflow_codes_sent_total{{country="US"}} {before + 1}' in page
    for name in prometheus.METRIC_NAMES:
        assert f"# HELP {name} " in page


@pytest.mark.urls("tests.test_metrics")
def test_the_apps_page_only_reads(settings: Any) -> None:
    assert APIClient().post("/internal/metrics").status_code == 405
    assert APIClient().head("/internal/metrics").status_code == 200


@pytest.mark.urls("tests.test_metrics")
def test_the_apps_page_reads_every_process_in_multiprocess_mode(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Under PROMETHEUS_MULTIPROC_DIR the page sums the processes' files (none here: an
    empty page, not this process's registry)."""
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    response = APIClient().get("/internal/metrics")
    assert response.status_code == 200
    assert b"textflow_codes_sent_total" not in response.content


# -- enabling: the setting, ready(), the checks ---------------------------------------------


def test_the_setting(settings: Any) -> None:
    assert conf.METRICS is True
    tf(settings, METRICS=False)
    assert conf.METRICS is False


def _default_listening() -> bool:
    default = getattr(REGISTRY, "_textflow_django_metrics", None)
    return default is not None and default in _events._listeners


def test_ready_installs_the_metrics_unless_metrics_is_false(settings: Any) -> None:
    config = django_apps.get_app_config("textflow")
    assert _default_listening()
    try:
        prometheus.uninstall()
        tf(settings, METRICS=False)
        config.ready()
        assert not _default_listening()
        tf(settings, METRICS=True)
        config.ready()
        config.ready()  # again: no metric registered twice
        assert _default_listening()
    finally:
        prometheus.install()


def test_a_reload_of_the_metrics_module_registers_nothing_twice() -> None:
    from textflow_django.contrib.prometheus import _metrics

    made = prometheus.install()
    reloaded = importlib.reload(_metrics)
    assert reloaded.install() is made  # the registry's metrics, not a second set
    registry = CollectorRegistry()
    assert reloaded.install(registry) is reloaded.install(registry)
    reloaded.uninstall(registry)


@pytest.mark.parametrize(
    ("metrics_setting", "available", "ids"),
    [
        ("unset", False, []),  # the default: metrics if installed, silently
        ("unset", True, []),
        (True, True, []),
        (True, False, ["textflow.W019"]),
        (False, False, []),
        ("yes", True, ["textflow.E023"]),
        (1, True, ["textflow.E023"]),
    ],
)
def test_checks(
    settings: Any,
    monkeypatch: pytest.MonkeyPatch,
    metrics_setting: object,
    available: bool,
    ids: list[str],
) -> None:
    if metrics_setting != "unset":
        tf(settings, METRICS=metrics_setting)
    monkeypatch.setattr(checks, "metrics_available", lambda: available)
    found = checks.check_metrics()
    assert [m.id for m in found] == ids
    if ids == ["textflow.W019"]:
        assert found[0].hint is not None
        assert "pip install textflow-django[prometheus]" in found[0].hint


def test_metrics_available_looks_without_importing() -> None:
    assert checks.metrics_available() is True


# -- without the extra ---------------------------------------------------------------------

_SCRIPT = textwrap.dedent(
    """
    import importlib.abc, json, os, sys

    class Blocker(importlib.abc.MetaPathFinder):
        # What a site without the extra sees: prometheus_client cannot be imported.
        def find_spec(self, name, path=None, target=None):
            if name == "prometheus_client" or name.startswith("prometheus_client."):
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None

    if os.environ["BLOCK"] == "1":
        sys.meta_path.insert(0, Blocker())
    os.environ["DJANGO_SETTINGS_MODULE"] = "tests.settings"
    from django.conf import settings
    settings.TEXTFLOW = {**settings.TEXTFLOW, **json.loads(os.environ["OVERRIDES"])}
    import django
    django.setup()
    from django.core.management import call_command
    call_command("migrate", verbosity=0)
    from textflow_django import client, verification, views  # the whole package in use
    from textflow_django.backends import locmem
    verification.send_code("+12025550143")
    from django.core import checks
    print(json.dumps({
        "sent": len(locmem.outbox),
        "ids": sorted(m.id for m in checks.run_checks() if m.id in ("textflow.E023", "textflow.W019")),
        "loaded": sorted(
            m for m in sys.modules
            if m.split(".")[0] in ("prometheus_client", "django_prometheus")
            or m.startswith("textflow_django.contrib.prometheus")
        ),
    }))
    """
)


def _run(block: bool, **overrides: object) -> dict[str, Any]:
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("TEST_DATABASE", "TEXTFLOW_TEST_SQLITE", "DJANGO_SETTINGS_MODULE")
    }
    env.update(BLOCK="1" if block else "0", OVERRIDES=json.dumps(overrides), PYTHONPATH=str(ROOT))
    done = subprocess.run(
        [sys.executable, "-c", _SCRIPT],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
    return result


@pytest.mark.slow
def test_without_the_extra_nothing_is_imported_and_a_code_is_sent() -> None:
    without = _run(block=True)
    assert without == {"sent": 1, "ids": [], "loaded": []}
    # The blocker is what keeps it out: installed, the app's ready() loads it.
    with_it = _run(block=False)
    assert with_it["sent"] == 1
    assert "prometheus_client" in with_it["loaded"]
    assert "textflow_django.contrib.prometheus" in with_it["loaded"]
    # Asked for explicitly and missing: said so at start-up, and still nothing imported.
    asked = _run(block=True, METRICS=True)
    assert asked == {"sent": 1, "ids": ["textflow.W019"], "loaded": []}


@pytest.mark.parametrize(
    ("outcome", "gauge"),
    [("ok", 0), ("rejected", 0), ("rate_limited", 0), ("refused", 0), ("timeout", 1), ("error", 1)],
)
def test_an_answer_even_a_refusal_clears_the_breaker_gauge(
    metrics: CollectorRegistry, outcome: str, gauge: int
) -> None:
    # The breaker counts an answer that refuses (a rejected number) as TextFlow working, so
    # another process's shared breaker closing shows here at this process's next answer.
    _events.emit("textflow.breaker.opened")
    _events.emit("textflow.api.call", operation="send_sms", outcome=outcome, seconds=0.01)
    assert value(metrics, "textflow_breaker_open") == gauge
