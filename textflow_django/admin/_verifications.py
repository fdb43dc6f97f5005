"""Phone verifications, read-only, with two actions: unlock, and erase the numbers."""

from __future__ import annotations

from typing import TYPE_CHECKING

from django.contrib import admin, messages
from django.db import router, transaction
from django.db.models import QuerySet
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext

from ..models import PhoneVerification
from ._erasure import erase_numbers, may_erase
from ._search import phone_term

if TYPE_CHECKING:
    from django.http import HttpRequest

    _ModelAdmin = admin.ModelAdmin[PhoneVerification]
else:  # ModelAdmin is generic only in django-stubs
    _ModelAdmin = admin.ModelAdmin

__all__ = ["PhoneVerificationAdmin"]

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


@admin.register(PhoneVerification)
class PhoneVerificationAdmin(_ModelAdmin):
    """Read-only list and detail of verifications.

    Permissions: nobody adds or edits a verification; superusers may delete them; users with
    the change permission may run :meth:`unlock`.
    """

    # What fits a 1280-pixel screen beside the admin's sidebars; the rest (expiry, user,
    # client IP...) is on the change page.
    list_display = ("phone_number", "status", "attempts", "created_at")
    list_filter = ("status", "mode")
    search_fields = ("phone_number",)
    list_select_related = ("user",)
    fields = _FIELDS
    readonly_fields = _FIELDS
    exclude = ("code_hash",)
    ordering = ("-created_at", "-id")
    actions = ("unlock", erase_numbers)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_erase_permission(self, request: HttpRequest) -> bool:
        return may_erase(request)

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
        return super().get_search_results(request, queryset, phone_term(search_term))

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
