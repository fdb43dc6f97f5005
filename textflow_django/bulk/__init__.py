"""Bulk SMS: recipient sources to deduplicated batches, sent and tracked so a job resumes.

The public names are all importable from here; each lives in the module of its job:

- :mod:`~textflow_django.bulk.sources`: where numbers come from (a model's field, a file,
  a list), read lazily (:func:`model_numbers`, :func:`file_numbers`, :func:`list_numbers`).
- :mod:`~textflow_django.bulk.ingest`: :func:`create_job` turns a source into a recorded
  job of distinct, valid numbers not on the opt-out list, in batches; nothing is sent
  (:func:`ingest_job` also says how many opted-out numbers it left out). Its text passes
  :func:`check_text` first (no control characters, at most ``MAX_TEXT_LENGTH`` SMS
  segments with the opt-out footer, ``BULK_OPT_OUT_FOOTER``, which the job's text ends
  with).
- :mod:`~textflow_django.bulk.sending`: :func:`send_batch`, the one function that sends a
  batch, inline or in a worker.
- :mod:`~textflow_django.bulk.running`: :func:`run_job` sends a job's pending batches in
  this process; :func:`enqueue_job` hands them to a task queue.

The life of a job:

1. :func:`create_job` streams the recipients in, normalises each (fast path for E.164),
   skips and counts invalid ones, and writes the distinct numbers to ``BulkRecipient``
   rows, each tagged with its batch. The database deduplicates (every number is staged in
   a temporary table, then one ``INSERT ... SELECT ... GROUP BY`` writes the distinct ones,
   guarded by the table's unique constraint, leaving out the numbers on the opt-out list),
   so memory stays flat whatever the list's size. It is all one transaction: a source
   that fails half-way leaves no job behind.
2. :func:`run_job` (inline) or :func:`enqueue_job` (workers; the Django task
   ``textflow_django.tasks.send_bulk_batch`` through ``tasks.enqueue_bulk_job``) sends the
   pending batches, both through :func:`send_batch`. A batch is claimed in the database
   before it is sent, and only while its job is running (so a batch delivered twice to
   workers is sent once, and none is sent after the job stopped), then marked accepted,
   with the job's counters, right after TextFlow accepts it.
3. A batch whose outcome is unknown (the process died after sending it, a timeout, a 5xx)
   is ``uncertain`` and is not sent again unless the operator asks
   (``resend_uncertain=True``). A failure that certainly sent nothing leaves it pending.
   Either way the job stops, resumable with :func:`run_job` or :func:`enqueue_job`; its
   other batches stay pending. A resume judges a batch still ``sending`` by its claim's
   age: older than ``BULK_LEASE``, its sender died (``uncertain``); younger, a live sender
   may be sending it, and it is left to that sender (:func:`batches_in_flight`).

This package is a service: it imports the rules, backends and leaves below it, never the
HTTP side (views, admin, management commands, tasks) that calls it.
"""

from __future__ import annotations

from ..conf import MAX_BATCH_SIZE

# The job model, which create_job and run_job return: importable from here, as it always was.
from ..models import BulkSMSJob
from ._text import check_text
from .ingest import Ingested, check_batch_size, create_job, ingest_job
from .running import batches_in_flight, enqueue_job, run_job
from .sending import BatchOutcome, BulkJobStopped, finish_if_done, send_batch, stop_reason
from .sources import (
    MissingFields,
    Source,
    SourceError,
    file_numbers,
    list_numbers,
    model_numbers,
    open_numbers_file,
)

__all__ = [
    "MAX_BATCH_SIZE",
    "BatchOutcome",
    "BulkJobStopped",
    "BulkSMSJob",
    "Ingested",
    "MissingFields",
    "Source",
    "SourceError",
    "batches_in_flight",
    "check_batch_size",
    "check_text",
    "create_job",
    "enqueue_job",
    "file_numbers",
    "finish_if_done",
    "ingest_job",
    "list_numbers",
    "model_numbers",
    "open_numbers_file",
    "run_job",
    "send_batch",
    "stop_reason",
]
