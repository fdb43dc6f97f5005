"""Ingest: a recipient source becomes a recorded job of distinct, valid numbers in batches.

:func:`create_job` streams a :class:`~textflow_django.bulk.sources.Source` in, normalises
each value (the fast path for E.164, :func:`textflow_django.phone.bulk_normalizer`), skips
and counts the invalid ones (keeping a few samples), and writes the distinct numbers to
``BulkRecipient`` rows, each tagged with its batch; then one ``BulkBatch`` row per batch.
Deduplication is done by the database, so memory stays flat whatever the list's size, and
so is leaving out the numbers on the opt-out list (``OptOut``): an anti-join in the same
``INSERT ... SELECT``, then one count of the numbers it left out. The job keeps the SMS
its recipients get, the text with the opt-out footer (:func:`~textflow_django.bulk._text.compose`).
It is all one transaction: a source that fails half-way leaves no job behind. Nothing is
sent here; the job is left ``ready`` for :mod:`textflow_django.bulk.running`.

The opt-out list must live in the database the bulk tables do (a router sends the app's
models together): the anti-join reads it there.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from django.db import connections, router, transaction

from .. import phone
from ..conf import MAX_BATCH_SIZE, conf
from ..models import BulkBatch, BulkRecipient, BulkSMSJob, OptOut
from ._text import compose, storable
from .sources import Source, list_numbers

__all__ = ["Ingested", "ValidNumbers", "check_batch_size", "create_job", "ingest_job"]

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


class ValidNumbers:
    """A source's values as E.164 numbers, read lazily: the one reading of a list of numbers
    (a bulk job's recipients, ``textflow_optout import``).

    Iterating yields each valid value normalised (``phone.bulk_normalizer``; ``strict``
    skips its E.164 fast path), in order, duplicates included. ``None`` and blank values
    are skipped; invalid ones are counted in :attr:`invalid`, the first
    :data:`INVALID_SAMPLES` of them described in :attr:`samples` (where, the value with any
    number in it masked and cut to 40 characters, why). Once the source is read,
    :meth:`count_missing` adds a CSV's rows without the column to both.
    ``countries=False`` reads numbers of every country (``ALLOWED_COUNTRIES``/
    ``BLOCKED_COUNTRIES`` left aside: the opt-out list takes any number), through full
    validation.
    """

    def __init__(self, source: Source, *, strict: bool = False, countries: bool = True) -> None:
        self.source = source
        self.strict = strict
        self.countries = countries
        self.invalid = 0
        self.samples: list[str] = []

    def __iter__(self) -> Iterator[str]:
        normalise: Callable[[str], str] = (
            phone.bulk_normalizer(strict=self.strict)
            if self.countries
            else functools.partial(phone.normalize, check_countries=False)
        )
        source, samples = self.source, self.samples
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
                self.invalid += 1
                if len(samples) < INVALID_SAMPLES:
                    # Stored and kept as long as the job: a number refused (its country, no
                    # country code) is still a person's number, so it is masked.
                    shown = phone.mask_numbers(value)[:40]
                    samples.append(f"{source.label} {where}: {shown!r} ({err.code})")

    def count_missing(self) -> None:
        """Count a CSV source's rows without the column as invalid (numbers lost), with one
        sample naming their first lines. Call once, after reading."""
        missing = self.source.missing
        if missing is not None and missing.count:
            self.invalid += missing.count
            self.samples.insert(0, f"{storable(self.source.description)}: {missing.report()}")


@dataclass(frozen=True)
class Ingested:
    """What :func:`ingest_job` did: the job, and what it counted that the job does not
    keep."""

    job: BulkSMSJob
    #: Distinct valid numbers left out because they are on the opt-out list.
    opted_out: int


def _stage_and_insert(job: BulkSMSJob, numbers: Iterator[str], size: int) -> tuple[int, int, int]:
    """Write the valid numbers to ``BulkRecipient``, distinct and not opted out, in batches
    of ``size``.

    The numbers go first to an unindexed temporary table (cheap appends), then one
    ``INSERT ... SELECT`` keeps the first of each number, in arrival order, leaves out the
    numbers on the opt-out list (``NOT EXISTS`` on its unique index), and numbers the
    batches with a window function over what is left: the database does the deduplication
    and the opt-outs, Python memory stays flat, and every batch but the last is full. One
    more query counts the distinct numbers the list left out. Returns (valid, recipients,
    opted out).
    """
    db = router.db_for_write(BulkRecipient)
    connection = connections[db]
    qn = connection.ops.quote_name
    stage = qn(f"textflow_bulk_stage_{job.pk}")
    table = qn(BulkRecipient._meta.db_table)
    optout = qn(OptOut._meta.db_table)
    optout_number = qn(str(OptOut._meta.get_field("phone_number").column))
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
            f"GROUP BY phone_number) distinct_numbers "
            f"WHERE NOT EXISTS (SELECT 1 FROM {optout} o "
            f"WHERE o.{optout_number} = distinct_numbers.phone_number)",
            [job.pk, size],
        )
        cursor.execute(
            f"SELECT COUNT(DISTINCT s.phone_number) FROM {stage} s "  # noqa: S608
            f"INNER JOIN {optout} o ON o.{optout_number} = s.phone_number"
        )
        (opted_out,) = cursor.fetchone()
        cursor.execute(f"DROP TABLE {stage}")
    distinct = BulkRecipient.objects.using(db).filter(job=job).count()
    return seen, distinct, int(opted_out)


def create_job(
    *,
    text: str,
    numbers: Iterable[Any] | None = None,
    source: Source | None = None,
    batch_size: int | None = None,
    strict: bool = False,
) -> BulkSMSJob:
    """Record a job and its distinct, valid recipients not on the opt-out list; nothing is
    sent yet. :func:`ingest_job` with the job alone (see there)."""
    return ingest_job(
        text=text, numbers=numbers, source=source, batch_size=batch_size, strict=strict
    ).job


def ingest_job(
    *,
    text: str,
    numbers: Iterable[Any] | None = None,
    source: Source | None = None,
    batch_size: int | None = None,
    strict: bool = False,
) -> Ingested:
    """Record a job and its distinct, valid recipients not on the opt-out list; nothing is
    sent yet. Returns the job and how many numbers the opt-out list left out.

    Give ``numbers`` (plain values) or a ``source`` (see :mod:`textflow_django.bulk.sources`:
    ``model_numbers``, ``file_numbers``, ``list_numbers``). ``None`` and blank values are ignored;
    invalid ones are counted, with a few samples; duplicates are counted; CSV rows without
    the column are counted as invalid, with one sample naming their first lines. Numbers
    on the opt-out list are left out (counted in the result; a duplicate of one is a
    duplicate). The job keeps the SMS :func:`~textflow_django.bulk._text.compose` makes of
    ``text``: with the opt-out footer in the active language (in a request, the request's
    language; in ``manage.py``, ``settings.LANGUAGE_CODE``).
    ``strict`` skips the E.164 fast path (same answers, slower; see
    :func:`phone.bulk_normalizer`). ``batch_size`` defaults to
    ``TEXTFLOW["BULK_BATCH_SIZE"]``. The source's description is kept with anything a
    database would refuse escaped.

    One transaction: if reading the source fails, no job is left behind.

    Raises:
        ValueError: a ``text`` that :func:`~textflow_django.bulk.check_text` refuses (empty,
            a control character, more SMS segments than ``MAX_TEXT_LENGTH`` with the
            footer), or a batch size outside 1..:data:`MAX_BATCH_SIZE`.
        SourceError: the source failed while being read.
    """
    sms = compose(text)
    size = check_batch_size(conf.BULK_BATCH_SIZE if batch_size is None else batch_size)
    source = source if source is not None else list_numbers(numbers or ())
    reading = ValidNumbers(source, strict=strict)

    with transaction.atomic(using=router.db_for_write(BulkSMSJob)):
        job = BulkSMSJob.objects.create(
            text=sms, source=storable(source.description)[:500], batch_size=size
        )
        valid, total, opted_out = _stage_and_insert(job, iter(reading), size)
        reading.count_missing()
        batches = [
            BulkBatch(job=job, index=i, size=min(size, total - i * size))
            for i in range((total + size - 1) // size)
        ]
        BulkBatch.objects.bulk_create(batches, batch_size=1000)
        job.total = total
        job.invalid = reading.invalid
        job.duplicates = valid - total - opted_out
        job.opted_out = opted_out
        job.invalid_samples = reading.samples
        job.batches_total = len(batches)
        job.status = BulkSMSJob.Status.READY
        job.save()
    return Ingested(job, opted_out)
