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

import csv
import datetime as dt
import io
import logging
import re
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
from django.core.management import CommandError, call_command

from textflow_django import optouts
from textflow_django.backends import BaseBackend, locmem
from textflow_django.backends.console import ConsoleBackend
from textflow_django.backends.dummy import DummyBackend
from textflow_django.backends.locmem import LocMemBackend
from textflow_django.backends.textflow import TextFlowBackend
from textflow_django.bulk import check_text, create_job, ingest_job, run_job
from textflow_django.client import (
    BulkCountResult,
    BulkResult,
    CodeResult,
    SMSResult,
    VerifyResult,
)
from textflow_django.conf import DEFAULTS, conf
from textflow_django.exceptions import TextFlowError, TextFlowOptedOut, TextFlowRejectedNumber
from textflow_django.models import BulkBatch, BulkRecipient, BulkSMSJob, OptOut
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


def test_a_batchs_check_does_not_parse_its_numbers_again(monkeypatch: Any) -> None:
    """The numbers of a batch are E.164 already: comparing them as they are keeps the check
    at one query (bench/bulk.py went from 6.7 s to 79 s for a million when the field parsed
    each one)."""
    from textflow_django import phone

    opt_out(OTHER)

    def parse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("a number was parsed again")

    monkeypatch.setattr(phone, "parse", parse)
    assert optouts.opted_out_among([NUMBER, OTHER, THIRD]) == {OTHER}
    assert LocMemBackend().bulk_sms([NUMBER, OTHER], "Sale").submitted == 1


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


# -- bulk: left out inside the database, counted, and again at send time ---------------------


def numbers(n: int, start: int = 0) -> list[str]:
    return [f"+1202555{i:04d}" for i in range(start, start + n)]


def run(*args: str) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command(*args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def bulk_reached(emulator: TextFlowEmulator) -> list[str]:
    return [m.phone_number for m in emulator.messages if m.kind == "bulk"]


def test_ingest_leaves_opted_out_numbers_out_and_counts_them() -> None:
    values = numbers(10)
    opt_out(values[1], values[4], values[8])
    # A duplicate of an opted-out number is a duplicate; of a kept one, too.
    source = [*values, values[1], values[2], "bad"]
    ingested = ingest_job(text="Hi", numbers=source, batch_size=2)
    job = ingested.job
    assert ingested.opted_out == 3
    assert (job.total, job.duplicates, job.invalid, job.opted_out) == (7, 2, 1, 3)
    job.refresh_from_db()
    assert job.opted_out == 3  # kept with the job, for the admin and later reports
    kept = [v for i, v in enumerate(values) if i not in (1, 4, 8)]
    rows = BulkRecipient.objects.filter(job=job).order_by("id")
    assert [r.phone_number for r in rows] == kept  # arrival order kept
    # The batches are numbered over what is left: every batch but the last is full.
    assert [r.batch for r in rows] == [0, 0, 1, 1, 2, 2, 3]
    assert list(job.batches.values_list("size", flat=True)) == [2, 2, 2, 1]
    assert create_job(text="Hi", numbers=values).total == 7  # the job alone, as before


def test_the_opt_out_list_is_read_inside_the_database(
    django_assert_max_num_queries: Any,
) -> None:
    """The ingest's queries do not grow with the list (an anti-join, not a list in Python)
    and never carry the listed numbers as parameters."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    def ingest() -> list[dict[str, Any]]:
        with CaptureQueriesContext(connection) as queries:
            ingest_job(text="Hi", numbers=numbers(50), batch_size=10)
        return queries.captured_queries

    few = ingest()
    OptOut.objects.bulk_create(
        [OptOut(phone_number=n, source="import") for n in numbers(40, start=1000)]
    )
    opt_out(*numbers(5))
    many = ingest()
    assert len(many) == len(few)
    assert not any("+12025551000" in q["sql"] for q in many)
    assert any("NOT EXISTS" in q["sql"] for q in many)


def test_the_command_leaves_them_out_and_says_how_many(textflow_live: TextFlowEmulator) -> None:
    values = numbers(5)
    opt_out(values[0], values[3])
    out, _ = run("textflow_bulk_sms", "--numbers", ",".join(values), "--text", "Hi")
    assert "Left out 2 numbers on the opt-out list (manage.py textflow_optout)." in out
    assert sorted(bulk_reached(textflow_live)) == [values[1], values[2], values[4]]
    job = BulkSMSJob.objects.get()
    assert (job.total, job.sent, job.status) == (3, 3, BulkSMSJob.Status.FINISHED)


def test_one_is_singular(textflow_live: TextFlowEmulator) -> None:
    opt_out(NUMBER)
    out, _ = run("textflow_bulk_sms", "--numbers", f"{NUMBER},{OTHER}", "--text", "Hi")
    assert "Left out 1 number on the opt-out list (manage.py textflow_optout)." in out
    assert bulk_reached(textflow_live) == [OTHER]


def test_a_dry_run_counts_them_and_sends_nothing(textflow_live: TextFlowEmulator) -> None:
    values = numbers(4)
    opt_out(values[1], values[2])
    out, _ = run("textflow_bulk_sms", "--numbers", ",".join(values), "--text", "Hi", "--dry-run")
    assert "Left out 2 numbers on the opt-out list" in out
    assert "send this text to 2 recipients in 1 batch" in out
    assert not BulkSMSJob.objects.exists() and textflow_live.requests == []


def test_no_line_when_none_is_left_out(textflow_live: TextFlowEmulator) -> None:
    out, _ = run("textflow_bulk_sms", "--numbers", NUMBER, "--text", "Hi", "--dry-run")
    assert "opt-out" not in out


def test_a_number_that_opts_out_after_the_ingest_is_left_out_when_its_batch_goes(
    textflow_live: TextFlowEmulator, caplog: Any
) -> None:
    values = numbers(6)
    job = create_job(text="Hi", numbers=values, batch_size=2)
    opt_out(values[0], values[5])  # after the ingest, before the send
    caplog.set_level(logging.INFO, logger="textflow_django")
    job = run_job(job.pk)
    assert bulk_reached(textflow_live) == values[1:5]
    # Not sent, not counted as recipients: a finished job still has sent == total.
    assert (job.status, job.total, job.sent) == (BulkSMSJob.Status.FINISHED, 4, 4)
    assert not BulkRecipient.objects.filter(job=job, phone_number__in=[values[0], values[5]])
    assert f"textflow.bulk.opted_out job={job.pk}" in caplog.text
    assert "count=1" in caplog.text
    assert values[0] not in caplog.text


def test_a_batch_whose_numbers_all_opted_out_sends_nothing(
    textflow_live: TextFlowEmulator,
) -> None:
    job = create_job(text="Hi", numbers=numbers(4), batch_size=2)
    opt_out(*numbers(2))
    job = run_job(job.pk)
    assert bulk_reached(textflow_live) == numbers(2, start=2)
    assert len(textflow_live.calls("/bulk-sms")) == 1
    assert (job.status, job.total, job.sent, job.batches_sent) == ("finished", 2, 2, 2)


# -- the footer --------------------------------------------------------------------------------


@pytest.fixture
def footer_on(settings: Any) -> None:
    """The footer's default (the test settings turn it off for the older bulk tests)."""
    settings.TEXTFLOW = {k: v for k, v in settings.TEXTFLOW.items() if k != "BULK_OPT_OUT_FOOTER"}


@pytest.mark.usefixtures("footer_on")
def test_the_footer_is_appended_to_bulk_texts(textflow_live: TextFlowEmulator) -> None:
    out, _ = run("textflow_bulk_sms", "--numbers", NUMBER, "--text", "Sale today")
    sms = "Sale today\nReply STOP to opt out"
    assert [m.text for m in textflow_live.messages] == [sms]
    assert BulkSMSJob.objects.get().text == sms  # what was checked is what is sent
    assert f"Text: {len(sms)} characters, 1 SMS segment (GSM-7)" in out


@pytest.mark.usefixtures("footer_on")
def test_the_footer_counts_toward_the_segment_limit(settings: Any) -> None:
    tf(settings, MAX_TEXT_LENGTH=1)
    room = 160 - len("\nReply STOP to opt out")
    assert create_job(text="a" * room, numbers=[NUMBER]).text.endswith("opt out")
    # Fits one segment alone, not with the footer: refused, and the refusal says why.
    with pytest.raises(ValueError, match="with its opt-out footer is 2 SMS segments") as info:
        create_job(text="a" * (room + 1), numbers=[NUMBER])
    assert "the text alone 1, GSM-7" in str(info.value)
    assert "BULK_OPT_OUT_FOOTER" in str(info.value) and "is counted" in str(info.value)
    with pytest.raises(CommandError) as info:
        run("textflow_bulk_sms", "--numbers", NUMBER, "--text", "a" * (room + 1))
    message = str(info.value)
    assert "opt-out footer is 2 SMS segments" in message and "is counted" in message
    assert message.endswith("Nothing was sent.")
    assert not BulkSMSJob.objects.filter(text__startswith="a" * (room + 1)).exists()


@pytest.mark.usefixtures("footer_on")
def test_a_footer_outside_gsm7_makes_the_text_ucs2_and_is_counted(settings: Any) -> None:
    tf(settings, MAX_TEXT_LENGTH=1, BULK_OPT_OUT_FOOTER="Répondez STOP ✋")
    with pytest.raises(ValueError, match=r"2 SMS segments long \(\d+ characters, UCS-2"):
        check_text("a" * 60)
    assert check_text("a" * 50).encoding == "UCS-2"


@pytest.mark.parametrize("off", [None, ""])
def test_the_footer_turned_off(settings: Any, off: Any) -> None:
    tf(settings, BULK_OPT_OUT_FOOTER=off)
    assert create_job(text="Hi", numbers=[NUMBER]).text == "Hi"
    assert conf.BULK_OPT_OUT_FOOTER is None


def test_a_projects_footer(settings: Any) -> None:
    tf(settings, BULK_OPT_OUT_FOOTER="STOP? Reply STOP")
    assert create_job(text="Hi", numbers=[NUMBER]).text == "Hi\nSTOP? Reply STOP"


@pytest.mark.usefixtures("footer_on")
def test_the_default_footer_is_in_the_active_language() -> None:
    from django.utils import translation

    with translation.override("fr"):
        text = create_job(text="Soldes", numbers=[NUMBER]).text
    assert text == "Soldes\nRépondez STOP pour ne plus recevoir de SMS"
    with translation.override("en"):
        assert create_job(text="Sale", numbers=[NUMBER]).text == "Sale\nReply STOP to opt out"


@pytest.mark.usefixtures("footer_on")
def test_the_command_writes_the_footer_in_language_code(
    settings: Any, textflow_live: TextFlowEmulator
) -> None:
    """A management command runs in settings.LANGUAGE_CODE (Django activates it)."""
    settings.LANGUAGE_CODE = "de"
    run("textflow_bulk_sms", "--numbers", NUMBER, "--text", "Hallo")
    [sms] = textflow_live.messages
    assert sms.text == "Hallo\nAntworten Sie STOP, um keine SMS mehr zu erhalten"


@pytest.mark.usefixtures("footer_on")
@pytest.mark.parametrize("language", ["en", "de", "es", "fr", "it", "pt-br"])
def test_the_footer_names_stop_and_stays_gsm7_in_every_shipped_language(language: str) -> None:
    """STOP is an opt-out keyword in every language; a GSM-7 footer keeps a GSM-7 text at
    160 characters a segment (one character outside it would make the whole SMS UCS-2)."""
    from django.utils import translation

    from textflow_django._sms import segments

    with translation.override(language):
        line = conf.BULK_OPT_OUT_FOOTER
    assert line is not None and re.search(r"\bSTOP\b", line)
    assert segments(line).encoding == "GSM-7"
    if language != "en":
        assert line != "Reply STOP to opt out"


def test_a_lazy_footer_is_translated_when_the_job_is_made(settings: Any) -> None:
    from django.utils import translation
    from django.utils.translation import gettext_lazy

    tf(settings, BULK_OPT_OUT_FOOTER=gettext_lazy("Reply STOP to opt out"))
    with translation.override("es"):
        assert conf.BULK_OPT_OUT_FOOTER == "Responda STOP para darse de baja"


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        (42, "must be a string or None, not int"),
        (["Reply STOP"], "must be a string or None, not list"),
        ("Reply\tSTOP", "U+0009 TAB at position 6"),
        ("Reply STOP\u202e", "RIGHT-TO-LEFT OVERRIDE"),
    ],
)
def test_e022_a_footer_that_is_not_text(settings: Any, value: object, problem: str) -> None:
    from textflow_django.checks import check_settings

    tf(settings, BULK_OPT_OUT_FOOTER=value)
    messages = [m for m in check_settings() if m.id == "textflow.E022"]
    assert len(messages) == 1 and problem in messages[0].msg, messages
    assert messages[0].hint
    with pytest.raises(ValueError, match="BULK_OPT_OUT_FOOTER"):
        check_text("Hi")


@pytest.mark.parametrize("value", [None, "", "Reply STOP to opt out", "STOP: répondez STOP"])
def test_e022_accepts_text_and_none(settings: Any, value: object) -> None:
    from django.utils.translation import gettext_lazy

    from textflow_django.checks import check_settings

    for each in (value, gettext_lazy("Reply STOP to opt out")):
        tf(settings, BULK_OPT_OUT_FOOTER=each)
        assert [m for m in check_settings() if m.id == "textflow.E022"] == []


# -- manage.py textflow_optout -----------------------------------------------------------------


def test_add_and_remove(django_capture_on_commit_callbacks: Any) -> None:
    from textflow_django import signals

    added: list[tuple[str, str]] = []
    removed: list[tuple[str, str]] = []

    def on_out(phone_number: str, source: str, **kwargs: Any) -> None:
        added.append((phone_number, source))

    def on_in(phone_number: str, source: str, **kwargs: Any) -> None:
        removed.append((phone_number, source))

    signals.opted_out.connect(on_out)
    signals.opted_in.connect(on_in)
    try:
        with django_capture_on_commit_callbacks(execute=True):
            out, _ = run("textflow_optout", "add", "+1 (202) 555-0143", OTHER, "--note", "call")
        assert out == "Opt-out list: 2 numbers added, 0 numbers already on it.\n"
        assert added == [(NUMBER, "admin"), (OTHER, "admin")]
        assert OptOut.objects.get(phone_number=NUMBER).note == "call"
        with django_capture_on_commit_callbacks(execute=True):
            out, _ = run("textflow_optout", "add", NUMBER, THIRD)
        assert out == "Opt-out list: 1 number added, 1 number already on it.\n"
        with django_capture_on_commit_callbacks(execute=True):
            out, _ = run("textflow_optout", "remove", NUMBER, "+447400123456")
        assert out == "Opt-out list: 1 number removed, 1 number not on it.\n"
        assert removed == [(NUMBER, "admin")]
        assert sorted(OptOut.objects.values_list("phone_number", flat=True)) == [OTHER, THIRD]
    finally:
        signals.opted_out.disconnect(on_out)
        signals.opted_in.disconnect(on_in)


def test_add_reads_numbers_as_the_site_does_and_takes_any_country(settings: Any) -> None:
    tf(settings, DEFAULT_REGION="GB", ALLOWED_COUNTRIES=["US"])
    run("textflow_optout", "add", "07400 123456")
    assert optouts.is_opted_out("+447400123456")  # a country the site does not text


@pytest.mark.parametrize("action", ["add", "remove"])
def test_a_bad_number_changes_nothing_and_is_named(action: str) -> None:
    opt_out(OTHER)
    with pytest.raises(CommandError) as info:
        run("textflow_optout", action, NUMBER, "12345", THIRD)
    assert (
        str(info.value) == "'12345' is not a phone number (no_country_code): nothing was changed."
    )
    assert list(OptOut.objects.values_list("phone_number", flat=True)) == [OTHER]


def test_an_action_is_required() -> None:
    with pytest.raises(CommandError, match="ACTION"):
        run("textflow_optout")


def write(path: Any, text: str) -> str:
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_import_a_list_of_numbers(tmp_path: Any) -> None:
    opt_out(OTHER)
    name = write(
        tmp_path / "stop.txt",
        f"\ufeff{NUMBER}\n\n+1 202 555 0144\nbad\n{THIRD}\n{NUMBER}\n+1900555014\n",
    )
    out, _ = run("textflow_optout", "import", name, "--note", "from the shop")
    lines = out.splitlines()
    assert re.fullmatch(
        rf"Imported {re.escape(name)}: 2 numbers added to the opt-out list, 2 numbers already "
        r"on it or repeated; skipped 2 invalid numbers \(read in \d+\.\ds\)\.",
        lines[0],
    ), lines[0]
    assert lines[1:] == [
        "  invalid: line 4: 'bad' (invalid)",
        "  invalid: line 7: '+1*******14' (invalid)",  # masked, as a job's samples
    ]
    rows = {o.phone_number: o for o in OptOut.objects.all()}
    assert sorted(rows) == [NUMBER, OTHER, THIRD]
    assert (rows[NUMBER].source, rows[NUMBER].note) == ("import", "from the shop")
    assert rows[OTHER].source == "api"  # was there already: kept as it was


def test_import_a_csv_column_with_the_bulk_commands_rules(tmp_path: Any) -> None:
    name = write(tmp_path / "c.csv", f"name,mobile\nAda,{NUMBER}\nBob\nCy,{OTHER}\n")
    out, _ = run("textflow_optout", "import", name, "--column", "mobile")
    assert "2 numbers added" in out and "skipped 1 invalid number" in out
    assert f"  invalid: {name} column mobile: 1 row has no 'mobile' field: line 3" in out
    with pytest.raises(CommandError, match="has no column 'phone'"):
        run("textflow_optout", "import", name, "--column", "phone")


def latin1(path: Any) -> str:
    path.write_bytes(b"+12025550143\n\xe9\n")
    return str(path)


@pytest.mark.parametrize(
    ("make", "error"),
    [
        (lambda tmp: str(tmp / "missing.csv"), "missing.csv: no such file."),
        (lambda tmp: str(tmp), "is a directory, not a file of numbers."),
        (lambda tmp: write(tmp / "bad.txt", "bad\nworse\n"), "holds no valid phone number"),
        (lambda tmp: latin1(tmp / "latin1.txt"), "line 2 is not UTF-8 text."),
    ],
)
def test_import_errors(tmp_path: Any, make: Any, error: str) -> None:
    with pytest.raises(CommandError, match=re.escape(error)):
        run("textflow_optout", "import", make(tmp_path))


def test_import_from_stdin(monkeypatch: Any) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(f"{NUMBER}\n{OTHER}\n"))
    out, _ = run("textflow_optout", "import", "-")
    assert out.startswith("Imported stdin: 2 numbers added")


@pytest.mark.django_db(transaction=True)
def test_a_raising_opted_out_receiver_stops_neither_the_import_nor_the_other_signals(
    tmp_path: Any,
) -> None:
    # Committed for real (transaction=True): the signals are sent on commit, as opt_out's.
    from textflow_django.signals import opted_out

    heard: list[str] = []

    def receiver(phone_number: str, **kwargs: Any) -> None:
        heard.append(phone_number)
        raise RuntimeError("a site's receiver fails")

    opted_out.connect(receiver)
    try:
        name = write(tmp_path / "stop.txt", f"{NUMBER}\n{OTHER}\n{THIRD}\n")
        out, _ = run("textflow_optout", "import", name)
    finally:
        opted_out.disconnect(receiver)
    assert out.startswith(f"Imported {name}: 3 numbers added"), out
    assert sorted(heard) == sorted([NUMBER, OTHER, THIRD])
    assert OptOut.objects.count() == 3


def test_import_adds_in_batches_whatever_the_count(tmp_path: Any, monkeypatch: Any) -> None:
    """A batch at a time (memory stays flat): the queries grow with the batches, each
    bounded, and every number's opted_out fires once."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    monkeypatch.setattr(optouts, "IMPORT_BATCH", 10)
    name = write(tmp_path / "n.txt", "\n".join(numbers(35)) + "\n")
    with CaptureQueriesContext(connection) as queries:
        out, _ = run("textflow_optout", "import", name)
    assert "35 numbers added" in out
    inserts = [q for q in queries.captured_queries if q["sql"].startswith("INSERT")]
    assert len(inserts) == 4  # 10 + 10 + 10 + 5
    assert OptOut.objects.filter(source="import").count() == 35


def test_export_then_import_round_trip(tmp_path: Any) -> None:
    optouts.opt_out(NUMBER, source="reply")
    optouts.opt_out(OTHER, source="admin", note='said "stop", twice')
    OptOut.objects.filter(phone_number=OTHER).update(
        created_at=OptOut.objects.get(phone_number=NUMBER).created_at.replace(year=2020)
    )
    exported = str(tmp_path / "list.csv")
    out, _ = run("textflow_optout", "export", exported)
    assert out == f"Exported 2 numbers of the opt-out list to {exported}.\n"
    with open(exported, encoding="utf-8", newline="") as f:  # noqa: PTH123
        rows = list(csv.reader(f))
    assert rows[0] == ["phone_number", "source", "since", "note"]
    # Oldest first; since in ISO 8601; the note's quotes and comma survive.
    assert [r[:2] for r in rows[1:]] == [[OTHER, "admin"], [NUMBER, "reply"]]
    assert rows[1][3] == 'said "stop", twice'
    since = OptOut.objects.get(phone_number=OTHER).created_at
    assert dt.datetime.fromisoformat(rows[1][2]) == since
    OptOut.objects.all().delete()
    out, _ = run("textflow_optout", "import", exported)  # the header names the column
    assert "2 numbers added" in out and "skipped 0 invalid numbers" in out
    assert sorted(OptOut.objects.values_list("phone_number", "source")) == [
        (NUMBER, "import"),
        (OTHER, "import"),
    ]


def test_export_to_stdout_is_the_csv_alone(capsys: Any) -> None:
    opt_out(NUMBER)
    out, err = run("textflow_optout", "export")
    assert out.splitlines()[0] == "phone_number,source,since,note"
    assert out.splitlines()[1].startswith(f"{NUMBER},api,")
    assert err == "Exported 1 number of the opt-out list to stdout.\n"


def test_export_streams_the_list(django_assert_max_num_queries: Any, monkeypatch: Any) -> None:
    monkeypatch.setattr(optouts, "EXPORT_CHUNK", 3)
    OptOut.objects.bulk_create([OptOut(phone_number=n, source="import") for n in numbers(10)])
    rows = optouts.csv_rows()
    first = next(rows)  # read as it goes, not all at once
    assert first[0] == numbers(1)[0] and len(list(rows)) == 9


def test_export_to_a_file_that_cannot_be_written(tmp_path: Any) -> None:
    with pytest.raises(CommandError, match="Cannot write"):
        run("textflow_optout", "export", str(tmp_path / "no" / "such" / "dir.csv"))


# -- end to end: a job, a STOP through the real webhook, a second job --------------------------

REPLY_SECRET = "e2e-Reply-Webhook-Secret-0123456789abcdef"


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("footer_on")
def test_a_stop_reply_between_two_jobs_leaves_the_number_out_of_the_second(
    settings: Any, textflow_live: TextFlowEmulator, live_server: Any
) -> None:
    """Everything over real HTTP: the jobs go to the emulator through the real backend, and
    the emulator forwards the STOP to the site's webhook as TextFlow does (JSON with the
    secret, POSTed to the live server's ``textflow:replies``)."""
    from django.urls import reverse

    tf(settings, REPLY_SECRET=REPLY_SECRET)
    textflow_live.reply_url = live_server.url + reverse("textflow:replies")
    textflow_live.reply_secret = REPLY_SECRET
    everyone = numbers(3)

    run("textflow_bulk_sms", "--numbers", ",".join(everyone), "--text", "Sale")
    assert sorted(bulk_reached(textflow_live)) == everyone
    assert {m.text for m in textflow_live.messages} == {"Sale\nReply STOP to opt out"}

    reply = textflow_live.reply(everyone[1], "STOP", attempts=1)
    assert reply.statuses == (200,)
    assert optouts.is_opted_out(everyone[1])
    assert OptOut.objects.get().source == "reply"

    out, _ = run("textflow_bulk_sms", "--numbers", ",".join(everyone), "--text", "Sale again")
    assert "Left out 1 number on the opt-out list" in out
    second = [m.phone_number for m in textflow_live.messages if m.text.startswith("Sale again")]
    assert sorted(second) == [everyone[0], everyone[2]]
    with pytest.raises(TextFlowOptedOut):  # and no other send reaches it either
        TextFlowBackend().send_sms(everyone[1], "One more thing")
    assert len(textflow_live.calls("/send-sms")) == 0


def test_a_batch_is_checked_once_in_the_statement_that_reads_it(
    textflow_live: TextFlowEmulator, monkeypatch: Any
) -> None:
    """The bulk sender reads each batch against the list (a LEFT JOIN): the backend's own
    check, for every other caller of bulk_sms, is not run again for it."""
    asked: list[int] = []
    among = optouts.opted_out_among

    def counted(numbers: list[str]) -> set[str]:
        asked.append(len(numbers))
        return among(numbers)

    monkeypatch.setattr(optouts, "opted_out_among", counted)
    job = create_job(text="Hi", numbers=numbers(6), batch_size=2)
    assert run_job(job.pk).sent == 6
    assert asked == []
    LocMemBackend().bulk_sms(numbers(2), "Hi")  # any other caller: checked
    assert asked == [2]


def test_a_stop_during_a_429_wait_is_honoured_on_the_retry(
    textflow_live: TextFlowEmulator, monkeypatch: Any
) -> None:
    from textflow_django.bulk import sending

    job = create_job(text="Hi", numbers=numbers(3), batch_size=3)
    textflow_live.fault("rate_limit", path="/bulk-sms", retry_after=1)
    # The wait, without waiting: the number replies STOP meanwhile.
    monkeypatch.setattr(sending.time, "sleep", lambda seconds: opt_out(numbers(3)[1]))
    result = run_job(job.pk)
    assert bulk_reached(textflow_live) == [numbers(3)[0], numbers(3)[2]]
    # Counted as left out, not as sent: the job's figures say what was sent.
    job.refresh_from_db()
    assert (result.sent, job.sent, job.total, job.status) == (2, 2, 2, "finished")
    assert job.opted_out == 1
    assert BulkBatch.objects.get(job=job).size == 2


#: The footer as shipped (the test settings turn it off).
DEFAULTS_FOOTER = DEFAULTS["BULK_OPT_OUT_FOOTER"]


@pytest.mark.parametrize(
    ("language", "extra", "warned"),
    [
        ("en", {}, False),  # the defaults: STOP is every language's
        ("es", {}, False),  # the Spanish footer names STOP too
        ("en", {"OPT_OUT_KEYWORDS": ["UNSUBSCRIBE"]}, True),
        ("en", {"OPT_OUT_KEYWORDS": ["stop", "UNSUBSCRIBE"]}, False),
        ("en", {"BULK_OPT_OUT_FOOTER": "Text QUIT to leave"}, False),
        ("en", {"BULK_OPT_OUT_FOOTER": "Text LEAVE to leave"}, True),
        ("en", {"BULK_OPT_OUT_FOOTER": None, "OPT_OUT_KEYWORDS": ["UNSUBSCRIBE"]}, False),
    ],
)
def test_a_footer_naming_no_opt_out_keyword_is_warned(
    settings: Any, language: str, extra: dict[str, Any], warned: bool
) -> None:
    from django.utils import translation

    from textflow_django.checks import check_settings

    settings.TEXTFLOW = {**settings.TEXTFLOW, "BULK_OPT_OUT_FOOTER": DEFAULTS_FOOTER, **extra}
    with translation.override(language):
        ids = [message.id for message in check_settings()]
    assert ("textflow.W020" in ids) is warned, ids


def test_a_failure_before_the_send_gives_the_batch_back_pending(
    textflow_live: TextFlowEmulator, monkeypatch: Any
) -> None:
    """The batch's numbers are read and the opted-out ones left out before anything is sent:
    a failure there leaves the batch pending (certainly not sent), not "sending" until the
    lease runs out and then uncertain."""
    from django.db import DatabaseError

    from textflow_django.bulk import sending

    job = create_job(text="Hi", numbers=numbers(3), batch_size=3)
    opt_out(numbers(3)[0])

    def broken(*args: Any) -> None:
        raise DatabaseError("the database went away")

    monkeypatch.setattr(sending, "leave_out", broken)
    with pytest.raises(DatabaseError):
        run_job(job.pk)
    assert list(BulkBatch.objects.filter(job=job).values_list("status", flat=True)) == ["pending"]
    assert bulk_reached(textflow_live) == []
