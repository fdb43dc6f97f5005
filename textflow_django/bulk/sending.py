"""Sending one batch: claim it, send it through the backend, record the outcome.

:func:`send_batch` is the one function that sends a batch, whoever calls it: the inline
sender (:func:`textflow_django.bulk.running.run_job`) or a worker's task. The contract:

- A batch is claimed in the database before it is sent, and only while its job is
  ``running``; the job's status is read in the very statement that claims the batch. So a
  batch delivered twice to workers is sent once, and none is started once a stop has
  committed.
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
"""

from __future__ import annotations

import functools
import logging
import time
from typing import NamedTuple

from django.db import connections, router, transaction
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.backends.utils import CursorWrapper
from django.db.models import F
from django.utils import timezone

from .. import phone, signals
from ..backends import get_backend
from ..backends.base import BaseBackend
from ..exceptions import (
    TextFlowConfigurationError,
    TextFlowError,
    TextFlowRateLimited,
    TextFlowRejectedNumber,
)
from ..models import BulkBatch, BulkRecipient, BulkSMSJob
from ._text import masked, storable

__all__ = [
    "BatchOutcome",
    "BulkJobStopped",
    "finish_if_done",
    "send_batch",
    "stop_reason",
]

# The package's one logger, named as before it became a package: configured handlers and
# filters keep matching its records.
logger = logging.getLogger("textflow_django.bulk")

#: A 429 from TextFlow sent nothing, so the batch is retried after Retry-After, this often.
RATE_LIMIT_RETRIES = 3
MAX_RATE_LIMIT_WAIT = 60


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


def _send_valid_part(backend: BaseBackend, job_id: int, numbers: list[str], text: str) -> int:
    """TextFlow refused the batch's numbers: drop the ones a strict check refuses, send the
    rest once. Returns how many were sent; raises a ``TextFlowError`` as ``send_batch``."""
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
    logger.warning(
        "Bulk job %s: TextFlow refused a batch; %d numbers fail full validation and are "
        "dropped: %s",
        job_id,
        len(dropped),
        ", ".join(phone.mask(number) for number in dropped[:10]),
    )
    BulkRecipient.objects.filter(job_id=job_id, phone_number__in=dropped).delete()
    BulkSMSJob.objects.filter(pk=job_id).update(
        invalid=F("invalid") + len(dropped), total=F("total") - len(dropped)
    )
    if keep:
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
        self.numbers = (
            f"SELECT r.phone_number FROM {recipients} r "  # noqa: S608
            f"INNER JOIN {batches} b ON r.job_id = b.job_id AND r.batch = b.{qn('index')} "
            "WHERE b.id = %s ORDER BY r.id"
        )
        # The job's status is read in the very statement that claims the batch: no batch
        # is claimed, so none sent, once the job's stop has committed.
        self.claim = (
            f"UPDATE {batches} SET status = %s WHERE id = %s AND status = %s "  # noqa: S608
            f"AND EXISTS (SELECT 1 FROM {jobs} j WHERE j.id = {batches}.job_id "
            "AND j.status = %s)"
        )
        self.accept_batch = (
            f"UPDATE {batches} SET status = %s, sent_at = %s, error = '' "  # noqa: S608
            "WHERE id = %s"
        )
        self.count_sent = (
            f"UPDATE {jobs} SET sent = sent + %s, "  # noqa: S608
            "batches_sent = batches_sent + 1 WHERE id = %s"
        )

    @property
    def connection(self) -> BaseDatabaseWrapper:
        return connections[self.alias]  # this thread's connection


@functools.cache
def _hot_sql(alias: str) -> _HotSQL:
    return _HotSQL(alias)


_CLAIM_ARGS = (BulkBatch.Status.SENDING, BulkBatch.Status.PENDING, BulkSMSJob.Status.RUNNING)


def _claim(cursor: CursorWrapper, sql: _HotSQL, batch_id: int) -> bool:
    """Mark a pending batch of a running job ``sending`` (committed before anything is
    sent: a process that dies after sending leaves it ``sending``, which a resume reads as
    uncertain)."""
    sending, pending, running = _CLAIM_ARGS
    cursor.execute(sql.claim, [sending, batch_id, pending, running])
    return bool(cursor.rowcount == 1)


def _deliver(sql: _HotSQL, backend: BaseBackend, job: BulkSMSJob, batch_id: int) -> int:
    """Send one claimed batch. Returns how many recipients TextFlow accepted.

    Raises:
        BulkJobStopped: as :func:`send_batch`.
    """
    with sql.connection.cursor() as cursor:
        cursor.execute(sql.numbers, [batch_id])
        numbers = [row[0] for row in cursor.fetchall()]
    sent = len(numbers)
    try:
        for attempt in range(RATE_LIMIT_RETRIES + 1):
            try:
                if numbers:
                    backend.bulk_sms(numbers, job.text)
                break
            except TextFlowRateLimited as err:  # nothing was sent: waiting is safe
                if attempt == RATE_LIMIT_RETRIES:
                    raise
                time.sleep(min(err.retry_after or 1, MAX_RATE_LIMIT_WAIT))
            except TextFlowRejectedNumber:
                sent = _send_valid_part(backend, job.pk, numbers, job.text)
                break
    except TextFlowError as err:
        uncertain = err.maybe_sent
        BulkBatch.objects.filter(pk=batch_id).update(
            status=BulkBatch.Status.UNCERTAIN if uncertain else BulkBatch.Status.PENDING,
            error=_error_text(err),
        )
        if uncertain:
            BulkSMSJob.objects.filter(pk=job.pk).update(uncertain=F("uncertain") + len(numbers))
        logger.warning("Bulk job %s, batch id %s, failed: %s", job.pk, batch_id, _error_text(err))
        raise BulkJobStopped(_stop(job.pk, err), err) from err
    except TextFlowConfigurationError as err:
        # Raised before any request could leave (the client could not be built): the batch
        # goes back to pending and the job stops, resumable once the settings are fixed; the
        # error itself reaches the operator unchanged.
        BulkBatch.objects.filter(pk=batch_id).update(status=BulkBatch.Status.PENDING)
        _stop(job.pk, err)
        raise
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
    not started): a stopped job's batches stay pending for a resume. The job's status is
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
    sent = _deliver(sql, backend or get_backend(), job, batch_id)
    # Accepted, counted and the next batch claimed in one commit: one durable write per
    # batch instead of two.
    with transaction.atomic(using=sql.alias), connection.cursor() as cursor:
        cursor.execute(sql.accept_batch, [BulkBatch.Status.ACCEPTED, timezone.now(), batch_id])
        cursor.execute(sql.count_sent, [sent, job.pk])
        next_claimed = claim_next is not None and _claim(cursor, sql, claim_next)
    if finish:
        finish_if_done(job.pk)
    return BatchOutcome(sent, next_claimed)


def finish_if_done(job_id: int) -> bool:
    """Mark the job finished (once, sending ``bulk_job_finished``) when no batch is pending
    or in flight. Returns True if this call finished it."""
    open_batches = BulkBatch.objects.filter(
        job_id=job_id, status__in=[BulkBatch.Status.PENDING, BulkBatch.Status.SENDING]
    )
    if open_batches.exists():
        return False
    done = (
        BulkSMSJob.objects.filter(pk=job_id)
        .exclude(status__in=[BulkSMSJob.Status.FINISHED, BulkSMSJob.Status.STOPPED])
        .update(status=BulkSMSJob.Status.FINISHED, finished_at=timezone.now())
    )
    if done:
        job = BulkSMSJob.objects.get(pk=job_id)
        signals.bulk_job_finished.send(sender=BulkSMSJob, job=job)
    return bool(done)
