"""One contract, every backend: the real one against the emulator and the in-process ones."""

from __future__ import annotations

import io
import re
import threading
import time
import types
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass

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
from textflow_django.exceptions import (
    TextFlowConfigurationError,
    TextFlowRejectedNumber,
    TextFlowServerError,
)
from textflow_django.testing import EMULATOR_API_KEY

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
