"""The admin's erasure: the action "Erase all data of these numbers" (:func:`erase_numbers`),
with its confirmation page, for the admins of rows that hold a number (verifications, SMS
replies). The erasure itself is ``textflow_django.privacy.erase_phone_number``'s.

What a confirmation erases is what its page showed, no more: the page carries the numbers it
listed, each with whether it was on the opt-out list, signed (``django.core.signing``, salted
for this form and the user), and the confirmation erases exactly those, whatever the
selection holds by then. A row that arrived meanwhile (a STOP from another number, while the
page was read) is not erased unseen, and the box that takes numbers off the opt-out list
acts only on the numbers the page showed on it (a number that opted out since keeps its
opt-out). A previewed number whose selected rows went meanwhile is still erased: the
superuser confirmed that number. A confirmation without a valid signature (tampered,
another user's, from before this rule) erases nothing and shows the page again.
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any

from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.core import signing
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
#: The salt of the signed list of previewed numbers (with the user's id appended).
_PREVIEW_SALT = "textflow_django.admin.erase_numbers.previewed"
#: The form field that carries it.
PREVIEWED_FIELD = "previewed"


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
    ``has_erase_permission`` of the model admin (superusers). The confirmation erases the
    numbers the page showed (see the module's contract).
    """
    if request.POST.get("post") == "yes":
        previewed = _previewed(request)
        if previewed is not None:
            _erase(model_admin, request, previewed)
            return None
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
    return _erase_confirmation(model_admin, request, queryset, numbers)


def _signer(request: HttpRequest) -> signing.Signer:
    """The signer of the previewed numbers: this form's salt and the user's id, so a list
    signed for one superuser's page is not another's."""
    return signing.Signer(salt=f"{_PREVIEW_SALT}:{request.user.pk}")


def _previewed(request: HttpRequest) -> list[tuple[str, bool]] | None:
    """The numbers the confirmation page showed, each with whether it was on the opt-out
    list, as its form posted them back; None when the form carries no valid signed list."""
    try:
        value = _signer(request).unsign_object(request.POST.get(PREVIEWED_FIELD, ""))
    except signing.BadSignature:
        return None
    if not isinstance(value, list):
        return None
    return [(str(number), bool(listed)) for number, listed in value]


def _erase(model_admin: _AnyAdmin, request: HttpRequest, previewed: list[tuple[str, bool]]) -> None:
    """Erase the ``previewed`` numbers; the box takes off the opt-out list only those the
    page showed on it."""
    remove = request.POST.get("remove_opt_out") == "yes"
    reports = [
        privacy.erase_phone_number(number, keep_opt_out=not (remove and listed))
        for number, listed in previewed
    ]
    numbers = [number for number, _listed in previewed]
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
                "%(count)d number stays on the opt-out list, so no bulk SMS reaches it again.",
                "%(count)d numbers stay on the opt-out list, so no bulk SMS reaches them again.",
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
    signed = _signer(request).sign_object(
        [[report.phone_number, report.opt_out_kept] for report in previews]
    )
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
        "previewed_field": PREVIEWED_FIELD,
        "previewed": signed,
    }
    return TemplateResponse(request, "textflow_django/admin/erase_confirmation.html", context)
