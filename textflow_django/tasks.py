"""Django Tasks for scale-out bulk sending (``textflow_bulk_sms --enqueue``).

Uses ``django.tasks`` (Django 6+) or the ``django-tasks`` backport (Django 5.2), so any
worker backend the project configures in ``TASKS`` runs the batches (a database worker, RQ,
Celery...). The task is :func:`textflow_django.bulk.send_batch`, the very function the
inline sender calls: the batch is claimed in the database first, and only while its job is
running, so a task delivered twice sends its batch once and a stopped job's tasks send
nothing.
"""

from __future__ import annotations

try:
    from django.tasks import task
except ImportError:  # Django < 6: the backport
    from django_tasks import task  # type: ignore[no-redef]

__all__ = ["send_bulk_batch"]


@task()
def send_bulk_batch(batch_id: int) -> bool:
    """Send one batch of a bulk job; finish the job if it was the last. Returns whether
    this call sent it (False: already claimed or done, the job is not running, or TextFlow
    failed: the job is then stopped, as the inline sender would leave it, and the batches
    not yet sent stay pending for ``--resume``)."""
    from .bulk import BulkJobStopped, send_batch

    try:
        return send_batch(batch_id) is not None
    except BulkJobStopped:
        return False
