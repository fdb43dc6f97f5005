"""What the management commands print (issue 14's rough edges): a dry run names no job it
does not keep, counts agree with their nouns ("1 batch"), ``textflow_bulk_count --wait``
ends with a sentence and never shows a share of nothing, and bad option values are a
CommandError naming the option, never a traceback or a wait that cannot end.

The sending side runs against the bundled emulator (``textflow_live``, which delivers bulk
recipients only on ``deliver_bulk()``); the clocks are stepped by hand, nothing sleeps.
"""

from __future__ import annotations

import io
import re
import types
from collections.abc import Callable, Iterator

import pytest
from django.core.management import CommandError, call_command

from textflow_django import bulk
from textflow_django.management import _progress
from textflow_django.management.commands import textflow_bulk_count
from textflow_django.models import BulkSMSJob
from textflow_django.testing import TextFlowEmulator

from .conftest import tf

pytestmark = pytest.mark.django_db


def numbers(n: int) -> list[str]:
    return [f"+1202555{i:04d}" for i in range(n)]


def run(*args: str, stderr: io.StringIO | None = None) -> tuple[str, str]:
    out, err = io.StringIO(), stderr if stderr is not None else io.StringIO()
    call_command(*args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


class Terminal(io.StringIO):
    """A stderr that says it is a terminal (the progress display draws its bar)."""

    def isatty(self) -> bool:
        return True


@pytest.fixture
def ticking_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    """The progress display's clock moves one second each time it is read."""
    ticks = iter(range(1000, 2000))
    monkeypatch.setattr(
        _progress, "time", types.SimpleNamespace(monotonic=lambda: float(next(ticks)))
    )


# -- textflow_bulk_sms --dry-run -----------------------------------------------------------


def test_a_dry_run_names_no_job_and_says_what_a_run_would_do(textflow_live: TextFlowEmulator):
    out, err = run(
        "textflow_bulk_sms",
        "--numbers",
        "+12025550100,+12025550101,bad,+12025550100",
        "--text",
        "Hi",
        "--batch-size",
        "10",
        "--dry-run",
    )
    lines = out.splitlines()
    # The job a dry run builds is rolled back: no line may name it.
    assert not re.search(r"\bjob \d", out, re.IGNORECASE), out
    assert re.fullmatch(
        r"Dry run: 2 recipients in 1 batch of at most 10; skipped 1 invalid number and "
        r"1 duplicate \(read in \d+\.\ds\)\.",
        lines[0],
    )
    assert (
        lines[1] == "Text: 2 characters, 1 SMS segment (GSM-7) a recipient; 2 SMS segments in all."
    )
    assert lines[2] == "  invalid: item 3: 'bad' (invalid)"
    assert lines[3:] == [
        "Dry run: nothing was sent and no job was kept. Without --dry-run, a new job would "
        "send this text to 2 recipients in 1 batch."
    ]
    assert err == ""
    assert not BulkSMSJob.objects.exists() and textflow_live.calls("/bulk-sms") == []


# -- counts agree with their nouns ---------------------------------------------------------


def test_one_of_everything_is_singular(textflow_live: TextFlowEmulator):
    out, err = run(
        "textflow_bulk_sms",
        "--numbers",
        "+12025550100,bad,+12025550100",
        "--text",
        "H",
        "--batch-size",
        "10",
    )
    job = BulkSMSJob.objects.get()
    lines = out.splitlines()
    assert re.fullmatch(
        rf"Job {job.pk}: 1 recipient in 1 batch of at most 10; skipped 1 invalid number and "
        r"1 duplicate \(read in \d+\.\ds\)\.",
        lines[0],
    )
    assert lines[1] == "Text: 1 character, 1 SMS segment (GSM-7) a recipient; 1 SMS segment in all."
    assert re.fullmatch(
        rf"Job {job.pk} finished: 1 recipient sent \(1 SMS segment each\) in 1 batch, "
        r"1 invalid number, 1 duplicate, 0 uncertain; \d+\.\ds \([\d,]+/(s|min|h)\)\.",
        lines[-1],
    )
    # One plain progress line: the final update repeats none.
    assert err.splitlines() == ["100.0% 1/1 recipient --/s ETA 0:00"]


def test_many_of_everything_is_plural(textflow_live: TextFlowEmulator):
    out, _ = run(
        "textflow_bulk_sms",
        "--numbers",
        ",".join(numbers(3) + ["bad", "worse", "+12025550000", "+12025550001"]),
        "--text",
        "Hi",
        "--batch-size",
        "2",
    )
    job = BulkSMSJob.objects.get()
    lines = out.splitlines()
    assert lines[0].startswith(
        f"Job {job.pk}: 3 recipients in 2 batches of at most 2; skipped 2 invalid numbers "
        "and 2 duplicates (read in "
    )
    assert (
        lines[1] == "Text: 2 characters, 1 SMS segment (GSM-7) a recipient; 3 SMS segments in all."
    )
    assert lines[-1].startswith(
        f"Job {job.pk} finished: 3 recipients sent (1 SMS segment each) in 2 batches, "
        "2 invalid numbers, 2 duplicates, 0 uncertain; "
    )


def test_enqueueing_one_batch_is_singular(textflow_live: TextFlowEmulator):
    # The tests' tasks backend is the immediate one: the batch is sent as it is queued.
    out, _ = run("textflow_bulk_sms", "--numbers", "+12025550100", "--text", "Hi", "--enqueue")
    job = BulkSMSJob.objects.get()
    assert out.splitlines()[-1] == f"Job {job.pk}: 1 batch queued for the workers."


def test_a_stop_with_one_uncertain_recipient_is_singular(textflow_live: TextFlowEmulator):
    textflow_live.fault("status", path="/bulk-sms", status=500)
    with pytest.raises(CommandError) as info:
        run("textflow_bulk_sms", "--numbers", "+12025550100", "--text", "Hi")
    job = BulkSMSJob.objects.get()
    message = str(info.value)
    assert "0/1 recipient sent; nothing is lost." in message
    assert message.endswith(
        f"Resume with: manage.py textflow_bulk_sms --resume {job.pk} (1 recipient is in a "
        "batch TextFlow may have accepted; add --resend-uncertain to send it again)"
    )
    out, _ = run("textflow_bulk_sms", "--resume", str(job.pk), "--resend-uncertain")
    assert out.splitlines()[0] == f"Resuming job {job.pk}: 0/1 recipient sent so far."


def test_the_prompt_for_one_recipient_is_singular(
    textflow_live: TextFlowEmulator, monkeypatch: pytest.MonkeyPatch
):
    from textflow_django.management.commands.textflow_bulk_sms import Command

    monkeypatch.setattr("sys.stdin", Terminal())
    prompts: list[str] = []

    def answer(prompt: str) -> str:
        prompts.append(prompt)
        return "n"

    monkeypatch.setattr("builtins.input", answer)
    command = Command()
    command._called_from_command_line = True  # as manage.py runs it
    out = io.StringIO()
    call_command(command, "--numbers", "+12025550100", "--text", "Hi", stdout=out)
    assert prompts == ["Send this SMS to 1 recipient? [y/N] "]
    assert out.getvalue().splitlines()[-1] == "Cancelled: nothing was sent."


def test_a_report_of_one_day_is_singular(settings):
    settings.TEXTFLOW = {**settings.TEXTFLOW, "FRAUD_GUARD": {"PREFIX_DIGITS": 1}}
    out, _ = run("textflow_report", "--days", "1")
    lines = out.splitlines()
    assert re.fullmatch(r"Codes sent from (\S+) to \1 \(1 day, time zone .+\)", lines[0])
    assert "Prefixes with the most unverified codes (+ and 1 digit)" in lines


# -- the progress display --------------------------------------------------------------------


@pytest.mark.parametrize("stream", [io.StringIO, Terminal], ids=["lines", "terminal"])
def test_progress_of_nothing_shows_nothing(stream: Callable[[], io.StringIO], ticking_clock):
    """No share of nothing (``0/0``, a made-up 100%): a total of 0 shows no progress."""
    out = stream()
    progress = _progress.Progress(out, 0, unit=lambda n: f"{n} things", interval=1)
    progress.update(0)
    progress.update(0, force=True)
    progress.close()
    assert out.getvalue() == ""


def test_progress_lines_repeat_nothing(ticking_clock):
    """A log gets a line only when the count moved: not one per poll of a stalled count,
    not a final line repeating the last."""
    out = io.StringIO()
    progress = _progress.Progress(out, 4, unit=lambda n: f"{n} things", interval=1)
    for done in (0, 0, 0, 3, 3, 4):
        progress.update(done)
    progress.update(4, force=True)
    progress.close()
    assert out.getvalue().splitlines() == [
        "  0.0% 0/4 things --/s ETA --",
        " 75.0% 3/4 things 1/s ETA 0:01",
        "100.0% 4/4 things 48/min ETA 0:00",
    ]


@pytest.mark.parametrize(
    ("rate", "text"),
    [
        (1234.4, "1,234/s"),
        (1.0, "1/s"),
        (0.5, "30/min"),
        (1 / 60, "1/min"),
        (1.5 / 3600, "2/h"),
        (1e-5, "<1/h"),
        (0.0, "0/s"),
    ],
)
def test_a_slow_rate_is_shown_per_minute_or_hour(rate: float, text: str):
    """Not "0/s" while things move (a delivery rate under one a second is common), nor a
    float's "2.8e-05/s"."""
    assert _progress.rate_text(rate) == text


# -- textflow_bulk_count -------------------------------------------------------------------


@pytest.fixture
def polls(
    textflow_live: TextFlowEmulator, monkeypatch: pytest.MonkeyPatch
) -> Iterator[list[int | None]]:
    """The command's sleeps deliver bulk recipients instead of waiting: the n-th sleep
    delivers the n-th entry of the list the test fills (None: all). A sleep beyond the list
    fails the test (a wait that would never end)."""
    plan: list[int | None] = []
    slept = iter(range(1000))

    def sleep(seconds: float) -> None:
        n = next(slept)
        if n >= len(plan):
            pytest.fail(f"slept {n + 1} times")
        textflow_live.deliver_bulk(plan[n])

    clock = iter(range(1000, 2000))
    monkeypatch.setattr(
        textflow_bulk_count,
        "time",
        types.SimpleNamespace(monotonic=lambda: float(next(clock)), sleep=sleep),
    )
    yield plan


def start_bulk(n: int) -> None:
    bulk.run_job(bulk.create_job(text="Hi", numbers=numbers(n)).pk)


def test_wait_with_nothing_pending_says_so_in_a_sentence(polls: list[int | None]):
    out, err = run("textflow_bulk_count", "--wait")
    assert out == "Nothing is pending: every recipient has been delivered.\n"
    assert err == ""  # no "100.0% 0/0"


def test_wait_ends_with_a_sentence_and_shows_progress_in_lines(
    polls: list[int | None], ticking_clock, textflow_live: TextFlowEmulator
):
    start_bulk(4)
    polls += [3, 1]
    out, err = run("textflow_bulk_count", "--wait", "--interval", "1")
    assert out == "All 4 recipients delivered: nothing is pending.\n"
    assert err.splitlines() == [
        "  0.0% 0/4 recipients delivered --/s ETA --",
        " 75.0% 3/4 recipients delivered 3/s ETA 0:00",
        "100.0% 4/4 recipients delivered 2/s ETA 0:00",
    ]
    assert len(textflow_live.calls("/bulk-count")) == 3


def test_wait_for_one_recipient_on_a_terminal(polls: list[int | None], ticking_clock):
    start_bulk(1)
    polls += [0, None]  # one poll finds it still pending, the next delivered
    err = Terminal()
    out, _ = run("textflow_bulk_count", "--wait", "--interval", "1", stderr=err)
    assert out == "1 recipient delivered: nothing is pending.\n"
    assert err.getvalue().split("\r") == [
        "",
        "[------------------------------]   0.0% 0/1 recipient delivered --/s ETA --",
        "[------------------------------]   0.0% 0/1 recipient delivered --/s ETA --",
        # Under one a second, the rate is a minute's: not a "0/s" that reads as stalled.
        "[##############################] 100.0% 1/1 recipient delivered 30/min ETA 0:00\n",
    ]


def test_wait_timeout_names_what_is_pending(polls: list[int | None]):
    start_bulk(1)
    with pytest.raises(CommandError) as info:
        run("textflow_bulk_count", "--wait", "--timeout", "0")
    assert str(info.value) == "Still 1 recipient pending after 0s."
    start_bulk(2)
    polls.append(0)
    with pytest.raises(CommandError) as info:
        run("textflow_bulk_count", "--wait", "--timeout", "1.5")
    assert str(info.value) == "Still 3 recipients pending after 1.5s."


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--interval", "0"], "--interval must be a positive number of seconds, not 0."),
        (["--interval", "-1"], "--interval must be a positive number of seconds, not -1."),
        (["--interval", "nan"], "--interval must be a positive number of seconds, not nan."),
        (["--interval", "inf"], "--interval must be a positive number of seconds, not inf."),
        (["--timeout", "-1"], "--timeout must be 0 or more seconds, not -1."),
        (["--timeout", "nan"], "--timeout must be 0 or more seconds, not nan."),
    ],
)
def test_bad_wait_options_are_command_errors(
    args: list[str], message: str, polls: list[int | None], textflow_live: TextFlowEmulator
):
    """Refused before anything is asked of TextFlow: not a sleep's ValueError or
    OverflowError, not a NaN deadline that never runs out."""
    start_bulk(1)
    calls = len(textflow_live.calls("/bulk-count"))
    with pytest.raises(CommandError) as info:
        run("textflow_bulk_count", "--wait", *args)
    assert str(info.value) == message
    assert len(textflow_live.calls("/bulk-count")) == calls


def test_a_count_that_cannot_be_read_names_the_problem(settings, textflow_live: TextFlowEmulator):
    tf(settings, BACKEND="nope.Backend")
    with pytest.raises(CommandError) as info:
        run("textflow_bulk_count")
    assert str(info.value).startswith(
        "Could not get the bulk count: Cannot import TEXTFLOW['BACKEND'] 'nope.Backend': "
    )
