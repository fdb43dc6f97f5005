"""Operator events (``textflow_django._events``): the exact line each representative flow
logs, that every name the package emits is listed, that a secret-named field is refused,
that a failing listener is isolated, and (every test here runs under the conftest's
``no_secrets_in_logs``) that no line carries the API key or a code, through locmem and
through the emulator's real HTTP path."""

from __future__ import annotations

import ast
import logging
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

import textflow_django
from textflow_django import _events, bulk, verification
from textflow_django.backends import locmem
from textflow_django.client import (
    ClientConfigurationError,
    InsufficientBalance,
    InvalidAPIKey,
    TextFlowAPIError,
    TextFlowBadResponse,
    TextFlowCircuitOpen,
    TextFlowClient,
    TextFlowConnectionError,
    TextFlowError,
    TextFlowRateLimited,
    TextFlowRejectedNumber,
    TextFlowServerError,
    TextFlowTimeout,
    TextFlowUnavailable,
)
from textflow_django.client._report import outcome_of
from textflow_django.exceptions import (
    CountryNotAllowed,
    InvalidCode,
    LimitsUnavailable,
    RateLimited,
    ResendTooSoon,
    SMSProviderError,
    SMSProviderUnavailable,
)
from textflow_django.phone import InvalidPhoneNumberError
from textflow_django.testing import EMULATOR_API_KEY, TextFlowEmulator

from .conftest import tf

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("no_secrets_in_logs")]

NUMBER = "+12025550143"
MASKED = "+1********43"
OTHER = "+12025550178"
#: A line's seconds: three decimals, whatever the machine's speed.
SECONDS = r"\d+\.\d{3}"


def events(caplog: pytest.LogCaptureFixture, *names: str) -> list[str]:
    """The event lines logged so far whose name is one of ``names`` (any event if none)."""
    found = []
    for record in caplog.records:
        message = record.getMessage()
        name = message.split(" ", 1)[0]
        if name in _events.EVENTS and (not names or name in names):
            found.append(message)
    return found


@pytest.fixture(autouse=True)
def _info(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)


# -- verification: sent, refused, verified, failed -----------------------------------------


def test_a_code_sent_then_a_wrong_and_a_right_guess(caplog: pytest.LogCaptureFixture) -> None:
    verification.send_code(NUMBER)
    code = locmem.outbox[-1].text.rsplit(" ", 1)[-1]
    with pytest.raises(InvalidCode):
        verification.check_code(NUMBER, "000000" if code != "000000" else "111111")
    verification.check_code(NUMBER, code)
    assert events(caplog) == [
        f"textflow.send_code.sent number={MASKED} country=US mode=local",
        f"textflow.verify_code.failed reason=invalid_code number={MASKED} attempts_left=4",
        f"textflow.verify_code.verified number={MASKED} country=US via=check",
    ]
    [record] = [r for r in caplog.records if "send_code.sent" in r.getMessage()]
    assert (record.name, record.levelname) == ("textflow_django", "INFO")


def test_a_code_its_maker_checked_is_verified_via_confirm(
    caplog: pytest.LogCaptureFixture,
) -> None:
    verification.send_code(NUMBER, code="48213957")
    verification.confirm(NUMBER)
    assert verification.confirm(NUMBER) is None  # nothing left to confirm: says nothing
    assert events(caplog) == [
        f"textflow.send_code.sent number={MASKED} country=US mode=local",
        f"textflow.verify_code.verified number={MASKED} country=US via=confirm",
    ]


def test_a_resend_inside_the_cooldown(caplog: pytest.LogCaptureFixture) -> None:
    verification.send_code(NUMBER)
    with pytest.raises(ResendTooSoon) as info:
        verification.send_code(NUMBER)
    assert events(caplog, "textflow.send_code.refused") == [
        f"textflow.send_code.refused reason=resend_too_soon number={MASKED} "
        f"retry_after={info.value.retry_after}"
    ]


def test_a_cap_names_its_scopes(settings: Any, caplog: pytest.LogCaptureFixture) -> None:
    tf(settings, RESEND_COOLDOWN=0, SEND_LIMITS={"number": ["1/h"], "global": ["1/h"]})
    verification.send_code(NUMBER)
    with pytest.raises(RateLimited) as info:
        verification.send_code(NUMBER)
    [line] = events(caplog, "textflow.send_code.refused")
    assert line == (
        f"textflow.send_code.refused reason=rate_limited number={MASKED} scopes=number,global "
        f"retry_after={info.value.retry_after}"
    )


def test_a_check_past_the_failed_check_cap(settings: Any, caplog: pytest.LogCaptureFixture) -> None:
    from django.test import RequestFactory

    tf(settings, FAILED_CHECK_LIMITS={"ip": ["1/h"]})
    verification.send_code(NUMBER)
    request = RequestFactory().post("/", REMOTE_ADDR="198.51.100.7")
    request.session = {}  # type: ignore[attr-defined]
    with pytest.raises(InvalidCode):
        verification.check_code(NUMBER, "000000", request=request)
    with pytest.raises(RateLimited) as info:
        verification.check_code(NUMBER, "000000", request=request)
    assert events(caplog, "textflow.verify_code.failed")[-1] == (
        f"textflow.verify_code.failed reason=rate_limited number={MASKED} scopes=ip "
        f"retry_after={info.value.retry_after}"
    )


def test_a_country_not_allowed_and_a_number_that_is_none(
    settings: Any, caplog: pytest.LogCaptureFixture
) -> None:
    tf(settings, ALLOWED_COUNTRIES=["GB"])
    with pytest.raises(CountryNotAllowed):
        verification.send_code(NUMBER)
    with pytest.raises(InvalidPhoneNumberError):
        verification.send_code("+1 202 555")
    with pytest.raises(InvalidPhoneNumberError):
        verification.check_code("nonsense", "123456")
    assert events(caplog) == [
        f"textflow.send_code.refused reason=country_not_allowed number={MASKED}",
        "textflow.send_code.refused reason=invalid_phone_number number=+1****55 detail=invalid",
        "textflow.verify_code.failed reason=invalid_phone_number number=*** detail=invalid",
    ]


def test_a_store_that_fails_is_an_error_line_with_numbers_masked(
    settings: Any, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    from textflow_django import ratelimit

    def down(*args: object, **kwargs: object) -> None:
        raise ConnectionError(f"redis 10.0.0.7:6379 went away holding send:number:{NUMBER}")

    monkeypatch.setattr(ratelimit.DatabaseStore, "acquire", down)
    with pytest.raises(LimitsUnavailable):
        verification.send_code(NUMBER)
    assert events(caplog) == [
        "textflow.store.failed error=ConnectionError "
        f"detail='redis 10.0.0.7:6379 went away holding send:number:{MASKED}' settled=False",
        f"textflow.send_code.refused reason=service_unavailable number={MASKED} retry_after=10",
    ]
    [record] = [r for r in caplog.records if "store.failed" in r.getMessage()]
    assert record.levelname == "ERROR" and record.exc_info is None  # no traceback
    assert NUMBER not in caplog.text


# -- TextFlow: the calls, through the emulator -----------------------------------------------


def test_a_textflow_failure_is_a_call_a_warning_and_a_refusal(
    settings: Any, textflow_live: TextFlowEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    textflow_live.fault("status", path="/send-sms", status=500)
    with pytest.raises(SMSProviderError):
        verification.send_code(NUMBER)
    call, failed, refused = events(caplog)
    assert re.fullmatch(
        f"textflow.api.call operation=send_sms outcome=server_error seconds={SECONDS}", call
    )
    assert failed == (
        "textflow.api.failed operation=send_sms outcome=server_error error=TextFlowServerError "
        "status=500 maybe_sent=True"
    )
    assert refused == (
        f"textflow.send_code.refused reason=sms_provider_error number={MASKED} retry_after=30 "
        "error=TextFlowServerError status=500 maybe_sent=True"
    )
    levels = {r.getMessage().split(" ", 1)[0]: r.levelname for r in caplog.records}
    assert levels["textflow.api.call"] == "DEBUG"
    assert levels["textflow.api.failed"] == "WARNING"


def test_the_breaker_open_is_an_outcome_of_its_own(
    settings: Any, textflow_live: TextFlowEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    tf(settings, BREAKER_THRESHOLD=1)
    textflow_live.fault("status", path="/send-sms", status=503)
    with pytest.raises(SMSProviderError):
        verification.send_code(NUMBER)
    with pytest.raises(SMSProviderUnavailable):
        verification.send_code(OTHER)  # not tried: the breaker is open
    assert len(textflow_live.calls("/send-sms")) == 1
    call = events(caplog, "textflow.api.call")[-1]
    assert re.fullmatch(
        f"textflow.api.call operation=send_sms outcome=circuit_open seconds={SECONDS}", call
    )
    assert events(caplog, "textflow.send_code.refused")[-1].startswith(
        "textflow.send_code.refused reason=sms_provider_unavailable number=+1********78 "
    )
    assert events(caplog, "textflow.send_code.refused")[-1].endswith(
        " error=TextFlowCircuitOpen status=None maybe_sent=False"
    )


@pytest.mark.parametrize(
    ("fault", "outcome"),
    [
        (None, "ok"),
        ({"kind": "rate_limit", "retry_after": 3}, "rate_limited"),
        ({"kind": "status", "status": 500}, "server_error"),
        ({"kind": "malformed"}, "bad_response"),
        ({"kind": "reset"}, "unavailable"),
        (
            {
                "kind": "respond",
                "status": 400,
                "body": '{"ok":false,"message":"Phone number is invalid"}',
            },
            "rejected",
        ),
        (
            {"kind": "respond", "status": 401, "body": '{"ok":false,"message":"Invalid API key"}'},
            "invalid_key",
        ),
        (
            {"kind": "respond", "status": 402, "body": '{"ok":false,"message":"Low balance"}'},
            "insufficient_balance",
        ),
        (
            {"kind": "respond", "status": 403, "body": '{"ok":false,"message":"Forbidden"}'},
            "refused",
        ),
    ],
)
def test_every_call_of_the_client_is_reported_with_its_outcome(
    tf_client: TextFlowClient,
    textflow_emulator: TextFlowEmulator,
    caplog: pytest.LogCaptureFixture,
    fault: dict[str, Any] | None,
    outcome: str,
) -> None:
    if fault is not None:
        textflow_emulator.fault(fault.pop("kind"), path="/send-sms", **fault)
    try:
        tf_client.send_sms(NUMBER, "Hello")
    except TextFlowError:
        assert outcome != "ok"
    [call] = events(caplog, "textflow.api.call")
    assert re.fullmatch(
        f"textflow.api.call operation=send_sms outcome={outcome} seconds={SECONDS}", call
    )
    assert len(events(caplog, "textflow.api.failed")) == (outcome != "ok")


def test_a_server_quoting_the_number_a_code_or_the_key_reaches_no_line(
    textflow_live: TextFlowEmulator,
    caplog: pytest.LogCaptureFixture,
    no_secrets_in_logs: set[str],
) -> None:
    """TextFlow's message is kept out of every line: it may quote anything."""
    no_secrets_in_logs.add("48213957")
    body = f'{{"ok":false,"message":"code 48213957 for {NUMBER} key {EMULATOR_API_KEY}"}}'
    textflow_live.fault("respond", path="/send-sms", status=500, body=body)
    with pytest.raises(SMSProviderError):
        verification.send_code(NUMBER, code="48213957")
    assert len(events(caplog)) == 3
    assert NUMBER not in caplog.text


def test_textflow_mode_runs_under_the_scan_with_every_line_of_its_flow(
    settings: Any,
    textflow_live: TextFlowEmulator,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """TextFlow makes the code: the scan (``no_secrets_in_logs``) reads it from the
    emulator's SMS and finds it in no line, DEBUG included."""
    tf(settings, VERIFY_MODE="textflow")
    verification.send_code(NUMBER)
    code = textflow_live.last_code(NUMBER)
    assert code is not None
    with pytest.raises(InvalidCode):
        verification.check_code(NUMBER, "0000" if code != "0000" else "1111")
    verification.check_code(NUMBER, code)
    names = [line.split(" ", 1)[0] for line in events(caplog)]
    assert names == [
        "textflow.api.call",  # send_code
        "textflow.send_code.sent",
        "textflow.api.call",  # verify_code, wrong
        "textflow.verify_code.failed",
        "textflow.api.call",  # verify_code, right
        "textflow.verify_code.verified",
    ]
    assert events(caplog, "textflow.send_code.sent") == [
        f"textflow.send_code.sent number={MASKED} country=US mode=textflow"
    ]


@pytest.mark.parametrize(
    ("error", "outcome"),
    [
        (TextFlowRejectedNumber("x"), "rejected"),
        (InvalidAPIKey("x"), "invalid_key"),
        (InsufficientBalance("x"), "insufficient_balance"),
        (TextFlowRateLimited("x"), "rate_limited"),
        (TextFlowAPIError("x"), "refused"),
        (TextFlowCircuitOpen("x", retry_after=1), "circuit_open"),
        (TextFlowTimeout("x"), "timeout"),
        (TextFlowServerError("x"), "server_error"),
        (TextFlowBadResponse("x"), "bad_response"),
        (TextFlowConnectionError("x"), "unavailable"),
        (TextFlowUnavailable("x"), "unavailable"),
        (TextFlowError("x"), "error"),
        (ClientConfigurationError("x"), "error"),
        (None, "ok"),
    ],
)
def test_outcome_classes(error: Exception | None, outcome: str) -> None:
    assert outcome_of(error) == outcome


# -- bulk ---------------------------------------------------------------------------------


def test_a_bulk_job_logs_its_batches_and_its_end(
    settings: Any, sms_outbox: list[Any], caplog: pytest.LogCaptureFixture
) -> None:
    tf(settings, BULK_BATCH_SIZE=2)
    job = bulk.create_job(text="Hi", numbers=[NUMBER, OTHER, "+12025550199"])
    bulk.run_job(job.pk)
    batches = list(job.batches.order_by("index").values_list("pk", flat=True))
    assert events(caplog) == [
        f"textflow.bulk.batch_sent job={job.pk} batch={batches[0]} recipients=2",
        f"textflow.bulk.batch_sent job={job.pk} batch={batches[1]} recipients=1",
        f"textflow.bulk.job_finished job={job.pk} sent=3 invalid=0 uncertain=0",
    ]
    # The bulk lines stay on the logger they always had.
    assert {r.name for r in caplog.records if r.getMessage().startswith("textflow.bulk.")} == {
        "textflow_django.bulk"
    }


@pytest.mark.parametrize(
    ("status", "event"),
    [(500, "textflow.bulk.batch_uncertain"), (403, "textflow.bulk.batch_failed")],
)
def test_a_bulk_batch_textflow_fails(
    textflow_live: TextFlowEmulator, caplog: pytest.LogCaptureFixture, status: int, event: str
) -> None:
    job = bulk.create_job(text="Hi", numbers=[NUMBER])
    body = f'{{"ok": false, "message": "Could not reach {NUMBER}"}}'
    textflow_live.fault("respond", path="/bulk-sms", status=status, body=body)
    with pytest.raises(bulk.BulkJobStopped):
        bulk.run_job(job.pk)
    [batch] = job.batches.values_list("pk", flat=True)
    kind = "TextFlowServerError" if status == 500 else "TextFlowAPIError"
    assert events(caplog, event) == [
        f"{event} job={job.pk} batch={batch} error={kind} "
        f"detail='TextFlow /bulk-sms: Could not reach {MASKED} (HTTP {status})'"
    ]
    assert NUMBER not in caplog.text


# -- the module's contract ------------------------------------------------------------------


def _emitted_names() -> dict[str, list[str]]:
    """Every event name the package's source passes to ``emit`` (literally, or as the
    branches of a conditional expression), with where; a name that is not literal is
    reported as ``<not literal>``: a grepped name must be readable in the source."""
    found: dict[str, list[str]] = {}
    root = Path(textflow_django.__file__).parent
    for path in sorted(root.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)
            if name != "emit" or not node.args:
                continue
            where = f"{path.relative_to(root)}:{node.lineno}"
            first = node.args[0]
            options = [first.body, first.orelse] if isinstance(first, ast.IfExp) else [first]
            for option in options:
                if isinstance(option, ast.Constant) and isinstance(option.value, str):
                    found.setdefault(option.value, []).append(where)
                else:
                    found.setdefault("<not literal>", []).append(where)
    return found


def test_every_emitted_name_is_listed() -> None:
    emitted = _emitted_names()
    assert "textflow.send_code.sent" in emitted  # the scan finds them
    assert "textflow.api.call" in emitted
    unlisted = {name: where for name, where in emitted.items() if name not in _events.EVENTS}
    assert unlisted == {}


def test_every_listed_name_is_emitted_somewhere() -> None:
    """A listed name nothing emits would be a line operators wait for in vain."""
    emitted = _emitted_names()
    # Logged directly by _events itself: a listener failing must not call the listeners.
    silent = set(_events.EVENTS) - set(emitted) - {"textflow.events.listener_failed"}
    assert silent == set()


def test_names_are_stable_in_shape() -> None:
    for name, level in _events.EVENTS.items():
        assert re.fullmatch(r"textflow\.[a-z_]+\.[a-z_]+", name), name
        assert level in (logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR), name


@pytest.mark.parametrize("field", sorted(_events.FORBIDDEN_FIELDS))
def test_a_secret_named_field_is_refused_before_anything_happens(
    field: str, caplog: pytest.LogCaptureFixture
) -> None:
    heard: list[str] = []

    def listener(name: str, fields: Mapping[str, object]) -> None:
        heard.append(name)

    _events.add_listener(listener)
    try:
        with pytest.raises(ValueError, match=field):
            _events.emit("textflow.send_code.sent", number=MASKED, **{field: "123456"})
        with pytest.raises(ValueError, match="unknown event"):
            _events.emit("textflow.send_code.snet", number=MASKED)
    finally:
        _events.remove_listener(listener)
    assert heard == [] and events(caplog) == []
    assert "123456" not in caplog.text


@pytest.fixture
def heard() -> Iterator[list[tuple[str, dict[str, object]]]]:
    calls: list[tuple[str, dict[str, object]]] = []

    def broken(name: str, fields: Mapping[str, object]) -> None:
        raise RuntimeError("listener bug")

    def recorder(name: str, fields: Mapping[str, object]) -> None:
        calls.append((name, dict(fields)))

    _events.add_listener(broken)
    _events.add_listener(recorder)
    _events.add_listener(recorder)  # once, however often added
    yield calls
    _events.remove_listener(broken)
    _events.remove_listener(recorder)


def test_a_listener_that_raises_stops_neither_the_others_nor_the_caller(
    heard: list[tuple[str, dict[str, object]]], caplog: pytest.LogCaptureFixture
) -> None:
    sent = verification.send_code(NUMBER)  # a real flow: the send is not disturbed
    assert sent.phone_number == NUMBER and len(locmem.outbox) == 1
    assert heard == [
        ("textflow.send_code.sent", {"number": MASKED, "country": "US", "mode": "local"})
    ]
    [failure] = [r for r in caplog.records if "listener_failed" in r.getMessage()]
    assert failure.levelname == "ERROR"
    assert failure.getMessage().startswith("textflow.events.listener_failed listener='<function")
    assert failure.exc_info is not None and "listener bug" in str(failure.exc_info[1])
    _events.remove_listener(lambda name, fields: None)  # not registered: no error


@pytest.mark.parametrize(
    ("value", "written"),
    [
        ("plain", "plain"),
        ("two words", "'two words'"),
        ("a=b", "'a=b'"),
        ("", "''"),
        ("line\nbreak", "'line\\nbreak'"),
        ('say "hi"', "'say \"hi\"'"),
        (["number", "ip"], "number,ip"),
        (("global",), "global"),
        (frozenset({"b", "a"}), "a,b"),
        (0.1234567, "0.123"),
        (True, "True"),
        (None, "None"),
        (42, "42"),
    ],
)
def test_a_value_is_written_so_the_line_splits_back(value: object, written: str) -> None:
    assert _events.line("textflow.api.call", x=value, y=1) == f"textflow.api.call x={written} y=1"


def test_an_event_without_fields_is_its_name_alone(caplog: pytest.LogCaptureFixture) -> None:
    _events.emit("textflow.breaker.closed")
    assert events(caplog) == ["textflow.breaker.closed"]
