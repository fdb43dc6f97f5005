"""``manage.py textflow_report``: the figures of the admin's insights page, as text or JSON.

Codes sent, verified and the conversion per day and per country, the prefixes with the most
unverified codes, and the Fraud Guard's blocks in force (``textflow_django.insights``).
``--format table`` (the default) prints aligned plain text; ``--format json`` prints one JSON
document (``Insights.as_dict``), for scripts and monitoring.
"""

from __future__ import annotations

import datetime as dt
import json
from argparse import ArgumentParser
from collections.abc import Sequence
from typing import Any

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone
from django.utils.translation import gettext as _
from django.utils.translation import ngettext

from ... import insights


def _percent(figures: insights.Figures) -> str:
    return "-" if figures.percent is None else f"{figures.percent:.1f}%"


def _when(moment: dt.datetime) -> str:
    """An instant in the current time zone, to the minute."""
    local = timezone.localtime(moment) if timezone.is_aware(moment) else moment
    return local.strftime("%Y-%m-%d %H:%M")


def _table(headers: Sequence[str], rows: Sequence[Sequence[object]], align: str) -> list[str]:
    """Aligned plain-text lines, each column as wide as its widest cell: ``align`` has an
    ``l`` (left) or ``r`` (right: figures) per column."""
    cells = [[str(cell) for cell in row] for row in [headers, *rows]]
    widths = [max(len(row[n]) for row in cells) for n in range(len(headers))]
    return [
        "  ".join(
            cell.rjust(width) if side == "r" else cell.ljust(width)
            for cell, width, side in zip(row, widths, align, strict=True)
        ).rstrip()
        for row in cells
    ]


class Command(BaseCommand):
    help = (
        "Print codes sent, verified and the conversion rate per day and per country, the "
        "prefixes with the most unverified codes and the Fraud Guard's blocks in force."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument(
            "--days",
            type=int,
            default=insights.DEFAULT_DAYS,
            help=(
                f"Calendar days to report, ending today (1 to {insights.MAX_DAYS}; "
                f"default {insights.DEFAULT_DAYS})."
            ),
        )
        parser.add_argument(
            "--format",
            choices=("table", "json"),
            default="table",
            help="table: aligned plain text (the default); json: one JSON document.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            days = insights.check_days(options["days"])
        except ValueError as err:
            raise CommandError(
                _("--days must be 1..%(max)d, not %(days)d.")
                % {"max": insights.MAX_DAYS, "days": options["days"]}
            ) from err
        figures = insights.compute(days)
        if options["format"] == "json":
            self.stdout.write(json.dumps(figures.as_dict(), indent=2))
            return
        self.stdout.write("\n".join(self._lines(figures)))

    def _lines(self, figures: insights.Insights) -> list[str]:
        totals = figures.totals
        lines = [
            ngettext(
                "Codes sent from %(first)s to %(last)s (%(days)d day, time zone %(zone)s)",
                "Codes sent from %(first)s to %(last)s (%(days)d days, time zone %(zone)s)",
                figures.days,
            )
            % {
                "first": figures.first_day.isoformat(),
                "last": figures.last_day.isoformat(),
                "days": figures.days,
                "zone": timezone.get_current_timezone_name(),
            },
            _("sent %(sent)d, verified %(verified)d, conversion %(conversion)s")
            % {"sent": totals.sent, "verified": totals.verified, "conversion": _percent(totals)},
            "",
            _("Per day"),
            *_table(
                [_("day"), _("sent"), _("verified"), _("conversion")],
                [
                    [day.date.isoformat(), day.sent, day.verified, _percent(day)]
                    for day in figures.daily
                ],
                "lrrr",
            ),
            "",
            _("Per country (the %(top)d busiest)") % {"top": insights.TOP},
        ]
        countries = [
            [c.country or _("unknown"), c.sent, c.verified, _percent(c)] for c in figures.countries
        ]
        if figures.other_countries.sent:
            other = figures.other_countries
            countries.append([_("others"), other.sent, other.verified, _percent(other)])
        lines += _table(
            [_("country"), _("sent"), _("verified"), _("conversion")], countries, "lrrr"
        )
        lines += [
            "",
            ngettext(
                "Prefixes with the most unverified codes (+ and %(digits)d digit)",
                "Prefixes with the most unverified codes (+ and %(digits)d digits)",
                figures.prefix_digits,
            )
            % {"digits": figures.prefix_digits},
            *_table(
                [_("prefix"), _("sent"), _("verified"), _("unverified")],
                [[p.prefix, p.sent, p.verified, p.unverified] for p in figures.prefixes],
                "lrrr",
            ),
            "",
            _("Blocks in force"),
        ]
        if figures.blocks:
            lines += _table(
                [_("destination"), _("scope"), _("judged"), _("verified"), _("until"), _("reason")],
                [
                    [
                        b.value,
                        b.scope,
                        b.sends,
                        b.conversions,
                        _when(b.until),
                        b.reason,
                    ]
                    for b in figures.blocks
                ],
                "llrrll",
            )
            if figures.more_blocks:
                lines.append(_("(more: the admin lists them all)"))
        else:
            lines.append(_("none"))
        return lines
