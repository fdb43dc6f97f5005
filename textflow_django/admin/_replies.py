"""SMS replies, read-only, with the erasure action."""

from __future__ import annotations

from typing import TYPE_CHECKING

from django.contrib import admin
from django.db.models import QuerySet
from django.utils.translation import gettext_lazy as _

from ..models import SMSReply
from ._erasure import erase_numbers, may_erase
from ._search import phone_term

if TYPE_CHECKING:
    from django.http import HttpRequest

    _ReplyAdmin = admin.ModelAdmin[SMSReply]
else:  # ModelAdmin is generic only in django-stubs
    _ReplyAdmin = admin.ModelAdmin

__all__ = ["SMSReplyAdmin"]

#: Everything shown of a reply (never its digest: an internal key).
_REPLY_FIELDS = ("phone_number", "text", "action", "received_at")


@admin.register(SMSReply)
class SMSReplyAdmin(_ReplyAdmin):
    """SMS replies as TextFlow forwarded them, read-only (they are a record of what people
    sent), with the erasure action. Superusers may delete them, as verifications."""

    # What fits a 1280-pixel screen beside the admin's sidebars: the text cut short (the
    # whole of it is on the change page).
    list_display = ("phone_number", "text_display", "action", "received_at")
    list_filter = ("action",)
    search_fields = ("phone_number", "text")
    date_hierarchy = "received_at"
    fields = _REPLY_FIELDS
    readonly_fields = _REPLY_FIELDS
    ordering = ("-received_at", "-id")
    actions = (erase_numbers,)

    @admin.display(description=_("text"))
    def text_display(self, reply: SMSReply) -> str:
        return reply.text if len(reply.text) <= 40 else reply.text[:39] + "…"

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[SMSReply], search_term: str
    ) -> tuple[QuerySet[SMSReply], bool]:
        return super().get_search_results(request, queryset, phone_term(search_term))

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: SMSReply | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: SMSReply | None = None) -> bool:
        return bool(request.user.is_superuser) and super().has_delete_permission(request, obj)

    def has_erase_permission(self, request: HttpRequest) -> bool:
        return may_erase(request)
