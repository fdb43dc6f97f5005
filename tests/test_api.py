"""The JSON API end to end through DRF's APIClient, against the emulator and locmem."""

from __future__ import annotations

import datetime as dt
import hashlib
import json

import pytest
from django.contrib.auth import get_user_model
from django.urls import reverse
from django.utils import timezone
from rest_framework.test import APIClient
from rest_framework.throttling import AnonRateThrottle

from textflow_django import signals, verification
from textflow_django.backends import locmem
from textflow_django.exceptions import (
    MAYBE_SENT_MESSAGE,
    InsufficientBalance,
    TextFlowConnectionError,
    TextFlowServerError,
)
from textflow_django.models import PhoneVerification

from .conftest import race, requires_postgres, requires_redis, tf

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("no_secrets_in_logs")]

NUMBER = "+12025550143"
OTHER = "+12025550144"
SEND = "/api/phone/send-code/"
VERIFY = "/api/phone/verify-code/"
#: The answer to a wrong code (the first one of a verification): MAX_ATTEMPTS 5, so 4 left.
WRONG_CODE = {"detail": "The code is not valid.", "code": "invalid_code", "attempts_left": 4}


@pytest.fixture
def api():
    return APIClient()


def code_of(outbox) -> str:
    """The code of the last SMS: its text ends with it (in "local" mode, the default, locmem
    records no separate ``code``)."""
    return outbox[-1].text.rsplit(" ", 1)[-1]


def wrong_for(code: str) -> str:
    """A well-formed code that is not ``code``."""
    return "000000" if code != "000000" else "111111"


@pytest.fixture
def limited():
    """Every ``rate_limited`` signal the test sends, as its keyword arguments."""
    received: list[dict] = []
    signals.rate_limited.connect(
        lambda **kw: received.append(kw), weak=False, dispatch_uid="api-limited"
    )
    yield received
    signals.rate_limited.disconnect(dispatch_uid="api-limited")


def test_url_names():
    assert reverse("textflow:send-code") == SEND
    assert reverse("textflow:verify-code") == VERIFY


@pytest.mark.parametrize("mode", ["textflow", "local"])
def test_end_to_end_against_the_emulator(settings, api, textflow_live, mode):
    tf(settings, VERIFY_MODE=mode, SERVICE_NAME="Acme")
    received = []
    signals.phone_verified.connect(
        lambda sender, **kw: received.append(kw), weak=False, dispatch_uid="api-e2e"
    )
    try:
        response = api.post(SEND, {"phone_number": "+1 202 555 0143"}, format="json")
        assert response.status_code == 200, response.content
        body = response.json()
        assert body["phone_number"] == NUMBER
        handle = body["verification_id"]
        assert body["expires_at"] and body["resend_after"] == 30

        path = "/send-code" if mode == "textflow" else "/send-sms"
        [call] = textflow_live.calls(path)
        assert call.json["phone_number"] == NUMBER
        if mode == "textflow":  # CODE_TTL travels as TextFlow's "seconds"
            assert (call.json["seconds"], call.json["service_name"]) == (600, "Acme")
        code = textflow_live.messages[-1].text.rsplit(" ", 1)[-1]
        assert textflow_live.messages[-1].text.startswith("Your verification code for Acme is: ")

        data = {"phone_number": NUMBER, "code": code, "verification_id": handle}
        response = api.post(VERIFY, data, format="json")
        assert response.status_code == 200, response.content
        body = response.json()
        assert body["verified"] is True and body["phone_number"] == NUMBER
        assert verification.phone_from_token(body["token"]) == NUMBER
        assert len(textflow_live.calls("/verify-code")) == (1 if mode == "textflow" else 0)
        assert [r["phone_number"] for r in received] == [NUMBER]
    finally:
        signals.phone_verified.disconnect(dispatch_uid="api-e2e")


def test_field_errors_are_drf_400s(api, sms_outbox):
    response = api.post(SEND, {"phone_number": "call me"}, format="json")
    assert response.status_code == 400
    assert list(response.json()) == ["phone_number"]
    response = api.post(VERIFY, {"phone_number": NUMBER, "code": "１２３４"}, format="json")
    assert response.status_code == 400
    assert list(response.json()) == ["code"]
    assert sms_outbox == []


def test_a_national_number_with_no_region_is_told_to_add_the_country_code(
    settings, api, sms_outbox
):
    tf(settings, DEFAULT_REGION=None)
    response = api.post(SEND, {"phone_number": "(202) 555-0143"}, format="json")
    assert response.status_code == 400
    assert response.json() == {
        "phone_number": ["Enter the number with + and the country code, e.g. +1 202 555 0143."]
    }
    assert sms_outbox == []


@pytest.mark.parametrize(
    ("mode", "code", "message"),
    [
        ("local", "12345", "Enter the 6-digit code you received."),
        ("local", "1234567", "Enter the 6-digit code you received."),
        ("local", "12ab56", "Enter the code you received, digits only."),
        ("textflow", "123", "Enter the code you received: 4 to 10 digits."),
        ("textflow", "12 34", "Enter the code you received, digits only."),
    ],
)
def test_a_malformed_code_says_what_a_code_is_and_costs_no_attempt(
    settings, api, sms_outbox, mode, code, message
):
    tf(settings, VERIFY_MODE=mode)
    handle = _sent_handle(api)
    data = {"phone_number": NUMBER, "code": code, "verification_id": handle}
    response = api.post(VERIFY, data, format="json")
    assert response.status_code == 400
    assert response.json() == {"code": [message]}
    assert PhoneVerification.objects.get().attempts == 0


@pytest.mark.parametrize(
    "payload",
    [
        {"phone_number": 12025550143},
        {"phone_number": ["+12025550143"]},
        {"phone_number": {"a": 1}},
        {"phone_number": None},
        {"phone_number": True},
        {"phone_number": "+1" + "2" * 5000},
        {},
    ],
)
def test_odd_json_values_are_400s(api, payload, sms_outbox):
    response = api.post(SEND, payload, format="json")
    assert response.status_code == 400
    assert "phone_number" in response.json()
    assert sms_outbox == []


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        ("{not json", "application/json"),
        ("[1, 2]", "application/json"),
        ('"str"', "application/json"),
        ("null", "application/json"),
        ("\xff\xfe", "application/json"),
        ("phone_number=1", "text/plain"),
    ],
)
def test_malformed_bodies_are_4xx_with_detail_and_code(api, body, content_type):
    response = api.generic("POST", SEND, body, content_type=content_type)
    assert 400 <= response.status_code < 500
    assert response["Content-Type"] == "application/json"
    data = response.json()
    # Either DRF's field errors ({"field": [messages]}) or {"detail", "code"}.
    assert isinstance(data, dict) and data
    if "detail" in data:
        assert set(data) == {"detail", "code"}
    else:
        assert all(isinstance(v, list) and v for v in data.values()), data


def test_parse_error_body_shape(api):
    response = api.generic("POST", SEND, "{not json", content_type="application/json")
    assert response.status_code == 400
    assert set(response.json()) == {"detail", "code"}
    assert response.json()["code"] == "parse_error"


def test_get_is_405_with_code(api):
    response = api.get(SEND)
    assert response.status_code == 405
    assert response.json()["code"] == "method_not_allowed"


def _send(api, number=NUMBER):
    return api.post(SEND, {"phone_number": number}, format="json")


def _sent_handle(api, number=NUMBER) -> str:
    """Send a code to ``number`` and answer its ``verification_id``: a client with no session
    cookie gets no session, so its verify-code must carry the handle."""
    response = _send(api, number)
    assert response.status_code == 200, response.content
    return response.json()["verification_id"]


def test_wrong_code_then_lock(settings, api, sms_outbox):
    handle = _sent_handle(api)
    code = code_of(sms_outbox)
    wrong = wrong_for(code)
    for left in [4, 3, 2, 1, 0]:
        data = {"phone_number": NUMBER, "code": wrong, "verification_id": handle}
        response = api.post(VERIFY, data, format="json")
        assert response.status_code == 400
        assert response.json() == {
            "detail": "The code is not valid.",
            "code": "invalid_code",
            "attempts_left": left,
        }
    data = {"phone_number": NUMBER, "code": code, "verification_id": handle}
    response = api.post(VERIFY, data, format="json")
    assert response.status_code == 429
    assert response.json()["code"] == "too_many_attempts"
    assert 1 <= int(response["Retry-After"]) <= 30


def test_expired_is_told_to_the_holder_of_the_code_only(api, sms_outbox):
    handle = _sent_handle(api)
    code = code_of(sms_outbox)
    PhoneVerification.objects.update(expires_at=timezone.now() - dt.timedelta(seconds=1))
    data = {"phone_number": NUMBER, "code": code, "verification_id": handle}
    response = api.post(VERIFY, data, format="json")
    assert response.status_code == 400
    assert response.json()["code"] == "expired"
    # Anyone else holds no code of the number: a wrong code, whatever the code's state.
    response = APIClient().post(VERIFY, {"phone_number": NUMBER, "code": code}, format="json")
    assert (response.status_code, response.json()) == (400, WRONG_CODE)


def test_send_answers_the_verification_id_which_verifies_from_any_client(api, sms_outbox):
    response = _send(api)
    assert response.status_code == 200
    verification_id = response.json()["verification_id"]
    assert isinstance(verification_id, str) and len(verification_id) >= 32
    # Only its digest is kept.
    row = PhoneVerification.objects.get()
    assert row.handle_hash == hashlib.sha256(verification_id.encode()).hexdigest()
    code = code_of(sms_outbox)
    stranger = APIClient()  # another session: without the handle, no code to check
    data = {"phone_number": NUMBER, "code": code}
    assert stranger.post(VERIFY, data, format="json").json() == WRONG_CODE
    response = stranger.post(VERIFY, {**data, "verification_id": verification_id}, format="json")
    assert response.status_code == 200, response.content
    assert response.json()["verified"] is True


# -- probing, lockout, caps (issue 11) -------------------------------------------------------


def test_a_number_with_no_live_code_answers_exactly_as_a_wrong_code(sms_outbox):
    """Finding 7: a verify-code for a number with no live code said "expired" and cost
    nothing, so probing found the numbers being verified. Now every caller without a code
    gets the first wrong code's answer, for a number being verified or not."""
    owner = APIClient()
    handle = _sent_handle(owner)
    wrong = wrong_for(code_of(sms_outbox))
    data = {"phone_number": NUMBER, "code": wrong, "verification_id": handle}
    real = owner.post(VERIFY, data, format="json")
    assert (real.status_code, real.json()) == (400, WRONG_CODE)
    for number in (NUMBER, OTHER):  # being verified by someone else; never sent a code
        probe = APIClient().post(VERIFY, {"phone_number": number, "code": wrong}, format="json")
        assert (probe.status_code, probe.json()) == (real.status_code, real.json())
        assert sorted(probe.headers) == sorted(real.headers)
    row = PhoneVerification.objects.get()
    assert (row.status, row.attempts) == ("pending", 1)  # only the owner's guess counted


def test_probes_count_against_the_callers_failed_check_caps(
    settings, sms_outbox, limited, monkeypatch
):
    from textflow_django import ratelimit
    from textflow_django.ratelimit import DatabaseStore

    tf(settings, FAILED_CHECK_LIMITS={"ip": ["3/h"]})
    # The caps count on a fixed moment, 10 minutes into an hour's window (not the wall
    # clock), so the rolling window's wait is exact: the window's 50 minutes left, then
    # the 20 minutes (1/3 of the hour) until the 3 probes weigh less than the cap.
    moment = 500_000 * 3600 + 600.0
    monkeypatch.setattr(ratelimit, "get_store", lambda: DatabaseStore(clock=lambda: moment))
    prober = APIClient()
    numbers = [f"+1202555{i:04d}" for i in range(150, 154)]
    answers = [
        prober.post(VERIFY, {"phone_number": n, "code": "123456"}, format="json") for n in numbers
    ]
    assert [(a.status_code, a.json()) for a in answers[:3]] == [(400, WRONG_CODE)] * 3
    assert answers[3].status_code == 429
    assert answers[3].json()["code"] == "rate_limited"
    assert answers[3]["Retry-After"] == str(3000 + 1200)
    [signal] = limited
    assert (signal["action"], signal["scopes"], signal["phone_number"]) == (
        "check",
        ("ip",),
        numbers[3],
    )
    assert signal["retry_after"] == int(answers[3]["Retry-After"])
    # The cap is the caller's: another address still gets its answers.
    other = APIClient().post(
        VERIFY,
        {"phone_number": numbers[0], "code": "123456"},
        format="json",
        REMOTE_ADDR="192.0.2.9",
    )
    assert (other.status_code, other.json()) == (400, WRONG_CODE)


def test_strangers_wrong_codes_never_lock_the_owner_out(sms_outbox):
    """Finding 2: 20 wrong codes from anywhere locked the number's owner out until midnight
    (the per-number failed cap, and every client's guess counted on the owner's code). Now
    a stranger's guess reaches no code, and no cap is shared with the owner."""
    owner = APIClient()
    handle = _sent_handle(owner)
    code = code_of(sms_outbox)
    wrong = wrong_for(code)
    # More than the old per-number cap (20/d), each from its own network.
    for i in range(25):
        response = APIClient().post(
            VERIFY,
            {"phone_number": NUMBER, "code": wrong},
            format="json",
            REMOTE_ADDR=f"198.18.{i}.7",
        )
        assert (response.status_code, response.json()) == (400, WRONG_CODE), i
    row = PhoneVerification.objects.get()
    assert (row.status, row.attempts) == ("pending", 0)
    data = {"phone_number": NUMBER, "code": code, "verification_id": handle}
    response = owner.post(VERIFY, data, format="json")
    assert response.status_code == 200, response.content


def test_a_number_whose_send_cap_strangers_spent_is_logged_and_signalled(
    settings, sms_outbox, limited, caplog
):
    """What a stranger can still do to a number's owner: spend its send cap (the SMS go to
    the owner's phone). The refusal is logged (number masked) and signalled, scope
    "number", for the Fraud Guard."""
    from textflow_django import phone

    tf(settings, RESEND_COOLDOWN=0, SEND_LIMITS={"number": ["2/h"]})
    for i in range(2):
        response = APIClient().post(
            SEND, {"phone_number": NUMBER}, format="json", REMOTE_ADDR=f"198.18.{i}.7"
        )
        assert response.status_code == 200
    response = APIClient().post(
        SEND, {"phone_number": NUMBER}, format="json", REMOTE_ADDR="198.18.9.7"
    )
    assert (response.status_code, response.json()["code"]) == (429, "rate_limited")
    [signal] = limited
    assert (signal["action"], signal["scopes"], signal["phone_number"]) == (
        "send",
        ("number",),
        NUMBER,
    )
    [record] = [r for r in caplog.records if "reason=rate_limited" in r.getMessage()]
    assert record.levelname == "INFO"
    assert record.getMessage().startswith(
        f"textflow.send_code.refused reason=rate_limited number={phone.mask(NUMBER)} "
        "scopes=number retry_after="
    )
    assert NUMBER not in record.getMessage()


#: Per family: two addresses in one network (IPv4 /24, IPv6 /48) but not in one per-IP scope
#: (an IPv6 /64), a third in that network, and one outside it.
NETWORKS = {
    "ipv4": (("203.0.113.5", "203.0.113.77"), "203.0.113.200", "198.51.100.5"),
    "ipv6": (("2001:db8:1:1::1", "2001:db8:1:2::1"), "2001:db8:1:3::1", "2001:db8:2::1"),
}


@pytest.mark.parametrize("family", NETWORKS)
def test_clients_of_one_network_share_its_send_cap(settings, sms_outbox, limited, family):
    """Finding 8: per-IP caps counted a /64, and a /48 holds 65,536 of them."""
    tf(settings, RESEND_COOLDOWN=0, SEND_LIMITS={"ip": ["5/h"], "network": ["2/h"]})
    (first, second), third, outside = NETWORKS[family]
    for address, number in ((first, "+12025550150"), (second, "+12025550151")):
        response = APIClient().post(
            SEND, {"phone_number": number}, format="json", REMOTE_ADDR=address
        )
        assert response.status_code == 200, response.content
    response = APIClient().post(SEND, {"phone_number": NUMBER}, format="json", REMOTE_ADDR=third)
    assert response.status_code == 429
    assert response.json()["code"] == "rate_limited"
    [signal] = limited
    assert (signal["action"], signal["scopes"], signal["phone_number"]) == (
        "send",
        ("network",),
        NUMBER,
    )
    assert signal["retry_after"] == int(response["Retry-After"])
    assert signal["request"].META["REMOTE_ADDR"] == third
    response = APIClient().post(SEND, {"phone_number": NUMBER}, format="json", REMOTE_ADDR=outside)
    assert response.status_code == 200, response.content
    assert len(sms_outbox) == 3


@pytest.mark.parametrize("family", NETWORKS)
def test_clients_of_one_network_share_its_failed_check_cap(settings, limited, family):
    tf(settings, FAILED_CHECK_LIMITS={"ip": ["5/h"], "network": ["2/h"]})
    (first, second), third, outside = NETWORKS[family]
    data = {"phone_number": NUMBER, "code": "123456"}
    for address in (first, second):
        response = APIClient().post(VERIFY, data, format="json", REMOTE_ADDR=address)
        assert (response.status_code, response.json()) == (400, WRONG_CODE)
    response = APIClient().post(VERIFY, data, format="json", REMOTE_ADDR=third)
    assert (response.status_code, response.json()["code"]) == (429, "rate_limited")
    [signal] = limited
    assert (signal["action"], signal["scopes"]) == ("check", ("network",))
    response = APIClient().post(VERIFY, data, format="json", REMOTE_ADDR=outside)
    assert (response.status_code, response.json()) == (400, WRONG_CODE)


def test_resend_too_soon_has_retry_after(api, sms_outbox, limited):
    assert _send(api).status_code == 200
    response = _send(api)
    assert response.status_code == 429
    assert response.json()["code"] == "resend_too_soon"
    assert 1 <= int(response["Retry-After"]) <= 30
    assert len(sms_outbox) == 1
    assert limited == []  # the cooldown is not a cap: no rate_limited signal


def test_rate_limited_has_retry_after(settings, api, sms_outbox, limited):
    tf(settings, RESEND_COOLDOWN=0, SEND_LIMITS={"ip": ["1/h"]})
    assert _send(api).status_code == 200
    response = _send(api, OTHER)
    assert response.status_code == 429
    assert response.json()["code"] == "rate_limited"
    assert int(response["Retry-After"]) >= 1
    [signal] = limited
    assert signal["action"] == "send" and signal["scopes"] == ("ip",)
    assert signal["phone_number"] == OTHER
    assert signal["retry_after"] == int(response["Retry-After"])
    assert signal["request"] is not None and signal["sender"] is PhoneVerification


def test_country_not_allowed(settings, api, sms_outbox):
    tf(settings, BLOCKED_COUNTRIES=["US"])
    response = _send(api)
    assert response.status_code == 400
    assert response.json()["code"] == "country_not_allowed"
    assert sms_outbox == []


def handle_hash(verification_id: str) -> str:
    """What a verification keeps of its handle: a SHA-256, never the handle."""
    return hashlib.sha256(verification_id.encode()).hexdigest()


@pytest.mark.parametrize(
    ("fault", "kwargs", "status", "code", "maybe_sent"),
    [
        ("status", {"status": 500}, 502, "sms_provider_error", True),
        ("html", {"status": 502}, 502, "sms_provider_error", True),
        ("malformed", {}, 502, "sms_provider_error", True),
        ("reset", {}, 503, "sms_provider_unavailable", True),
        ("rate_limit", {"retry_after": 9}, 503, "sms_provider_unavailable", False),
    ],
)
def test_textflow_failures_map_to_502_503_and_say_whether_the_code_may_arrive(
    settings, api, textflow_live, fault, kwargs, status, code, maybe_sent
):
    textflow_live.fault(fault, path="/send-sms", **kwargs)
    response = _send(api)
    assert response.status_code == status
    body = response.json()
    assert len(textflow_live.calls("/send-sms")) == 1  # never re-sent
    recorded = PhoneVerification.objects.count()
    retry = _send(api)
    if maybe_sent:
        # It may have gone out: it counted (cooldown and caps), and is recorded so that its
        # code verifies if it arrives.
        assert body == {
            "detail": str(MAYBE_SENT_MESSAGE),
            "code": code,
            "code_may_arrive": True,
            "verification_id": body["verification_id"],
        }
        assert recorded == 1
        row = PhoneVerification.objects.get()
        assert row.handle_hash == handle_hash(body["verification_id"])
        assert (retry.status_code, retry.json()["code"]) == (429, "resend_too_soon")
        assert len(textflow_live.calls("/send-sms")) == 1
    else:
        # TextFlow refused it (429): nothing went out, nothing is consumed.
        assert body == {"detail": body["detail"], "code": code}
        assert response["Retry-After"] == "9"
        assert recorded == 0
        assert retry.status_code == 200  # the user retries at once
        assert len(textflow_live.calls("/send-sms")) == 2


def test_read_timeout_is_503_and_the_late_code_verifies(settings, api, textflow_live):
    tf(settings, TIMEOUT=0.3)
    textflow_live.fault("delay", path="/send-sms", delay=1.0)  # sent, answered too late
    response = _send(api)
    assert response.status_code == 503
    body = response.json()
    assert (body["code"], body["code_may_arrive"]) == ("sms_provider_unavailable", True)
    assert len(textflow_live.calls("/send-sms")) == 1
    code = textflow_live.messages[-1].text.rsplit(" ", 1)[-1]
    # With the answer's verification_id (Django does not save the session on a 5xx answer).
    data = {"phone_number": NUMBER, "code": code, "verification_id": body["verification_id"]}
    response = api.post(VERIFY, data, format="json")
    assert response.status_code == 200, response.content


def test_textflow_failure_on_verify_is_retryable(settings, api, textflow_live):
    tf(settings, VERIFY_MODE="textflow")  # only TextFlow's codes are checked by TextFlow
    handle = _sent_handle(api)
    code = textflow_live.last_code(NUMBER)
    textflow_live.fault("status", path="/verify-code", status=503)
    data = {"phone_number": NUMBER, "code": code, "verification_id": handle}
    response = api.post(VERIFY, data, format="json")
    assert response.status_code == 502
    response = api.post(VERIFY, data, format="json")
    assert response.status_code == 200


def test_locmem_failure_that_may_have_sent_is_502_and_says_so(api, sms_outbox):
    locmem.fail_next(TextFlowServerError("down", status=500))
    response = _send(api)
    assert response.status_code == 502
    body = response.json()
    assert body == {
        "detail": "The SMS service did not confirm the send, so the code may still arrive: "
        "enter it if it does, or ask for a new one once the wait is over.",
        "code": "sms_provider_error",
        "code_may_arrive": True,
        "verification_id": body["verification_id"],
    }
    assert PhoneVerification.objects.get().handle_hash == handle_hash(body["verification_id"])


def test_locmem_failure_that_sent_nothing_consumes_nothing(api, sms_outbox):
    locmem.fail_next(InsufficientBalance("No credits left", status=402))
    response = _send(api)
    assert response.status_code == 502
    assert response.json() == {
        "detail": "The SMS could not be sent. Try again later.",
        "code": "sms_provider_error",
    }
    locmem.fail_next(TextFlowConnectionError("connection refused", maybe_sent=False))
    response = _send(api)
    assert response.status_code == 503
    assert response.json() == {
        "detail": "The SMS service is unavailable. Try again in a moment.",
        "code": "sms_provider_unavailable",
    }
    assert not PhoneVerification.objects.exists()
    assert sms_outbox == []
    assert _send(api).status_code == 200  # no cooldown was kept
    assert len(sms_outbox) == 1


def test_csrf_is_enforced_for_session_users(api, sms_outbox):
    user = get_user_model().objects.create_user("eve", password="pw")
    csrf_client = APIClient(enforce_csrf_checks=True)
    csrf_client.force_login(user)
    response = csrf_client.post(SEND, {"phone_number": NUMBER}, format="json")
    assert response.status_code == 403
    assert sms_outbox == []


def test_authenticated_user_is_linked(settings, api, sms_outbox):
    user = get_user_model().objects.create_user("ann", password="pw")
    api.force_authenticate(user)
    # force_authenticate bypasses sessions: the client holds no session cookie, so the
    # send remembers nothing in a session and the verify carries the handle.
    handle = _sent_handle(api)
    assert settings.SESSION_COOKIE_NAME not in api.cookies
    data = {"phone_number": NUMBER, "code": code_of(sms_outbox), "verification_id": handle}
    response = api.post(VERIFY, data, format="json")
    assert response.status_code == 200
    assert PhoneVerification.objects.get().user == user


class OnePerMinute(AnonRateThrottle):
    rate = "1/min"


def test_permission_and_throttle_settings(settings, api, sms_outbox):
    tf(settings, PERMISSION_CLASSES=["rest_framework.permissions.IsAuthenticated"])
    response = _send(api)
    assert response.status_code == 403
    assert response.json()["code"] == "not_authenticated"
    tf(
        settings,
        PERMISSION_CLASSES=["rest_framework.permissions.AllowAny"],
        THROTTLE_CLASSES=["tests.test_api.OnePerMinute"],
    )
    from django.core.cache import cache

    cache.clear()
    assert _send(api).status_code == 200
    response = _send(api, "+12025550144")
    assert response.status_code == 429
    assert response.json()["code"] == "throttled"


def test_openapi_schema_describes_both_endpoints(settings):
    pytest.importorskip("drf_spectacular")
    from drf_spectacular.generators import SchemaGenerator

    schema = SchemaGenerator().get_schema(request=None, public=True)
    send = schema["paths"][SEND]["post"]
    verify = schema["paths"][VERIFY]["post"]
    assert {"200", "400", "429", "502", "503"} <= set(send["responses"])
    assert {"200", "400", "429", "502", "503"} <= set(verify["responses"])
    text = json.dumps(schema)
    assert "phone_number" in text and "token" in text


# -- a rate-limit store that fails fails closed ----------------------------------------------


@pytest.fixture(params=["dead-redis", "broken-cache"])
def failing_store(request, settings):
    """RATELIMIT_STORE = "cache" on a cache that cannot answer: a Redis on a port nobody
    listens on (the RedisCacheStore path), or any other cache raising (the CacheStore path)."""
    if request.param == "dead-redis":
        cache = {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": "redis://127.0.0.1:1/0",
        }
    else:
        cache = {"BACKEND": "tests.conftest.BrokenCache"}
    settings.CACHES = {**settings.CACHES, "limits": cache}
    tf(settings, RATELIMIT_STORE="cache", RATELIMIT_CACHE="limits")
    return request.param


def test_send_code_fails_closed_when_the_limit_store_is_down(
    api, sms_outbox, failing_store, caplog
):
    response = api.post(SEND, {"phone_number": NUMBER}, format="json")
    assert response.status_code == 503, response.content
    assert response.json()["code"] == "service_unavailable"
    assert response["Retry-After"] == "10"
    assert sms_outbox == []  # no SMS without its limits
    assert not PhoneVerification.objects.exists()
    [record] = [r for r in caplog.records if "textflow.store.failed" in r.getMessage()]
    assert record.levelname == "ERROR"


def test_verify_code_fails_closed_when_the_limit_store_is_down(
    api, sms_outbox, settings, failing_store
):
    tf(settings, RATELIMIT_STORE="database")  # the code goes out while the store works
    handle = _sent_handle(api)
    code = code_of(sms_outbox)
    tf(settings, RATELIMIT_STORE="cache")  # then the store goes down
    data = {"phone_number": NUMBER, "code": code, "verification_id": handle}
    response = api.post(VERIFY, data, format="json")
    assert response.status_code == 503, response.content
    assert response.json()["code"] == "service_unavailable"
    row = PhoneVerification.objects.get()
    assert (row.status, row.attempts) == ("pending", 0)  # nothing checked, nothing spent
    tf(settings, RATELIMIT_STORE="database")  # back: the same code still verifies
    response = api.post(VERIFY, data, format="json")
    assert response.status_code == 200, response.content


def test_a_store_failing_after_a_failed_send_keeps_the_providers_answer(
    api, settings, textflow_live, monkeypatch, caplog
):
    """The refund after a send that certainly failed cannot reach the store: the answer is
    still TextFlow's failure (logged), not a 500."""
    from textflow_django import ratelimit

    refunds = []

    def give_back_fails(*args, **kwargs):
        refunds.append(args)
        raise ConnectionError("cache server went away")

    monkeypatch.setattr(ratelimit.DatabaseStore, "give_back", give_back_fails)
    textflow_live.fault("rate_limit", path="/send-sms", retry_after=9)
    response = api.post(SEND, {"phone_number": NUMBER}, format="json")
    assert response.status_code == 503, response.content
    assert response.json()["code"] == "sms_provider_unavailable"
    assert len(refunds) == 1  # the refund was tried...
    [logged] = [r for r in caplog.records if "textflow.store.failed" in r.getMessage()]
    assert logged.getMessage() == (  # ...and failed
        "textflow.store.failed error=ConnectionError detail='cache server went away' settled=True"
    )


def test_a_send_that_may_have_gone_out_gives_nothing_back(api, textflow_live, monkeypatch):
    from textflow_django import ratelimit

    refunds = []
    monkeypatch.setattr(
        ratelimit.DatabaseStore, "give_back", lambda *args, **kwargs: refunds.append(args)
    )
    textflow_live.fault("status", path="/send-sms", status=500)
    response = api.post(SEND, {"phone_number": NUMBER}, format="json")
    assert (response.status_code, response.json()["code_may_arrive"]) == (502, True)
    assert refunds == []


# -- JSON in and out; no request transaction ---------------------------------------------------


def test_json_only(api, sms_outbox):
    """Only JSON bodies are read (a cross-site HTML form cannot post here), only JSON is
    answered, and a code must be a JSON string: a number cannot carry leading zeros."""
    response = api.post(SEND, {"phone_number": NUMBER}, format="multipart")
    assert response.status_code == 415
    assert response.json()["code"] == "unsupported_media_type"
    response = api.post(
        SEND, "phone_number=%2B12025550143", content_type="application/x-www-form-urlencoded"
    )
    assert response.status_code == 415
    assert sms_outbox == []
    response = api.post(SEND, {"phone_number": NUMBER}, format="json", HTTP_ACCEPT="text/html")
    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    response = api.post(VERIFY, {"phone_number": NUMBER, "code": 123456}, format="json")
    assert response.status_code == 400
    assert list(response.json()) == ["code"]


@pytest.mark.django_db(transaction=True)
def test_wrong_codes_count_under_atomic_requests(api, sms_outbox, monkeypatch):
    """With ATOMIC_REQUESTS, an error answer rolls the request's transaction back: the views
    run outside it, or every wrong guess would be undone and free."""
    from django.db import connections

    monkeypatch.setitem(connections["default"].settings_dict, "ATOMIC_REQUESTS", True)
    handle = _sent_handle(api)
    code = code_of(sms_outbox)
    wrong = wrong_for(code)
    for left in (4, 3, 2, 1, 0):
        data = {"phone_number": NUMBER, "code": wrong, "verification_id": handle}
        response = api.post(VERIFY, data, format="json")
        assert (response.status_code, response.json()["attempts_left"]) == (400, left)
    data = {"phone_number": NUMBER, "code": code, "verification_id": handle}
    response = api.post(VERIFY, data, format="json")
    assert (response.status_code, response.json()["code"]) == (429, "too_many_attempts")
    row = PhoneVerification.objects.get()
    assert (row.status, row.attempts) == ("locked", 5)


# -- reserve, then check (issue 11, finding 5) --------------------------------------------------


@pytest.mark.parametrize("store", ["database", pytest.param("redis", marks=requires_redis)])
@requires_postgres
@pytest.mark.django_db(transaction=True)
def test_parallel_wrong_codes_check_no_more_than_the_cap(settings, sms_outbox, store):
    """Finding 5: the wrong-code count was read before the check and raised after it, so
    parallel guesses passed the cap. Now a slot is taken before the code is compared: of 20
    guesses at once, exactly the cap's 5 are checked, the others refused unchecked."""
    from django.core.cache import caches

    if store == "redis":
        tf(settings, RATELIMIT_STORE="cache", RATELIMIT_CACHE="redis")
        caches["redis"].clear()
    # Attempts per code far above the cap: only the cap can stop the guesses.
    tf(settings, MAX_ATTEMPTS=100, FAILED_CHECK_LIMITS={"ip": ["5/h"]})
    response = _send(APIClient())
    assert response.status_code == 200
    data = {
        "phone_number": NUMBER,
        "code": wrong_for(code_of(sms_outbox)),
        "verification_id": response.json()["verification_id"],
    }
    try:
        answers = race(lambda: APIClient().post(VERIFY, data, format="json"))
        codes = sorted((a.status_code, a.json()["code"]) for a in answers)
        assert codes == [(400, "invalid_code")] * 5 + [(429, "rate_limited")] * 15
        assert PhoneVerification.objects.get().attempts == 5
    finally:
        if store == "redis":
            caches["redis"].clear()


def test_a_send_that_may_have_gone_out_keeps_the_sessions_handle(settings, textflow_live):
    """SessionMiddleware saves no session on a 5xx: the view saves it, so a client that
    holds a session and relies on it can still verify the code that arrives after a 503."""
    tf(
        settings,
        BACKEND="textflow_django.backends.textflow.TextFlowBackend",
        TIMEOUT=0.3,
        BREAKER_THRESHOLD=0,
    )
    textflow_live.fault("delay", path="/send-sms", delay=1.0)
    client = session_client(settings)  # only a client that holds a session relies on it
    response = client.post(SEND, {"phone_number": NUMBER}, format="json")
    assert response.status_code == 503, response.content
    assert response.json()["code_may_arrive"] is True
    assert int(response["Retry-After"]) == 30  # the cooldown it kept
    assert settings.SESSION_COOKIE_NAME in response.cookies
    late = textflow_live.messages[-1].text.rsplit(" ", 1)[-1]
    # No verification_id passed: the session remembered it.
    done = client.post(VERIFY, {"phone_number": NUMBER, "code": late}, format="json")
    assert done.status_code == 200, done.content


# -- the session remembers a code only for a client that holds one --------------------------


def session_client(settings) -> APIClient:
    """An APIClient that holds a session already: a saved session and its cookie, as a
    browser that visited the site before."""
    from importlib import import_module

    store = import_module(settings.SESSION_ENGINE).SessionStore()
    store.save()
    client = APIClient()
    client.cookies[settings.SESSION_COOKIE_NAME] = store.session_key
    return client


def test_a_client_without_a_session_gets_none_and_needs_the_verification_id(
    settings, api, sms_outbox
):
    """A fresh client's send-code creates no session (no row, no cookie): the answer's
    verification_id is its only handle on the code."""
    from django.contrib.sessions.models import Session

    assert settings.SESSION_ENGINE == "django.contrib.sessions.backends.db"  # rows to count
    response = _send(api)
    assert response.status_code == 200, response.content
    handle = response.json()["verification_id"]
    assert Session.objects.count() == 0
    assert settings.SESSION_COOKIE_NAME not in response.cookies
    assert settings.SESSION_COOKIE_NAME not in api.cookies
    code = code_of(sms_outbox)
    data = {"phone_number": NUMBER, "code": code}
    response = api.post(VERIFY, data, format="json")
    assert (response.status_code, response.json()) == (400, WRONG_CODE)
    response = api.post(VERIFY, {**data, "verification_id": handle}, format="json")
    assert response.status_code == 200, response.content
    assert response.json()["verified"] is True


def test_a_client_holding_a_session_verifies_without_the_verification_id(settings, sms_outbox):
    client = session_client(settings)
    response = _send(client)
    assert response.status_code == 200, response.content
    assert "verification_id" in response.json()
    response = client.post(
        VERIFY, {"phone_number": NUMBER, "code": code_of(sms_outbox)}, format="json"
    )
    assert response.status_code == 200, response.content
    assert response.json()["verified"] is True
    assert PhoneVerification.objects.get().status == "verified"
