"""Bulk SMS jobs, read-only, with their progress; a job that is not running may be deleted."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from django.contrib import admin
from django.db import router, transaction
from django.db.models import QuerySet
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _

from ..models import BulkBatch, BulkRecipient, BulkSMSJob

if TYPE_CHECKING:
    from django.http import HttpRequest

__all__ = ["BulkSMSJobAdmin"]

if TYPE_CHECKING:
    _JobAdmin = admin.ModelAdmin[BulkSMSJob]
else:
    _JobAdmin = admin.ModelAdmin


@admin.register(BulkSMSJob)
class BulkSMSJobAdmin(_JobAdmin):
    """Bulk jobs with their progress, read-only: jobs are run and resumed by the command.

    Permissions: nobody adds or edits a job. A job that is not running may be deleted
    (with its recipients and batches) by users with the delete permission: a finished
    one is housekeeping (a job keeps a row per recipient), a stopped or never-started one
    is abandoned. A running job may not: its senders would go on sending for a record
    that no longer exists, and what reached whom would be lost. A job left ``running``
    by a sender that died is resumed (``textflow_bulk_sms --resume``) before it can be
    deleted.
    """

    # What fits a 1280-pixel screen beside the admin's sidebars; the other counts and
    # times are on the change page.
    list_display = ("id", "status", "progress_display", "sent_display", "created_at")
    list_filter = ("status",)
    search_fields = ("source", "text")
    readonly_fields = (
        "text",
        "source",
        "status",
        "progress_display",
        "batch_size",
        "total",
        "sent",
        "uncertain",
        "invalid",
        "duplicates",
        "opted_out",
        "batches_total",
        "batches_sent",
        "invalid_samples",
        "last_error",
        "created_at",
        "started_at",
        "finished_at",
    )
    fields = readonly_fields

    @admin.display(description=_("progress"))
    def progress_display(self, job: BulkSMSJob) -> str:
        return f"{job.progress:.1%}"

    @admin.display(description=_("sent"), ordering="sent")
    def sent_display(self, job: BulkSMSJob) -> str:
        """Recipients sent of all the job's recipients: one short column for two."""
        return gettext("%(sent)d of %(total)d") % {"sent": job.sent, "total": job.total}

    def has_add_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: BulkSMSJob | None = None) -> bool:
        # The bulk "delete selected" action asks this for each selected job too.
        if obj is not None and obj.status == BulkSMSJob.Status.RUNNING:
            return False
        return super().has_delete_permission(request, obj)

    def get_deleted_objects(
        self, objs: Sequence[BulkSMSJob] | QuerySet[BulkSMSJob], request: HttpRequest
    ) -> tuple[list[Any], dict[Any, int], set[Any], list[Any]]:
        """What the confirmation page lists: the jobs, and counts of their batches and
        recipients. Django's default walks and lists every related row, a million for a
        big campaign. A running job among them is a permission the user lacks."""
        jobs = list(objs)
        ids = [job.pk for job in jobs]
        perms_needed = (
            {BulkSMSJob._meta.verbose_name}
            if any(not self.has_delete_permission(request, job) for job in jobs)
            else set()
        )
        counts = {
            BulkSMSJob._meta.verbose_name_plural: len(jobs),
            _("batches"): BulkBatch.objects.filter(job__in=ids).count(),
            _("recipients"): BulkRecipient.objects.filter(job__in=ids).count(),
        }
        return [str(job) for job in jobs], counts, perms_needed, []

    def delete_model(self, request: HttpRequest, obj: BulkSMSJob) -> None:
        self.delete_queryset(request, BulkSMSJob.objects.filter(pk=obj.pk))

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[BulkSMSJob]) -> None:
        """Delete the selected jobs that are not running, re-checked under a row lock: a
        job resumed since the confirmation page was shown is kept."""
        with transaction.atomic(using=router.db_for_write(BulkSMSJob)):
            idle = list(
                queryset.select_for_update()
                .exclude(status=BulkSMSJob.Status.RUNNING)
                .values_list("pk", flat=True)
            )
            BulkSMSJob.objects.filter(pk__in=idle).delete()
