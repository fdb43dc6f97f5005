"""``manage.py textflow_bulk_count``: recipients of started bulk jobs still waiting."""

from __future__ import annotations

import time
from argparse import ArgumentParser
from typing import Any, TextIO, cast

from django.core.management.base import BaseCommand, CommandError

from ...backends import get_backend
from ...exceptions import TextFlowConfigurationError, TextFlowError
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
        interval = options["interval"]
        if interval <= 0:
            raise CommandError("--interval must be positive.")
        count = self._count()
        if not options["wait"]:
            self.stdout.write(str(count))
            return
        deadline = None if options["timeout"] is None else time.monotonic() + options["timeout"]
        progress = Progress(
            cast(TextIO, self.stderr._out), count, label="delivered", interval=interval
        )
        first = count
        while count > 0:
            progress.update(first - count)
            if deadline is not None and time.monotonic() >= deadline:
                progress.close()
                raise CommandError(f"Still {count:,} pending after {options['timeout']:g}s.")
            time.sleep(interval)
            count = self._count()
            if count > first:  # a new job started meanwhile: measure against the new peak
                first = progress.total = count
        progress.update(first, force=True)
        progress.close()
        self.stdout.write(self.style.SUCCESS("0 pending: every bulk recipient has been reached."))

    def _count(self) -> int:
        try:
            return get_backend().bulk_count().count
        except (TextFlowError, TextFlowConfigurationError) as err:
            raise CommandError(f"Could not get the bulk count: {err}") from err
