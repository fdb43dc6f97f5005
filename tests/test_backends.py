"""One contract, every backend: the real one against the emulator and the in-process ones."""

from __future__ import annotations

import datetime as dt
import io
import re
import threading
import time
import types
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import pytest
from django.core import mail
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings

from textflow_django.backends import (
    BaseBackend,
    _emulated,
    get_backend,
    load_backend_class,
    locmem,
)
from textflow_django.backends.console import ConsoleBackend
from textflow_django.backends.dummy import DummyBackend
from textflow_django.backends.locmem import LocMemBackend
from textflow_django.backends.textflow import TextFlowBackend
from textflow_django.client import (
    BulkCountResult,
    BulkResult,
    CodeResult,
    SMSResult,
    VerifyResult,
)
from textflow_django.conf import MAX_CODE_TTL
from textflow_django.exceptions import (
    TextFlowAPIError,
    TextFlowConfigurationError,
    TextFlowRejectedNumber,
    TextFlowServerError,
)
from textflow_django.testing import EMULATOR_API_KEY, TextFlowEmulator

from .conftest import tf

# send_sms reads the opt-out list (textflow_django.optouts): every test may touch the database.
pytestmark = pytest.mark.django_db

NUMBER = "+12025550143"
OTHER = "+447700900123"


@dataclass
class Subject:
    backend: BaseBackend
    last_code: Callable[[str], str | None]
    delivered: Callable[[], list[tuple[str, str]]]  # (number, text) of what reached phones


class RecordingDummy(DummyBackend):
    """The dummy backend delivers nothing; this records the generated code for the test."""

    generated: list[str] = []

    def generate_code(self) -> str:
        code = super().generate_code()
        self.generated.append(code)
        return code


@pytest.fixture(params=["textflow", "console", "locmem", "dummy"])
def subject(request, textflow_emulator) -> Iterator[Subject]:
    kind = request.param
    if kind == "textflow":
        backend = TextFlowBackend(api_key=EMULATOR_API_KEY, base_url=textflow_emulator.url)
        yield Subject(
            backend,
            textflow_emulator.last_code,
            lambda: [(m.phone_number, m.text) for m in textflow_emulator.messages],
        )
    elif kind == "console":
        stream = io.StringIO()
        backend = ConsoleBackend(stream=stream)

        def console_code(number: str) -> str | None:
            found = re.findall(rf"CODE to {re.escape(number)} .*\n.*: (\d+)\n", stream.getvalue())
            return found[-1] if found else None

        def console_delivered() -> list[tuple[str, str]]:
            return re.findall(r"\] \w+ to (\+\d+) at .*\n(.*)\n", stream.getvalue())

        yield Subject(backend, console_code, console_delivered)
    elif kind == "locmem":
        locmem.reset()
        yield Subject(
            LocMemBackend(),
            lambda n: next((m.code for m in reversed(locmem.outbox) if m.phone_number == n), None),
            lambda: [(m.phone_number, m.text) for m in locmem.outbox],
        )
    else:
        RecordingDummy.generated = []
        yield Subject(
            RecordingDummy(),
            lambda n: RecordingDummy.generated[-1] if RecordingDummy.generated else None,
            lambda: [],
        )


def test_send_sms(subject: Subject):
    result = subject.backend.send_sms(NUMBER, "Hello")
    assert result.to == NUMBER
    if not isinstance(subject.backend, DummyBackend):
        assert subject.delivered() == [(NUMBER, "Hello")]


def test_send_sms_rejects_an_invalid_number(subject: Subject):
    with pytest.raises(TextFlowRejectedNumber):
        subject.backend.send_sms("12345", "Hello")
    assert subject.delivered() == []


def test_code_round_trip(subject: Subject):
    subject.backend.send_code(NUMBER, service_name="Acme", seconds=60)
    code = subject.last_code(NUMBER)
    assert code and code.isdigit()
    assert subject.backend.verify_code(NUMBER, code).valid is True
    assert (
        subject.backend.verify_code(
            NUMBER, "9" * len(code) if code != "9" * len(code) else "1" * len(code)
        ).valid
        is False
    )
    assert subject.backend.verify_code(OTHER, code).valid is False
    if not isinstance(subject.backend, DummyBackend):
        assert subject.delivered()[-1] == (NUMBER, f"Your verification code for Acme is: {code}")


def test_a_new_code_replaces_the_old(subject: Subject):
    subject.backend.send_code(NUMBER)
    first = subject.last_code(NUMBER)
    for _ in range(5):  # codes are random: make sure we really see a different one
        subject.backend.send_code(NUMBER)
        second = subject.last_code(NUMBER)
        if second != first:
            break
    assert second != first
    assert subject.backend.verify_code(NUMBER, first).valid is False
    assert subject.backend.verify_code(NUMBER, second).valid is True


def test_codes_expire(subject: Subject, textflow_emulator, monkeypatch):
    # Time moves by the clock of whoever holds the code (the emulator for the TextFlow
    # backend, the emulating backends' code store otherwise): no real sleep.
    now = [time.time()]
    monkeypatch.setattr(_emulated.codes, "clock", lambda: now[0])

    def advance(seconds: float) -> None:
        now[0] += seconds
        textflow_emulator.advance_clock(seconds)

    subject.backend.send_code(NUMBER, seconds=60)
    code = subject.last_code(NUMBER)
    assert subject.backend.verify_code(NUMBER, code).valid is True
    advance(59.5)
    assert subject.backend.verify_code(NUMBER, code).valid is True
    advance(1)
    assert subject.backend.verify_code(NUMBER, code).valid is False


def test_garbage_codes_are_simply_invalid(subject: Subject):
    subject.backend.send_code(NUMBER)
    for garbage in ["", "abc", "١٢٣٤", "12 34", "1" * 50]:
        assert subject.backend.verify_code(NUMBER, garbage).valid is False


def test_bulk(subject: Subject):
    result = subject.backend.bulk_sms([NUMBER, OTHER], "Sale")
    assert result.submitted == 2
    # TextFlow delivers bulk jobs later (the emulator keeps them pending until told);
    # the in-process backends deliver at once.
    pending = 2 if isinstance(subject.backend, TextFlowBackend) else 0
    assert subject.backend.bulk_count().count == pending
    if not isinstance(subject.backend, DummyBackend):
        assert sorted(subject.delivered()) == sorted([(NUMBER, "Sale"), (OTHER, "Sale")])


def test_bulk_rejects_a_batch_with_an_invalid_number(subject: Subject):
    with pytest.raises(TextFlowRejectedNumber):
        subject.backend.bulk_sms([NUMBER, "nope"], "Sale")
    assert subject.delivered() == []


def _kept(*roots: object) -> list[object]:
    """Every str, bytes and number reachable from ``roots`` through instance attributes
    (``__dict__`` and ``__slots__``) and containers; classes, modules and functions are not
    entered."""
    found: list[object] = []
    seen: set[int] = set()
    pending = list(roots)
    while pending:
        obj = pending.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        if isinstance(obj, str | bytes | bytearray | int | float):
            found.append(obj)
        elif isinstance(obj, dict):
            pending += [*obj.keys(), *obj.values()]
        elif isinstance(obj, list | tuple | set | frozenset | deque):
            pending += list(obj)
        elif not isinstance(obj, type | types.ModuleType | types.FunctionType):
            pending += list(getattr(obj, "__dict__", {}).values())
            for cls in type(obj).__mro__:
                for slot in getattr(cls, "__slots__", ()):
                    if hasattr(obj, slot):
                        pending.append(getattr(obj, slot))
    return found


@pytest.mark.parametrize("backend_class", [ConsoleBackend, LocMemBackend, DummyBackend])
def test_emulating_backends_keep_only_a_hash_of_the_code(backend_class):
    locmem.reset()
    options = {"stream": io.StringIO()} if backend_class is ConsoleBackend else {}
    backend = backend_class(**options)
    backend.code_length = 10  # too long to turn up by chance in a number, a salt or a digest
    code = backend.send_code(NUMBER).verification_code
    assert code is not None and len(code) == 10
    assert backend.verify_code(NUMBER, code).valid is True  # the state below is the live one

    # What the backend and the process-wide code store keep, minus where the SMS is
    # delivered (console's stream, locmem's outbox): showing the code there is their job.
    state = {k: v for k, v in vars(backend).items() if k != "stream"}
    kept = _kept(state, _emulated.codes)
    assert NUMBER in kept  # the walk reached the store's entries...
    digests = [v for v in kept if isinstance(v, bytes) and len(v) == 32]
    assert digests  # ...and its SHA-256 digest
    assert not [v for v in kept if isinstance(v, str) and code in v]
    assert not [v for v in kept if isinstance(v, bytes | bytearray) and code.encode() in v]
    assert int(code) not in [v for v in kept if isinstance(v, int | float)]
    for text in (repr(backend), repr(_emulated.codes), repr(state)):
        assert code not in text


# -- backend loading ------------------------------------------------------------------------


def test_get_backend_follows_settings_and_is_reused_per_thread():
    with override_settings(TEXTFLOW={"BACKEND": "textflow_django.backends.console.ConsoleBackend"}):
        first = get_backend()
        assert isinstance(first, ConsoleBackend)
        assert get_backend() is first
        other: list[BaseBackend] = []
        thread = threading.Thread(target=lambda: other.append(get_backend()))
        thread.start()
        thread.join()
        assert other[0] is not first
    with override_settings(TEXTFLOW={"BACKEND": "textflow_django.backends.dummy.DummyBackend"}):
        assert isinstance(get_backend(), DummyBackend)


def test_textflow_backend_reads_settings_at_call_time(textflow_emulator):
    with override_settings(
        TEXTFLOW={
            "BACKEND": "textflow_django.backends.textflow.TextFlowBackend",
            "API_KEY": "wrong" * 10,
            "BASE_URL": textflow_emulator.url,
        }
    ):
        backend = get_backend()
        with override_settings(
            TEXTFLOW={"API_KEY": EMULATOR_API_KEY, "BASE_URL": textflow_emulator.url}
        ):
            assert backend.send_sms(NUMBER, "Hi").to == NUMBER


def test_textflow_backend_with_a_key_no_header_can_carry_sends_nothing(textflow_emulator):
    backend = TextFlowBackend(api_key=EMULATOR_API_KEY + "\n", base_url=textflow_emulator.url)
    with pytest.raises(TextFlowConfigurationError, match="a trailing newline") as info:
        backend.send_sms(NUMBER, "Hi")
    # The client's ValueError, as the ImproperlyConfigured a Django project expects, unchained.
    assert isinstance(info.value, ImproperlyConfigured)
    assert info.value.__cause__ is None and info.value.__context__ is None
    assert EMULATOR_API_KEY not in str(info.value) and EMULATOR_API_KEY not in repr(info.value)
    assert textflow_emulator.requests == []


def test_textflow_backend_without_key_is_a_configuration_error():
    with override_settings(
        TEXTFLOW={"BACKEND": "textflow_django.backends.textflow.TextFlowBackend"}
    ):
        with pytest.raises(TextFlowConfigurationError):
            get_backend().send_sms(NUMBER, "Hi")


@pytest.mark.parametrize(
    "path", ["nope.Backend", "textflow_django.conf.Settings", "textflow_django.backends.nothing"]
)
def test_bad_backend_paths(path):
    with pytest.raises(TextFlowConfigurationError) as info:
        load_backend_class(path)
    assert path in str(info.value)


# -- locmem specifics ---------------------------------------------------------------------


def test_locmem_fail_next_raises_then_recovers():
    backend = LocMemBackend()
    locmem.fail_next(TextFlowServerError("down", status=503), times=2)
    for _ in range(2):
        with pytest.raises(TextFlowServerError):
            backend.send_sms(NUMBER, "Hi")
    assert backend.send_sms(NUMBER, "Hi").to == NUMBER
    assert [m.text for m in locmem.outbox] == ["Hi"]


def test_locmem_outbox_follows_djangos_per_test_reset():
    backend = LocMemBackend()
    backend.send_sms(NUMBER, "before")
    assert len(locmem.outbox) == 1
    mail.outbox = []  # what Django's test runner does at the start of every test
    assert locmem.outbox == []


def test_sms_outbox_fixture(sms_outbox):
    get_backend().send_sms(NUMBER, "via settings")
    assert [(m.phone_number, m.text, m.kind) for m in sms_outbox] == [
        (NUMBER, "via settings", "sms")
    ]


def test_code_is_kept_out_of_message_repr(sms_outbox):
    get_backend().send_code(NUMBER)
    message = sms_outbox[0]
    assert "code=" not in repr(message)


def test_the_old_name_of_textflows_number_refusal_still_imports_with_a_warning():
    import textflow_django.exceptions as exceptions

    with pytest.warns(DeprecationWarning, match="use TextFlowRejectedNumber"):
        old = exceptions.InvalidPhoneNumber
    assert old is TextFlowRejectedNumber


# -- more of the contract: refusals and the balance ----------------------------------------


def test_send_sms_refuses_an_empty_text(subject: Subject) -> None:
    with pytest.raises(TextFlowAPIError) as info:
        subject.backend.send_sms(NUMBER, "")
    assert (info.value.message, info.value.status) == ("Text is required", 400)
    assert info.value.maybe_sent is False
    assert subject.delivered() == []


@pytest.mark.parametrize("seconds", [0, MAX_CODE_TTL + 1])
def test_send_code_refuses_a_lifetime_textflow_does_not_allow(
    subject: Subject, seconds: int
) -> None:
    with pytest.raises(TextFlowAPIError) as info:
        subject.backend.send_code(NUMBER, seconds=seconds)
    assert (info.value.message, info.value.status) == ("Invalid seconds", 400)
    assert subject.delivered() == []
    assert subject.last_code(NUMBER) is None


def test_send_code_accepts_the_longest_lifetime(subject: Subject) -> None:
    sent = subject.backend.send_code(NUMBER, seconds=MAX_CODE_TTL)
    assert sent.expires is not None
    left = sent.expires - dt.datetime.now(dt.UTC)
    assert dt.timedelta(seconds=MAX_CODE_TTL - 60) < left <= dt.timedelta(seconds=MAX_CODE_TTL)


def test_bulk_refuses_an_empty_batch(subject: Subject) -> None:
    # TextFlow words it "Phone numbers are required", which the client reads as a refused
    # number (a TextFlowAPIError too); the in-process backends say "No phone numbers given".
    with pytest.raises(TextFlowAPIError) as info:
        subject.backend.bulk_sms([], "Sale")
    assert info.value.status == 400
    assert info.value.maybe_sent is False
    assert subject.backend.bulk_count().count == 0
    assert subject.delivered() == []


def test_balance(subject: Subject, textflow_emulator: TextFlowEmulator) -> None:
    balance = subject.backend.balance()
    assert isinstance(balance.credits, Decimal)
    if isinstance(subject.backend, TextFlowBackend):
        assert balance.credits == Decimal(str(textflow_emulator.credits))
        assert dict(balance.packages) == {"USA Canada": 2100, "UK": 500}
        assert [r.method for r in textflow_emulator.calls("/balance")] == ["GET"]
    else:  # no account behind the in-process backends
        assert (balance.credits, dict(balance.packages)) == (Decimal("0"), {})


class OnlyTheFive(BaseBackend):
    """A third-party backend that implements what it must and no balance."""

    def send_sms(self, phone_number: str, text: str) -> SMSResult:
        return SMSResult(to=phone_number, content=text)

    def send_code(
        self, phone_number: str, service_name: str | None = None, seconds: int | None = None
    ) -> CodeResult:
        return CodeResult(phone_number=phone_number)

    def verify_code(self, phone_number: str, code: str) -> VerifyResult:
        return VerifyResult(phone_number=phone_number, valid=False)

    def bulk_sms(self, phone_numbers: Sequence[str], text: str) -> BulkResult:
        return BulkResult(submitted=len(phone_numbers))

    def bulk_count(self) -> BulkCountResult:
        return BulkCountResult(count=0)


def test_a_backend_without_a_balance_says_so() -> None:
    backend = OnlyTheFive()
    assert backend.send_sms(NUMBER, "Hi").to == NUMBER  # the rest works
    with pytest.raises(NotImplementedError) as info:
        backend.balance()
    assert str(info.value) == "OnlyTheFive does not report a balance"


def test_an_emulating_backend_that_does_not_say_how_to_deliver_fails_loudly() -> None:
    class Undelivering(_emulated.EmulatedBackend):
        """Forgot to implement ``deliver``."""

    with pytest.raises(NotImplementedError):
        Undelivering().send_sms(NUMBER, "Hi")


# -- backend loading: options, and which setting changes forget the cache ------------------


def test_get_backend_with_options_builds_a_new_backend_each_time(
    textflow_emulator: TextFlowEmulator,
) -> None:
    console = "textflow_django.backends.console.ConsoleBackend"
    with override_settings(TEXTFLOW={"BACKEND": console}):
        shared = get_backend()
        streams = [io.StringIO(), io.StringIO()]
        first = get_backend(console, stream=streams[0])
        second = get_backend(console, stream=streams[1])
        assert first is not second and shared not in (first, second)
        first.send_sms(NUMBER, "to the first stream")
        assert "to the first stream" in streams[0].getvalue()
        assert streams[1].getvalue() == ""
        assert get_backend() is shared  # the thread's cached backend is not replaced

    real = get_backend(
        "textflow_django.backends.textflow.TextFlowBackend",
        api_key=EMULATOR_API_KEY,
        base_url=textflow_emulator.url,
    )
    assert real.send_sms(NUMBER, "Hi").to == NUMBER
    assert [r.json for r in textflow_emulator.calls("/send-sms")] == [
        {"phone_number": NUMBER, "text": "Hi"}
    ]


def test_only_a_change_of_textflow_forgets_the_cached_backends() -> None:
    with override_settings(TEXTFLOW={"BACKEND": "textflow_django.backends.dummy.DummyBackend"}):
        cached = get_backend()
        with override_settings(TIME_ZONE="Europe/Paris"):
            assert get_backend() is cached
        with override_settings(TEXTFLOW={"BACKEND": "textflow_django.backends.dummy.DummyBackend"}):
            assert get_backend() is not cached


def test_the_textflow_backend_replaces_and_closes_its_client_when_settings_change(
    settings: Any, textflow_live: TextFlowEmulator
) -> None:
    backend = get_backend()
    assert isinstance(backend, TextFlowBackend)
    first = backend.client
    assert backend.client is first  # same settings: same client, same pooled connections
    assert (first.base_url, first.timeout) == (textflow_live.url, 10.0)
    first.send_sms(NUMBER, "one")

    tf(settings, TIMEOUT=7)
    second = backend.client  # the backend object outlives the change (another thread's)
    assert second is not first and second.timeout == 7.0
    backend.send_sms(NUMBER, "two")
    assert textflow_live.connection_count == 2
    # The replaced client was closed: its pooled connection is gone, a call opens another.
    first.send_sms(NUMBER, "three")
    first.close()
    assert textflow_live.connection_count == 3
    assert [r.json["text"] for r in textflow_live.calls("/send-sms")] == ["one", "two", "three"]
