"""``manage.py textflow_bulk_count``: recipients of started bulk jobs still waiting."""

from __future__ import annotations

import math
import time
from argparse import ArgumentParser
from typing import Any, TextIO, cast

from django.core.management.base import BaseCommand, CommandError
from django.utils.translation import gettext as _
from django.utils.translation import ngettext

from ...backends import get_backend
from ...exceptions import TextFlowConfigurationError, TextFlowError
from .. import _words as words
from .._progress import Progress


class Command(BaseCommand):
    help = (
        "Print how many recipients of started TextFlow bulk jobs have not yet received their SMS."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument(
            "--wait", action="store_true", help="Poll until the count reaches zero."
        )
        parser.add_argument(
            "--interval",
            type=float,
            default=5.0,
            help="Seconds between polls with --wait (default 5).",
        )
        parser.add_argument(
            "--timeout",
            type=float,
            default=None,
            help="With --wait, give up (exit non-zero) after this many seconds.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        """Without --wait: the count alone, for scripts. With it: progress on stderr (a bar
        on a terminal, a line when the count moves elsewhere) until nothing is pending, then
        one sentence on stdout; a CommandError if --timeout runs out first."""
        interval, timeout = options["interval"], options["timeout"]
        # float() takes "nan" and "inf": a sleep refuses both (a traceback) and NaN never
        # compares, so a NaN --timeout would never run out.
        if not (math.isfinite(interval) and interval > 0):
            raise CommandError(
                _("--interval must be a positive number of seconds, not %(value)s.")
                % {"value": f"{interval:g}"}
            )
        if timeout is not None and not timeout >= 0:
            raise CommandError(
                _("--timeout must be 0 or more seconds, not %(value)s.") % {"value": f"{timeout:g}"}
            )
        count = self._count()
        if not options["wait"]:
            self.stdout.write(str(count))
            return
        if count == 0:
            self.stdout.write(
                self.style.SUCCESS(_("Nothing is pending: every recipient has been delivered."))
            )
            return
        deadline = None if timeout is None else time.monotonic() + timeout
        progress = Progress(
            cast(TextIO, self.stderr._out), count, unit=words.delivered, interval=interval
        )
        first = count
        while count > 0:
            progress.update(first - count)
            if deadline is not None and time.monotonic() >= deadline:
                progress.close()
                raise CommandError(
                    words.with_count(
                        ngettext(
                            "Still %(count)s recipient pending after %(seconds)s.",
                            "Still %(count)s recipients pending after %(seconds)s.",
                            count,
                        ),
                        count,
                        seconds=f"{timeout:g}s",
                    )
                )
            time.sleep(interval)
            count = self._count()
            if count > first:  # a new job started meanwhile: measure against the new peak
                first = progress.total = count
        progress.update(first, force=True)
        progress.close()
        self.stdout.write(
            self.style.SUCCESS(
                words.with_count(
                    ngettext(
                        "%(count)s recipient delivered: nothing is pending.",
                        "All %(count)s recipients delivered: nothing is pending.",
                        first,
                    ),
                    first,
                )
            )
        )

    def _count(self) -> int:
        try:
            return get_backend().bulk_count().count
        except (TextFlowError, TextFlowConfigurationError) as err:
            raise CommandError(
                _("Could not get the bulk count: %(error)s") % {"error": err}
            ) from err
