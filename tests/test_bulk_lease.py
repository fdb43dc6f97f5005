"""The bulk resume lease (issue 16, "A resume that cannot collide").

A batch claimed for sending carries its claim time and claimer; a resume leaves a claim
younger than ``BULK_LEASE`` to its live sender and judges an older one its dead sender's
(``uncertain``). Claims are stamped and judged by the database's clock: the tests move it
by making the claims it stamped older (``Clock.advance``), and keep the hosts' clock
(``django.utils.timezone.now``) years off it, patched here and frozen (hours apart) in the
subprocesses, to show it plays no part. Nothing depends on where the wall clock falls; the
database's clock moves on while a test runs, by milliseconds, where the tests' margins
are seconds. The two-worker scenario runs real processes (one killed with SIGKILL
mid-batch) against the emulator over real HTTP, on a shared SQLite file and, with
``TEST_DATABASE=postgres``, on PostgreSQL.
"""

from __future__ import annotations

import functools
import io
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import types
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.db import connection
from django.test import override_settings
from django.utils import timezone

from textflow_django import bulk
from textflow_django.backends import get_backend
from textflow_django.models import BulkBatch, BulkRecipient, BulkSMSJob
from textflow_django.testing import SentSMS, TextFlowEmulator

from .conftest import requires_postgres, tf
from .test_bulk import (  # the bulk tests' own helpers and fixture
    batch_ids,
    numbers,
    reached,
    start,
    statuses,
)

ROOT = Path(__file__).parent.parent
LEASE = 300  # the default
T0 = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
ELSEWHERE = "worker-7.example:4242:9f3c2a1b"  # another worker's claimer id


def db_now() -> datetime:
    """The database's clock now: the one that stamps claims and judges their age."""
    from django.db.models.functions import Now
    from django.db.models.sql import Query
    from django.utils.dateparse import parse_datetime

    now_sql = Query(BulkBatch).get_compiler(connection.alias).compile(Now())[0]
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {now_sql}", [])
        value = cursor.fetchone()[0]
    if isinstance(value, str):  # SQLite: UTC, as text
        value = parse_datetime(value)
        assert value is not None
        value = value.replace(tzinfo=UTC)
    assert isinstance(value, datetime)
    return value


def age_claims(job: BulkSMSJob | None, seconds: float) -> None:
    """Every claim (of ``job``, or of any job) ``seconds`` older: the database's clock
    moved on by that much, as far as the claims can tell."""
    from django.db.models import F

    claims = BulkBatch.objects.filter(claimed_at__isnull=False)
    if job is not None:
        claims = claims.filter(job=job)
    claims.update(claimed_at=F("claimed_at") - timedelta(seconds=seconds))


class Clock:
    """The clocks the code under test reads, moved only when told: the host's
    (``timezone.now``, from T0, years away from the database's) and the database's (which
    stamps and judges claims: moved by making the claims older)."""

    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)
        age_claims(None, seconds)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    made = Clock()
    monkeypatch.setattr(timezone, "now", made)
    return made


def claimed_elsewhere(job: BulkSMSJob, index: int, age: timedelta | None) -> None:
    """Leave batch ``index`` as another worker's claim made ``age`` ago (by the database's
    clock) leaves it (None: a claim made before claims had a time)."""
    at = None if age is None else db_now() - age
    BulkBatch.objects.filter(job=job, index=index).update(
        status=BulkBatch.Status.SENDING, claimed_at=at, claimed_by=ELSEWHERE if at else ""
    )


def run(*args: str) -> str:
    out = io.StringIO()
    call_command(*args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


# -- the claim: its time and its claimer, in the claiming statement ----------------------------


@pytest.mark.django_db
def test_a_claim_is_stamped_with_the_databases_time_and_its_claimer(textflow_live, clock):
    """By the database's clock: not the host's, here years ahead (T0)."""
    job = bulk.create_job(text="Hi", numbers=numbers(20), batch_size=10)
    seen: list[tuple[str, datetime | None, str]] = []

    class Watching:
        """The real backend; before each call, what the database says of the batch."""

        def __init__(self) -> None:
            self.real = get_backend()

        def bulk_sms(self, phone_numbers: list[str], text: str) -> Any:
            batch = BulkBatch.objects.get(job=job, status=BulkBatch.Status.SENDING)
            seen.append((batch.status, batch.claimed_at, batch.claimed_by))
            return self.real.bulk_sms(phone_numbers, text)

    start(job)
    before = db_now()
    for batch_id in batch_ids(job):
        assert bulk.send_batch(batch_id, backend=Watching()) is not None  # type: ignore[arg-type]
    after = db_now()
    me = bulk.sending.claimer()
    assert [(status, by) for status, _, by in seen] == [("sending", me), ("sending", me)]
    first, second = (at for _, at, _ in seen)
    assert first is not None and second is not None
    assert before <= first <= second <= after < T0
    claims = BulkBatch.objects.filter(job=job).order_by("index")
    assert [(b.status, b.claimed_at, b.claimed_by) for b in claims] == [
        ("accepted", first, me),
        ("accepted", second, me),
    ]


def test_the_claimer_is_host_pid_and_a_random_part_drawn_once_per_process(monkeypatch):
    from textflow_django.bulk import sending

    me = sending.claimer()
    host, pid, random = me.rsplit(":", 2)
    assert (host, pid) == (socket.gethostname(), str(os.getpid()))
    assert len(random) == 8 and int(random, 16) >= 0
    assert sending.claimer() == me  # stable for the process's life
    # Another process (a forked worker has another pid) draws its own random part.
    assert sending._claimer(os.getpid() + 1).rsplit(":", 2)[1] == str(os.getpid() + 1)
    # A long host name is cut so the id fits the column, keeping pid and random part.
    sending._claimer.cache_clear()
    monkeypatch.setattr(socket, "gethostname", lambda: "h" * 300)
    try:
        long = sending.claimer()
        assert len(long) == BulkBatch._meta.get_field("claimed_by").max_length
        assert long.split(":")[1] == str(os.getpid())
    finally:
        sending._claimer.cache_clear()


# -- a resume: live claims are left to their senders, dead ones are uncertain ------------------


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("age", "left_in_flight"),
    [
        (timedelta(0), True),
        # Inside the lease by 10 s: the database's clock moves on by far less before the
        # resume reads it.
        (timedelta(seconds=LEASE - 10), True),
        (timedelta(seconds=LEASE), False),  # a lease old (and older when judged): dead
        (timedelta(hours=5), False),
    ],
)
def test_a_resume_judges_a_claim_by_its_age_exactly_at_the_lease(
    textflow_live, clock, finished_signals, age, left_in_flight
):
    job = bulk.create_job(text="Hi", numbers=numbers(30), batch_size=10)
    start(job)
    claimed_elsewhere(job, 1, age)

    job = bulk.run_job(job.pk)

    # The other batches are sent; the claimed one never by this resume.
    assert len(textflow_live.calls("/bulk-sms")) == 2
    assert set(reached(textflow_live)) == set(numbers(10) + numbers(10, start=20))
    if left_in_flight:
        assert statuses(job) == ["accepted", "sending", "accepted"]
        assert (job.status, job.uncertain, job.finished_at) == ("running", 0, None)
        assert bulk.batches_in_flight(job.pk) == 1
        assert finished_signals == []
    else:
        assert statuses(job) == ["accepted", "uncertain", "accepted"]
        assert (job.status, job.uncertain) == ("finished", 10)
        assert bulk.batches_in_flight(job.pk) == 0
        assert finished_signals == [job.pk]
    assert job.sent == 20


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("claimer_clock", "resumer_clock", "age", "dead"),
    [
        (timedelta(hours=-1), timedelta(0), timedelta(0), False),  # the claimer's behind
        (timedelta(0), timedelta(hours=1), timedelta(0), False),  # the resumer's ahead
        (timedelta(0), timedelta(hours=-1), timedelta(seconds=LEASE), True),  # behind
    ],
)
def test_the_hosts_clocks_play_no_part_in_judging_a_claim(
    textflow_live, monkeypatch, claimer_clock, resumer_clock, age, dead
):
    """Hosts' clocks an hour off (no NTP): a live worker's fresh claim is still left to it,
    a claim a lease old by the database's clock still judged dead. (Stamped by the
    claimer's clock and judged by the resumer's, the first two were judged dead, the third
    left in flight.)"""
    from textflow_django.bulk import sending

    wall = timezone.now
    job = bulk.create_job(text="Hi", numbers=numbers(20), batch_size=10)
    start(job)
    monkeypatch.setattr(timezone, "now", lambda: wall() + claimer_clock)
    with connection.cursor() as cursor:  # the worker's claim, on its host
        assert sending._claim(cursor, sending._hot_sql(connection.alias), batch_ids(job)[0])
    age_claims(job, age.total_seconds())
    monkeypatch.setattr(timezone, "now", lambda: wall() + resumer_clock)

    job = bulk.run_job(job.pk)  # the resume, on another host

    assert statuses(job) == ["uncertain" if dead else "sending", "accepted"]
    assert bulk.batches_in_flight(job.pk) == (0 if dead else 1)


@pytest.mark.django_db
def test_a_sending_batch_without_a_claim_time_is_judged_dead(textflow_live, clock):
    # Claimed before claims had a time (before the migration): as a resume judged it then.
    job = bulk.create_job(text="Hi", numbers=numbers(20), batch_size=10)
    start(job)
    claimed_elsewhere(job, 0, None)
    job = bulk.run_job(job.pk)
    assert statuses(job) == ["uncertain", "accepted"]
    assert (job.status, job.sent, job.uncertain) == ("finished", 10, 10)


@pytest.mark.django_db
def test_the_lease_is_the_setting(settings, textflow_live, clock):
    tf(settings, BULK_LEASE=600)
    job = bulk.create_job(text="Hi", numbers=numbers(20), batch_size=10)
    start(job)
    claimed_elsewhere(job, 0, timedelta(0))
    clock.advance(590)
    assert statuses(bulk.run_job(job.pk)) == ["sending", "accepted"]
    clock.advance(10)
    assert statuses(bulk.run_job(job.pk)) == ["uncertain", "accepted"]


@pytest.mark.django_db
def test_enqueue_leaves_a_live_claim_to_its_sender_too(textflow_live, clock):
    job = bulk.create_job(text="Hi", numbers=numbers(30), batch_size=10)
    start(job)
    claimed_elsewhere(job, 0, timedelta(0))
    claimed_elsewhere(job, 1, timedelta(seconds=LEASE))
    queued: list[int] = []
    assert bulk.enqueue_job(job.pk, enqueue=queued.append) == 1
    assert queued == batch_ids(job)[2:]
    assert statuses(job) == ["sending", "uncertain", "pending"]


@pytest.mark.django_db
def test_the_live_sender_finishes_the_job_and_it_is_announced_once(
    textflow_live, clock, finished_signals
):
    """A worker is sending a batch while a resume sends the rest: the resume cannot finish
    the job; the worker, recording the last batch, does, and once."""
    job = bulk.create_job(text="Hi", numbers=numbers(30), batch_size=10)
    start(job)
    ids = batch_ids(job)
    from textflow_django.bulk import sending

    sql = sending._hot_sql(connection.alias)
    with connection.cursor() as cursor:  # the worker's claim, as send_batch makes it
        assert sending._claim(cursor, sql, ids[1])
    clock.advance(LEASE - 10)

    out = run("textflow_bulk_sms", "--resume", str(job.pk))

    job.refresh_from_db()
    assert statuses(job) == ["accepted", "sending", "accepted"]
    assert (job.status, job.finished_at) == ("running", None)
    assert "1 batch is still being sent by another worker" in out
    assert finished_signals == []
    # The worker's call returns: it records its batch, the last, and finishes the job.
    assert bulk.send_batch(ids[1], claimed=True) == (10, False)
    job.refresh_from_db()
    assert (job.status, job.sent, job.uncertain, job.finished_at) == ("finished", 30, 0, clock.now)
    assert finished_signals == [job.pk]
    assert len(textflow_live.calls("/bulk-sms")) == 3
    assert reached(textflow_live) == Counter(numbers(30))


# -- the command's report ----------------------------------------------------------------------


@pytest.mark.django_db
def test_resume_says_how_many_batches_other_workers_are_still_sending(textflow_live, clock):
    job = bulk.create_job(text="Hi", numbers=numbers(40), batch_size=10)
    start(job)
    for index in (1, 2):
        claimed_elsewhere(job, index, timedelta(0))
    claimed_elsewhere(job, 3, timedelta(seconds=LEASE))  # a dead worker's

    out = run("textflow_bulk_sms", "--resume", str(job.pk))

    assert (
        "2 batches are still being sent by other workers: the job finishes when they are "
        "recorded. If a worker died, resume again once its claim is older than BULK_LEASE "
        "(300 s): its batch then counts as uncertain."
    ) in out
    assert statuses(job) == ["accepted", "sending", "sending", "uncertain"]

    # Once one of them is recorded, the next resume counts one.
    BulkBatch.objects.filter(job=job, index=1).update(status=BulkBatch.Status.ACCEPTED)
    out = run("textflow_bulk_sms", "--resume", str(job.pk))
    assert "1 batch is still being sent by another worker: the job finishes once that" in out
    # ...and none once every claim is recorded or judged: the job finishes, no such line.
    clock.advance(LEASE)
    out = run("textflow_bulk_sms", "--resume", str(job.pk))
    assert "still being sent" not in out
    job.refresh_from_db()
    assert (job.status, job.uncertain) == ("finished", 20)
    assert len(textflow_live.calls("/bulk-sms")) == 1


# -- a live sender keeps its claim; a frozen one loses it ---------------------------------------


class Waits:
    """The sender's Retry-After waits, taken on the clock instead of the wall: each moves
    it, then calls the hooks with how many waits there were so far."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.slept: list[float] = []
        self.hooks: list[Callable[[int], None]] = []

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.clock.advance(seconds)
        for hook in self.hooks:
            hook(len(self.slept))


@pytest.fixture
def waits(monkeypatch: pytest.MonkeyPatch, clock: Clock) -> Waits:
    made = Waits(clock)
    monkeypatch.setattr(bulk.sending, "time", types.SimpleNamespace(sleep=made.sleep))
    return made


@pytest.mark.django_db
def test_a_sender_stamps_its_claim_again_before_each_retry(settings, textflow_live, clock, waits):
    """Three 429s, each Retry-After 50 s: the batch is held for 150 s, the claim never goes
    a lease without a stamp, and a resume during the last wait leaves it to its sender."""
    # Shorter than the batch's whole hold (150 s), longer than any gap between stamps (50 s)
    # and than lease_floor(TIMEOUT) (100 s, check E020).
    tf(settings, BULK_LEASE=140)
    textflow_live.fault("rate_limit", path="/bulk-sms", retry_after=50, times=3)
    job = bulk.create_job(text="Hi", numbers=numbers(10))
    start(job)
    [batch_id] = batch_ids(job)

    def resume_during_the_last_wait(count: int) -> None:
        if count == 3:  # 150 s after the claim, 50 s after the last stamp
            bulk.running._prepare(job.pk, resend_uncertain=False)
            assert statuses(job) == ["sending"]

    waits.hooks.append(resume_during_the_last_wait)
    assert bulk.send_batch(batch_id) == (10, False)
    assert waits.slept == [50, 50, 50]
    batch = BulkBatch.objects.get(pk=batch_id)
    assert batch.status == "accepted" and batch.claimed_at is not None
    # Stamped after the last wait: each wait made the claim 50 s older.
    assert db_now() - batch.claimed_at < timedelta(seconds=50)
    assert reached(textflow_live) == Counter(numbers(10))


@pytest.mark.django_db
def test_a_sender_that_lost_its_claim_sends_nothing_more(textflow_live, clock, waits, caplog):
    """A sender frozen for longer than the lease (here: in its Retry-After wait): a resume
    judged it dead and took the batch; it finds that out at its next stamp and stops."""
    textflow_live.fault("rate_limit", path="/bulk-sms", retry_after=1)
    job = bulk.create_job(text="Hi", numbers=numbers(10))
    start(job)
    [batch_id] = batch_ids(job)

    def frozen_then_judged(count: int) -> None:
        clock.advance(LEASE)
        bulk.running._prepare(job.pk, resend_uncertain=False)

    waits.hooks.append(frozen_then_judged)
    with caplog.at_level(logging.WARNING, logger="textflow_django.bulk"):
        assert bulk.send_batch(batch_id) is None
    assert [c.fault for c in textflow_live.calls("/bulk-sms")] == ["rate_limit"]  # no resend
    assert reached(textflow_live) == Counter()
    job.refresh_from_db()
    assert statuses(job) == ["uncertain"]
    assert (job.sent, job.uncertain, job.batches_sent) == (0, 10, 0)
    assert f"textflow.bulk.claim_lost batch={batch_id} sent=no" in caplog.text


class JudgedMidCall:
    """The real backend, and then, before the sender records the answer, a resume that
    judged the sender dead (it was frozen past the lease mid-call): what ``then`` does."""

    def __init__(self, clock: Clock, then: Any) -> None:
        self.real = get_backend()
        self.clock = clock
        self.then = then

    def bulk_sms(self, phone_numbers: list[str], text: str) -> Any:
        result = self.real.bulk_sms(phone_numbers, text)
        self.clock.advance(LEASE)
        self.then()
        return result


@pytest.mark.django_db
@pytest.mark.parametrize("resend_uncertain", [False, True])
def test_a_sender_frozen_past_its_lease_still_records_what_textflow_accepted(
    textflow_live, clock, caplog, resend_uncertain
):
    job = bulk.create_job(text="Hi", numbers=numbers(20), batch_size=10)
    start(job)
    ids = batch_ids(job)

    def resume() -> None:
        bulk.running._prepare(job.pk, resend_uncertain=resend_uncertain)
        assert statuses(job)[0] == ("pending" if resend_uncertain else "uncertain")

    with caplog.at_level(logging.WARNING, logger="textflow_django.bulk"):
        outcome = bulk.send_batch(ids[0], backend=JudgedMidCall(clock, resume))  # type: ignore[arg-type]
    assert outcome == (10, False)
    job.refresh_from_db()
    # Nobody claimed it since: recorded accepted, its recipients sent, not uncertain.
    assert statuses(job) == ["accepted", "pending"]
    assert (job.sent, job.uncertain, job.batches_sent) == (10, 0, 1)
    assert f"textflow.bulk.claim_lost batch={ids[0]} sent=yes recorded=yes" in caplog.text
    # The resume that follows sends the rest, and that batch not again.
    job = bulk.run_job(job.pk)
    assert (job.status, job.sent, job.uncertain) == ("finished", 20, 0)
    assert reached(textflow_live) == Counter(numbers(20))


@pytest.mark.django_db
def test_a_frozen_sender_records_nothing_of_a_batch_another_sender_took(
    textflow_live, clock, caplog
):
    job = bulk.create_job(text="Hi", numbers=numbers(10))
    start(job)
    [batch_id] = batch_ids(job)

    def reopened_and_claimed_elsewhere() -> None:
        bulk.running._prepare(job.pk, resend_uncertain=True)
        claimed_elsewhere(job, 0, timedelta(0))

    with caplog.at_level(logging.WARNING, logger="textflow_django.bulk"):
        outcome = bulk.send_batch(
            batch_id,
            backend=JudgedMidCall(clock, reopened_and_claimed_elsewhere),  # type: ignore[arg-type]
        )
    assert outcome == (0, False)
    batch = BulkBatch.objects.get(pk=batch_id)
    assert (batch.status, batch.claimed_by) == ("sending", ELSEWHERE)  # the other's, untouched
    job.refresh_from_db()
    assert (job.sent, job.uncertain, job.batches_sent) == (0, 0, 0)
    assert f"textflow.bulk.claim_lost batch={batch_id} sent=yes recorded=no" in caplog.text


@pytest.mark.django_db
def test_a_failure_after_the_claim_was_taken_leaves_the_resume_judgement(textflow_live, clock):
    """TextFlow fails (maybe sent) after a resume judged the frozen sender dead: the batch
    stays as the resume left it, counted uncertain once."""
    job = bulk.create_job(text="Hi", numbers=numbers(10))
    start(job)
    [batch_id] = batch_ids(job)
    textflow_live.fault("status", path="/bulk-sms", status=500)

    class FailsAfterTheJudgement:
        def __init__(self) -> None:
            self.real = get_backend()

        def bulk_sms(self, phone_numbers: list[str], text: str) -> Any:
            clock.advance(LEASE)
            bulk.running._prepare(job.pk, resend_uncertain=False)
            return self.real.bulk_sms(phone_numbers, text)

    with pytest.raises(bulk.BulkJobStopped):
        bulk.send_batch(batch_id, backend=FailsAfterTheJudgement())  # type: ignore[arg-type]
    job.refresh_from_db()
    assert statuses(job) == ["uncertain"]
    assert BulkBatch.objects.get(pk=batch_id).error == "the sender died mid-batch"
    assert (job.status, job.uncertain) == ("stopped", 10)


class Interrupted:
    """The real backend, then Ctrl-C (or a worker's shutdown) before the answer is read."""

    def __init__(self) -> None:
        self.real = get_backend()

    def bulk_sms(self, phone_numbers: list[str], text: str) -> Any:
        self.real.bulk_sms(phone_numbers, text)
        raise KeyboardInterrupt


@pytest.mark.django_db
def test_an_interrupted_sender_marks_its_batch_uncertain_at_once(textflow_live, clock, caplog):
    """Ctrl-C (or a worker's shutdown) mid-call: the batch may have gone. It is uncertain
    now, so a resume right away need not wait a lease for it."""
    job = bulk.create_job(text="Hi", numbers=numbers(20), batch_size=10)
    start(job)
    ids = batch_ids(job)

    with (
        caplog.at_level(logging.WARNING, logger="textflow_django.bulk"),
        pytest.raises(KeyboardInterrupt),
    ):
        bulk.send_batch(ids[0], backend=Interrupted())  # type: ignore[arg-type]
    assert f"textflow.bulk.batch_uncertain job={job.pk} batch={ids[0]} error=interrupted" in (
        caplog.text
    )
    job.refresh_from_db()
    assert statuses(job) == ["uncertain", "pending"]
    assert BulkBatch.objects.get(pk=ids[0]).error == "interrupted while sending"
    assert job.uncertain == 10
    assert bulk.batches_in_flight(job.pk) == 0
    job = bulk.run_job(job.pk)  # no lease to wait for
    assert (job.status, job.sent, job.uncertain) == ("finished", 10, 10)
    assert reached(textflow_live) == Counter(numbers(20))


# -- BULK_LEASE: the setting and its check -----------------------------------------------------


def test_bulk_lease_defaults_to_five_minutes_and_is_read_at_call_time(settings):
    from textflow_django.conf import DEFAULTS, conf

    assert DEFAULTS["BULK_LEASE"] == 300
    assert conf.BULK_LEASE == 300.0
    tf(settings, BULK_LEASE=900)
    assert conf.BULK_LEASE == 900.0


def test_lease_floor_is_one_call_with_its_connection_retries_after_one_wait():
    from textflow_django.bulk.sending import MAX_RATE_LIMIT_WAIT, lease_floor
    from textflow_django.client import CONNECT_RETRIES

    assert CONNECT_RETRIES == 2 and MAX_RATE_LIMIT_WAIT == 60  # what the figures below assume
    assert lease_floor(10) == 60 + 4 * 10  # the default TIMEOUT: 100 s, a third of the lease
    assert lease_floor(0.5) == 62


def lease_ids(**textflow: object) -> list[str]:
    from textflow_django.checks import check_settings

    good = {"API_KEY": "k" * 64, "BACKEND": "textflow_django.backends.textflow.TextFlowBackend"}
    with override_settings(TEXTFLOW={**good, **textflow}):
        return [m.id for m in check_settings() if m.id == "textflow.E020"]


@pytest.mark.parametrize(
    ("textflow", "error"),
    [
        ({}, False),  # 300 s over the default TIMEOUT's 100 s
        ({"BULK_LEASE": 101}, False),
        ({"BULK_LEASE": 100}, True),  # exactly the floor: a live claim could look dead
        ({"BULK_LEASE": 100.0001}, False),
        ({"BULK_LEASE": 10}, True),  # == TIMEOUT
        ({"BULK_LEASE": 5}, True),  # < TIMEOUT
        ({"TIMEOUT": 60}, True),  # 60 + 4 x 60 = 300: the default lease is too short
        ({"TIMEOUT": 60, "BULK_LEASE": 301}, False),
        ({"BULK_LEASE": 0}, True),
        ({"BULK_LEASE": -1}, True),
        ({"BULK_LEASE": "300"}, True),
        ({"BULK_LEASE": True}, True),
        ({"BULK_LEASE": None}, True),
        ({"TIMEOUT": 0, "BULK_LEASE": 5}, False),  # E004 says what is wrong
    ],
)
def test_e020_the_lease_must_outlast_what_a_live_sender_goes_without_a_stamp(textflow, error):
    assert lease_ids(**textflow) == (["textflow.E020"] if error else [])


def test_e020_names_the_floor_and_says_why():
    from textflow_django.checks import check_settings

    with override_settings(TEXTFLOW={"API_KEY": "k" * 64, "BULK_LEASE": 60, "TIMEOUT": 10}):
        [message] = [m for m in check_settings() if m.id == "textflow.E020"]
    assert "BULK_LEASE" in message.msg and "100 s" in message.msg and "TIMEOUT 10 s" in message.msg
    assert "uncertain" in message.msg
    assert "300" in (message.hint or "")


# -- two workers, one killed mid-batch, a resume while the other still sends --------------------

#: What each subprocess runs: Django with the test settings, its host's clock frozen at
#: LEASE_TEST_NOW, a long TIMEOUT (a held call must not time out however slow the machine) and
#: a lease to match; it prints what it did (and any bulk_job_finished it sends) on stdout.
CHILD = """
import datetime, json, os, sys
import django
django.setup()
from django.conf import settings
from django.utils import timezone
settings.TEXTFLOW = {**settings.TEXTFLOW, "TIMEOUT": 120, "BULK_LEASE": 3600}
frozen = datetime.datetime.fromisoformat(os.environ["LEASE_TEST_NOW"])
timezone.now = lambda: frozen
from textflow_django import bulk, signals
from textflow_django.models import BulkBatch, BulkRecipient, BulkSMSJob
signals.bulk_job_finished.connect(
    lambda sender, job, **kw: print("bulk_job_finished", job.pk, flush=True), weak=False
)
action, arg = sys.argv[1], json.loads(sys.argv[2])
if action == "create":
    job = bulk.create_job(text="Hi", numbers=arg, batch_size=1)
    queued = []
    bulk.enqueue_job(job.pk, enqueue=queued.append)  # --enqueue: running, batches queued
    number = {r.batch: r.phone_number for r in BulkRecipient.objects.filter(job=job)}
    batches = BulkBatch.objects.filter(job=job).order_by("index")
    print(json.dumps({"job": job.pk, "batches": [[b.id, number[b.index]] for b in batches]}))
elif action == "send":  # a worker taking batches off its queue, as send_bulk_batch does
    for batch_id in arg:
        print("sent" if bulk.send_batch(batch_id) else "skipped", batch_id, flush=True)
elif action == "resume":
    from django.core.management import call_command
    call_command("textflow_bulk_sms", "--resume", str(arg), stdout=sys.stdout)
elif action == "age":  # the database's clock moves on, as far as a claim can tell
    from django.db.models import F
    claim = BulkBatch.objects.filter(pk=arg["batch"])
    claim.update(claimed_at=F("claimed_at") - datetime.timedelta(seconds=arg["seconds"]))
elif action == "report":
    job = BulkSMSJob.objects.get(pk=arg)
    print(json.dumps({
        "job": [job.status, job.sent, job.uncertain, job.batches_sent, bool(job.finished_at)],
        "batches": [[b.status, b.claimed_by, b.error]
                    for b in BulkBatch.objects.filter(job=job).order_by("index")],
    }))
"""
#: The lease the subprocesses use, and their hosts' clocks, hours apart: judged by them, the
#: live worker's claim (its clock behind) would look two leases old to the resume (its clock
#: ahead). The database's clock, which stamps and judges claims, moves a lease on after the
#: kill ("age"): the killed worker's claim is a lease old, the live one's fresh.
CHILD_LEASE = 3600
KILLED_AT = T0
LIVE_AT = T0 - timedelta(seconds=CHILD_LEASE)
RESUME_AT = T0 + timedelta(seconds=CHILD_LEASE)


class Held:
    """An emulator hook holding the call that carries a given number: TextFlow has the
    batch (recorded), the sender waits for the answer until the test releases it."""

    def __init__(self) -> None:
        self.arrived: dict[str, threading.Event] = {}
        self.release: dict[str, threading.Event] = {}

    def hold(self, number: str) -> None:
        self.arrived[number] = threading.Event()
        self.release[number] = threading.Event()

    def __call__(self, sms: SentSMS) -> None:
        arrived = self.arrived.get(sms.phone_number)
        if arrived is not None and not arrived.is_set():
            arrived.set()
            self.release[sms.phone_number].wait(timeout=300)

    def wait_for(self, number: str, proc: subprocess.Popen[str]) -> None:
        """Until the call carrying ``number`` is at the emulator (fail if the sender died)."""
        while not self.arrived[number].wait(0.05):
            if proc.poll() is not None:
                pytest.fail(f"the worker ended early: {proc.communicate()}")

    def release_all(self) -> None:
        for event in self.release.values():
            event.set()


class Children:
    """Runs CHILD in subprocesses sharing one database and the emulator."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env

    def argv(self, action: str, arg: object) -> list[str]:
        return [sys.executable, "-c", CHILD, action, json.dumps(arg)]

    def env_at(self, now: datetime) -> dict[str, str]:
        return {**self.env, "LEASE_TEST_NOW": now.isoformat()}

    def run(self, action: str, arg: object, now: datetime) -> str:
        done = subprocess.run(
            self.argv(action, arg),
            env=self.env_at(now),
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    def start(self, action: str, arg: object, now: datetime) -> subprocess.Popen[str]:
        return subprocess.Popen(
            self.argv(action, arg),
            env=self.env_at(now),
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def report(self, job: int) -> dict[str, Any]:
        report: dict[str, Any] = json.loads(self.run("report", job, RESUME_AT).splitlines()[-1])
        return report


def child_env(emulator: TextFlowEmulator, **extra: str) -> dict[str, str]:
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "TEXTFLOW_TEST_EMULATOR_URL": emulator.url,
        "PYTHONPATH": str(ROOT),
    }
    env.pop("TEST_DATABASE", None)  # SQLite unless ``extra`` says otherwise
    return {**env, **extra}


@pytest.fixture
def held_emulator() -> Iterator[tuple[TextFlowEmulator, Held]]:
    held = Held()
    with TextFlowEmulator(bulk_rate=0, on_message=held) as emulator:
        try:
            yield emulator, held
        finally:
            held.release_all()


def two_workers_one_killed_then_resume(
    children: Children, emulator: TextFlowEmulator, held: Held
) -> None:
    everyone = numbers(6)
    created = json.loads(children.run("create", everyone, KILLED_AT).splitlines()[-1])
    job, batches = created["job"], created["batches"]
    ids = [batch_id for batch_id, _ in batches]
    killed_number, live_number = batches[0][1], batches[1][1]
    held.hold(killed_number)
    held.hold(live_number)

    # Worker A takes the first batch; TextFlow has it when A is killed, before the answer.
    killed = children.start("send", ids, KILLED_AT)
    held.wait_for(killed_number, killed)
    killed.send_signal(signal.SIGKILL)
    killed.wait(60)
    assert killed.returncode == -signal.SIGKILL
    children.run("age", {"batch": ids[0], "seconds": CHILD_LEASE}, KILLED_AT)
    # Worker B takes the second (its queue: the rest of the job) and is mid-call, a lease
    # after A's claim by the database's clock.
    live = children.start("send", ids[1:], LIVE_AT)
    try:
        held.wait_for(live_number, live)

        # The operator resumes while B still sends.
        resumed = children.run("resume", job, RESUME_AT)

        during = children.report(job)
        assert [status for status, _, _ in during["batches"]] == [
            "uncertain",  # A's: claimed a lease ago, its sender is dead
            "sending",  # B's: left to B, neither resent nor marked
            "accepted",
            "accepted",
            "accepted",
            "accepted",
        ]
        assert during["batches"][0][1].split(":")[1] == str(killed.pid)
        assert during["batches"][0][2] == "the sender died mid-batch"
        assert during["batches"][1][1].split(":")[1] == str(live.pid)
        # status, sent, uncertain, batches sent, finished: not finished while B sends.
        assert during["job"] == ["running", 4, 1, 4, False]
        assert "1 batch is still being sent by another worker" in resumed
        assert "bulk_job_finished" not in resumed
    finally:
        held.release_all()  # B's answer arrives
        out, err = live.communicate(timeout=300)
    assert live.returncode == 0, err
    # B recorded its batch, the last, and finished the job (announced once, by B); the
    # batches the resume sent it found taken.
    assert out.splitlines() == [
        f"bulk_job_finished {job}",
        f"sent {ids[1]}",
        *(f"skipped {batch_id}" for batch_id in ids[2:]),
    ]
    after = children.report(job)
    assert [status for status, _, _ in after["batches"]] == ["uncertain", *["accepted"] * 5]
    assert after["job"] == ["finished", 5, 1, 5, True]
    # From the emulator: one call a batch, none twice; everyone reached exactly once (A's
    # batch did reach TextFlow: it is the one counted uncertain).
    calls = [tuple(c.json["phone_numbers"]) for c in emulator.calls("/bulk-sms")]
    assert sorted(calls) == sorted((number,) for _, number in batches)
    assert reached(emulator) == Counter(everyone)


@pytest.mark.django_db(transaction=True)
def test_two_workers_one_killed_and_a_resume_on_sqlite(tmp_path, held_emulator):
    emulator, held = held_emulator
    env = child_env(emulator, TEXTFLOW_TEST_SQLITE=str(tmp_path / "lease.sqlite3"))
    manage = [sys.executable, "-m", "django", "migrate", "-v", "0"]
    subprocess.run(manage, env=env, cwd=ROOT, check=True, timeout=300)
    two_workers_one_killed_then_resume(Children(env), emulator, held)


@requires_postgres
@pytest.mark.django_db(transaction=True)
def test_two_workers_one_killed_and_a_resume_on_postgresql(held_emulator):
    emulator, held = held_emulator
    # The subprocesses use this test's database (the test database pytest-django made).
    env = child_env(emulator, TEST_DATABASE="postgres", PGDATABASE=connection.settings_dict["NAME"])
    two_workers_one_killed_then_resume(Children(env), emulator, held)


# -- a resume racing the senders' records: the counts stay true --------------------------------


def in_another_connection(work: Callable[[], object]) -> threading.Thread:
    """Run ``work`` in a thread, on its own database connection (PostgreSQL), and return
    once it has ended or is waiting for a lock that another connection holds (this
    thread's): what another process would do at this very moment. The caller joins it."""
    backend_pid: list[int] = []
    ready = threading.Event()

    def target() -> None:
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_backend_pid()")
                backend_pid.append(cursor.fetchone()[0])
            ready.set()
            work()
        finally:
            ready.set()
            connection.close()

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    assert ready.wait(60)
    for _ in range(6000):  # 60 s at most: a thread neither done nor blocked is a failure
        if not thread.is_alive():
            return thread
        with connection.cursor() as cursor:  # live, not a snapshot of pg_stat_activity
            cursor.execute("SELECT cardinality(pg_blocking_pids(%s))", backend_pid)
            if cursor.fetchone()[0]:
                return thread
        thread.join(0.01)
    pytest.fail("the other connection neither ended nor waited for a lock")


@requires_postgres
@pytest.mark.django_db(transaction=True)
def test_a_resend_resume_during_the_last_senders_finish_keeps_the_job_open(
    textflow_live, finished_signals, monkeypatch
):
    """The last sender finds no open batch; before it marks the job finished, a resume
    with ``--resend-uncertain`` reopens the uncertain batch. The finish holds the job's
    lock from its check to its update, so the resume waits and then reopens the finished
    job: the batch is sent. (Check and update unlocked: the job was marked finished with
    the reopened batch pending, which nobody sent.)"""
    from django.db.models.query import QuerySet

    from textflow_django.bulk import sending

    job = bulk.create_job(text="Hi", numbers=numbers(20), batch_size=10)
    BulkSMSJob.objects.filter(pk=job.pk).update(status=BulkSMSJob.Status.RUNNING, uncertain=10)
    ids = batch_ids(job)
    BulkBatch.objects.filter(pk=ids[0]).update(status=BulkBatch.Status.UNCERTAIN)
    with connection.cursor() as cursor:  # the last sender's claim
        assert sending._claim(cursor, sending._hot_sql(connection.alias), ids[1])
    real_exists = QuerySet.exists
    resumes: list[threading.Thread] = []

    def exists(self: QuerySet[Any]) -> bool:
        answer = real_exists(self)
        finish = threading.current_thread() is threading.main_thread()
        if finish and self.model is BulkBatch and not resumes:  # the check: none open
            resume = functools.partial(bulk.running._prepare, job.pk, resend_uncertain=True)
            resumes.append(in_another_connection(resume))
        return answer

    monkeypatch.setattr(QuerySet, "exists", exists)
    assert bulk.send_batch(ids[1], claimed=True) == (10, False)
    monkeypatch.setattr(QuerySet, "exists", real_exists)
    [resume] = resumes
    resume.join(60)
    assert not resume.is_alive()
    job.refresh_from_db()
    assert statuses(job) == ["pending", "accepted"]
    assert (job.status, job.uncertain) == ("running", 0)
    job = bulk.run_job(job.pk)  # the rest of the resume
    assert statuses(job) == ["accepted", "accepted"]
    assert (job.status, job.sent, job.uncertain) == ("finished", 20, 0)
    assert finished_signals == [job.pk, job.pk]  # finished, reopened, finished again
    assert reached(textflow_live) == Counter(numbers(20))


@pytest.mark.django_db
def test_an_interrupted_live_sender_of_the_last_batch_finishes_the_job(
    textflow_live, finished_signals
):
    """A resume sent the rest and left the live sender's batch to it, counting on it to
    finish the job; the sender is interrupted: its batch is uncertain and the job finished,
    not left running with nothing to send. (It stayed running before.)"""
    from textflow_django.bulk import sending

    job = bulk.create_job(text="Hi", numbers=numbers(20), batch_size=10)
    start(job)
    ids = batch_ids(job)
    with connection.cursor() as cursor:  # the live sender's claim
        assert sending._claim(cursor, sending._hot_sql(connection.alias), ids[1])
    job = bulk.run_job(job.pk)
    assert (statuses(job), job.status) == (["accepted", "sending"], "running")

    with pytest.raises(KeyboardInterrupt):
        bulk.send_batch(ids[1], claimed=True, backend=Interrupted())  # type: ignore[arg-type]

    job.refresh_from_db()
    assert statuses(job) == ["accepted", "uncertain"]
    assert (job.status, job.sent, job.uncertain) == ("finished", 10, 10)
    assert finished_signals == [job.pk]
    assert bulk.batches_in_flight(job.pk) == 0


@pytest.mark.django_db
def test_an_interrupted_sender_with_batches_left_leaves_the_job_running(
    textflow_live, finished_signals
):
    job = bulk.create_job(text="Hi", numbers=numbers(20), batch_size=10)
    start(job)
    with pytest.raises(KeyboardInterrupt):
        bulk.send_batch(batch_ids(job)[0], backend=Interrupted())  # type: ignore[arg-type]
    job.refresh_from_db()
    assert (statuses(job), job.status, finished_signals) == (
        ["uncertain", "pending"],
        "running",
        [],
    )


@requires_postgres
@pytest.mark.django_db(transaction=True)
def test_a_frozen_sender_giving_its_batch_up_during_a_resume_is_counted_once(
    textflow_live, monkeypatch
):
    """A resume judges a claim dead (a lease old) while its frozen sender wakes and gives
    the batch back (TextFlow failed; certainly not sent: pending). The resume locks the
    batches it judges, so the sender waits and then finds its claim taken: the batch is
    uncertain, counted once. (Summed unlocked, then updated: the batch went pending, to be
    sent again, and was counted uncertain all the same.)"""
    from django.db.models.query import QuerySet

    from textflow_django.bulk import sending

    job = bulk.create_job(text="Hi", numbers=numbers(10))
    start(job)
    [batch_id] = batch_ids(job)
    with connection.cursor() as cursor:
        assert sending._claim(cursor, sending._hot_sql(connection.alias), batch_id)
    age_claims(job, LEASE)
    real_update = QuerySet.update
    senders: list[threading.Thread] = []
    released: list[bool] = []

    def update(self: QuerySet[Any], **changes: Any) -> int:
        resume = threading.current_thread() is threading.main_thread()
        if resume and self.model is BulkBatch and not senders:  # the resume judges the batch
            give_up = functools.partial(sending._release, batch_id, BulkBatch.Status.PENDING)
            senders.append(in_another_connection(lambda: released.append(give_up())))
        return real_update(self, **changes)

    monkeypatch.setattr(QuerySet, "update", update)
    bulk.running._prepare(job.pk, resend_uncertain=False)
    monkeypatch.setattr(QuerySet, "update", real_update)
    [sender] = senders
    sender.join(60)
    assert released == [False]  # the claim was no longer the sender's
    job.refresh_from_db()
    assert statuses(job) == ["uncertain"]
    assert (job.status, job.sent, job.uncertain) == ("running", 0, 10)


class FailsAfterTheJudgement:
    """The sender is frozen past its lease mid-call (a resume judges its batch dead), then
    TextFlow answers 500: maybe sent."""

    def __init__(self, emulator: TextFlowEmulator, job: BulkSMSJob) -> None:
        self.real = get_backend()
        self.emulator = emulator
        self.job = job

    def bulk_sms(self, phone_numbers: list[str], text: str) -> Any:
        age_claims(self.job, LEASE)
        bulk.running._prepare(self.job.pk, resend_uncertain=False)
        self.emulator.fault("status", path="/bulk-sms", status=500)
        return self.real.bulk_sms(phone_numbers, text)


@pytest.mark.django_db
def test_an_uncertain_batch_counts_only_the_numbers_left_after_opt_outs(textflow_live):
    """Two numbers opt out after the job was made: the sender leaves them out, then is
    judged dead mid-call. The resume counts the batch's eight numbers uncertain, not the
    ten it was made with (the size was not lowered: uncertain 10 of a total of 8)."""
    from textflow_django.optouts import opt_out

    job = bulk.create_job(text="Hi", numbers=numbers(10))
    start(job)
    [batch_id] = batch_ids(job)
    for number in numbers(2):
        assert opt_out(number, source="admin")
    with pytest.raises(bulk.BulkJobStopped):
        bulk.send_batch(batch_id, backend=FailsAfterTheJudgement(textflow_live, job))  # type: ignore[arg-type]
    job.refresh_from_db()
    assert statuses(job) == ["uncertain"]
    assert (job.total, job.sent, job.uncertain) == (8, 0, 8)
    assert BulkBatch.objects.get(pk=batch_id).size == 8
    [call] = textflow_live.calls("/bulk-sms")  # the eight (answered 500: maybe sent)
    assert call.json["phone_numbers"] == numbers(10)[2:]


@pytest.mark.django_db
def test_an_uncertain_batch_counts_only_the_numbers_left_after_a_refused_one(textflow_live):
    """TextFlow refuses a number; the sender drops it and resends the rest, which fails
    maybe sent: three uncertain of a total of three (four before: the dropped one too)."""
    bad = "+12112345678"  # a service code: refused by the strict check, as in test_bulk
    job = bulk.create_job(text="Hi", numbers=numbers(4))
    BulkRecipient.objects.filter(job=job, phone_number=numbers(4)[-1]).update(phone_number=bad)
    refused = '{"ok": false, "status": 400, "message": "Phone number is invalid"}'
    textflow_live.fault("respond", path="/bulk-sms", status=400, body=refused)
    textflow_live.fault("status", path="/bulk-sms", status=500)
    with pytest.raises(bulk.BulkJobStopped):
        bulk.run_job(job.pk)
    job.refresh_from_db()
    assert statuses(job) == ["uncertain"]
    assert (job.total, job.invalid, job.sent, job.uncertain) == (3, 1, 0, 3)
    assert BulkBatch.objects.get(job=job).size == 3


@pytest.mark.django_db
def test_resume_enqueue_counts_only_batches_other_workers_were_sending(textflow_live, monkeypatch):
    """The workers claim the batches this resume queues as soon as they are queued: those
    are not another worker's. (Counted after queueing, the line said 3 batches.)"""
    from textflow_django import tasks
    from textflow_django.bulk import sending

    job = bulk.create_job(text="Hi", numbers=numbers(30), batch_size=10)
    start(job)
    claimed_elsewhere(job, 0, timedelta(0))

    def claimed_at_once(batch_id: int) -> None:  # a worker takes it, and is sending it
        with connection.cursor() as cursor:
            assert sending._claim(cursor, sending._hot_sql(connection.alias), batch_id)

    monkeypatch.setattr(tasks, "send_bulk_batch", types.SimpleNamespace(enqueue=claimed_at_once))
    out = run("textflow_bulk_sms", "--resume", str(job.pk), "--enqueue")
    assert f"Job {job.pk}: 2 batches queued for the workers." in out
    assert "1 batch is still being sent by another worker" in out
    assert statuses(job) == ["sending", "sending", "sending"]


@requires_postgres
@pytest.mark.django_db(transaction=True)
def test_a_sender_giving_its_batch_up_uncertain_during_a_resume_does_not_deadlock(
    textflow_live, monkeypatch
):
    """A frozen sender gives its batch up uncertain (and counts it) just as a resume that
    holds the job's lock comes to lock that batch. The sender takes the job's lock first,
    as the resume does: it waits, then finds its claim taken. (Batch first, then job: the
    two waited for each other until PostgreSQL killed one.)"""
    from django.db.models.query import QuerySet

    from textflow_django.bulk import sending

    job = bulk.create_job(text="Hi", numbers=numbers(10))
    start(job)
    [batch_id] = batch_ids(job)
    with connection.cursor() as cursor:
        assert sending._claim(cursor, sending._hot_sql(connection.alias), batch_id)
    age_claims(job, LEASE)
    real_lock = QuerySet.select_for_update
    senders: list[threading.Thread] = []
    released: list[bool] = []

    def select_for_update(self: QuerySet[Any], *args: Any, **kwargs: Any) -> QuerySet[Any]:
        resume = threading.current_thread() is threading.main_thread()
        if resume and self.model is BulkBatch and not senders:  # about to lock the batch
            give_up = functools.partial(sending._release_uncertain, job.pk, batch_id, "x")
            senders.append(in_another_connection(lambda: released.append(give_up())))
        return real_lock(self, *args, **kwargs)

    monkeypatch.setattr(QuerySet, "select_for_update", select_for_update)
    bulk.running._prepare(job.pk, resend_uncertain=False)
    monkeypatch.setattr(QuerySet, "select_for_update", real_lock)
    [sender] = senders
    sender.join(60)
    assert released == [False]
    job.refresh_from_db()
    assert statuses(job) == ["uncertain"]
    assert BulkBatch.objects.get(pk=batch_id).error == "the sender died mid-batch"
    assert (job.status, job.uncertain) == ("running", 10)
