"""Tests of the TextFlow emulator itself, over real sockets with plain ``requests``.

No Django here: the emulator must work in any pytest session and in a subprocess. (One test
runs the pytest plugin's fixtures in an inner session, where only ``textflow_live`` touches
Django's settings; one runs ``textflow_bulk_count --wait`` against a draining emulator; one
checks with the product's client, which has no Django, that "down" means "not sent".) The
command line is tested in ``test_emulator_cli.py``, TextFlow's own client against the
emulator in ``test_textflowsms.py``.
"""

from __future__ import annotations

import http.client
import json
import re
import socket
import ssl
import struct
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

pytest_plugins = ["pytester"]

NUMBER = "+381690156360"
OTHER = "+447700900123"
AUTH = {"Authorization": f"Bearer {EMULATOR_API_KEY}"}
#: A fixed "now" for emulators whose clock only advance_clock() moves.
T0 = 1_764_000_000.0


@pytest.fixture
def emu() -> Iterator[TextFlowEmulator]:
    # Bulk jobs wait for deliver_bulk(): a test reads the count it left, however slow the run.
    with TextFlowEmulator(bulk_rate=0) as emulator:
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
        {"Authorization": EMULATOR_API_KEY},
        {"Authorization": f"Basic {EMULATOR_API_KEY}"},
        {"Authorization": "Bearer"},
        {"Authorization": "Bearer   "},
    ],
)
def test_no_bearer_key_is_400_invalid_api_key(
    emu: TextFlowEmulator, headers: dict[str, str]
) -> None:
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


@pytest.mark.parametrize(
    "key", ["x" * 64, EMULATOR_API_KEY[:-1], EMULATOR_API_KEY + "0", "YOUR_API_KEY", "é"]
)
def test_a_key_that_is_not_the_accounts_is_404_api_key_not_found(
    emu: TextFlowEmulator, key: str
) -> None:
    # What TextFlow's own clients' READMEs show for a wrong key.
    r = requests.post(
        emu.url + "/send-sms",
        json={"phone_number": NUMBER, "text": "x"},
        headers={"Authorization": f"Bearer {key}".encode()},
        timeout=5,
    )
    assert r.status_code == 404
    assert r.json() == {"ok": False, "status": 404, "message": "API key not found"}
    assert emu.messages == []


def test_custom_key(api: requests.Session) -> None:
    with TextFlowEmulator(api_key="k" * 64) as emu:
        assert post(api, emu, "/balance").status_code == 405  # routing before auth
        r = api.get(emu.url + "/balance", timeout=5)
        assert r.status_code == 404
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


def test_constructor_and_knobs_refuse_bad_values() -> None:
    cases: list[tuple[dict[str, Any], str]] = [
        ({"code_length": 0}, "code_length must be between 1 and 18"),
        ({"code_length": 19}, "code_length must be between 1 and 18"),
        ({"delay": -0.1}, "delay must not be negative"),
        ({"price": -0.01}, "price must not be negative"),
    ]
    for kwargs, message in cases:
        with pytest.raises(ValueError, match=message):
            TextFlowEmulator(**kwargs)
    emu = TextFlowEmulator()
    with pytest.raises(ValueError, match="delay must not be negative"):
        emu.delay = -1
    assert emu.delay == 0.0
    for n in (-1, "2", True, 1.5):
        with pytest.raises(ValueError, match="n must be a non-negative int or None"):
            emu.deliver_bulk(n)  # type: ignore[arg-type]


def test_start_twice_is_refused(emu: TextFlowEmulator, api: requests.Session) -> None:
    with pytest.raises(RuntimeError, match="already running"):
        emu.start()
    assert api.get(emu.url + "/balance", timeout=5).status_code == 200  # still serving


def test_ipv6_host(api: requests.Session) -> None:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback here")
    emu = TextFlowEmulator(host="::1").start()
    try:
        assert re.fullmatch(r"http://\[::1\]:\d+/api", emu.url)
        r = api.get(emu.url + "/balance", timeout=5)
        assert r.status_code == 200 and r.json()["credits"] == "1000.00000"
    finally:
        emu.stop()


# -- the endpoints' validation, the account's edges ----------------------------------------


@pytest.mark.parametrize(
    ("path", "payload", "message"),
    [
        ("/send-code", [NUMBER], "Invalid request body"),
        ("/send-code", {"phone_number": "+1 202 555 0123"}, "Phone number is invalid"),
        ("/send-code", {"phone_number": NUMBER, "service_name": 5}, "Invalid request body"),
        ("/verify-code", "1234", "Invalid request body"),
        ("/verify-code", {"phone_number": "0038169", "code": "1234"}, "Phone number is invalid"),
        ("/verify-code", {"phone_number": NUMBER}, "Code is required"),
        ("/verify-code", {"phone_number": NUMBER, "code": 12.5}, "Code is required"),
        ("/bulk-sms", [NUMBER], "Invalid request body"),
        ("/bulk-sms", {"text": "x"}, "Phone numbers are required"),
        ("/bulk-sms", {"phone_numbers": None, "text": "x"}, "Phone numbers are required"),
        ("/bulk-sms", {"phone_numbers": NUMBER, "text": "x"}, "Invalid request body"),
        ("/bulk-sms", {"phone_numbers": [NUMBER, 381690156360], "text": "x"}, "Phone number is invalid"),
    ],
)  # fmt: skip
def test_endpoints_reject_bad_bodies(
    emu: TextFlowEmulator, api: requests.Session, path: str, payload: Any, message: str
) -> None:
    r = post(api, emu, path, payload)
    assert r.status_code == 400
    refusal = {"ok": False, "status": 400, "message": message}
    if path == "/verify-code":
        refusal["valid"] = False  # every verify-code answer says whether the code is valid
    assert r.json() == refusal
    # Nothing charged, sent, issued or queued, and the request is on record.
    assert emu.messages == [] and emu.credits == 1000.0 and emu.bulk_pending == 0
    assert emu.last_code(NUMBER) is None
    assert [(c.path, c.json) for c in emu.requests] == [(path, payload)]


def test_send_code_seconds_null_means_the_default_ten_minutes(
    emu: TextFlowEmulator, api: requests.Session
) -> None:
    r = post(api, emu, "/send-code", {"phone_number": NUMBER, "seconds": None})
    assert r.status_code == 200
    code = r.json()["data"]["verification_code"]
    emu.advance_clock(599)
    assert emu.last_code(NUMBER) == code
    emu.advance_clock(2)
    assert emu.last_code(NUMBER) is None


def test_verify_accepts_the_code_as_a_json_number(
    emu: TextFlowEmulator, api: requests.Session
) -> None:
    # A code with a leading zero has no JSON-number spelling: draw until one has none
    # (each draw fails with probability 1/10).
    for _ in range(50):
        code = post(api, emu, "/send-code", {"phone_number": NUMBER}).json()["data"]
        if not code["verification_code"].startswith("0"):
            break
    digits = code["verification_code"]
    assert not digits.startswith("0")
    r = post(api, emu, "/verify-code", {"phone_number": NUMBER, "code": int(digits)})
    assert r.status_code == 200
    assert r.json()["valid"] is True and r.json()["valid_code"] == digits
    wrong = (int(digits) + 1) % 10_000 or 1
    r = post(api, emu, "/verify-code", {"phone_number": NUMBER, "code": wrong})
    assert r.json()["valid"] is False


def test_credits_can_be_set_and_every_paid_endpoint_checks_them(
    emu: TextFlowEmulator, api: requests.Session
) -> None:
    emu.credits = 0.04  # less than one SMS at 0.05
    assert emu.credits == pytest.approx(0.04)
    assert api.get(emu.url + "/balance", timeout=5).json()["credits"] == "0.04000"
    insufficient = {"ok": False, "status": 400, "message": "Insufficient balance"}
    r = post(api, emu, "/send-code", {"phone_number": NUMBER})
    assert (r.status_code, r.json()) == (400, insufficient)
    assert emu.last_code(NUMBER) is None  # no code issued when unpaid
    r = post(api, emu, "/bulk-sms", {"phone_numbers": [NUMBER], "text": "x"})
    assert (r.status_code, r.json()) == (400, insufficient)
    assert emu.bulk_pending == 0 and emu.messages == []
    # A batch is paid whole or not at all.
    emu.credits = 0.1
    r = post(api, emu, "/bulk-sms", {"phone_numbers": [NUMBER, OTHER, NUMBER], "text": "x"})
    assert (r.status_code, r.json()) == (400, insufficient)
    assert post(api, emu, "/bulk-sms", {"phone_numbers": [NUMBER, OTHER], "text": "x"}).ok
    assert emu.bulk_pending == 2 and emu.message_count == 2 and emu.credits == 0.0


def test_a_bug_in_the_emulator_answers_500_and_it_keeps_serving(
    emu: TextFlowEmulator,
    api: requests.Session,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    def broken() -> Any:
        raise RuntimeError("boom")

    monkeypatch.setattr(emu._api, "_balance", broken)
    r = api.get(emu.url + "/balance", timeout=5)
    assert r.status_code == 500
    assert r.json() == {"ok": False, "status": 500, "message": "Emulator error"}
    assert "RuntimeError: boom" in capsys.readouterr().err  # its own bug, shown
    assert post(api, emu, "/send-sms", SMS).status_code == 200  # same connection, still fine


def test_a_path_outside_the_api_root_is_recorded_and_answered_404(
    emu: TextFlowEmulator, api: requests.Session
) -> None:
    r = api.get(emu.url.removesuffix("/api") + "/other/thing", timeout=5)
    assert r.status_code == 404
    assert r.json() == {"ok": False, "status": 404, "message": "Not found"}
    assert [(c.method, c.path) for c in emu.requests] == [("GET", "/other/thing")]
    assert emu.request_counts == {"/other/thing": 1}
    post(api, emu, "/send-sms", SMS)
    assert emu.calls("/api/send-sms") == emu.calls("/send-sms") != []


@pytest.mark.parametrize("method", ["PUT", "PATCH", "DELETE"])
def test_other_methods_get_405_with_allow(
    emu: TextFlowEmulator, api: requests.Session, method: str
) -> None:
    r = api.request(method, emu.url + "/send-sms", json=SMS, timeout=5)
    assert r.status_code == 405 and r.headers["Allow"] == "POST"
    assert r.json() == {"ok": False, "status": 405, "message": "Method not allowed"}
    assert [(c.method, c.path, c.json) for c in emu.requests] == [(method, "/send-sms", SMS)]
    assert emu.messages == []


# -- the HTTP layer: what a broken client gets ---------------------------------------------


def exchange(emu: TextFlowEmulator, raw: bytes, *, shut_write: bool = False) -> bytes:
    """Send ``raw`` on a new connection and read until the emulator closes it (5 s bound).

    ``shut_write`` half-closes the connection after sending, as a client that gave up would.
    """
    with socket.create_connection(("127.0.0.1", emu.port), timeout=5) as sock:
        sock.sendall(raw)
        if shut_write:
            sock.shutdown(socket.SHUT_WR)
        data = b""
        while chunk := sock.recv(4096):
            data += chunk
    return data


def parse_responses(raw: bytes) -> list[tuple[str, dict[str, str], bytes]]:
    """Split back-to-back HTTP/1.1 responses: (status line, lower-cased headers, body)."""
    out = []
    while raw:
        head, sep, rest = raw.partition(b"\r\n\r\n")
        assert sep, raw
        status_line, *lines = head.decode("latin-1").split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines)}
        size = int(headers["content-length"])
        out.append((status_line, headers, rest[:size]))
        raw = rest[size:]
    return out


def request_head(method: str, path: str, *headers: str) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: x", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


BAD_BODY = {"ok": False, "status": 400, "message": "Invalid request body"}
CLOSE_BALANCE = request_head("GET", "/api/balance", f"Authorization: Bearer {EMULATOR_API_KEY}",
                             "Connection: close")  # fmt: skip


@pytest.mark.parametrize("length", ["abc", "-1", "1e3"])
def test_an_unreadable_content_length_gets_400_and_a_close(
    emu: TextFlowEmulator, length: str
) -> None:
    raw = exchange(emu, request_head("POST", "/api/send-sms", f"Content-Length: {length}"))
    [(status, headers, body)] = parse_responses(raw)  # and then the connection closed
    assert status == "HTTP/1.1 400 Bad Request"
    assert headers["content-type"] == "application/json" and headers["connection"] == "close"
    assert json.loads(body) == BAD_BODY
    assert emu.requests == []  # never reached the API
    assert parse_responses(exchange(emu, CLOSE_BALANCE))[0][0] == "HTTP/1.1 200 OK"


def test_a_body_shorter_than_its_content_length_gets_no_answer(emu: TextFlowEmulator) -> None:
    head = request_head("POST", "/api/send-sms", "Content-Length: 100")
    assert exchange(emu, head + b'{"phone_number"', shut_write=True) == b""
    assert emu.requests == [] and emu.messages == []
    assert parse_responses(exchange(emu, CLOSE_BALANCE))[0][0] == "HTTP/1.1 200 OK"


def test_a_bad_chunk_size_gets_400(emu: TextFlowEmulator) -> None:
    head = request_head("POST", "/api/send-sms", "Transfer-Encoding: chunked")
    [(status, headers, body)] = parse_responses(exchange(emu, head + b"zz\r\n{}\r\n0\r\n\r\n"))
    assert status == "HTTP/1.1 400 Bad Request" and headers["connection"] == "close"
    assert json.loads(body) == BAD_BODY
    assert emu.requests == []


def test_a_truncated_chunk_gets_no_answer(emu: TextFlowEmulator) -> None:
    head = request_head("POST", "/api/send-sms", "Transfer-Encoding: chunked")
    assert exchange(emu, head + b"40\r\n" + b'{"phone_number"', shut_write=True) == b""
    assert emu.requests == [] and emu.messages == []


def test_chunked_trailers_are_read_and_the_connection_stays_usable(emu: TextFlowEmulator) -> None:
    payload = json.dumps(SMS).encode()
    auth = f"Authorization: Bearer {EMULATOR_API_KEY}"
    first = request_head("POST", "/api/send-sms", auth, "Transfer-Encoding: Chunked")
    first += f"{len(payload):x};ext=1\r\n".encode() + payload + b"\r\n"
    first += b"0\r\nX-Checksum: abc\r\nX-Other: d\r\n\r\n"
    (one, _, body), (two, headers, _) = parse_responses(exchange(emu, first + CLOSE_BALANCE))
    assert one == "HTTP/1.1 200 OK" and json.loads(body)["data"]["to"] == NUMBER
    # The second request on the same connection parsed: the trailers were not left behind.
    assert two == "HTTP/1.1 200 OK" and headers["connection"] == "close"
    assert emu.connection_count == 1
    assert [c.path for c in emu.requests] == ["/send-sms", "/balance"]


def test_an_unknown_method_gets_501_json(emu: TextFlowEmulator) -> None:
    [(status, headers, body)] = parse_responses(exchange(emu, request_head("OPTIONS", "/api")))
    assert status == "HTTP/1.1 501 Not Implemented" and headers["connection"] == "close"
    assert headers["content-type"] == "application/json"
    assert json.loads(body) == {
        "ok": False,
        "status": 501,
        "message": "Unsupported method ('OPTIONS')",
    }
    assert emu.requests == []


def test_head_gets_the_501_head_without_a_body(emu: TextFlowEmulator) -> None:
    raw = exchange(emu, request_head("HEAD", "/api/balance"))
    head, sep, rest = raw.partition(b"\r\n\r\n")
    assert sep and rest == b""  # a HEAD answer carries no body
    assert head.startswith(b"HTTP/1.1 501 Not Implemented\r\n")
    lines = head.decode().split("\r\n")
    assert "Content-Type: application/json" in lines and "Connection: close" in lines
    # Content-Length is that of the body a GET would have had.
    size = len(json.dumps({"ok": False, "status": 501, "message": "Unsupported method ('HEAD')"},
                          separators=(",", ":")))  # fmt: skip
    assert f"Content-Length: {size}" in lines


def test_a_status_http_does_not_name_gets_the_phrase_unknown(
    emu: TextFlowEmulator, api: requests.Session
) -> None:
    emu.fault("status", status=599)
    r = post(api, emu, "/send-sms", SMS)
    assert (r.status_code, r.reason) == (599, "Unknown")
    assert r.json() == {"ok": False, "status": 599, "message": "Internal server error"}
    emu.fault("html", status=599)
    assert post(api, emu, "/send-sms", SMS).text == (
        "<html><body><h1>599 Unknown</h1></body></html>"
    )


@pytest.mark.parametrize("raised", [RuntimeError("boom"), ConnectionResetError("gone")])
def test_a_failing_connection_is_dropped_and_only_real_errors_are_reported(
    emu: TextFlowEmulator,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    raised: Exception,
) -> None:
    def serve(*args: Any) -> None:
        raise raised

    monkeypatch.setattr(emu, "_serve", serve)
    # The traceback (if any) is written before the connection is closed.
    assert exchange(emu, CLOSE_BALANCE) == b""
    err = capsys.readouterr().err
    if isinstance(raised, OSError):
        assert err == ""  # a client gone away is routine
    else:
        assert "RuntimeError: boom" in err
    monkeypatch.undo()
    assert parse_responses(exchange(emu, CLOSE_BALANCE))[0][0] == "HTTP/1.1 200 OK"


def test_stop_copes_with_a_connection_its_peer_already_reset(emu: TextFlowEmulator) -> None:
    emu.delay = 2.0  # holds the request's thread while its client goes away
    sock = socket.create_connection(("127.0.0.1", emu.port), timeout=5)
    try:
        sock.sendall(CLOSE_BALANCE)
        for _ in range(500):  # until the request is read and its thread is in the delay
            if emu.request_counts:
                break
            time.sleep(0.01)
        assert emu.request_counts == {"/balance": 1}
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    finally:
        sock.close()  # an RST: the server's socket can no longer be shut down
    emu.stop()  # must not raise
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", emu.port), timeout=5).close()


@pytest.fixture(scope="module")
def tls() -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """(server context with a 127.0.0.1 certificate, client context trusting its CA)."""
    import trustme

    ca = trustme.CA()
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server)
    client = ssl.create_default_context()
    ca.configure_trust(client)
    return server, client


def test_https_serves_and_a_failed_handshake_leaves_no_trace(
    tls: tuple[ssl.SSLContext, ssl.SSLContext], capsys: pytest.CaptureFixture[str]
) -> None:
    server, client = tls
    with TextFlowEmulator(ssl_context=server) as emu:
        assert emu.url.startswith("https://127.0.0.1:")
        # Plain HTTP to the TLS port: the handshake fails and the connection is dropped.
        try:
            answer = exchange(emu, CLOSE_BALANCE)
        except ConnectionResetError:
            answer = b""
        assert not answer.startswith(b"HTTP/")
        for _ in range(500):  # the dropped connection is forgotten, not kept open
            if not emu._open:
                break
            time.sleep(0.01)
        assert not emu._open
        assert capsys.readouterr().err == ""  # routine: no traceback
        # The emulator still serves TLS clients.
        conn = http.client.HTTPSConnection("127.0.0.1", emu.port, timeout=5, context=client)
        conn.request("GET", "/api/balance", headers=AUTH)
        response = conn.getresponse()
        assert response.status == 200 and json.loads(response.read())["ok"] is True
        conn.close()
        assert emu.connection_count == 2
        assert [c.path for c in emu.requests] == ["/balance"]


# -- faults' and control endpoints' edges --------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "kwargs", "message"),
    [
        ("status", {"delay": -1}, "delay must be a non-negative number"),
        ("status", {"delay": "1"}, "delay must be a non-negative number"),
        ("status", {"delay": True}, "delay must be a non-negative number"),
        ("respond", {"body": 5}, "body must be str or bytes"),
        ("respond", {"body": "{}", "content_type": "text/plain\r\nX-Injected: 1"},
         "content_type must be a one-line str"),
        ("respond", {"body": "{}", "content_type": 5}, "content_type must be a one-line str"),
    ],
)  # fmt: skip
def test_fault_rejects_bad_delay_body_and_content_type(
    emu: TextFlowEmulator, kind: str, kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        emu.fault(kind, **kwargs)
    assert emu.pending_faults == []


def test_fault_delay_applies_before_a_replacing_answer(
    emu: TextFlowEmulator, api: requests.Session
) -> None:
    emu.fault("status", status=503, delay=0.1)
    start = time.monotonic()
    r = post(api, emu, "/send-sms", SMS)
    assert r.status_code == 503 and time.monotonic() - start >= 0.1
    assert emu.messages == []


@pytest.fixture
def control(emu: TextFlowEmulator) -> str:
    return emu.url.removesuffix("/api") + "/_emulator"


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "message"),
    [
        ("GET", "/fault", {}, "Method not allowed"),
        ("POST", "/state", {}, "Method not allowed"),
        ("POST", "/fault", {"data": b"{not json"}, "Invalid request body"),
        ("POST", "/fault", {"json": ["status"]}, "Invalid request body"),
        ("POST", "/fault", {"json": {"status": 503}}, "kind is required"),
        ("POST", "/fault", {"json": {"kind": 5}}, "kind is required"),
        ("POST", "/fault", {"json": {"kind": "status", "x": 1, "bogus": 2}},
         "Unknown fault options: bogus, x"),
        ("POST", "/fault", {"json": {"kind": "status", "times": 0}}, "times must be an int >= 1"),
        ("GET", "/messages?limit=abc", {}, "limit must be a non-negative integer"),
        ("GET", "/messages?limit=-1", {}, "limit must be a non-negative integer"),
        ("POST", "/deliver-bulk", {"json": {"n": -1}}, "n must be a non-negative int or None"),
        ("POST", "/deliver-bulk", {"json": {"n": "1"}}, "n must be a non-negative int or None"),
    ],
)  # fmt: skip
def test_control_endpoints_refuse_bad_requests(
    emu: TextFlowEmulator,
    api: requests.Session,
    control: str,
    method: str,
    path: str,
    kwargs: dict[str, Any],
    message: str,
) -> None:
    post(api, emu, "/bulk-sms", {"phone_numbers": [NUMBER], "text": "x"})
    r = requests.request(method, control + path, timeout=5, **kwargs)
    status = 405 if message == "Method not allowed" else 400
    assert r.status_code == status
    assert r.json() == {"ok": False, "status": status, "message": message}
    if status == 405:
        assert r.headers["Allow"] == ("POST" if path == "/fault" else "GET")
    # Nothing steered: no fault queued, bulk still pending, the bad request not recorded.
    assert emu.pending_faults == [] and emu.bulk_pending == 1
    assert [c.path for c in emu.requests] == ["/bulk-sms"]


def test_control_messages_limit_zero_and_an_empty_body(
    emu: TextFlowEmulator, api: requests.Session, control: str
) -> None:
    post(api, emu, "/send-sms", SMS)
    r = requests.get(control + "/messages", params={"limit": "0"}, timeout=5)
    assert r.json() == {"messages": [], "total": 1}
    # deliver-bulk with no body at all delivers everything, like n=null.
    post(api, emu, "/bulk-sms", {"phone_numbers": [NUMBER, OTHER], "text": "x"})
    assert requests.post(control + "/deliver-bulk", timeout=5).json()["bulk_pending"] == 0


# -- the pytest plugin's fixtures, in a session without pytest-django ---------------------


def test_plugin_fixtures_load_no_backend_and_work_without_pytest_django(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In a project without pytest-django, ``textflow_emulator`` needs no backend module (the
    plugin neither imports the TextFlow backend to reset its breakers nor the locmem one to
    empty its outbox), and ``textflow_live`` overrides ``settings.TEXTFLOW`` by itself and
    undoes it after the test."""
    # As in a fresh process: neither backend imported yet (a package attribute left behind
    # would let ``from ..backends import locmem`` succeed without importing anything).
    backends = sys.modules.get("textflow_django.backends")
    for name in ("textflow", "locmem"):
        monkeypatch.delitem(sys.modules, f"textflow_django.backends.{name}", raising=False)
        if backends is not None:
            monkeypatch.delattr(backends, name, raising=False)
    pytester.makepyfile(
        """
        import sys
        import requests
        from django.conf import settings

        BACKENDS = ("textflow_django.backends.textflow", "textflow_django.backends.locmem")
        BEFORE = dict(getattr(settings, "TEXTFLOW", {}))

        def test_emulator_alone(textflow_emulator):
            r = requests.get(textflow_emulator.url + "/balance", timeout=5)
            assert r.status_code == 400
            assert [c.path for c in textflow_emulator.requests] == ["/balance"]
            assert not any(name in sys.modules for name in BACKENDS)

        def test_live_without_the_settings_fixture(textflow_live):
            assert settings.TEXTFLOW["BASE_URL"] == textflow_live.url
            assert settings.TEXTFLOW["BACKEND"].endswith("TextFlowBackend")
            assert textflow_live.requests == []  # reset between tests

        def test_settings_are_back():
            assert dict(getattr(settings, "TEXTFLOW", {})) == BEFORE
            assert not any(name in sys.modules for name in BACKENDS)
        """
    )
    # In process, so coverage sees the plugin run; -p no:django takes the settings fixture
    # away, as in a project that does not use pytest-django (Django is configured already).
    result = pytester.runpytest_inprocess("-p", "no:django", "-p", "no:cacheprovider", "-q")
    result.assert_outcomes(passed=3)


def test_a_code_that_is_not_utf8_is_simply_not_the_code(
    emu: TextFlowEmulator, api: requests.Session
) -> None:
    # A lone surrogate survives JSON ("\ud800") but not UTF-8: once a 500, now "not valid".
    post(api, emu, "/send-code", {"phone_number": NUMBER})
    response = post(api, emu, "/verify-code", {"phone_number": NUMBER, "code": "\ud800"})
    assert response.status_code == 200, response.text
    assert response.json()["valid"] is False


@pytest.mark.parametrize("path", [5, ["/send-sms"], {"p": 1}])
def test_a_fault_path_that_is_not_a_string_is_refused(
    emu: TextFlowEmulator, api: requests.Session, path: Any
) -> None:
    with pytest.raises(ValueError, match="path must be a str"):
        emu.fault("status", path=path, status=500)
    control = emu.url.removesuffix("/api") + "/_emulator/fault"
    response = api.post(control, json={"kind": "status", "path": path}, timeout=5)
    assert response.status_code == 400, response.text
    assert "path must be a str" in response.text
    # Nothing was queued: the API answers normally.
    assert post(api, emu, "/send-sms", {"phone_number": NUMBER, "text": "hi"}).status_code == 200


# -- outages: the whole API misbehaving until lifted ---------------------------------------


def control_url(emu: TextFlowEmulator) -> str:
    return emu.url.removesuffix("/api") + "/_emulator"


def refused(emu: TextFlowEmulator) -> bool:
    """Whether a new connection to the emulator's port is refused right now."""
    try:
        socket.create_connection(("127.0.0.1", emu.port), timeout=5).close()
    except ConnectionRefusedError:
        return True
    return False


def wait_until(condition: Any, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def test_an_error_outage_fails_every_request_until_lifted(
    emu: TextFlowEmulator, api: requests.Session
) -> None:
    emu.fault("status", status=418)  # queued: waits for the service to come back
    emu.outage("error")
    for _ in range(3):
        r = post(api, emu, "/send-sms", SMS)
        assert r.status_code == 500
        assert r.json() == {"ok": False, "status": 500, "message": "Internal server error"}
    assert api.get(emu.url + "/balance", timeout=5).status_code == 500
    assert emu.messages == [] and emu.credits == 1000.0  # nothing processed
    assert [r.fault for r in emu.requests] == ["status"] * 4
    assert [f.status for f in emu.pending_faults] == [418]  # neither applied nor used up
    state = requests.get(control_url(emu) + "/state", timeout=5).json()  # control unaffected
    assert state["outage"] == {"mode": "error", "status": 500, "ends_in": None}

    emu.outage(None)
    assert emu.current_outage is None
    assert post(api, emu, "/send-sms", SMS).status_code == 418  # the queued fault's turn
    assert post(api, emu, "/send-sms", SMS).status_code == 200


def test_a_rate_limited_outage_answers_429_with_retry_after(
    emu: TextFlowEmulator, api: requests.Session
) -> None:
    emu.outage("rate_limited", retry_after=7)
    r = post(api, emu, "/send-code", {"phone_number": NUMBER})
    assert r.status_code == 429 and r.headers["Retry-After"] == "7"
    assert r.json()["ok"] is False and emu.last_code(NUMBER) is None
    emu.outage("rate_limited")
    assert post(api, emu, "/send-sms", SMS).headers["Retry-After"] == "10"
    emu.outage("error", status=503)  # one outage replaces the other
    assert post(api, emu, "/send-sms", SMS).status_code == 503


def test_a_slow_outage_sends_the_sms_and_answers_late(
    emu: TextFlowEmulator, api: requests.Session
) -> None:
    emu.outage("slow")
    assert emu.current_outage is not None
    assert emu.current_outage.delay == 15.0  # past the client's default 10 s TIMEOUT
    emu.outage("slow", delay=0.5)
    with pytest.raises(requests.ReadTimeout):
        post(api, emu, "/send-sms", SMS, timeout=0.1)
    wait_until(lambda: emu.messages == [SentSMS(NUMBER, "x", "sms")])  # it went out all the same
    started = time.monotonic()
    assert post(api, emu, "/send-sms", SMS).status_code == 200
    assert time.monotonic() - started >= 0.5


def test_a_down_outage_refuses_connections_until_lifted(
    emu: TextFlowEmulator, api: requests.Session
) -> None:
    from textflow_django.client import TextFlowClient, TextFlowConnectionError

    url = emu.url
    assert post(api, emu, "/send-sms", SMS).ok  # a pooled connection, open
    emu.outage("down")
    assert refused(emu)
    with pytest.raises(requests.ConnectionError):  # the pooled connection was dropped too
        post(api, emu, "/send-sms", SMS)
    with pytest.raises(requests.ConnectionError):
        requests.get(control_url(emu) + "/state", timeout=5)
    # What a stopped TextFlow looks like to the client: it knows nothing was sent.
    with TextFlowClient(api_key=EMULATOR_API_KEY, base_url=url, timeout=5) as client:
        with pytest.raises(TextFlowConnectionError) as info:
            client.send_sms(NUMBER, "Hello")
    assert info.value.maybe_sent is False
    assert emu.messages == [SentSMS(NUMBER, "x", "sms")]  # only the one before

    emu.outage(None)
    assert emu.url == url and not refused(emu)
    assert post(api, emu, "/send-sms", SMS).status_code == 200


def test_reset_and_stop_lift_a_down_outage(emu: TextFlowEmulator, api: requests.Session) -> None:
    emu.outage("down")
    emu.reset()
    assert emu.current_outage is None and post(api, emu, "/send-sms", SMS).ok
    emu.outage("down", duration=60)
    emu.stop()
    assert emu.current_outage is None
    emu.start()
    assert post(api, emu, "/send-sms", SMS).ok
    emu.outage("down")
    emu.outage("down")  # already down: stays down
    assert refused(emu)
    emu.outage("slow", delay=0)  # up again, and slow
    assert post(api, emu, "/send-sms", SMS).ok


def test_an_outage_with_a_duration_lifts_itself(
    emu: TextFlowEmulator, api: requests.Session
) -> None:
    emu.outage("error", duration=60)
    view = requests.get(control_url(emu) + "/state", timeout=5).json()["outage"]
    assert view["mode"] == "error" and 55 < view["ends_in"] <= 60
    emu.outage("error", duration=0.2)
    wait_until(lambda: emu.current_outage is None)
    assert post(api, emu, "/send-sms", SMS).ok
    # Down for long enough that no slow machine sees it lift before it looks; then its
    # timer's callback runs as the timer would, and the port opens again.
    emu.outage("down", duration=60)
    assert refused(emu)
    emu._outage_over(emu.current_outage)
    wait_until(lambda: not refused(emu))
    assert emu.current_outage is None and post(api, emu, "/send-sms", SMS).ok


def test_an_outage_timer_does_not_lift_the_outage_that_replaced_it(
    emu: TextFlowEmulator, api: requests.Session
) -> None:
    emu.outage("error", duration=60)
    first = emu.current_outage
    assert first is not None
    emu.outage("rate_limited")
    emu._outage_over(first)  # the first one's timer, had it fired before its cancel
    assert emu.current_outage is not None and emu.current_outage.mode == "rate_limited"
    emu.stop()
    emu._outage_over(first)  # a late timer on a stopped emulator does nothing
    assert emu.current_outage is None


def test_an_outage_refuses_bad_arguments(emu: TextFlowEmulator) -> None:
    calls: tuple[dict[str, Any], ...] = (
        {"mode": "nope"},
        {"mode": "error", "delay": 1},
        {"mode": "slow", "status": 500},
        {"mode": "down", "retry_after": 1},
        {"mode": "slow", "delay": -1},
        {"mode": "slow", "delay": True},
        {"mode": "error", "status": 404},
        {"mode": "rate_limited", "retry_after": 1.5},
        {"mode": "down", "duration": 0},
        {"mode": None, "duration": 5},
    )
    for kwargs in calls:
        mode = kwargs.pop("mode")
        with pytest.raises(ValueError):
            emu.outage(mode, **kwargs)
    assert emu.current_outage is None
    with pytest.raises(RuntimeError, match="start"):
        TextFlowEmulator().outage("error")


def test_the_outage_control_endpoint(emu: TextFlowEmulator, api: requests.Session) -> None:
    outage = control_url(emu) + "/outage"
    answers = [
        ({"mode": "slow", "delay": 12.5}, {"mode": "slow", "delay": 12.5, "ends_in": None}),
        ({"mode": "error"}, {"mode": "error", "status": 500, "ends_in": None}),
        ({"mode": "rate_limited"}, {"mode": "rate_limited", "retry_after": 10, "ends_in": None}),
    ]
    for body, shown in answers:
        r = requests.post(outage, json=body, timeout=5)
        assert r.status_code == 200 and r.json() == {"outage": shown}
        assert requests.get(control_url(emu) + "/state", timeout=5).json()["outage"] == shown
    assert post(api, emu, "/send-sms", SMS).status_code == 429
    r = requests.post(outage, json={"mode": None}, timeout=5)
    assert r.json() == {"outage": None}
    assert post(api, emu, "/send-sms", SMS).status_code == 200

    for body, message in (
        ({}, "mode is required"),
        ({"mode": 3}, "mode must be a str or null"),
        ({"mode": "error", "times": 2}, "Unknown outage options: times"),
        ({"mode": "down"}, "needs a duration"),
        ({"mode": "error", "delay": 3}, "only for the 'slow' outage"),
    ):
        r = requests.post(outage, json=body, timeout=5)
        assert r.status_code == 400 and message in r.json()["message"], (body, r.text)
    assert requests.get(outage, timeout=5).status_code == 405
    assert emu.current_outage is None


def test_a_down_outage_over_http_answers_then_closes_the_port(
    emu: TextFlowEmulator, api: requests.Session
) -> None:
    r = api.post(control_url(emu) + "/outage", json={"mode": "down", "duration": 60}, timeout=5)
    assert r.status_code == 200 and r.headers["Connection"] == "close"
    assert r.json()["outage"]["mode"] == "down"
    assert refused(emu)
    emu._outage_over(emu.current_outage)  # what its timer does after the 60 s
    wait_until(lambda: not refused(emu))
    assert requests.get(control_url(emu) + "/state", timeout=5).json()["outage"] is None


# -- verify-code refusals say "valid": false; bulk-count by GET ----------------------------


def test_every_verify_code_refusal_says_valid_false(
    emu: TextFlowEmulator, api: requests.Session
) -> None:
    body = {"phone_number": NUMBER, "code": "1234"}
    refusals = [
        requests.post(emu.url + "/verify-code", json=body, timeout=5),  # no key
        requests.post(
            emu.url + "/verify-code",
            json=body,
            headers={"Authorization": "Bearer " + "x" * 64},  # a wrong key
            timeout=5,
        ),
        post(api, emu, "/verify-code", {"phone_number": "123", "code": "1234"}),
        api.get(emu.url + "/verify-code", timeout=5),  # 405
    ]
    emu.fault("status", path="/verify-code", status=503)
    emu.fault("rate_limit", path="/verify-code")
    refusals += [post(api, emu, "/verify-code", body), post(api, emu, "/verify-code", body)]
    assert [r.status_code for r in refusals] == [400, 404, 400, 405, 503, 429]
    for r in refusals:
        answer = r.json()
        assert answer["ok"] is False and answer["valid"] is False, answer
        assert set(answer) == {"ok", "status", "message", "valid"}
    # Other endpoints' refusals are TextFlow's plain error body.
    assert "valid" not in post(api, emu, "/send-code", {"phone_number": "123"}).json()
    emu.fault("status", path="/send-sms")
    assert "valid" not in post(api, emu, "/send-sms", SMS).json()
    # A wrong code is not a refusal: 200, ok true, valid false (as before).
    r = post(api, emu, "/verify-code", body)
    assert r.status_code == 200 and r.json()["ok"] is True and r.json()["valid"] is False


def test_a_respond_fault_on_verify_code_is_sent_exactly(
    emu: TextFlowEmulator, api: requests.Session
) -> None:
    exact = '{"ok": false, "status": 400, "message": "Odd"}'
    emu.fault("respond", path="/verify-code", status=400, body=exact)
    emu.fault("html", path="/verify-code")
    assert post(api, emu, "/verify-code", {"phone_number": NUMBER, "code": "1"}).text == exact
    r = post(api, emu, "/verify-code", {"phone_number": NUMBER, "code": "1"})
    assert r.status_code == 502 and r.headers["Content-Type"] == "text/html"


def test_bulk_count_answers_get_as_well_as_post(
    emu: TextFlowEmulator, api: requests.Session
) -> None:
    post(api, emu, "/bulk-sms", {"phone_numbers": [NUMBER, OTHER], "text": "x"})
    by_get = api.get(emu.url + "/bulk-count", timeout=5)
    by_post = api.post(emu.url + "/bulk-count", timeout=5)
    assert by_get.status_code == by_post.status_code == 200
    assert by_get.json() == by_post.json()
    assert by_get.json()["data"] == {"count": 2}
    r = api.put(emu.url + "/bulk-count", timeout=5)
    assert r.status_code == 405 and r.headers["Allow"] == "GET, POST"
    assert [c.method for c in emu.calls("/bulk-count")] == ["GET", "POST", "PUT"]
    # Without a key, by either method: refused as any endpoint refuses.
    assert requests.get(emu.url + "/bulk-count", timeout=5).status_code == 400


# -- bulk jobs drain by themselves at bulk_rate ---------------------------------------------


def bulk_count(api: requests.Session, emu: TextFlowEmulator) -> int:
    count: int = api.get(emu.url + "/bulk-count", timeout=5).json()["data"]["count"]
    return count


def test_a_bulk_job_drains_at_bulk_rate_on_the_emulators_clock(api: requests.Session) -> None:
    # A fixed clock: only advance_clock() delivers, so the counts hold exactly on any machine.
    with TextFlowEmulator(bulk_rate=1, clock=lambda: T0) as emu:
        numbers = [f"+1202555{i:04d}" for i in range(10)]
        post(api, emu, "/bulk-sms", {"phone_numbers": numbers, "text": "Sale"})
        assert emu.bulk_pending == 10 and bulk_count(api, emu) == 10
        emu.advance_clock(3)
        assert emu.bulk_pending == 7 and bulk_count(api, emu) == 7
        state = requests.get(control_url(emu) + "/state", timeout=5).json()
        assert (state["bulk_pending"], state["bulk_rate"]) == (7, 1.0)
        emu.advance_clock(0.5)
        emu.advance_clock(0.5)  # half-recipients add up: reading often does not slow it down
        assert emu.bulk_pending == 6
        post(api, emu, "/bulk-sms", {"phone_numbers": numbers[:4], "text": "Again"})
        assert emu.bulk_pending == 10  # a new job queues behind what is left
        emu.advance_clock(60)
        assert emu.bulk_pending == 0 and bulk_count(api, emu) == 0
        # Nothing is banked while nothing is pending: a new job starts from scratch.
        post(api, emu, "/bulk-sms", {"phone_numbers": numbers, "text": "Later"})
        assert emu.bulk_pending == 10


def test_the_default_rate_drains_a_small_job_in_a_few_seconds(api: requests.Session) -> None:
    with TextFlowEmulator(clock=lambda: T0) as emu:
        assert emu.bulk_rate == 5.0
        post(api, emu, "/bulk-sms", {"phone_numbers": [NUMBER] * 10, "text": "x"})
        assert emu.bulk_pending == 10
        emu.advance_clock(2)
        assert emu.bulk_pending == 0


def test_bulk_rate_zero_only_delivers_by_hand_and_reset_restores_the_rate(
    emu: TextFlowEmulator, api: requests.Session
) -> None:
    assert emu.bulk_rate == 0
    post(api, emu, "/bulk-sms", {"phone_numbers": [NUMBER, OTHER, NUMBER], "text": "x"})
    emu.advance_clock(3600)
    assert emu.bulk_pending == 3
    emu.bulk_rate = 2
    assert emu.bulk_pending == 3  # the hour at rate 0 delivered nothing
    emu.advance_clock(1)
    assert emu.bulk_pending == 1
    emu.deliver_bulk()
    assert emu.bulk_pending == 0
    emu.reset()
    assert emu.bulk_rate == 0
    with pytest.raises(ValueError):
        emu.bulk_rate = -1
    for bad in (-1, float("inf"), float("nan"), True, "5"):
        with pytest.raises(ValueError, match="bulk_rate"):
            TextFlowEmulator(bulk_rate=bad)  # type: ignore[arg-type]


def test_a_clock_put_back_by_reset_does_not_stall_delivery(api: requests.Session) -> None:
    with TextFlowEmulator(bulk_rate=1, clock=lambda: T0) as emu:
        emu.advance_clock(1000)
        post(api, emu, "/bulk-sms", {"phone_numbers": [NUMBER, OTHER], "text": "x"})
        emu.reset()  # the clock goes back 1000 s, the job is forgotten
        post(api, emu, "/bulk-sms", {"phone_numbers": [NUMBER, OTHER], "text": "x"})
        emu.advance_clock(1)
        assert emu.bulk_pending == 1


def test_textflow_bulk_count_wait_finishes_against_a_draining_emulator(
    textflow_live: TextFlowEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``manage.py textflow_bulk_count --wait`` ends by itself: TextFlow (here the emulator)
    delivers the job while the command polls. Each of its sleeps moves the emulator's clock
    instead of waiting."""
    import io
    import types

    from django.core.management import call_command

    from textflow_django.management.commands import textflow_bulk_count

    # The plugin's emulator does not drain (bulk_rate 0). At 1 a second, the wall time a slow
    # run adds to the emulator's clock (under a second) cannot save a poll.
    textflow_live.bulk_rate = 1.0
    numbers = [f"+1202555{i:04d}" for i in range(10)]
    r = requests.post(
        textflow_live.url + "/bulk-sms",
        json={"phone_numbers": numbers, "text": "Sale"},
        headers=AUTH,
        timeout=5,
    )
    assert r.ok
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        textflow_live.advance_clock(seconds)

    monkeypatch.setattr(
        textflow_bulk_count, "time", types.SimpleNamespace(monotonic=time.monotonic, sleep=sleep)
    )
    out, err = io.StringIO(), io.StringIO()
    call_command(
        "textflow_bulk_count", "--wait", "--interval", "2.5", "--timeout", "60",
        stdout=out, stderr=err,
    )  # fmt: skip
    assert out.getvalue().strip() == "All 10 recipients delivered: nothing is pending."
    # 10 recipients at 1 a second: 10 s of the emulator's clock, in 2.5 s polls.
    assert slept == [2.5] * 4
    assert len(textflow_live.calls("/bulk-count")) == 5


# -- last-code reads the newest code SMS, whoever made the code; on_message -----------------


def test_last_code_reads_a_local_mode_sms_as_well_as_send_code(
    emu: TextFlowEmulator, api: requests.Session
) -> None:
    last_code = control_url(emu) + "/last-code"

    def read(number: str = NUMBER) -> Any:
        r = requests.get(last_code, params={"phone_number": number}, timeout=5)
        assert r.status_code == 200
        assert r.json()["phone_number"] == number
        return r.json()["code"]

    assert read() is None
    # A site in local mode makes its own code and sends it by /send-sms in TextFlow's words.
    local = {"phone_number": NUMBER, "text": "Your verification code for Acme is: 123456"}
    assert post(api, emu, "/send-sms", local).ok
    assert read() == emu.last_code(NUMBER) == "123456"
    post(api, emu, "/send-sms", {"phone_number": NUMBER, "text": "Your verification code is: 0042"})
    assert read() == "0042"
    emu.advance_clock(86_400 * 30)  # the site's expiry is not the emulator's to know
    assert read() == "0042"
    # An SMS that is not a code SMS leaves the last code alone.
    for text in ("Welcome aboard!", "Your verification code for Acme is: 12ab", "Order 123456"):
        post(api, emu, "/send-sms", {"phone_number": NUMBER, "text": text})
    post(api, emu, "/bulk-sms", {"phone_numbers": [NUMBER], "text": "Your verification code is: 9"})
    assert read() == "0042"
    # /send-code after it: its code is the newest, until it expires.
    sent = post(api, emu, "/send-code", {"phone_number": NUMBER, "seconds": 60}).json()
    assert read() == sent["data"]["verification_code"]
    post(api, emu, "/send-sms", {"phone_number": NUMBER, "text": "Your verification code is: 777"})
    assert read() == "777"
    assert read(OTHER) is None
    # A service name may hold anything, ": " and digits included.
    odd = "Your verification code for Shop 24: is: great is: 5150"
    post(api, emu, "/send-sms", {"phone_number": OTHER, "text": odd})
    assert read(OTHER) == "5150"
    # With WEBOTP_DOMAIN the code SMS ends with the WebOTP line: still a code SMS.
    webotp = "Your verification code for Acme is: 246810\n\n@www.example.com #246810"
    post(api, emu, "/send-sms", {"phone_number": OTHER, "text": webotp})
    assert read(OTHER) == "246810"
    # A line naming another code is not the WebOTP line of this one.
    forged = "Your verification code for Acme is: 111111\n\n@www.example.com #222222"
    post(api, emu, "/send-sms", {"phone_number": OTHER, "text": forged})
    assert read(OTHER) == "246810"


def test_on_message_hears_every_sms_accepted(api: requests.Session) -> None:
    heard: list[SentSMS] = []
    with TextFlowEmulator(on_message=heard.append) as emu:
        post(api, emu, "/send-sms", SMS)
        code = post(api, emu, "/send-code", {"phone_number": OTHER, "service_name": "Acme"})
        post(api, emu, "/bulk-sms", {"phone_numbers": [NUMBER, OTHER], "text": "Sale"})
        post(api, emu, "/send-sms", {"phone_number": "bad", "text": "x"})  # refused: not heard
        text = code.json()["data"]["message_text"]
        assert heard == [
            SentSMS(NUMBER, "x", "sms"),
            SentSMS(OTHER, text, "code"),
            SentSMS(NUMBER, "Sale", "bulk"),
            SentSMS(OTHER, "Sale", "bulk"),
        ]


def test_a_failing_on_message_does_not_change_the_answer(
    api: requests.Session, capsys: pytest.CaptureFixture[str]
) -> None:
    def broken(sms: SentSMS) -> None:
        raise RuntimeError("listener bug")

    with TextFlowEmulator(on_message=broken) as emu:
        assert post(api, emu, "/send-sms", SMS).status_code == 200
        assert emu.message_count == 1
    assert "listener bug" in capsys.readouterr().err


def test_a_port_taken_while_down_keeps_the_emulator_down(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with TextFlowEmulator() as emu:
        emu.outage("down")
        with socket.socket() as taker:  # another program grabs the port meanwhile
            taker.bind(("127.0.0.1", emu.port))
            taker.listen()
            with pytest.raises(OSError):
                emu.outage(None)
            assert emu.current_outage is not None and emu.current_outage.mode == "down"
            emu.outage("down", duration=0.05)  # its timer cannot bring it back either
            wait_until(lambda: "could not listen again" in capsys.readouterr().err)
            assert emu.current_outage is not None and emu.current_outage.mode == "down"
        emu.outage(None)  # the port is free again
        assert requests.get(control_url(emu) + "/state", timeout=5).json()["outage"] is None
    TextFlowEmulator().reset()  # never started: nothing to lift, nothing to fail


def test_for_path_leaves_what_is_no_textflow_refusal_alone() -> None:
    from textflow_django.testing._emulator._responses import Response, error, for_path

    refusal = error(400, "Phone number is invalid")
    assert for_path("/send-sms", refusal) is refusal
    shaped = for_path("/verify-code", refusal)
    assert json.loads(shaped.body)["valid"] is False and shaped.status == 400
    for odd in (
        Response(400, b"{not json"),
        Response(400, b"[1]"),
        Response(400, b'{"ok": true}'),
        Response(502, b"<html></html>", "text/html"),
        Response(200, b'{"ok": false}'),
    ):
        assert for_path("/verify-code", odd) is odd
