"""Retention: old rows deleted in small batches, from cron while the site serves
(``manage.py textflow_cleanup`` calls :func:`cleanup`).

What goes at ``now``, by kind, with ``TEXTFLOW["RETENTION"]`` (days; None keeps a kind
forever):

- ``verifications``: the ``PhoneVerification`` rows of whole calendar days in the site's time
  zone (``TIME_ZONE``, the insights' days) before the last ``VERIFICATIONS`` days: the codes
  sent before midnight starting the day ``VERIFICATIONS`` days before today. A row is kept
  ``VERIFICATIONS`` days at least. Before any of them is deleted, each of those days'
  codes sent and verified per country are written to ``VerificationDay`` (the insights read
  a day from there once it has totals), once per day: a day that has totals is never counted
  again, so a run cut short only resumes deleting, and of two runs at once the second to
  write a day's totals finds them written (the unique day and country) and keeps the first's.
- ``bulk_recipients`` and ``bulk_batches``: the ``BulkBatch`` rows, then the
  ``BulkRecipient`` rows, of the jobs ``finished`` more than ``BULK_RECIPIENTS`` days before
  ``now``. The ``BulkSMSJob`` row stays, with its counts (recipients, sent, uncertain,
  invalid, duplicates, batches): the job's record. Its batches go too, and first: a batch
  is one call of the job, meaningless without its recipients, and a resume that re-sent a
  cleaned job's uncertain batches would send them to nobody and count them accepted. A job's
  recipients go only once none of its batches is left, so a batch that is still there has
  all its recipients; and a job with fewer batches than ``batches_total`` is refused by a
  resume (``bulk.running``). So a finished job can be resumed (``--resend-uncertain``)
  within its retention only. A stopped job keeps its rows (it can be resumed). Every batch
  of a job's rows first locks the job's row, and only while it is still such a job (on
  PostgreSQL ``FOR UPDATE SKIP LOCKED``: a resume holding it makes the cleanup leave the
  job to a later run); a resume locks it too before it reopens the job, so the two never
  interleave: a job reopened while its rows were going keeps the rest, and is refused.
- ``replies``: the ``SMSReply`` rows received more than ``REPLIES`` days before ``now``.
- ``rate_limit_counters``: the ``RateLimitCounter`` rows expired at ``now`` (``expires_at``
  reached: the database store's own rule; it purges them now and then itself).
- ``fraud_blocks``: the ``FraudBlock`` rows ended at ``now`` (``until`` reached, lifted or
  not), except a block lifted by hand within the Fraud Guard's look-back (its ``WINDOW``, or
  a day for a new country, and its ``GRACE``): the guard judges only codes sent after a lift,
  and reads the lift from the row. The admin then no longer lists the ended blocks.

How, so that it is safe while the site serves and when two run at once: each kind is
deleted in batches of ``batch_size`` rows (5,000 by default), each batch one short
transaction of its own that takes the batch's rows in index order after the previous
batch's last key (on PostgreSQL ``FOR UPDATE SKIP LOCKED``: a row another transaction holds
is left for a later run, never waited for) and deletes them by primary key: on PostgreSQL
one statement, elsewhere a ``SELECT`` of the keys then a ``DELETE``. No statement touches
more than ``batch_size`` rows and no lock outlives its batch; memory holds one batch's keys
at most. A run stopped anywhere leaves whole batches done and nothing half-done: the next
run carries on. The rows are deleted in SQL: no ``pre_delete``/``post_delete`` signal is
sent. Call it outside a transaction (inside one, the batches' locks last until it ends).

Why one module of over 400 lines: it is one contract, what a cleanup deletes and how it
deletes it beside a serving site; the rule of how long verifications must stay is the
cleanup's own (the system check reports it from here), and the batching is what keeps
every kind safe. Split, each half would be a fragment of that contract.
"""

from __future__ import annotations

import datetime as dt
import itertools
import math
import operator
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.db import IntegrityError, connections, router, transaction
from django.db.models import Count, Exists, OuterRef, Q, QuerySet
from django.db.models.functions import TruncDate
from django.utils import timezone

from . import _events
from .conf import RetentionSettings, conf
from .fraud import NEW_COUNTRY_WINDOW
from .models import (
    BulkBatch,
    BulkRecipient,
    BulkSMSJob,
    FraudBlock,
    PhoneVerification,
    RateLimitCounter,
    SMSReply,
    VerificationDay,
)

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "KINDS",
    "MAX_BATCH_SIZE",
    "CleanupReport",
    "check_batch_size",
    "cleanup",
    "verification_days_problems",
]

#: Rows per batch unless asked otherwise: a batch takes tens of milliseconds on PostgreSQL.
DEFAULT_BATCH_SIZE = 5_000
#: The most rows one batch may take: a batch's keys are one ``IN`` list (SQLite takes up to
#: 32,766 parameters) and its transaction must stay short.
MAX_BATCH_SIZE = 10_000

#: The kinds of rows a cleanup deletes, in the order it deletes them.
KINDS = (
    "verifications",
    "bulk_recipients",
    "bulk_batches",
    "replies",
    "rate_limit_counters",
    "fraud_blocks",
)


@dataclass(frozen=True, kw_only=True)
class CleanupReport:
    """What a :func:`cleanup` deleted (or, with ``dry_run``, would delete)."""

    dry_run: bool
    #: Rows per kind (every one of :data:`KINDS`, in that order).
    deleted: dict[str, int]
    #: Days whose totals were written to ``VerificationDay`` (in a dry run: would be).
    days_aggregated: int
    #: Per configurable kind (``verifications``, ``bulk_recipients``, ``replies``), the
    #: instant before which its rows go (sent, job finished, received); None: kept forever.
    cutoffs: dict[str, dt.datetime | None] = field(default_factory=dict)

    @property
    def total(self) -> int:
        """Rows of every kind together."""
        return sum(self.deleted.values())


def check_batch_size(batch_size: int) -> int:
    """``batch_size`` if :func:`cleanup` takes it (1 to ``MAX_BATCH_SIZE``); ValueError
    saying so otherwise."""
    if isinstance(batch_size, bool) or not 1 <= batch_size <= MAX_BATCH_SIZE:
        raise ValueError(f"batch_size must be 1..{MAX_BATCH_SIZE:,}, not {batch_size!r}")
    return batch_size


def verification_days_problems(days: int | None) -> list[str]:
    """What keeping verifications ``days`` whole days (``RETENTION["VERIFICATIONS"]``; None:
    forever) is too short for, empty when nothing: the one rule that the system check
    (``textflow.E019``) reports and :func:`cleanup` refuses to run against.

    A code is checked up to ``CODE_TTL`` after it was sent and its token proves the number
    for ``TOKEN_MAX_AGE`` more (from its row), and the Fraud Guard judges the codes of its
    window (``WINDOW``, or a day for a new country) before its ``GRACE``. A cleanup leaves
    every row at least ``days`` whole days old; an hour more covers a day that daylight
    saving time shortened. Raises what those settings' properties raise when one is invalid
    (its own check says what is wrong)."""
    if days is None:
        return []
    guard = conf.FRAUD_GUARD
    needs = {
        "a code and its token live (CODE_TTL + TOKEN_MAX_AGE)": conf.CODE_TTL + conf.TOKEN_MAX_AGE,
        "the Fraud Guard looks back (its WINDOW or a day, + GRACE)": max(
            guard.window, NEW_COUNTRY_WINDOW
        )
        + guard.grace,
    }
    problems = []
    for what, seconds in needs.items():
        least = math.ceil((seconds + 3600) / 86400)
        if days < least:
            problems.append(
                f"VERIFICATIONS keeps {days} day(s), less than {what}: at least {least}"
            )
    return problems


def cleanup(
    *,
    dry_run: bool = False,
    now: dt.datetime | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> CleanupReport:
    """Delete what ``TEXTFLOW["RETENTION"]`` keeps no longer, as of ``now`` (default: now),
    in batches of ``batch_size`` (see the module's contract); with ``dry_run``, count it and
    delete (and write) nothing. Logs ``textflow.cleanup.deleted kind=... rows=...`` per kind
    (not in a dry run). Idempotent: a second run at the same ``now`` deletes nothing more.

    Raises:
        ValueError: ``batch_size`` is out of range, or ``RETENTION`` is not valid: not its
            shape, or verifications kept too short (:func:`verification_days_problems`,
            checked here too: ``call_command`` runs no system check). Nothing is deleted.
    """
    check_batch_size(batch_size)
    retention: RetentionSettings = conf.RETENTION
    too_short = verification_days_problems(retention.verifications)
    if too_short:
        raise ValueError(f"TEXTFLOW['RETENTION'] is not valid: {'; '.join(too_short)}")
    now = timezone.now() if now is None else now
    sweep = _Sweep(batch_size=batch_size, dry_run=dry_run)
    deleted: dict[str, int] = {}
    cutoffs: dict[str, dt.datetime | None] = {}

    days_aggregated = 0
    cutoffs["verifications"] = None
    deleted["verifications"] = 0
    if retention.verifications is not None:
        first_kept = _site_date(now) - dt.timedelta(days=retention.verifications)
        cutoff = _site_midnight(first_kept)
        cutoffs["verifications"] = cutoff
        old = PhoneVerification.objects.filter(created_at__lt=cutoff)
        # Every day's totals before any of its rows go (see the module's contract).
        days_aggregated = _aggregate_days(old, first_kept, dry_run=dry_run)
        deleted["verifications"] = sweep.delete("verifications", old)

    cutoffs["bulk_recipients"] = None
    deleted["bulk_recipients"] = deleted["bulk_batches"] = 0
    if retention.bulk_recipients is not None:
        finished_before = now - dt.timedelta(days=retention.bulk_recipients)
        cutoffs["bulk_recipients"] = finished_before
        deleted["bulk_recipients"], deleted["bulk_batches"] = _bulk(sweep, finished_before)

    cutoffs["replies"] = None
    deleted["replies"] = 0
    if retention.replies is not None:
        received_before = now - dt.timedelta(days=retention.replies)
        cutoffs["replies"] = received_before
        replies = SMSReply.objects.filter(received_at__lt=received_before)
        deleted["replies"] = sweep.delete("replies", replies)

    counters = RateLimitCounter.objects.filter(expires_at__lte=now)
    deleted["rate_limit_counters"] = sweep.delete("rate_limit_counters", counters)
    deleted["fraud_blocks"] = sweep.delete("fraud_blocks", _ended_blocks(now))
    return CleanupReport(
        dry_run=dry_run,
        deleted={kind: deleted[kind] for kind in KINDS},
        days_aggregated=days_aggregated,
        cutoffs=cutoffs,
    )


# -- days ----------------------------------------------------------------------------------


def _site_date(moment: dt.datetime) -> dt.date:
    """The calendar day of ``moment`` in the site's time zone (naive: already local)."""
    if settings.USE_TZ:
        return timezone.localtime(moment, timezone.get_default_timezone()).date()
    return moment.date()


def _site_midnight(day: dt.date) -> dt.datetime:
    """The start of ``day`` in the site's time zone (naive without ``USE_TZ``)."""
    start = dt.datetime.combine(day, dt.time.min)
    return timezone.make_aware(start, timezone.get_default_timezone()) if settings.USE_TZ else start


def _aggregate_days(old: QuerySet[PhoneVerification], first_kept: dt.date, *, dry_run: bool) -> int:
    """Write ``VerificationDay`` totals for every day of ``old`` (the days before
    ``first_kept``) that has none yet; returns
    how many days were (with ``dry_run``: would be) written.

    One grouped query over the old rows (by the database, day in the site's time zone and
    country), read a chunk at a time; a day's totals are one transaction, all or nothing. A
    day whose totals another run wrote meanwhile fails on the unique (day, country) and is
    left as that run wrote it: that run wrote them before deleting any of the day's rows, so
    its totals are whole, whereas these may have been counted while its rows were going.
    """
    alias = router.db_for_write(VerificationDay)
    known = set(
        VerificationDay.objects.using(alias)
        .filter(day__lt=first_kept)
        .values_list("day", flat=True)
        .distinct()
    )
    written = 0
    for day, rows in _days(old):
        if day in known:
            continue
        if dry_run:
            written += 1
            continue
        try:
            with transaction.atomic(using=alias):
                VerificationDay.objects.using(alias).bulk_create(rows)
        except IntegrityError:
            continue
        written += 1
    return written


def _days(old: QuerySet[PhoneVerification]) -> Iterator[tuple[dt.date, list[VerificationDay]]]:
    """Each day of ``old`` with its totals per country, oldest first, streamed."""
    verified = Q(status=PhoneVerification.Status.VERIFIED)
    figures = (
        old.order_by()
        .annotate(day=TruncDate("created_at", tzinfo=timezone.get_default_timezone()))
        .values("day", "country")
        .annotate(sent=Count("pk"), verified=Count("pk", filter=verified))
        .order_by("day", "country")
    )
    for day, group in itertools.groupby(
        figures.iterator(chunk_size=2_000), key=operator.itemgetter("day")
    ):
        yield (
            day,
            [
                VerificationDay(
                    day=day, country=r["country"], sent=r["sent"], verified=r["verified"]
                )
                for r in group
            ],
        )


# -- the other kinds --------------------------------------------------------------------


def _bulk(sweep: _Sweep, finished_before: dt.datetime) -> tuple[int, int]:
    """Batches, then recipients, of each job finished before ``finished_before`` that still
    has any (see the module's contract); every batch locks its job's row, while it is still
    such a job, before it deletes anything."""
    old_job = Q(status=BulkSMSJob.Status.FINISHED, finished_at__lt=finished_before)
    jobs = BulkSMSJob.objects.filter(old_job).filter(
        Exists(BulkBatch.objects.filter(job=OuterRef("pk")))
        | Exists(BulkRecipient.objects.filter(job=OuterRef("pk")))
    )
    still_old = Q(job__status=BulkSMSJob.Status.FINISHED, job__finished_at__lt=finished_before)
    recipients = batches = 0
    for job_id in list(jobs.order_by("pk").values_list("pk", flat=True)):
        job = BulkSMSJob.objects.filter(old_job, pk=job_id)
        # The keys of the unique (job, number) and (job, index) indexes: each batch is one
        # range of an index, however the job's rows lie in the table.
        batches += sweep.collect(
            BulkBatch.objects.filter(still_old, job_id=job_id), key="index", guard=job
        )
        if not sweep.dry_run and BulkBatch.objects.filter(job_id=job_id).exists():
            continue  # a batch was left (the job reopened, a row held): all its recipients stay
        recipients += sweep.collect(
            BulkRecipient.objects.filter(still_old, job_id=job_id), key="phone_number", guard=job
        )
    sweep.report("bulk_recipients", recipients)
    sweep.report("bulk_batches", batches)
    return recipients, batches


def _ended_blocks(now: dt.datetime) -> QuerySet[FraudBlock]:
    """The blocks no longer in force at ``now`` that the Fraud Guard no longer reads: any
    lift it still reads (``fraud._judge._judged``: a lift within its longest window and
    grace) keeps its row."""
    guard = conf.FRAUD_GUARD
    remembered = dt.timedelta(seconds=max(guard.window, NEW_COUNTRY_WINDOW) + guard.grace)
    return FraudBlock.objects.filter(until__lte=now).filter(
        Q(lifted_at=None) | Q(lifted_at__lt=now - remembered)
    )


@dataclass
class _Sweep:
    """Deletes querysets in batches (the module's contract), or counts them (``dry_run``)."""

    batch_size: int
    dry_run: bool

    def delete(self, kind: str, rows: QuerySet[Any], key: str = "pk") -> int:
        """:meth:`collect` ``rows`` and report them as ``kind``."""
        count = self.collect(rows, key=key)
        self.report(kind, count)
        return count

    def report(self, kind: str, count: int) -> None:
        if not self.dry_run:
            _events.emit("textflow.cleanup.deleted", kind=kind, rows=count)

    def collect(self, rows: QuerySet[Any], *, key: str, guard: QuerySet[Any] | None = None) -> int:
        """Delete ``rows`` in batches ordered by ``key`` (unique among them, indexed); returns
        how many went. Dry run: how many there are. With ``guard`` (the row the rows belong
        to, filtered by what lets them go), each batch first locks its row, and stops the
        sweep when it is not there: changed, or locked by another transaction."""
        alias = router.db_for_write(rows.model)
        rows = rows.using(alias)
        if self.dry_run:
            return rows.count()
        features = connections[alias].features
        if features.has_select_for_update_skip_locked:
            # Lock the rows deleted here; the job a bulk row's filter joins is the guard's.
            of = ("self",) if features.has_select_for_update_of else ()
            rows = rows.select_for_update(skip_locked=True, of=of)
            if guard is not None:
                guard = guard.select_for_update(skip_locked=True)
        deleted = 0
        after: object = None
        while True:
            page = rows if after is None else rows.filter(**{f"{key}__gt": after})
            with transaction.atomic(using=alias):
                if guard is not None and not list(guard.using(alias).values_list("pk")[:1]):
                    return deleted
                count, last = _delete_batch(page.order_by(key), key, self.batch_size, alias)
            deleted += count
            if count < self.batch_size:
                return deleted
            after = last


def _delete_batch(page: QuerySet[Any], key: str, size: int, alias: str) -> tuple[int, object]:
    """Delete the first ``size`` rows of ``page`` (ordered by ``key``, locked if it says so);
    returns how many went and the last one's ``key``. Plain SQL, so no delete signal is
    sent: Django's ``QuerySet.delete()`` would build an ``IN`` list of the batch's keys
    (most of a batch's time) and load the rows if a receiver listens.

    On PostgreSQL one statement: the batch's ``SELECT`` (with its lock) is a materialized
    ``WITH`` the ``DELETE`` reads, which answers the count and the last key (``max``, in the
    column's collation: the order the ``SELECT`` walks). Elsewhere the keys are read first,
    in the database's order, then their rows deleted by primary key (SQLite cannot
    ``DELETE`` in a ``WITH``; MySQL cannot take a ``LIMIT`` in an ``IN`` subquery)."""
    connection = connections[alias]
    model = page.model
    qn = connection.ops.quote_name
    table, pk = qn(model._meta.db_table), qn(model._meta.pk.column)
    column = qn(model._meta.pk.column if key == "pk" else model._meta.get_field(key).column)
    if connection.vendor == "postgresql":
        sql, params = page.values("pk")[:size].query.get_compiler(using=alias).as_sql()
        with connection.cursor() as cursor:
            # The batch is a MATERIALIZED CTE, run once: as an IN subquery the planner may
            # run its LIMIT ... SKIP LOCKED again for the DELETE (a semi-join rescan), and
            # one statement then deleted 5 rows of a batch of 2 (seen in CI, depending on
            # the plan the table's statistics chose).
            cursor.execute(
                f"WITH batch AS MATERIALIZED ({sql}), "  # noqa: S608
                f"gone AS (DELETE FROM {table} WHERE {pk} IN (SELECT * FROM batch) "
                f"RETURNING {column}) SELECT count(*), max({column}) FROM gone",
                params,
            )
            count, last = cursor.fetchone()
        return int(count), last
    found = list(page.values_list("pk", key)[:size])
    if not found:
        return 0, None
    marks = ", ".join(["%s"] * len(found))
    with connection.cursor() as cursor:
        cursor.execute(
            f"DELETE FROM {table} WHERE {pk} IN ({marks})",  # noqa: S608
            [row_pk for row_pk, _ in found],
        )
        return int(cursor.rowcount), found[-1][1]
