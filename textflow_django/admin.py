"""Admin for phone verifications and bulk SMS jobs, both read-only.

Verifications have one repair action (unlock). The rows are a record of what the
verification service did, so nothing is editable here: changing a status or an expiry by
hand would bypass the service's rules. The keyed hash of a local-mode code (``code_hash``)
is never shown, searched or filtered on.

Bulk jobs show their progress; one that is not running may be deleted with its rows
(:class:`BulkSMSJobAdmin` says why a running one may not).

Rate-limit counters are deliberately not registered: they are internal, short-lived state.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from django.contrib import admin, messages
from django.db import router, transaction
from django.db.models import QuerySet
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext

from .models import BulkBatch, BulkRecipient, BulkSMSJob, PhoneVerification

if TYPE_CHECKING:
    from django.http import HttpRequest

    _ModelAdmin = admin.ModelAdmin[PhoneVerification]
else:  # ModelAdmin is generic only in django-stubs
    _ModelAdmin = admin.ModelAdmin

__all__ = ["BulkSMSJobAdmin", "PhoneVerificationAdmin"]

#: Everything an admin may see of a verification, in display order (never ``code_hash``).
_FIELDS = (
    "phone_number",
    "status",
    "mode",
    "attempts",
    "user",
    "client_ip",
    "created_at",
    "expires_at",
    "verified_at",
)
# A search term that is a formatted phone number: "+1 (202) 555-0143", "202.555.0143".
_PHONE_TERM_RE = re.compile(r"\+?[0-9][0-9 ().\-]*[0-9]")
_SEPARATORS_RE = re.compile(r"[ ().\-]")


@admin.register(PhoneVerification)
class PhoneVerificationAdmin(_ModelAdmin):
    """Read-only list and detail of verifications.

    Permissions: nobody adds or edits a verification; superusers may delete them; users with
    the change permission may run :meth:`unlock`.
    """

    list_display = (
        "phone_number",
        "status",
        "attempts",
        "created_at",
        "expires_at",
        "verified_at",
        "user",
        "client_ip",
    )
    list_filter = ("status", "mode")
    search_fields = ("phone_number",)
    list_select_related = ("user",)
    fields = _FIELDS
    readonly_fields = _FIELDS
    exclude = ("code_hash",)
    ordering = ("-created_at", "-id")
    actions = ("unlock",)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(
        self, request: HttpRequest, obj: PhoneVerification | None = None
    ) -> bool:
        # View-only everywhere: the change page renders, but no field can be saved.
        return False

    def has_delete_permission(
        self, request: HttpRequest, obj: PhoneVerification | None = None
    ) -> bool:
        return bool(request.user.is_superuser) and super().has_delete_permission(request, obj)

    def has_unlock_permission(self, request: HttpRequest) -> bool:
        """Unlocking is a change of the rows, so it needs the model's change permission
        (``has_change_permission`` is False only to keep the fields read-only)."""
        opts = self.opts
        return bool(request.user.has_perm(f"{opts.app_label}.change_{opts.model_name}"))

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[PhoneVerification], search_term: str
    ) -> tuple[QuerySet[PhoneVerification], bool]:
        # Numbers are stored in E.164, so "+1 (202) 555-0143" searches as "+12025550143".
        term = search_term.strip()
        if _PHONE_TERM_RE.fullmatch(term):
            search_term = _SEPARATORS_RE.sub("", term)
        return super().get_search_results(request, queryset, search_term)

    @admin.action(
        description=_("Unlock selected locked verifications"),
        permissions=["unlock"],
    )
    def unlock(self, request: HttpRequest, queryset: QuerySet[PhoneVerification]) -> None:
        """Give LOCKED verifications a fresh set of attempts (status PENDING, attempts 0).

        Other rows of the selection are left as they are. The code itself is unchanged, and
        still expires when it would have.
        """
        locked = PhoneVerification.Status.LOCKED
        with transaction.atomic(using=router.db_for_write(PhoneVerification)):
            rows = list(
                queryset.select_related(None).select_for_update(of=("self",)).filter(status=locked)
            )
            count = PhoneVerification.objects.filter(
                pk__in=[row.pk for row in rows], status=locked
            ).update(status=PhoneVerification.Status.PENDING, attempts=0)
        for row in rows:
            self.log_change(request, row, [{"changed": {"fields": ["status", "attempts"]}}])
        self.message_user(
            request,
            ngettext(
                "%(count)d verification was unlocked.",
                "%(count)d verifications were unlocked.",
                count,
            )
            % {"count": count},
            messages.SUCCESS if count else messages.WARNING,
        )


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

    list_display = (
        "id",
        "status",
        "progress_display",
        "total",
        "sent",
        "uncertain",
        "invalid",
        "duplicates",
        "created_at",
        "finished_at",
    )
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
