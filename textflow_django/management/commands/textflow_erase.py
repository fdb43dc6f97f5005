"""``manage.py textflow_erase NUMBER [NUMBER...]``: erase every row that holds these numbers
(a GDPR/CCPA erasure request), through ``textflow_django.privacy.erase_phone_number``.

Every number is read first: one that is no phone number is a ``CommandError`` naming it,
and nothing is erased for any. Then each number is erased in its own transaction, and one
line per number says what went. Every number the command writes, the refused one too, is
masked as in the logs (``phone.mask``: the output of a command ends up in cron mails and
terminals' scrollback, and a mistyped number is still the person's). The opt-out list
keeps the number unless ``--remove-opt-out``; ``--dry-run`` counts and changes nothing.
"""

from __future__ import annotations

from argparse import ArgumentParser
from typing import Any

from django.core.management.base import BaseCommand, CommandError
from django.utils.translation import gettext as _

from ... import phone, privacy


def describe(report: privacy.ErasureReport) -> str:
    """One line about one number: what was (or would be) erased, and the opt-out list."""
    found = privacy.counted(report.as_dict())
    values = {"number": phone.mask(report.phone_number), "what": found}
    if not found:
        line = _("%(number)s: nothing to erase.") % values
    elif report.dry_run:
        line = _("%(number)s: would erase %(what)s.") % values
    else:
        line = _("%(number)s: erased %(what)s.") % values
    if report.rate_limit_counters is None:
        line += " " + _("(Rate-limit counters in a cache are not counted in a dry run.)")
    if report.opt_out_kept:
        line += " " + _("Kept on the opt-out list (--remove-opt-out removes it).")
    return line


class Command(BaseCommand):
    help = (
        "Erase every row that holds these phone numbers (verifications, bulk SMS recipients, "
        "SMS replies, rate-limit counters), for a GDPR/CCPA erasure request. The opt-out "
        "list keeps them unless --remove-opt-out."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("numbers", nargs="+", metavar="NUMBER", help="A phone number.")
        parser.add_argument(
            "--remove-opt-out",
            action="store_true",
            help="Take the numbers off the opt-out list too (the site may then text them).",
        )
        parser.add_argument(
            "--dry-run", action="store_true", help="Say what would be erased; change nothing."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        numbers: list[str] = []
        for given in options["numbers"]:
            try:
                number = privacy.parse_number(given)
            except phone.InvalidPhoneNumberError as err:
                raise CommandError(
                    _("%(value)r is not a phone number (%(reason)s): nothing was erased.")
                    % {"value": phone.mask(given), "reason": " ".join(err.messages)}
                ) from err
            if number not in numbers:
                numbers.append(number)
        if options["dry_run"]:
            self.stdout.write(_("Dry run: nothing is erased."))
        for number in numbers:
            report = privacy.erase_phone_number(
                number, keep_opt_out=not options["remove_opt_out"], dry_run=options["dry_run"]
            )
            self.stdout.write(describe(report))
