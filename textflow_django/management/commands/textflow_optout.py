"""``manage.py textflow_optout``: the opt-out list from the command line.

- ``import FILE``: numbers from a file (``-``: standard input) onto the list, source
  ``import``. The file is read as ``textflow_bulk_sms --file`` reads one: one number a line,
  or with ``--column`` that column of a CSV with a header (a file ``export`` wrote is
  recognised by its header and read as that CSV); UTF-8, a byte-order mark dropped; blank
  lines skipped; invalid numbers counted, the first few shown; numbers of every country
  taken (the list refuses no country). Added a thousand at a time, so memory stays flat.
- ``export [FILE]``: the list as CSV (``phone_number,source,since,note``, ``since`` in ISO
  8601), oldest first, streamed; to standard output without ``FILE`` or with ``-``.
- ``add NUMBER...`` / ``remove NUMBER...``: numbers read as the site reads them
  (``DEFAULT_REGION``); one that is not a number stops the command before anything changes.
  Source ``admin`` (an operator's change), so ``opted_out``/``opted_in`` fire as for the
  admin's.
"""

from __future__ import annotations

import csv
import sys
import time
from argparse import ArgumentParser
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any, TextIO, cast

from django.core.management.base import BaseCommand, CommandError
from django.db import router, transaction
from django.utils.translation import gettext as _
from django.utils.translation import ngettext

from ... import bulk, optouts, phone
from ...bulk.ingest import ValidNumbers
from ...models import OptOut
from .. import _words as words


def _numbers(count: int) -> str:
    """``1 number``, ``2 numbers``."""
    return words.with_count(ngettext("%(count)s number", "%(count)s numbers", count), count)


class _Prepended:
    """A text stream read again from its start after its first line was read (to look
    at a CSV header): that line, then the rest of the stream."""

    def __init__(self, first: str, rest: TextIO) -> None:
        self.first, self.rest = first, rest

    def __iter__(self) -> Iterator[str]:
        if self.first:
            yield self.first
        yield from self.rest


class Command(BaseCommand):
    help = (
        "Manage the opt-out list (numbers that asked not to be texted): import numbers from "
        "a file, export the list as CSV, add or remove numbers."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
        imports = actions.add_parser(
            "import",
            help="Add the numbers of a file (one a line, or a CSV column) to the list.",
        )
        imports.add_argument("file", metavar="FILE", help="The file; - for standard input.")
        imports.add_argument(
            "--column",
            help="The CSV column holding the numbers (a file export wrote: phone_number, "
            "found by itself).",
        )
        imports.add_argument("--note", default="", help="A note kept with each added number.")
        exports = actions.add_parser("export", help="Write the list as CSV.")
        exports.add_argument(
            "file", metavar="FILE", nargs="?", default="-", help="Where; - (default): stdout."
        )
        adds = actions.add_parser("add", help="Add numbers to the list.")
        adds.add_argument("numbers", metavar="NUMBER", nargs="+")
        adds.add_argument("--note", default="", help="A note kept with each added number.")
        removes = actions.add_parser("remove", help="Take numbers off the list.")
        removes.add_argument("numbers", metavar="NUMBER", nargs="+")

    def handle(self, *args: Any, **options: Any) -> None:
        action = options["action"]
        if action == "import":
            self._import(options["file"], options["column"], options["note"])
        elif action == "export":
            self._export(options["file"])
        else:
            self._change(action, options["numbers"], options.get("note", ""))

    # -- import --------------------------------------------------------------------------

    def _import(self, name: str, column: str | None, note: str) -> None:
        started = time.monotonic()
        with ExitStack() as files:
            source = self._source(name, column, files)
            reading = ValidNumbers(source, countries=False)
            valid = 0

            def counted() -> Iterator[str]:
                nonlocal valid
                for number in reading:
                    valid += 1
                    yield number

            try:
                added = optouts.opt_out_many(
                    counted(), source=OptOut.Source.IMPORT, note=note[:200]
                )
            except bulk.SourceError as err:
                # The batches before the failure are on the list: say so with the error.
                raise CommandError(
                    _("%(error)s The numbers read before it are on the list.") % {"error": err}
                ) from err
            reading.count_missing()
        self.stdout.write(
            _(
                "Imported %(file)s: %(added)s added to the opt-out list, %(others)s already "
                "on it or repeated; skipped %(invalid)s (read in %(seconds)s)."
            )
            % {
                "file": source.description,
                "added": _numbers(added),
                "others": _numbers(valid - added),
                "invalid": words.invalid_numbers(reading.invalid),
                "seconds": f"{time.monotonic() - started:.1f}s",
            }
        )
        for sample in reading.samples:
            # Translators: one sample of the entries a job skipped, e.g. "item 3: 'bad' (invalid)".
            self.stdout.write("  " + _("invalid: %(sample)s") % {"sample": sample})
        if not valid:
            raise CommandError(
                _("%(file)s holds no valid phone number: nothing was added.")
                % {"file": source.description}
            )

    def _source(self, name: str, column: str | None, files: ExitStack) -> bulk.Source:
        """The file as a source of numbers, read by ``textflow_bulk_sms --file``'s rules."""
        if name != "-":
            path = Path(name)
            if path.is_dir():
                raise CommandError(
                    _("%(file)s is a directory, not a file of numbers.") % {"file": name}
                )
            if not path.exists():
                raise CommandError(_("%(file)s: no such file.") % {"file": name})
        try:
            stream = bulk.open_numbers_file(name)
        except OSError as err:
            raise CommandError(
                _("Cannot read %(file)s: %(error)s") % {"file": name, "error": err}
            ) from err
        if stream is not sys.stdin:
            files.callback(stream.close)
        label = "stdin" if name == "-" else name
        lines: TextIO = stream
        if column is None:
            # A file export wrote: its header names the column. Anything else is a list.
            first = stream.readline()
            header = next(csv.reader([first]), [])
            if header and header[0] == optouts.CSV_HEADER[0]:
                column = optouts.CSV_HEADER[0]
            lines = cast(TextIO, _Prepended(first, stream))
        try:
            return bulk.file_numbers(lines, name=label, column=column)
        except bulk.SourceError as err:
            raise CommandError(str(err)) from err

    # -- export --------------------------------------------------------------------------

    def _export(self, name: str) -> None:
        with ExitStack() as files:
            if name == "-":
                out = cast(TextIO, self.stdout._out)
                report = self.stderr  # the CSV alone goes to stdout
            else:
                try:
                    out = files.enter_context(
                        open(name, "w", encoding="utf-8", newline="")  # noqa: PTH123
                    )
                except OSError as err:
                    raise CommandError(
                        _("Cannot write %(file)s: %(error)s") % {"file": name, "error": err}
                    ) from err
                report = self.stdout
            writer = csv.writer(out)
            writer.writerow(optouts.CSV_HEADER)
            count = 0
            for row in optouts.csv_rows():
                writer.writerow(row)
                count += 1
        report.write(
            _("Exported %(numbers)s of the opt-out list to %(file)s.")
            % {"numbers": _numbers(count), "file": "stdout" if name == "-" else name}
        )

    # -- add, remove ---------------------------------------------------------------------

    def _change(self, action: str, values: list[str], note: str) -> None:
        numbers: dict[str, None] = {}
        for value in values:
            try:
                numbers[phone.normalize(value, check_countries=False)] = None
            except phone.InvalidPhoneNumberError as err:
                raise CommandError(
                    _("%(value)s is not a phone number (%(reason)s): nothing was changed.")
                    % {"value": repr(value[:40]), "reason": err.code}
                ) from err
        changed = 0
        with transaction.atomic(using=router.db_for_write(OptOut)):
            for number in numbers:
                if action == "add":
                    changed += optouts.opt_out(number, source=OptOut.Source.ADMIN, note=note[:200])
                else:
                    changed += optouts.opt_in(number, source=OptOut.Source.ADMIN)
        unchanged = len(numbers) - changed
        if action == "add":
            line = _("Opt-out list: %(changed)s added, %(unchanged)s already on it.")
        else:
            line = _("Opt-out list: %(changed)s removed, %(unchanged)s not on it.")
        self.stdout.write(line % {"changed": _numbers(changed), "unchanged": _numbers(unchanged)})
