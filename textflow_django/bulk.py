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
from django.db.models import Count, F, Q, Sum
from django.utils import timezone

from . import phone, signals
from .backends import get_backend
from .backends.base import BaseBackend
from .conf import conf
from .exceptions import InvalidPhoneNumber, TextFlowError, TextFlowRateLimited
from .models import BulkBatch, BulkRecipient, BulkSMSJob

__all__ = [
    "BulkJobStopped",
    "SourceError",
    "create_job",
    "enqueue_job",
    "file_numbers",
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
class Recipient:
    """A raw value and where it came from (a line number or a primary key), for reports."""

    value: Any
    where: str


def model_numbers(
    label: str, field: str, filters: Iterable[str] = ()
) -> tuple[str, Iterator[Recipient]]:
    """Numbers from ``app_label.Model.field``, read in primary-key pages, never all at once.

    ``filters`` are ``"lookup=value"`` strings. Everything is checked before the iterator is
    returned. Returns a description of the source and the iterator.

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

    def pages() -> Iterator[Recipient]:
        last = None
        while True:
            page = queryset.order_by(pk)
            if last is not None:
                page = page.filter(**{f"{pk}__gt": last})
            rows = list(page.values_list(pk, field)[:MODEL_PAGE])
            for key, value in rows:
                yield Recipient(value, f"pk {key}")
            if len(rows) < MODEL_PAGE:
                return
            last = rows[-1][0]

    description = f"{label}.{field}" + (f" where {', '.join(filters)}" if lookups else "")
    return description, pages()


def file_numbers(
    stream: TextIO, *, name: str, column: str | None = None
) -> tuple[str, Iterator[Recipient]]:
    """Numbers from a text stream: one per line, or the ``column`` of a CSV with a header.

    Raises:
        SourceError: the CSV has no such column.
    """
    if column is None:

        def lines() -> Iterator[Recipient]:
            for number, line in enumerate(stream, 1):
                yield Recipient(line.strip(), f"line {number}")

        return name, lines()
    reader = csv.reader(stream)
    header = next(reader, None)
    if header is None or column not in header:
        raise SourceError(f"{name} has no column {column!r} (header: {header}).")
    index = header.index(column)

    def rows() -> Iterator[Recipient]:
        for number, row in enumerate(reader, 2):
            yield Recipient(row[index] if index < len(row) else "", f"line {number}")

    return f"{name} column {column}", rows()


def list_numbers(numbers: Iterable[Any]) -> Iterator[Recipient]:
    """Numbers given in code or on the command line; ``where`` is the 1-based position."""
    for position, value in enumerate(numbers, 1):
        yield Recipient(value, f"item {position}")


# -- ingesting -----------------------------------------------------------------------------


def _insert_sql(table: str, vendor: str) -> str | None:
    """An INSERT that skips numbers already in the job, for executemany; None: use the ORM."""
    columns = "(job_id, phone_number, batch)"
    if vendor in ("sqlite", "postgresql"):
        # The table name comes from the model and is quoted by the backend: no user input.
        return f"INSERT INTO {table} {columns} VALUES (%s, %s, %s) ON CONFLICT DO NOTHING"  # noqa: S608
    if vendor == "mysql":
        return f"INSERT IGNORE INTO {table} {columns} VALUES (%s, %s, %s)"  # noqa: S608
    return None


def create_job(
    *,
    text: str,
    numbers: Iterable[Any] | None = None,
    recipients: Iterable[Recipient] | None = None,
    source: str = "",
    batch_size: int | None = None,
    strict: bool = False,
) -> BulkSMSJob:
    """Record a job and its distinct, valid recipients; nothing is sent yet.

    Give ``numbers`` (plain values) or ``recipients`` (from :func:`model_numbers` /
    :func:`file_numbers`). ``None`` and blank values are ignored; invalid ones are counted
    with a few samples; duplicates are counted. ``strict`` validates E.164 values fully
    (see :func:`phone.bulk_normalizer`).

    Raises:
        ValueError: empty ``text`` or a ``batch_size`` below 1.
    """
    if not isinstance(text, str) or not text.strip():
        raise ValueError("The text is empty.")
    size = batch_size or conf.BULK_BATCH_SIZE
    if size < 1:
        raise ValueError("The batch size must be at least 1.")
    items = recipients if recipients is not None else list_numbers(numbers or ())
    normalise = phone.bulk_normalizer(strict=strict)
    job = BulkSMSJob.objects.create(text=text, source=source[:500], batch_size=size)
    db = router.db_for_write(BulkRecipient)
    connection = connections[db]
    sql = _insert_sql(connection.ops.quote_name(BulkRecipient._meta.db_table), connection.vendor)

    valid = invalid = 0
    samples: list[str] = []
    chunk: list[tuple[int, str, int]] = []

    def flush() -> None:
        if not chunk:
            return
        with transaction.atomic(using=db):
            if sql is not None:
                with connection.cursor() as cursor:
                    cursor.executemany(sql, chunk)
            else:  # pragma: no cover - other databases
                BulkRecipient.objects.using(db).bulk_create(
                    [BulkRecipient(job_id=j, phone_number=n, batch=b) for j, n, b in chunk],
                    ignore_conflicts=True,
                )
        chunk.clear()

    for item in items:
        value = item.value
        if value is None or (isinstance(value, str) and not value.strip()):
            continue
        try:
            number = normalise(value if isinstance(value, str) else str(value))
        except phone.InvalidPhoneNumberError as err:
            invalid += 1
            if len(samples) < INVALID_SAMPLES:
                samples.append(f"{item.where}: {str(value)[:40]!r} ({err.code})")
            continue
        # Batches are cut from the order of arrival; duplicates leave small gaps, so a
        # batch can fall short of ``size`` but never exceed it.
        chunk.append((job.pk, number, valid // size))
        valid += 1
        if len(chunk) >= INGEST_CHUNK:
            flush()
    flush()

    sizes = (
        BulkRecipient.objects.using(db)
        .filter(job=job)
        .values("batch")
        .annotate(n=Count("id"))
        .order_by("batch")
    )
    batches = [BulkBatch(job=job, index=row["batch"], size=row["n"]) for row in sizes]
    BulkBatch.objects.using(db).bulk_create(batches, batch_size=1000)
    total = sum(b.size for b in batches)
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


def _send_valid_part(backend: BaseBackend, batch: BulkBatch, numbers: list[str], text: str) -> int:
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
    BulkRecipient.objects.filter(job_id=batch.job_id, phone_number__in=dropped).delete()
    BulkSMSJob.objects.filter(pk=batch.job_id).update(
        invalid=F("invalid") + len(dropped), total=F("total") - len(dropped)
    )
    if keep:
        backend.bulk_sms(keep, text)
    return len(keep)


def send_batch(batch_id: int, *, backend: BaseBackend | None = None) -> bool:
    """Claim one pending batch, send it, record the outcome. Returns False when the batch
    was not pending (another worker has it, or it is done): it is then left alone.

    Raises:
        BulkJobStopped: TextFlow failed; the batch is ``uncertain`` if the request may
            have reached TextFlow, else ``pending`` again; the job is ``stopped``.
    """
    claimed = BulkBatch.objects.filter(pk=batch_id, status=BulkBatch.Status.PENDING).update(
        status=BulkBatch.Status.SENDING
    )
    if not claimed:
        return False
    batch = BulkBatch.objects.select_related("job").get(pk=batch_id)
    job = batch.job
    numbers = list(
        BulkRecipient.objects.filter(job_id=job.pk, batch=batch.index)
        .order_by("id")
        .values_list("phone_number", flat=True)
    )
    backend = backend or get_backend()
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
                sent = _send_valid_part(backend, batch, numbers, job.text)
                break
    except TextFlowError as err:
        uncertain = err.maybe_sent
        BulkBatch.objects.filter(pk=batch_id).update(
            status=BulkBatch.Status.UNCERTAIN if uncertain else BulkBatch.Status.PENDING,
            error=str(err)[:2000],
        )
        if uncertain:
            BulkSMSJob.objects.filter(pk=job.pk).update(uncertain=F("uncertain") + len(numbers))
        logger.warning("Bulk job %s batch %s failed: %s", job.pk, batch.index, err)
        raise BulkJobStopped(_stop(job.pk, err), err) from err
    with transaction.atomic():
        BulkBatch.objects.filter(pk=batch_id).update(
            status=BulkBatch.Status.ACCEPTED, sent_at=timezone.now(), error=""
        )
        BulkSMSJob.objects.filter(pk=job.pk).update(
            sent=F("sent") + sent, batches_sent=F("batches_sent") + 1
        )
    return True


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
    progress: Callable[[BulkSMSJob], None] | None = None,
) -> BulkSMSJob:
    """Send every pending batch of a job, in order, in this process; resumes a stopped job.

    ``progress`` is called with the refreshed job after each batch.

    Raises:
        BulkJobStopped: on a TextFlow failure (the job is saved as ``stopped``).
    """
    job = _prepare(job_id, resend_uncertain=resend_uncertain)
    backend = get_backend()
    pending = BulkBatch.objects.filter(job_id=job_id, status=BulkBatch.Status.PENDING)
    last_index = -1
    while True:
        # Pages of ids keep memory flat however many batches the job has.
        page = list(
            pending.filter(index__gt=last_index).order_by("index").values_list("id", "index")[:1000]
        )
        if not page:
            break
        for batch_id, index in page:
            send_batch(batch_id, backend=backend)
            last_index = index
            if progress is not None:
                progress(BulkSMSJob.objects.get(pk=job_id))
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


def open_batches(job_id: int) -> int:
    """Batches of the job still pending or in flight."""
    return BulkBatch.objects.filter(
        Q(status=BulkBatch.Status.PENDING) | Q(status=BulkBatch.Status.SENDING), job_id=job_id
    ).count()
