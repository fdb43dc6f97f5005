"""``POST /api/signup/``: the API's step 3, after ``/api/phone/send-code/`` and ``verify-code/``."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import HttpRequest
from rest_framework import generics, serializers
from rest_framework.permissions import AllowAny
from textflow_django.exceptions import InvalidToken
from textflow_django.verification import phone_from_token

from .services import create_account

User = get_user_model()


class SignupSerializer(serializers.Serializer):  # type: ignore[type-arg]
    """Create an account for the number a verify-code ``token`` proves."""

    id = serializers.IntegerField(read_only=True)
    username = serializers.CharField(max_length=150)
    password = serializers.CharField(
        write_only=True, trim_whitespace=False, style={"input_type": "password"}
    )
    token = serializers.CharField(
        write_only=True,
        help_text="The token answered by /api/phone/verify-code/. It makes one account: a "
        "second signup with it is refused.",
    )
    phone = serializers.CharField(source="profile.phone", read_only=True)
    phone_verified = serializers.BooleanField(source="profile.phone_verified", read_only=True)

    def validate_username(self, value: str) -> str:
        field = User._meta.get_field(User.USERNAME_FIELD)
        try:
            field.run_validators(value)
        except DjangoValidationError as err:
            raise serializers.ValidationError(err.messages) from err
        if User._default_manager.filter(**{User.USERNAME_FIELD: value}).exists():
            raise serializers.ValidationError("A user with that username already exists.")
        return value

    def _http_request(self) -> HttpRequest | None:
        """The Django request presenting the token (for ``TOKEN_SESSION_BINDING``)."""
        request = self.context.get("request")
        return getattr(request, "_request", None)

    def validate_token(self, value: str) -> str:
        try:
            # A look only, so that a bad username or password does not spend the token:
            # create_account spends it, with the account.
            phone_from_token(value, request=self._http_request())
        except InvalidToken as err:
            raise serializers.ValidationError(str(err.message), code=err.code) from err
        return value

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        try:
            validate_password(attrs["password"], User(username=attrs["username"]))
        except DjangoValidationError as err:
            raise serializers.ValidationError({"password": err.messages}) from err
        return attrs

    def create(self, validated_data: dict[str, Any]) -> Any:
        def create_user() -> Any:
            return User._default_manager.create_user(
                username=validated_data["username"], password=validated_data["password"]
            )

        try:
            return create_account(
                token=validated_data["token"],
                create_user=create_user,
                request=self._http_request(),
            )
        except InvalidToken as err:
            # Spent meanwhile (a parallel signup with the same token), or verified with
            # no phone_verified receiver to record it.
            raise serializers.ValidationError({"token": [str(err.message)]}, code=err.code) from err


def _messages(help_text: str) -> serializers.ListField:
    return serializers.ListField(child=serializers.CharField(), required=False, help_text=help_text)


class SignupRefusedSerializer(serializers.Serializer):  # type: ignore[type-arg]
    """A refused signup (400): each field at fault with its messages; ``detail`` instead when
    the body does not parse. Describes the API schema only."""

    username = _messages("Taken, or not a valid username.")
    password = _messages("Refused by the password validators (AUTH_PASSWORD_VALIDATORS).")
    token = _messages(
        "Forged, expired, never verified, already used, or (with TOKEN_SESSION_BINDING) "
        "from another session."
    )
    detail = serializers.CharField(required=False, help_text="The body is not valid JSON.")


class DetailSerializer(serializers.Serializer):  # type: ignore[type-arg]
    """``{"detail": "..."}``: DRF's answer to a request it does not take."""

    detail = serializers.CharField()


def _describe_signup(view: type[generics.CreateAPIView]) -> type[generics.CreateAPIView]:  # type: ignore[type-arg]
    """Every answer of the signup endpoint in the API schema (when drf-spectacular is
    installed): the account, field errors, and DRF's refusals of a wrong method or body."""
    try:
        from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_view
    except ImportError:  # the schema is optional, like drf-spectacular
        return view
    answers = {
        201: OpenApiResponse(SignupSerializer, description="The account, with its number."),
        400: OpenApiResponse(
            SignupRefusedSerializer,
            description="Field errors (a bad username, password or token), or a body that "
            "does not parse. Nothing was created, and the token was not spent.",
        ),
        405: OpenApiResponse(DetailSerializer, description="Any method but POST."),
        415: OpenApiResponse(
            DetailSerializer,
            description="A body that is not JSON, a form or multipart form data.",
        ),
    }
    return extend_schema_view(post=extend_schema(operation_id="signup", responses=answers))(view)


@_describe_signup
class SignupView(generics.CreateAPIView):  # type: ignore[type-arg]
    """Answers 201 with the new user and their verified number; 400 on a bad token (forged,
    expired, never verified, or already used: a token makes one account)."""

    serializer_class = SignupSerializer
    permission_classes = [AllowAny]
    # Anonymous by design: no session, so no CSRF token is needed to call it.
    authentication_classes: list[Any] = []
