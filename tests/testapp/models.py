"""Models for the tests (the field tests; the bulk model source). Not shipped: the app lives
under tests/."""

from __future__ import annotations

from django.db import models

from textflow_django.fields import PhoneNumberField


class Contact(models.Model):
    """One row per person; covers the field's defaults and each of its options."""

    phone = PhoneNumberField("phone number", unique=True)
    landline = PhoneNumberField(blank=True)
    fax = PhoneNumberField(null=True, blank=True, max_length=20)
    uk_phone = PhoneNumberField(blank=True, region="GB")
    guarded_phone = PhoneNumberField(blank=True, check_countries=True)

    class Meta:
        app_label = "testapp"

    def __str__(self) -> str:
        return str(self.phone)
