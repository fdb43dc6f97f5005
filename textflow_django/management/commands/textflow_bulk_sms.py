"""``manage.py textflow_bulk_sms``: one text to many numbers, through TextFlow's /bulk-sms."""

from __future__ import annotations

import sys
import time
from argparse import ArgumentParser
from pathlib import Path
from typing import Any, TextIO, cast

from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from ... import bulk
from ...exceptions import TextFlowConfigurationError
from ...models import BulkSMSJob
from .._progress import Progress


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
            help="Most numbers per /bulk-sms call (default: TEXTFLOW['BULK_BATCH_SIZE']).",
        )
        parser.add_argument(
            "--strict",
            action="store_true",
            help="Fully validate numbers already in E.164 too (slower; see the README).",
        )
        parser.add_argument(
            "--dry-run", action="store_true", help="Validate and count; send nothing."
        )
        parser.add_argument(
            "--no-input",
            "--noinput",
            action="store_false",
            dest="interactive",
            help="Do not ask for confirmation before sending.",
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

    # -- building the job ------------------------------------------------------------------

    def _new_job(self, options: dict[str, Any]) -> BulkSMSJob | None:
        if options["resend_uncertain"]:
            raise CommandError("--resend-uncertain goes with --resume.")
        text = self._text(options)
        source = self._source(options)
        batch_size = options["batch_size"]
        if batch_size is not None and batch_size < 1:
            raise CommandError("--batch-size must be at least 1.")
        started = time.monotonic()
        # A dry run builds the job like a real one, reports it, and rolls it all back.
        with transaction.atomic():
            job = bulk.create_job(
                text=text, source=source, batch_size=batch_size, strict=options["strict"]
            )
            self._report_counts(job, time.monotonic() - started)
            if options["dry_run"]:
                self.stdout.write(self.style.WARNING("Dry run: nothing was sent."))
                transaction.set_rollback(True)
                return None
        if job.total == 0:
            job.delete()
            raise CommandError("No valid recipients: nothing to send.")
        if options["interactive"] and sys.stdin.isatty():
            answer = input(f"Send this SMS to {job.total:,} recipients? [y/N] ")
            if answer.strip().lower() not in ("y", "yes"):
                job.delete()
                self.stdout.write("Cancelled: nothing was sent.")
                return None
        return job

    def _text(self, options: dict[str, Any]) -> str:
        if (options["text"] is None) == (options["text_file"] is None):
            raise CommandError("Give the text with exactly one of --text or --text-file.")
        if options["text_file"] is not None:
            try:
                text = Path(options["text_file"]).read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as err:
                raise CommandError(
                    f"Cannot read --text-file {options['text_file']}: {err}"
                ) from err
        else:
            text = options["text"]
        text = text.strip()
        if not text:
            raise CommandError("The text is empty.")
        return text

    def _source(self, options: dict[str, Any]) -> bulk.Source:
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
                "Give exactly one source of recipients: --model with --field, --file, or "
                f"--numbers (got {', '.join(given) or 'none'})."
            )
        if options["field"] is not None and options["model"] is None:
            raise CommandError("--field goes with --model.")
        if options["filter"] and options["model"] is None:
            raise CommandError("--filter goes with --model.")
        if options["column"] is not None and options["file"] is None:
            raise CommandError("--column goes with --file.")
        try:
            if options["model"] is not None:
                if not options["field"]:
                    raise CommandError("--model needs --field.")
                return bulk.model_numbers(options["model"], options["field"], options["filter"])
            if options["file"] is not None:
                return self._file(options["file"], options["column"])
            values = [v.strip() for v in options["numbers"].split(",")]
            return bulk.list_numbers(values, "command line")
        except bulk.SourceError as err:
            raise CommandError(str(err)) from err

    def _file(self, name: str, column: str | None) -> bulk.Source:
        if name == "-":
            return bulk.file_numbers(sys.stdin, name="stdin", column=column)
        path = Path(name)
        if not path.is_file():
            raise CommandError(f"--file {name}: no such file.")
        try:
            stream = path.open(encoding="utf-8", newline="")
        except OSError as err:
            raise CommandError(f"Cannot read --file {name}: {err}") from err
        # The stream stays open while the job is built; the process ends soon after.
        return bulk.file_numbers(stream, name=str(path), column=column)

    def _report_counts(self, job: BulkSMSJob, elapsed: float) -> None:
        self.stdout.write(
            f"Job {job.pk}: {job.total:,} recipients in {job.batches_total:,} batches of at "
            f"most {job.batch_size:,}; skipped {job.invalid:,} invalid and "
            f"{job.duplicates:,} duplicates (read in {elapsed:.1f}s)."
        )
        for sample in job.invalid_samples:
            self.stdout.write(f"  invalid: {sample}")

    # -- sending ---------------------------------------------------------------------------

    def _resume_job(self, options: dict[str, Any]) -> BulkSMSJob:
        clash = [
            f"--{name.replace('_', '-')}"
            for name in ("model", "file", "numbers", "text", "text_file", "batch_size")
            if options[name] is not None
        ]
        if clash:
            raise CommandError(f"--resume continues a job as it was: drop {', '.join(clash)}.")
        if options["dry_run"]:
            raise CommandError("--dry-run does not go with --resume.")
        try:
            job = BulkSMSJob.objects.get(pk=options["resume"])
        except BulkSMSJob.DoesNotExist:
            raise CommandError(f"There is no bulk job {options['resume']}.") from None
        if job.status == BulkSMSJob.Status.FINISHED and not options["resend_uncertain"]:
            raise CommandError(f"Job {job.pk} is already finished.")
        if job.status == BulkSMSJob.Status.PREPARING:
            raise CommandError(
                f"Job {job.pk} was never fully prepared (its import was interrupted); "
                "start a new job."
            )
        self.stdout.write(f"Resuming job {job.pk}: {job.sent:,}/{job.total:,} sent so far.")
        return job

    def _send(self, job: BulkSMSJob, options: dict[str, Any]) -> None:
        if options["enqueue"]:
            try:
                queued = bulk.enqueue_job(job.pk, resend_uncertain=options["resend_uncertain"])
            except ImportError as err:
                raise CommandError(
                    "--enqueue needs Django's tasks framework (Django 6) or the django-tasks "
                    f"backport: {err}"
                ) from err
            self.stdout.write(
                self.style.SUCCESS(f"Job {job.pk}: {queued:,} batches queued for the workers.")
            )
            return
        started = time.monotonic()
        progress = Progress(cast(TextIO, self.stderr._out), job.total, label="recipients")
        try:
            job = bulk.run_job(
                job.pk,
                resend_uncertain=options["resend_uncertain"],
                progress=progress.update,
            )
        except bulk.BulkJobStopped as stop:
            progress.close()
            stopped = stop.job
            hint = f"manage.py textflow_bulk_sms --resume {stopped.pk}"
            if stopped.uncertain:
                hint += (
                    f" ({stopped.uncertain:,} recipients are in batches TextFlow may have "
                    "accepted; add --resend-uncertain to send those again)"
                )
            raise CommandError(
                f"Job {stopped.pk} stopped: {stop.error}. {stopped.sent:,}/{stopped.total:,} "
                f"recipients sent; nothing is lost. Resume with: {hint}"
            ) from stop
        progress.update(job.sent, force=True)
        progress.close()
        elapsed = time.monotonic() - started
        rate = job.sent / elapsed if elapsed > 0 else 0.0
        self.stdout.write(
            self.style.SUCCESS(
                f"Job {job.pk} {job.get_status_display()}: {job.sent:,} recipients sent in "
                f"{job.batches_sent:,} batches, {job.invalid:,} invalid, {job.duplicates:,} "
                f"duplicates, {job.uncertain:,} uncertain; {elapsed:.1f}s ({rate:,.0f}/s)."
            )
        )
