"""TextFlow's own Python client, ``textflowsms`` (PyPI 0.1.0), driven against the emulator.

The emulator must stay faithful to TextFlow, not only to the client this project wrote. So
every operation the official client offers (``useKey``, ``sendSMS``, ``sendVerificationSMS``,
``verifyCode``) runs here against a real emulator on loopback, with its success answers and
its error answers, and each test asserts the exact request the emulator received.

``textflowsms`` hard-codes ``https://textflow.me/api/<endpoint>`` in every function and sends
with its module's ``requests.post``. The tests set that module attribute to a forwarder
(:class:`ToEmulator`) that swaps only the origin for the emulator's URL and hands everything
else, unchanged, to the real ``requests.post``: nothing is mocked, every call crosses a real
socket, and a new URL or another ``requests`` function in a later release fails loudly here.
No Django here.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import requests
import textflowsms  # type: ignore[import-untyped]  # no type information shipped

from textflow_django.testing import EMULATOR_API_KEY, TextFlowEmulator

NUMBER = "+381690156360"
#: What textflowsms 0.1.0 sends every request to.
TEXTFLOW_ROOT = "https://textflow.me/api"


class ToEmulator:
    """Stands in for the ``requests`` module inside ``textflowsms``: its one function,
    ``post``, goes to the emulator instead of textflow.me, through the real ``requests``."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url

    def post(self, url: str, **kwargs: Any) -> requests.Response:
        assert url.startswith(TEXTFLOW_ROOT + "/"), f"textflowsms called {url!r}"
        # The official client sets no timeout; a hung test should fail, not hang the suite.
        return requests.post(self.base_url + url.removeprefix(TEXTFLOW_ROOT), timeout=10, **kwargs)


@pytest.fixture(scope="module")
def server() -> Iterator[TextFlowEmulator]:
    with TextFlowEmulator() as emulator:
        yield emulator


@pytest.fixture
def emu(server: TextFlowEmulator, monkeypatch: pytest.MonkeyPatch) -> Iterator[TextFlowEmulator]:
    """The emulator, reset, with ``textflowsms`` pointed at it and using the emulator's key."""
    server.reset()
    monkeypatch.setattr(textflowsms, "requests", ToEmulator(server.url))
    monkeypatch.setattr(textflowsms, "apiKey", "")
    textflowsms.useKey(EMULATOR_API_KEY)
    yield server
    server.reset()


def received(emu: TextFlowEmulator) -> list[tuple[str, str, Any]]:
    """What the emulator received: (method, path, JSON body) per request, in order."""
    return [(r.method, r.path, r.json) for r in emu.requests]


def assert_headers(emu: TextFlowEmulator, key: str = EMULATOR_API_KEY) -> None:
    for request in emu.requests:
        assert request.headers["content-type"] == "application/json"
        assert request.headers["authorization"] == f"Bearer {key}"


# -- sendSMS ------------------------------------------------------------------------------


def test_send_sms(emu: TextFlowEmulator) -> None:
    result = textflowsms.sendSMS(NUMBER, "Dummy message text...")
    assert isinstance(result, textflowsms.SendMessageResult)
    assert (result.ok, result.status, result.message) == (True, 200, "Message sent successfully")
    data = result.data
    assert (data.to, data.content, data.country_code) == (NUMBER, "Dummy message text...", "Serbia")
    assert data.price == 0.05 and isinstance(data.timestamp, int)
    json.loads(str(result))  # its own __str__ works on what the emulator sent
    assert received(emu) == [
        ("POST", "/send-sms", {"phone_number": NUMBER, "text": "Dummy message text..."})
    ]
    assert_headers(emu)


@pytest.mark.parametrize(
    ("setup", "number", "status", "message"),
    [
        ("wrong_key", NUMBER, 404, "API key not found"),
        (None, "+1 202 555 0143", 400, "Phone number is invalid"),
        (None, "381690156360", 400, "Phone number is invalid"),
        ("no_credit", NUMBER, 400, "Insufficient balance"),
    ],
    ids=["wrong-key", "spaces", "no-plus", "no-credit"],
)
def test_send_sms_refused(
    emu: TextFlowEmulator, setup: str | None, number: str, status: int, message: str
) -> None:
    key = EMULATOR_API_KEY
    if setup == "wrong_key":
        key = "Y" * 64
        textflowsms.useKey(key)
    elif setup == "no_credit":
        emu.credits = 0
    result = textflowsms.sendSMS(number, "Hi")
    assert (result.ok, result.status, result.message) == (False, status, message)
    assert not hasattr(result, "data")
    assert received(emu) == [("POST", "/send-sms", {"phone_number": number, "text": "Hi"})]
    assert_headers(emu, key)
    assert emu.messages == []


# -- sendVerificationSMS ---------------------------------------------------------------------


def test_send_verification_sms_with_its_defaults(emu: TextFlowEmulator) -> None:
    result = textflowsms.sendVerificationSMS(NUMBER)
    assert isinstance(result, textflowsms.VerifyPhoneResult)
    assert (result.ok, result.status) == (True, 200)
    code = result.data.verification_code
    assert code == emu.last_code(NUMBER)
    # An empty service name is no service name.
    assert result.data.message_text == f"Your verification code is: {code}"
    assert isinstance(result.data.expires, int)
    json.loads(str(result))
    # The official client always sends service_name and seconds.
    assert received(emu) == [
        ("POST", "/send-code", {"phone_number": NUMBER, "service_name": "", "seconds": 600})
    ]
    assert_headers(emu)


def test_send_verification_sms_with_a_service_and_a_lifetime(emu: TextFlowEmulator) -> None:
    result = textflowsms.sendVerificationSMS(NUMBER, service_name="Guest", seconds=60)
    code = result.data.verification_code
    assert result.data.message_text == f"Your verification code for Guest is: {code}"
    assert received(emu) == [
        ("POST", "/send-code", {"phone_number": NUMBER, "service_name": "Guest", "seconds": 60})
    ]
    emu.advance_clock(61)
    assert textflowsms.verifyCode(NUMBER, code).valid is False  # expired


@pytest.mark.parametrize(
    ("setup", "number", "seconds", "status", "message"),
    [
        ("wrong_key", NUMBER, 600, 404, "API key not found"),
        (None, "0038169", 600, 400, "Phone number is invalid"),
        (None, NUMBER, 86_401, 400, "Invalid seconds"),
        ("no_credit", NUMBER, 600, 400, "Insufficient balance"),
    ],
    ids=["wrong-key", "bad-number", "over-a-day", "no-credit"],
)
def test_send_verification_sms_refused(
    emu: TextFlowEmulator, setup: str | None, number: str, seconds: int, status: int, message: str
) -> None:
    if setup == "wrong_key":
        textflowsms.useKey("Y" * 64)
    elif setup == "no_credit":
        emu.credits = 0
    result = textflowsms.sendVerificationSMS(number, seconds=seconds)
    assert (result.ok, result.status, result.message) == (False, status, message)
    assert not hasattr(result, "data")
    assert received(emu) == [
        ("POST", "/send-code", {"phone_number": number, "service_name": "", "seconds": seconds})
    ]
    assert emu.last_code(NUMBER) is None


# -- verifyCode ---------------------------------------------------------------------------


def test_verify_code_valid_and_not(emu: TextFlowEmulator) -> None:
    code = textflowsms.sendVerificationSMS(NUMBER).data.verification_code
    wrong = "0000" if code != "0000" else "1111"
    good = textflowsms.verifyCode(NUMBER, code)
    bad = textflowsms.verifyCode(NUMBER, wrong)
    assert isinstance(good, textflowsms.VerifyCodeResult)
    assert (good.ok, good.status, good.valid, good.valid_code) == (True, 200, True, code)
    assert isinstance(good.expires, int)
    assert (bad.ok, bad.status, bad.valid) == (True, 200, False)
    assert not hasattr(bad, "valid_code") and not hasattr(bad, "expires")
    json.loads(str(good))
    assert received(emu)[1:] == [
        ("POST", "/verify-code", {"phone_number": NUMBER, "code": code}),
        ("POST", "/verify-code", {"phone_number": NUMBER, "code": wrong}),
    ]
    assert_headers(emu)


@pytest.mark.parametrize(
    ("setup", "number", "status", "message"),
    [
        ("wrong_key", NUMBER, 404, "API key not found"),
        (None, "+1 202 555 0143", 400, "Phone number is invalid"),
        ("error", NUMBER, 500, "Internal server error"),
        ("rate_limited", NUMBER, 429, "Too many requests"),
    ],
    ids=["wrong-key", "bad-number", "server-error", "rate-limited"],
)
def test_verify_code_refused_says_not_valid(
    emu: TextFlowEmulator, setup: str | None, number: str, status: int, message: str
) -> None:
    """The client reads ``valid`` from every answer: a refusal without it was a KeyError."""
    if setup == "wrong_key":
        textflowsms.useKey("Y" * 64)
    elif setup is not None:
        emu.outage(setup)
    result = textflowsms.verifyCode(number, "1234")
    assert (result.ok, result.status, result.message, result.valid) == (
        False,
        status,
        message,
        False,
    )
    assert not hasattr(result, "valid_code")
    assert received(emu) == [("POST", "/verify-code", {"phone_number": number, "code": "1234"})]


# -- what the client refuses by itself: nothing reaches the emulator -------------------------


def test_the_clients_own_refusals_send_nothing(emu: TextFlowEmulator) -> None:
    missing_number = "You have not specified the recipient phone number. "
    assert textflowsms.sendSMS("", "Hi") == {"ok": False, "status": 400, "message": missing_number}
    assert textflowsms.sendSMS(NUMBER, "")["message"] == "You have not specified the message body. "
    assert textflowsms.sendVerificationSMS("")["message"] == missing_number
    assert textflowsms.verifyCode("", "1")["valid"] is False
    assert textflowsms.verifyCode(NUMBER, "")["valid"] is False
    textflowsms.useKey("")
    no_key = "You have not specified the API key. "
    assert textflowsms.sendSMS(NUMBER, "Hi")["message"] == no_key
    assert textflowsms.sendVerificationSMS(NUMBER)["message"] == no_key
    assert textflowsms.verifyCode(NUMBER, "1") == {
        "ok": False,
        "status": 400,
        "message": no_key,
        "valid": False,
    }
    assert emu.requests == []
