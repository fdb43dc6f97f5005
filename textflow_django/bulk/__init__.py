"""Bulk SMS: recipient sources to deduplicated batches, sent and tracked so a job resumes.

A package from now on: this step moves the module whole to :mod:`.sending` (so its history
follows) and re-exports its public names; the next one splits it by job.
"""

from __future__ import annotations

from .sending import (
    MAX_BATCH_SIZE,
    BatchOutcome,
    BulkJobStopped,
    BulkSMSJob,
    Source,
    SourceError,
    check_batch_size,
    create_job,
    enqueue_job,
    file_numbers,
    finish_if_done,
    list_numbers,
    model_numbers,
    open_numbers_file,
    run_job,
    send_batch,
    stop_reason,
)

__all__ = [
    "MAX_BATCH_SIZE",
    "BatchOutcome",
    "BulkJobStopped",
    "BulkSMSJob",
    "Source",
    "SourceError",
    "check_batch_size",
    "create_job",
    "enqueue_job",
    "file_numbers",
    "finish_if_done",
    "list_numbers",
    "model_numbers",
    "open_numbers_file",
    "run_job",
    "send_batch",
    "stop_reason",
]
