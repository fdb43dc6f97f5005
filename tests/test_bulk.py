"""Bulk SMS: jobs, batches, resume, and the two commands, against the emulator."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from tests.testapp.models import Contact
from textflow_django import bulk, signals
from textflow_django.models import BulkBatch, BulkRecipient, BulkSMSJob
from textflow_django.testing import TextFlowEmulator

pytestmark = pytest.mark.django_db

ROOT = Path(__file__).parent.parent


def numbers(n: int, start: int = 0) -> list[str]:
    return [f"+1202555{i:04d}" for i in range(start, start + n)]


def reached(emulator: TextFlowEmulator) -> Counter[str]:
    return Counter(m.phone_number for m in emulator.messages if m.kind == "bulk")


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
    settings.TEXTFLOW = {**settings.TEXTFLOW, "ALLOWED_COUNTRIES": ["GB"]}
    job = bulk.create_job(text="Hi", numbers=["+447400123456", "+12025550100", "+33612345678"])
    assert (job.total, job.invalid) == (1, 2)
    assert "country_not_allowed" in job.invalid_samples[0]


def test_strict_mode_refuses_premium_numbers_in_e164():
    premium = "+19005550199"
    assert bulk.create_job(text="Hi", numbers=[premium]).total == 1  # fast path trusts E.164
    assert bulk.create_job(text="Hi", numbers=[premium], strict=True).invalid == 1


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
    # Two batches go through, then the third call fails with a 500: it may have been sent.
    first_two = BulkBatch.objects.filter(job=job).order_by("index").values_list("id", flat=True)
    for batch_id in list(first_two[:2]):
        assert bulk.send_batch(batch_id) == 10
    textflow_live.fault("status", path="/bulk-sms", status=500)
    with pytest.raises(bulk.BulkJobStopped) as info:
        bulk.run_job(job.pk)
    stopped = info.value.job
    assert stopped.status == BulkSMSJob.Status.STOPPED
    assert (stopped.sent, stopped.uncertain) == (20, 10)
    assert "500" in stopped.last_error
    assert BulkBatch.objects.get(job=job, index=2).status == BulkBatch.Status.UNCERTAIN

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
    settings.TEXTFLOW = {**settings.TEXTFLOW, "BASE_URL": "http://127.0.0.1:9/api"}
    with pytest.raises(bulk.BulkJobStopped) as info:
        bulk.run_job(job.pk)
    assert info.value.error.maybe_sent is False
    assert BulkBatch.objects.get(job=job, index=0).status == BulkBatch.Status.PENDING
    assert info.value.job.uncertain == 0
    settings.TEXTFLOW = {**settings.TEXTFLOW, "BASE_URL": textflow_live.url}
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


def test_textflow_refusing_a_number_drops_it_and_sends_the_rest(textflow_live):
    bad = "+10000000000"  # E.164-shaped, so the fast path lets it in; not a real number
    job = bulk.create_job(text="Hi", numbers=[*numbers(3), bad])
    textflow_live.fault(
        "respond",
        path="/bulk-sms",
        status=400,
        body='{"ok": false, "status": 400, "message": "Phone number is invalid"}',
    )
    job = bulk.run_job(job.pk)
    assert (job.sent, job.invalid, job.total) == (3, 1, 3)
    assert reached(textflow_live) == Counter(numbers(3))


def test_a_batch_is_claimed_once(textflow_live):
    job = bulk.create_job(text="Hi", numbers=numbers(3))
    batch_id = BulkBatch.objects.get(job=job).pk
    assert bulk.send_batch(batch_id) == 3
    assert bulk.send_batch(batch_id) is None  # a second delivery of the same task
    assert len(textflow_live.calls("/bulk-sms")) == 1


def test_enqueue_runs_batches_as_tasks(settings, textflow_live):
    job = bulk.create_job(text="Hi", numbers=numbers(30), batch_size=10)
    # The immediate backend runs each task as it is queued: the same code path as a worker.
    queued = bulk.enqueue_job(job.pk)
    job.refresh_from_db()
    assert queued == 3
    assert job.status == BulkSMSJob.Status.FINISHED
    assert reached(textflow_live) == Counter(numbers(30))


# -- textflow_bulk_sms ---------------------------------------------------------------------


def test_command_with_numbers(textflow_live):
    out, err = run(
        "textflow_bulk_sms",
        "--numbers",
        "+12025550100, +1 202 555 0101,bad,+12025550100",
        "--text",
        "Hello",
    )
    assert "2 recipients" in out and "1 invalid" in out and "1 duplicates" in out
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
        (["--numbers", "+12025550100", "--text", "Hi", "--batch-size", "0"], "--batch-size"),
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


def test_command_failure_says_how_to_resume(textflow_live):
    textflow_live.fault("status", path="/bulk-sms", status=503)
    with pytest.raises(CommandError) as info:
        run("textflow_bulk_sms", "--numbers", "+12025550100", "--text", "Hi")
    job = BulkSMSJob.objects.get()
    assert f"--resume {job.pk}" in str(info.value)
    assert "--resend-uncertain" in str(info.value)
    assert "nothing is lost" in str(info.value)
    out, _ = run("textflow_bulk_sms", "--resume", str(job.pk), "--resend-uncertain")
    assert "1 recipients sent" in out
    assert reached(textflow_live) == Counter(["+12025550100"])


def test_command_never_prompts_without_a_terminal(textflow_live, monkeypatch):
    monkeypatch.setattr("builtins.input", lambda *a: pytest.fail("prompted"))
    run("textflow_bulk_sms", "--numbers", "+12025550100", "--text", "Hi")
    assert len(textflow_live.calls("/bulk-sms")) == 1


def test_command_asks_on_a_terminal_unless_no_input(textflow_live, monkeypatch):
    monkeypatch.setattr("sys.stdin.isatty", lambda: True, raising=False)

    class TTY(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setattr("sys.stdin", TTY(""))
    answers = iter(["n"])
    monkeypatch.setattr("builtins.input", lambda *a: next(answers))
    out, _ = run("textflow_bulk_sms", "--numbers", "+12025550100", "--text", "Hi")
    assert "Cancelled" in out and textflow_live.calls("/bulk-sms") == []
    run("textflow_bulk_sms", "--numbers", "+12025550100", "--text", "Hi", "--no-input")
    assert len(textflow_live.calls("/bulk-sms")) == 1


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
    assert "0 pending" in out
    assert "delivered" in err
    assert len(textflow_live.calls("/bulk-count")) >= 2


def test_bulk_count_wait_timeout(textflow_live):
    bulk.run_job(bulk.create_job(text="Hi", numbers=numbers(2)).pk)
    with pytest.raises(CommandError, match="Still 2 pending"):
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
