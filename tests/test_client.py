"""TextFlowClient against the emulator, over real sockets: every response shape and fault."""

from __future__ import annotations

import datetime as dt
import email.utils
import functools
import json
import math
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from decimal import Decimal
from unittest import mock

import pytest
import requests
from django.core.exceptions import ImproperlyConfigured
from requests.adapters import HTTPAdapter

from textflow_django import __version__
from textflow_django.client import (
    CONNECT_RETRIES,
    MAX_RESPONSE_BYTES,
    BulkResult,
    CircuitBreaker,
    ClientConfigurationError,
    InsufficientBalance,
    InvalidAPIKey,
    TextFlowAPIError,
    TextFlowBadResponse,
    TextFlowClient,
    TextFlowConnectionError,
    TextFlowError,
    TextFlowRateLimited,
    TextFlowRejectedNumber,
    TextFlowServerError,
    TextFlowTimeout,
)
from textflow_django.testing import EMULATOR_API_KEY

NUMBER = "+12025550143"


def assert_no_secret(err: BaseException) -> None:
    for text in (str(err), repr(err)):
        assert EMULATOR_API_KEY not in text


def chain(err: BaseException) -> list[BaseException]:
    """``err`` and every exception its ``__cause__``/``__context__`` links reach."""
    found: list[BaseException] = []
    pending = [err]
    while pending:
        current = pending.pop()
        if any(current is e for e in found):
            continue
        found.append(current)
        pending += [e for e in (current.__cause__, current.__context__) if e is not None]
    return found


def assert_no_part_of_the_key(err: BaseException) -> None:
    """No 12-character run of the key anywhere in ``err``'s chain (str, repr or args)."""
    runs = {EMULATOR_API_KEY[i : i + 12] for i in range(len(EMULATOR_API_KEY) - 11)}
    for current in chain(err):
        for text in (str(current), repr(current), repr(current.args)):
            assert not [run for run in runs if run in text], type(current)


# -- successes ---------------------------------------------------------------------------


def test_send_sms_returns_typed_result_and_sends_the_documented_request(
    tf_client, textflow_emulator
):
    result = tf_client.send_sms(NUMBER, "Hello")

    assert result.to == NUMBER
    assert result.content == "Hello"
    assert isinstance(result.country_code, str) and result.country_code
    assert isinstance(result.price, float)
    assert isinstance(result.timestamp, dt.datetime) and result.timestamp.tzinfo is not None
    [request] = textflow_emulator.calls("/send-sms")
    assert request.method == "POST"
    assert request.json == {"phone_number": NUMBER, "text": "Hello"}
    assert request.headers["authorization"] == f"Bearer {EMULATOR_API_KEY}"
    assert request.headers["content-type"] == "application/json"
    assert request.headers["user-agent"].startswith(f"textflow-django/{__version__} ")
    assert [(m.phone_number, m.text, m.kind) for m in textflow_emulator.messages] == [
        (NUMBER, "Hello", "sms")
    ]


def test_send_code_then_verify_code(tf_client, textflow_emulator):
    sent = tf_client.send_code(NUMBER, service_name="Acme", seconds=120)

    [request] = textflow_emulator.calls("/send-code")
    assert request.json == {"phone_number": NUMBER, "service_name": "Acme", "seconds": 120}
    code = textflow_emulator.last_code(NUMBER)
    assert code is not None
    assert sent.verification_code == code
    assert code not in repr(sent)  # the code never reaches a log through a repr
    assert sent.expires is not None
    assert (
        dt.timedelta(seconds=100)
        < sent.expires - dt.datetime.now(dt.UTC)
        <= dt.timedelta(seconds=121)
    )
    assert textflow_emulator.messages[-1].text == f"Your verification code for Acme is: {code}"

    ok = tf_client.verify_code(NUMBER, code)
    assert ok.valid is True
    assert ok.expires is not None
    wrong = "0000" if code != "0000" else "1111"
    assert tf_client.verify_code(NUMBER, wrong).valid is False


def test_send_code_without_options_sends_only_the_number(tf_client, textflow_emulator):
    tf_client.send_code(NUMBER)
    assert textflow_emulator.calls("/send-code")[0].json == {"phone_number": NUMBER}
    code = textflow_emulator.last_code(NUMBER)
    assert textflow_emulator.messages[-1].text == f"Your verification code is: {code}"


def test_a_new_code_replaces_the_old_one(tf_client, textflow_emulator):
    tf_client.send_code(NUMBER)
    first = textflow_emulator.last_code(NUMBER)
    tf_client.send_code(NUMBER)
    second = textflow_emulator.last_code(NUMBER)
    assert tf_client.verify_code(NUMBER, second).valid is True
    if first != second:
        assert tf_client.verify_code(NUMBER, first).valid is False


def test_bulk_sms_and_bulk_count(tf_client, textflow_emulator):
    numbers = ["+12025550143", "+447700900123", "+33612345678"]
    result = tf_client.bulk_sms(numbers, "Sale today")

    assert result.submitted == 3
    assert result.accepted == 3
    assert textflow_emulator.calls("/bulk-sms")[0].json == {
        "phone_numbers": numbers,
        "text": "Sale today",
    }
    assert sorted(m.phone_number for m in textflow_emulator.messages if m.kind == "bulk") == sorted(
        numbers
    )
    assert tf_client.bulk_count().count == 3
    textflow_emulator.deliver_bulk(2)
    assert tf_client.bulk_count().count == 1
    textflow_emulator.deliver_bulk()
    assert tf_client.bulk_count().count == 0


def test_bulk_sms_accepts_any_iterable(tf_client, textflow_emulator):
    result = tf_client.bulk_sms((n for n in ["+12025550143", "+12025550144"]), "Hi")
    assert result.submitted == 2
    assert textflow_emulator.calls("/bulk-sms")[0].json["phone_numbers"] == [
        "+12025550143",
        "+12025550144",
    ]


def test_balance(tf_client, textflow_emulator):
    balance = tf_client.balance()
    assert isinstance(balance.credits, Decimal)
    assert balance.credits > 0
    assert dict(balance.packages) == {"USA Canada": 2100, "UK": 500}
    assert textflow_emulator.calls("/balance")[0].method == "GET"


def test_connections_are_pooled(tf_client, textflow_emulator):
    before = textflow_emulator.connection_count
    for _ in range(5):
        tf_client.send_sms(NUMBER, "Hi")
    assert textflow_emulator.connection_count - before == 1


def test_headers_set_on_the_clients_own_session_are_sent(textflow_emulator, client_for):
    client = client_for()
    client.session.headers["X-Request-Source"] = "signup"
    client.send_sms(NUMBER, "Hi")
    [request] = textflow_emulator.calls("/send-sms")
    assert request.headers["x-request-source"] == "signup"
    # The client's own headers win over the session's.
    assert request.headers["authorization"] == f"Bearer {EMULATOR_API_KEY}"


def test_a_session_passed_in_is_used_with_its_headers_and_hooks(textflow_emulator, client_for):
    import requests

    session = requests.Session()
    session.headers["X-Trace"] = "abc"
    seen: list[int] = []
    session.hooks["response"].append(lambda response, **kwargs: seen.append(response.status_code))
    client = client_for(session=session)
    before = textflow_emulator.connection_count
    assert client.send_sms(NUMBER, "Hi").to == NUMBER
    assert client.bulk_count().count == 0
    [request] = textflow_emulator.calls("/send-sms")
    assert request.json == {"phone_number": NUMBER, "text": "Hi"}
    assert request.headers["x-trace"] == "abc"
    assert request.headers["authorization"] == f"Bearer {EMULATOR_API_KEY}"
    assert seen == [200, 200]
    assert textflow_emulator.connection_count - before == 1


def test_own_session_goes_straight_to_urllib3_unless_httpadapter_send_is_patched(
    textflow_emulator, monkeypatch, client_for
):
    from requests.adapters import HTTPAdapter

    built: list[str] = []  # HTTPAdapter.send ends in build_response; the direct path does not
    original_build = HTTPAdapter.build_response
    monkeypatch.setattr(
        HTTPAdapter,
        "build_response",
        lambda self, req, resp: built.append(req.url) or original_build(self, req, resp),
    )
    client = client_for()
    client.send_sms(NUMBER, "direct")
    assert built == []

    original_send = HTTPAdapter.send

    def send(self, request, **kwargs):  # type: ignore[no-untyped-def]
        return original_send(self, request, **kwargs)

    monkeypatch.setattr(HTTPAdapter, "send", send)  # as the `responses` library does
    client.send_sms(NUMBER, "patched")
    assert built == [f"{textflow_emulator.url}/send-sms"]
    assert [r.json["text"] for r in textflow_emulator.calls("/send-sms")] == ["direct", "patched"]


@pytest.mark.parametrize("style", ["functools.wraps", "autospec"])
def test_any_patch_of_httpadapter_send_is_honoured(textflow_emulator, style, client_for):
    original = HTTPAdapter.send
    seen: list[str] = []

    def record(self, request, **kwargs):  # type: ignore[no-untyped-def]
        seen.append(request.url)
        return original(self, request, **kwargs)

    if style == "functools.wraps":  # keeps requests' names: only the code tells them apart
        patcher = mock.patch.object(HTTPAdapter, "send", functools.wraps(original)(record))
    else:  # what the `responses` library does
        patcher = mock.patch.object(HTTPAdapter, "send", autospec=True, side_effect=record)
    client = client_for()
    with patcher:
        assert client.send_sms(NUMBER, "patched").to == NUMBER
    assert seen == [f"{textflow_emulator.url}/send-sms"]
    # The patch gone, the client goes straight to urllib3 again.
    assert client.send_sms(NUMBER, "direct").to == NUMBER
    assert seen == [f"{textflow_emulator.url}/send-sms"]
    assert [r.json["text"] for r in textflow_emulator.calls("/send-sms")] == ["patched", "direct"]


PATCHED_BEFORE_IMPORT = """
import functools, io, json, sys
from unittest import mock

import requests
from requests.adapters import HTTPAdapter
from urllib3 import HTTPResponse

key, url, style = sys.argv[1:4]
BODY = json.dumps({"ok": True, "status": 200, "message": "Message sent successfully",
                   "data": {"to": "+12025550143", "content": "from the mock"}}).encode()
calls = []


def fake(request):
    calls.append(request.url)
    response = requests.Response()
    response.status_code = 200
    response.raw = HTTPResponse(body=io.BytesIO(BODY), status=200, preload_content=False,
                                headers={"Content-Type": "application/json"})
    return response


original = HTTPAdapter.send
if style == "autospec":  # as the `responses` library patches it
    patcher = mock.patch.object(HTTPAdapter, "send", autospec=True,
                                side_effect=lambda self, request, **kw: fake(request))
elif style == "mock":
    patcher = mock.patch.object(HTTPAdapter, "send", mock.Mock(
        side_effect=lambda request, **kw: fake(request)))
else:
    patcher = mock.patch.object(HTTPAdapter, "send", functools.wraps(original)(
        lambda self, request, **kw: fake(request)))
with patcher:
    assert "textflow_django.client" not in sys.modules
    from textflow_django.client import TextFlowClient

    client = TextFlowClient(key, base_url=url)
    content = client.send_sms("+12025550143", "Hi").content
print(json.dumps({"content": content, "calls": calls}))
"""


@pytest.mark.parametrize("style", ["autospec", "mock", "functools.wraps"])
def test_httpadapter_send_patched_before_the_client_is_imported_is_honoured(
    textflow_emulator, style
):
    # A fresh interpreter: the patch is in place before textflow_django.client is imported.
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            PATCHED_BEFORE_IMPORT,
            EMULATOR_API_KEY,
            textflow_emulator.url,
            style,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {
        "content": "from the mock",
        "calls": [f"{textflow_emulator.url}/send-sms"],
    }
    assert textflow_emulator.requests == []  # the mock answered; nothing reached a socket


def test_an_adapter_mounted_on_the_own_session_is_used(textflow_emulator, client_for):
    from requests.adapters import HTTPAdapter

    sent: list[str] = []

    class Recording(HTTPAdapter):
        def send(self, request, **kwargs):  # type: ignore[no-untyped-def]
            sent.append(request.body.decode())
            return super().send(request, **kwargs)

    client = client_for()
    client.session.mount("http://", Recording())
    assert client.send_sms(NUMBER, "Hi").to == NUMBER
    assert [json.loads(body) for body in sent] == [{"phone_number": NUMBER, "text": "Hi"}]


def test_a_proxy_on_the_own_session_is_used(textflow_emulator):
    # The emulator stands in for the proxy: it receives the absolute URL requests sends.
    client = TextFlowClient(EMULATOR_API_KEY, base_url="http://textflow.invalid/api", timeout=5)
    proxy = textflow_emulator.url.rsplit("/api", 1)[0]
    client.session.proxies = {"http": proxy}
    with pytest.raises(TextFlowError):
        client.send_sms(NUMBER, "Hi")  # the emulator is no proxy: it answers 404
    [request] = textflow_emulator.requests
    assert request.path == "http://textflow.invalid/api/send-sms"


def test_an_unreadable_base_url_is_a_configuration_error():
    with pytest.raises(ClientConfigurationError, match="not a valid URL"):
        TextFlowClient(EMULATOR_API_KEY, base_url="http://")


# -- documented response variants -------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            {
                "ok": True,
                "status": 200,
                "message": "Message sent successfully",
                "data": {
                    "to": "+381690156360",
                    "content": "Dummy message text...",
                    "country_code": "Serbia",
                    "price": 0.15,
                    "timestamp": 1676842652256,
                },
            },
            ("Serbia", 0.15, 1676842652.256),
        ),
        (
            {
                "ok": True,
                "status": 200,
                "message": "Message sent successfully",
                "data": {
                    "to": "+381690156360",
                    "content": "Dummy",
                    "country_code": "RS",
                    "price": 0.15,
                    "timestamp": 1676842652256,
                },
            },
            ("RS", 0.15, 1676842652.256),
        ),
        ({"ok": True, "status": 200, "message": "Message sent successfully"}, (None, None, None)),
    ],
    ids=["country-name", "iso-code", "no-data"],
)
def test_send_sms_tolerates_documented_variants(tf_client, textflow_emulator, body, expected):
    textflow_emulator.fault("respond", path="/send-sms", status=200, body=json.dumps(body))
    result = tf_client.send_sms("+381690156360", "Dummy message text...")
    country, price, ts = expected
    assert result.country_code == country
    assert result.price == price
    assert (result.timestamp.timestamp() if result.timestamp else None) == ts


def test_send_code_documented_example(tf_client, textflow_emulator):
    body = {
        "ok": True,
        "status": 200,
        "message": "Message sent successfully",
        "data": {
            "verification_code": "4045",
            "expires": 1676843252256,
            "message_text": "Your verification code for Guest is: 4045",
        },
    }
    textflow_emulator.fault("respond", path="/send-code", status=200, body=json.dumps(body))
    result = tf_client.send_code(NUMBER, service_name="Guest")
    assert result.verification_code == "4045"
    assert result.expires == dt.datetime.fromtimestamp(1676843252.256, tz=dt.UTC)


@pytest.mark.parametrize(
    ("body", "valid"),
    [
        (
            {
                "ok": True,
                "status": 200,
                "message": "Code is valid",
                "valid": True,
                "valid_code": "4045",
                "expires": 1676843252256,
            },
            True,
        ),
        ({"ok": True, "status": 200, "message": "Code is not valid", "valid": False}, False),
        ({"ok": True, "status": 200, "message": "Code is valid", "data": {"valid": True}}, True),
    ],
    ids=["valid", "invalid", "valid-under-data"],
)
def test_verify_code_documented_examples(tf_client, textflow_emulator, body, valid):
    textflow_emulator.fault("respond", path="/verify-code", status=200, body=json.dumps(body))
    assert tf_client.verify_code(NUMBER, "4045").valid is valid


def test_verify_code_without_valid_is_a_bad_response(tf_client, textflow_emulator):
    textflow_emulator.fault("respond", path="/verify-code", status=200, body='{"ok": true}')
    with pytest.raises(TextFlowBadResponse):
        tf_client.verify_code(NUMBER, "4045")


@pytest.mark.parametrize(
    "body",
    [
        {"ok": True, "status": 200, "message": "ok", "data": {"count": 42}},
        {"ok": True, "status": 200, "message": "ok", "count": 42},
    ],
    ids=["count-in-data", "count-top-level"],
)
def test_bulk_count_variants(tf_client, textflow_emulator, body):
    textflow_emulator.fault("respond", path="/bulk-count", status=200, body=json.dumps(body))
    assert tf_client.bulk_count().count == 42


def test_bulk_sms_documented_answer_without_data(tf_client, textflow_emulator):
    # textflow-api.md: {"ok": true, "status": 200, "message": "..."}, a summary only possibly.
    body = '{"ok": true, "status": 200, "message": "Bulk SMS job started"}'
    textflow_emulator.fault("respond", path="/bulk-sms", status=200, body=body)
    numbers = [NUMBER, "+447700900123"]

    result = tf_client.bulk_sms(numbers, "Sale")

    assert result == BulkResult(submitted=2, message="Bulk SMS job started", accepted=None)
    [request] = textflow_emulator.calls("/bulk-sms")
    assert (request.method, request.fault) == ("POST", "respond")
    assert request.json == {"phone_numbers": numbers, "text": "Sale"}
    assert textflow_emulator.bulk_pending == 0  # the replayed answer stood in for the job


def test_bulk_count_without_count_is_a_bad_response(tf_client, textflow_emulator):
    textflow_emulator.fault(
        "respond", path="/bulk-count", status=200, body='{"ok": true, "status": 200}'
    )
    with pytest.raises(TextFlowBadResponse):
        tf_client.bulk_count()


def test_balance_failure_answer(tf_client, textflow_emulator):
    textflow_emulator.fault("respond", path="/balance", status=200, body='{"ok": false}')
    with pytest.raises(TextFlowAPIError) as info:
        tf_client.balance()
    assert info.value.maybe_sent is False


# -- documented errors -------------------------------------------------------------------


def test_invalid_api_key(client_for, textflow_emulator):
    bad_key = "x" * 64
    client = client_for(api_key=bad_key)
    with pytest.raises(InvalidAPIKey) as info:
        client.send_sms(NUMBER, "Hi")
    err = info.value
    # The emulator answers a wrong key as TextFlow's own clients' READMEs show.
    assert err.status == 404
    assert err.message == "API key not found"
    assert err.maybe_sent is False
    assert "API key not found" in str(err) and "404" in str(err)
    assert bad_key not in str(err) and bad_key not in repr(err)
    assert textflow_emulator.messages == []


@pytest.mark.parametrize(
    ("status", "message", "exc"),
    [
        (400, "Invalid API key", InvalidAPIKey),
        (400, "Invalid API key or user id.", InvalidAPIKey),
        (404, "API key not found", InvalidAPIKey),
        (400, "Insufficient balance", InsufficientBalance),
        (400, "Something else entirely", TextFlowAPIError),
        (403, "Forbidden", TextFlowAPIError),
    ],
)
def test_documented_refusals(tf_client, textflow_emulator, status, message, exc):
    body = json.dumps({"ok": False, "status": status, "message": message})
    textflow_emulator.fault("respond", status=status, body=body)
    with pytest.raises(exc) as info:
        tf_client.send_sms(NUMBER, "Hi")
    assert type(info.value) is exc
    assert info.value.status == status
    assert info.value.message == message
    assert info.value.maybe_sent is False


def test_invalid_phone_number(tf_client, textflow_emulator):
    with pytest.raises(TextFlowRejectedNumber) as info:
        tf_client.send_sms("+1", "Hi")
    assert info.value.message == "Phone number is invalid"
    assert info.value.status == 400
    assert textflow_emulator.messages == []


def test_insufficient_balance_from_the_emulator(client_for, textflow_emulator):
    textflow_emulator.reset()
    client = client_for()
    # Drain the emulator's credit with bulk sends, then one more is refused.
    with pytest.raises(InsufficientBalance):
        for _ in range(100):
            client.bulk_sms(["+12025550143"] * 500, "Hi")


def test_server_message_echoing_the_key_is_redacted(tf_client, textflow_emulator):
    body = json.dumps({"ok": False, "status": 400, "message": f"bad key {EMULATOR_API_KEY}"})
    textflow_emulator.fault("respond", status=400, body=body)
    with pytest.raises(TextFlowAPIError) as info:
        tf_client.send_sms(NUMBER, "Hi")
    assert_no_secret(info.value)
    assert "[redacted]" in info.value.message


# -- faults: the client never crashes, never re-sends ------------------------------------


SENDS = [
    ("send_sms", "/send-sms", (NUMBER, "Hi")),
    ("send_code", "/send-code", (NUMBER,)),
    ("bulk_sms", "/bulk-sms", ([NUMBER, "+12025550144"], "Hi")),
]


@pytest.mark.parametrize(("method", "path", "args"), SENDS, ids=[s[0] for s in SENDS])
@pytest.mark.parametrize("status", [500, 502, 503])
def test_5xx_is_raised_once_and_never_retried(
    tf_client, textflow_emulator, method, path, args, status
):
    textflow_emulator.fault("status", path=path, status=status, times=5)
    with pytest.raises(TextFlowServerError) as info:
        getattr(tf_client, method)(*args)
    assert info.value.status == status
    assert info.value.maybe_sent is True
    assert isinstance(info.value, TextFlowError)
    assert len(textflow_emulator.calls(path)) == 1
    assert_no_secret(info.value)


def test_429_carries_retry_after(tf_client, textflow_emulator):
    textflow_emulator.fault("rate_limit", retry_after=7)
    with pytest.raises(TextFlowRateLimited) as info:
        tf_client.send_sms(NUMBER, "Hi")
    assert info.value.status == 429
    assert info.value.retry_after == 7
    assert info.value.maybe_sent is False
    assert "retry after 7s" in str(info.value)
    assert len(textflow_emulator.calls("/send-sms")) == 1


@pytest.mark.parametrize("kind", ["rate_limit", "status"])
def test_429_retry_after_as_an_http_date(tf_client, textflow_emulator, kind):
    when = math.floor(time.time()) + 90  # an HTTP date has whole seconds
    textflow_emulator.fault(kind, status=429, retry_after=email.utils.formatdate(when, usegmt=True))
    before = time.time()
    with pytest.raises(TextFlowRateLimited) as info:
        tf_client.send_sms(NUMBER, "Hi")
    after = time.time()
    # The seconds left until that date, as of the moment the answer was read.
    assert int(when - after) <= info.value.retry_after <= int(when - before)
    assert f"retry after {info.value.retry_after}s" in str(info.value)
    [request] = textflow_emulator.calls("/send-sms")
    assert request.fault == kind


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (email.utils.formatdate(time.time() - 3600, usegmt=True), 0),
        ("Wed, 21 Oct 2015 07:28:00 GMT", 0),
        (" 120 ", 120),
        ("soon", None),
        ("-5", None),
    ],
    ids=["an-hour-ago", "rfc-example-in-the-past", "padded-seconds", "junk", "negative"],
)
def test_429_retry_after_odd_values(tf_client, textflow_emulator, header, expected):
    textflow_emulator.fault("rate_limit", retry_after=header)
    with pytest.raises(TextFlowRateLimited) as info:
        tf_client.send_sms(NUMBER, "Hi")
    assert info.value.retry_after == expected
    assert info.value.status == 429
    assert len(textflow_emulator.calls("/send-sms")) == 1


def test_html_502_is_unavailable_not_a_json_error(tf_client, textflow_emulator):
    textflow_emulator.fault("html", status=502)
    with pytest.raises(TextFlowServerError) as info:
        tf_client.send_sms(NUMBER, "Hi")
    assert info.value.status == 502
    assert info.value.message == "TextFlow is unavailable (HTTP 502 without a TextFlow answer)"
    assert info.value.maybe_sent is True
    assert "<html" not in str(info.value)


def test_html_200_is_a_bad_response(tf_client, textflow_emulator):
    textflow_emulator.fault("html", status=200)
    with pytest.raises(TextFlowBadResponse) as info:
        tf_client.send_sms(NUMBER, "Hi")
    assert info.value.maybe_sent is True


@pytest.mark.parametrize(
    ("kind", "status", "exc"),
    [
        ("empty", 200, TextFlowBadResponse),
        ("empty", 502, TextFlowServerError),
        ("malformed", None, TextFlowBadResponse),
    ],
)
def test_empty_and_malformed_bodies(tf_client, textflow_emulator, kind, status, exc):
    textflow_emulator.fault(kind, status=status)
    with pytest.raises(exc) as info:
        tf_client.send_sms(NUMBER, "Hi")
    assert info.value.maybe_sent is True
    assert len(textflow_emulator.calls("/send-sms")) == 1


def test_read_timeout_means_maybe_sent_and_no_second_send(client_for, textflow_emulator):
    client = client_for(timeout=0.3)
    textflow_emulator.fault("delay", delay=1.0)
    with pytest.raises(TextFlowTimeout) as info:
        client.send_sms(NUMBER, "Hi")
    assert info.value.maybe_sent is True
    # The emulator processed it (the SMS went out) and the client did not try again.
    assert len(textflow_emulator.calls("/send-sms")) == 1
    assert [m.text for m in textflow_emulator.messages] == ["Hi"]


def test_connection_reset_after_sending_is_maybe_sent(tf_client, textflow_emulator):
    textflow_emulator.fault("reset", path="/send-sms")
    with pytest.raises(TextFlowConnectionError) as info:
        tf_client.send_sms(NUMBER, "Hi")
    assert info.value.maybe_sent is True
    assert len(textflow_emulator.calls("/send-sms")) == 1


def test_a_trickled_answer_is_cut_at_the_timeout(client_for, textflow_emulator):
    client = client_for(timeout=0.5)
    textflow_emulator.fault("trickle", delay=0.05)  # ~200 bytes -> ~10 s in all
    with pytest.raises(TextFlowTimeout) as info:
        client.send_sms(NUMBER, "Hi")
    assert info.value.maybe_sent is True


def test_a_quick_trickle_still_succeeds(client_for, textflow_emulator):
    client = client_for(timeout=5)
    textflow_emulator.fault("trickle", delay=0.001)
    assert client.send_sms(NUMBER, "Hi").to == NUMBER


def test_refused_connection_is_not_sent():
    # A port nobody listens on: bind, read the port, close.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    client = TextFlowClient(EMULATOR_API_KEY, base_url=f"http://127.0.0.1:{port}/api", timeout=2)
    with pytest.raises(TextFlowConnectionError) as info:
        client.send_sms(NUMBER, "Hi")
    assert info.value.maybe_sent is False
    assert_no_secret(info.value)


def test_connect_failures_are_retried_before_anything_is_sent():
    """The retry policy: connection errors only, never reads or statuses."""
    retry = TextFlowClient(EMULATOR_API_KEY).session.get_adapter("https://x").max_retries
    assert retry.connect == CONNECT_RETRIES == 2
    assert retry.read == 0 and retry.status == 0 and retry.other == 0
    assert retry.is_retry("POST", 503) is False


@pytest.mark.parametrize(
    ("refusals", "delivered"),
    [(CONNECT_RETRIES, True), (CONNECT_RETRIES + 1, False)],
    ids=["refused-then-connected", "refused-every-time"],
)
def test_refused_connections_are_really_retried(
    textflow_emulator, monkeypatch, refusals, delivered, client_for
):
    """The first ``refusals`` connection attempts go to a loopback port where nothing
    listens, so the kernel really refuses them; later ones reach the emulator."""
    import urllib3.util.connection

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead = sock.getsockname()
    real = urllib3.util.connection.create_connection
    attempts: list[tuple[str, int]] = []

    def create_connection(address, *args, **kwargs):  # type: ignore[no-untyped-def]
        attempts.append(address)
        return real(dead if len(attempts) <= refusals else address, *args, **kwargs)

    monkeypatch.setattr(urllib3.util.connection, "create_connection", create_connection)
    client = client_for()
    port = textflow_emulator.port
    if delivered:
        assert client.send_sms(NUMBER, "Hi").to == NUMBER
        assert attempts == [("127.0.0.1", port)] * (CONNECT_RETRIES + 1)
        assert [r.json for r in textflow_emulator.calls("/send-sms")] == [
            {"phone_number": NUMBER, "text": "Hi"}
        ]
        assert textflow_emulator.connection_count == 1
    else:
        with pytest.raises(TextFlowConnectionError) as info:
            client.send_sms(NUMBER, "Hi")
        assert info.value.maybe_sent is False
        assert attempts == [("127.0.0.1", port)] * (CONNECT_RETRIES + 1)  # no 4th try
        assert textflow_emulator.requests == []
        assert textflow_emulator.connection_count == 0


# -- configuration ------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["", None])
def test_missing_key_is_a_configuration_error(key):
    with pytest.raises(ClientConfigurationError) as info:
        TextFlowClient(key)  # type: ignore[arg-type]
    # The client knows no Django: a ValueError (the backend makes it an ImproperlyConfigured),
    # and never a TextFlowError that a retry loop could swallow.
    assert isinstance(info.value, ValueError) and not isinstance(info.value, ImproperlyConfigured)
    assert not isinstance(info.value, TextFlowError)


@pytest.mark.parametrize(
    ("key", "says"),
    [
        (EMULATOR_API_KEY + "\n", "(U+000A at position 65 of 65): a trailing newline"),
        (EMULATOR_API_KEY + "\r\n", "(U+000D at position 65 of 66): a trailing newline"),
        (EMULATOR_API_KEY[:32] + " " + EMULATOR_API_KEY[32:], "(U+0020 at position 33 of 65)"),
        ("\t" + EMULATOR_API_KEY, "(U+0009 at position 1 of 65)"),
        (EMULATOR_API_KEY[:10] + "\x00" + EMULATOR_API_KEY[11:], "(U+0000 at position 11 of 64)"),
        (EMULATOR_API_KEY[:-1] + "\u200b", "(U+200B at position 64 of 64)"),
        (EMULATOR_API_KEY[:-1] + "é", "non-ASCII characters (at position 64 of 64)"),
        (EMULATOR_API_KEY + "€", "non-ASCII characters (at position 65 of 65)"),
    ],
    ids=[
        "trailing-newline",
        "trailing-crlf",
        "inner-space",
        "leading-tab",
        "nul",
        "zero-width-space",
        "latin-1",
        "non-latin-1",
    ],
)
def test_a_key_no_header_can_carry_is_refused_at_construction(textflow_emulator, key, says):
    with pytest.raises(ClientConfigurationError) as info:
        TextFlowClient(key, base_url=textflow_emulator.url)
    err = info.value
    assert isinstance(err, ValueError) and not isinstance(err, TextFlowError)
    assert str(err).startswith("The TextFlow API key contains ")
    assert says in str(err)
    assert_no_part_of_the_key(err)
    assert err.__cause__ is None and err.__context__ is None
    assert textflow_emulator.requests == []


def test_a_key_of_any_printable_ascii_is_sent_as_it_is(textflow_emulator, client_for):
    key = "".join(chr(c) for c in range(0x21, 0x7F))  # every printable ASCII but space
    client = client_for(api_key=key)
    with pytest.raises(InvalidAPIKey):  # not the emulator's key: refused by TextFlow
        client.send_sms(NUMBER, "Hi")
    [request] = textflow_emulator.calls("/send-sms")
    assert request.headers["authorization"] == f"Bearer {key}"


class _QuotingAdapter(HTTPAdapter):
    """Fails the way http.client refuses a header: with the header, key included, quoted in
    the error. The request never leaves."""

    def __init__(self, error: type[Exception]) -> None:
        super().__init__()
        self.error = error

    def send(self, request, **kwargs):  # type: ignore[no-untyped-def]
        raise self.error(f"Invalid header value {request.headers['Authorization']!r}")


@pytest.mark.parametrize(
    ("raised", "expected"),
    [
        (ValueError, ClientConfigurationError),
        (UnicodeError, ClientConfigurationError),
        (requests.ConnectionError, TextFlowConnectionError),
    ],
)
def test_an_error_quoting_the_key_while_sending_never_carries_it(
    textflow_emulator, raised, expected, client_for
):
    client = client_for()
    client.session.mount("http://", _QuotingAdapter(raised))
    with pytest.raises(expected) as info:
        client.send_sms(NUMBER, "Hi")
    err = info.value
    assert type(err) is expected
    assert err.__cause__ is None and err.__context__ is None
    assert_no_part_of_the_key(err)
    if expected is ClientConfigurationError:
        assert str(err) == (
            f"The request to TextFlow /send-sms could not be built or sent ({raised.__name__}: "
            "Invalid header value 'Bearer [redacted]')"
        )
    else:
        assert err.maybe_sent is True  # a transport error of unknown timing: maybe sent
    assert textflow_emulator.requests == []


@pytest.mark.parametrize("timeout", [0, -1, True, "5"])
def test_bad_timeout_is_a_configuration_error(timeout):
    with pytest.raises(ClientConfigurationError):
        TextFlowClient("k" * 64, timeout=timeout)  # type: ignore[arg-type]


def test_repr_hides_the_key():
    client = TextFlowClient("s3cr3t" * 10, base_url="http://127.0.0.1:1/api")
    assert "s3cr3t" not in repr(client)


def test_client_works_without_django_settings(textflow_emulator):
    script = textwrap.dedent(f"""
        import os, sys
        os.environ.pop("DJANGO_SETTINGS_MODULE", None)
        from textflow_django.client import TextFlowClient
        client = TextFlowClient({EMULATOR_API_KEY!r}, base_url={textflow_emulator.url!r})
        print(client.send_sms("+12025550143", "standalone").to)
        # Neither importing the client nor sending through it loads any part of Django.
        print(sorted(m for m in sys.modules if m == "django" or m.startswith("django.")))
        from django.conf import settings
        print(settings.configured)
    """)
    out = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        env={"PATH": "/usr/bin:/bin"},
    ).stdout.split()
    assert out == ["+12025550143", "[]", "False"]
    assert textflow_emulator.messages[-1].text == "standalone"


def test_environment_proxies_are_read_once_at_construction(monkeypatch):
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.invalid:3128")
    monkeypatch.setenv("NO_PROXY", "")
    client = TextFlowClient(EMULATOR_API_KEY, base_url="https://textflow.me/api")
    assert client.session.proxies.get("https") == "http://proxy.invalid:3128"
    assert client.session.trust_env is False


# -- HTTPS (TextFlow's real API is HTTPS-only) --------------------------------------------


@pytest.fixture
def tls_emulator(tmp_path):  # type: ignore[no-untyped-def]
    """The emulator serving HTTPS with a certificate from a throw-away CA; yields it and the
    CA bundle's path."""
    import ssl

    import trustme

    from textflow_django.testing import TextFlowEmulator

    ca = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    bundle = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(bundle))
    with TextFlowEmulator(ssl_context=context) as emulator:
        yield emulator, str(bundle)


def test_https_with_a_trusted_certificate_works_and_pools(tls_emulator, monkeypatch):
    emulator, bundle = tls_emulator
    assert emulator.url.startswith("https://")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", bundle)  # read once, when the client is made
    client = TextFlowClient(EMULATOR_API_KEY, base_url=emulator.url, timeout=5)
    for _ in range(3):
        assert client.send_sms(NUMBER, "Hi").to == NUMBER
    assert [r.json for r in emulator.calls("/send-sms")] == [
        {"phone_number": NUMBER, "text": "Hi"}
    ] * 3
    assert emulator.connection_count == 1


def test_https_with_an_untrusted_certificate_sends_nothing(tls_emulator, monkeypatch):
    emulator, _bundle = tls_emulator
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    client = TextFlowClient(EMULATOR_API_KEY, base_url=emulator.url, timeout=5)
    with pytest.raises(TextFlowConnectionError) as info:
        client.send_sms(NUMBER, "Hi")
    assert "certificate" in repr(info.value.__cause__).lower()
    assert_no_secret(info.value)
    assert emulator.calls("/send-sms") == []  # verification is on: the request never left


def test_tls_settings_changed_on_the_session_take_effect(tls_emulator, monkeypatch):
    emulator, bundle = tls_emulator
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    client = TextFlowClient(EMULATOR_API_KEY, base_url=emulator.url, timeout=5)
    with pytest.raises(TextFlowConnectionError):
        client.send_sms(NUMBER, "Hi")
    client.session.verify = bundle  # the pool made for the old settings is not reused
    assert client.send_sms(NUMBER, "Hi").to == NUMBER
    assert len(emulator.calls("/send-sms")) == 1


def test_a_closed_client_reconnects_on_its_next_call(tf_client, textflow_emulator):
    tf_client.send_sms(NUMBER, "one")
    tf_client.close()
    tf_client.send_sms(NUMBER, "two")
    assert [r.json["text"] for r in textflow_emulator.calls("/send-sms")] == ["one", "two"]
    assert textflow_emulator.connection_count == 2


# -- lenient readers of TextFlow's JSON --------------------------------------------------


def _answer(**data: object) -> str:
    return json.dumps({"ok": True, "status": 200, "message": "Message sent successfully", **data})


@pytest.mark.parametrize(
    "timestamp",
    # json.loads reads Infinity as a float: fromtimestamp overflows; 1e300 ms is past year
    # 9999; so is -1e20 ms before year 1.
    ["Infinity", "1e300", "-1e20"],
)
def test_a_timestamp_no_date_can_hold_is_none(tf_client, textflow_emulator, timestamp):
    body = (
        '{"ok": true, "status": 200, "message": "Message sent successfully", "data": '
        f'{{"to": "{NUMBER}", "content": "Hi", "price": 0.05, "timestamp": {timestamp}}}}}'
    )
    textflow_emulator.fault("respond", path="/send-sms", body=body)

    result = tf_client.send_sms(NUMBER, "Hi")

    assert result.timestamp is None
    assert (result.to, result.price) == (NUMBER, 0.05)  # the rest of the answer is kept
    [request] = textflow_emulator.calls("/send-sms")
    assert request.fault == "respond"


@pytest.mark.parametrize(
    ("count", "accepted"),
    [(42, 42), (42.0, 42), ("42", 42), (" 7 ", 7), (True, None), (4.5, None), ("many", None)],
    ids=["int", "whole-float", "digits", "padded-digits", "bool", "fraction", "words"],
)
def test_bulk_sms_reads_its_count_leniently(tf_client, textflow_emulator, count, accepted):
    body = _answer(data={"count": count})
    textflow_emulator.fault("respond", path="/bulk-sms", body=body)
    result = tf_client.bulk_sms([NUMBER], "Sale")
    assert result.accepted == accepted
    assert result.submitted == 1


@pytest.mark.parametrize(
    ("count", "expected"),
    [(3.0, 3), ("12", 12)],
    ids=["whole-float", "digits"],
)
def test_bulk_count_read_from_a_string_or_a_whole_float(
    tf_client, textflow_emulator, count, expected
):
    textflow_emulator.fault("respond", path="/bulk-count", body=_answer(data={"count": count}))
    assert tf_client.bulk_count().count == expected


def test_a_boolean_bulk_count_is_not_a_count(tf_client, textflow_emulator):
    # true is an int to Python; as a count it is nonsense, so the answer has no count.
    body = _answer(data={"count": True}, count=False)
    textflow_emulator.fault("respond", path="/bulk-count", body=body)
    with pytest.raises(TextFlowBadResponse) as info:
        tf_client.bulk_count()
    assert info.value.message == "TextFlow's answer has no 'count'"
    assert (info.value.status, info.value.path) == (200, "/bulk-count")


@pytest.mark.parametrize("credits", ['"lots"', "null", "[1]"], ids=["words", "null", "a-list"])
def test_balance_without_decimal_credits_is_a_bad_response(tf_client, textflow_emulator, credits):
    body = f'{{"ok": true, "credits": {credits}, "packages": {{"UK": 500}}}}'
    textflow_emulator.fault("respond", path="/balance", body=body)
    with pytest.raises(TextFlowBadResponse) as info:
        tf_client.balance()
    assert info.value.message == "TextFlow's answer has no decimal 'credits'"
    assert (info.value.status, info.value.path) == (200, "/balance")
    assert info.value.__cause__ is None  # `from None`: the decimal module's error says nothing


def test_a_429_without_retry_after_has_no_wait(tf_client, textflow_emulator):
    textflow_emulator.fault("status", path="/send-sms", status=429)  # no Retry-After header
    with pytest.raises(TextFlowRateLimited) as info:
        tf_client.send_sms(NUMBER, "Hi")
    assert info.value.retry_after is None
    assert info.value.status == 429
    assert "retry after" not in str(info.value)
    assert "retry-after" not in textflow_emulator.calls("/send-sms")[0].headers


def test_a_retry_after_date_without_a_zone_is_read_as_utc(tf_client, textflow_emulator):
    # RFC 5322's "-0000" zone: parsedate_to_datetime gives a naive datetime, taken as UTC.
    when = math.floor(time.time()) + 90
    header = email.utils.formatdate(when, usegmt=True).replace("GMT", "-0000")
    textflow_emulator.fault("rate_limit", retry_after=header)
    before = time.time()
    with pytest.raises(TextFlowRateLimited) as info:
        tf_client.send_sms(NUMBER, "Hi")
    after = time.time()
    assert int(when - after) <= info.value.retry_after <= int(when - before)


# -- the transport: how a failure is classified, and reading the answer --------------------


def _dead_port() -> int:
    """A loopback port nobody listens on: bind, read the port, close."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_a_refused_connection_through_a_session_passed_in_is_not_sent(client_for):
    # requests wraps urllib3's MaxRetryError(NewConnectionError) in a ConnectionError: the
    # client looks inside, so the failure is still known to have happened before sending.
    client = client_for(base_url=f"http://127.0.0.1:{_dead_port()}/api", session=requests.Session())
    with pytest.raises(TextFlowConnectionError) as info:
        client.send_sms(NUMBER, "Hi")
    assert info.value.maybe_sent is False
    assert info.value.message == "could not connect"
    assert_no_secret(info.value)


@pytest.fixture
def unanswered_port() -> Iterator[int]:
    """A loopback port whose listen queue is full, so a new connection is never accepted:
    the kernel drops its SYNs and the client's connect times out. The queue is full once a
    connection attempt to it times out itself."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = int(listener.getsockname()[1])
    queued: list[socket.socket] = []
    try:
        for _ in range(16):
            sock = socket.socket()
            sock.settimeout(0.05)
            queued.append(sock)
            try:
                sock.connect(("127.0.0.1", port))
            except TimeoutError:
                break
        else:
            pytest.fail("the listen queue never filled up")
        yield port
    finally:
        for sock in queued:
            sock.close()
        listener.close()


@pytest.mark.parametrize("own_session", [True, False], ids=["own-session", "session-passed-in"])
def test_a_connect_timeout_is_not_sent(unanswered_port, own_session):
    session = None if own_session else requests.Session()
    client = TextFlowClient(
        EMULATOR_API_KEY,
        base_url=f"http://127.0.0.1:{unanswered_port}/api",
        timeout=0.05,
        session=session,
    )
    try:
        with pytest.raises(TextFlowTimeout) as info:
            client.send_sms(NUMBER, "Hi")
    finally:
        client.close()
    assert info.value.maybe_sent is False  # no connection: the request never left
    assert info.value.message == "no answer within 0.05s"
    assert (info.value.status, info.value.path) == (None, "/send-sms")


class _JumpingClock:
    """Stands in for the ``time`` module of the client's modules: each ``monotonic()``
    returns ``now``, then moves ``now`` on by the next of ``jumps`` (if any is left)."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.jumps: list[float] = []

    def monotonic(self) -> float:
        now = self.now
        if self.jumps:
            self.now += self.jumps.pop(0)
        return now


def test_reading_gives_up_at_the_deadline_though_more_would_come(
    client_for, textflow_emulator, monkeypatch
):
    """The deadline is checked between reads: once it has passed (here the clock jumps a
    minute while the first part of the answer is read), the call ends as a timeout rather
    than waiting for the rest, and the half-read connection is not reused."""
    from textflow_django.client import _client, _transport

    clock = _JumpingClock()
    monkeypatch.setattr(_client, "time", clock)
    monkeypatch.setattr(_transport, "time", clock)
    client = client_for(timeout=5)
    # Read by the client (the deadline: 1005), then by the transport before its first read
    # (1000, then the clock jumps to 1060), then before its second read (1060: past).
    clock.jumps = [0.0, 60.0]
    textflow_emulator.fault("trickle", path="/send-sms", delay=0.001)

    with pytest.raises(TextFlowTimeout) as info:
        client.send_sms(NUMBER, "Hi")

    err = info.value
    assert err.message == "the answer did not arrive within 5s"
    assert (err.status, err.path, err.maybe_sent) == (200, "/send-sms", True)
    assert [m.text for m in textflow_emulator.messages] == ["Hi"]  # it did go out
    clock.jumps = []
    client.send_sms(NUMBER, "again")  # the cut answer's connection was dropped, not reused
    assert textflow_emulator.connection_count == 2


def test_an_answer_larger_than_textflow_sends_is_refused(tf_client, textflow_emulator):
    body = _answer(data={"to": NUMBER, "content": "x" * 2 * MAX_RESPONSE_BYTES})
    textflow_emulator.fault("respond", path="/send-sms", body=body)
    with pytest.raises(TextFlowBadResponse) as info:
        tf_client.send_sms(NUMBER, "Hi")
    err = info.value
    assert err.message == "the answer is too large to be TextFlow's"
    assert (err.status, err.path, err.maybe_sent) == (200, "/send-sms", True)
    # Half of the answer is left unread on that connection: it is dropped, not reused.
    assert tf_client.send_sms(NUMBER, "again").to == NUMBER
    assert textflow_emulator.connection_count == 2


def test_an_answer_of_exactly_the_limit_is_read(tf_client, textflow_emulator):
    body = _answer(data={"to": NUMBER, "content": ""})
    body = body[:-1] + " " * (MAX_RESPONSE_BYTES - len(body)) + "}"
    assert len(body) == MAX_RESPONSE_BYTES
    textflow_emulator.fault("respond", path="/send-sms", body=body)
    assert tf_client.send_sms(NUMBER, "Hi").to == NUMBER


def test_a_connection_broken_mid_answer_is_maybe_sent(monkeypatch):
    """The emulator goes away after TextFlow's head arrived, while its body trickles in:
    the client knows the request reached TextFlow (it answered), so ``maybe_sent``."""
    from textflow_django.client import _transport
    from textflow_django.testing import TextFlowEmulator

    with TextFlowEmulator() as emulator:
        client = TextFlowClient(EMULATOR_API_KEY, base_url=emulator.url, timeout=10)
        emulator.fault("trickle", path="/send-sms", delay=1.0)

        class BreakWhenReadingStarts:
            """The transport reads the clock once the head is in, before each read of the
            body: the first reading is the moment to take the server down."""

            def monotonic(self) -> float:
                if not stopped:
                    stopped.append(True)
                    emulator.stop()
                return time.monotonic()

        stopped: list[bool] = []
        monkeypatch.setattr(_transport, "time", BreakWhenReadingStarts())
        with pytest.raises(TextFlowConnectionError) as info:
            client.send_sms(NUMBER, "Hi")
        client.close()
    err = info.value
    assert stopped == [True]
    assert err.message == "the connection broke while TextFlow answered"
    assert (err.status, err.path, err.maybe_sent) == (200, "/send-sms", True)
    assert [m.text for m in emulator.messages] == ["Hi"]  # TextFlow had acted on it
    assert_no_secret(err)


class _BufferingAdapter(HTTPAdapter):
    """Reads the whole answer inside the adapter and hands back an in-memory copy of it, as
    caching adapters (requests-cache, CacheControl) do: the raw answer has no socket."""

    def send(self, request, **kwargs):  # type: ignore[no-untyped-def]
        import io

        from urllib3 import HTTPResponse

        response = super().send(request, **kwargs)
        body = response.raw.read()
        response.raw = HTTPResponse(
            body=io.BytesIO(body),
            status=response.status_code,
            headers=dict(response.headers),
            preload_content=False,
        )
        return response


def test_an_answer_without_a_socket_is_read(textflow_emulator, client_for):
    client = client_for()
    client.session.mount("http://", _BufferingAdapter())
    result = client.send_sms(NUMBER, "Hi")
    assert (result.to, result.content) == (NUMBER, "Hi")
    assert result.timestamp is not None
    [request] = textflow_emulator.calls("/send-sms")
    assert request.json == {"phone_number": NUMBER, "text": "Hi"}


# -- the client as a context manager, and what its breaker is told ---------------------------


def test_the_client_is_a_context_manager_that_closes_its_connections(textflow_emulator):
    with TextFlowClient(EMULATOR_API_KEY, base_url=textflow_emulator.url, timeout=5) as client:
        assert isinstance(client, TextFlowClient)
        client.send_sms(NUMBER, "one")
    client.send_sms(NUMBER, "two")  # closed on exit: the next call opens a new connection
    client.close()
    assert [r.json["text"] for r in textflow_emulator.calls("/send-sms")] == ["one", "two"]
    assert textflow_emulator.connection_count == 2


def test_the_context_manager_closes_on_an_error_too(textflow_emulator):
    with pytest.raises(TextFlowServerError):
        with TextFlowClient(EMULATOR_API_KEY, base_url=textflow_emulator.url) as client:
            client.send_sms(NUMBER, "one")
            textflow_emulator.fault("status", path="/send-sms", status=500)
            client.send_sms(NUMBER, "two")
    client.send_sms(NUMBER, "three")
    client.close()
    assert textflow_emulator.connection_count == 2


@pytest.mark.parametrize("raised", [RuntimeError, KeyboardInterrupt])
def test_a_failure_of_the_callers_own_code_is_raised_as_is_and_tells_the_breaker_nothing(
    textflow_emulator, client_for, raised
):
    """A response hook of the caller's session raises (a bug of its own, or Ctrl-C): the
    error reaches the caller unchanged, the breaker's trial slot is freed, and the breaker
    counts neither a success nor a failure."""
    now = [0.0]
    breaker = CircuitBreaker(threshold=1, reset_after=30, clock=lambda: now[0])
    session = requests.Session()
    calls = [0]

    def hook(response, **kwargs):  # type: ignore[no-untyped-def]
        calls[0] += 1
        if calls[0] == 2:
            raise raised("the caller's hook failed")

    session.hooks["response"].append(hook)
    client = client_for(session=session, breaker=breaker)
    textflow_emulator.fault("status", path="/send-sms", status=503)
    with pytest.raises(TextFlowServerError):
        client.send_sms(NUMBER, "down")
    assert breaker.state == "open"
    now[0] = 30.0  # half-open: one trial call may go

    with pytest.raises(raised, match="the caller's hook failed") as info:
        client.send_sms(NUMBER, "trial")

    assert type(info.value) is raised  # not wrapped in a TextFlowError
    assert breaker.state == "half-open"  # neither closed (success) nor open again (failure)
    assert breaker.allow() is None  # the trial slot was given back
    breaker.release()
    client.send_sms(NUMBER, "next trial")  # the hook lets this one through
    assert breaker.state == "closed"
    assert [r.json["text"] for r in textflow_emulator.calls("/send-sms")] == [
        "down",
        "trial",
        "next trial",
    ]
