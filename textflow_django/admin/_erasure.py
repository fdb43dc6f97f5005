"""The admin's erasure: the action "Erase all data of these numbers" (:func:`erase_numbers`),
with its confirmation page, for the admins of rows that hold a number (verifications, SMS
replies). The erasure itself is ``textflow_django.privacy.erase_phone_number``'s."""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any

from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.db.models import QuerySet
from django.template.response import TemplateResponse
from django.utils.translation import gettext, ngettext
from django.utils.translation import gettext_lazy as _

from .. import phone, privacy

if TYPE_CHECKING:
    from django.http import HttpRequest

    _AnyAdmin = admin.ModelAdmin[Any]
else:  # ModelAdmin is generic only in django-stubs
    _AnyAdmin = admin.ModelAdmin

__all__ = ["ERASE_MAX_NUMBERS", "erase_numbers", "may_erase"]

#: The most distinct numbers one erasure from the admin takes: its confirmation page counts
#: what each would lose, and an erasure request is about a person, not a list.
ERASE_MAX_NUMBERS = 100


def may_erase(request: HttpRequest) -> bool:
    """An erasure deletes verifications, which only superusers may delete here."""
    return bool(request.user.is_superuser)


@admin.action(description=_("Erase all data of these numbers"), permissions=["erase"])
def erase_numbers(
    model_admin: _AnyAdmin, request: HttpRequest, queryset: QuerySet[Any]
) -> TemplateResponse | None:
    """Erase every row that holds the numbers of the selected rows
    (``privacy.erase_phone_number``), after a confirmation page that says, number by number,
    what would go. The opt-out list keeps them unless the page's box is ticked. Needs the
    ``has_erase_permission`` of the model admin (superusers).
    """
    found = list(
        queryset.order_by("phone_number")
        .values_list("phone_number", flat=True)
        .distinct()[: ERASE_MAX_NUMBERS + 1]
    )
    if len(found) > ERASE_MAX_NUMBERS:
        model_admin.message_user(
            request,
            gettext("Select the rows of at most %(max)d numbers to erase at once.")
            % {"max": ERASE_MAX_NUMBERS},
            messages.ERROR,
        )
        return None
    numbers = []
    for value in found:
        try:  # a row saved without full_clean() may hold what is no number
            numbers.append(privacy.parse_number(value))
        except phone.InvalidPhoneNumberError:
            model_admin.message_user(
                request,
                gettext("%(value)r is not a phone number: it was left as it is.")
                % {"value": value},
                messages.WARNING,
            )
    if not numbers:
        return None
    if request.POST.get("post") != "yes":
        return _erase_confirmation(model_admin, request, queryset, numbers)
    keep = request.POST.get("remove_opt_out") != "yes"
    reports = [privacy.erase_phone_number(number, keep_opt_out=keep) for number in numbers]
    totals: Counter[str] = Counter()
    for report in reports:
        totals.update(report.as_dict())
    what = privacy.counted(totals)
    count = len(numbers)
    model_admin.message_user(
        request,
        (
            ngettext(
                "Erased the data of %(count)d number: %(what)s.",
                "Erased the data of %(count)d numbers: %(what)s.",
                count,
            )
            if what
            else ngettext(
                "Nothing held the selected number any more.",
                "Nothing held the %(count)d selected numbers any more.",
                count,
            )
        )
        % {"count": count, "what": what},
        messages.SUCCESS,
    )
    kept = sum(report.opt_out_kept for report in reports)
    if kept:
        model_admin.message_user(
            request,
            ngettext(
                "%(count)d number stays on the opt-out list, so it is never texted again.",
                "%(count)d numbers stay on the opt-out list, so they are never texted again.",
                kept,
            )
            % {"count": kept},
            messages.INFO,
        )
    return None


def _erase_confirmation(
    model_admin: _AnyAdmin, request: HttpRequest, queryset: QuerySet[Any], numbers: list[str]
) -> TemplateResponse:
    """The page that asks before an erasure, with what each number would lose (a dry run of
    each). It posts the action again with ``post=yes``: the selected ids, or the changelist's
    whole selection (its filters are in the page's URL) when all rows were selected."""
    previews = [privacy.erase_phone_number(number, dry_run=True) for number in numbers]
    select_across = request.POST.get("select_across") == "1"
    context = {
        **model_admin.admin_site.each_context(request),
        "title": gettext("Erase all data of these numbers?"),
        "opts": model_admin.opts,
        "previews": [(report, privacy.counted(report.as_dict())) for report in previews],
        "any_opted_out": any(report.opt_out_kept for report in previews),
        # Django runs an action only with a row selected, even for the whole selection.
        "selected": queryset.values_list("pk", flat=True)[: 1 if select_across else None],
        "select_across": select_across,
        "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
        "action": "erase_numbers",
    }
    return TemplateResponse(request, "textflow_django/admin/erase_confirmation.html", context)
