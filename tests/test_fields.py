"""textflow_django.fields: the model field (on a real DB), the form field, the serializer field."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django import forms
from django.core.exceptions import ValidationError
from django.core.management import call_command
from django.db import models
from django.test import override_settings
from django.test.utils import isolate_apps
from rest_framework import serializers
from rest_framework.exceptions import ValidationError as DRFValidationError

from tests.testapp.models import Contact
from textflow_django.fields import (
    PhoneNumberField,
    PhoneNumberFormField,
    PhoneNumberInput,
    PhoneNumberSerializerField,
)
from textflow_django.phone import ERROR_MESSAGES


def stored(pk: int, column: str = "phone") -> Any:
    """The column's value as the database holds it (values_list skips the descriptor)."""
    return Contact.objects.filter(pk=pk).values_list(column, flat=True).get()


# The model field.


def test_assignment_normalises_at_once() -> None:
    contact = Contact(phone="+1 (202) 555-0143")
    assert contact.phone == "+12025550143"
    contact.phone = "+44 20 7946 0958"
    assert contact.phone == "+442079460958"


def test_unreadable_assignment_is_kept_for_full_clean_to_report() -> None:
    contact = Contact(phone="+1 202 CALL NOW")
    assert contact.phone == "+1 202 CALL NOW"
    with pytest.raises(ValidationError) as exc:
        contact.full_clean()
    assert [e.code for e in exc.value.error_dict["phone"]] == ["invalid"]


@pytest.mark.django_db
def test_save_stores_e164_and_reads_back() -> None:
    contact = Contact.objects.create(phone="+1 (202) 555-0143")
    assert stored(contact.pk) == "+12025550143"
    contact.refresh_from_db()
    assert contact.phone == "+12025550143"


@pytest.mark.django_db
def test_pre_save_canonicalises_values_the_descriptor_lets_through() -> None:
    # "+44 0 20..." has the E.164 shape, so assignment keeps it; save canonicalises it.
    contact = Contact(phone="+4402079460958")
    assert contact.phone == "+4402079460958"
    contact.save()
    assert contact.phone == "+442079460958"
    assert stored(contact.pk) == "+442079460958"


@pytest.mark.django_db
def test_full_clean_normalises_and_sets_the_attribute() -> None:
    contact = Contact(phone="+12025550143")
    contact.__dict__["phone"] = "+1.202.555.0143"  # as if assigned behind the descriptor
    contact.full_clean()
    assert contact.phone == "+12025550143"


@pytest.mark.django_db
def test_lookups_normalise_their_argument() -> None:
    contact = Contact.objects.create(phone="+12025550143")
    assert Contact.objects.get(phone="+1 202 555 0143") == contact
    assert Contact.objects.filter(phone="+1 (202) 555-0143").exists()
    assert list(Contact.objects.filter(phone__in=["+1.202.555.0143", "+442079460958"])) == [contact]
    # An unreadable argument matches nothing and raises nothing.
    assert not Contact.objects.filter(phone="not a phone").exists()
    assert not Contact.objects.filter(phone="+1 202 CALL NOW").exists()


@pytest.mark.django_db
def test_queryset_update_and_bulk_create_store_e164() -> None:
    Contact.objects.bulk_create([Contact(phone="+33 6 12 34 56 78")])
    Contact.objects.update(landline="+1 202 555 0143")
    contact = Contact.objects.get()
    assert stored(contact.pk) == "+33612345678"
    assert stored(contact.pk, "landline") == "+12025550143"


@pytest.mark.django_db
def test_save_never_raises_on_an_unreadable_value() -> None:
    # Like every Django field, save() trusts code that skipped full_clean().
    contact = Contact.objects.create(phone="+1 202 CALL NOW")
    assert stored(contact.pk) == "+1 202 CALL NOW"


@pytest.mark.parametrize(
    ("value", "code"),
    [
        ("+1 202 555 0143 ext. 12", "extension"),
        ("+44 909 8790000", "premium"),
        ("+1 123 456 7890", "invalid"),
        ("+\u0661\u0662\u0660\u0662\u0665\u0665\u0665\u0660\u0661\u0664\u0663", "invalid"),
        (12025550143, "invalid"),
        (["+12025550143"], "invalid"),
        ("", "blank"),
        (None, "null"),
    ],
)
def test_full_clean_refuses(value: object, code: str) -> None:
    contact = Contact(phone=value)
    with pytest.raises(ValidationError) as exc:
        contact.full_clean(validate_unique=False)
    assert [e.code for e in exc.value.error_dict["phone"]] == [code]


def test_blank_and_null_stay_as_django_keeps_them() -> None:
    contact = Contact(phone="+12025550143", landline="", fax=None, uk_phone="")
    contact.full_clean(validate_unique=False)
    assert (contact.landline, contact.fax, contact.uk_phone) == ("", None, "")
    field = Contact._meta.get_field("fax")
    assert field.get_prep_value(None) is None
    assert field.get_prep_value("") == ""
    assert field.to_python(None) is None


@pytest.mark.django_db
def test_null_column_round_trip() -> None:
    contact = Contact.objects.create(phone="+12025550143", fax=None)
    assert stored(contact.pk, "fax") is None
    assert stored(contact.pk, "landline") == ""
    assert Contact.objects.filter(fax__isnull=True).count() == 1


def test_region_option_reads_national_numbers() -> None:
    contact = Contact(phone="+12025550143", uk_phone="020 7946 0958")
    assert contact.uk_phone == "+442079460958"
    contact.full_clean(validate_unique=False)
    # Without a region, national format is not a number: the message says to add the code.
    contact = Contact(phone="+12025550143", landline="020 7946 0958")
    with pytest.raises(ValidationError) as exc:
        contact.full_clean(validate_unique=False)
    assert [e.code for e in exc.value.error_dict["landline"]] == ["no_country_code"]


def test_default_region_setting_is_used_by_the_model_field() -> None:
    with override_settings(TEXTFLOW={"DEFAULT_REGION": "GB"}):
        contact = Contact(phone="+12025550143", landline="020 7946 0958")
        contact.full_clean(validate_unique=False)
        assert contact.landline == "+442079460958"


@override_settings(TEXTFLOW={"BLOCKED_COUNTRIES": ["GB"]})
def test_country_rules_only_where_the_model_field_asks() -> None:
    # check_countries=False (default): stored numbers stay valid when settings change.
    Contact(phone="+442079460958").full_clean(validate_unique=False)
    contact = Contact(phone="+12025550143", guarded_phone="+442079460958")
    with pytest.raises(ValidationError) as exc:
        contact.full_clean(validate_unique=False)
    assert [e.code for e in exc.value.error_dict["guarded_phone"]] == ["country_not_allowed"]


@pytest.mark.django_db
def test_unique_is_checked_on_the_normalised_value() -> None:
    Contact.objects.create(phone="+12025550143")
    with pytest.raises(ValidationError) as exc:
        Contact(phone="+1 202 555 0143").full_clean()
    assert [e.code for e in exc.value.error_dict["phone"]] == ["unique"]


def test_deconstruct() -> None:
    name, path, args, kwargs = PhoneNumberField().deconstruct()
    assert path == "textflow_django.fields.PhoneNumberField"
    assert (args, kwargs) == ([], {"max_length": 16})

    field = PhoneNumberField(
        "mobile", region="GB", check_countries=True, max_length=20, null=True, blank=True
    )
    _, _, args, kwargs = field.deconstruct()
    assert kwargs == {
        "verbose_name": "mobile",
        "region": "GB",
        "check_countries": True,
        "max_length": 20,
        "null": True,
        "blank": True,
    }
    rebuilt = PhoneNumberField(*args, **kwargs)
    assert (rebuilt.region, rebuilt.check_countries, rebuilt.max_length, rebuilt.null) == (
        "GB",
        True,
        20,
        True,
    )


def test_contact_fields_pass_their_checks() -> None:
    for field in Contact._meta.get_fields():
        if isinstance(field, PhoneNumberField):
            assert field.check() == [], field.name


@isolate_apps("tests.testapp")
def test_check_e101_max_length_too_short() -> None:
    class Short(models.Model):  # noqa: DJ008
        phone = PhoneNumberField(max_length=12)
        ok = PhoneNumberField(max_length=32)

        class Meta:
            app_label = "testapp"

    errors = Short._meta.get_field("phone").check()
    assert [e.id for e in errors] == ["textflow.E101"]
    assert errors[0].obj is Short._meta.get_field("phone")
    assert Short._meta.get_field("ok").check() == []


@isolate_apps("tests.testapp")
def test_check_e102_unknown_region() -> None:
    class Regions(models.Model):  # noqa: DJ008
        bad = PhoneNumberField(region="XX")
        wrong_type = PhoneNumberField(region=44)  # type: ignore[arg-type]
        lower = PhoneNumberField(region="gb")

        class Meta:
            app_label = "testapp"

    assert [e.id for e in Regions._meta.get_field("bad").check()] == ["textflow.E102"]
    assert [e.id for e in Regions._meta.get_field("wrong_type").check()] == ["textflow.E102"]
    assert Regions._meta.get_field("lower").check() == []


@pytest.mark.django_db
def test_migrations_are_in_step_with_the_models() -> None:
    # SystemExit(1) if makemigrations would write anything.
    call_command("makemigrations", "testapp", "--check", "--dry-run", verbosity=0)


# The form field.


class ContactForm(forms.ModelForm):  # type: ignore[type-arg]
    class Meta:
        model = Contact
        fields = ["phone", "uk_phone", "fax"]


def test_model_formfield() -> None:
    form = ContactForm()
    field = form.fields["phone"]
    assert isinstance(field, PhoneNumberFormField)
    assert field.check_countries is True
    assert form.fields["uk_phone"].region == "GB"  # type: ignore[attr-defined]
    html = str(form["phone"])
    assert 'type="tel"' in html
    assert 'autocomplete="tel"' in html
    assert 'maxlength="64"' in html  # people type spaces: not the column's 16


@pytest.mark.django_db
def test_model_form_saves_e164() -> None:
    form = ContactForm(
        data={"phone": " +1 (202) 555-0143 ", "uk_phone": "020 7946 0958", "fax": ""}
    )
    assert form.is_valid(), form.errors
    assert form.cleaned_data["phone"] == "+12025550143"
    assert form.cleaned_data["fax"] is None  # null=True: empty input is None
    contact = form.save()
    assert stored(contact.pk) == "+12025550143"
    assert stored(contact.pk, "uk_phone") == "+442079460958"


@pytest.mark.parametrize(
    ("value", "code"),
    [
        ("+1 202 CALL NOW", "invalid"),
        ("+1 202 555 0143 x12", "extension"),
        ("+1 900 234 5678", "premium"),
        ("\uff0b\uff11\uff12\uff10\uff12\uff15\uff15\uff15\uff10\uff11\uff14\uff13", "invalid"),
        ("", "required"),
    ],
)
def test_form_field_errors(value: str, code: str) -> None:
    field = PhoneNumberFormField()
    with pytest.raises(ValidationError) as exc:
        field.clean(value)
    assert exc.value.code == code
    if code in ERROR_MESSAGES:
        assert exc.value.messages == [str(ERROR_MESSAGES[code])]


def test_form_field_options() -> None:
    assert PhoneNumberFormField(required=False).clean("  ") == ""
    assert PhoneNumberFormField(region="US").clean("(202) 555-0143") == "+12025550143"
    custom = PhoneNumberFormField(error_messages={"premium": "No premium numbers, please."})
    with pytest.raises(ValidationError) as exc:
        custom.clean("+44 909 8790000")
    assert exc.value.messages == ["No premium numbers, please."]
    # Normalised comparison: retyping the same number in another format is no change.
    assert not PhoneNumberFormField().has_changed("+12025550143", "+1 202 555 0143")
    assert PhoneNumberFormField().has_changed("+12025550143", "+1 202 555 0144")
    assert isinstance(PhoneNumberFormField().widget, PhoneNumberInput)


@override_settings(TEXTFLOW={"BLOCKED_COUNTRIES": ["GB"]})
def test_form_field_applies_country_rules_by_default() -> None:
    with pytest.raises(ValidationError) as exc:
        PhoneNumberFormField().clean("+44 20 7946 0958")
    assert exc.value.code == "country_not_allowed"
    assert PhoneNumberFormField(check_countries=False).clean("+442079460958") == "+442079460958"
    custom = PhoneNumberFormField(error_messages={"country_not_allowed": "No %(region)s."})
    with pytest.raises(ValidationError) as exc:
        custom.clean("+442079460958")
    assert exc.value.messages == ["No GB."]


# The serializer field.


class PhoneSerializer(serializers.Serializer):  # type: ignore[type-arg]
    phone = PhoneNumberSerializerField()
    optional = PhoneNumberSerializerField(required=False, allow_null=True, allow_blank=True)


def from_json(body: str) -> PhoneSerializer:
    return PhoneSerializer(data=json.loads(body))


def test_serializer_normalises() -> None:
    serializer = from_json('{"phone": " +1 (202) 555-0143 ", "optional": null}')
    assert serializer.is_valid(), serializer.errors
    assert serializer.validated_data == {"phone": "+12025550143", "optional": None}
    blank = from_json('{"phone": "+12025550143", "optional": ""}')
    assert blank.is_valid(), blank.errors
    assert blank.validated_data["optional"] == ""


@pytest.mark.parametrize(
    "body", ["12025550143", "1.5", "true", "false", "[]", '["+12025550143"]', '{"a": 1}', "{}"]
)
def test_serializer_refuses_non_string_json_as_a_field_error(body: str) -> None:
    serializer = from_json(f'{{"phone": {body}}}')
    assert not serializer.is_valid()
    (error,) = serializer.errors["phone"]
    assert error.code == "invalid"
    assert "string" in str(error)
    with pytest.raises(DRFValidationError) as exc:
        serializer.is_valid(raise_exception=True)
    assert exc.value.status_code == 400


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ('"+1 202 CALL NOW"', "invalid"),
        ('"+1 202 555 0143 ext. 12"', "extension"),
        ('"+44 909 8790000"', "premium"),
        ('"(202) 555-0143"', "no_country_code"),
        (
            '"+\\u0661\\u0662\\u0660\\u0662\\u0665\\u0665\\u0665\\u0660\\u0661\\u0664\\u0663"',
            "invalid",
        ),
        ('""', "blank"),
        ('"   "', "blank"),
        ("null", "null"),
    ],
)
def test_serializer_refusals_carry_the_code(body: str, code: str) -> None:
    serializer = from_json(f'{{"phone": {body}}}')
    assert not serializer.is_valid()
    (error,) = serializer.errors["phone"]
    assert error.code == code
    if code in ERROR_MESSAGES:
        assert str(error) == str(ERROR_MESSAGES[code])


def test_serializer_missing_field_is_required() -> None:
    serializer = from_json("{}")
    assert not serializer.is_valid()
    assert serializer.errors["phone"][0].code == "required"


@override_settings(TEXTFLOW={"ALLOWED_COUNTRIES": ["US"]})
def test_serializer_country_rules() -> None:
    serializer = from_json('{"phone": "+44 20 7946 0958"}')
    assert not serializer.is_valid()
    assert serializer.errors["phone"][0].code == "country_not_allowed"
    relaxed = PhoneNumberSerializerField(check_countries=False)
    assert relaxed.run_validation("+44 20 7946 0958") == "+442079460958"
    custom = PhoneNumberSerializerField(error_messages={"country_not_allowed": "Not {region}."})
    with pytest.raises(DRFValidationError) as exc:
        custom.run_validation("+442079460958")
    assert exc.value.detail == ["Not GB."]


class ContactSerializer(serializers.ModelSerializer):  # type: ignore[type-arg]
    class Meta:
        model = Contact
        fields = ["id", "phone", "landline", "fax", "uk_phone", "guarded_phone"]


def test_model_serializer_maps_the_field_automatically() -> None:
    fields = ContactSerializer().fields
    for name in ("phone", "landline", "fax", "uk_phone", "guarded_phone"):
        assert isinstance(fields[name], PhoneNumberSerializerField), name
    assert fields["uk_phone"].region == "GB"  # inherited from the model field
    assert fields["phone"].region is None
    assert fields["fax"].allow_null


@pytest.mark.django_db
def test_model_serializer_round_trip() -> None:
    serializer = ContactSerializer(
        data={"phone": "+1 (202) 555-0143", "uk_phone": "020 7946 0958", "fax": None}
    )
    assert serializer.is_valid(), serializer.errors
    contact = serializer.save()
    assert stored(contact.pk) == "+12025550143"
    assert stored(contact.pk, "uk_phone") == "+442079460958"
    data = ContactSerializer(contact).data
    assert (data["phone"], data["uk_phone"], data["fax"], data["landline"]) == (
        "+12025550143",
        "+442079460958",
        None,
        "",
    )
    # The unique validator sees the normalised value.
    again = ContactSerializer(data={"phone": "+1 202 555 0143"})
    assert not again.is_valid()
    assert again.errors["phone"][0].code == "unique"
    # JSON garbage through the ModelSerializer is a field error too.
    bad = ContactSerializer(data={"phone": ["+12025550143"], "uk_phone": 442079460958})
    assert not bad.is_valid()
    assert bad.errors["phone"][0].code == "invalid"
    assert bad.errors["uk_phone"][0].code == "invalid"
