"""Recipient sources: where a bulk job's numbers come from, read lazily.

A :class:`Source` is a description (kept on the job) and an iterator of ``(where, value)``
rows, ``where`` locating the value for a report (a primary key, a line number, a position).
Three kinds: a model's text field read in primary-key pages (:func:`model_numbers`), a text
or CSV stream (:func:`file_numbers`, opened with :func:`open_numbers_file`), and values given
in code or on the command line (:func:`list_numbers`). None reads everything at once, so
memory stays flat whatever the source's size. Values are handed on raw: normalising and
deduplicating them is the ingest's job (:mod:`textflow_django.bulk.ingest`).

A source that cannot be read raises :class:`SourceError`, either when it is built (an
unknown model, field or column, a CSV header naming the column twice, a filter value no
database stores) or while its rows are read (a file found not to be UTF-8 half-way, a
filter the database refuses when it runs). CSV rows too short to reach the column are not
an error: the source counts them, with their first line numbers (:class:`MissingFields`),
for the job's report.
"""

from __future__ import annotations

import csv
import re
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, TextIO

from django.apps import apps
from django.core.exceptions import FieldDoesNotExist, FieldError, ValidationError
from django.db import DatabaseError, models

__all__ = [
    "MissingFields",
    "Source",
    "SourceError",
    "file_numbers",
    "list_numbers",
    "model_numbers",
    "open_numbers_file",
]

#: Primary keys read per page from a model source.
MODEL_PAGE = 5000
# What no database stores in text: NUL (PostgreSQL) and lone surrogates (none can encode them).
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


class SourceError(ValueError):
    """A recipient source cannot be read (unknown model, field, filter, column, file, or a
    file that is not UTF-8 or not valid CSV)."""


class MissingFields:
    """CSV rows without the source's column (too few fields): how many, and the line
    numbers of the first :attr:`SHOWN` of them. Filled as the rows are read."""

    #: Line numbers kept for the report.
    SHOWN = 5

    def __init__(self, column: str) -> None:
        self.column = column
        self.count = 0
        self.lines: list[int] = []

    def add(self, line: int) -> None:
        self.count += 1
        if len(self.lines) < self.SHOWN:
            self.lines.append(line)

    def report(self) -> str:
        """``3 rows have no 'mobile' field: lines 4, 9, 12`` (past the first few lines:
        ``..., 20 and 7 more``)."""
        rows = "1 row has" if self.count == 1 else f"{self.count:,} rows have"
        where = ", ".join(map(str, self.lines))
        more = self.count - len(self.lines)
        line_word = "line" if self.count == 1 else "lines"
        return f"{rows} no {self.column!r} field: {line_word} {where}" + (
            f" and {more:,} more" if more else ""
        )


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
    #: A CSV source's rows without its column, counted as they are read (None: no CSV).
    missing: MissingFields | None = None


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
        if _UNSTORABLE.search(item):
            # PostgreSQL refuses NUL in text, every database lone surrogates (bytes that
            # were not UTF-8 on the command line): no row can match, so say it now.
            raise SourceError(
                f"Filter {ascii(item)} holds a character no database stores (NUL, or bytes "
                "that are not UTF-8)."
            )
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
            except (DatabaseError, ValueError) as err:
                # The lookups compiled, so the database (or its driver, for a value it
                # cannot send: UnicodeEncodeError) refused them as they ran.
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
    positions = [n for n, found in enumerate(header, 1) if found == column]
    if len(positions) > 1:
        raise SourceError(
            f"{name}'s header names {column!r} {len(positions)} times (columns "
            f"{', '.join(map(str, positions))}): rename all but one, so it is clear which "
            "holds the numbers."
        )
    index = positions[0] - 1
    missing = MissingFields(column)

    def rows() -> Iterator[tuple[object, Any]]:
        try:
            for row in reader:
                if index < len(row):
                    yield reader.line_num, row[index]
                elif any(cell.strip() for cell in row):
                    missing.add(reader.line_num)
                # else: a blank line, which is no row
        except csv.Error as err:
            raise SourceError(f"{name} line {reader.line_num}: not valid CSV ({err}).") from err

    return Source(f"{name} column {column}", "line", rows(), missing)


def list_numbers(numbers: Iterable[Any], description: str = "a list") -> Source:
    """Numbers given in code or on the command line; ``where`` is the 1-based position."""
    return Source(description, "item", enumerate(numbers, 1))
