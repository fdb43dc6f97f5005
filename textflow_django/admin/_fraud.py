"""The Fraud Guard's blocks (read-only, lift and allow their prefixes, the insights page)
and the allowed prefixes (added and deleted here)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.template.response import TemplateResponse
from django.urls import URLPattern, path
from django.utils import timezone
from django.utils.translation import gettext, ngettext
from django.utils.translation import gettext_lazy as _

from .. import fraud, insights
from .._e164 import is_prefix
from ..models import FraudAllowedPrefix, FraudBlock
from ..ratelimit import epoch_datetime, get_store
from ._search import SEPARATORS_RE, phone_term

if TYPE_CHECKING:
    from django.http import HttpRequest

    _BlockAdmin = admin.ModelAdmin[FraudBlock]
    _AllowedAdmin = admin.ModelAdmin[FraudAllowedPrefix]
    _AllowedForm = forms.ModelForm[FraudAllowedPrefix]
else:  # ModelAdmin and ModelForm are generic only in django-stubs
    _BlockAdmin = _AllowedAdmin = admin.ModelAdmin
    _AllowedForm = forms.ModelForm

__all__ = ["FraudAllowedPrefixAdmin", "FraudBlockAdmin"]


class _InForceFilter(admin.SimpleListFilter):
    """Blocks in force now (:meth:`FraudBlock.in_force`), or ended ones."""

    title = _("in force")
    parameter_name = "active"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, Any]]:
        return [("yes", _("Yes")), ("no", _("No"))]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        in_force = FraudBlock.in_force(timezone.now())
        if self.value() == "yes":
            return queryset.filter(in_force)
        if self.value() == "no":
            return queryset.exclude(in_force)
        return queryset


#: Everything shown of a block, in display order.
_BLOCK_FIELDS = (
    "scope",
    "value",
    "in_force",
    "reason",
    "sends",
    "conversions",
    "created_at",
    "until",
    "lifted_at",
)


@admin.register(FraudBlock)
class FraudBlockAdmin(_BlockAdmin):
    """The Fraud Guard's blocks, read-only, with two actions and the insights page.

    Blocks are made by the guard (``textflow_django.fraud``): nobody adds or edits one, and
    nobody deletes one either, since a deleted row would leave its key held in the
    rate-limit store (the destination still blocked, with no row to say so): lift it.

    Permissions: viewing the list and the insights page needs the view permission of fraud
    blocks; :meth:`lift_blocks` needs their change permission, :meth:`allow_prefixes` that
    and the add permission of allowed prefixes.
    """

    # What fits a 1280-pixel screen beside the admin's sidebars (the reason wraps); when it
    # started and was lifted are on the change page.
    list_display = ("value", "scope", "in_force", "reason", "verified_display", "until")
    list_filter = ("scope", _InForceFilter)
    search_fields = ("value",)
    fields = _BLOCK_FIELDS
    readonly_fields = _BLOCK_FIELDS
    ordering = ("-created_at", "-id")
    actions = ("lift_blocks", "allow_prefixes")
    change_list_template = "textflow_django/admin/fraudblock_change_list.html"

    def get_queryset(self, request: HttpRequest) -> QuerySet[FraudBlock]:
        # Whether each block is in force, by the database (sortable, one rule).
        return (
            super().get_queryset(request).annotate(in_force_now=insights.is_active(timezone.now()))
        )

    @admin.display(description=_("in force"), boolean=True, ordering="in_force_now")
    def in_force(self, block: FraudBlock) -> bool:
        return bool(getattr(block, "in_force_now", False))

    @admin.display(description=_("verified"), ordering="conversions")
    def verified_display(self, block: FraudBlock) -> str:
        """Codes verified of the codes judged: one short column for two."""
        return gettext("%(conversions)d of %(sends)d") % {
            "conversions": block.conversions,
            "sends": block.sends,
        }

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[FraudBlock], search_term: str
    ) -> tuple[QuerySet[FraudBlock], bool]:
        return super().get_search_results(request, queryset, phone_term(search_term))

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: FraudBlock | None = None) -> bool:
        return False  # read-only; the actions have their own permissions below

    def has_delete_permission(self, request: HttpRequest, obj: FraudBlock | None = None) -> bool:
        return False  # see the class docstring: lift instead

    def has_lift_permission(self, request: HttpRequest) -> bool:
        """Lifting changes the rows: the model's change permission."""
        return bool(request.user.has_perm(f"{self.opts.app_label}.change_fraudblock"))

    def has_allow_permission(self, request: HttpRequest) -> bool:
        """Allowing a prefix adds an allowed prefix and lifts blocks."""
        label = self.opts.app_label
        return self.has_lift_permission(request) and bool(
            request.user.has_perm(f"{label}.add_fraudallowedprefix")
        )

    @admin.action(description=_("Lift the selected blocks"), permissions=["lift"])
    def lift_blocks(self, request: HttpRequest, queryset: QuerySet[FraudBlock]) -> None:
        """Lift the selected blocks in force (``fraud.lift``: the row gets ``lifted_at``, the
        store lets codes through at once). A block that already ended is left as it is: its
        destination may have a newer block in force, whose store key lifting it would free."""
        store = get_store()
        now = store.clock()
        # The store's clock for both: the blocks lifted are those in force at the lift.
        in_force = list(queryset.filter(FraudBlock.in_force(epoch_datetime(now))))
        for block in in_force:
            fraud.lift(block, store, now)
            self.log_change(request, block, [{"changed": {"fields": ["lifted_at"]}}])
        ended = queryset.count() - len(in_force)
        self.message_user(
            request,
            ngettext("%(count)d block was lifted.", "%(count)d blocks were lifted.", len(in_force))
            % {"count": len(in_force)},
            messages.SUCCESS if in_force else messages.WARNING,
        )
        if ended:
            self.message_user(
                request,
                ngettext(
                    "%(count)d selected block had already ended and was left as it is.",
                    "%(count)d selected blocks had already ended and were left as they are.",
                    ended,
                )
                % {"count": ended},
                messages.WARNING,
            )

    @admin.action(
        description=_("Allow these prefixes (never block them again)"), permissions=["allow"]
    )
    def allow_prefixes(self, request: HttpRequest, queryset: QuerySet[FraudBlock]) -> None:
        """Add the prefix of each selected prefix block to the allowed prefixes
        (``fraud.allow_prefix``, which also lifts the blocks in force of that prefix and of
        the prefixes it contains or is contained in). Country blocks are skipped: a
        country is never allowed wholesale; lift its block instead."""
        store = get_store()
        now = store.clock()
        blocks = list(queryset.order_by("created_at", "id"))
        countries = [b for b in blocks if b.scope != FraudBlock.Scope.PREFIX]
        first: dict[str, FraudBlock] = {}
        for block in blocks:
            if block.scope == FraudBlock.Scope.PREFIX:
                first.setdefault(block.value, block)
        known = set(
            FraudAllowedPrefix.objects.filter(prefix__in=first).values_list("prefix", flat=True)
        )
        for prefix, block in first.items():
            note = gettext("Allowed from the admin by %(user)s after block #%(id)s: %(reason)s") % {
                "user": request.user.get_username(),
                "id": block.pk,
                "reason": block.reason,
            }
            max_length = FraudAllowedPrefix._meta.get_field("note").max_length or len(note)
            allowed = fraud.allow_prefix(prefix, store, now, note=note[:max_length])
            if prefix not in known:  # log_addition logs any model's row, typed or not
                self.log_addition(request, cast(Any, allowed), [{"added": {}}])
        if first:
            self.message_user(
                request,
                ngettext(
                    "%(count)d prefix is allowed now, and its blocks were lifted: %(prefixes)s.",
                    "%(count)d prefixes are allowed now, and their blocks were lifted: "
                    "%(prefixes)s.",
                    len(first),
                )
                % {"count": len(first), "prefixes": ", ".join(sorted(first))},
                messages.SUCCESS,
            )
        if countries:
            self.message_user(
                request,
                ngettext(
                    "%(count)d country block was skipped: a country cannot be allowed, only "
                    "lifted.",
                    "%(count)d country blocks were skipped: a country cannot be allowed, only "
                    "lifted.",
                    len(countries),
                )
                % {"count": len(countries)},
                messages.WARNING,
            )

    # -- the insights page -------------------------------------------------------------

    def get_urls(self) -> list[URLPattern]:
        name = f"{self.opts.app_label}_{self.opts.model_name}_insights"
        view = self.admin_site.admin_view(self.insights_view)
        return [path("insights/", view, name=name), *super().get_urls()]

    def insights_view(self, request: HttpRequest) -> TemplateResponse:
        """The traffic the guard watches (``textflow_django.insights``): per day, per
        country, the prefixes with the most unverified codes, the blocks in force.

        Staff only (the admin site's login), with the view permission of fraud blocks.
        ``?days=N`` picks the period (1 to ``insights.MAX_DAYS``; default
        ``insights.DEFAULT_DAYS``); a bad value shows the default and says so.
        """
        if not self.has_view_permission(request):
            raise PermissionDenied
        days = insights.DEFAULT_DAYS
        asked = request.GET.get("days")
        if asked is not None:
            try:
                days = insights.check_days(int(asked))
            except ValueError:
                self.message_user(
                    request,
                    gettext("The period must be 1 to %(max)d days; showing %(days)d.")
                    % {"max": insights.MAX_DAYS, "days": days},
                    messages.ERROR,
                )
        figures = insights.compute(days)
        context = {
            **self.admin_site.each_context(request),
            "title": _("Traffic insights"),
            "opts": self.opts,
            "figures": figures,
            "chart": insights.daily_chart(figures.daily),
            "periods": (7, 30, 90, 365),
            "busiest": figures.countries[0].sent if figures.countries else 0,
            "prefix_scale": max((p.sent for p in figures.prefixes), default=0),
        }
        return TemplateResponse(request, "textflow_django/admin/insights.html", context)


class _AllowedPrefixForm(_AllowedForm):
    """An allowed prefix: ``+`` and 1 to 15 digits (separators people type are dropped)."""

    class Meta:
        model = FraudAllowedPrefix
        fields = ("prefix", "note")

    def clean_prefix(self) -> str:
        value = SEPARATORS_RE.sub("", str(self.cleaned_data["prefix"]).strip())
        if not is_prefix(value):
            raise forms.ValidationError(
                _("A prefix is + and 1 to 15 digits, such as +1202555."), code="invalid"
            )
        return value


@admin.register(FraudAllowedPrefix)
class FraudAllowedPrefixAdmin(_AllowedAdmin):
    """Prefixes the Fraud Guard never blocks nor slows (beside ``ALLOW_PREFIXES``).

    Adding one lifts the blocks in force of that prefix (``fraud.allow_prefix``); its
    prefix cannot be changed afterwards (delete it and add another), its note can.
    """

    form = _AllowedPrefixForm
    list_display = ("prefix", "note", "created_at")
    search_fields = ("prefix", "note")
    ordering = ("prefix",)

    def get_readonly_fields(
        self, request: HttpRequest, obj: FraudAllowedPrefix | None = None
    ) -> tuple[str, ...]:
        return ("prefix", "created_at") if obj is not None else ()

    def save_model(
        self, request: HttpRequest, obj: FraudAllowedPrefix, form: Any, change: bool
    ) -> None:
        super().save_model(request, obj, form, change)
        if not change:
            store = get_store()
            fraud.allow_prefix(obj.prefix, store, store.clock(), note=obj.note)
