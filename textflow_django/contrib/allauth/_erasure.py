"""The allauth integration's part of an erasure (``privacy.erase_phone_number``): the
:class:`~.models.PhoneNumber` rows of the erased number, whichever user they belong to.

A number kept on the project's user model (``TEXTFLOW["ALLAUTH_PHONE_FIELD"]``) is the
project's own field: clearing it may break a login or a unique constraint, so the project
decides (a receiver of its own on ``phone_number_erased``); it is left as it is here.
"""

from __future__ import annotations

from typing import Any

from ... import signals
from .models import PhoneNumber

__all__ = ["connect", "erase"]

#: The kind this receiver adds to the erasure's report.
KIND = "allauth_phone_numbers"


def erase(sender: object, phone_number: str, erased: dict[str, int], **kwargs: Any) -> None:
    """Delete the rows of ``phone_number`` (E.164) and add their count to ``erased``."""
    deleted, _by_model = PhoneNumber.objects.filter(number=phone_number).delete()
    erased[KIND] = erased.get(KIND, 0) + deleted


def connect() -> None:
    """Receive ``phone_number_erased`` (once, however often the app is made ready)."""
    signals.phone_number_erased.connect(erase, dispatch_uid="textflow_django.contrib.allauth.erase")
