"""Sending one batch: claim it, send it through the backend, record the outcome.

:func:`send_batch` is the one function that sends a batch, whoever calls it: the inline
sender (:func:`textflow_django.bulk.running.run_job`) or a worker's task. The contract:

- A batch is claimed in the database before it is sent, and only while its job is
  ``running``; the job's status is read in the very statement that claims the batch. So a
  batch delivered twice to workers is sent once, and none is started once a stop has
  committed.
- The claiming statement also stamps the claim: ``claimed_at`` (now, by the database's
  clock, which judges the claim's age too: hosts' clocks play no part) and ``claimed_by``
  (:func:`claimer`, the sender's host, pid and a random part). The claim is the sender's for
  ``BULK_LEASE`` seconds; a resume leaves a younger claim alone and judges an older one its
  dead sender's (``uncertain``; see :mod:`~textflow_django.bulk.running`). No timer renews
  it: a batch is one call to TextFlow, which ``TIMEOUT`` bounds, and the sender stamps the
  claim again before each further call for the batch (a retry after a 429, the resend once
  refused numbers are dropped), so a live claim is never older than :func:`lease_floor`,
  which the lease exceeds (check ``textflow.E020``). Whatever the sender writes about the
  batch afterwards (accepted, pending, uncertain) it writes only while the claim is still
  its own; a sender that finds it taken sends nothing more of the batch. (A sender frozen
  past its lease whose call TextFlow accepted meanwhile still records the acceptance while
  nobody else has claimed the batch: :func:`_accepted_after_losing_claim`.)
- A sender interrupted mid-call (Ctrl-C, a worker's shutdown or time limit) marks its batch
  ``uncertain`` on the way out instead of leaving it claimed for a lease, and finishes the
  job if that was its last open batch.
- Once TextFlow accepts it, the batch is marked ``accepted`` and the job's counters move,
  in one commit (which may also claim the sender's next batch).
- A 429 sent nothing: the batch is retried after ``Retry-After``, a few times. A refusal of
  a number drops the numbers a strict check refuses and sends the rest once.
- Any other TextFlow failure stops the job (:class:`BulkJobStopped`). The batch becomes
  ``uncertain`` if the request may have reached TextFlow (it is then not sent again unless
  the operator asks), else ``pending`` again; the job's other batches stay pending, for a
  resume.

:func:`finish_if_done` marks a job finished, once, when none of its batches is left to
send. The per-batch statements are plain SQL (:class:`_HotSQL`): at thousands of batches a
job, the ORM's query building costs more than the database work.

Why one module of over 400 lines: it is the one place a batch is sent, step by step (claim,
numbers, call, retries, outcome, record), and the claim's rules are conditions on each of
those steps (stamped by the claim, renewed before a retry, every later write made only while
the claim is the sender's). Split, a step and the condition it runs under would be read in
two places.
"""

from __future__ import annotations

import contextlib
import functools
import os
import secrets
import socket
import time
from typing import Any, NamedTuple

from django.db import connections, router, transaction
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.backends.utils import CursorWrapper
from django.db.models import F, Subquery
from django.db.models.functions import Greatest, Now
from django.db.models.sql import Query
from django.utils import timezone

from .. import _events, optouts, phone, signals
from ..backends import get_backend
from ..backends.base import BaseBackend, opt_outs_checked
from ..client import longest_call
from ..exceptions import (
    TextFlowConfigurationError,
    TextFlowError,
    TextFlowRateLimited,
    TextFlowRejectedNumber,
)
from ..models import BulkBatch, BulkRecipient, BulkSMSJob, OptOut
from ._optouts import leave_out
from ._text import masked, storable

__all__ = [
    "BatchOutcome",
    "BulkJobStopped",
    "claimer",
    "finish_if_done",
    "lease_floor",
    "send_batch",
    "stop_reason",
]

#: A 429 from TextFlow sent nothing, so the batch is retried after Retry-After, this often.
RATE_LIMIT_RETRIES = 3
MAX_RATE_LIMIT_WAIT = 60


def lease_floor(timeout: float) -> float:
    """The longest a live sender goes without stamping its claim, in seconds, for a
    ``TIMEOUT`` of ``timeout``: ``BULK_LEASE`` must be longer (check ``textflow.E020``), so
    that a claim older than the lease can only be a dead sender's.

    A sender stamps its claim when it claims the batch, and again right before each further
    call it makes for it (a retry after a 429, the resend once refused numbers are dropped).
    Between two stamps it therefore waits at most once (``MAX_RATE_LIMIT_WAIT``) and makes
    one call, which lasts at most :func:`~textflow_django.client.longest_call` (its
    connection retries included: the bound the circuit breaker's trial slot uses too).
    Renewing the claim only there, and not on a timer, keeps the hot path at one statement
    a batch; the database statements around the call take milliseconds.
    """
    return MAX_RATE_LIMIT_WAIT + longest_call(timeout)


@functools.cache
def _claimer(pid: int) -> str:
    suffix = f":{pid}:{secrets.token_hex(4)}"
    longest = BulkBatch._meta.get_field("claimed_by").max_length or 200
    return socket.gethostname()[: longest - len(suffix)] + suffix


def claimer() -> str:
    """This process's name on the batches it claims (``BulkBatch.claimed_by``):
    ``host:pid:random``, the random part drawn once per process (a forked worker, whose pid
    differs, draws its own), so the operator sees which worker holds a batch and a pid that a
    later process reuses does not pass for the earlier one. Threads of a process share it."""
    return _claimer(os.getpid())


class BulkJobStopped(Exception):
    """Sending stopped; the job is saved as ``stopped`` and can be resumed.

    ``error`` is the TextFlow failure that stopped it, or ``None`` when another sender
    (a worker) stopped the job meanwhile: ``job.last_error`` then says why.
    """

    def __init__(self, job: BulkSMSJob, error: TextFlowError | None) -> None:
        self.job = job
        self.error = error
        super().__init__(f"bulk job {job.pk} stopped: {stop_reason(job, error)}")


def stop_reason(job: BulkSMSJob, error: TextFlowError | None) -> str:
    """Why ``job`` stopped: the TextFlow failure that stopped it here, else what the sender
    that stopped it recorded (``job.last_error``)."""
    if error is not None:
        return _error_text(error)
    return job.last_error or "stopped by another sender"


def _error_text(error: Exception) -> str:
    """``error``'s message as the job keeps and logs it: numbers in it (TextFlow's message
    may quote one) masked, characters a database refuses escaped, at most 2,000 long."""
    return storable(masked(str(error)))[:2000]


def _stop(job_id: int, error: Exception) -> BulkSMSJob:
    """Save the job ``stopped`` by ``error`` (the message kept for the operator); return it."""
    BulkSMSJob.objects.filter(pk=job_id).update(
        status=BulkSMSJob.Status.STOPPED, last_error=_error_text(error)
    )
    return BulkSMSJob.objects.get(pk=job_id)


def _send_valid_part(
    backend: BaseBackend, job_id: int, batch_id: int, numbers: list[str], text: str
) -> int:
    """TextFlow refused the batch's numbers: drop the ones a strict check refuses (from the
    job's recipients and ``total``, and from the batch's ``size``: an uncertain batch counts
    only what it was sent to), send the rest once. Returns how many were sent; raises a
    ``TextFlowError`` as ``send_batch``."""
    strict = phone.bulk_normalizer(strict=True)
    keep: list[str] = []
    for number in numbers:
        try:
            keep.append(strict(number))
        except phone.InvalidPhoneNumberError:
            pass
    dropped = sorted(set(numbers) - set(keep))
    if not dropped:
        raise TextFlowRejectedNumber("TextFlow refused a number of the batch", status=400)
    _events.emit(
        "textflow.bulk.numbers_dropped",
        job=job_id,
        dropped=len(dropped),
        numbers=[phone.mask(number) for number in dropped[:10]],  # the first ten
    )
    with transaction.atomic(using=router.db_for_write(BulkRecipient)):
        BulkRecipient.objects.filter(job_id=job_id, phone_number__in=dropped).delete()
        BulkSMSJob.objects.filter(pk=job_id).update(
            invalid=F("invalid") + len(dropped), total=F("total") - len(dropped)
        )
        BulkBatch.objects.filter(pk=batch_id).update(size=F("size") - len(dropped))
    if keep:
        # Read against the opt-out list with the batch (or before this retry): the backend
        # need not ask again, nor drop a number while ``len(keep)`` counts it sent.
        with opt_outs_checked(keep):
            backend.bulk_sms(keep, text)
    return len(keep)


class _HotSQL:
    """The statements run once per batch, as plain SQL: at two thousand batches a job, the
    ORM's query building costs more than the database work. Built once per database."""

    def __init__(self, alias: str) -> None:
        qn = connections[alias].ops.quote_name
        self.alias = alias
        batches, jobs = qn(BulkBatch._meta.db_table), qn(BulkSMSJob._meta.db_table)
        recipients = qn(BulkRecipient._meta.db_table)
        # Table names come from the models, quoted by the backend; values are parameters.
        # Each number with whether it is on the opt-out list now (it may have joined it
        # since the job was made): see _optouts.
        optouts = qn(OptOut._meta.db_table)
        listed = qn(str(OptOut._meta.get_field("phone_number").column))
        self.numbers = (
            "SELECT r.phone_number, CASE WHEN o.id IS NULL THEN 0 ELSE 1 END "  # noqa: S608
            f"FROM {recipients} r "
            f"INNER JOIN {batches} b ON r.job_id = b.job_id AND r.batch = b.{qn('index')} "
            f"LEFT JOIN {optouts} o ON o.{listed} = r.phone_number "
            "WHERE b.id = %s ORDER BY r.id"
        )
        # The job's status is read in the very statement that claims the batch: no batch
        # is claimed, so none sent, once the job's stop has committed. The claim's time and
        # claimer are written by it too: no moment where a batch is sending unstamped. The
        # time is the database's (Now() as the ORM writes it for this database), the clock
        # a resume judges the claim by: a host's clock, skewed, could make a live claim
        # look a lease old to another host.
        stamp = Query(BulkBatch).get_compiler(alias).compile(Now())[0]  # takes no parameter
        self.claim = (
            f"UPDATE {batches} SET status = %s, claimed_at = {stamp}, claimed_by = %s "  # noqa: S608
            f"WHERE id = %s AND status = %s AND EXISTS (SELECT 1 FROM {jobs} j "
            f"WHERE j.id = {batches}.job_id AND j.status = %s)"
        )
        # The statements below touch the batch only while the claim is still this sender's:
        # a resume may have judged it dead (see lease_floor) and taken the batch away.
        mine = "WHERE id = %s AND status = %s AND claimed_by = %s"
        self.renew = f"UPDATE {batches} SET claimed_at = {stamp} {mine}"  # noqa: S608
        self.accept_batch = f"UPDATE {batches} SET status = %s, sent_at = %s, error = '' {mine}"  # noqa: S608
        self.count_sent = (
            f"UPDATE {jobs} SET sent = sent + %s, "  # noqa: S608
            "batches_sent = batches_sent + 1 WHERE id = %s"
        )

    @property
    def connection(self) -> BaseDatabaseWrapper:
        return connections[self.alias]  # this thread's connection

    def now(self) -> Any:
        """The time now (this host's clock: ``sent_at``; claims are stamped by the
        database's) as this database stores a ``DateTimeField`` (what the ORM would send):
        SQLite compares the stored text, so a raw aware datetime (``+00:00``) would not
        compare with the ORM's values."""
        return self.connection.ops.adapt_datetimefield_value(timezone.now())


@functools.cache
def _hot_sql(alias: str) -> _HotSQL:
    return _HotSQL(alias)


_CLAIM_ARGS = (BulkBatch.Status.SENDING, BulkBatch.Status.PENDING, BulkSMSJob.Status.RUNNING)


def _claim(cursor: CursorWrapper, sql: _HotSQL, batch_id: int) -> bool:
    """Mark a pending batch of a running job ``sending``, stamped with the database's time
    and :func:`claimer` (committed before anything is sent: a process that dies after
    sending leaves it ``sending``, which a resume reads as uncertain once the lease has run
    out)."""
    sending, pending, running = _CLAIM_ARGS
    cursor.execute(sql.claim, [sending, claimer(), batch_id, pending, running])
    return bool(cursor.rowcount == 1)


class _ClaimLost(Exception):
    """A resume took the batch from this sender (judged dead: it went a whole lease without
    stamping its claim); nothing more of the batch is sent by it."""


def _keep_claim(sql: _HotSQL, batch_id: int) -> None:
    """Stamp this sender's claim again, right before another call for the batch (see
    :func:`lease_floor`).

    Raises:
        _ClaimLost: the claim is no longer this sender's.
    """
    with sql.connection.cursor() as cursor:
        cursor.execute(sql.renew, [batch_id, BulkBatch.Status.SENDING, claimer()])
        if cursor.rowcount != 1:
            _events.emit("textflow.bulk.claim_lost", batch=batch_id, sent="no")
            raise _ClaimLost(batch_id)


def _release(batch_id: int, status: str, error: str | None = None) -> bool:
    """Give up this sender's claim: the batch becomes ``status`` (``pending``: certainly not
    sent; ``uncertain``: maybe sent), with ``error`` if given. Returns False, changing
    nothing, when the claim is no longer this sender's (a resume already judged the batch)."""
    changes = {"status": status} if error is None else {"status": status, "error": error}
    mine = BulkBatch.objects.filter(
        pk=batch_id, status=BulkBatch.Status.SENDING, claimed_by=claimer()
    )
    return bool(mine.update(**changes))


def _release_uncertain(job_id: int, batch_id: int, error: str) -> bool:
    """:func:`_release` the batch ``uncertain`` and count its recipients (its ``size``, which
    numbers left out or dropped since the job was made no longer count) in the job's
    ``uncertain``, in one transaction. Returns False, changing nothing, as ``_release``."""
    with transaction.atomic(using=router.db_for_write(BulkBatch)):
        # The job's row first, then the batch's, in the order a resume locks them
        # (``_prepare``): the other way round, a resume judging this batch dead at this
        # moment would deadlock with this sender.
        list(BulkSMSJob.objects.select_for_update().filter(pk=job_id).values_list("pk"))
        if not _release(batch_id, BulkBatch.Status.UNCERTAIN, error):
            return False
        size = BulkBatch.objects.filter(pk=batch_id).values("size")
        BulkSMSJob.objects.filter(pk=job_id).update(uncertain=F("uncertain") + Subquery(size))
    return True


def _deliver(sql: _HotSQL, backend: BaseBackend, job: BulkSMSJob, batch_id: int) -> int:
    """Send one claimed batch. Returns how many recipients TextFlow accepted.

    Raises:
        BulkJobStopped: as :func:`send_batch`.
    """
    try:
        with sql.connection.cursor() as cursor:
            cursor.execute(sql.numbers, [batch_id])
            rows = cursor.fetchall()
        numbers = [number for number, opted_out in rows if not opted_out]
        if len(numbers) < len(rows):
            leave_out(job.pk, batch_id, [number for number, opted_out in rows if opted_out])
    except BaseException:
        # Nothing was sent yet: the batch goes back to pending (a resume sends it), rather
        # than staying "sending" until the lease runs out and then counting as uncertain.
        with contextlib.suppress(Exception):  # the connection may be unusable by now
            _release(batch_id, BulkBatch.Status.PENDING, "interrupted before sending")
        raise
    sent = len(numbers)
    try:
        for attempt in range(RATE_LIMIT_RETRIES + 1):
            try:
                if attempt:
                    _keep_claim(sql, batch_id)
                    # A STOP may have come during the wait: those numbers leave the job
                    # here, so the batch's count of sent numbers is the numbers sent.
                    now_out = optouts.opted_out_among(numbers)
                    if now_out:
                        leave_out(job.pk, batch_id, sorted(now_out))
                        numbers = [number for number in numbers if number not in now_out]
                        sent = len(numbers)
                if numbers:
                    # Read against the opt-out list a moment ago (sql.numbers, or just
                    # above after a wait): the backend need not ask again.
                    with opt_outs_checked(numbers):
                        backend.bulk_sms(numbers, job.text)
                break
            except TextFlowRateLimited as err:  # nothing was sent: waiting is safe
                if attempt == RATE_LIMIT_RETRIES:
                    raise
                time.sleep(min(err.retry_after or 1, MAX_RATE_LIMIT_WAIT))
            except TextFlowRejectedNumber:
                _keep_claim(sql, batch_id)
                sent = _send_valid_part(backend, job.pk, batch_id, numbers, job.text)
                break
    except TextFlowError as err:
        uncertain = err.maybe_sent
        if uncertain:
            _release_uncertain(job.pk, batch_id, _error_text(err))
        else:
            _release(batch_id, BulkBatch.Status.PENDING, _error_text(err))
        _events.emit(
            "textflow.bulk.batch_uncertain" if uncertain else "textflow.bulk.batch_failed",
            job=job.pk,
            batch=batch_id,
            error=type(err).__name__,
            detail=_error_text(err),
        )
        raise BulkJobStopped(_stop(job.pk, err), err) from err
    except TextFlowConfigurationError as err:
        # Raised before any request could leave (the client could not be built): the batch
        # goes back to pending and the job stops, resumable once the settings are fixed; the
        # error itself reaches the operator unchanged.
        _release(batch_id, BulkBatch.Status.PENDING)
        _stop(job.pk, err)
        raise
    except _ClaimLost:
        raise
    except BaseException:
        # Interrupted mid-call (Ctrl-C, a worker's shutdown or time limit) or a failure that
        # is not TextFlow's: the request may have gone. The batch is uncertain now, rather
        # than left "sending" for a resume to leave alone until the lease runs out.
        with contextlib.suppress(Exception):  # the connection may be unusable by now
            if _release_uncertain(job.pk, batch_id, "interrupted while sending"):
                _events.emit(
                    "textflow.bulk.batch_uncertain",
                    job=job.pk,
                    batch=batch_id,
                    error="interrupted",
                    detail="interrupted while sending",
                )
                # It may have been the job's last open batch, one a resume left to this
                # sender (counting on it to finish the job): nobody else would.
                finish_if_done(job.pk)
        raise
    return sent


def _accepted_after_losing_claim(batch_id: int, job_id: int, sent: int) -> int:
    """TextFlow accepted a batch whose claim a resume took meanwhile (this sender went a
    whole lease without a stamp: frozen, not dead). Returns the recipients recorded sent.
    Runs inside the caller's transaction.

    While nobody claimed the batch since (it is ``uncertain``, or ``pending`` again for a
    resend, still naming this sender), it is recorded accepted, its recipients moved from
    the job's uncertain count to its sent count: a resend would text them twice. If another
    sender has claimed or sent it, nothing is recorded and its recipients may get the SMS
    twice; the ``textflow.bulk.claim_lost`` line says which happened.
    """
    # Locked and read where it is written (select_for_update reads the write database).
    mine = BulkBatch.objects.select_for_update().filter(pk=batch_id, claimed_by=claimer())
    found = (
        mine.filter(status__in=[BulkBatch.Status.UNCERTAIN, BulkBatch.Status.PENDING])
        .values_list("status", "size")
        .first()
    )
    # The status read is the condition of the write: a claim in between makes it miss.
    if found is None or not mine.filter(status=found[0]).update(
        status=BulkBatch.Status.ACCEPTED, sent_at=timezone.now(), error=""
    ):
        _events.emit("textflow.bulk.claim_lost", batch=batch_id, sent="yes", recorded="no")
        return 0
    status, size = found
    counts: dict[str, object] = {"sent": F("sent") + sent, "batches_sent": F("batches_sent") + 1}
    if status == BulkBatch.Status.UNCERTAIN:
        counts["uncertain"] = Greatest(F("uncertain") - size, 0)
    BulkSMSJob.objects.filter(pk=job_id).update(**counts)
    _events.emit("textflow.bulk.claim_lost", batch=batch_id, sent="yes", recorded="yes")
    return sent


class BatchOutcome(NamedTuple):
    """What :func:`send_batch` did with a batch it claimed and TextFlow accepted."""

    #: Recipients TextFlow accepted.
    sent: int
    #: Whether ``claim_next`` was claimed (for this sender to send next).
    next_claimed: bool = False


def send_batch(
    batch_id: int,
    *,
    backend: BaseBackend | None = None,
    job: BulkSMSJob | None = None,
    claimed: bool = False,
    claim_next: int | None = None,
    finish: bool = True,
) -> BatchOutcome | None:
    """Claim one pending batch of a running job, send it, record the outcome: the one
    function that sends a batch, whether ``run_job`` calls it inline or the task
    ``textflow_django.tasks.send_bulk_batch`` in a worker.

    Returns None, sending nothing, when the batch cannot be claimed: it is not pending
    (another sender has it, or it is done) or its job is not running (stopped, finished,
    not started): a stopped job's batches stay pending for a resume. Also None when a
    resume took the claim before a retry (this sender went a lease without stamping it:
    see :func:`lease_floor`), nothing of the batch having been sent. The job's status is
    checked in the same statement that claims the batch, so once a stop has committed no
    sender starts another batch. Senders already past their claim still send theirs:
    when TextFlow fails, at most one batch per sender in flight (one inline; one per
    worker process) ends ``uncertain``.

    Options for a sender working through a job (``run_job``): ``job`` is the batch's
    job (spares a query); ``claimed`` says this sender already claimed the batch;
    ``claim_next`` is a batch to claim in the same commit that records this one accepted
    (see ``BatchOutcome.next_claimed``); ``finish=False`` leaves
    :func:`finish_if_done` to the caller.

    Raises:
        BulkJobStopped: TextFlow failed; the batch is ``uncertain`` if the request may
            have reached TextFlow, else ``pending`` again; the job is ``stopped``.
    """
    sql = _hot_sql(router.db_for_write(BulkBatch))
    connection = sql.connection
    if not claimed:
        with connection.cursor() as cursor:
            if not _claim(cursor, sql, batch_id):
                return None
    if job is None:
        job = BulkSMSJob.objects.get(batches=batch_id)
    try:
        sent = _deliver(sql, backend or get_backend(), job, batch_id)
    except _ClaimLost:
        return None
    _events.emit("textflow.bulk.batch_sent", job=job.pk, batch=batch_id, recipients=sent)
    # Accepted, counted and the next batch claimed in one commit: one durable write per
    # batch instead of two.
    with transaction.atomic(using=sql.alias), connection.cursor() as cursor:
        accepted = [BulkBatch.Status.ACCEPTED, sql.now(), batch_id]
        cursor.execute(sql.accept_batch, [*accepted, BulkBatch.Status.SENDING, claimer()])
        if cursor.rowcount == 1:
            cursor.execute(sql.count_sent, [sent, job.pk])
        else:
            sent = _accepted_after_losing_claim(batch_id, job.pk, sent)
        next_claimed = claim_next is not None and _claim(cursor, sql, claim_next)
    if finish:
        finish_if_done(job.pk)
    return BatchOutcome(sent, next_claimed)


def finish_if_done(job_id: int) -> bool:
    """Mark the job finished (once, sending ``bulk_job_finished``) when no batch is pending
    or in flight. Returns True if this call finished it.

    A batch another worker is still sending (one a resume left to it) keeps the job open;
    that worker, having recorded it, finishes the job here. Every sender calls this after
    its own batch's commit, so the last of several sees all the others' records (never
    none finishing), and the update's condition lets one caller only finish it (never two
    announcing it).

    The check and the update hold the job's row lock, the one a resume's ``_prepare``
    takes before it reopens batches (``--resend-uncertain``): a resume either commits
    first, and its reopened batches keep the job open here, or waits, and finds the job
    finished (it then reopens it). Unlocked, a resume between the check and the update
    left a finished job with a pending batch that nobody sent.
    """
    closed = [BulkSMSJob.Status.FINISHED, BulkSMSJob.Status.STOPPED]
    with transaction.atomic(using=router.db_for_write(BulkSMSJob)):
        locked = BulkSMSJob.objects.select_for_update().filter(pk=job_id)
        if locked.values_list("status", flat=True).first() in (None, *closed):
            return False
        open_batches = BulkBatch.objects.filter(
            job_id=job_id, status__in=[BulkBatch.Status.PENDING, BulkBatch.Status.SENDING]
        )
        if open_batches.exists():
            return False
        # The condition again: a database without row locks (SQLite) lets one caller only
        # finish the job all the same.
        done = (
            BulkSMSJob.objects.filter(pk=job_id)
            .exclude(status__in=closed)
            .update(status=BulkSMSJob.Status.FINISHED, finished_at=timezone.now())
        )
    if done:
        job = BulkSMSJob.objects.get(pk=job_id)
        _events.emit(
            "textflow.bulk.job_finished",
            job=job.pk,
            sent=job.sent,
            invalid=job.invalid,
            uncertain=job.uncertain,
        )
        signals.bulk_job_finished.send(sender=BulkSMSJob, job=job)
    return bool(done)
