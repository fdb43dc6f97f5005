"""Bulk SMS: recipient sources to deduplicated batches, sent and tracked so a job resumes.

The life of a job:

1. :func:`create_job` streams the recipients in, normalises each (fast path for E.164),
   skips and counts invalid ones, and writes the distinct numbers to ``BulkRecipient``
   rows, each tagged with its batch. Deduplication is the unique constraint of that table,
   so memory stays flat whatever the list's size.
2. :func:`run_job` (inline) or :func:`enqueue_job` (Django Tasks workers) sends the pending
   batches with :func:`send_batch`. A batch is claimed in the database before it is sent
   (so a batch delivered twice to workers is sent once) and marked accepted, with the job's
   counters, right after TextFlow accepts it.
3. A batch whose outcome is unknown (the process died after sending it, a timeout, a 5xx)
   is ``uncertain`` and is not sent again unless the operator asks
   (``resend_uncertain=True``). A failure that certainly sent nothing leaves it pending.
   Either way the job stops, resumable with :func:`run_job`.
"""

from __future__ import annotations

import csv
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, TextIO

from django.apps import apps
from django.core.exceptions import FieldDoesNotExist, FieldError, ValidationError
from django.db import connections, models, router, transaction
from django.db.models import F, Sum
from django.utils import timezone

from . import phone, signals
from .backends import get_backend
from .backends.base import BaseBackend
from .conf import conf
from .exceptions import InvalidPhoneNumber, TextFlowError, TextFlowRateLimited
from .models import BulkBatch, BulkRecipient, BulkSMSJob

__all__ = [
    "BulkJobStopped",
    "Source",
    "SourceError",
    "create_job",
    "enqueue_job",
    "file_numbers",
    "finish_if_done",
    "list_numbers",
    "model_numbers",
    "run_job",
    "send_batch",
]

logger = logging.getLogger("textflow_django.bulk")

#: Rows written to the database per round trip while ingesting.
INGEST_CHUNK = 5000
#: Primary keys read per page from a model source.
MODEL_PAGE = 5000
#: Invalid inputs kept as examples for the report.
INVALID_SAMPLES = 10
#: A 429 from TextFlow sent nothing, so the batch is retried after Retry-After, this often.
RATE_LIMIT_RETRIES = 3
MAX_RATE_LIMIT_WAIT = 60


class SourceError(ValueError):
    """A recipient source cannot be read (unknown model, field, filter, column, file)."""


class BulkJobStopped(Exception):
    """Sending stopped on a TextFlow failure; the job is saved and can be resumed."""

    def __init__(self, job: BulkSMSJob, error: TextFlowError) -> None:
        self.job = job
        self.error = error
        super().__init__(f"bulk job {job.pk} stopped: {error}")


# -- sources -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Source:
    """Where recipients come from: a description for the job, and ``(where, value)`` rows.

    ``where`` (a primary key, a line number, a position) is named by ``label`` only when a
    report needs it, so the hot loop builds no strings.
    """

    description: str
    label: str
    rows: Iterator[tuple[object, Any]]


def model_numbers(label: str, field: str, filters: Iterable[str] = ()) -> Source:
    """Numbers from ``app_label.Model.field``, read in primary-key pages, never all at once.

    ``filters`` are ``"lookup=value"`` strings. Everything is checked before the source is
    returned.

    Raises:
        SourceError: naming the unknown model, field or bad filter.
    """
    try:
        model = apps.get_model(label)
    except (LookupError, ValueError) as err:
        raise SourceError(f"Unknown model {label!r}: use app_label.ModelName.") from err
    try:
        model_field = model._meta.get_field(field)
    except FieldDoesNotExist as err:
        raise SourceError(f"{label} has no field {field!r}.") from err
    if not isinstance(model_field, models.CharField | models.TextField):
        raise SourceError(f"{label}.{field} is not a text field.")
    filters = list(filters)
    lookups: dict[str, str] = {}
    for item in filters:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise SourceError(f"Filter {item!r} is not of the form field=value.")
        lookups[key.strip()] = value
    queryset = model._default_manager.filter(**{f"{field}__isnull": False})
    try:
        queryset = queryset.filter(**lookups)
        str(queryset.query)  # compiles the lookups: a bad one fails here, before sending
    except (FieldError, ValueError, ValidationError, TypeError) as err:
        raise SourceError(f"Bad filter for {label}: {err}") from err
    pk = model._meta.pk.name

    def pages() -> Iterator[tuple[object, Any]]:
        last = None
        while True:
            page = queryset.order_by(pk)
            if last is not None:
                page = page.filter(**{f"{pk}__gt": last})
            rows = list(page.values_list(pk, field)[:MODEL_PAGE])
            yield from rows
            if len(rows) < MODEL_PAGE:
                return
            last = rows[-1][0]

    description = f"{label}.{field}" + (f" where {', '.join(filters)}" if lookups else "")
    return Source(description, "pk", pages())


def file_numbers(stream: TextIO, *, name: str, column: str | None = None) -> Source:
    """Numbers from a text stream: one per line, or the ``column`` of a CSV with a header.

    Raises:
        SourceError: the CSV has no such column.
    """
    if column is None:
        return Source(name, "line", ((n, line.strip()) for n, line in enumerate(stream, 1)))
    reader = csv.reader(stream)
    header = next(reader, None)
    if header is None or column not in header:
        raise SourceError(f"{name} has no column {column!r} (header: {header}).")
    index = header.index(column)
    rows = ((n, row[index] if index < len(row) else "") for n, row in enumerate(reader, 2))
    return Source(f"{name} column {column}", "line", rows)


def list_numbers(numbers: Iterable[Any], description: str = "a list") -> Source:
    """Numbers given in code or on the command line; ``where`` is the 1-based position."""
    return Source(description, "item", enumerate(numbers, 1))


# -- ingesting -----------------------------------------------------------------------------


def _stage_and_insert(job: BulkSMSJob, numbers: Iterator[str], size: int) -> tuple[int, int]:
    """Write the valid numbers to ``BulkRecipient``, distinct, in batches of ``size``.

    The numbers go first to an unindexed temporary table (cheap appends), then one
    ``INSERT ... SELECT`` keeps the first of each number, in arrival order, and numbers
    the batches with a window function: the database does the deduplication, Python
    memory stays flat, and every batch but the last is full. Returns (valid, distinct).
    """
    db = router.db_for_write(BulkRecipient)
    connection = connections[db]
    qn = connection.ops.quote_name
    stage = qn(f"textflow_bulk_stage_{job.pk}")
    table = qn(BulkRecipient._meta.db_table)
    seen = 0
    # Identifiers are quoted by the backend; values are parameters: no user input in SQL.
    with transaction.atomic(using=db), connection.cursor() as cursor:
        cursor.execute(f"CREATE TEMPORARY TABLE {stage} (seq BIGINT, phone_number VARCHAR(16))")
        insert = f"INSERT INTO {stage} (seq, phone_number) VALUES (%s, %s)"  # noqa: S608
        chunk: list[tuple[int, str]] = []
        for number in numbers:
            chunk.append((seen, number))
            seen += 1
            if len(chunk) >= INGEST_CHUNK:
                cursor.executemany(insert, chunk)
                chunk.clear()
        if chunk:
            cursor.executemany(insert, chunk)
        # Whole-number division: "/" on SQLite and PostgreSQL integers, "DIV" on MySQL.
        div = "DIV" if connection.vendor == "mysql" else "/"
        cursor.execute(
            f"INSERT INTO {table} (job_id, phone_number, batch) "  # noqa: S608
            f"SELECT %s, phone_number, (ROW_NUMBER() OVER (ORDER BY first_seq) - 1) {div} %s "
            f"FROM (SELECT phone_number, MIN(seq) AS first_seq FROM {stage} "
            f"GROUP BY phone_number) distinct_numbers",
            [job.pk, size],
        )
        cursor.execute(f"DROP TABLE {stage}")
    distinct = BulkRecipient.objects.using(db).filter(job=job).count()
    return seen, distinct


def create_job(
    *,
    text: str,
    numbers: Iterable[Any] | None = None,
    source: Source | None = None,
    batch_size: int | None = None,
    strict: bool = False,
) -> BulkSMSJob:
    """Record a job and its distinct, valid recipients; nothing is sent yet.

    Give ``numbers`` (plain values) or a ``source`` (:func:`model_numbers`,
    :func:`file_numbers`, :func:`list_numbers`). ``None`` and blank values are ignored;
    invalid ones are counted, with a few samples; duplicates are counted. ``strict``
    validates E.164 values fully (see :func:`phone.bulk_normalizer`).

    Raises:
        ValueError: empty ``text`` or a ``batch_size`` below 1.
    """
    if not isinstance(text, str) or not text.strip():
        raise ValueError("The text is empty.")
    size = batch_size or conf.BULK_BATCH_SIZE
    if size < 1:
        raise ValueError("The batch size must be at least 1.")
    source = source if source is not None else list_numbers(numbers or ())
    normalise = phone.bulk_normalizer(strict=strict)
    job = BulkSMSJob.objects.create(text=text, source=source.description[:500], batch_size=size)
    invalid = 0
    samples: list[str] = []

    def valid_numbers() -> Iterator[str]:
        nonlocal invalid
        for where, value in source.rows:
            if value is None:
                continue
            if not isinstance(value, str):
                value = str(value)
            try:
                yield normalise(value)
            except phone.InvalidPhoneNumberError as err:
                if not value.strip():
                    continue  # blank lines and empty fields are not errors
                invalid += 1
                if len(samples) < INVALID_SAMPLES:
                    samples.append(f"{source.label} {where}: {value[:40]!r} ({err.code})")

    valid, total = _stage_and_insert(job, valid_numbers(), size)
    batches = [
        BulkBatch(job=job, index=i, size=min(size, total - i * size))
        for i in range((total + size - 1) // size)
    ]
    BulkBatch.objects.bulk_create(batches, batch_size=1000)
    job.total = total
    job.invalid = invalid
    job.duplicates = valid - total
    job.invalid_samples = samples
    job.batches_total = len(batches)
    job.status = BulkSMSJob.Status.READY
    job.save()
    return job


# -- sending -------------------------------------------------------------------------------


def _stop(job_id: int, error: TextFlowError) -> BulkSMSJob:
    BulkSMSJob.objects.filter(pk=job_id).update(
        status=BulkSMSJob.Status.STOPPED, last_error=str(error)[:2000]
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
        raise InvalidPhoneNumber("TextFlow refused a number of the batch", status=400)
    BulkRecipient.objects.filter(job_id=job_id, phone_number__in=dropped).delete()
    BulkSMSJob.objects.filter(pk=job_id).update(
        invalid=F("invalid") + len(dropped), total=F("total") - len(dropped)
    )
    if keep:
        backend.bulk_sms(keep, text)
    return len(keep)


class _HotSQL:
    """The statements run once per batch, as plain SQL: at two thousand batches a job, the
    ORM's query building costs more than the database work."""

    def __init__(self) -> None:
        connection = connections[router.db_for_write(BulkBatch)]
        qn = connection.ops.quote_name
        self.connection = connection
        batches, jobs = qn(BulkBatch._meta.db_table), qn(BulkSMSJob._meta.db_table)
        recipients = qn(BulkRecipient._meta.db_table)
        # Table names come from the models, quoted by the backend; values are parameters.
        self.numbers = (
            f"SELECT phone_number FROM {recipients} "  # noqa: S608
            "WHERE job_id = %s AND batch = %s ORDER BY id"
        )
        self.claim = f"UPDATE {batches} SET status = %s WHERE id = %s AND status = %s"  # noqa: S608
        self.accept_batch = (
            f"UPDATE {batches} SET status = %s, sent_at = %s, error = '' "  # noqa: S608
            "WHERE id = %s"
        )
        self.count_sent = (
            f"UPDATE {jobs} SET sent = sent + %s, "  # noqa: S608
            "batches_sent = batches_sent + 1 WHERE id = %s"
        )


def _claim(sql: _HotSQL, batch_id: int) -> bool:
    """Mark a pending batch ``sending`` (committed before anything is sent: a process that
    dies after sending leaves it ``sending``, which a resume reads as uncertain)."""
    with sql.connection.cursor() as cursor:
        cursor.execute(sql.claim, [BulkBatch.Status.SENDING, batch_id, BulkBatch.Status.PENDING])
        return bool(cursor.rowcount == 1)


def _deliver(sql: _HotSQL, backend: BaseBackend, job: BulkSMSJob, batch_id: int, index: int) -> int:
    """Send one claimed batch. Returns how many recipients TextFlow accepted.

    Raises:
        BulkJobStopped: as :func:`send_batch`.
    """
    with sql.connection.cursor() as cursor:
        cursor.execute(sql.numbers, [job.pk, index])
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
            except InvalidPhoneNumber:
                sent = _send_valid_part(backend, job.pk, numbers, job.text)
                break
    except TextFlowError as err:
        uncertain = err.maybe_sent
        BulkBatch.objects.filter(pk=batch_id).update(
            status=BulkBatch.Status.UNCERTAIN if uncertain else BulkBatch.Status.PENDING,
            error=str(err)[:2000],
        )
        if uncertain:
            BulkSMSJob.objects.filter(pk=job.pk).update(uncertain=F("uncertain") + len(numbers))
        logger.warning("Bulk job %s batch %s failed: %s", job.pk, index, err)
        raise BulkJobStopped(_stop(job.pk, err), err) from err
    return sent


def _accept(sql: _HotSQL, job_id: int, batch_id: int, sent: int, claim_next: int | None) -> bool:
    """Record an accepted batch and its count in one transaction, claiming the next batch
    in the same commit when there is one (one durable write per batch instead of two).
    Returns whether ``claim_next`` was claimed."""
    with transaction.atomic(using=sql.connection.alias), sql.connection.cursor() as cursor:
        cursor.execute(sql.accept_batch, [BulkBatch.Status.ACCEPTED, timezone.now(), batch_id])
        cursor.execute(sql.count_sent, [sent, job_id])
        if claim_next is None:
            return False
        cursor.execute(sql.claim, [BulkBatch.Status.SENDING, claim_next, BulkBatch.Status.PENDING])
        return bool(cursor.rowcount == 1)


def send_batch(
    batch_id: int, *, backend: BaseBackend | None = None, job: BulkSMSJob | None = None
) -> int | None:
    """Claim one pending batch, send it, record the outcome. Returns how many recipients
    TextFlow accepted, or None when the batch was not pending (another worker has it, or it
    is done): it is then left alone. ``job`` spares a query when the caller has it.

    Raises:
        BulkJobStopped: TextFlow failed; the batch is ``uncertain`` if the request may
            have reached TextFlow, else ``pending`` again; the job is ``stopped``.
    """
    sql = _HotSQL()
    if not _claim(sql, batch_id):
        return None
    batch = BulkBatch.objects.get(pk=batch_id)
    job = job if job is not None else BulkSMSJob.objects.get(pk=batch.job_id)
    sent = _deliver(sql, backend or get_backend(), job, batch_id, batch.index)
    _accept(sql, job.pk, batch_id, sent, None)
    return sent


def _prepare(job_id: int, *, resend_uncertain: bool) -> BulkSMSJob:
    """Make a job ready to (re)start: batches left ``sending`` by a dead process become
    ``uncertain``; with ``resend_uncertain`` every uncertain batch is pending again."""
    with transaction.atomic():
        job = BulkSMSJob.objects.select_for_update().get(pk=job_id)
        batches = BulkBatch.objects.filter(job=job)
        orphans = batches.filter(status=BulkBatch.Status.SENDING)
        lost = orphans.aggregate(n=Sum("size"))["n"] or 0
        if lost:
            orphans.update(status=BulkBatch.Status.UNCERTAIN, error="the sender died mid-batch")
            job.uncertain += lost
        if resend_uncertain:
            batches.filter(status=BulkBatch.Status.UNCERTAIN).update(
                status=BulkBatch.Status.PENDING
            )
            job.uncertain = 0
        if job.status != BulkSMSJob.Status.FINISHED:
            job.status = BulkSMSJob.Status.RUNNING
        job.started_at = job.started_at or timezone.now()
        job.last_error = ""
        job.save()
    return job


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


def run_job(
    job_id: int,
    *,
    resend_uncertain: bool = False,
    progress: Callable[[int], None] | None = None,
) -> BulkSMSJob:
    """Send every pending batch of a job, in order, in this process; resumes a stopped job.

    ``progress`` is called after each batch with the number of recipients sent so far.

    Raises:
        BulkJobStopped: on a TextFlow failure (the job is saved as ``stopped``).
    """
    job = _prepare(job_id, resend_uncertain=resend_uncertain)
    backend = get_backend()
    sql = _HotSQL()
    pending = BulkBatch.objects.filter(job_id=job_id, status=BulkBatch.Status.PENDING)
    sent = job.sent
    last_index = -1
    while True:
        # Pages of ids keep memory flat however many batches the job has.
        page = list(
            pending.filter(index__gt=last_index).order_by("index").values_list("id", "index")[:1000]
        )
        if not page:
            break
        claimed = False
        for position, (batch_id, index) in enumerate(page):
            last_index = index
            if not claimed and not _claim(sql, batch_id):
                continue  # another sender has it
            following = page[position + 1][0] if position + 1 < len(page) else None
            count = _deliver(sql, backend, job, batch_id, index)
            claimed = _accept(sql, job.pk, batch_id, count, following)
            sent += count
            if progress is not None:
                progress(sent)
    finish_if_done(job_id)
    job.refresh_from_db()
    return job


def enqueue_job(job_id: int, *, resend_uncertain: bool = False) -> int:
    """Queue every pending batch as a Django task (``textflow_django.tasks.send_bulk_batch``)
    for whatever workers the project runs. Returns how many were queued."""
    from .tasks import send_bulk_batch

    _prepare(job_id, resend_uncertain=resend_uncertain)
    queued = 0
    ids = BulkBatch.objects.filter(job_id=job_id, status=BulkBatch.Status.PENDING).order_by("index")
    for batch_id in ids.values_list("id", flat=True).iterator(chunk_size=2000):
        send_bulk_batch.enqueue(batch_id)
        queued += 1
    if not queued:
        finish_if_done(job_id)
    return queued
