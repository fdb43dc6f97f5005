"""Bulk SMS: recipient sources to deduplicated batches, sent and tracked so a job resumes.

The life of a job:

1. :func:`create_job` streams the recipients in, normalises each (fast path for E.164),
   skips and counts invalid ones, and writes the distinct numbers to ``BulkRecipient``
   rows, each tagged with its batch. Deduplication is the unique constraint of that table,
   so memory stays flat whatever the list's size. It is all one transaction: a source that
   fails half-way leaves no job behind.
2. :func:`run_job` (inline) or :func:`enqueue_job` (Django Tasks workers) sends the pending
   batches, both through :func:`send_batch`, the one function that sends a batch. A batch
   is claimed in the database before it is sent, and only while its job is running (so a
   batch delivered twice to workers is sent once, and none is sent after the job stopped),
   then marked accepted, with the job's counters, right after TextFlow accepts it.
3. A batch whose outcome is unknown (the process died after sending it, a timeout, a 5xx)
   is ``uncertain`` and is not sent again unless the operator asks
   (``resend_uncertain=True``). A failure that certainly sent nothing leaves it pending.
   Either way the job stops, resumable with :func:`run_job` or :func:`enqueue_job`; its
   other batches stay pending.
"""

from __future__ import annotations

import csv
import functools
import logging
import re
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, NamedTuple, TextIO

from django.apps import apps
from django.core.exceptions import FieldDoesNotExist, FieldError, ValidationError
from django.db import DatabaseError, connections, models, router, transaction
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.backends.utils import CursorWrapper
from django.db.models import F, Sum
from django.utils import timezone

from .. import phone, signals
from ..backends import get_backend
from ..backends.base import BaseBackend
from ..conf import MAX_BATCH_SIZE, conf
from ..exceptions import InvalidPhoneNumber, TextFlowError, TextFlowRateLimited
from ..models import BulkBatch, BulkRecipient, BulkSMSJob

__all__ = [
    "MAX_BATCH_SIZE",
    "BatchOutcome",
    "BulkJobStopped",
    "Source",
    "SourceError",
    "check_batch_size",
    "create_job",
    "enqueue_job",
    "file_numbers",
    "finish_if_done",
    "list_numbers",
    "model_numbers",
    "open_numbers_file",
    "run_job",
    "send_batch",
    "stop_reason",
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
#: Batch ids read per page by :func:`run_job` (memory stays flat however many batches).
BATCH_PAGE = 1000


class SourceError(ValueError):
    """A recipient source cannot be read (unknown model, field, filter, column, file, or a
    file that is not UTF-8 or not valid CSV)."""


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
    return str(error) if error is not None else job.last_error or "stopped by another sender"


def check_batch_size(size: int) -> int:
    """Return ``size`` if it is a whole number from 1 to :data:`MAX_BATCH_SIZE`.

    Raises:
        ValueError: saying the allowed range.
    """
    if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= MAX_BATCH_SIZE:
        raise ValueError(f"The batch size must be from 1 to {MAX_BATCH_SIZE:,}, not {size!r}.")
    return size


# -- sources -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Source:
    """Where recipients come from: a description for the job, and ``(where, value)`` rows.

    ``where`` (a primary key, a line number, a position) is named by ``label`` only when a
    report needs it, so the hot loop builds no strings. Reading the rows may raise
    :class:`SourceError` (a file found not to be UTF-8 half-way, a filter the database
    refuses when it runs).
    """

    description: str
    label: str
    rows: Iterator[tuple[object, Any]]


def model_numbers(label: str, field: str, filters: Iterable[str] = ()) -> Source:
    """Numbers from ``app_label.Model.field``, read in primary-key pages, never all at once.

    ``filters`` are ``"lookup=value"`` strings. The model, field and lookups are checked
    before the source is returned; a filter only the database can refuse (a bad regular
    expression, say) raises :class:`SourceError` from the rows, naming the filters.

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
    description = f"{label}.{field}" + (f" where {', '.join(filters)}" if lookups else "")

    def pages() -> Iterator[tuple[object, Any]]:
        last = None
        while True:
            page = queryset.order_by(pk)
            if last is not None:
                page = page.filter(**{f"{pk}__gt": last})
            try:
                rows = list(page.values_list(pk, field)[:MODEL_PAGE])
            except DatabaseError as err:
                # The lookups compiled, so the database refused them as they ran.
                raise SourceError(
                    f"Reading {description} failed (check the filters): {err}"
                ) from err
            yield from rows
            if len(rows) < MODEL_PAGE:
                return
            last = rows[-1][0]

    return Source(description, "pk", pages())


def open_numbers_file(name: str) -> TextIO:
    """Open a file of numbers (``"-"``: standard input) the way :func:`file_numbers` wants:
    UTF-8, a leading byte-order mark dropped (Excel's "CSV UTF-8" writes one), bytes that
    are not UTF-8 kept as escapes so they are reported with their line, universal newlines
    left to the CSV reader. The caller closes it (closing standard input's leaves the
    process's stdin open).

    Raises:
        OSError: the file cannot be opened (``IsADirectoryError`` for a directory).
    """
    source: str | int = name
    if name == "-":
        try:
            source = sys.stdin.fileno()
        except (AttributeError, OSError, ValueError):
            return sys.stdin  # replaced by a stream without a descriptor (tests, embedding)
    # The caller closes it; closefd=False keeps the process's stdin open.
    return open(  # noqa: SIM115, PTH123
        source,
        encoding="utf-8-sig",
        errors="surrogateescape",
        newline="",
        closefd=isinstance(source, str),
    )


# Bytes that are not UTF-8, as ``errors="surrogateescape"`` decodes them.
_NOT_UTF8 = re.compile("[\udc80-\udcff]")


def _text_lines(stream: TextIO, name: str) -> Iterator[str]:
    """The stream's lines, raising SourceError for the first one that is not UTF-8."""
    number = 0
    try:
        for number, line in enumerate(stream, 1):  # noqa: B007 - read after the loop
            # Numbers are ASCII: the search runs only for the rare line that is not.
            if not line.isascii() and _NOT_UTF8.search(line):
                raise SourceError(f"{name} line {number} is not UTF-8 text.")
            yield line
    except UnicodeDecodeError as err:
        # A stream opened with errors="strict" fails a chunk at a time: the line is a bound.
        raise SourceError(
            f"{name} is not UTF-8 text (at line {number + 1} or after: {err.reason})."
        ) from err


def file_numbers(stream: TextIO, *, name: str, column: str | None = None) -> Source:
    """Numbers from a text stream: one per line, or the ``column`` of a CSV with a header.

    Open files with :func:`open_numbers_file`. ``where`` is the line number (for a CSV
    row spanning lines, its last line).

    Raises:
        SourceError: the CSV has no such column, or its header cannot be read. Reading the
            rows raises it too, naming ``name`` and the line: text that is not UTF-8, or
            broken CSV (a field over ``csv.field_size_limit()``, say).
    """
    lines = _text_lines(stream, name)
    if column is None:
        return Source(name, "line", ((n, line.strip()) for n, line in enumerate(lines, 1)))
    reader = csv.reader(lines)
    try:
        header = next(reader, None)
    except csv.Error as err:
        raise SourceError(f"{name} line {reader.line_num}: not valid CSV ({err}).") from err
    if header is None or column not in header:
        raise SourceError(f"{name} has no column {column!r} (header: {header}).")
    index = header.index(column)

    def rows() -> Iterator[tuple[object, Any]]:
        try:
            for row in reader:
                yield reader.line_num, row[index] if index < len(row) else ""
        except csv.Error as err:
            raise SourceError(f"{name} line {reader.line_num}: not valid CSV ({err}).") from err

    return Source(f"{name} column {column}", "line", rows())


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
    validates E.164 values fully (see :func:`phone.bulk_normalizer`). ``batch_size``
    defaults to ``TEXTFLOW["BULK_BATCH_SIZE"]``.

    One transaction: if reading the source fails, no job is left behind.

    Raises:
        ValueError: empty ``text`` or a batch size outside 1..:data:`MAX_BATCH_SIZE`.
        SourceError: the source failed while being read.
    """
    if not isinstance(text, str) or not text.strip():
        raise ValueError("The text is empty.")
    size = check_batch_size(conf.BULK_BATCH_SIZE if batch_size is None else batch_size)
    source = source if source is not None else list_numbers(numbers or ())
    normalise = phone.bulk_normalizer(strict=strict)
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

    with transaction.atomic(using=router.db_for_write(BulkSMSJob)):
        job = BulkSMSJob.objects.create(text=text, source=source.description[:500], batch_size=size)
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
        logger.warning("Bulk job %s, batch id %s, failed: %s", job.pk, batch_id, err)
        raise BulkJobStopped(_stop(job.pk, err), err) from err
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
    function that sends a batch, whether :func:`run_job` calls it inline or the task
    ``textflow_django.tasks.send_bulk_batch`` in a worker.

    Returns None, sending nothing, when the batch cannot be claimed: it is not pending
    (another sender has it, or it is done) or its job is not running (stopped, finished,
    not started): a stopped job's batches stay pending for a resume. The job's status is
    checked in the same statement that claims the batch, so once a stop has committed no
    sender starts another batch. Senders already past their claim still send theirs:
    when TextFlow fails, at most one batch per sender in flight (one inline; one per
    worker process) ends ``uncertain``.

    Options for a sender working through a job (:func:`run_job`): ``job`` is the batch's
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


def _prepare(job_id: int, *, resend_uncertain: bool) -> BulkSMSJob:
    """Make a job ready to (re)start, ``running``: batches left ``sending`` by a dead
    process become ``uncertain``; with ``resend_uncertain`` every uncertain batch is
    pending again. A finished job stays finished unless that reopened a batch (it then
    finishes again, and ``bulk_job_finished`` is sent again)."""
    with transaction.atomic(using=router.db_for_write(BulkSMSJob)):
        job = BulkSMSJob.objects.select_for_update().get(pk=job_id)
        batches = BulkBatch.objects.filter(job=job)
        orphans = batches.filter(status=BulkBatch.Status.SENDING)
        lost = orphans.aggregate(n=Sum("size"))["n"] or 0
        if lost:
            orphans.update(status=BulkBatch.Status.UNCERTAIN, error="the sender died mid-batch")
            job.uncertain += lost
        reopened = 0
        if resend_uncertain:
            reopened = batches.filter(status=BulkBatch.Status.UNCERTAIN).update(
                status=BulkBatch.Status.PENDING
            )
            job.uncertain = 0
        # Batches are claimed only while their job is running (see send_batch).
        if job.status != BulkSMSJob.Status.FINISHED or reopened:
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


def enqueue_job(job_id: int, *, resend_uncertain: bool = False) -> int:
    """Queue every pending batch as a Django task (``textflow_django.tasks.send_bulk_batch``)
    for whatever workers the project runs. Returns how many were queued.

    The tasks call :func:`send_batch`: once the job stops (TextFlow failed in one of them)
    the others send nothing and their batches stay pending for a resume."""
    from ..tasks import send_bulk_batch

    _prepare(job_id, resend_uncertain=resend_uncertain)
    queued = 0
    ids = BulkBatch.objects.filter(job_id=job_id, status=BulkBatch.Status.PENDING).order_by("index")
    for batch_id in ids.values_list("id", flat=True).iterator(chunk_size=2000):
        send_bulk_batch.enqueue(batch_id)
        queued += 1
    if not queued:
        finish_if_done(job_id)
    return queued
