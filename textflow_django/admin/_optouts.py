"""The opt-out list: search, add, remove (through ``textflow_django.optouts``, so the
signals fire), export as CSV."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from django import forms
from django.contrib import admin
from django.db import router, transaction
from django.db.models import QuerySet
from django.http import StreamingHttpResponse
from django.utils.translation import gettext_lazy as _

from .. import optouts
from ..fields import PhoneNumberFormField
from ..models import OptOut
from ._search import phone_term

if TYPE_CHECKING:
    from django.http import HttpRequest

    _OptOutAdmin = admin.ModelAdmin[OptOut]
    _OptOutForm = forms.ModelForm[OptOut]
else:  # ModelAdmin and ModelForm are generic only in django-stubs
    _OptOutAdmin = admin.ModelAdmin
    _OptOutForm = forms.ModelForm

__all__ = ["OptOutAdmin"]


class _Echo:
    """A file ``csv.writer`` writes one line to at a time, handed straight back."""

    def write(self, line: str) -> str:
        return line


def _csv_lines(queryset: QuerySet[OptOut]) -> Iterator[str]:
    """The rows of ``queryset`` as CSV lines, header first: ``optouts.CSV_HEADER`` and
    ``optouts.csv_rows``, the format ``textflow_optout`` exports and imports."""
    writer = csv.writer(_Echo())
    yield writer.writerow(optouts.CSV_HEADER)
    for row in optouts.csv_rows(queryset):
        yield writer.writerow(row)


#: What an opt-out row shows once added, read-only (its note stays editable).
_OPT_OUT_FIELDS = ("phone_number", "source", "created_at")


class _OptOutAddForm(_OptOutForm):
    """A number to opt out, read as the site reads numbers (``DEFAULT_REGION``) from any
    country: refusing a country's numbers is no reason to text the ones that asked not to be."""

    phone_number = PhoneNumberFormField(check_countries=False, label=_("phone number"))

    class Meta:
        model = OptOut
        fields = ("phone_number", "note")


@admin.register(OptOut)
class OptOutAdmin(_OptOutAdmin):
    """The opt-out list: search it, add a number, take one off, export it as CSV.

    Every change goes through ``textflow_django.optouts`` with source ``"admin"``, so the
    signals fire as for any other: an addition (``opted_out``) and a deletion, one or a
    selection (``opted_in``). Only a row's note can be changed afterwards.
    """

    form = _OptOutAddForm
    # What fits a 1280-pixel screen beside the admin's sidebars (the note wraps).
    list_display = ("phone_number", "source", "created_at", "note")
    list_filter = ("source",)
    search_fields = ("phone_number",)
    ordering = ("-created_at", "-id")
    actions = ("export_csv",)

    def get_fields(self, request: HttpRequest, obj: OptOut | None = None) -> tuple[str, ...]:
        return ("phone_number", "note") if obj is None else (*_OPT_OUT_FIELDS, "note")

    def get_readonly_fields(
        self, request: HttpRequest, obj: OptOut | None = None
    ) -> tuple[str, ...]:
        return () if obj is None else _OPT_OUT_FIELDS

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[OptOut], search_term: str
    ) -> tuple[QuerySet[OptOut], bool]:
        return super().get_search_results(request, queryset, phone_term(search_term))

    def save_model(self, request: HttpRequest, obj: OptOut, form: Any, change: bool) -> None:
        if change:  # the note (nothing else is editable)
            super().save_model(request, obj, form, change)
            return
        optouts.opt_out(obj.phone_number, source=OptOut.Source.ADMIN, note=obj.note)
        # The row as the list holds it (added now, or just before by someone else).
        row = OptOut.objects.get(phone_number=obj.phone_number)
        obj.pk, obj.source, obj.created_at, obj.note = row.pk, row.source, row.created_at, row.note

    def delete_model(self, request: HttpRequest, obj: OptOut) -> None:
        optouts.opt_in(obj.phone_number, source=OptOut.Source.ADMIN)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[OptOut]) -> None:
        with transaction.atomic(using=router.db_for_write(OptOut)):
            for number in list(queryset.values_list("phone_number", flat=True)):
                optouts.opt_in(number, source=OptOut.Source.ADMIN)

    @admin.action(description=_("Export as CSV"), permissions=["view"])
    def export_csv(self, request: HttpRequest, queryset: QuerySet[OptOut]) -> StreamingHttpResponse:
        """The selected rows as CSV (``optouts.CSV_HEADER``), streamed: a list of a
        million numbers is written without being held in memory."""
        response = StreamingHttpResponse(
            _csv_lines(queryset), content_type="text/csv; charset=utf-8"
        )
        response["Content-Disposition"] = 'attachment; filename="opt-outs.csv"'
        return response
