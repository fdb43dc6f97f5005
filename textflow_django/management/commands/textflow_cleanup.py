"""``manage.py textflow_cleanup``: delete what ``TEXTFLOW["RETENTION"]`` keeps no longer.

Old verifications (their days kept as daily totals for the insights), the recipients and
batches of long-finished bulk jobs, old SMS replies, expired rate-limit counters and ended
Fraud Guard blocks, in small batches: safe from cron while the site serves
(``textflow_django.retention`` has the rules). Prints what it removed, one line per kind.
"""

from __future__ import annotations

import datetime as dt
from argparse import ArgumentParser
from typing import Any

from django.core.management.base import BaseCommand, CommandError
from django.db import DatabaseError
from django.utils import timezone
from django.utils.translation import gettext as _
from django.utils.translation import ngettext

from ... import retention
from .. import _words as words


def _when(moment: dt.datetime) -> str:
    """An instant in the current time zone, to the minute."""
    local = timezone.localtime(moment) if timezone.is_aware(moment) else moment
    return local.strftime("%Y-%m-%d %H:%M")


class Command(BaseCommand):
    help = (
        "Delete old verifications (keeping their daily totals), the recipients of bulk jobs "
        "finished long ago, old SMS replies, expired rate-limit counters and ended Fraud "
        "Guard blocks, as TEXTFLOW['RETENTION'] says, in small batches; safe to run from "
        "cron while the site serves."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument(
            "--dry-run",
            action="store_true",
            help="Count what would be deleted; delete nothing.",
        )
        parser.add_argument(
            "--batch-size",
            type=int,
            default=retention.DEFAULT_BATCH_SIZE,
            help=f"Rows deleted per transaction, 1 to {retention.MAX_BATCH_SIZE:,} "
            f"(default {retention.DEFAULT_BATCH_SIZE:,}).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        batch_size = options["batch_size"]
        try:
            retention.check_batch_size(batch_size)
        except ValueError as err:
            raise CommandError(
                _("--batch-size must be 1 to %(max)s, not %(value)s.")
                % {"max": f"{retention.MAX_BATCH_SIZE:,}", "value": batch_size}
            ) from err
        try:
            report = retention.cleanup(dry_run=options["dry_run"], batch_size=batch_size)
        except ValueError as err:  # RETENTION (system check E019 says so at start-up too)
            raise CommandError(str(err)) from err
        except DatabaseError as err:
            # Whole batches are done; a next run carries on where this one stopped.
            raise CommandError(
                _("The database failed during the cleanup: %(error)s") % {"error": err}
            ) from err
        if report.dry_run:
            self.stdout.write(self.style.WARNING(_("Dry run: nothing was deleted. Would delete:")))
        else:
            self.stdout.write(_("Deleted:"))
        for line in self._lines(report):
            self.stdout.write(f"  {line}")

    def _lines(self, report: retention.CleanupReport) -> list[str]:
        deleted, cutoffs = report.deleted, report.cutoffs
        lines = []
        sent_before = cutoffs["verifications"]
        if sent_before is None:
            lines.append(_("verifications: kept forever (RETENTION['VERIFICATIONS'] is None)"))
        else:
            count = deleted["verifications"]
            line = words.with_count(
                ngettext(
                    "%(count)s verification sent before %(cutoff)s",
                    "%(count)s verifications sent before %(cutoff)s",
                    count,
                ),
                count,
                cutoff=_when(sent_before),
            )
            if report.days_aggregated:
                days = report.days_aggregated
                line += " " + words.with_count(
                    ngettext(
                        "(%(count)s day kept as daily totals)",
                        "(%(count)s days kept as daily totals)",
                        days,
                    ),
                    days,
                )
            lines.append(line)
        finished_before = cutoffs["bulk_recipients"]
        if finished_before is None:
            lines.append(_("bulk recipients: kept forever (RETENTION['BULK_RECIPIENTS'] is None)"))
        else:
            count = deleted["bulk_recipients"]
            batches = deleted["bulk_batches"]
            lines.append(
                words.with_count(
                    ngettext(
                        "%(count)s bulk recipient and %(batches)s, from jobs finished before "
                        "%(cutoff)s",
                        "%(count)s bulk recipients and %(batches)s, from jobs finished before "
                        "%(cutoff)s",
                        count,
                    ),
                    count,
                    batches=words.batches(batches),
                    cutoff=_when(finished_before),
                )
            )
        received_before = cutoffs["replies"]
        if received_before is None:
            lines.append(_("SMS replies: kept forever (RETENTION['REPLIES'] is None)"))
        else:
            count = deleted["replies"]
            lines.append(
                words.with_count(
                    ngettext(
                        "%(count)s SMS reply received before %(cutoff)s",
                        "%(count)s SMS replies received before %(cutoff)s",
                        count,
                    ),
                    count,
                    cutoff=_when(received_before),
                )
            )
        count = deleted["rate_limit_counters"]
        lines.append(
            words.with_count(
                ngettext(
                    "%(count)s expired rate-limit counter",
                    "%(count)s expired rate-limit counters",
                    count,
                ),
                count,
            )
        )
        count = deleted["fraud_blocks"]
        lines.append(
            words.with_count(
                ngettext(
                    "%(count)s ended Fraud Guard block", "%(count)s ended Fraud Guard blocks", count
                ),
                count,
            )
        )
        return lines
