"""Django Tasks for scale-out bulk sending (``textflow_bulk_sms --enqueue``).

Uses ``django.tasks`` (Django 6+) or the ``django-tasks`` backport (Django 5.2), so any
worker backend the project configures in ``TASKS`` runs the batches (a database worker, RQ,
Celery...). The task runs the very function the inline sender runs; the batch is claimed in
the database first, so a task delivered twice sends its batch once.
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
    this call sent it (False: already claimed or done, or TextFlow failed: the job is then
    stopped, as the inline sender would leave it)."""
    from .bulk import BulkJobStopped, finish_if_done, send_batch
    from .models import BulkBatch

    job_id = BulkBatch.objects.filter(pk=batch_id).values_list("job_id", flat=True).first()
    if job_id is None:
        return False
    try:
        sent = send_batch(batch_id)
    except BulkJobStopped:
        return False
    finish_if_done(job_id)
    return sent is not None
