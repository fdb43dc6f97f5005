"""Issue 17, "Every send honours it", "A footer", ``textflow_optout``: the opt-out list in
every send.

- Every backend refuses a non-transactional SMS to a number on the list (``TextFlowOptedOut``,
  nothing sent, the number masked) and sends a transactional one; its ``bulk_sms`` leaves
  listed numbers out. A third-party backend that overrides ``send_sms``/``bulk_sms`` itself
  is held to the same rule.
- Verification codes (the API, the service, the allauth and two-factor integrations) are
  transactional: they still reach a number on the list.
- ``textflow_bulk_sms`` leaves listed numbers out inside the database while ingesting
  (SQLite and PostgreSQL), counts them (``--dry-run`` too), and leaves out a number that
  opted out after the ingest, when its batch is read.
- ``BULK_OPT_OUT_FOOTER``: appended, counted toward ``MAX_TEXT_LENGTH``, off, translated.
- ``manage.py textflow_optout``: import, export, add, remove.
"""

from __future__ import annotations

import io
import logging
import re
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
from django.core.management import call_command

from textflow_django import optouts
from textflow_django.backends import BaseBackend, locmem
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
from textflow_django.exceptions import TextFlowError, TextFlowOptedOut, TextFlowRejectedNumber
from textflow_django.testing import EMULATOR_API_KEY, TextFlowEmulator

from .conftest import tf

pytestmark = pytest.mark.django_db

NUMBER = "+12025550143"
MASKED = "+1********43"
OTHER = "+12025550144"
THIRD = "+12025550145"


def opt_out(*numbers: str) -> None:
    for number in numbers:
        optouts.opt_out(number, source="api")


# -- every backend ---------------------------------------------------------------------------


class Delivered:
    """A backend under test and what reached phones through it."""

    def __init__(self, backend: BaseBackend, delivered: Any) -> None:
        self.backend = backend
        self.delivered = delivered


@pytest.fixture(params=["textflow", "console", "locmem", "dummy"])
def subject(request: Any, textflow_emulator: TextFlowEmulator) -> Iterator[Delivered]:
    kind = request.param
    if kind == "textflow":
        backend: BaseBackend = TextFlowBackend(
            api_key=EMULATOR_API_KEY, base_url=textflow_emulator.url
        )

        yield Delivered(
            backend, lambda: [(m.phone_number, m.text) for m in textflow_emulator.messages]
        )
    elif kind == "console":
        stream = io.StringIO()
        yield Delivered(
            ConsoleBackend(stream=stream),
            lambda: [
                (line.split(" to ")[1].split(" at ")[0], "?")
                for line in stream.getvalue().splitlines()
                if line.startswith("[textflow]")
            ],
        )
    elif kind == "locmem":
        locmem.reset()
        yield Delivered(LocMemBackend(), lambda: [(m.phone_number, m.text) for m in locmem.outbox])
    else:
        yield Delivered(DummyBackend(), None)


def numbers_reached(subject: Delivered) -> list[str] | None:
    """The numbers that got an SMS, or None for the dummy backend, which delivers nothing."""
    if subject.delivered is None:
        return None
    return [number for number, _ in subject.delivered()]


def test_send_sms_refuses_an_opted_out_number_unless_transactional(
    subject: Delivered, textflow_emulator: TextFlowEmulator, caplog: Any
) -> None:
    opt_out(NUMBER)
    caplog.set_level(logging.INFO, logger="textflow_django")
    with pytest.raises(TextFlowOptedOut) as info:
        subject.backend.send_sms(NUMBER, "Sale!")
    refusal = info.value
    assert isinstance(refusal, TextFlowError) and not isinstance(refusal, TextFlowRejectedNumber)
    assert refusal.maybe_sent is False and refusal.status is None
    assert MASKED in str(refusal) and NUMBER not in str(refusal) and NUMBER not in repr(refusal)
    assert "transactional=True" in str(refusal)
    assert numbers_reached(subject) in ([], None)
    assert textflow_emulator.calls("/send-sms") == []  # the refusal never left the process
    assert f"textflow.send_sms.opted_out number={MASKED}" in caplog.text
    assert NUMBER not in caplog.text

    subject.backend.send_sms(NUMBER, "Your receipt", transactional=True)
    subject.backend.send_sms(OTHER, "Sale!")  # a number not on the list: as before
    assert numbers_reached(subject) in ([NUMBER, OTHER], None)


def test_bulk_sms_leaves_opted_out_numbers_out(
    subject: Delivered, textflow_emulator: TextFlowEmulator, caplog: Any
) -> None:
    opt_out(OTHER)
    caplog.set_level(logging.INFO, logger="textflow_django")
    result = subject.backend.bulk_sms([NUMBER, OTHER, THIRD], "Sale!")
    assert result.submitted == 2
    assert numbers_reached(subject) in ([NUMBER, THIRD], None)
    assert "textflow.send_sms.opted_out number=+1********44" in caplog.text
    if isinstance(subject.backend, TextFlowBackend):
        [call] = textflow_emulator.calls("/bulk-sms")
        assert call.json["phone_numbers"] == [NUMBER, THIRD]


def test_bulk_sms_of_only_opted_out_numbers_sends_nothing(
    subject: Delivered, textflow_emulator: TextFlowEmulator
) -> None:
    opt_out(NUMBER, OTHER)
    result = subject.backend.bulk_sms([NUMBER, OTHER], "Sale!")
    assert (result.submitted, result.accepted) == (0, 0)
    assert numbers_reached(subject) in ([], None)
    assert textflow_emulator.requests == []


def test_a_transactional_bulk_sms_reaches_everyone(subject: Delivered) -> None:
    opt_out(OTHER)
    assert (
        subject.backend.bulk_sms([NUMBER, OTHER], "Flight delayed", transactional=True).submitted
        == 2
    )
    assert numbers_reached(subject) in ([NUMBER, OTHER], None)


def test_a_refused_send_costs_one_query_and_an_allowed_one_one(
    django_assert_num_queries: Any,
) -> None:
    backend = LocMemBackend()
    opt_out(NUMBER)
    with django_assert_num_queries(1), pytest.raises(TextFlowOptedOut):
        backend.send_sms(NUMBER, "Sale!")
    with django_assert_num_queries(1):
        backend.send_sms(OTHER, "Sale!")
    with django_assert_num_queries(0):
        backend.send_sms(NUMBER, "Your code", transactional=True)
    with django_assert_num_queries(1):
        backend.bulk_sms([NUMBER, OTHER, THIRD], "Sale!")


class LegacyBackend(BaseBackend):
    """A third-party backend written before opt-outs: it overrides the public methods."""

    sent: list[tuple[str, ...]] = []

    def send_sms(self, phone_number: str, text: str) -> SMSResult:  # type: ignore[override]
        self.sent.append((phone_number,))
        return SMSResult(to=phone_number, content=text)

    def send_code(
        self, phone_number: str, service_name: str | None = None, seconds: int | None = None
    ) -> CodeResult:
        return CodeResult(phone_number=phone_number)

    def verify_code(self, phone_number: str, code: str) -> VerifyResult:
        return VerifyResult(phone_number=phone_number, valid=False)

    def bulk_sms(self, phone_numbers: Sequence[str], text: str) -> BulkResult:  # type: ignore[override]
        self.sent.append(tuple(phone_numbers))
        return BulkResult(submitted=len(phone_numbers))

    def bulk_count(self) -> BulkCountResult:
        return BulkCountResult(count=0)


class LoggingLocMem(LocMemBackend):
    """A project's subclass of a shipped backend that overrides send_sms and calls super()
    without passing ``transactional`` on."""

    def send_sms(self, phone_number: str, text: str) -> SMSResult:  # type: ignore[override]
        return super().send_sms(phone_number, text.upper())


def test_a_backend_that_overrides_the_public_methods_still_honours_the_list(
    django_assert_num_queries: Any,
) -> None:
    LegacyBackend.sent = []
    backend = LegacyBackend()  # instantiable: its send_sms/bulk_sms are its delivery steps
    opt_out(NUMBER)
    with pytest.raises(TextFlowOptedOut):
        backend.send_sms(NUMBER, "Sale!")
    assert backend.bulk_sms([NUMBER, OTHER], "Sale!").submitted == 1
    backend.send_sms(NUMBER, "Your code", transactional=True)
    assert LegacyBackend.sent == [(OTHER,), (NUMBER,)]

    locmem.reset()
    logging_backend = LoggingLocMem()
    with pytest.raises(TextFlowOptedOut):
        logging_backend.send_sms(NUMBER, "Sale!")
    # The caller's transactional=True holds through its super() call, checked once.
    with django_assert_num_queries(0):
        logging_backend.send_sms(NUMBER, "Your code", transactional=True)
    with django_assert_num_queries(1):
        logging_backend.send_sms(OTHER, "hello")
    assert [(m.phone_number, m.text) for m in locmem.outbox] == [
        (NUMBER, "YOUR CODE"),
        (OTHER, "HELLO"),
    ]


# -- verification codes are transactional ----------------------------------------------------


def test_a_code_still_reaches_an_opted_out_number_in_local_mode(settings: Any) -> None:
    from django.urls import reverse
    from rest_framework.test import APIClient

    tf(settings, BACKEND="textflow_django.backends.locmem.LocMemBackend", VERIFY_MODE="local")
    opt_out(NUMBER)
    response = APIClient().post(
        reverse("textflow:send-code"), {"phone_number": NUMBER}, format="json"
    )
    assert response.status_code == 200, response.content
    [sms] = locmem.outbox
    assert sms.phone_number == NUMBER and re.search(r": \d{6}$", sms.text)


def test_a_code_still_reaches_an_opted_out_number_in_textflow_mode(
    settings: Any, textflow_live: TextFlowEmulator
) -> None:
    from textflow_django import verification

    tf(settings, VERIFY_MODE="textflow")
    opt_out(NUMBER)
    verification.send_code(NUMBER)
    assert [m.phone_number for m in textflow_live.messages] == [NUMBER]


def test_an_integrations_code_and_text_still_reach_an_opted_out_number(
    settings: Any, textflow_live: TextFlowEmulator
) -> None:
    """What contrib.allauth and contrib.two_factor send: send_code(code=...) and
    send_code(text=...), through the real backend and the emulator's HTTP path."""
    from textflow_django import verification

    tf(settings, RESEND_COOLDOWN=0)
    opt_out(NUMBER)
    verification.send_code(NUMBER, code="123456", text="Your login code is: 123456")
    verification.send_code(NUMBER, text="No account uses this number.")
    assert [m.text for m in textflow_live.messages] == [
        "Your login code is: 123456",
        "No account uses this number.",
    ]


def test_the_two_factor_token_still_reaches_an_opted_out_number(sms_outbox: Any) -> None:
    from django.contrib.auth import get_user_model
    from two_factor.plugins.phonenumber.models import PhoneDevice

    from textflow_django.contrib.two_factor import TextFlowGateway

    user = get_user_model().objects.create_user("ada", password="pw")
    device = PhoneDevice.objects.create(user=user, name="default", number=NUMBER, method="sms")
    opt_out(NUMBER)
    TextFlowGateway().send_sms(device, "012345")
    [sms] = sms_outbox
    assert sms.phone_number == NUMBER and sms.text.endswith("012345")
