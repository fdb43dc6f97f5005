"""Phone-number fields: a model field storing E.164, and its form and DRF serializer fields.

All three delegate every rule to :mod:`textflow_django.phone`; they only decide *when* the
rules run and how a refusal is reported.

- :class:`PhoneNumberField` (model) canonicalises whatever it is given to E.164 on
  assignment, on save and in lookups, so ``filter(phone="+1 202 555 0143")`` finds
  ``+12025550143``. It validates in ``full_clean()``. Saving never raises: like every Django
  field it trusts code that skips ``full_clean()``, and a value it cannot read is stored as
  given. Country rules are off by default (``check_countries=False``): a stored number must
  not turn invalid when ``ALLOWED_COUNTRIES`` changes; apply them when sending.
- :class:`PhoneNumberFormField` and :class:`PhoneNumberSerializerField` guard input, so
  they apply country rules by default (``check_countries=True``) and return E.164.

Importing this module registers :class:`PhoneNumberSerializerField` as the
``ModelSerializer`` field for :class:`PhoneNumberField`.
"""

from __future__ import annotations

from typing import Any, cast

import phonenumbers
from django import forms
from django.core import checks
from django.core.exceptions import FieldDoesNotExist, ValidationError
from django.db import models
from django.db.models.query_utils import DeferredAttribute
from django.utils.translation import gettext_lazy as _
from rest_framework import serializers

from ._e164 import is_e164
from .phone import ERROR_MESSAGES, MAX_INPUT_LENGTH, InvalidPhoneNumberError, normalize

__all__ = [
    "E164_MAX_LENGTH",
    "PhoneNumberField",
    "PhoneNumberFormField",
    "PhoneNumberInput",
    "PhoneNumberSerializerField",
]

#: Characters in the longest E.164 number: "+" and 15 digits.
E164_MAX_LENGTH = 16


def _canonical(value: str, region: str | None) -> str:
    """``value`` in E.164 when it is an acceptable number, else ``value`` unchanged."""
    try:
        return normalize(value, region=region, check_countries=False)
    except InvalidPhoneNumberError:
        return value


class _PhoneNumberDescriptor(DeferredAttribute):
    """Canonicalises on assignment: ``obj.phone = "+1 (202) 555-0143"`` reads back E.164.

    A value already in E.164 shape is stored untouched: that is every value this field saved,
    so loading rows costs next to nothing. Anything it cannot read is kept as given, for
    ``full_clean()`` to report.
    """

    def __set__(self, instance: models.Model, value: Any) -> None:
        if isinstance(value, str) and value and not is_e164(value):
            value = _canonical(value, cast(PhoneNumberField, self.field).region)
        instance.__dict__[self.field.attname] = value


class PhoneNumberField(models.CharField):  # type: ignore[type-arg]
    """A ``CharField`` holding a phone number in E.164 (``+12025550143``).

    Args:
        region: ISO region for numbers entered in national format; ``None`` (the default)
            means ``TEXTFLOW["DEFAULT_REGION"]`` read at each use.
        check_countries: also apply ``ALLOWED_COUNTRIES``/``BLOCKED_COUNTRIES`` in
            ``full_clean()``. Off by default so stored data stays valid when settings change.

    ``max_length`` defaults to 16, the longest E.164 number; system check ``textflow.E101``
    refuses less, and ``textflow.E102`` an unknown ``region``. Empty values (``""``,
    ``None`` with ``null=True``) are kept as they are, as on any ``CharField``.
    """

    description = _("Phone number (E.164)")
    descriptor_class = _PhoneNumberDescriptor

    def __init__(
        self,
        *args: Any,
        region: str | None = None,
        check_countries: bool = False,
        **kwargs: Any,
    ) -> None:
        self.region = region
        self.check_countries = check_countries
        kwargs.setdefault("max_length", E164_MAX_LENGTH)
        super().__init__(*args, **kwargs)

    def deconstruct(self) -> Any:
        name, path, args, kwargs = super().deconstruct()
        # max_length stays in migrations even at its default (as EmailField does), so a
        # future change of the default cannot silently alter existing columns.
        if self.region is not None:
            kwargs["region"] = self.region
        if self.check_countries:
            kwargs["check_countries"] = True
        return name, path, args, kwargs

    def check(self, **kwargs: Any) -> list[checks.CheckMessage]:
        return [*super().check(**kwargs), *self._check_phone_max_length(), *self._check_region()]

    def _check_phone_max_length(self) -> list[checks.CheckMessage]:
        if isinstance(self.max_length, int) and self.max_length < E164_MAX_LENGTH:
            return [
                checks.Error(
                    f"PhoneNumberField.max_length is {self.max_length}, too short for E.164.",
                    hint=f"Use max_length={E164_MAX_LENGTH} or more (or leave it unset).",
                    obj=self,
                    id="textflow.E101",
                )
            ]
        return []

    def _check_region(self) -> list[checks.CheckMessage]:
        if self.region is None or (
            isinstance(self.region, str) and self.region.upper() in phonenumbers.SUPPORTED_REGIONS
        ):
            return []
        return [
            checks.Error(
                f"PhoneNumberField.region {self.region!r} is not a region phonenumbers knows.",
                hint='Use an ISO 3166-1 alpha-2 code such as "US" or "GB", or None.',
                obj=self,
                id="textflow.E102",
            )
        ]

    def to_python(self, value: Any) -> Any:
        # Canonicalise what can be read; leave the rest (including non-strings) for
        # validate() to refuse with the right code.
        if isinstance(value, str) and value:
            return _canonical(value, self.region)
        return value

    def get_prep_value(self, value: Any) -> Any:
        # CharField's: resolves lazy objects, str()s, then to_python() canonicalises, so
        # lookups match however the number is typed. Unreadable values pass unchanged.
        value = models.Field.get_prep_value(self, value)
        if value is None:
            return None
        return self.to_python(value if isinstance(value, str) else str(value))

    def pre_save(self, model_instance: models.Model, add: bool) -> Any:
        value = getattr(model_instance, self.attname)
        if isinstance(value, str) and value:
            canonical = _canonical(value, self.region)
            if canonical != value:
                setattr(model_instance, self.attname, canonical)
            return canonical
        return value

    def validate(self, value: Any, model_instance: models.Model | None) -> None:
        """Django's checks (null, blank, choices), then the phone rules.

        Raises:
            InvalidPhoneNumberError: see :func:`textflow_django.phone.parse`.
        """
        super().validate(value, model_instance)
        if value is None or value == "":
            return
        normalize(value, region=self.region, check_countries=self.check_countries)

    def formfield(self, **kwargs: Any) -> Any:
        """A :class:`PhoneNumberFormField` with this field's region and country rules on.

        Its ``max_length`` is the *input* limit (64), not the column's: people type spaces.
        """
        defaults: dict[str, Any] = {
            "form_class": PhoneNumberFormField,
            "region": self.region,
            "max_length": MAX_INPUT_LENGTH,
        }
        defaults.update(kwargs)
        return super().formfield(**defaults)


class PhoneNumberInput(forms.TextInput):
    """``<input type="tel" autocomplete="tel">``: the phone keypad on mobile, autofill."""

    input_type = "tel"

    def __init__(self, attrs: dict[str, Any] | None = None) -> None:
        super().__init__({"autocomplete": "tel", **(attrs or {})})


class PhoneNumberFormField(forms.CharField):
    """A form field whose cleaned value is E.164.

    Args:
        region: as for :class:`PhoneNumberField` (``None``: ``DEFAULT_REGION`` at clean time).
        check_countries: apply ``ALLOWED_COUNTRIES``/``BLOCKED_COUNTRIES`` (default True).

    Errors carry the codes of :data:`textflow_django.phone.ERROR_MESSAGES`; override a
    message with ``error_messages={"premium": ...}``.
    """

    widget = PhoneNumberInput
    default_error_messages = dict(ERROR_MESSAGES)

    def __init__(
        self, *, region: str | None = None, check_countries: bool = True, **kwargs: Any
    ) -> None:
        self.region = region
        self.check_countries = check_countries
        kwargs.setdefault("max_length", MAX_INPUT_LENGTH)
        super().__init__(**kwargs)

    def to_python(self, value: Any) -> Any:
        value = super().to_python(value)
        if value in self.empty_values:
            return value
        try:
            return normalize(value, region=self.region, check_countries=self.check_countries)
        except InvalidPhoneNumberError as err:
            raise ValidationError(
                self.error_messages[err.code], code=err.code, params=err.params
            ) from err


class PhoneNumberSerializerField(serializers.CharField):
    """A DRF field whose internal value is E.164.

    Only JSON strings are accepted: a number, boolean, list or object is a 400 field error
    (code ``invalid``), never a 500 and never ``str()``-ed. Refusals carry the codes of
    :data:`textflow_django.phone.ERROR_MESSAGES`. ``check_countries`` defaults to True.
    Under a ``ModelSerializer`` it inherits the model field's ``region`` unless given one.
    """

    default_error_messages = {
        **ERROR_MESSAGES,
        "not_a_string": _('Enter the phone number as a string, such as "+12025550143".'),
    }

    def __init__(
        self, *, region: str | None = None, check_countries: bool = True, **kwargs: Any
    ) -> None:
        self.region = region
        self.check_countries = check_countries
        super().__init__(**kwargs)

    def bind(self, field_name: str, parent: Any) -> None:
        super().bind(field_name, parent)
        source = self.source
        if self.region is not None or not source or source == "*" or "." in source:
            return
        model = getattr(getattr(parent, "Meta", None), "model", None)
        if model is None:
            return
        try:
            model_field = model._meta.get_field(source)
        except FieldDoesNotExist:
            return
        if isinstance(model_field, PhoneNumberField):
            self.region = model_field.region

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            raise serializers.ValidationError(self.error_messages["not_a_string"], code="invalid")
        value = data.strip() if self.trim_whitespace else data
        try:
            return normalize(value, region=self.region, check_countries=self.check_countries)
        except InvalidPhoneNumberError as err:
            self.fail(err.code, **(err.params or {}))

    def to_representation(self, value: Any) -> str:
        return str(value)


serializers.ModelSerializer.serializer_field_mapping[PhoneNumberField] = PhoneNumberSerializerField
