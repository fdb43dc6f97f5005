"""What ``manage.py textflow_bulk_sms`` says about a job, sentence by sentence.

Kept apart from the command, which parses options, calls :mod:`textflow_django.bulk` and
maps its errors: the wording (translatable, every count agreeing with its noun through
:mod:`._words`) is read and changed here. Each function returns the text; the command
decides where it goes (stdout, a prompt, a CommandError).
"""

from __future__ import annotations

from django.utils.translation import gettext as _
from django.utils.translation import ngettext

from .. import bulk
from .._sms import segments
from ..exceptions import TextFlowError
from ..models import BulkSMSJob
from . import _words as words
from ._progress import rate_text


def read(job: BulkSMSJob, elapsed: float, *, dry_run: bool) -> list[str]:
    """What was read into ``job``: recipients, batches, what was skipped, the text's SMS
    segments, then the samples of invalid entries. A dry run's job is rolled back, so its
    lines name no job (its number would name nothing, and the next job may get it)."""
    counts = _(
        "%(recipients)s in %(batches)s of at most %(size)s; skipped %(invalid)s and "
        "%(duplicates)s (read in %(seconds)s)."
    ) % {
        "recipients": words.recipients(job.total),
        "batches": words.batches(job.batches_total),
        "size": f"{job.batch_size:,}",
        "invalid": words.invalid_numbers(job.invalid),
        "duplicates": words.duplicates(job.duplicates),
        "seconds": f"{elapsed:.1f}s",
    }
    if dry_run:
        head = _("Dry run: %(counts)s") % {"counts": counts}
    else:
        head = _("Job %(job)s: %(counts)s") % {"job": job.pk, "counts": counts}
    parts = segments(job.text)
    text = _("Text: %(characters)s, %(segments)s (%(encoding)s) a recipient; %(total)s in all.") % {
        "characters": words.characters(len(job.text)),
        "segments": words.sms_segments(parts.count),
        "encoding": parts.encoding,
        "total": words.sms_segments(parts.count * job.total),
    }
    # Translators: one sample of the entries a job skipped, e.g. "item 3: 'bad' (invalid)".
    invalid = [_("invalid: %(sample)s") % {"sample": sample} for sample in job.invalid_samples]
    return [head, text, *(f"  {line}" for line in invalid)]


def dry_run_done(job: BulkSMSJob) -> str:
    """The end of a dry run: what was (not) done, and what a run without it would do."""
    return _(
        "Dry run: nothing was sent and no job was kept. Without --dry-run, a new job would "
        "send this text to %(recipients)s in %(batches)s."
    ) % {
        "recipients": words.recipients(job.total),
        "batches": words.batches(job.batches_total),
    }


def prompt(job: BulkSMSJob) -> str:
    """The question asked on a terminal before sending."""
    return words.with_count(
        ngettext(
            "Send this SMS to %(count)s recipient? [y/N] ",
            "Send this SMS to %(count)s recipients? [y/N] ",
            job.total,
        ),
        job.total,
    )


def resuming(job: BulkSMSJob) -> str:
    return _("Resuming job %(job)s: %(sent)s/%(total)s sent so far.") % {
        "job": job.pk,
        "sent": f"{job.sent:,}",
        "total": words.recipients(job.total),
    }


def queued(job: BulkSMSJob, batches: int) -> str:
    return _("Job %(job)s: %(batches)s queued for the workers.") % {
        "job": job.pk,
        "batches": words.batches(batches),
    }


def finished(job: BulkSMSJob, elapsed: float) -> str:
    """The summary of a run from this process: what was sent, skipped, uncertain, how fast."""
    rate = job.sent / elapsed if elapsed > 0 else 0.0
    return _(
        "Job %(job)s %(status)s: %(sent)s sent (%(segments)s each) in %(batches)s, "
        "%(invalid)s, %(duplicates)s, %(uncertain)s; %(seconds)s (%(rate)s)."
    ) % {
        "job": job.pk,
        "status": job.get_status_display(),
        "sent": words.recipients(job.sent),
        "segments": words.sms_segments(segments(job.text).count),
        "batches": words.batches(job.batches_sent),
        "invalid": words.invalid_numbers(job.invalid),
        "duplicates": words.duplicates(job.duplicates),
        "uncertain": words.uncertain(job.uncertain),
        "seconds": f"{elapsed:.1f}s",
        "rate": rate_text(rate),
    }


def in_flight(batches: int, lease: float) -> str:
    """The batches a resume left to the live senders that claimed them less than a lease
    ago (``bulk.batches_in_flight``), and what to do if such a sender is in fact dead."""
    return words.with_count(
        ngettext(
            "%(count)s batch is still being sent by another worker: the job finishes once "
            "that batch is recorded. If that worker died, resume again once its claim is "
            "older than BULK_LEASE (%(lease)s s): the batch then counts as uncertain.",
            "%(count)s batches are still being sent by other workers: the job finishes when "
            "they are recorded. If a worker died, resume again once its claim is older than "
            "BULK_LEASE (%(lease)s s): its batch then counts as uncertain.",
            batches,
        ),
        batches,
        lease=f"{lease:g}",
    )


def stopped(job: BulkSMSJob, error: TextFlowError | None, *, enqueue: bool) -> str:
    """A stopped job: what happened, what was sent, the command that resumes it."""
    hint = f"manage.py textflow_bulk_sms --resume {job.pk}"
    if enqueue:
        hint += " --enqueue"
    if job.uncertain:
        hint += " " + words.with_count(
            ngettext(
                "(%(count)s recipient is in a batch TextFlow may have accepted; add "
                "--resend-uncertain to send it again)",
                "(%(count)s recipients are in batches TextFlow may have accepted; add "
                "--resend-uncertain to send those again)",
                job.uncertain,
            ),
            job.uncertain,
        )
    return _(
        "Job %(job)s stopped: %(reason)s. %(sent)s/%(total)s sent; nothing is lost. "
        "Resume with: %(hint)s"
    ) % {
        "job": job.pk,
        "reason": bulk.stop_reason(job, error),
        "sent": f"{job.sent:,}",
        "total": words.recipients(job.total),
        "hint": hint,
    }
