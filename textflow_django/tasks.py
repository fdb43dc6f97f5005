"""Django Tasks for scale-out bulk sending (``textflow_bulk_sms --enqueue``).

Uses ``django.tasks`` (Django 6+) or the ``django-tasks`` backport (Django 5.2), so any
worker backend the project configures in ``TASKS`` runs the batches (a database worker, RQ,
Celery...). The task is :func:`textflow_django.bulk.send_batch`, the very function the
inline sender calls: the batch is claimed in the database first, and only while its job is
running, so a task delivered twice sends its batch once and a stopped job's tasks send
nothing.

This module is the task framework's side of bulk sending: it calls the bulk service, which
never imports it. :func:`enqueue_bulk_job` queues a job's batches as this module's task.
Importing it raises ``ImportError`` when neither tasks framework is installed.
"""

from __future__ import annotations

try:
    from django.tasks import task
except ImportError:  # Django < 6: the backport
    from django_tasks import task  # type: ignore[no-redef]

from . import bulk

__all__ = ["enqueue_bulk_job", "send_bulk_batch"]


@task()
def send_bulk_batch(batch_id: int) -> bool:
    """Send one batch of a bulk job; finish the job if it was the last. Returns whether
    this call sent it (False: already claimed or done, the job is not running, or TextFlow
    failed: the job is then stopped, as the inline sender would leave it, and the batches
    not yet sent stay pending for ``--resume``)."""
    try:
        return bulk.send_batch(batch_id) is not None
    except bulk.BulkJobStopped:
        return False


def enqueue_bulk_job(job_id: int, *, resend_uncertain: bool = False) -> int:
    """Queue every pending batch of a job as a :func:`send_bulk_batch` task, for whatever
    workers the project runs; resumes a stopped job. Returns how many were queued.

    :func:`textflow_django.bulk.enqueue_job` with this module's task: see it for what a
    resume does and what happens once the job stops.
    """
    return bulk.enqueue_job(
        job_id, enqueue=send_bulk_batch.enqueue, resend_uncertain=resend_uncertain
    )
