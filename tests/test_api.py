"""The JSON API end to end through DRF's APIClient, against the emulator and locmem."""

from __future__ import annotations

import json

import pytest
from django.contrib.auth import get_user_model
from django.urls import reverse
from rest_framework.test import APIClient
from rest_framework.throttling import AnonRateThrottle

from textflow_django import signals, verification
from textflow_django.backends import locmem
from textflow_django.exceptions import TextFlowServerError
from textflow_django.models import PhoneVerification

from .conftest import tf

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("no_secrets_in_logs")]

NUMBER = "+12025550143"
SEND = "/api/phone/send-code/"
VERIFY = "/api/phone/verify-code/"


@pytest.fixture
def api():
    return APIClient()


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
        assert body["expires_at"] and body["resend_after"] == 30

        path = "/send-code" if mode == "textflow" else "/send-sms"
        [call] = textflow_live.calls(path)
        assert call.json["phone_number"] == NUMBER
        if mode == "textflow":  # CODE_TTL travels as TextFlow's "seconds"
            assert (call.json["seconds"], call.json["service_name"]) == (600, "Acme")
        code = textflow_live.messages[-1].text.rsplit(" ", 1)[-1]
        assert textflow_live.messages[-1].text.startswith("Your verification code for Acme is: ")

        response = api.post(VERIFY, {"phone_number": NUMBER, "code": code}, format="json")
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


def test_wrong_code_then_lock(settings, api, sms_outbox):
    assert _send(api).status_code == 200
    code = sms_outbox[-1].code
    wrong = "000000" if code != "000000" else "111111"
    for left in [4, 3, 2, 1, 0]:
        response = api.post(VERIFY, {"phone_number": NUMBER, "code": wrong}, format="json")
        assert response.status_code == 400
        assert response.json() == {
            "detail": "The code is not valid.",
            "code": "invalid_code",
            "attempts_left": left,
        }
    response = api.post(VERIFY, {"phone_number": NUMBER, "code": code}, format="json")
    assert response.status_code == 429
    assert response.json()["code"] == "too_many_attempts"
    assert 1 <= int(response["Retry-After"]) <= 30


def test_expired(api, sms_outbox):
    response = api.post(VERIFY, {"phone_number": NUMBER, "code": "123456"}, format="json")
    assert response.status_code == 400
    assert response.json()["code"] == "expired"


def test_resend_too_soon_has_retry_after(api, sms_outbox):
    assert _send(api).status_code == 200
    response = _send(api)
    assert response.status_code == 429
    assert response.json()["code"] == "resend_too_soon"
    assert 1 <= int(response["Retry-After"]) <= 30
    assert len(sms_outbox) == 1


def test_rate_limited_has_retry_after(settings, api, sms_outbox):
    tf(settings, RESEND_COOLDOWN=0, SEND_LIMITS={"ip": ["1/h"]})
    assert _send(api).status_code == 200
    response = _send(api, "+12025550144")
    assert response.status_code == 429
    assert response.json()["code"] == "rate_limited"
    assert int(response["Retry-After"]) >= 1


def test_country_not_allowed(settings, api, sms_outbox):
    tf(settings, BLOCKED_COUNTRIES=["US"])
    response = _send(api)
    assert response.status_code == 400
    assert response.json()["code"] == "country_not_allowed"
    assert sms_outbox == []


@pytest.mark.parametrize(
    ("fault", "kwargs", "status", "code"),
    [
        ("status", {"status": 500}, 502, "sms_provider_error"),
        ("html", {"status": 502}, 502, "sms_provider_error"),
        ("malformed", {}, 502, "sms_provider_error"),
        ("reset", {}, 503, "sms_provider_unavailable"),
        ("rate_limit", {"retry_after": 9}, 503, "sms_provider_unavailable"),
    ],
)
def test_textflow_failures_map_to_502_503_and_are_retryable(
    settings, api, textflow_live, fault, kwargs, status, code
):
    textflow_live.fault(fault, path="/send-code", **kwargs)
    response = _send(api)
    assert response.status_code == status
    assert response.json()["code"] == code
    assert len(textflow_live.calls("/send-code")) == 1  # never re-sent
    assert _send(api).status_code == 200  # nothing consumed: the user retries at once


def test_read_timeout_is_503(settings, api, textflow_live):
    tf(settings, TIMEOUT=0.3)
    textflow_live.fault("delay", path="/send-code", delay=1.0)
    response = _send(api)
    assert response.status_code == 503
    assert len(textflow_live.calls("/send-code")) == 1


def test_textflow_failure_on_verify_is_retryable(settings, api, textflow_live):
    assert _send(api).status_code == 200
    code = textflow_live.last_code(NUMBER)
    textflow_live.fault("status", path="/verify-code", status=503)
    response = api.post(VERIFY, {"phone_number": NUMBER, "code": code}, format="json")
    assert response.status_code == 502
    response = api.post(VERIFY, {"phone_number": NUMBER, "code": code}, format="json")
    assert response.status_code == 200


def test_locmem_failure_is_502(api, sms_outbox):
    locmem.fail_next(TextFlowServerError("down", status=500))
    response = _send(api)
    assert response.status_code == 502
    assert response.json() == {
        "detail": "The SMS could not be sent. Try again later.",
        "code": "sms_provider_error",
    }


def test_csrf_is_enforced_for_session_users(api, sms_outbox):
    user = get_user_model().objects.create_user("eve", password="pw")
    csrf_client = APIClient(enforce_csrf_checks=True)
    csrf_client.force_login(user)
    response = csrf_client.post(SEND, {"phone_number": NUMBER}, format="json")
    assert response.status_code == 403
    assert sms_outbox == []


def test_authenticated_user_is_linked(api, sms_outbox):
    user = get_user_model().objects.create_user("ann", password="pw")
    api.force_authenticate(user)
    assert _send(api).status_code == 200
    response = api.post(
        VERIFY, {"phone_number": NUMBER, "code": sms_outbox[-1].code}, format="json"
    )
    assert response.status_code == 200
    from textflow_django.models import PhoneVerification

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
    [record] = [r for r in caplog.records if "rate-limit store failed" in r.getMessage()]
    assert record.levelname == "ERROR"


def test_verify_code_fails_closed_when_the_limit_store_is_down(
    api, sms_outbox, settings, failing_store
):
    tf(settings, RATELIMIT_STORE="database")  # the code goes out while the store works
    assert api.post(SEND, {"phone_number": NUMBER}, format="json").status_code == 200
    code = sms_outbox[-1].code
    tf(settings, RATELIMIT_STORE="cache")  # then the store goes down
    response = api.post(VERIFY, {"phone_number": NUMBER, "code": code}, format="json")
    assert response.status_code == 503, response.content
    assert response.json()["code"] == "service_unavailable"
    row = PhoneVerification.objects.get()
    assert (row.status, row.attempts) == ("pending", 0)  # nothing checked, nothing spent
    tf(settings, RATELIMIT_STORE="database")  # back: the same code still verifies
    response = api.post(VERIFY, {"phone_number": NUMBER, "code": code}, format="json")
    assert response.status_code == 200, response.content


def test_a_store_failing_after_a_failed_send_keeps_the_providers_answer(
    api, settings, textflow_live, monkeypatch, caplog
):
    """The refund after a failed send cannot reach the store: the answer is still TextFlow's
    failure (logged), not a 500."""
    from textflow_django import ratelimit

    refunds = []

    def give_back_fails(*args, **kwargs):
        refunds.append(args)
        raise ConnectionError("cache server went away")

    monkeypatch.setattr(ratelimit.DatabaseStore, "give_back", give_back_fails)
    textflow_live.fault("status", path="/send-code", status=500)
    response = api.post(SEND, {"phone_number": NUMBER}, format="json")
    assert response.status_code == 502, response.content
    assert response.json()["code"] == "sms_provider_error"
    assert len(refunds) == 1  # the refund was tried...
    [logged] = [r for r in caplog.records if "rate-limit store failed" in r.getMessage()]
    assert "ConnectionError: cache server went away" in logged.getMessage()  # ...and failed


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
    assert api.post(SEND, {"phone_number": NUMBER}, format="json").status_code == 200
    code = sms_outbox[-1].code
    wrong = "0000" if code != "0000" else "1111"
    for left in (4, 3, 2, 1, 0):
        response = api.post(VERIFY, {"phone_number": NUMBER, "code": wrong}, format="json")
        assert (response.status_code, response.json()["attempts_left"]) == (400, left)
    response = api.post(VERIFY, {"phone_number": NUMBER, "code": code}, format="json")
    assert (response.status_code, response.json()["code"]) == (429, "too_many_attempts")
    row = PhoneVerification.objects.get()
    assert (row.status, row.attempts) == ("locked", 5)
