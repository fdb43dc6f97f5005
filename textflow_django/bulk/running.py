"""Running a job: make it ready to (re)start, then send its pending batches, inline or
through a task queue.

Both ways go through :func:`~textflow_django.bulk.sending.send_batch`, so both keep its
promises (a batch is claimed before it is sent, and only while its job runs):

- :func:`run_job` sends the pending batches in order, in this process, and reports
  progress; it raises :class:`~textflow_django.bulk.sending.BulkJobStopped` when the job
  stops, here or in another sender.
- :func:`enqueue_job` hands each pending batch id to the ``enqueue`` function it is given,
  for workers to send. It knows no task framework: the caller passes the queue's submit
  function (:func:`textflow_django.tasks.enqueue_bulk_job` passes the Django task's), so
  the services never import the layer that drives them.

Either resumes a stopped job: batches left ``sending`` by a dead process become
``uncertain`` and are not sent again unless ``resend_uncertain`` asks; batches TextFlow
accepted are never sent again.

A batch found ``sending`` is judged by the age of its claim (``claimed_at``, stamped by the
claiming statement with the database's clock, and judged by that clock too, in SQL: hosts'
clocks, however skewed, play no part). Claimed at least ``BULK_LEASE`` seconds ago:
its sender is dead, since a live one stamps its claim at least every
:func:`~textflow_django.bulk.sending.lease_floor` seconds and the lease is longer (check
``textflow.E020``); the batch becomes ``uncertain``. Claimed less than a lease ago: a live
sender (another worker, another ``--resume``) may be sending it right now, so it is left to
that sender, neither sent again nor marked, and :func:`batches_in_flight` counts it. The job
then finishes when its last batch is recorded, by whichever sender records it
(:func:`~textflow_django.bulk.sending.finish_if_done`, once). A claim from a process that
died less than a lease ago is left too: a resume after the lease judges it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import timedelta

from django.db import router, transaction
from django.db.models import F, Q, QuerySet
from django.db.models.expressions import CombinedExpression
from django.db.models.functions import Now
from django.utils import timezone

from .. import _events
from ..backends import get_backend
from ..conf import conf
from ..models import BulkBatch, BulkSMSJob
from .sending import BulkJobStopped, finish_if_done, send_batch

__all__ = ["batches_in_flight", "enqueue_job", "run_job"]

#: Batch ids read per page by :func:`run_job` (memory stays flat however many batches).
BATCH_PAGE = 1000


def _lease_start() -> CombinedExpression:
    """The oldest claim time a live sender's claim can have now: ``BULK_LEASE`` seconds ago
    by the database's clock (the one that stamped the claims), evaluated by the statement
    that compares it. A claim exactly that old is its dead sender's."""
    return Now() - timedelta(seconds=conf.BULK_LEASE)


def _claims(job_id: int) -> QuerySet[BulkBatch]:
    return BulkBatch.objects.filter(job_id=job_id, status=BulkBatch.Status.SENDING)


def batches_in_flight(job_id: int) -> int:
    """How many of the job's batches another sender is sending now, as far as the
    database can tell: ``sending``, claimed less than ``BULK_LEASE`` seconds ago. A resume
    leaves them to their senders; the job finishes once they are recorded."""
    return _claims(job_id).filter(claimed_at__gt=_lease_start()).count()


def _prepare(job_id: int, *, resend_uncertain: bool) -> BulkSMSJob:
    """Make a job ready to (re)start, ``running``: batches left ``sending`` by a dead
    process (claimed ``BULK_LEASE`` seconds ago or more, or before claims had a time)
    become ``uncertain``, younger claims are left to their live senders; with
    ``resend_uncertain`` every uncertain batch is pending again. A finished job stays
    finished unless that reopened a batch (it then finishes again, and
    ``bulk_job_finished`` is sent again).

    Raises:
        ValueError: the job has fewer batches than ``batches_total``: ``textflow_cleanup``
            deleted (or is deleting) its batches and recipients (``retention``: only a
            cleanup deletes batches, and under the job's lock, which this one takes first).
    """
    with transaction.atomic(using=router.db_for_write(BulkSMSJob)):
        job = BulkSMSJob.objects.select_for_update().get(pk=job_id)
        batches = BulkBatch.objects.filter(job=job)
        left = batches.count()
        if left < job.batches_total:
            raise ValueError(
                f"Bulk job {job_id} cannot be resumed: {left:,} of its {job.batches_total:,} "
                "batches are left, the cleanup (textflow_cleanup) deleted the others with "
                "their recipients, as TEXTFLOW['RETENTION']['BULK_RECIPIENTS'] says of jobs "
                "finished that long ago. Send a new job instead."
            )
        # Judged as of now, after the job's lock: a resume that waited for another's.
        since = _lease_start()
        claims = _claims(job_id)
        orphans = claims.filter(Q(claimed_at__isnull=True) | Q(claimed_at__lte=since))
        # Locked as they are read, and only those changed, by id: a frozen sender giving its
        # batch up meanwhile (uncertain, or pending: certainly not sent) waits, then finds
        # the claim taken. Read unlocked, its batch was counted uncertain here as well as
        # there, or while it went pending to be sent again.
        found = dict(orphans.select_for_update().values_list("id", "size"))
        lost = sum(found.values())
        dead = 0
        # Only the fields decided here are written, counters as increments: live senders
        # may record batches meanwhile (a database that takes no row lock would otherwise
        # lose their counts).
        changes: dict[str, object] = {
            "started_at": job.started_at or timezone.now(),
            "last_error": "",
        }
        if found:
            dead = BulkBatch.objects.filter(pk__in=found).update(
                status=BulkBatch.Status.UNCERTAIN, error="the sender died mid-batch"
            )
            changes["uncertain"] = F("uncertain") + lost
        # Every claim left is younger than the lease: the older ones are uncertain now.
        in_flight = claims.count()
        if dead or in_flight:
            _events.emit("textflow.bulk.sending_found", job=job_id, dead=dead, in_flight=in_flight)
        reopened = 0
        if resend_uncertain:
            reopened = batches.filter(status=BulkBatch.Status.UNCERTAIN).update(
                status=BulkBatch.Status.PENDING
            )
            changes["uncertain"] = 0
        # Batches are claimed only while their job is running (see send_batch).
        if job.status != BulkSMSJob.Status.FINISHED or reopened:
            changes["status"] = BulkSMSJob.Status.RUNNING
        BulkSMSJob.objects.filter(pk=job_id).update(**changes)
        job.refresh_from_db()
    return job


def _pending_batches(job_id: int) -> Iterator[tuple[int, int | None]]:
    """``(batch id, id of the pending batch after it or None)`` in index order, read a page
    at a time (two pages at most in memory), so a sender can claim the next batch early."""
    pending = BulkBatch.objects.filter(job_id=job_id, status=BulkBatch.Status.PENDING)

    def fetch(after: int) -> list[tuple[int, int]]:
        rows = pending.filter(index__gt=after).order_by("index").values_list("id", "index")
        return list(rows[:BATCH_PAGE])

    page = fetch(-1)
    while page:
        upcoming = fetch(page[-1][1]) if len(page) == BATCH_PAGE else []
        after = [batch_id for batch_id, _ in page[1:]] + [upcoming[0][0] if upcoming else None]
        yield from zip((batch_id for batch_id, _ in page), after, strict=True)
        page = upcoming


def run_job(
    job_id: int,
    *,
    resend_uncertain: bool = False,
    progress: Callable[[int], None] | None = None,
) -> BulkSMSJob:
    """Send every pending batch of a job, in order, in this process, each with
    :func:`send_batch`; resumes a stopped job.

    ``progress`` is called after each batch with the number of recipients sent so far.

    Raises:
        BulkJobStopped: on a TextFlow failure (the job is saved as ``stopped``), or when
            another sender stopped the job meanwhile (``error`` is then None).
        ValueError: a cleanup deleted the job's batches (:func:`_prepare`); nothing sent.
    """
    job = _prepare(job_id, resend_uncertain=resend_uncertain)
    backend = get_backend()
    sent = job.sent
    claimed = False
    for batch_id, following in _pending_batches(job_id):
        outcome = send_batch(
            batch_id,
            backend=backend,
            job=job,
            claimed=claimed,
            claim_next=following,
            finish=False,  # once, below: a query per batch saved
        )
        if outcome is None:
            claimed = False
            if _finished_elsewhere(job_id):
                break
            continue  # another sender has this batch
        claimed = outcome.next_claimed
        sent += outcome.sent
        if progress is not None:
            progress(sent)
    finish_if_done(job_id)
    job.refresh_from_db()
    return job


def _finished_elsewhere(job_id: int) -> bool:
    """After a failed claim: False if the job still runs (another sender took the batch),
    True if another sender finished the job.

    Raises:
        BulkJobStopped: another sender stopped the job.
    """
    job = BulkSMSJob.objects.get(pk=job_id)
    if job.status == BulkSMSJob.Status.RUNNING:
        return False
    if job.status == BulkSMSJob.Status.FINISHED:
        return True
    raise BulkJobStopped(job, None)


def enqueue_job(
    job_id: int, *, enqueue: Callable[[int], object], resend_uncertain: bool = False
) -> int:
    """Make the job ready to (re)start and pass the id of every pending batch, in order, to
    ``enqueue``, for whatever workers the project runs. Returns how many were passed.

    ``enqueue`` submits one batch to a queue; the work it queues must call
    :func:`~textflow_django.bulk.sending.send_batch` with that id, as the Django task
    ``textflow_django.tasks.send_bulk_batch`` does (``tasks.enqueue_bulk_job`` is this
    function given that task's ``enqueue``). Once the job stops (TextFlow failed in one of
    the batches) the queued ones send nothing and stay pending for a resume. A job with no
    pending batch is finished here, as :func:`run_job` would finish it.

    Raises:
        ValueError: a cleanup deleted the job's batches (:func:`_prepare`); nothing queued.
        Whatever ``enqueue`` raises; the batches not yet passed to it stay pending.
    """
    _prepare(job_id, resend_uncertain=resend_uncertain)
    queued = 0
    ids = BulkBatch.objects.filter(job_id=job_id, status=BulkBatch.Status.PENDING).order_by("index")
    for batch_id in ids.values_list("id", flat=True).iterator(chunk_size=2000):
        enqueue(batch_id)
        queued += 1
    if not queued:
        finish_if_done(job_id)
    return queued
