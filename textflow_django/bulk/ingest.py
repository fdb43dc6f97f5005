"""Ingest: a recipient source becomes a recorded job of distinct, valid numbers in batches.

:func:`create_job` streams a :class:`~textflow_django.bulk.sources.Source` in, normalises
each value (the fast path for E.164, :func:`textflow_django.phone.bulk_normalizer`), skips
and counts the invalid ones (keeping a few samples), and writes the distinct numbers to
``BulkRecipient`` rows, each tagged with its batch; then one ``BulkBatch`` row per batch.
Deduplication is done by the database, so memory stays flat whatever the list's size. It
is all one transaction: a source that fails half-way leaves no job behind. Nothing is sent
here; the job is left ``ready`` for :mod:`textflow_django.bulk.running`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from django.db import connections, router, transaction

from .. import phone
from ..conf import MAX_BATCH_SIZE, conf
from ..models import BulkBatch, BulkRecipient, BulkSMSJob
from ._text import check_text, storable
from .sources import Source, list_numbers

__all__ = ["check_batch_size", "create_job"]

#: Rows written to the database per round trip while ingesting.
INGEST_CHUNK = 5000
#: Invalid inputs kept as examples for the report.
INVALID_SAMPLES = 10


def check_batch_size(size: int) -> int:
    """Return ``size`` if it is a whole number from 1 to :data:`MAX_BATCH_SIZE`.

    Raises:
        ValueError: saying the allowed range.
    """
    if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= MAX_BATCH_SIZE:
        raise ValueError(f"The batch size must be from 1 to {MAX_BATCH_SIZE:,}, not {size!r}.")
    return size


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

    Give ``numbers`` (plain values) or a ``source`` (see :mod:`textflow_django.bulk.sources`:
    ``model_numbers``, ``file_numbers``, ``list_numbers``). ``None`` and blank values are ignored;
    invalid ones are counted, with a few samples; duplicates are counted; CSV rows without
    the column are counted as invalid, with one sample naming their first lines.
    ``strict`` skips the E.164 fast path (same answers, slower; see
    :func:`phone.bulk_normalizer`). ``batch_size`` defaults to
    ``TEXTFLOW["BULK_BATCH_SIZE"]``. The source's description is kept with anything a
    database would refuse escaped.

    One transaction: if reading the source fails, no job is left behind.

    Raises:
        ValueError: a ``text`` that :func:`~textflow_django.bulk.check_text` refuses (empty,
            a control character, more SMS segments than ``MAX_TEXT_LENGTH``), or a batch
            size outside 1..:data:`MAX_BATCH_SIZE`.
        SourceError: the source failed while being read.
    """
    check_text(text)
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
        job = BulkSMSJob.objects.create(
            text=text, source=storable(source.description)[:500], batch_size=size
        )
        valid, total = _stage_and_insert(job, valid_numbers(), size)
        if source.missing is not None and source.missing.count:
            # Rows the column is missing from are recipients lost: count and name them.
            invalid += source.missing.count
            samples.insert(0, f"{storable(source.description)}: {source.missing.report()}")
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
