"""Tests of the TextFlow emulator itself, over real sockets with plain ``requests``.

No Django here: the emulator must work in any pytest session and in a subprocess.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from textflow_django.testing._emulator import (
    EMULATOR_API_KEY,
    Fault,
    RecordedRequest,
    SentSMS,
    TextFlowEmulator,
)

NUMBER = "+381690156360"
OTHER = "+447700900123"
AUTH = {"Authorization": f"Bearer {EMULATOR_API_KEY}"}


@pytest.fixture
def emu() -> Iterator[TextFlowEmulator]:
    with TextFlowEmulator() as emulator:
        yield emulator


@pytest.fixture
def api() -> Iterator[requests.Session]:
    with requests.Session() as session:
        session.headers.update(AUTH)
        yield session


def post(
    session: requests.Session, emu: TextFlowEmulator, path: str, payload: Any = None, **kw: Any
) -> requests.Response:
    kw.setdefault("timeout", 5)
    return session.post(emu.url + path, json=payload, **kw)


def now_ms() -> int:
    return int(time.time() * 1000)


# -- the TextFlow endpoints ---------------------------------------------------------------


def test_key_is_64_alphanumerics() -> None:
    assert len(EMULATOR_API_KEY) == 64
    assert EMULATOR_API_KEY.isalnum()


def test_send_sms_success_shape(emu: TextFlowEmulator, api: requests.Session) -> None:
    before = now_ms()
    r = post(api, emu, "/send-sms", {"phone_number": NUMBER, "text": "Hello"})
    assert r.status_code == 200
    assert r.headers["Content-Type"] == "application/json"
    body = r.json()
    assert set(body) == {"ok", "status", "message", "data"}
    assert body["ok"] is True and body["status"] == 200
    assert body["message"] == "Message sent successfully"
    data = body["data"]
    assert data["to"] == NUMBER
    assert data["content"] == "Hello"
    assert data["country_code"] == "Serbia"
    assert isinstance(data["price"], float) and data["price"] == 0.05
    assert isinstance(data["timestamp"], int)
    assert before - 5 <= data["timestamp"] <= now_ms() + 5
    assert emu.messages == [SentSMS(NUMBER, "Hello", "sms")]
    assert emu.message_count == 1
    assert emu.credits == pytest.approx(999.95)


@pytest.mark.parametrize(
    ("number", "country"),
    [
        ("+12025550123", "United States"),
        ("+447700900123", "United Kingdom"),
        ("+33612345678", "France"),
        ("+4915112345678", "Germany"),
        ("+919812345678", "India"),
        ("+61412345678", "Australia"),
        ("+34612345678", "Spain"),
        ("+393123456789", "Italy"),
        ("+79123456789", "Russia"),
        ("+8881234567", "Unknown"),
    ],
)
def test_send_sms_country_name(
    emu: TextFlowEmulator, api: requests.Session, number: str, country: str
) -> None:
    r = post(api, emu, "/send-sms", {"phone_number": number, "text": "x"})
    assert r.json()["data"]["country_code"] == country


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer " + "x" * 64},
        {"Authorization": EMULATOR_API_KEY},
        {"Authorization": f"Basic {EMULATOR_API_KEY}"},
    ],
)
def test_bad_auth_is_400_invalid_api_key(emu: TextFlowEmulator, headers: dict[str, str]) -> None:
    r = requests.post(
        emu.url + "/send-sms",
        json={"phone_number": NUMBER, "text": "x"},
        headers=headers,
        timeout=5,
    )
    assert r.status_code == 400
    assert r.json() == {"ok": False, "status": 400, "message": "Invalid API key"}
    assert emu.messages == []
    assert [c.path for c in emu.requests] == ["/send-sms"]  # rejected requests are recorded


def test_custom_key(api: requests.Session) -> None:
    with TextFlowEmulator(api_key="k" * 64) as emu:
        assert post(api, emu, "/balance").status_code == 405  # routing before auth
        r = api.get(emu.url + "/balance", timeout=5)
        assert r.status_code == 400
        r = requests.get(
            emu.url + "/balance", headers={"Authorization": "Bearer " + "k" * 64}, timeout=5
        )
        assert r.status_code == 200


@pytest.mark.parametrize(
    "payload",
    [
        {"phone_number": "12025550123", "text": "x"},
        {"phone_number": "+0123456789", "text": "x"},
        {"phone_number": "+1 202 555 0123", "text": "x"},
        {"phone_number": "+12345", "text": "x"},
        {"phone_number": "+1234567890123456", "text": "x"},
        {"phone_number": "+12025550123\n", "text": "x"},
        {"phone_number": 12025550123, "text": "x"},
        {"text": "x"},
    ],
)
def test_invalid_number(emu: TextFlowEmulator, api: requests.Session, payload: Any) -> None:
    r = post(api, emu, "/send-sms", payload)
    assert r.status_code == 400
    assert r.json() == {"ok": False, "status": 400, "message": "Phone number is invalid"}
    assert emu.messages == []
    assert emu.credits == 1000.0


@pytest.mark.parametrize(
    "payload", [{"phone_number": NUMBER}, {"phone_number": NUMBER, "text": ""}]
)
def test_missing_text(emu: TextFlowEmulator, api: requests.Session, payload: Any) -> None:
    r = post(api, emu, "/send-sms", payload)
    assert (r.status_code, r.json()["message"]) == (400, "Text is required")


@pytest.mark.parametrize("raw", [b"not json", b"[1, 2]", b"", b'"str"'])
def test_body_not_a_json_object(emu: TextFlowEmulator, api: requests.Session, raw: bytes) -> None:
    r = api.post(emu.url + "/send-sms", data=raw, timeout=5)
    assert r.status_code == 400
    assert r.json() == {"ok": False, "status": 400, "message": "Invalid request body"}


def test_insufficient_balance(api: requests.Session) -> None:
    with TextFlowEmulator(credits=0.1, price=0.05) as emu:
        for _ in range(2):
            assert post(api, emu, "/send-sms", {"phone_number": NUMBER, "text": "x"}).ok
        r = post(api, emu, "/send-sms", {"phone_number": NUMBER, "text": "x"})
        assert r.status_code == 400
        assert r.json() == {"ok": False, "status": 400, "message": "Insufficient balance"}
        assert emu.message_count == 2
        assert api.get(emu.url + "/balance", timeout=5).json()["credits"] == "0.00000"


def test_unknown_path_and_wrong_method(emu: TextFlowEmulator, api: requests.Session) -> None:
    r = post(api, emu, "/nope", {})
    assert r.status_code == 404
    assert r.json() == {"ok": False, "status": 404, "message": "Not found"}
    r = api.get(emu.url + "/send-sms", timeout=5)
    assert r.status_code == 405
    assert r.headers["Content-Type"] == "application/json"
    assert r.json()["status"] == 405 and r.json()["ok"] is False
    assert post(api, emu, "/balance").status_code == 405


def test_send_code_shape_and_text(emu: TextFlowEmulator, api: requests.Session) -> None:
    before = now_ms()
    r = post(api, emu, "/send-code", {"phone_number": NUMBER, "service_name": "Guest"})
    assert r.status_code == 200
    body = r.json()
    assert (body["ok"], body["status"]) == (True, 200)
    data = body["data"]
    code = data["verification_code"]
    assert isinstance(code, str) and re.fullmatch(r"[0-9]{4}", code)
    assert isinstance(data["expires"], int)
    assert before + 600_000 - 5 <= data["expires"] <= now_ms() + 600_000 + 5
    assert data["message_text"] == f"Your verification code for Guest is: {code}"
    assert emu.last_code(NUMBER) == code
    assert emu.messages == [SentSMS(NUMBER, data["message_text"], "code")]

    r = post(api, emu, "/send-code", {"phone_number": OTHER, "seconds": 60})
    data = r.json()["data"]
    assert data["message_text"] == f"Your verification code is: {data['verification_code']}"
    assert data["expires"] <= now_ms() + 60_000 + 5


def test_code_length(api: requests.Session) -> None:
    with TextFlowEmulator(code_length=6) as emu:
        code = post(api, emu, "/send-code", {"phone_number": NUMBER}).json()["data"]
        assert re.fullmatch(r"[0-9]{6}", code["verification_code"])


@pytest.mark.parametrize("seconds", [0, 86_401, "600", True, 1.5, -1])
def test_send_code_invalid_seconds(
    emu: TextFlowEmulator, api: requests.Session, seconds: Any
) -> None:
    r = post(api, emu, "/send-code", {"phone_number": NUMBER, "seconds": seconds})
    assert r.status_code == 400
    assert r.json() == {"ok": False, "status": 400, "message": "Invalid seconds"}
    assert emu.last_code(NUMBER) is None


def verify(api: requests.Session, emu: TextFlowEmulator, number: str, code: str) -> Any:
    r = post(api, emu, "/verify-code", {"phone_number": number, "code": code})
    assert r.status_code == 200
    return r.json()


def test_verify_valid_and_invalid(emu: TextFlowEmulator, api: requests.Session) -> None:
    data = post(api, emu, "/send-code", {"phone_number": NUMBER}).json()["data"]
    code = data["verification_code"]
    assert verify(api, emu, NUMBER, code) == {
        "ok": True,
        "status": 200,
        "message": "Code is valid",
        "valid": True,
        "valid_code": code,
        "expires": data["expires"],
    }
    # Not consumed by a successful check.
    assert verify(api, emu, NUMBER, code)["valid"] is True
    wrong = f"{(int(code) + 1) % 10_000:04d}"
    not_valid = {"ok": True, "status": 200, "message": "Code is not valid", "valid": False}
    assert verify(api, emu, NUMBER, wrong) == not_valid
    assert verify(api, emu, OTHER, code) == not_valid  # no code issued to that number
    assert verify(api, emu, NUMBER, "") == not_valid


def test_new_code_replaces_old(api: requests.Session) -> None:
    with TextFlowEmulator(code_length=8) as emu:  # 8 digits: two equal codes ~never
        first = post(api, emu, "/send-code", {"phone_number": NUMBER}).json()["data"]
        second = post(api, emu, "/send-code", {"phone_number": NUMBER}).json()["data"]
        assert first["verification_code"] != second["verification_code"]
        assert verify(api, emu, NUMBER, first["verification_code"])["valid"] is False
        assert verify(api, emu, NUMBER, second["verification_code"])["valid"] is True
        assert emu.last_code(NUMBER) == second["verification_code"]


def test_code_expiry_with_advance_clock(emu: TextFlowEmulator, api: requests.Session) -> None:
    code = post(api, emu, "/send-code", {"phone_number": NUMBER, "seconds": 60}).json()["data"]
    emu.advance_clock(59)
    assert verify(api, emu, NUMBER, code["verification_code"])["valid"] is True
    emu.advance_clock(2)
    assert verify(api, emu, NUMBER, code["verification_code"])["valid"] is False
    assert emu.last_code(NUMBER) is None


def test_bulk_sms_pending_and_deliver(emu: TextFlowEmulator, api: requests.Session) -> None:
    numbers = [f"+1202555{i:04d}" for i in range(5)]
    r = post(api, emu, "/bulk-sms", {"phone_numbers": numbers, "text": "Sale"})
    assert r.status_code == 200
    assert r.json() == {
        "ok": True,
        "status": 200,
        "message": "Bulk SMS job started",
        "data": {"count": 5},
    }
    assert emu.messages == [SentSMS(n, "Sale", "bulk") for n in numbers]
    assert emu.bulk_pending == 5
    assert emu.credits == pytest.approx(1000 - 5 * 0.05)

    def count() -> Any:
        r = api.post(emu.url + "/bulk-count", timeout=5)  # no body at all
        assert r.status_code == 200
        body = r.json()
        assert (body["ok"], body["status"], type(body["message"])) == (True, 200, str)
        return body["data"]["count"]

    assert count() == 5
    emu.deliver_bulk(2)
    assert emu.bulk_pending == 3 and count() == 3
    emu.deliver_bulk(100)  # clamps
    assert count() == 0
    post(api, emu, "/bulk-sms", {"phone_numbers": numbers, "text": "Sale"})
    emu.deliver_bulk()
    assert count() == 0


def test_bulk_sms_rejects_whole_batch(emu: TextFlowEmulator, api: requests.Session) -> None:
    r = post(api, emu, "/bulk-sms", {"phone_numbers": [NUMBER, "+1 bad", OTHER], "text": "x"})
    assert r.status_code == 400
    assert r.json() == {"ok": False, "status": 400, "message": "Phone number is invalid"}
    r = post(api, emu, "/bulk-sms", {"phone_numbers": [], "text": "x"})
    assert r.status_code == 400 and r.json()["ok"] is False
    r = post(api, emu, "/bulk-sms", {"phone_numbers": [NUMBER]})
    assert (r.status_code, r.json()["message"]) == (400, "Text is required")
    assert emu.messages == [] and emu.bulk_pending == 0 and emu.credits == 1000.0


def test_balance_shape(emu: TextFlowEmulator, api: requests.Session) -> None:
    r = api.get(emu.url + "/balance", timeout=5)
    assert r.status_code == 200
    assert r.json() == {
        "ok": True,
        "credits": "1000.00000",
        "packages": {"USA Canada": 2100, "UK": 500},
    }
    post(api, emu, "/send-sms", {"phone_number": NUMBER, "text": "x"})
    assert api.get(emu.url + "/balance", timeout=5).json()["credits"] == "999.95000"
    r = requests.get(emu.url + "/balance", timeout=5)
    assert r.status_code == 400 and r.json()["message"] == "Invalid API key"


def test_recorded_request_fields(emu: TextFlowEmulator, api: requests.Session) -> None:
    post(api, emu, "/send-sms/", {"phone_number": NUMBER, "text": "x"}, headers={"X-Trace": "1"})
    api.get(emu.url + "/balance?foo=bar", timeout=5)
    first, second = emu.requests
    assert first.method == "POST" and first.path == "/send-sms"
    assert first.headers["authorization"] == f"Bearer {EMULATOR_API_KEY}"
    assert first.headers["x-trace"] == "1"
    assert json.loads(first.body) == {"phone_number": NUMBER, "text": "x"}
    assert first.json == {"phone_number": NUMBER, "text": "x"}
    assert first.fault is None
    assert (second.method, second.path, second.body, second.json) == ("GET", "/balance", b"", None)
    assert emu.calls("/send-sms") == [first]
    assert emu.calls("send-sms") == [first]
    assert EMULATOR_API_KEY not in repr(first)
    assert isinstance(first, RecordedRequest)


def test_chunked_request_body(emu: TextFlowEmulator, api: requests.Session) -> None:
    payload = json.dumps({"phone_number": NUMBER, "text": "chunked"}).encode()
    r = api.post(emu.url + "/send-sms", data=iter([payload[:10], payload[10:]]), timeout=5)
    assert r.status_code == 200, r.text
    assert emu.messages == [SentSMS(NUMBER, "chunked", "sms")]
    assert "chunked" in emu.requests[0].headers["transfer-encoding"]


# -- faults -------------------------------------------------------------------------------

SMS = {"phone_number": NUMBER, "text": "x"}


@pytest.mark.parametrize(
    ("status", "message"),
    [(None, "Internal server error"), (503, "Internal server error"), (429, "Too many requests")],
)
def test_fault_status(
    emu: TextFlowEmulator, api: requests.Session, status: int | None, message: str
) -> None:
    emu.fault("status", status=status)
    r = post(api, emu, "/send-sms", SMS)
    expected = status or 500
    assert r.status_code == expected
    assert r.headers["Content-Type"] == "application/json"
    assert r.json() == {"ok": False, "status": expected, "message": message}
    assert emu.messages == []
    assert emu.requests[0].fault == "status"
    assert post(api, emu, "/send-sms", SMS).status_code == 200  # times=1: used up


def test_fault_rate_limit(emu: TextFlowEmulator, api: requests.Session) -> None:
    emu.fault("rate_limit", retry_after=7)
    emu.fault("rate_limit")
    r = post(api, emu, "/send-sms", SMS)
    assert r.status_code == 429 and r.headers["Retry-After"] == "7"
    assert r.json() == {"ok": False, "status": 429, "message": "Too many requests"}
    assert post(api, emu, "/send-sms", SMS).headers["Retry-After"] == "1"
    assert emu.messages == []


def test_fault_retry_after_str_is_sent_verbatim(
    emu: TextFlowEmulator, api: requests.Session
) -> None:
    date = "Wed, 21 Oct 2015 07:28:00 GMT"
    emu.fault("rate_limit", retry_after=date)
    emu.fault("status", status=503, retry_after="soon")
    r = post(api, emu, "/send-sms", SMS)
    assert (r.status_code, r.headers["Retry-After"]) == (429, date)
    r = post(api, emu, "/send-sms", SMS)
    assert (r.status_code, r.headers["Retry-After"]) == (503, "soon")
    assert r.json() == {"ok": False, "status": 503, "message": "Internal server error"}
    assert [f.fault for f in emu.requests] == ["rate_limit", "status"]
    assert emu.messages == []
    # Through the control endpoint too, as a separately-run emulator is steered.
    control = emu.url.removesuffix("/api") + "/_emulator/fault"
    assert (
        requests.post(
            control, json={"kind": "rate_limit", "retry_after": date}, timeout=5
        ).status_code
        == 200
    )
    assert post(api, emu, "/send-sms", SMS).headers["Retry-After"] == date


@pytest.mark.parametrize("value", ["", "1\r\nX-Injected: yes", "demain\u00e0", -1, 1.5, True])
def test_fault_rejects_a_bad_retry_after(emu: TextFlowEmulator, value: Any) -> None:
    with pytest.raises(ValueError, match="retry_after"):
        emu.fault("rate_limit", retry_after=value)
    assert emu.pending_faults == []


def test_fault_html(emu: TextFlowEmulator, api: requests.Session) -> None:
    emu.fault("html")
    r = post(api, emu, "/send-sms", SMS)
    assert r.status_code == 502
    assert r.headers["Content-Type"] == "text/html"
    assert r.text == "<html><body><h1>502 Bad Gateway</h1></body></html>"
    emu.fault(Fault.HTML, status=503)
    assert post(api, emu, "/send-sms", SMS).status_code == 503
    assert emu.messages == []


def test_fault_empty(emu: TextFlowEmulator, api: requests.Session) -> None:
    emu.fault("empty")
    r = post(api, emu, "/send-sms", SMS)
    assert r.status_code == 200
    assert r.headers["Content-Length"] == "0" and r.content == b""
    emu.fault("empty", status=502)
    assert post(api, emu, "/send-sms", SMS).status_code == 502
    assert emu.messages == []


def test_fault_malformed(emu: TextFlowEmulator, api: requests.Session) -> None:
    emu.fault("malformed")
    r = post(api, emu, "/send-sms", SMS)
    assert r.status_code == 200
    assert r.headers["Content-Type"] == "application/json"
    assert r.content.startswith(b'{"ok": true')
    with pytest.raises(ValueError):
        json.loads(r.content)
    assert emu.messages == []


def test_fault_delay_processes_then_answers_late(
    emu: TextFlowEmulator, api: requests.Session
) -> None:
    emu.fault("delay", delay=0.6)
    with pytest.raises(requests.ReadTimeout):
        post(api, emu, "/send-sms", SMS, timeout=0.2)
    # The SMS went out although the client gave up: the uncertainty the app must handle.
    assert emu.messages == [SentSMS(NUMBER, "x", "sms")]
    emu.fault("delay", delay=0.3)
    start = time.monotonic()
    r = post(api, emu, "/send-sms", SMS)
    assert r.status_code == 200 and time.monotonic() - start >= 0.3
    assert emu.message_count == 2


def test_fault_reset(emu: TextFlowEmulator, api: requests.Session) -> None:
    assert post(api, emu, "/send-sms", SMS).ok  # a pooled connection exists now
    emu.fault("reset")
    with pytest.raises(requests.ConnectionError):
        post(api, emu, "/send-sms", SMS)
    assert emu.message_count == 1  # the reset request was not processed
    assert emu.requests[-1].fault == "reset"
    assert post(api, emu, "/send-sms", SMS).ok  # the pool recovers on a new connection
    assert emu.connection_count == 2


def test_fault_reset_is_a_tcp_rst_not_a_clean_close(emu: TextFlowEmulator) -> None:
    emu.fault("reset")
    body = json.dumps(SMS).encode()
    with socket.create_connection(("127.0.0.1", emu.port), timeout=5) as sock:
        sock.sendall(
            b"POST /api/send-sms HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        # A clean close would read b"" here; an abortive one raises.
        with pytest.raises(ConnectionResetError):
            sock.recv(1024)


def test_fault_trickle_body_arrives_intact(emu: TextFlowEmulator, api: requests.Session) -> None:
    emu.fault("trickle", delay=0.002)
    start = time.monotonic()
    r = post(api, emu, "/send-sms", SMS)
    elapsed = time.monotonic() - start
    assert r.status_code == 200
    assert r.json()["data"]["to"] == NUMBER
    assert elapsed >= len(r.content) * 0.002 * 0.9
    assert emu.messages == [SentSMS(NUMBER, "x", "sms")]


def test_fault_respond_replays_a_given_answer(emu: TextFlowEmulator, api: requests.Session) -> None:
    body = json.dumps({"ok": False, "status": 403, "message": "Forbidden"})
    emu.fault("respond", status=403, body=body)
    r = post(api, emu, "/send-sms", SMS)
    assert (r.status_code, r.text) == (403, body)
    assert r.headers["Content-Type"] == "application/json"
    emu.fault("respond", path="/balance", body=b"plain", content_type="text/plain")
    r = api.get(emu.url + "/balance", timeout=5)
    assert (r.status_code, r.content, r.headers["Content-Type"]) == (200, b"plain", "text/plain")
    assert emu.messages == []
    assert [r.fault for r in emu.requests] == ["respond", "respond"]
    with pytest.raises(ValueError):
        emu.fault("respond")  # body is required
    with pytest.raises(ValueError):
        emu.fault("status", body="{}")  # body is only for "respond"


def test_fault_path_scoping_times_and_fifo(emu: TextFlowEmulator, api: requests.Session) -> None:
    emu.fault("status", path="/send-code", times=2, status=503)
    emu.fault("html")  # any endpoint, queued behind
    assert post(api, emu, "/send-sms", SMS).status_code == 502  # send-code fault skipped
    assert post(api, emu, "/send-sms", SMS).status_code == 200
    assert post(api, emu, "/send-code", {"phone_number": NUMBER}).status_code == 503
    assert [f.times for f in emu.pending_faults] == [1]
    assert post(api, emu, "/send-code", {"phone_number": NUMBER}).status_code == 503
    assert emu.pending_faults == []
    assert post(api, emu, "/send-code", {"phone_number": NUMBER}).status_code == 200
    assert [r.fault for r in emu.requests] == ["html", None, "status", "status", None]


def test_faulted_send_code_keeps_previous_code(
    emu: TextFlowEmulator, api: requests.Session
) -> None:
    code = post(api, emu, "/send-code", {"phone_number": NUMBER}).json()["data"]
    emu.fault("status", path="/send-code")
    assert post(api, emu, "/send-code", {"phone_number": NUMBER}).status_code == 500
    assert emu.last_code(NUMBER) == code["verification_code"]


def test_fault_rejects_bad_arguments(emu: TextFlowEmulator) -> None:
    with pytest.raises(ValueError):
        emu.fault("explode")
    with pytest.raises(ValueError):
        emu.fault("status", times=0)
    with pytest.raises(ValueError):
        emu.fault("status", status=42)
    assert emu.pending_faults == []


def test_global_delay(emu: TextFlowEmulator, api: requests.Session) -> None:
    emu.delay = 0.3
    start = time.monotonic()
    assert api.get(emu.url + "/balance", timeout=5).ok
    assert time.monotonic() - start >= 0.3
    start = time.monotonic()
    requests.get(emu.url.removesuffix("/api") + "/_emulator/state", timeout=5)
    assert time.monotonic() - start < 0.25  # control endpoints are never slowed


# -- reset, control endpoints, connections ------------------------------------------------


def test_reset(emu: TextFlowEmulator, api: requests.Session) -> None:
    url, port = emu.url, emu.port
    post(api, emu, "/send-code", {"phone_number": NUMBER})
    post(api, emu, "/bulk-sms", {"phone_numbers": [NUMBER], "text": "x"})
    emu.fault("status", times=5)
    emu.delay = 1.0
    emu.reset()
    assert emu.requests == [] and emu.messages == [] and emu.message_count == 0
    assert emu.last_code(NUMBER) is None and emu.bulk_pending == 0
    assert emu.pending_faults == [] and emu.delay == 0.0
    assert emu.credits == 1000.0
    assert (emu.url, emu.port) == (url, port)
    r = post(api, emu, "/send-sms", SMS)  # same pooled connection, no fault left
    assert r.status_code == 200
    assert emu.connection_count == 0  # the connection predates the reset


def test_control_endpoints(emu: TextFlowEmulator, api: requests.Session) -> None:
    control = emu.url.removesuffix("/api") + "/_emulator"
    post(api, emu, "/send-sms", {"phone_number": NUMBER, "text": "one"})
    post(api, emu, "/send-sms", {"phone_number": OTHER, "text": "two"})
    post(api, emu, "/send-code", {"phone_number": NUMBER})
    post(api, emu, "/bulk-sms", {"phone_numbers": [NUMBER, OTHER], "text": "bulk"})

    messages = requests.get(control + "/messages", timeout=5).json()["messages"]
    assert [m["text"] for m in messages][:2] == ["one", "two"]
    assert messages[0] == {"phone_number": NUMBER, "text": "one", "kind": "sms"}
    assert len(messages) == 5
    mine = requests.get(
        control + "/messages", params={"phone_number": NUMBER, "limit": "2"}, timeout=5
    ).json()["messages"]
    assert [m["kind"] for m in mine] == ["code", "bulk"]
    # A hand-typed "+" decodes to a space; the emulator reads it back as the "+".
    typed = requests.get(control + f"/messages?phone_number={OTHER}", timeout=5).json()
    assert [m["text"] for m in typed["messages"]] == ["two", "bulk"]
    code = requests.get(control + "/last-code", params={"phone_number": NUMBER}, timeout=5)
    assert code.json()["code"] == emu.last_code(NUMBER)

    counts = requests.get(control + "/requests", timeout=5).json()
    assert counts == {
        "counts": {"/send-sms": 2, "/send-code": 1, "/bulk-sms": 1},
        "total": 4,
    }
    state = requests.get(control + "/state", timeout=5).json()
    assert state["bulk_pending"] == 2 and state["credits"] == "999.75000"
    r = requests.post(control + "/deliver-bulk", json={"n": 1}, timeout=5)
    assert r.json()["bulk_pending"] == 1
    requests.post(control + "/deliver-bulk", json={"n": None}, timeout=5)
    assert emu.bulk_pending == 0

    r = requests.post(control + "/fault", json={"kind": "status", "status": 503}, timeout=5)
    assert r.status_code == 200
    assert requests.post(control + "/fault", json={"kind": "nope"}, timeout=5).status_code == 400
    # Control requests are never faulted nor recorded; the fault waits for the API.
    assert requests.get(control + "/state", timeout=5).status_code == 200
    assert api.get(emu.url + "/balance", timeout=5).status_code == 503

    assert requests.post(control + "/reset", timeout=5).status_code == 200
    assert emu.requests == [] and emu.messages == []
    # Also reachable under the API root, for clients that only know the base URL.
    assert requests.get(emu.url + "/_emulator/state", timeout=5).json()["message_count"] == 0
    assert requests.get(control + "/nope", timeout=5).status_code == 404
    assert emu.requests == []


def test_record_messages_off_still_counts(api: requests.Session) -> None:
    with TextFlowEmulator(record_messages=False, record_requests=False) as emu:
        post(api, emu, "/bulk-sms", {"phone_numbers": [NUMBER, OTHER], "text": "x"})
        post(api, emu, "/send-sms", SMS)
        assert emu.messages == [] and emu.requests == []
        assert emu.message_count == 3 and emu.bulk_pending == 2
        assert emu.request_counts == {"/bulk-sms": 1, "/send-sms": 1}


def test_keep_alive_reuses_one_connection(emu: TextFlowEmulator, api: requests.Session) -> None:
    for _ in range(3):
        assert post(api, emu, "/send-sms", SMS).ok
    assert emu.connection_count == 1
    for _ in range(2):
        requests.post(emu.url + "/send-sms", json=SMS, headers=AUTH, timeout=5)
    assert emu.connection_count == 3


def test_connection_close_is_honoured(emu: TextFlowEmulator) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", emu.port, timeout=5)
    conn.request("GET", "/api/balance", headers={**AUTH, "Connection": "close"})
    response = conn.getresponse()
    assert response.status == 200 and response.getheader("Connection") == "close"
    assert json.loads(response.read())["ok"] is True
    conn.close()


def test_unparseable_request_still_gets_json(emu: TextFlowEmulator) -> None:
    with socket.create_connection(("127.0.0.1", emu.port), timeout=5) as sock:
        sock.sendall(b"GARBAGE\r\n\r\n")
        raw = b""
        while chunk := sock.recv(4096):  # the server closes after answering
            raw += chunk
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 ")
    assert b"Content-Type: application/json" in head
    assert json.loads(body)["status"] == 400


def test_concurrent_clients(emu: TextFlowEmulator) -> None:
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            with requests.Session() as session:
                session.headers.update(AUTH)
                for _ in range(25):
                    assert post(session, emu, "/send-sms", SMS).status_code == 200
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert emu.message_count == 200 and len(emu.requests) == 200
    assert emu.credits == pytest.approx(1000 - 200 * 0.05)


def test_stop_closes_pooled_connections(api: requests.Session) -> None:
    emu = TextFlowEmulator().start()
    assert post(api, emu, "/send-sms", SMS).ok
    emu.stop()
    emu.stop()  # idempotent
    with pytest.raises(requests.ConnectionError):
        post(api, emu, "/send-sms", SMS)


def test_url_needs_a_port() -> None:
    with pytest.raises(RuntimeError):
        _ = TextFlowEmulator().url
    assert TextFlowEmulator(port=8765).url == "http://127.0.0.1:8765/api"


def _listening_url(proc: subprocess.Popen[bytes], scheme: str) -> str:
    """The URL from the one line ``python -m textflow_django.testing`` prints on start."""
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], 10)
    assert ready, "the emulator printed nothing within 10 s"
    line = proc.stdout.readline().decode()
    match = re.fullmatch(
        rf"TextFlow emulator listening on ({scheme}://127\.0\.0\.1:\d+/api)\n", line
    )
    assert match, line
    return match.group(1)


def test_main_subprocess_serves_and_exits_cleanly_on_sigterm() -> None:
    env = {**os.environ, "PYTHONUNBUFFERED": "0"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "textflow_django.testing", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    try:
        url = _listening_url(proc, "http")
        r = requests.post(url + "/send-sms", json=SMS, headers=AUTH, timeout=5)
        assert r.status_code == 200 and r.json()["data"]["to"] == NUMBER
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
        assert proc.stdout is not None and proc.stdout.read() == b""  # exactly one line
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


def test_main_serves_https_with_certfile_and_keyfile(tmp_path) -> None:
    import trustme

    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    cert.cert_chain_pems[0].write_to_path(str(tmp_path / "cert.pem"))
    cert.private_key_pem.write_to_path(str(tmp_path / "key.pem"))
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    proc = subprocess.Popen(
        [sys.executable, "-m", "textflow_django.testing", "--port", "0",
         "--certfile", str(tmp_path / "cert.pem"), "--keyfile", str(tmp_path / "key.pem")],
        stdout=subprocess.PIPE,
    )  # fmt: skip
    try:
        url = _listening_url(proc, "https")
        r = requests.post(
            url + "/send-sms", json=SMS, headers=AUTH, timeout=5, verify=str(tmp_path / "ca.pem")
        )
        assert r.status_code == 200 and r.json()["data"]["to"] == NUMBER
        with pytest.raises(requests.exceptions.SSLError):
            requests.post(url + "/send-sms", json=SMS, headers=AUTH, timeout=5, verify=True)
    finally:
        proc.terminate()
        code = proc.wait(timeout=10)
        proc.stdout.close()  # type: ignore[union-attr]
    assert code == 0  # after the try: a failure above is not hidden by this one


def test_main_refuses_a_keyfile_without_certfile(tmp_path, capsys) -> None:
    from textflow_django.testing.__main__ import main

    assert main(["--port", "0", "--keyfile", str(tmp_path / "key.pem")]) == 1
    assert "--keyfile needs --certfile" in capsys.readouterr().err
