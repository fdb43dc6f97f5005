"""The opt-out list: numbers that asked not to be texted (``OptOut``), and the one place
that adds to it, takes from it and asks it.

Contract:

- A number is opted out while it has an ``OptOut`` row. Numbers are E.164 (the callers
  normalise: the replies webhook, the admin's form, ``textflow_optout``).
- :func:`opt_out` and :func:`opt_in` are idempotent and safe under concurrency (the unique
  number decides who created or deleted the row); the signal fires only for the call that
  changed the list, after its transaction commits, with the event ``textflow.optout.added``
  or ``textflow.optout.removed`` (the number masked).
- :func:`opt_out_many` adds numbers by the thousand (``textflow_optout import``): a batch
  at a time, so memory stays flat; ``opted_out`` fires for each number it added, and one
  event per batch counts them.
- :data:`CSV_HEADER` and :func:`csv_rows` are the list as CSV, the format the admin's
  export and ``textflow_optout export`` write and ``textflow_optout import`` reads. A note
  that a spreadsheet would run as a formula (it starts with ``=``, ``+``, ``-``, ``@``, a
  tab or a carriage return: CSV injection) is written with a ``'`` before it, which
  spreadsheets take as "text" and do not show. The import reads the numbers only (a note
  comes from its ``--note``), so an exported note never comes back with that ``'``.
- Bulk jobs leave opted-out numbers out, and a backend refuses a non-transactional send to
  one (``TextFlowOptedOut``); verification codes are transactional.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Final

from django.db import IntegrityError, connections, router, transaction
from django.db.models import QuerySet

from . import phone, signals
from ._events import emit
from .models import OptOut

__all__ = [
    "CSV_HEADER",
    "IMPORT_BATCH",
    "csv_rows",
    "is_opted_out",
    "opt_in",
    "opt_out",
    "opt_out_many",
    "opted_out_among",
]

#: Numbers :func:`opt_out_many` reads, checks and inserts at a time.
IMPORT_BATCH = 1000
#: The columns of the list as CSV (``since``: when the number opted out, ISO 8601).
CSV_HEADER: Final = ("phone_number", "source", "since", "note")
#: Rows :func:`csv_rows` reads from the database at a time.
EXPORT_CHUNK = 2000
#: How a cell a spreadsheet would run as a formula starts (OWASP, CSV injection).
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def is_opted_out(number: str) -> bool:
    """Whether ``number`` (E.164) is on the list: one indexed query."""
    return OptOut.objects.filter(phone_number=number).exists()


def opted_out_among(numbers: list[str]) -> set[str]:
    """The numbers of ``numbers`` (E.164) that are on the list: one query.

    Plain SQL on purpose: the numbers are compared as given, E.164 as the list stores them,
    not parsed again by the field (``PhoneNumberField`` validates each value it prepares,
    some 70 microseconds a number: a second per 15,000, paid by every bulk batch).
    """
    if not numbers:
        return set()
    connection = connections[router.db_for_read(OptOut)]
    qn = connection.ops.quote_name
    table = qn(OptOut._meta.db_table)
    column = qn(str(OptOut._meta.get_field("phone_number").column))
    marks = ", ".join(["%s"] * len(numbers))
    with connection.cursor() as cursor:
        # Names from the model, quoted by the backend; the numbers are parameters.
        cursor.execute(
            f"SELECT {column} FROM {table} WHERE {column} IN ({marks})",  # noqa: S608
            list(numbers),
        )
        return {row[0] for row in cursor.fetchall()}


def _check_source(source: str) -> None:
    if source not in OptOut.Source.values:
        raise ValueError(f"unknown opt-out source {source!r}")


def opt_out(number: str, *, source: str, note: str = "") -> bool:
    """Put ``number`` on the list. True if this call added it (and ``opted_out`` fires on
    commit), False if it was there already (nothing changes, not even its source)."""
    _check_source(source)
    try:
        with transaction.atomic():
            OptOut.objects.create(phone_number=number, source=source, note=note)
    except IntegrityError:
        return False

    def added() -> None:
        emit("textflow.optout.added", number=phone.mask(number), source=source, count=1)
        signals.opted_out.send(sender=OptOut, phone_number=number, source=source)

    transaction.on_commit(added, robust=True)
    return True


def opt_in(number: str, *, source: str) -> bool:
    """Take ``number`` off the list. True if this call removed it (and ``opted_in`` fires on
    commit), False if it was not there."""
    _check_source(source)
    deleted, _ = OptOut.objects.filter(phone_number=number).delete()
    if not deleted:
        return False

    def removed() -> None:
        emit("textflow.optout.removed", number=phone.mask(number), source=source, count=1)
        signals.opted_in.send(sender=OptOut, phone_number=number, source=source)

    transaction.on_commit(removed, robust=True)
    return True


def _batches(numbers: Iterable[str], size: int) -> Iterator[list[str]]:
    """``numbers`` a list of at most ``size`` distinct ones at a time."""
    batch: dict[str, None] = {}
    for number in numbers:
        batch[number] = None
        if len(batch) >= size:
            yield list(batch)
            batch = {}
    if batch:
        yield list(batch)


def opt_out_many(numbers: Iterable[str], *, source: str, note: str = "") -> int:
    """Put every number of ``numbers`` (E.164, read lazily) on the list; returns how many
    this call added. Numbers already there keep their row (source, since, note).

    :data:`IMPORT_BATCH` numbers at a time, each batch one transaction of two queries (which
    are listed already, then one ``INSERT`` that ignores conflicts), so memory stays flat
    whatever the count, and a failure keeps the batches before it. ``opted_out`` fires for
    each number added once its batch commits, and one ``textflow.optout.added`` event per
    batch counts them (no number in it: an import may hold thousands). A number another
    caller adds in the same instant may be counted, and signalled, by both.
    """
    _check_source(source)
    db = router.db_for_write(OptOut)
    added = 0
    for batch in _batches(numbers, IMPORT_BATCH):
        with transaction.atomic(using=db):
            listed = opted_out_among(batch)
            new = [number for number in batch if number not in listed]
            OptOut.objects.using(db).bulk_create(
                [OptOut(phone_number=number, source=source, note=note) for number in new],
                ignore_conflicts=True,
            )

            if new:
                transaction.on_commit(_added_event(source, len(new)), using=db)
            # One robust callback a number, as opt_out's: a site's raising receiver is
            # logged by Django and neither stops the import nor the other numbers' signals.
            for number in new:
                transaction.on_commit(_opted_out_signal(number, source), using=db, robust=True)
        added += len(new)
    return added


def _added_event(source: str, count: int) -> Callable[[], None]:
    """A commit callback logging that ``count`` numbers joined the list."""

    def log() -> None:
        emit("textflow.optout.added", source=source, count=count)

    return log


def _opted_out_signal(number: str, source: str) -> Callable[[], object]:
    """A commit callback sending ``opted_out`` for ``number`` (a named function, which
    Django's robust on_commit logs by name)."""

    def send() -> object:
        return signals.opted_out.send(sender=OptOut, phone_number=number, source=source)

    return send


def csv_rows(rows: QuerySet[OptOut] | None = None) -> Iterator[tuple[str, str, str, str]]:
    """The list's rows as :data:`CSV_HEADER` says (the header itself not included), oldest
    first, read from the database :data:`EXPORT_CHUNK` at a time (a server-side cursor
    where the database has one), so memory stays flat however long the list. ``rows``:
    only those (the admin's selection); default, the whole list. A note that starts like
    a formula gets a ``'`` before it (see the module's contract); the other columns are
    the package's own values (an E.164 number, a source, an ISO 8601 instant)."""
    rows = OptOut.objects.all() if rows is None else rows
    for number, source, since, note in (
        rows.order_by("created_at", "id")
        .values_list("phone_number", "source", "created_at", "note")
        .iterator(chunk_size=EXPORT_CHUNK)
    ):
        yield str(number), source, since.isoformat(), _csv_text(note)


def _csv_text(value: str) -> str:
    """``value`` for a CSV cell a spreadsheet will not run: a ``'`` before a formula."""
    return "'" + value if value.startswith(_FORMULA_STARTS) else value
