"""The fault matrix: every TextFlow operation the app uses x every fault the emulator injects.

For each pair: no 500 (the API answers the fixed 502 or 503 JSON of ``ANSWERS``, the
commands raise CommandError), a send reached TextFlow once and was never repeated, the user
or operator can retry at once, and no log record holds the API key or a code. The one
exception is a bulk batch TextFlow answers 429: refused, so nothing was sent, it waits
``Retry-After`` and goes again within the same run (no CommandError).
"""

from __future__ import annotations

import io

import pytest
from django.core.management import CommandError, call_command
from rest_framework.test import APIClient

from textflow_django import bulk
from textflow_django.models import BulkBatch, PhoneVerification

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("no_secrets_in_logs")]

NUMBER = "+12025550143"
TIMEOUT = 0.3

# kind, fault() options, whether a request may have reached TextFlow (5xx/garbage/timeout).
FAULTS = {
    "timeout": ({"kind": "delay", "delay": 1.0}, True),
    "reset": ({"kind": "reset"}, True),
    "500": ({"kind": "status", "status": 500}, True),
    "502-html": ({"kind": "html", "status": 502}, True),
    "429": ({"kind": "rate_limit", "retry_after": 1}, False),
    "empty": ({"kind": "empty", "status": 200}, True),
    "malformed": ({"kind": "malformed"}, True),
    "trickle": ({"kind": "trickle", "delay": 0.05}, True),
}

#: The API's answer to each fault, fixed: TextFlow answered badly (5xx, not its JSON) is 502
#: sms_provider_error; TextFlow unreachable, too slow or throttling us is 503
#: sms_provider_unavailable (the user may retry).
ANSWERS = {
    "timeout": (503, "sms_provider_unavailable"),
    "reset": (503, "sms_provider_unavailable"),
    "500": (502, "sms_provider_error"),
    "502-html": (502, "sms_provider_error"),
    "429": (503, "sms_provider_unavailable"),
    "empty": (502, "sms_provider_error"),
    "malformed": (502, "sms_provider_error"),
    "trickle": (503, "sms_provider_unavailable"),
}


@pytest.fixture
def live(settings, textflow_live):
    # The breaker is tested on its own (test_breaker.py); here every call must reach TextFlow.
    settings.TEXTFLOW = {**settings.TEXTFLOW, "TIMEOUT": TIMEOUT, "BREAKER_THRESHOLD": 0}
    return textflow_live


def inject(emulator, name, path):
    options, _ = FAULTS[name]
    options = dict(options)
    emulator.fault(options.pop("kind"), path=path, **options)


def post(path, data):
    return APIClient().post(path, data, format="json")


@pytest.mark.parametrize("fault", FAULTS)
@pytest.mark.parametrize("mode", ["textflow", "local"])
def test_send_code(settings, live, fault, mode):
    settings.TEXTFLOW = {**settings.TEXTFLOW, "VERIFY_MODE": mode}
    path = "/send-code" if mode == "textflow" else "/send-sms"
    inject(live, fault, path)
    response = post("/api/phone/send-code/", {"phone_number": NUMBER})
    assert (response.status_code, response.json()["code"]) == ANSWERS[fault], response.content
    assert len(live.calls(path)) == 1, "a send was repeated"
    assert not PhoneVerification.objects.exists()
    # Nothing consumed: the retry goes through at once (no cooldown, no cap).
    assert post("/api/phone/send-code/", {"phone_number": NUMBER}).status_code == 200
    assert len(live.calls(path)) == 2


@pytest.mark.parametrize("fault", FAULTS)
def test_verify_code(live, fault):
    assert post("/api/phone/send-code/", {"phone_number": NUMBER}).status_code == 200
    code = live.last_code(NUMBER)
    inject(live, fault, "/verify-code")
    response = post("/api/phone/verify-code/", {"phone_number": NUMBER, "code": code})
    assert (response.status_code, response.json()["code"]) == ANSWERS[fault], response.content
    assert len(live.calls("/verify-code")) == 1
    row = PhoneVerification.objects.get()
    assert (row.status, row.attempts) == ("pending", 0)  # no attempt counted
    response = post("/api/phone/verify-code/", {"phone_number": NUMBER, "code": code})
    assert response.status_code == 200


@pytest.mark.parametrize("fault", FAULTS)
def test_bulk_sms(live, fault):
    numbers = [f"+1202555{i:04d}" for i in range(30)]
    job = bulk.create_job(text="Sale", numbers=numbers, batch_size=10)
    inject(live, fault, "/bulk-sms")
    _, maybe_sent = FAULTS[fault]
    if fault == "429":
        # Refused, so nothing was sent: the batch waits Retry-After and goes again.
        job = bulk.run_job(job.pk)
        assert job.sent == 30
        assert len(live.calls("/bulk-sms")) == 4
        return
    out = io.StringIO()
    with pytest.raises(CommandError) as info:
        call_command("textflow_bulk_sms", "--resume", str(job.pk), stdout=out, stderr=out)
    assert f"--resume {job.pk}" in str(info.value)
    assert len(live.calls("/bulk-sms")) == 1, "a batch was repeated"
    first = BulkBatch.objects.get(job=job, index=0)
    assert first.status == (BulkBatch.Status.UNCERTAIN if maybe_sent else BulkBatch.Status.PENDING)
    # The operator resumes: the uncertain batch is not sent again unless asked.
    call_command("textflow_bulk_sms", "--resume", str(job.pk), stdout=out, stderr=out)
    job.refresh_from_db()
    assert job.status == "finished"
    assert job.sent == 20 and job.uncertain == 10
    reached = [m.phone_number for m in live.messages if m.kind == "bulk"]
    assert len(reached) == len(set(reached)), "a recipient got the SMS twice"


@pytest.mark.parametrize("fault", FAULTS)
def test_bulk_count(live, fault):
    inject(live, fault, "/bulk-count")
    with pytest.raises(CommandError, match="Could not get the bulk count"):
        call_command("textflow_bulk_count", stdout=io.StringIO())
    out = io.StringIO()
    call_command("textflow_bulk_count", stdout=out)
    assert out.getvalue().strip() == "0"
