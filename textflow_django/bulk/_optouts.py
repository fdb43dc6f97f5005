"""Numbers that opted out after their job was created: left out when their batch is read.

The ingest left out every number on the opt-out list when the job was made; a number that
joins the list later, before its batch goes, is found by the statement that reads the
batch's numbers (a ``LEFT JOIN`` on the list, :mod:`textflow_django.bulk.sending`) and
left out here: it is not sent, its recipient row goes, and the job's ``total`` and its
batch's ``size`` drop by one, so a finished job still has ``sent == total``, and a batch
counted uncertain counts only the numbers it was sent to; the job's ``opted_out`` counts
them (``textflow.bulk.opted_out`` says how many left each batch). That statement is this
path's check: the backend's ``bulk_sms``, which checks the list for every other caller, is
told the batch's numbers were checked (``backends.base.opt_outs_checked``) and asks no
second query. A retry after a 429 wait reads the list again itself first (time has passed)
and leaves out who joined it meanwhile, here too. A number that opts out in
the milliseconds between the read and the request still gets that batch's SMS.
"""

from __future__ import annotations

from django.db import router, transaction
from django.db.models import F

from .._events import emit
from ..models import BulkBatch, BulkRecipient, BulkSMSJob

__all__ = ["leave_out"]


def leave_out(job_id: int, batch_id: int, numbers: list[str]) -> None:
    """Drop ``numbers`` (on the opt-out list since the job was made) from the job and from
    its batch ``batch_id``: their recipient rows deleted, the job's ``total`` and the
    batch's ``size`` lowered and the job's ``opted_out`` raised, in one transaction."""
    with transaction.atomic(using=router.db_for_write(BulkRecipient)):
        BulkRecipient.objects.filter(job_id=job_id, phone_number__in=numbers).delete()
        BulkSMSJob.objects.filter(pk=job_id).update(
            total=F("total") - len(numbers), opted_out=F("opted_out") + len(numbers)
        )
        BulkBatch.objects.filter(pk=batch_id).update(size=F("size") - len(numbers))
    emit("textflow.bulk.opted_out", job=job_id, batch=batch_id, count=len(numbers))
