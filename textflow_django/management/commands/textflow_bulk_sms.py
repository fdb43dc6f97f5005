"""``manage.py textflow_bulk_sms``: one text to many numbers, through TextFlow's /bulk-sms."""

from __future__ import annotations

import sys
import time
from argparse import ArgumentParser
from contextlib import ExitStack
from pathlib import Path
from typing import Any, TextIO, cast

from django.core.management.base import BaseCommand, CommandError
from django.db import DatabaseError, router, transaction
from django.utils.translation import gettext as _
from django.utils.translation import ngettext

from ... import bulk
from ...conf import conf
from ...exceptions import TextFlowConfigurationError, TextFlowError
from ...models import BulkSMSJob
from .. import _bulk_lines as lines
from .. import _words as words
from .._progress import Progress

#: Options that define a new job (its recipients, text and batches): not for --resume.
_JOB_OPTIONS = (
    "model",
    "field",
    "filter",
    "file",
    "column",
    "numbers",
    "text",
    "text_file",
    "batch_size",
    "strict",
)


def _nothing_sent(err: Exception) -> str:
    """``err``'s message (the source's or the text's refusal), then that nothing was sent."""
    # Translators: %(error)s is a whole sentence (why the recipients or the text were refused).
    return _("%(error)s Nothing was sent.") % {"error": err}


def _left_out(count: int) -> str:
    """How many numbers the opt-out list left out of the job (``BulkSMSJob.opted_out``)."""
    return words.with_count(
        ngettext(
            "Left out %(count)s number on the opt-out list (manage.py textflow_optout).",
            "Left out %(count)s numbers on the opt-out list (manage.py textflow_optout).",
            count,
        ),
        count,
    )


class Command(BaseCommand):
    help = (
        "Send one SMS text to many numbers through TextFlow's bulk API, in tracked, "
        "resumable batches. Give exactly one source: --model/--field, --file or --numbers."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        source = parser.add_argument_group("recipients (exactly one source)")
        source.add_argument("--model", help="app_label.Model whose field holds the numbers.")
        source.add_argument("--field", help="The field of --model holding the numbers.")
        source.add_argument(
            "--filter",
            action="append",
            default=[],
            metavar="LOOKUP=VALUE",
            help="Filter --model rows, e.g. --filter is_active=1 (repeatable).",
        )
        source.add_argument(
            "--file", help="A file of numbers, one per line, or a CSV with --column; - for stdin."
        )
        source.add_argument("--column", help="The CSV column of --file holding the numbers.")
        source.add_argument("--numbers", help="Comma-separated numbers, e.g. +1202...,+4477...")
        text = parser.add_argument_group("text (exactly one)")
        text.add_argument("--text", help="The SMS text.")
        text.add_argument("--text-file", help="A UTF-8 file holding the SMS text.")
        parser.add_argument(
            "--batch-size",
            type=int,
            help="Most numbers per /bulk-sms call, 1 to "
            f"{bulk.MAX_BATCH_SIZE:,} (default: TEXTFLOW['BULK_BATCH_SIZE']).",
        )
        parser.add_argument(
            "--strict",
            action="store_true",
            help="Validate numbers already in E.164 in full too instead of through the fast "
            "path's tables (the same answers, slower; see the README).",
        )
        parser.add_argument(
            "--dry-run", action="store_true", help="Validate and count; send nothing."
        )
        parser.add_argument(
            "--no-input",
            "--noinput",
            action="store_false",
            dest="interactive",
            help="Do not ask for confirmation before sending (it is only asked when run "
            "from a terminal).",
        )
        parser.add_argument(
            "--resume", type=int, metavar="JOB_ID", help="Continue a stopped or crashed job."
        )
        parser.add_argument(
            "--resend-uncertain",
            action="store_true",
            help="With --resume: send again the batches whose outcome is unknown "
            "(their recipients may get the SMS twice).",
        )
        parser.add_argument(
            "--enqueue",
            action="store_true",
            help="Queue the batches as Django tasks for the project's workers instead of "
            "sending them from this process.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            if options["resume"] is not None:
                job = self._resume_job(options)
            else:
                new = self._new_job(options)
                if new is None:
                    return
                job = new
            self._send(job, options)
        except TextFlowConfigurationError as err:
            raise CommandError(str(err)) from err
        except (DatabaseError, UnicodeEncodeError) as err:
            # A value the database (or its driver) refuses is the operator's to fix, not a
            # traceback; what was already sent is recorded (see --resume).
            raise CommandError(
                _("The database refused the job: %(error)s") % {"error": err}
            ) from err
        except ValueError as err:  # a job that cannot be resumed (bulk.run_job says why)
            raise CommandError(str(err)) from err

    # -- building the job ------------------------------------------------------------------

    def _new_job(self, options: dict[str, Any]) -> BulkSMSJob | None:
        if options["resend_uncertain"]:
            raise CommandError(_("--resend-uncertain goes with --resume."))
        text = self._text(options)
        batch_size = self._batch_size(options)
        started = time.monotonic()
        with ExitStack() as files:
            source = self._source(options, files)
            # create_job() is one transaction of its own (a source failing half-way leaves
            # no job); this one, on the same database, is there to roll a dry run back.
            with transaction.atomic(using=router.db_for_write(BulkSMSJob)):
                try:
                    ingested = bulk.ingest_job(
                        text=text, source=source, batch_size=batch_size, strict=options["strict"]
                    )
                except bulk.SourceError as err:
                    raise CommandError(_nothing_sent(err)) from err
                job = ingested.job
                for line in lines.read(job, time.monotonic() - started, dry_run=options["dry_run"]):
                    self.stdout.write(line)
                if ingested.opted_out:
                    self.stdout.write(_left_out(ingested.opted_out))
                if options["dry_run"]:
                    self.stdout.write(self.style.WARNING(lines.dry_run_done(job)))
                    transaction.set_rollback(True)
                    return None
        if job.total == 0:
            job.delete()
            raise CommandError(_("No valid recipients: nothing to send."))
        if self._may_prompt(options) and not self._confirmed(job):
            job.delete()
            self.stdout.write(_("Cancelled: nothing was sent."))
            return None
        return job

    def _batch_size(self, options: dict[str, Any]) -> int:
        """--batch-size, else the setting, checked before anything is read."""
        if options["batch_size"] is not None:
            size, name = options["batch_size"], "--batch-size"
        else:
            name = "TEXTFLOW['BULK_BATCH_SIZE']"
            try:
                size = conf.BULK_BATCH_SIZE
            except (TypeError, ValueError) as err:
                raise CommandError(f"{name}: {err}") from err
        try:
            return bulk.check_batch_size(size)
        except ValueError as err:
            raise CommandError(f"{name}: {err}") from err

    def _may_prompt(self, options: dict[str, Any]) -> bool:
        """Ask only a person: run from a terminal (not call_command, whose ``interactive``
        defaults to True, nor a script or cron) and without --no-input."""
        from_command_line = bool(getattr(self, "_called_from_command_line", False))
        return bool(options["interactive"] and from_command_line and sys.stdin.isatty())

    def _confirmed(self, job: BulkSMSJob) -> bool:
        try:
            answer = input(lines.prompt(job))
        except EOFError:  # Ctrl-D: no answer is a no
            self.stdout.write("")
            return False
        return answer.strip().lower() in ("y", "yes")

    def _text(self, options: dict[str, Any]) -> str:
        if (options["text"] is None) == (options["text_file"] is None):
            raise CommandError(_("Give the text with exactly one of --text or --text-file."))
        if options["text_file"] is not None:
            try:
                # utf-8-sig: a byte-order mark (Notepad, Excel) is not part of the SMS.
                text = Path(options["text_file"]).read_text(encoding="utf-8-sig")
            except (OSError, UnicodeDecodeError) as err:
                raise CommandError(
                    _("Cannot read --text-file %(file)s: %(error)s")
                    % {"file": options["text_file"], "error": err}
                ) from err
        else:
            text = options["text"]
        text = text.strip()
        try:
            bulk.check_text(text)
        except ValueError as err:
            raise CommandError(_nothing_sent(err)) from err
        return text

    def _source(self, options: dict[str, Any], files: ExitStack) -> bulk.Source:
        given = [
            name
            for name, present in (
                ("--model", options["model"] is not None),
                ("--file", options["file"] is not None),
                ("--numbers", options["numbers"] is not None),
            )
            if present
        ]
        if len(given) != 1:
            raise CommandError(
                _(
                    "Give exactly one source of recipients: --model with --field, --file, or "
                    "--numbers (got %(given)s)."
                )
                % {"given": ", ".join(given) or _("none")}
            )
        if options["field"] is not None and options["model"] is None:
            raise CommandError(_("--field goes with --model."))
        if options["filter"] and options["model"] is None:
            raise CommandError(_("--filter goes with --model."))
        if options["column"] is not None and options["file"] is None:
            raise CommandError(_("--column goes with --file."))
        try:
            if options["model"] is not None:
                if not options["field"]:
                    raise CommandError(_("--model needs --field."))
                return bulk.model_numbers(options["model"], options["field"], options["filter"])
            if options["file"] is not None:
                return self._file(options["file"], options["column"], files)
            values = [v.strip() for v in options["numbers"].split(",")]
            return bulk.list_numbers(values, "command line")
        except bulk.SourceError as err:
            raise CommandError(str(err)) from err

    def _file(self, name: str, column: str | None, files: ExitStack) -> bulk.Source:
        if name != "-":
            path = Path(name)
            if path.is_dir():
                raise CommandError(
                    _("--file %(file)s is a directory, not a file of numbers.") % {"file": name}
                )
            if not path.exists():
                raise CommandError(_("--file %(file)s: no such file.") % {"file": name})
        try:
            stream = bulk.open_numbers_file(name)
        except OSError as err:
            raise CommandError(
                _("Cannot read --file %(file)s: %(error)s") % {"file": name, "error": err}
            ) from err
        if stream is not sys.stdin:
            files.callback(stream.close)  # once the job is built
        return bulk.file_numbers(stream, name="stdin" if name == "-" else name, column=column)

    # -- sending ---------------------------------------------------------------------------

    def _resume_job(self, options: dict[str, Any]) -> BulkSMSJob:
        # A resumed job keeps its recipients, text and batches: an option that would change
        # them is refused rather than silently ignored.
        clash = [
            f"--{name.replace('_', '-')}"
            for name in _JOB_OPTIONS
            # Unset is None (False for --strict, [] for --filter); 0 is a value given.
            if options[name] is not None and options[name] is not False and options[name] != []
        ]
        if clash:
            raise CommandError(
                _("--resume continues a job as it was: drop %(options)s.")
                % {"options": ", ".join(clash)}
            )
        if options["dry_run"]:
            raise CommandError(_("--dry-run does not go with --resume."))
        try:
            job = BulkSMSJob.objects.get(pk=options["resume"])
        except BulkSMSJob.DoesNotExist:
            raise CommandError(
                _("There is no bulk job %(job)s.") % {"job": options["resume"]}
            ) from None
        if job.status == BulkSMSJob.Status.FINISHED and not options["resend_uncertain"]:
            raise CommandError(_("Job %(job)s is already finished.") % {"job": job.pk})
        if job.status == BulkSMSJob.Status.PREPARING:
            raise CommandError(
                _(
                    "Job %(job)s was never fully prepared (its import was interrupted); "
                    "start a new job."
                )
                % {"job": job.pk}
            )
        self.stdout.write(lines.resuming(job))
        return job

    def _send(self, job: BulkSMSJob, options: dict[str, Any]) -> None:
        if options["enqueue"]:
            # Counted before queueing: once queued, the workers claim this resume's own
            # batches, which are not "another worker's".
            elsewhere = bulk.batches_in_flight(job.pk)
            try:
                # Imported here, not at the top: the tasks module needs a tasks framework,
                # which only --enqueue does (its ImportError becomes the error below).
                from ...tasks import enqueue_bulk_job

                queued = enqueue_bulk_job(job.pk, resend_uncertain=options["resend_uncertain"])
            except ImportError as err:
                raise CommandError(
                    _(
                        "--enqueue needs Django's tasks framework (Django 6) or the "
                        "django-tasks backport: %(error)s"
                    )
                    % {"error": err}
                ) from err
            job.refresh_from_db()
            if job.status == BulkSMSJob.Status.STOPPED:
                # A worker (or an immediate task backend) already hit a TextFlow failure.
                raise self._stopped(job, None, options)
            self.stdout.write(self.style.SUCCESS(lines.queued(job, queued)))
            self._in_flight(elsewhere)
            return
        started = time.monotonic()
        progress = Progress(cast(TextIO, self.stderr._out), job.total, unit=words.recipients)
        try:
            job = bulk.run_job(
                job.pk,
                resend_uncertain=options["resend_uncertain"],
                progress=progress.update,
            )
        except bulk.BulkJobStopped as stop:
            progress.close()
            raise self._stopped(stop.job, stop.error, options) from stop
        progress.update(job.sent, force=True)
        progress.close()
        self.stdout.write(self.style.SUCCESS(lines.finished(job, time.monotonic() - started)))
        # This sender's batches are all recorded: what is still being sent is others'.
        self._in_flight(bulk.batches_in_flight(job.pk))

    def _in_flight(self, elsewhere: int) -> None:
        """Say how many batches a resume left to live senders (another worker claimed them
        less than a lease ago, ``bulk.batches_in_flight``): the job is not finished until
        they are recorded."""
        if elsewhere:
            self.stdout.write(self.style.WARNING(lines.in_flight(elsewhere, conf.BULK_LEASE)))

    def _stopped(
        self, job: BulkSMSJob, error: TextFlowError | None, options: dict[str, Any]
    ) -> CommandError:
        """The error for a stopped job: what happened, what was sent, how to resume."""
        return CommandError(lines.stopped(job, error, enqueue=options["enqueue"]))
