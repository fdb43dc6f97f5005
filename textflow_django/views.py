"""The JSON API: ``send-code`` and ``verify-code``; and the replies webhook TextFlow posts
incoming SMS to (:class:`RepliesView`). Thin: parse, call the service, map errors.

Field errors are DRF's 400 ``{"field": [...]}``; every other error is
``{"detail": "<human text>", "code": "<machine code>"}`` with ``Retry-After`` when a wait is
known. No rule lives here: see :mod:`textflow_django.verification`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Final, TypeVar

from django.conf import settings
from django.core.exceptions import SuspiciousOperation
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import connections, transaction
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.http.response import HttpResponseBase
from django.utils.cache import patch_vary_headers
from django.utils.decorators import method_decorator
from django.utils.http import http_date
from django.utils.module_loading import import_string
from django.utils.translation import gettext
from django.views import View
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.debug import sensitive_variables
from rest_framework import exceptions, status
from rest_framework.authentication import BaseAuthentication
from rest_framework.negotiation import BaseContentNegotiation, DefaultContentNegotiation
from rest_framework.parsers import BaseParser, JSONParser
from rest_framework.permissions import BasePermission
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.throttling import BaseThrottle
from rest_framework.views import APIView

from . import phone, replies, verification
from ._client_ip import client_ip
from ._events import emit
from .conf import conf
from .exceptions import VerificationError
from .serializers import (
    ErrorSerializer,
    ReplySerializer,
    SendCodeResponseSerializer,
    SendCodeSerializer,
    VerifyCodeResponseSerializer,
    VerifyCodeSerializer,
)

__all__ = ["RepliesView", "SendCodeView", "VerifyCodeView"]

try:  # Optional: describe the endpoints when drf-spectacular is installed.
    from drf_spectacular.utils import OpenApiResponse, extend_schema

    #: A 400 is DRF's field errors (``{"phone_number": ["Enter a valid phone number."]}``)
    #: or an error of the service or the parser (``{"detail": ..., "code": ...}``).
    BAD_REQUEST = {
        "oneOf": [
            {
                "type": "object",
                "properties": {"detail": {"type": "string"}, "code": {"type": "string"}},
                "required": ["detail", "code"],
            },
            {
                "type": "object",
                "additionalProperties": {"type": "array", "items": {"type": "string"}},
            },
        ]
    }

    HAS_SPECTACULAR = True
except ImportError:  # pragma: no cover - exercised when drf-spectacular is absent
    HAS_SPECTACULAR = False

if TYPE_CHECKING:
    from rest_framework.views import AsView, GenericView

_F = TypeVar("_F", bound=Callable[..., Any])


class ServiceError(exceptions.APIException):
    """A ``VerificationError`` on its way out as an HTTP answer."""

    def __init__(self, error: VerificationError) -> None:
        self.status_code = error.status_code
        self.retry_after = error.retry_after
        super().__init__(detail=str(error.message), code=error.code)


class _JSONOnly(BaseContentNegotiation):
    """JSON out whatever the client's ``Accept`` says (rather than a 406)."""

    def select_parser(self, request: Request, parsers: Iterable[BaseParser]) -> BaseParser | None:
        return DefaultContentNegotiation().select_parser(request, parsers)

    def select_renderer(
        self, request: Request, renderers: Iterable[BaseRenderer], format_suffix: str | None = None
    ) -> tuple[BaseRenderer, str]:
        renderer = next(iter(renderers))
        return renderer, renderer.media_type


class TextFlowAPIView(APIView):
    """Base of the endpoints: JSON in and out, configurable permissions/throttles, uniform
    error bodies, and never inside a request transaction (see :meth:`as_view`)."""

    parser_classes = [JSONParser]  # anything else is a 415
    renderer_classes = [JSONRenderer]
    content_negotiation_class = _JSONOnly

    @classmethod
    def as_view(cls, **initkwargs: Any) -> AsView[GenericView]:
        """The view, exempt from ``ATOMIC_REQUESTS`` on every database.

        The service writes each spent attempt, lock and wrong-code count as it goes. Inside
        a request transaction, answering an error (DRF rolls the transaction back on any
        error response) would undo them, and wrong guesses would be free.
        """
        view = super().as_view(**initkwargs)
        for alias in connections:
            transaction.non_atomic_requests(using=alias)(view)  # marks the view itself
        return view

    def get_authenticators(self) -> list[BaseAuthentication]:
        return [import_string(path)() for path in conf.AUTHENTICATION_CLASSES]

    def get_permissions(self) -> list[BasePermission]:
        return [import_string(path)() for path in conf.PERMISSION_CLASSES]

    def get_throttles(self) -> list[BaseThrottle]:
        return [import_string(path)() for path in conf.THROTTLE_CLASSES]

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        super().initial(request, *args, **kwargs)
        # Read the body here, where any failure to is the client's: JSON nested past the
        # recursion limit (RecursionError), a charset Python knows but cannot decode with
        # (punycode, idna: UnicodeError), more fields than DATA_UPLOAD_MAX_NUMBER_FIELDS or
        # a body past DATA_UPLOAD_MAX_MEMORY_SIZE (SuspiciousOperation). A 400 parse_error,
        # not a 500 or Django's HTML 400 page.
        try:
            request.data  # noqa: B018 - parsed for its errors
        except (RecursionError, UnicodeError, SuspiciousOperation) as exc:
            raise exceptions.ParseError() from exc

    def handle_exception(self, exc: Exception) -> Response:
        extra: dict[str, Any] = {}
        if isinstance(exc, VerificationError):
            extra = dict(exc.extra)
            exc = ServiceError(exc)
        elif isinstance(exc, DjangoValidationError):
            # Only the number is validated by the service (TextFlow may refuse it, too).
            exc = exceptions.ValidationError({"phone_number": exc.messages})
        may_arrive = bool(extra.get("code_may_arrive"))
        response = super().handle_exception(exc)
        if may_arrive:
            _keep_session(self.request, response)
        data = response.data
        if (
            isinstance(data, dict)
            and set(data) == {"detail"}
            and isinstance(exc, exceptions.APIException)
        ):
            codes = exc.get_codes()
            data["code"] = codes if isinstance(codes, str) else "error"
            data.update(extra)
        retry_after = getattr(exc, "retry_after", None)
        if retry_after is not None:
            response["Retry-After"] = str(int(retry_after))
        return response


def _keep_session(request: Request, response: Response) -> None:
    """Save the session (and set its cookie) on a 502/503 answer to a send that may have gone
    out, as ``SessionMiddleware`` does on other answers: it skips every 5xx, and the session
    holds the ``verification_id`` of that code, which a session-backed client needs for it.
    """
    session = getattr(request._request, "session", None)
    if session is None or not session.modified or session.is_empty():
        return
    session.save()
    expire_at_close = session.get_expire_at_browser_close()
    max_age = None if expire_at_close else session.get_expiry_age()
    response.set_cookie(
        settings.SESSION_COOKIE_NAME,
        session.session_key,
        max_age=max_age,
        expires=None if max_age is None else http_date(time.time() + max_age),
        domain=settings.SESSION_COOKIE_DOMAIN,
        path=settings.SESSION_COOKIE_PATH,
        secure=bool(settings.SESSION_COOKIE_SECURE),
        httponly=bool(settings.SESSION_COOKIE_HTTPONLY),
        samesite=settings.SESSION_COOKIE_SAMESITE,
    )
    patch_vary_headers(response, ("Cookie",))


def _describe(
    operation_id: str, request: Any, response: Any, errors: dict[int, str]
) -> Callable[[_F], _F]:
    """The drf-spectacular decorator for an endpoint (named ``operation_id`` in the schema),
    or a no-op without it."""
    if not HAS_SPECTACULAR:
        return lambda view: view
    responses: dict[int, Any] = {
        200: response,
        400: OpenApiResponse(
            BAD_REQUEST,
            description="Field errors ({field: [messages]}), or parse_error or "
            + errors.pop(400, "a refused request"),
        ),
        401: "authentication_failed or not_authenticated, when the project's first "
        "DEFAULT_AUTHENTICATION_CLASSES entry answers with WWW-Authenticate",
        403: "authentication_failed (wrong credentials), not_authenticated or "
        "permission_denied (PERMISSION_CLASSES)"
        + "".join(f", or {text}" for text in [errors.pop(403, "")] if text),
        415: "unsupported_media_type",
    }
    for code, description in errors.items():
        responses[code] = description
    for code, description in list(responses.items()):
        if isinstance(description, str):
            responses[code] = OpenApiResponse(ErrorSerializer, description=description)
    decorator: Callable[[_F], _F] = extend_schema(
        operation_id=operation_id, request=request, responses=responses
    )
    return decorator


class SendCodeView(TextFlowAPIView):
    """``POST {"phone_number"}``: text a verification code to the number."""

    @_describe(
        "sendCode",
        SendCodeSerializer,
        SendCodeResponseSerializer,
        {
            400: "country_not_allowed",
            403: "destination_blocked: the Fraud Guard stopped sending codes to this number's "
            "prefix or country; nothing was sent",
            429: "resend_too_soon or rate_limited (with Retry-After)",
            502: "sms_provider_error (with code_may_arrive and verification_id when the SMS "
            "may have gone out)",
            503: "sms_provider_unavailable (the same) or service_unavailable (with Retry-After)",
        },
    )
    def post(self, request: Request) -> Response:
        serializer = SendCodeSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        # The session remembers the code's handle only for a client that holds one already
        # (a browser that came back with its cookie): every other client has the handle in
        # the answer, and a new session row per send would cost a write for nothing.
        session = getattr(request._request, "session", None)
        sent = verification.send_code(
            serializer.validated_data["phone_number"],
            request=request._request,
            user=request.user,
            session=session is not None and session.session_key is not None,
        )
        return Response(
            {
                "phone_number": sent.phone_number,
                "expires_at": sent.expires_at,
                "resend_after": sent.resend_after,
                "verification_id": sent.verification_id,
            },
            status=status.HTTP_200_OK,
        )


class VerifyCodeView(TextFlowAPIView):
    """``POST {"phone_number", "code"}``: check the code; answer a token on success."""

    @_describe(
        "verifyCode",
        VerifyCodeSerializer,
        VerifyCodeResponseSerializer,
        {
            400: "invalid_code (also when the caller holds no live code of the number), "
            "expired or country_not_allowed",
            429: "too_many_attempts or rate_limited (with Retry-After)",
            502: "sms_provider_error",
            503: "sms_provider_unavailable or service_unavailable (with Retry-After)",
        },
    )
    def post(self, request: Request) -> Response:
        serializer = VerifyCodeSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        verified = verification.check_code(
            serializer.validated_data["phone_number"],
            serializer.validated_data["code"],
            request=request._request,
            user=request.user,
            verification_id=serializer.validated_data.get("verification_id"),
        )
        return Response(
            {"phone_number": verified.phone_number, "verified": True, "token": verified.token}
        )


#: Largest body the replies webhook reads, in bytes: a reply is one SMS part, at most
#: ``replies.MAX_TEXT_LENGTH`` characters (each up to 6 bytes as a JSON ``\u`` escape),
#: with room to spare. A larger one is refused (413) before it is read whole or parsed.
MAX_REPLY_BODY: Final = 16 * 1024


def _answer(status_code: int, detail: str, code: str) -> JsonResponse:
    return JsonResponse({"detail": detail, "code": code}, status=status_code)


class RepliesView(View):
    """``POST {"phone_number", "text", "secret"}``: TextFlow forwarding one incoming SMS.

    ``200 {"status": "ok"}`` once the reply is taken, a retried delivery too (stored once:
    :func:`textflow_django.replies.receive`). ``200 {"status": "ignored", "reason":
    "invalid_phone_number"}`` when the sender is no phone number (nothing stored; logged as
    ``textflow.reply.rejected reason=invalid_sender``): the request is right, and any other
    answer would be retried forever. Not a DRF view: no session, authentication,
    permission or throttle of the verification endpoints applies, nor CSRF (TextFlow holds
    no cookie); the ``secret`` authenticates. Else, in order: 404 ``not_configured`` (no
    ``REPLY_SECRET``); 429 ``rate_limited`` with ``Retry-After`` (``REPLY_RATE`` per
    source); 413 ``too_large`` (over :data:`MAX_REPLY_BODY` bytes, unread); 400
    ``parse_error`` (no JSON object); 403 ``bad_secret`` (missing or wrong, compared in
    constant time; logged as ``textflow.reply.rejected reason=bad_secret``, never the body);
    400 field errors (``phone_number``/``text`` missing, no string, too long). TextFlow
    retries a delivery on every answer but 200. The rejections are logged without the
    client's address (personal data that no erasure could take back out of the logs).
    """

    http_method_names = ["post"]

    @classmethod
    def as_view(cls, **initkwargs: Any) -> Callable[..., HttpResponseBase]:
        """The view, CSRF-exempt and outside ``ATOMIC_REQUESTS`` (the service commits the
        reply itself, so a retry's claim and the reply never wait on the request)."""
        view = csrf_exempt(super().as_view(**initkwargs))
        for alias in connections:
            transaction.non_atomic_requests(using=alias)(view)
        return view

    @method_decorator(sensitive_variables())  # the body, the payload, its serializer
    def post(self, request: HttpRequest) -> HttpResponse:
        if not replies.is_configured():
            return _answer(404, gettext("Replies are not configured."), "not_configured")
        ip = client_ip(request)
        wait = replies.admit(ip)
        if wait is not None:
            response = _answer(429, gettext("Too many requests."), "rate_limited")
            response["Retry-After"] = str(wait)
            return response
        body = _read_body(request)
        if body is None:
            emit("textflow.reply.rejected", reason="too_large")
            return _answer(413, gettext("The request body is too large."), "too_large")
        try:
            payload = json.loads(body)
        except (ValueError, RecursionError):
            payload = None
        if not isinstance(payload, dict):
            emit("textflow.reply.rejected", reason="parse_error")
            return _answer(400, gettext("The body must be a JSON object."), "parse_error")
        if not replies.secret_matches(payload.get("secret")):
            emit("textflow.reply.rejected", reason="bad_secret")
            return _answer(403, gettext("Wrong or missing secret."), "bad_secret")
        fields = ReplySerializer(data=payload)
        if not fields.is_valid():
            emit("textflow.reply.rejected", reason="invalid", fields=sorted(fields.errors))
            return JsonResponse(dict(fields.errors), status=400)
        try:
            replies.receive(fields.validated_data["phone_number"], fields.validated_data["text"])
        except phone.InvalidPhoneNumberError:
            emit("textflow.reply.rejected", reason="invalid_sender")
            return JsonResponse({"status": "ignored", "reason": "invalid_phone_number"})
        return JsonResponse({"status": "ok"})


def _read_body(request: HttpRequest) -> bytes | None:
    """The body, or None when it is longer than :data:`MAX_REPLY_BODY` (a declared length
    over it is refused before anything is read)."""
    try:
        declared = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        declared = 0
    if declared > MAX_REPLY_BODY:
        return None
    body = request.read(MAX_REPLY_BODY + 1)
    return None if len(body) > MAX_REPLY_BODY else body
