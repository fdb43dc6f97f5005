"""Serializers of the send-code and verify-code endpoints: the input ones validate requests;
the response ones only describe the answers in the API schema (the views answer plain dicts).
:class:`ReplySerializer` validates the fields of a reply TextFlow forwards to the webhook."""

from __future__ import annotations

from typing import Any

from django.utils.translation import gettext_lazy as _
from rest_framework import serializers

from .fields import PhoneNumberSerializerField
from .replies import MAX_TEXT_LENGTH, storable_text
from .verification import code_validator

__all__ = ["ReplySerializer", "SendCodeSerializer", "VerifyCodeSerializer"]

#: How the endpoints' ``phone_number`` is described in the API schema, with an example.
_PHONE_NUMBER_HELP = _(
    "The number in international format: + and the country code, then the number. "
    "Spaces, dots, dashes and brackets are ignored."
)
_PHONE_NUMBER_EXAMPLE = "+12025550143"


class _PhoneNumberField(PhoneNumberSerializerField):
    """The endpoints' ``phone_number``: any number, E.164 out. Country rules are the
    service's (answered as ``country_not_allowed``, not as a field error)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(check_countries=False, help_text=_PHONE_NUMBER_HELP, **kwargs)


try:  # Optional: an example in the API schema when drf-spectacular is installed.
    from drf_spectacular.utils import extend_schema_field
except ImportError:  # pragma: no cover - exercised when drf-spectacular is absent
    pass
else:
    extend_schema_field(
        {"type": "string", "description": _PHONE_NUMBER_HELP, "example": _PHONE_NUMBER_EXAMPLE}
    )(_PhoneNumberField)


class SendCodeSerializer(serializers.Serializer[Any]):
    phone_number = _PhoneNumberField()


class CodeField(serializers.CharField):
    """A code as the user typed it: a JSON string only. A JSON number is refused rather
    than converted, since a number cannot carry a code's leading zeros."""

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


class VerifyCodeSerializer(serializers.Serializer[Any]):
    phone_number = _PhoneNumberField()
    code = CodeField(max_length=10, validators=[code_validator])
    verification_id = serializers.CharField(
        max_length=200,
        required=False,
        help_text=_(
            "The verification_id send-code answered. Without it, the code the session asked "
            "for is checked (a client with neither has no code to check)."
        ),
    )


class SendCodeResponseSerializer(serializers.Serializer[Any]):
    """The shape of a send-code answer (documents the API schema)."""

    phone_number = serializers.CharField()
    expires_at = serializers.DateTimeField()
    resend_after = serializers.IntegerField(help_text=_("Seconds before another code may be sent."))
    verification_id = serializers.CharField(
        help_text=_(
            "Opaque handle of this code: pass it to verify-code (only its holder's "
            "guesses reach the code)."
        )
    )


class VerifyCodeResponseSerializer(serializers.Serializer[Any]):
    """The shape of a verify-code answer (documents the API schema)."""

    phone_number = serializers.CharField()
    verified = serializers.BooleanField()
    token = serializers.CharField(
        help_text=_("Opaque, single-use proof of the number for a later request (signup).")
    )


class ErrorSerializer(serializers.Serializer[Any]):
    """Every error that is not a field error: ``{"detail": ..., "code": ...}``, with the
    refusal's extra fields where it has them."""

    detail = serializers.CharField()
    code = serializers.CharField()
    attempts_left = serializers.IntegerField(
        required=False, help_text=_("invalid_code: wrong codes left before the code locks.")
    )
    code_may_arrive = serializers.BooleanField(
        required=False,
        help_text=_("A send that may have gone out: the code verifies if it arrives."),
    )
    verification_id = serializers.CharField(
        required=False, help_text=_("With code_may_arrive: the handle of that code.")
    )


class _JSONString(serializers.CharField):
    """A JSON string only: a number, a list or an object is refused, never ``str()``-ed.
    A NUL or a lone surrogate becomes U+FFFD (``replies.storable_text``) before the
    validators run, which would refuse it: the reply is taken, never answered 400 (which
    TextFlow retries forever)."""

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            self.fail("invalid")
        return storable_text(super().to_internal_value(data))


class ReplySerializer(serializers.Serializer[Any]):
    """A reply's fields as TextFlow forwards them (the webhook checks its ``secret`` before).
    The number is the service's to read (``replies.normalize_sender``); the text is kept as
    sent, blank or not."""

    phone_number = _JSONString()
    text = _JSONString(max_length=MAX_TEXT_LENGTH, allow_blank=True, trim_whitespace=False)
