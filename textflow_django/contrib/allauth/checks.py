"""System checks of the allauth integration (registered by the app's ``ready``).

- ``textflow_allauth.E001``: ``TEXTFLOW["ALLAUTH_PHONE_FIELD"]`` names no concrete field of
  the user model.
- ``textflow_allauth.E002``: the verified flag (``TEXTFLOW["ALLAUTH_PHONE_VERIFIED_FIELD"]``,
  default ``<phone field>_verified``) is not a ``BooleanField`` of the user model.
- ``textflow_allauth.E003``: a project's ``textflow_django/allauth/sms/verification_code.txt``
  renders no code SMS template (:func:`~textflow_django.verification.code_template_problem`:
  no ``{code}``): every code SMS would go out without its code.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.core import checks
from django.core.exceptions import FieldDoesNotExist
from django.db import models

from ... import verification
from . import _numbers, _texts

__all__ = ["check_code_template", "check_phone_fields"]


@checks.register()
def check_phone_fields(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    names = _numbers.fields()
    if names is None:
        return []
    number, verified = names
    User = get_user_model()
    label = User._meta.label
    errors: list[checks.CheckMessage] = []
    try:
        User._meta.get_field(number)
    except FieldDoesNotExist:
        errors.append(
            checks.Error(
                f"TEXTFLOW['ALLAUTH_PHONE_FIELD'] is {number!r}, which is no field of {label}.",
                hint="Name the user model's phone number field (a PhoneNumberField), or "
                "leave the key out to keep numbers on textflow_allauth.PhoneNumber.",
                id="textflow_allauth.E001",
            )
        )
    try:
        flag = User._meta.get_field(verified)
    except FieldDoesNotExist:
        flag = None
    if not isinstance(flag, models.BooleanField):
        errors.append(
            checks.Error(
                f"The verified flag of the phone number, {verified!r}, is no BooleanField "
                f"of {label}.",
                hint="Add it to the user model, or name it in "
                "TEXTFLOW['ALLAUTH_PHONE_VERIFIED_FIELD'].",
                id="textflow_allauth.E002",
            )
        )
    return errors


@checks.register()
def check_code_template(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    context = {"user": None, "phone": "+12025550143", "reauthentication": False}
    # The template as a sample context renders it (one language: the wording's shape is
    # the same in every one).
    template = _texts.render_code_template(context)
    problem = verification.code_template_problem(template) if template else None
    if problem is None:
        return []
    return [
        checks.Error(
            f"The code SMS of textflow_django/allauth/sms/verification_code.txt {problem}.",
            hint="Write {code} where the code goes and {service} for SERVICE_NAME.",
            id="textflow_allauth.E003",
        )
    ]
