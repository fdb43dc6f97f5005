"""Bulk SMS: jobs, batches, resume, and the two commands, against the emulator."""

from __future__ import annotations

import csv
import io
import os
import signal
import subprocess
import sys
import time
import types
from collections import Counter
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext

from tests.testapp.models import Contact
from textflow_django import bulk, signals
from textflow_django.management import _progress
from textflow_django.management import _words as words
from textflow_django.management.commands.textflow_bulk_sms import Command as BulkSMSCommand
from textflow_django.models import BulkBatch, BulkRecipient, BulkSMSJob
from textflow_django.tasks import enqueue_bulk_job
from textflow_django.testing import EMULATOR_API_KEY, TextFlowEmulator

from .conftest import tf

pytestmark = pytest.mark.django_db

ROOT = Path(__file__).parent.parent


def numbers(n: int, start: int = 0) -> list[str]:
    return [f"+1202555{i:04d}" for i in range(start, start + n)]


def reached(emulator: TextFlowEmulator) -> Counter[str]:
    return Counter(m.phone_number for m in emulator.messages if m.kind == "bulk")


def start(job: BulkSMSJob) -> None:
    """Mark a job running, as run_job/enqueue_job do before sending: only then may its
    batches be claimed."""
    BulkSMSJob.objects.filter(pk=job.pk).update(status=BulkSMSJob.Status.RUNNING)


def batch_sizes(emulator: TextFlowEmulator) -> list[int]:
    return [len(c.json["phone_numbers"]) for c in emulator.calls("/bulk-sms")]


def statuses(job: BulkSMSJob) -> list[str]:
    return list(
        BulkBatch.objects.filter(job=job).order_by("index").values_list("status", flat=True)
    )


def run(*args: str, stdin: str | None = None) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    if stdin is not None:
        old = sys.stdin
        sys.stdin = io.StringIO(stdin)
    try:
        call_command(*args, stdout=out, stderr=err)
    finally:
        if stdin is not None:
            sys.stdin = old
    return out.getvalue(), err.getvalue()


# -- building jobs -----------------------------------------------------------------------------


def test_create_job_normalises_dedups_and_reports():
    values = [
        "+12025550100",
        "+1 (202) 555-0100",
        "+12025550101",
        None,
        "",
        "  ",
        "nope",
        "+1 900 555 0199",
        "+12025550102",
    ]
    job = bulk.create_job(text="Hi", numbers=values, batch_size=2)
    assert (job.total, job.invalid, job.duplicates) == (3, 2, 1)
    assert job.status == BulkSMSJob.Status.READY
    assert sorted(BulkRecipient.objects.filter(job=job).values_list("phone_number", flat=True)) == [
        "+12025550100",
        "+12025550101",
        "+12025550102",
    ]
    assert job.invalid_samples[0].startswith("item 7: 'nope'")
    assert all(
        size <= 2 for size in BulkBatch.objects.filter(job=job).values_list("size", flat=True)
    )
    assert job.batches_total == BulkBatch.objects.filter(job=job).count()


def test_create_job_rejects_empty_text():
    with pytest.raises(ValueError):
        bulk.create_job(text="  ", numbers=numbers(1))


def test_country_rules_apply(settings):
    tf(settings, ALLOWED_COUNTRIES=["GB"])
    job = bulk.create_job(text="Hi", numbers=["+447400123456", "+12025550100", "+33612345678"])
    assert (job.total, job.invalid) == (1, 2)
    assert "country_not_allowed" in job.invalid_samples[0]


@pytest.mark.parametrize("strict", [False, True], ids=["fast", "strict"])
def test_premium_and_unassigned_numbers_are_refused_with_or_without_strict(strict):
    """The issue's finding: without --strict, a premium-rate +1 900 number and one of the
    unassigned area code 976 were accepted, in E.164, and sent."""
    values = ["+19005550143", "+19765550143", "+12025550143"]
    job = bulk.create_job(text="Hi", numbers=values, strict=strict)
    assert (job.total, job.invalid) == (1, 2)
    assert [sample.rsplit(" ", 1)[1] for sample in job.invalid_samples] == [
        "(premium)",
        "(invalid)",
    ]


def test_the_command_sends_no_premium_or_unassigned_number(textflow_live):
    out, _ = run(
        "textflow_bulk_sms", "--numbers", "+19005550143,+19765550143,+12025550143", "--text", "Hi"
    )
    assert "2 invalid" in out
    assert reached(textflow_live) == Counter(["+12025550143"])


# -- sending -----------------------------------------------------------------------------------


def test_run_job_reaches_everyone_once_in_bounded_batches(textflow_live):
    finished = []
    signals.bulk_job_finished.connect(
        lambda sender, job, **kw: finished.append(job.pk), weak=False, dispatch_uid="t1"
    )
    try:
        job = bulk.create_job(text="Sale", numbers=numbers(1234) + numbers(10), batch_size=100)
        job = bulk.run_job(job.pk)
    finally:
        signals.bulk_job_finished.disconnect(dispatch_uid="t1")
    assert job.status == BulkSMSJob.Status.FINISHED
    assert (job.sent, job.duplicates, job.batches_sent) == (1234, 10, 13)
    calls = textflow_live.calls("/bulk-sms")
    assert len(calls) == 13
    assert max(len(c.json["phone_numbers"]) for c in calls) <= 100
    assert {c.json["text"] for c in calls} == {"Sale"}
    assert reached(textflow_live) == Counter(numbers(1234))
    assert finished == [job.pk]


def test_a_5xx_stops_the_job_and_resume_skips_the_uncertain_batch(textflow_live):
    job = bulk.create_job(text="Hi", numbers=numbers(50), batch_size=10)

    def after_each_batch(sent: int) -> None:
        if sent == 20:  # two batches through: the third call fails with a 500
            textflow_live.fault("status", path="/bulk-sms", status=500)

    with pytest.raises(bulk.BulkJobStopped) as info:
        bulk.run_job(job.pk, progress=after_each_batch)
    stopped = info.value.job
    assert stopped.status == BulkSMSJob.Status.STOPPED
    assert (stopped.sent, stopped.uncertain) == (20, 10)
    assert "500" in stopped.last_error
    assert statuses(job) == ["accepted", "accepted", "uncertain", "pending", "pending"]
    assert len(textflow_live.calls("/bulk-sms")) == 3  # nothing after the failure

    resumed = bulk.run_job(job.pk)
    assert resumed.status == BulkSMSJob.Status.FINISHED
    assert (resumed.sent, resumed.uncertain) == (40, 10)
    got = reached(textflow_live)
    assert set(got.values()) == {1}
    assert set(numbers(50)) - set(got) == set(numbers(10, start=20))  # only the uncertain batch

    again = bulk.run_job(job.pk, resend_uncertain=True)
    assert (again.sent, again.uncertain) == (50, 0)
    assert reached(textflow_live) == Counter(numbers(50))


def test_a_refused_connection_leaves_the_batch_pending(settings, textflow_live):
    job = bulk.create_job(text="Hi", numbers=numbers(20), batch_size=10)
    tf(settings, BASE_URL="http://127.0.0.1:9/api")
    with pytest.raises(bulk.BulkJobStopped) as info:
        bulk.run_job(job.pk)
    assert info.value.error.maybe_sent is False
    assert BulkBatch.objects.get(job=job, index=0).status == BulkBatch.Status.PENDING
    assert info.value.job.uncertain == 0
    tf(settings, BASE_URL=textflow_live.url)
    assert bulk.run_job(job.pk).sent == 20
    assert reached(textflow_live) == Counter(numbers(20))


def test_rate_limited_batches_wait_and_retry(textflow_live):
    job = bulk.create_job(text="Hi", numbers=numbers(5))
    textflow_live.fault("rate_limit", path="/bulk-sms", retry_after=1)
    started = time.monotonic()
    assert bulk.run_job(job.pk).sent == 5
    assert time.monotonic() - started >= 0.9
    assert len(textflow_live.calls("/bulk-sms")) == 2
    assert reached(textflow_live) == Counter(numbers(5))


def test_textflow_refusing_a_number_drops_it_and_sends_the_rest(textflow_live, caplog):
    # 211 is a service code, no area code: ingest refuses it now, but a job recorded by an
    # earlier version (whose fast path let it in) may still hold it.
    bad = "+12112345678"
    job = bulk.create_job(text="Hi", numbers=numbers(4))
    BulkRecipient.objects.filter(job=job, phone_number=numbers(4)[-1]).update(phone_number=bad)
    textflow_live.fault(
        "respond",
        path="/bulk-sms",
        status=400,
        body='{"ok": false, "status": 400, "message": "Phone number is invalid"}',
    )
    job = bulk.run_job(job.pk)
    assert (job.sent, job.invalid, job.total) == (3, 1, 3)
    assert reached(textflow_live) == Counter(numbers(3))
    # The dropped number is logged masked.
    assert "+1********78" in caplog.text and bad not in caplog.text


def test_a_batch_is_claimed_once(textflow_live):
    job = bulk.create_job(text="Hi", numbers=numbers(3))
    start(job)
    batch_id = BulkBatch.objects.get(job=job).pk
    assert bulk.send_batch(batch_id) == (3, False)
    assert bulk.send_batch(batch_id) is None  # a second delivery of the same task
    assert len(textflow_live.calls("/bulk-sms")) == 1
    job.refresh_from_db()
    assert job.status == BulkSMSJob.Status.FINISHED  # the last batch finishes the job


@pytest.mark.parametrize(
    "status", [BulkSMSJob.Status.READY, BulkSMSJob.Status.STOPPED, BulkSMSJob.Status.FINISHED]
)
def test_a_batch_of_a_job_not_running_is_not_sent(status, textflow_live):
    job = bulk.create_job(text="Hi", numbers=numbers(3))
    BulkSMSJob.objects.filter(pk=job.pk).update(status=status)
    batch_id = BulkBatch.objects.get(job=job).pk
    assert bulk.send_batch(batch_id) is None
    assert textflow_live.calls("/bulk-sms") == []
    assert statuses(job) == ["pending"]


def immediate_tasks() -> None:
    """The tests run tasks with the immediate backend (the default when TASKS is not set):
    each task runs as it is queued, through the same code as in a worker."""
    from textflow_django.tasks import send_bulk_batch

    assert type(send_bulk_batch.get_backend()).__name__ == "ImmediateBackend"


def test_enqueue_runs_batches_as_tasks(settings, textflow_live):
    immediate_tasks()
    job = bulk.create_job(text="Hi", numbers=numbers(30), batch_size=10)
    queued = enqueue_bulk_job(job.pk)
    job.refresh_from_db()
    assert queued == 3
    assert job.status == BulkSMSJob.Status.FINISHED
    assert reached(textflow_live) == Counter(numbers(30))
    assert batch_sizes(textflow_live) == [10, 10, 10]


def test_inline_and_worker_senders_call_the_same_batch_function(textflow_live, monkeypatch):
    immediate_tasks()
    real = bulk.send_batch
    seen: list[int] = []

    def spy(batch_id: int, **kwargs: object) -> bulk.BatchOutcome | None:
        seen.append(batch_id)
        return real(batch_id, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(bulk, "send_batch", spy)  # as the task finds it
    monkeypatch.setattr(bulk.running, "send_batch", spy)  # as run_job finds it
    inline = bulk.create_job(text="Hi", numbers=numbers(30), batch_size=10)
    bulk.run_job(inline.pk)
    queued = bulk.create_job(text="Hi", numbers=numbers(30, start=100), batch_size=10)
    enqueue_bulk_job(queued.pk)
    ids = BulkBatch.objects.order_by("job_id", "index").values_list("id", flat=True)
    assert seen == list(ids)
    assert reached(textflow_live) == Counter(numbers(30) + numbers(30, start=100))


def _fault_after(emulator: TextFlowEmulator, tasks: int, times: int) -> None:
    """Queue a run of 500s for /bulk-sms once ``tasks`` bulk tasks have finished."""
    try:
        from django.tasks.signals import task_finished
    except ImportError:
        from django_tasks.signals import task_finished  # type: ignore[no-redef]
    finished = 0

    def receiver(sender: object, task_result: object, **kwargs: object) -> None:
        nonlocal finished
        finished += 1
        if finished == tasks:
            emulator.fault("status", path="/bulk-sms", status=500, times=times)

    task_finished.connect(receiver, weak=False, dispatch_uid="bulk-fault-after")


@pytest.fixture
def fault_after():  # type: ignore[no-untyped-def]
    yield _fault_after
    try:
        from django.tasks.signals import task_finished
    except ImportError:
        from django_tasks.signals import task_finished  # type: ignore[no-redef]
    task_finished.disconnect(dispatch_uid="bulk-fault-after")


@pytest.mark.parametrize("times", [1, 10], ids=["one-500", "steady-500"])
def test_workers_send_nothing_once_the_job_stopped(times, textflow_live, fault_after):
    immediate_tasks()
    job = bulk.create_job(text="Hi", numbers=numbers(50), batch_size=10)
    fault_after(textflow_live, tasks=2, times=times)
    assert enqueue_bulk_job(job.pk) == 5  # all five queued; the last two find the job stopped
    job.refresh_from_db()
    assert job.status == BulkSMSJob.Status.STOPPED
    assert (job.sent, job.uncertain) == (20, 10)
    assert "500" in job.last_error
    assert len(textflow_live.calls("/bulk-sms")) == 3  # two accepted, one failed, no more
    assert statuses(job) == ["accepted", "accepted", "uncertain", "pending", "pending"]

    textflow_live.reset()  # TextFlow is back
    assert enqueue_bulk_job(job.pk) == 2  # the resume queues the pending batches only
    job.refresh_from_db()
    assert job.status == BulkSMSJob.Status.FINISHED
    assert (job.sent, job.uncertain) == (40, 10)
    assert reached(textflow_live) == Counter(numbers(20, start=30))


def test_inline_run_stops_when_another_sender_stopped_the_job(textflow_live):
    job = bulk.create_job(text="Hi", numbers=numbers(30), batch_size=10)

    def worker_failed(sent: int) -> None:  # as a worker's TextFlow failure would leave it
        BulkSMSJob.objects.filter(pk=job.pk).update(
            status=BulkSMSJob.Status.STOPPED, last_error="TextFlow answered 500"
        )

    with pytest.raises(bulk.BulkJobStopped) as info:
        bulk.run_job(job.pk, progress=worker_failed)
    assert info.value.error is None
    assert "TextFlow answered 500" in str(info.value)
    # The second batch was claimed (with the first one's acceptance) before the stop, so it
    # went: one batch per sender in flight is the bound. Nothing after it.
    assert statuses(job) == ["accepted", "accepted", "pending"]
    assert len(textflow_live.calls("/bulk-sms")) == 2
    assert info.value.job.sent == 20


def test_chained_claims_cross_pages_of_batches(textflow_live, monkeypatch):
    monkeypatch.setattr(bulk.running, "BATCH_PAGE", 2)
    job = bulk.create_job(text="Hi", numbers=numbers(25), batch_size=5)
    with CaptureQueriesContext(connection) as queries:
        assert bulk.run_job(job.pk).sent == 25
    assert reached(textflow_live) == Counter(numbers(25))
    pages = [
        q["sql"]
        for q in queries
        if 'FROM "textflow_bulkbatch"' in q["sql"] and "LIMIT 2" in q["sql"]
    ]
    assert len(pages) == 3  # 2 + 2 + 1 batches
    claims = [q["sql"] for q in queries if "SET status = 'sending'" in q["sql"]]
    # Each batch is claimed exactly once: the first alone, the rest with the previous one's
    # acceptance, across the page boundaries too.
    assert len(claims) == 5


# -- textflow_bulk_sms ---------------------------------------------------------------------


def test_command_with_numbers(textflow_live):
    out, err = run(
        "textflow_bulk_sms",
        "--numbers",
        "+12025550100, +1 202 555 0101,bad,+12025550100",
        "--text",
        "Hello",
    )
    assert "2 recipients" in out and "1 invalid" in out and "1 duplicate" in out
    assert "Job" in out and "2 recipients sent" in out
    assert reached(textflow_live) == Counter(["+12025550100", "+12025550101"])
    assert "100.0%" in err  # plain progress lines when stderr is not a terminal


def test_command_from_a_model_with_filter(textflow_live):
    Contact.objects.create(phone="+12025550100", landline="+12025550200")
    Contact.objects.create(phone="+12025550101")
    Contact.objects.create(phone="+12025550102")
    run(
        "textflow_bulk_sms",
        "--model",
        "testapp.Contact",
        "--field",
        "phone",
        "--filter",
        "landline=",
        "--text",
        "Hi",
        "--batch-size",
        "1",
    )
    assert reached(textflow_live) == Counter(["+12025550101", "+12025550102"])
    assert len(textflow_live.calls("/bulk-sms")) == 2


def test_command_from_files(tmp_path, textflow_live):
    plain = tmp_path / "numbers.txt"
    plain.write_text("+12025550100\n\n+12025550101\nnot a number\n")
    out, _ = run("textflow_bulk_sms", "--file", str(plain), "--text", "Hi")
    assert "line 4: 'not a number'" in out
    table = tmp_path / "people.csv"
    table.write_text("name,mobile\nAnn,+12025550102\nBob,+1 202 555 0103\n")
    run("textflow_bulk_sms", "--file", str(table), "--column", "mobile", "--text", "Hi")
    run("textflow_bulk_sms", "--file", "-", "--text", "Hi", stdin="+12025550104\n")
    assert reached(textflow_live) == Counter(numbers(5, start=100))


def test_command_text_file(tmp_path, textflow_live):
    text = tmp_path / "text.txt"
    text.write_text("Big sale\n", encoding="utf-8")
    run("textflow_bulk_sms", "--numbers", "+12025550100", "--text-file", str(text))
    assert textflow_live.calls("/bulk-sms")[0].json["text"] == "Big sale"


def test_dry_run_sends_and_keeps_nothing(textflow_live):
    out, _ = run(
        "textflow_bulk_sms", "--numbers", "+12025550100,+12025550101", "--text", "Hi", "--dry-run"
    )
    assert "2 recipients" in out and "Dry run" in out
    assert "1 SMS segment (GSM-7) a recipient; 2 SMS segments in all" in out
    assert textflow_live.calls("/bulk-sms") == []
    assert not BulkSMSJob.objects.exists() and not BulkRecipient.objects.exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--text", "Hi"], "exactly one source"),
        (["--numbers", "+12025550100", "--file", "x", "--text", "Hi"], "exactly one source"),
        (["--numbers", "+12025550100"], "--text"),
        (["--numbers", "+12025550100", "--text", "   "], "empty"),
        (["--model", "nope.Nope", "--field", "x", "--text", "Hi"], "Unknown model 'nope.Nope'"),
        (["--model", "testapp.Contact", "--text", "Hi"], "--model needs --field"),
        (["--model", "testapp.Contact", "--field", "nope", "--text", "Hi"], "no field 'nope'"),
        (["--model", "testapp.Contact", "--field", "id", "--text", "Hi"], "not a text field"),
        (
            [
                "--model",
                "testapp.Contact",
                "--field",
                "phone",
                "--filter",
                "nope=1",
                "--text",
                "Hi",
            ],
            "Bad filter",
        ),
        (
            [
                "--model",
                "testapp.Contact",
                "--field",
                "phone",
                "--filter",
                "nofilter",
                "--text",
                "Hi",
            ],
            "field=value",
        ),
        (["--file", "/nonexistent/file", "--text", "Hi"], "no such file"),
        (
            [
                "--numbers",
                "+12025550100",
                "--text-file",
                "/nonexistent",
            ],
            "Cannot read --text-file",
        ),
        (
            ["--numbers", "+12025550100", "--text", "Hi", "--batch-size", "0"],
            r"--batch-size: The batch size must be from 1 to 10,000, not 0",
        ),
        (
            ["--numbers", "+12025550100", "--text", "Hi", "--batch-size", "10001"],
            r"--batch-size: The batch size must be from 1 to 10,000, not 10001",
        ),
        (["--numbers", "bad,worse", "--text", "Hi"], "No valid recipients"),
        (["--resume", "999"], "no bulk job 999"),
        (["--resume", "1", "--text", "Hi"], "drop --text"),
        (["--numbers", "+12025550100", "--text", "Hi", "--resend-uncertain"], "goes with --resume"),
    ],
)
def test_command_errors_name_the_problem(args, message, textflow_live):
    with pytest.raises(CommandError, match=message):
        run("textflow_bulk_sms", *args)
    assert textflow_live.calls("/bulk-sms") == []


def test_command_csv_without_the_column(tmp_path):
    table = tmp_path / "people.csv"
    table.write_text("name,phone\nAnn,+12025550102\n")
    with pytest.raises(CommandError, match="no column 'mobile'"):
        run("textflow_bulk_sms", "--file", str(table), "--column", "mobile", "--text", "Hi")


def test_csv_rows_missing_the_column_are_counted_with_their_lines(tmp_path, textflow_live):
    """The issue's finding: rows too short to reach the column were skipped silently."""
    table = tmp_path / "people.csv"
    table.write_text(
        "name,mobile\nAnn,+12025550102\nBob\n\nCid,+12025550103\nDan\nEve,\n",
        encoding="utf-8",
    )
    out, _ = run("textflow_bulk_sms", "--file", str(table), "--column", "mobile", "--text", "Hi")
    # Bob (line 3) and Dan (line 6) have no field; the blank line and Eve's empty field
    # are no recipients, as before.
    assert "2 recipients" in out and "2 invalid" in out
    assert f"invalid: {table} column mobile: 2 rows have no 'mobile' field: lines 3, 6" in out
    assert reached(textflow_live) == Counter(["+12025550102", "+12025550103"])


def test_many_rows_missing_the_column_name_the_first_few(tmp_path):
    lines = ["name,mobile"] + [f"P{i},+1202555{i:04d}" if i % 2 else f"P{i}" for i in range(30)]
    table = tmp_path / "people.csv"
    table.write_text("\n".join(lines) + "\n", encoding="utf-8")
    job = bulk.create_job(
        text="Hi", source=bulk.file_numbers(table.open(newline=""), name="t.csv", column="mobile")
    )
    assert (job.total, job.invalid) == (15, 15)
    assert job.invalid_samples[0] == (
        "t.csv column mobile: 15 rows have no 'mobile' field: lines 2, 4, 6, 8, 10 and 10 more"
    )


def test_a_csv_header_naming_the_column_twice_is_a_command_error(tmp_path, textflow_live):
    """The issue's finding: the first of two 'mobile' columns was used without a word."""
    table = tmp_path / "people.csv"
    table.write_text("mobile,name,mobile\n+12025550102,Ann,+12025550103\n", encoding="utf-8")
    with pytest.raises(CommandError, match=r"names 'mobile' 2 times \(columns 1, 3\)"):
        run("textflow_bulk_sms", "--file", str(table), "--column", "mobile", "--text", "Hi")
    assert_nothing_kept_or_sent(textflow_live)


def test_batch_size_bound_is_the_largest_allowed(textflow_live):
    run("textflow_bulk_sms", "--numbers", "+12025550100", "--text", "Hi", "--batch-size", "10000")
    assert BulkSMSJob.objects.get().batch_size == bulk.MAX_BATCH_SIZE == 10_000
    with pytest.raises(ValueError, match="from 1 to 10,000"):
        bulk.create_job(text="Hi", numbers=numbers(1), batch_size=0)  # 0 is not "the default"


def test_default_batch_size_comes_from_the_setting(settings, textflow_live):
    tf(settings, BULK_BATCH_SIZE=3)
    run("textflow_bulk_sms", "--numbers", ",".join(numbers(7)), "--text", "Hi")
    assert batch_sizes(textflow_live) == [3, 3, 1]
    assert BulkSMSJob.objects.get().batch_size == 3


def test_a_batch_size_setting_out_of_range_is_a_command_error(settings, textflow_live):
    tf(settings, BULK_BATCH_SIZE=50_000)
    with pytest.raises(CommandError, match=r"TEXTFLOW\['BULK_BATCH_SIZE'\].*not 50000"):
        run("textflow_bulk_sms", "--numbers", "+12025550100", "--text", "Hi")
    assert not BulkSMSJob.objects.exists() and textflow_live.calls("/bulk-sms") == []


def test_blocked_countries_apply(settings, textflow_live):
    tf(settings, BLOCKED_COUNTRIES=["GB"])
    out, _ = run(
        "textflow_bulk_sms", "--numbers", "+447400123456,+12025550100,+33612345678", "--text", "Hi"
    )
    assert "2 recipients" in out and "1 invalid" in out
    assert "item 1: '+44********56' (country_not_allowed)" in out  # masked (privacy)
    assert reached(textflow_live) == Counter(["+12025550100", "+33612345678"])


def test_a_model_is_read_in_primary_key_pages(textflow_live, monkeypatch):
    monkeypatch.setattr(bulk.sources, "MODEL_PAGE", 2)
    contacts = [Contact.objects.create(phone=n) for n in numbers(5)]
    with CaptureQueriesContext(connection) as queries:
        run("textflow_bulk_sms", "--model", "testapp.Contact", "--field", "phone", "--text", "Hi")
    pages = [q["sql"] for q in queries if 'FROM "testapp_contact"' in q["sql"]]
    assert len(pages) == 3  # 2 + 2 + 1 rows: the short page ends it
    assert all(page.endswith("LIMIT 2") for page in pages)
    assert '"testapp_contact"."id" >' not in pages[0]
    assert f'"testapp_contact"."id" > {contacts[1].pk}' in pages[1]
    assert f'"testapp_contact"."id" > {contacts[3].pk}' in pages[2]
    assert reached(textflow_live) == Counter(numbers(5))


def test_a_page_size_multiple_reads_one_empty_page_more(textflow_live, monkeypatch):
    monkeypatch.setattr(bulk.sources, "MODEL_PAGE", 2)
    for n in numbers(4):
        Contact.objects.create(phone=n)
    with CaptureQueriesContext(connection) as queries:
        run("textflow_bulk_sms", "--model", "testapp.Contact", "--field", "phone", "--text", "Hi")
    assert len([q for q in queries if 'FROM "testapp_contact"' in q["sql"]]) == 3
    assert reached(textflow_live) == Counter(numbers(4))


def test_utf8_byte_order_mark_is_not_part_of_the_first_number(tmp_path, textflow_live):
    plain = tmp_path / "numbers.txt"
    plain.write_bytes("\ufeff+12025550100\r\n+12025550101\r\n".encode())
    out, _ = run("textflow_bulk_sms", "--file", str(plain), "--text", "Hi")
    assert "2 recipients" in out and "0 invalid" in out
    # Excel's "CSV UTF-8": a BOM before the header's first column name.
    table = tmp_path / "people.csv"
    table.write_bytes("\ufeffmobile,name\r\n+12025550102,Ann\r\n".encode())
    out, _ = run("textflow_bulk_sms", "--file", str(table), "--column", "mobile", "--text", "Hi")
    assert "1 recipient" in out and "0 invalid" in out
    text = tmp_path / "text.txt"
    text.write_bytes("\ufeffBig sale".encode())
    run("textflow_bulk_sms", "--numbers", "+12025550103", "--text-file", str(text))
    assert reached(textflow_live) == Counter(numbers(4, start=100))
    assert textflow_live.calls("/bulk-sms")[-1].json["text"] == "Big sale"


def test_stdin_with_a_descriptor_is_read_as_utf8_and_left_open(
    tmp_path, textflow_live, monkeypatch
):
    piped = tmp_path / "piped.txt"
    piped.write_bytes("\ufeff+12025550100\n+1 202 555 0101\n".encode())
    with piped.open(encoding="latin-1") as stdin:  # the process's own encoding is not used
        monkeypatch.setattr("sys.stdin", stdin)
        out, _ = run("textflow_bulk_sms", "--file", "-", "--text", "Hi")
        assert not stdin.closed
    assert "2 recipients" in out and "0 invalid" in out
    assert BulkSMSJob.objects.get().source == "stdin"
    assert reached(textflow_live) == Counter(numbers(2, start=100))


def assert_nothing_kept_or_sent(emulator: TextFlowEmulator) -> None:
    assert not BulkSMSJob.objects.exists()
    assert not BulkRecipient.objects.exists() and not BulkBatch.objects.exists()
    assert emulator.calls("/bulk-sms") == []


def test_a_file_that_is_not_utf8_names_the_line(tmp_path, textflow_live):
    # Far past the decoder's first chunk, so the line number is the real one.
    plain = tmp_path / "numbers.txt"
    plain.write_bytes(("+12025550100\n" * 5000).encode() + b"Jos\xe9\n+12025550101\n")
    with pytest.raises(CommandError) as info:
        run("textflow_bulk_sms", "--file", str(plain), "--text", "Hi")
    assert str(info.value) == f"{plain} line 5001 is not UTF-8 text. Nothing was sent."
    assert_nothing_kept_or_sent(textflow_live)

    table = tmp_path / "people.csv"
    table.write_bytes(b"name,mobile\nAnn,+12025550100\nJos\xe9,+12025550101\n")
    with pytest.raises(CommandError, match=r"people\.csv line 3 is not UTF-8 text"):
        run("textflow_bulk_sms", "--file", str(table), "--column", "mobile", "--text", "Hi")
    assert_nothing_kept_or_sent(textflow_live)

    header = tmp_path / "header.csv"
    header.write_bytes(b"n\xe4me,mobile\nAnn,+12025550100\n")
    with pytest.raises(CommandError, match=r"header\.csv line 1 is not UTF-8 text"):
        run("textflow_bulk_sms", "--file", str(header), "--column", "mobile", "--text", "Hi")
    assert_nothing_kept_or_sent(textflow_live)

    # The failed imports left nothing behind, not even their staging table.
    plain.write_text("+12025550100\n")
    out, _ = run("textflow_bulk_sms", "--file", str(plain), "--text", "Hi")
    assert "1 recipient sent" in out


def test_a_strictly_decoded_stream_that_is_not_utf8_is_a_source_error(textflow_live):
    stream = io.TextIOWrapper(io.BytesIO(b"+12025550100\n\xff\xfe\n"), encoding="utf-8")
    source = bulk.file_numbers(stream, name="upload")
    with pytest.raises(
        bulk.SourceError,
        match=r"upload is not UTF-8 text \(at line 1 or after: invalid start byte\)",
    ):
        bulk.create_job(text="Hi", source=source)
    assert_nothing_kept_or_sent(textflow_live)


def test_a_csv_field_over_the_size_limit_names_the_line(tmp_path, textflow_live):
    table = tmp_path / "people.csv"
    huge = "x" * (csv.field_size_limit() + 1)
    table.write_text(f"name,mobile\nAnn,+12025550100\n{huge},+12025550101\n")
    with pytest.raises(CommandError) as info:
        run("textflow_bulk_sms", "--file", str(table), "--column", "mobile", "--text", "Hi")
    assert str(info.value) == (
        f"{table} line 3: not valid CSV (field larger than field limit "
        f"({csv.field_size_limit()})). Nothing was sent."
    )
    assert_nothing_kept_or_sent(textflow_live)


def test_a_filter_the_database_refuses_is_a_command_error(textflow_live):
    Contact.objects.create(phone="+12025550100")
    with pytest.raises(CommandError) as info:
        run(
            "textflow_bulk_sms",
            "--model",
            "testapp.Contact",
            "--field",
            "phone",
            "--filter",
            "phone__regex=(",
            "--text",
            "Hi",
        )
    message = str(info.value)
    assert message.startswith(
        "Reading testapp.Contact.phone where phone__regex=( failed (check the filters): "
    )
    assert message.endswith("Nothing was sent.")
    assert_nothing_kept_or_sent(textflow_live)


def test_a_directory_is_not_a_file(tmp_path, textflow_live):
    with pytest.raises(CommandError, match=f"--file {tmp_path} is a directory"):
        run("textflow_bulk_sms", "--file", str(tmp_path), "--text", "Hi")
    assert_nothing_kept_or_sent(textflow_live)


@pytest.mark.parametrize(
    ("option", "name"),
    [
        (["--model", "testapp.Contact"], "--model"),
        (["--field", "phone"], "--field"),
        (["--filter", "landline="], "--filter"),
        (["--file", "numbers.txt"], "--file"),
        (["--column", "mobile"], "--column"),
        (["--numbers", "+12025550100"], "--numbers"),
        (["--text", "Hi"], "--text"),
        (["--text-file", "text.txt"], "--text-file"),
        (["--batch-size", "10"], "--batch-size"),
        (["--strict"], "--strict"),
    ],
)
def test_resume_refuses_options_of_a_new_job(option, name, textflow_live):
    job = bulk.create_job(text="Hi", numbers=numbers(2))
    with pytest.raises(CommandError) as info:
        run("textflow_bulk_sms", "--resume", str(job.pk), *option)
    assert str(info.value) == f"--resume continues a job as it was: drop {name}."
    assert textflow_live.calls("/bulk-sms") == []


def test_command_failure_says_how_to_resume(textflow_live):
    textflow_live.fault("status", path="/bulk-sms", status=503)
    with pytest.raises(CommandError) as info:
        run("textflow_bulk_sms", "--numbers", "+12025550100", "--text", "Hi")
    job = BulkSMSJob.objects.get()
    assert f"--resume {job.pk}" in str(info.value)
    assert "--resend-uncertain" in str(info.value)
    assert "nothing is lost" in str(info.value)
    out, _ = run("textflow_bulk_sms", "--resume", str(job.pk), "--resend-uncertain")
    assert "1 recipient sent" in out
    assert reached(textflow_live) == Counter(["+12025550100"])


class FakeTerminal(io.StringIO):
    """A stdin that says it is a terminal; reading it fails the test (nothing may block)."""

    def isatty(self) -> bool:
        return True

    def read(self, *args: object) -> str:
        pytest.fail("read stdin")

    def readline(self, *args: object) -> str:
        pytest.fail("read stdin")


def from_command_line(*args: str) -> tuple[str, str]:
    """Run the command as ``manage.py`` does (run_from_argv sets _called_from_command_line)
    without run_from_argv's sys.exit and closing of the test's database connections."""
    command = BulkSMSCommand()
    command._called_from_command_line = True
    out, err = io.StringIO(), io.StringIO()
    call_command(command, *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def test_command_never_prompts_without_a_terminal(textflow_live, monkeypatch):
    monkeypatch.setattr("builtins.input", lambda *a: pytest.fail("prompted"))
    from_command_line("--numbers", "+12025550100", "--text", "Hi")
    assert len(textflow_live.calls("/bulk-sms")) == 1


def test_call_command_never_prompts_even_on_a_terminal(textflow_live, monkeypatch):
    # call_command's "interactive" defaults to True: a terminal alone must not make it ask.
    monkeypatch.setattr("sys.stdin", FakeTerminal())
    monkeypatch.setattr("builtins.input", lambda *a: pytest.fail("prompted"))
    out, _ = run("textflow_bulk_sms", "--numbers", "+12025550100", "--text", "Hi")
    assert "1 recipient sent" in out
    assert reached(textflow_live) == Counter(["+12025550100"])


def test_command_asks_on_a_terminal_unless_no_input(textflow_live, monkeypatch):
    monkeypatch.setattr("sys.stdin", FakeTerminal())
    prompts: list[str] = []
    answers = iter(["n", "yes"])

    def answer(prompt: str) -> str:
        prompts.append(prompt)
        return next(answers)

    monkeypatch.setattr("builtins.input", answer)
    out, _ = from_command_line("--numbers", "+12025550100,+12025550101", "--text", "Hi")
    assert prompts == ["Send this SMS to 2 recipients? [y/N] "]
    assert "Cancelled" in out and textflow_live.calls("/bulk-sms") == []
    assert not BulkSMSJob.objects.exists()
    out, _ = from_command_line("--numbers", "+12025550100", "--text", "Hi")
    assert len(prompts) == 2 and "1 recipient sent" in out
    from_command_line("--numbers", "+12025550101", "--text", "Hi", "--no-input")
    assert len(prompts) == 2
    assert reached(textflow_live) == Counter(numbers(2, start=100))


def test_end_of_input_at_the_prompt_cancels(textflow_live, monkeypatch):
    monkeypatch.setattr("sys.stdin", FakeTerminal())

    def ctrl_d(prompt: str) -> str:
        raise EOFError

    monkeypatch.setattr("builtins.input", ctrl_d)
    out, _ = from_command_line("--numbers", "+12025550100", "--text", "Hi")
    assert "Cancelled" in out
    assert textflow_live.calls("/bulk-sms") == [] and not BulkSMSJob.objects.exists()


class FakeTerminalOut(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def ticking_clock(monkeypatch):  # type: ignore[no-untyped-def]
    """The progress display's clock moves one second each time it is read."""
    ticks = iter(range(1000, 2000))
    monkeypatch.setattr(
        _progress, "time", types.SimpleNamespace(monotonic=lambda: float(next(ticks)))
    )


def test_progress_bar_on_a_terminal(textflow_live, ticking_clock):
    err = FakeTerminalOut()
    call_command(
        "textflow_bulk_sms",
        "--numbers",
        ",".join(numbers(30)),
        "--text",
        "Hi",
        "--batch-size",
        "10",
        stdout=io.StringIO(),
        stderr=err,
    )
    # One frame per batch (a second apart), redrawn with "\r", then the final one and a
    # newline. The rate needs two updates: until then it and the ETA are "--".
    assert err.getvalue().split("\r") == [
        "",
        "[##########--------------------]  33.3% 10/30 recipients --/s ETA --",
        "[####################----------]  66.7% 20/30 recipients 10/s ETA 0:01",
        "[##############################] 100.0% 30/30 recipients 10/s ETA 0:00",
        "[##############################] 100.0% 30/30 recipients 7/s ETA 0:00\n",
    ]


def test_progress_lines_when_not_a_terminal(ticking_clock):
    out = io.StringIO()
    progress = _progress.Progress(out, 1000, unit=words.recipients, interval=5)
    for done in range(100, 1001, 100):  # one update a second: a line every 5 seconds
        progress.update(done)
    progress.update(1000, force=True)
    progress.close()
    assert out.getvalue().splitlines() == [
        " 10.0% 100/1,000 recipients --/s ETA --",
        " 60.0% 600/1,000 recipients 100/s ETA 0:04",
        "100.0% 1,000/1,000 recipients 90/s ETA 0:00",
    ]


def test_enqueue_through_the_command(textflow_live):
    immediate_tasks()
    out, err = run(
        "textflow_bulk_sms",
        "--numbers",
        ",".join(numbers(25)),
        "--text",
        "Hi",
        "--batch-size",
        "10",
        "--enqueue",
    )
    job = BulkSMSJob.objects.get()
    assert out.splitlines()[-1] == f"Job {job.pk}: 3 batches queued for the workers."
    assert err == ""  # no progress display: the workers send
    assert job.status == BulkSMSJob.Status.FINISHED and job.sent == 25
    assert batch_sizes(textflow_live) == [10, 10, 5]
    assert reached(textflow_live) == Counter(numbers(25))


def test_enqueue_through_the_command_reports_a_stop_and_resumes(textflow_live):
    immediate_tasks()
    textflow_live.fault("status", path="/bulk-sms", status=500, times=10)
    args = ["--numbers", ",".join(numbers(25)), "--text", "Hi", "--batch-size", "10"]
    with pytest.raises(CommandError) as info:
        run("textflow_bulk_sms", *args, "--enqueue")
    job = BulkSMSJob.objects.get()
    message = str(info.value)
    assert message.startswith(f"Job {job.pk} stopped: ")
    assert "0/25 recipients sent; nothing is lost." in message
    assert f"Resume with: manage.py textflow_bulk_sms --resume {job.pk} --enqueue " in message
    assert "10 recipients are in batches TextFlow may have accepted" in message
    assert len(textflow_live.calls("/bulk-sms")) == 1  # the other tasks sent nothing
    assert statuses(job) == ["uncertain", "pending", "pending"]

    textflow_live.reset()
    out, _ = run("textflow_bulk_sms", "--resume", str(job.pk), "--enqueue")
    assert out.splitlines()[-1] == f"Job {job.pk}: 2 batches queued for the workers."
    assert batch_sizes(textflow_live) == [10, 5]
    assert reached(textflow_live) == Counter(numbers(15, start=10))


# -- textflow_bulk_count -------------------------------------------------------------------


def test_bulk_count(textflow_live):
    bulk.run_job(bulk.create_job(text="Hi", numbers=numbers(7)).pk)
    out, _ = run("textflow_bulk_count")
    assert out.strip() == "7"


def test_bulk_count_wait_polls_until_zero(textflow_live):
    bulk.run_job(bulk.create_job(text="Hi", numbers=numbers(4)).pk)
    import threading

    timer = threading.Timer(0.3, textflow_live.deliver_bulk)
    timer.start()
    out, err = run("textflow_bulk_count", "--wait", "--interval", "0.1")
    timer.join()
    assert "nothing is pending" in out
    assert "delivered" in err
    assert len(textflow_live.calls("/bulk-count")) >= 2


def test_bulk_count_wait_timeout(textflow_live):
    bulk.run_job(bulk.create_job(text="Hi", numbers=numbers(2)).pk)
    with pytest.raises(CommandError, match="Still 2 recipients pending"):
        run("textflow_bulk_count", "--wait", "--interval", "0.05", "--timeout", "0.2")


def test_bulk_count_unavailable_is_a_command_error(textflow_live):
    textflow_live.fault("html", path="/bulk-count", status=502)
    with pytest.raises(CommandError, match="Could not get the bulk count"):
        run("textflow_bulk_count")


# -- a real crash: SIGKILL in the middle of a run, then resume -----------------------------


@pytest.mark.django_db(transaction=True)
def test_sigkill_mid_run_then_resume_reaches_everyone_once(tmp_path, textflow_emulator):
    db = tmp_path / "crash.sqlite3"
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "TEXTFLOW_TEST_SQLITE": str(db),
        "TEXTFLOW_TEST_EMULATOR_URL": textflow_emulator.url,
        "PYTHONPATH": str(ROOT),
    }
    env.pop("TEST_DATABASE", None)
    manage = [sys.executable, "-m", "django"]
    subprocess.run([*manage, "migrate", "-v", "0"], env=env, check=True, cwd=ROOT, timeout=120)
    listing = tmp_path / "numbers.txt"
    everyone = numbers(2000)
    listing.write_text("\n".join(everyone))
    textflow_emulator.delay = 0.05  # each batch takes a while, so the kill lands mid-run
    proc = subprocess.Popen(
        [
            *manage,
            "textflow_bulk_sms",
            "--file",
            str(listing),
            "--text",
            "Hi",
            "--batch-size",
            "50",
            "--no-input",
        ],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 60
    while len(textflow_emulator.calls("/bulk-sms")) < 8 and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    assert proc.returncode == -signal.SIGKILL
    first_run = len(textflow_emulator.calls("/bulk-sms"))
    assert 8 <= first_run < 40

    # A resume within BULK_LEASE of the kill would leave the killed run's batch to it, as
    # to a live sender (tests/test_bulk_lease.py): the lease has run out since.
    age_claims = "from datetime import timedelta as t; from django.db.models import F; from "
    age_claims += "textflow_django.models import BulkBatch as B; "
    age_claims += "B.objects.update(claimed_at=F('claimed_at') - t(hours=1))"
    subprocess.run([*manage, "shell", "-c", age_claims], env=env, cwd=ROOT, check=True, timeout=60)
    textflow_emulator.delay = 0.0
    resumed = subprocess.run(
        [*manage, "textflow_bulk_sms", "--resume", "1"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert resumed.returncode == 0, resumed.stderr
    got = reached(textflow_emulator)
    assert max(got.values()) == 1, "a recipient got the SMS twice"
    missing = set(everyone) - set(got)
    assert len(missing) <= 50, "more than the one batch in flight was lost"
    report = (
        subprocess.run(
            [
                *manage,
                "shell",
                "-c",
                "from textflow_django.models import BulkBatch as B, BulkSMSJob as J;"
                "j=J.objects.get(pk=1);"
                "print(j.status, j.sent, j.uncertain, B.objects.filter(status='uncertain').count())",
            ],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        .stdout.splitlines()[-1]
        .split()
    )
    status, sent, uncertain, uncertain_batches = report
    assert status == "finished"
    assert int(uncertain_batches) <= 1
    assert int(sent) + int(uncertain) == 2000
    assert len(missing) <= int(uncertain)


# -- resuming and sharing a job: what run_job and enqueue_job promise --------------------------


def batch_ids(job: BulkSMSJob) -> list[int]:
    return list(BulkBatch.objects.filter(job=job).order_by("index").values_list("id", flat=True))


def test_a_batch_a_dead_sender_left_sending_is_uncertain_until_resent(
    textflow_live, finished_signals
):
    job = bulk.create_job(text="Hi", numbers=numbers(30), batch_size=10)
    start(job)
    # A sender claimed the second batch and died: whether TextFlow got it is unknown.
    BulkBatch.objects.filter(job=job, index=1).update(status=BulkBatch.Status.SENDING)

    job = bulk.run_job(job.pk)

    assert statuses(job) == ["accepted", "uncertain", "accepted"]
    assert BulkBatch.objects.get(job=job, index=1).error == "the sender died mid-batch"
    assert (job.status, job.sent, job.uncertain) == (BulkSMSJob.Status.FINISHED, 20, 10)
    assert reached(textflow_live) == Counter(numbers(10) + numbers(10, start=20))
    assert finished_signals == [job.pk]

    # The operator asks for the uncertain batch again: the finished job reopens, sends it,
    # and finishes (and is announced) once more.
    again = bulk.run_job(job.pk, resend_uncertain=True)
    assert (again.status, again.sent, again.uncertain) == (BulkSMSJob.Status.FINISHED, 30, 0)
    assert reached(textflow_live) == Counter(numbers(30))
    assert finished_signals == [job.pk, job.pk]


@pytest.mark.parametrize("resend_uncertain", [False, True])
def test_running_a_finished_job_again_leaves_it_finished(
    textflow_live, finished_signals, resend_uncertain
):
    job = bulk.run_job(bulk.create_job(text="Hi", numbers=numbers(10)).pk)
    assert job.status == BulkSMSJob.Status.FINISHED
    finished_at = job.finished_at

    again = bulk.run_job(job.pk, resend_uncertain=resend_uncertain)  # nothing uncertain

    assert again.status == BulkSMSJob.Status.FINISHED
    assert again.finished_at == finished_at
    assert finished_signals == [job.pk]  # not announced a second time
    assert len(textflow_live.calls("/bulk-sms")) == 1
    assert reached(textflow_live) == Counter(numbers(10))


def test_run_job_skips_a_batch_another_sender_took_and_sends_the_rest(
    textflow_live, finished_signals, monkeypatch
):
    job = bulk.create_job(text="Hi", numbers=numbers(40), batch_size=10)
    ids = batch_ids(job)
    tried: list[int] = []
    real = bulk.running.send_batch

    def spy(batch_id: int, **kwargs: object) -> bulk.BatchOutcome | None:
        tried.append(batch_id)
        return real(batch_id, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(bulk.running, "send_batch", spy)  # run_job's sends only
    taken: list[bulk.BatchOutcome | None] = []

    def worker_takes_the_third_batch(sent: int) -> None:
        # After the first batch (the second is already claimed by run_job, with the
        # first's acceptance), a worker sends the third, as a queued task would.
        if not taken:
            taken.append(bulk.sending.send_batch(ids[2]))

    job = bulk.run_job(job.pk, progress=worker_takes_the_third_batch)

    assert taken == [(10, False)]
    assert tried == ids  # the third could not be claimed: skipped, and the fourth sent
    assert (job.status, job.sent, job.batches_sent) == (BulkSMSJob.Status.FINISHED, 40, 4)
    assert statuses(job) == ["accepted"] * 4
    assert len(textflow_live.calls("/bulk-sms")) == 4
    assert reached(textflow_live) == Counter(numbers(40))
    assert finished_signals == [job.pk]


def test_run_job_stops_looking_once_another_sender_finished_the_job(
    textflow_live, finished_signals, monkeypatch
):
    job = bulk.create_job(text="Hi", numbers=numbers(40), batch_size=10)
    ids = batch_ids(job)
    tried: list[int] = []
    real = bulk.running.send_batch

    def spy(batch_id: int, **kwargs: object) -> bulk.BatchOutcome | None:
        tried.append(batch_id)
        return real(batch_id, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(bulk.running, "send_batch", spy)
    progress: list[int] = []

    def meanwhile_a_worker(sent: int) -> None:
        progress.append(sent)
        if len(progress) == 1:
            # A worker sends the last two batches while run_job sends the second...
            bulk.sending.send_batch(ids[2], finish=False)
            bulk.sending.send_batch(ids[3], finish=False)
        elif len(progress) == 2:
            # ...and finishes the job once that one is recorded.
            assert bulk.finish_if_done(job.pk) is True

    job = bulk.run_job(job.pk, progress=meanwhile_a_worker)

    # The third batch could not be claimed and the job was finished: run_job ended there,
    # without trying the fourth.
    assert tried == ids[:3]
    assert progress == [10, 20]
    assert (job.status, job.sent) == (BulkSMSJob.Status.FINISHED, 40)
    assert reached(textflow_live) == Counter(numbers(40))
    assert finished_signals == [job.pk]  # announced once, by the sender that finished it


def test_enqueue_finishes_a_job_with_no_pending_batch(textflow_live, finished_signals):
    job = bulk.create_job(text="Hi", numbers=numbers(10))
    textflow_live.fault("status", path="/bulk-sms", status=500)
    with pytest.raises(bulk.BulkJobStopped):
        bulk.run_job(job.pk)
    assert statuses(job) == ["uncertain"]

    queued = enqueue_bulk_job(job.pk)  # a resume without --resend-uncertain: nothing to queue

    job.refresh_from_db()
    assert queued == 0
    assert (job.status, job.sent, job.uncertain) == (BulkSMSJob.Status.FINISHED, 0, 10)
    assert finished_signals == [job.pk]
    assert len(textflow_live.calls("/bulk-sms")) == 1


# -- textflow_bulk_sms: more errors that name the problem --------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--numbers", "+12025550100", "--field", "phone"], "--field goes with --model."),
        (["--numbers", "+12025550100", "--filter", "landline="], "--filter goes with --model."),
        (["--numbers", "+12025550100", "--column", "mobile"], "--column goes with --file."),
    ],
)
def test_an_option_without_the_source_it_belongs_to_is_refused(args, message, textflow_live):
    with pytest.raises(CommandError) as info:
        run("textflow_bulk_sms", *args, "--text", "Hi")
    assert str(info.value) == message
    assert_nothing_kept_or_sent(textflow_live)


@pytest.mark.parametrize("size", ["lots", None], ids=["words", "none"])
def test_a_batch_size_setting_that_is_no_number_is_a_command_error(settings, textflow_live, size):
    tf(settings, BULK_BATCH_SIZE=size)
    with pytest.raises(CommandError) as info:
        run("textflow_bulk_sms", "--numbers", "+12025550100", "--text", "Hi")
    assert str(info.value).startswith("TEXTFLOW['BULK_BATCH_SIZE']: ")
    assert "int()" in str(info.value)
    assert_nothing_kept_or_sent(textflow_live)


def test_a_file_that_cannot_be_opened_is_a_command_error(tmp_path, textflow_live, monkeypatch):
    # A Unix socket's path exists and is no directory, yet open() refuses it (ENXIO), as
    # it would refuse an unreadable file (permissions would not stop root; this does).
    import socket

    monkeypatch.chdir(tmp_path)  # a relative path: a socket's path has a short length limit
    with socket.socket(socket.AF_UNIX) as listener:
        listener.bind("numbers.sock")
        with pytest.raises(CommandError) as info:
            run("textflow_bulk_sms", "--file", "numbers.sock", "--text", "Hi")
    assert str(info.value).startswith("Cannot read --file numbers.sock: ")
    assert "No such device or address" in str(info.value)
    assert_nothing_kept_or_sent(textflow_live)


def test_a_backend_that_cannot_be_loaded_is_a_command_error_and_the_job_resumable(
    settings, textflow_live
):
    tf(settings, BACKEND="nope.Backend")
    with pytest.raises(CommandError) as info:
        run("textflow_bulk_sms", "--numbers", ",".join(numbers(3)), "--text", "Hi")
    assert str(info.value).startswith("Cannot import TEXTFLOW['BACKEND'] 'nope.Backend': ")
    job = BulkSMSJob.objects.get()
    assert statuses(job) == ["pending"]
    assert textflow_live.calls("/bulk-sms") == []

    tf(settings, BACKEND="textflow_django.backends.textflow.TextFlowBackend")
    out, _ = run("textflow_bulk_sms", "--resume", str(job.pk))
    assert "3 recipients sent" in out
    assert reached(textflow_live) == Counter(numbers(3))


def test_resume_refuses_a_dry_run(textflow_live):
    job = bulk.create_job(text="Hi", numbers=numbers(2))
    with pytest.raises(CommandError) as info:
        run("textflow_bulk_sms", "--resume", str(job.pk), "--dry-run")
    assert str(info.value) == "--dry-run does not go with --resume."
    assert textflow_live.calls("/bulk-sms") == []


def test_resume_refuses_a_finished_job_unless_resending_the_uncertain(textflow_live):
    job = bulk.create_job(text="Hi", numbers=numbers(10), batch_size=5)
    textflow_live.fault("status", path="/bulk-sms", status=500)
    with pytest.raises(CommandError):
        run("textflow_bulk_sms", "--resume", str(job.pk))
    run("textflow_bulk_sms", "--resume", str(job.pk))  # the second batch: finished
    assert statuses(job) == ["uncertain", "accepted"]

    with pytest.raises(CommandError) as info:
        run("textflow_bulk_sms", "--resume", str(job.pk))
    assert str(info.value) == f"Job {job.pk} is already finished."
    assert len(textflow_live.calls("/bulk-sms")) == 2

    out, _ = run("textflow_bulk_sms", "--resume", str(job.pk), "--resend-uncertain")
    assert "10 recipients sent" in out
    assert reached(textflow_live) == Counter(numbers(10))


def test_resume_refuses_a_job_whose_import_was_interrupted(textflow_live):
    job = bulk.create_job(text="Hi", numbers=numbers(2))
    BulkSMSJob.objects.filter(pk=job.pk).update(status=BulkSMSJob.Status.PREPARING)
    with pytest.raises(CommandError) as info:
        run("textflow_bulk_sms", "--resume", str(job.pk))
    assert str(info.value) == (
        f"Job {job.pk} was never fully prepared (its import was interrupted); start a new job."
    )
    assert textflow_live.calls("/bulk-sms") == []


def test_enqueue_without_a_tasks_framework_is_a_command_error(textflow_live, monkeypatch):
    # Neither django.tasks nor the backport importable, and the tasks module not loaded yet.
    monkeypatch.setitem(sys.modules, "django.tasks", None)
    monkeypatch.setitem(sys.modules, "django_tasks", None)
    monkeypatch.delitem(sys.modules, "textflow_django.tasks")
    with pytest.raises(CommandError) as info:
        run("textflow_bulk_sms", "--numbers", ",".join(numbers(2)), "--text", "Hi", "--enqueue")
    assert str(info.value).startswith(
        "--enqueue needs Django's tasks framework (Django 6) or the django-tasks backport: "
    )
    job = BulkSMSJob.objects.get()
    assert job.status == BulkSMSJob.Status.READY  # nothing queued: --resume can send it
    assert textflow_live.calls("/bulk-sms") == []


def test_a_stop_that_left_nothing_uncertain_says_only_how_to_resume(textflow_live):
    textflow_live.credits = 0  # TextFlow refuses the batch: nothing was sent
    with pytest.raises(CommandError) as info:
        run("textflow_bulk_sms", "--numbers", ",".join(numbers(2)), "--text", "Hi")
    job = BulkSMSJob.objects.get()
    assert str(info.value) == (
        f"Job {job.pk} stopped: TextFlow /bulk-sms: Insufficient balance (HTTP 400). "
        f"0/2 recipients sent; nothing is lost. Resume with: manage.py textflow_bulk_sms "
        f"--resume {job.pk}"
    )
    assert statuses(job) == ["pending"]

    textflow_live.credits = 100
    out, _ = run("textflow_bulk_sms", "--resume", str(job.pk))
    assert "2 recipients sent" in out
    assert reached(textflow_live) == Counter(numbers(2))


# -- textflow_bulk_count: the waiting loop on a fake clock --------------------------------------


def test_bulk_count_refuses_an_interval_that_is_not_positive(textflow_live):
    with pytest.raises(CommandError) as info:
        run("textflow_bulk_count", "--wait", "--interval", "0")
    assert str(info.value) == "--interval must be a positive number of seconds, not 0."
    assert textflow_live.calls("/bulk-count") == []


def test_bulk_count_wait_measures_against_a_job_started_meanwhile(textflow_live, monkeypatch):
    from textflow_django.management.commands import textflow_bulk_count

    bulk.run_job(bulk.create_job(text="Hi", numbers=numbers(2)).pk)
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        # What happens while the command waits between two polls; no real waiting.
        slept.append(seconds)
        if len(slept) == 1:  # a second job of three starts: five pending now
            bulk.run_job(bulk.create_job(text="Hi", numbers=numbers(3, start=10)).pk)
        else:  # TextFlow delivers everything
            textflow_live.deliver_bulk()

    monkeypatch.setattr(
        textflow_bulk_count, "time", types.SimpleNamespace(monotonic=time.monotonic, sleep=sleep)
    )
    out, err = run("textflow_bulk_count", "--wait", "--interval", "7")

    assert slept == [7.0, 7.0]
    assert out.strip() == "All 5 recipients delivered: nothing is pending."  # the new peak
    assert err.splitlines()[-1].startswith("100.0% 5/5 recipients delivered")
    assert len(textflow_live.calls("/bulk-count")) == 3


def test_a_configuration_error_mid_run_gives_the_claimed_batch_back(settings, textflow_live):
    tf(settings, API_KEY="")  # the client refuses to be built: no request can leave
    with pytest.raises(CommandError, match="TextFlow API key is missing"):
        run("textflow_bulk_sms", "--numbers", ",".join(numbers(3)), "--text", "Hi")
    job = BulkSMSJob.objects.get()
    assert textflow_live.requests == []
    assert statuses(job) == ["pending"]
    assert job.status == BulkSMSJob.Status.STOPPED
    assert "API key is missing" in job.last_error
    # Fixed settings, then --resume: every recipient is sent, none counted uncertain.
    tf(settings, API_KEY=EMULATOR_API_KEY)
    run("textflow_bulk_sms", "--resume", str(job.pk))
    job.refresh_from_db()
    assert (job.status, job.sent, job.uncertain) == (BulkSMSJob.Status.FINISHED, 3, 0)
    assert len(textflow_live.calls("/bulk-sms")) == 1


# -- the text: segments, length, control characters (issue 11, finding 9) ----------------------

from textflow_django._sms import find_control, segments  # noqa: E402


@pytest.mark.parametrize(
    ("text", "count", "encoding", "units"),
    [
        ("", 0, "GSM-7", 0),
        ("a" * 160, 1, "GSM-7", 160),
        ("a" * 161, 2, "GSM-7", 161),
        ("a" * 306, 2, "GSM-7", 306),
        ("a" * 307, 3, "GSM-7", 307),
        ("Hi\n" + "é@£$¥ÄÖÑÜ§¿àΔ" * 10, 1, "GSM-7", 133),
        ("€" * 80, 1, "GSM-7", 160),  # extension table: 2 septets each
        ("€" * 81, 2, "GSM-7", 162),
        ("{}[]~^|\\\f€", 1, "GSM-7", 20),
        # 306 septets is two parts of 153, but an escape never straddles two parts.
        ("a" * 152 + "€" + "a" * 152, 3, "GSM-7", 306),
        ("a" * 1530, 10, "GSM-7", 1530),
        ("€" * 760, 10, "GSM-7", 1520),  # 76 a part: 153 septets hold 76 escapes, not 76.5
        ("€" * 761, 11, "GSM-7", 1522),
        ("ж" * 70, 1, "UCS-2", 70),
        ("ж" * 71, 2, "UCS-2", 71),
        ("a" * 159 + "ж", 3, "UCS-2", 160),  # one character outside GSM-7: all UCS-2
        ("😀" * 35, 1, "UCS-2", 70),  # outside the BMP: 2 code units each
        ("😀" * 36, 2, "UCS-2", 72),
        # 134 units is two parts of 67, but a surrogate pair never straddles two parts.
        ("ж" * 66 + "😀" + "ж" * 66, 3, "UCS-2", 134),
        ("ж" * 670, 10, "UCS-2", 670),
    ],
)
def test_segments_are_counted_as_carriers_fill_them(text, count, encoding, units):
    found = segments(text)
    assert (found.count, found.encoding, found.units) == (count, encoding, units)


def test_the_text_is_refused_past_max_text_length_segments(settings, textflow_live):
    """The issue's finding: a 120,000-character text went out with no limit."""
    # The default is 10 segments: 1,530 GSM-7 characters, 670 UCS-2 ones.
    for fits in ("a" * 1530, "€" * 760, "ж" * 670):
        out, _ = run("textflow_bulk_sms", "--numbers", "+12025550100", "--text", fits, "--dry-run")
        assert "10 SMS segments" in out
    for too_long, says in (
        ("a" * 1531, "11 SMS segments long (1,531 characters, GSM-7)"),
        ("€" * 761, "11 SMS segments long (761 characters, GSM-7)"),
        ("ж" * 671, "11 SMS segments long (671 characters, UCS-2)"),
        ("a" * 120_000, "785 SMS segments long (120,000 characters, GSM-7)"),
    ):
        with pytest.raises(CommandError) as info:
            run("textflow_bulk_sms", "--numbers", "+12025550100", "--text", too_long)
        assert says in str(info.value)
        assert "TEXTFLOW['MAX_TEXT_LENGTH'] allows 10" in str(info.value)
        with pytest.raises(ValueError, match="TEXTFLOW\\['MAX_TEXT_LENGTH'\\] allows 10"):
            bulk.create_job(text=too_long, numbers=numbers(1))
    tf(settings, MAX_TEXT_LENGTH=1)
    assert bulk.create_job(text="a" * 160, numbers=numbers(1)).total == 1
    with pytest.raises(CommandError, match="2 SMS segments long .* allows 1"):
        run("textflow_bulk_sms", "--numbers", "+12025550100", "--text", "a" * 161)
    assert textflow_live.calls("/bulk-sms") == []


def test_a_max_text_length_that_is_no_number_is_a_command_error(settings, textflow_live):
    tf(settings, MAX_TEXT_LENGTH="ten")
    with pytest.raises(CommandError, match=r"TEXTFLOW\['MAX_TEXT_LENGTH'\] is not a whole number"):
        run("textflow_bulk_sms", "--numbers", "+12025550100", "--text", "Hi")


def test_the_summary_says_the_segments_each_recipient_got(textflow_live):
    out, _ = run("textflow_bulk_sms", "--numbers", ",".join(numbers(3)), "--text", "ж" * 71)
    assert "Text: 71 characters, 2 SMS segments (UCS-2) a recipient; 6 SMS segments in all." in out
    assert "3 recipients sent (2 SMS segments each)" in out


@pytest.mark.parametrize(
    ("text", "position", "named"),
    [
        ("Hi\x1b[31m", 3, "U+001B ESC"),
        ("Ding\x07", 5, "U+0007 BEL"),
        ("Hi\x00there", 3, "U+0000 NUL"),
        ("Pay \u202egnp.exe", 5, "U+202E RIGHT-TO-LEFT OVERRIDE"),
        ("a\u2066b", 2, "U+2066 LEFT-TO-RIGHT ISOLATE"),
        ("a\u200bb", 2, "U+200B ZERO WIDTH SPACE"),
        ("a\tb", 2, "U+0009 TAB"),
        ("a\rb", 2, "U+000D CARRIAGE RETURN"),
        ("a\u2028b", 2, "U+2028 LINE SEPARATOR"),
        ("a\x85b", 2, "U+0085"),  # a C1 control (NEXT LINE), unnamed in Unicode's data
        ("a\ufeffb", 2, "U+FEFF ZERO WIDTH NO-BREAK SPACE"),
        ("a\udcffb", 2, "U+DCFF"),  # a byte that was not UTF-8 on the command line
    ],
)
def test_control_characters_in_the_text_are_refused(text, position, named, textflow_live):
    """The issue's finding: ESC, BEL, NUL and right-to-left override went out unchanged."""
    assert find_control(text) is not None
    with pytest.raises(CommandError) as info:
        run("textflow_bulk_sms", "--numbers", "+12025550100", "--text", text)
    assert f"holds {named} at position {position}" in str(info.value)
    assert "Nothing was sent" in str(info.value)
    with pytest.raises(ValueError, match=f"at position {position}"):
        bulk.create_job(text=text, numbers=numbers(1))
    assert_nothing_kept_or_sent(textflow_live)


@pytest.mark.parametrize(
    "text",
    [
        "Line one\nLine two",
        "Family: 👨\u200d👩\u200d👧",  # zero-width joiners
        "می\u200cخواهم",  # zero-width non-joiner (Persian)
        "Prix : 10 € — ça part !",
        "שלום עולם",  # right-to-left script, no override needed
    ],
)
def test_newlines_joiners_and_any_script_are_fine(text, textflow_live):
    assert find_control(text) is None
    run("textflow_bulk_sms", "--numbers", "+12025550100", "--text", text)
    assert textflow_live.calls("/bulk-sms")[0].json["text"] == text


# -- values the database refuses (issue 11, finding 9) -----------------------------------------


def test_a_text_the_database_refuses_is_a_command_error(textflow_live, monkeypatch):
    """With the text checks out of the way, the database (or its driver) itself refuses
    the text: a NUL on PostgreSQL, a lone surrogate everywhere. A CommandError, not a
    traceback, and no job left behind."""
    from textflow_django.bulk import _text

    monkeypatch.setattr(_text, "find_control", lambda text: None)
    bad = "Hi\x00" if connection.vendor == "postgresql" else "Hi\udcff"
    with pytest.raises(CommandError, match="The database refused the job"):
        run("textflow_bulk_sms", "--numbers", "+12025550100", "--text", bad)
    assert_nothing_kept_or_sent(textflow_live)


def test_a_file_name_that_is_not_utf8_is_kept_escaped(tmp_path, textflow_live):
    """A file name with a byte that is not UTF-8 (a lone surrogate once decoded) ends up in
    the job's description, which no database stores as it is: it is kept escaped."""
    name = os.fsdecode(os.fsencode(str(tmp_path)) + b"/caf\xe9.txt")
    with open(os.fsencode(name), "w") as handle:  # noqa: PTH123 - a bytes path
        handle.write("+12025550100\n")
    out, _ = run("textflow_bulk_sms", "--file", name, "--text", "Hi")
    assert "1 recipient sent" in out
    assert BulkSMSJob.objects.get().source.endswith("caf\\udce9.txt")


@pytest.mark.parametrize("value", ["\x00", "\udcff"])
def test_a_filter_value_no_database_stores_is_a_command_error(value, textflow_live):
    with pytest.raises(CommandError, match="holds a character no database stores"):
        run(
            "textflow_bulk_sms",
            "--model",
            "testapp.Contact",
            "--field",
            "phone",
            "--filter",
            f"landline={value}",
            "--text",
            "Hi",
        )
    assert_nothing_kept_or_sent(textflow_live)


# -- masks (issue 11, finding 10) ----------------------------------------------------------------


def test_a_textflow_failure_is_logged_and_kept_with_its_numbers_masked(textflow_live, caplog):
    job = bulk.create_job(text="Hi", numbers=["+12025550143"])
    textflow_live.fault(
        "respond",
        path="/bulk-sms",
        status=500,
        body='{"ok": false, "status": 500, "message": "Could not reach +12025550143"}',
    )
    with pytest.raises(bulk.BulkJobStopped) as info:
        bulk.run_job(job.pk)
    stopped = info.value.job
    assert "+1********43" in caplog.text and "+12025550143" not in caplog.text
    assert "+1********43" in stopped.last_error and "+12025550143" not in stopped.last_error
    assert "+12025550143" not in str(info.value)
    assert "+12025550143" not in BulkBatch.objects.get(job=job).error
