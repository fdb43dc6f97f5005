"""The plain Django forms: a thin layer over the verification service.

Every test goes through the real service, database and locmem backend; the forms must turn
each refusal into a form error with the refusal's stable code, and never hide a failure.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from typing import Any

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AnonymousUser
from django.contrib.sessions.backends.db import SessionStore
from django.core.exceptions import NON_FIELD_ERRORS
from django.http import HttpRequest
from django.test import RequestFactory, override_settings
from django.utils import timezone

from textflow_django import verification
from textflow_django.backends import locmem
from textflow_django.exceptions import (
    MAYBE_SENT_MESSAGE,
    CountryNotAllowed,
    InvalidCode,
    ResendTooSoon,
    SMSProviderError,
    SMSProviderUnavailable,
    TextFlowConnectionError,
    TextFlowError,
    TextFlowRateLimited,
    TextFlowRejectedNumber,
    TextFlowServerError,
    TooManyAttempts,
    VerificationExpired,
)
from textflow_django.forms import SendCodeForm, VerifyCodeForm
from textflow_django.models import PhoneVerification

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("no_secrets_in_logs")]

NUMBER = "+12025550143"
OTHER = "+447400123456"


def textflow(**overrides: Any) -> override_settings:
    """``override_settings`` of some TEXTFLOW keys, the others as tests/settings.py has them."""
    return override_settings(TEXTFLOW={**settings.TEXTFLOW, **overrides})


def send(number: str = NUMBER, request: HttpRequest | None = None) -> str:
    """Send a code through the form and return it as the phone received it."""
    form = SendCodeForm({"phone_number": number})
    sent = form.send(request=request)
    assert sent is not None, form.errors
    message = locmem.outbox[-1]
    assert message.phone_number == sent.phone_number
    return code_of(message.text)


def code_of(text: str) -> str:
    """The code a code SMS carries: its last word. 6 digits: the default "local" mode's
    codes, and the locmem backend's own in "textflow" mode (locmem records no separate code
    in "local" mode)."""
    code = text.rsplit(" ", 1)[-1]
    assert re.fullmatch(r"\d{6}", code), text
    return code


def session_request(session_key: str | None = None) -> HttpRequest:
    """A request with a database session (that session again when ``session_key`` is given),
    as SessionMiddleware would load it."""
    request = RequestFactory().post("/")
    request.session = SessionStore(session_key)
    request.user = AnonymousUser()
    return request


def wrong(code: str) -> str:
    """A well-formed code that is not ``code``."""
    return "000000" if code != "000000" else "111111"


def non_field_codes(form: Any) -> list[str]:
    return [e.code for e in form.errors.as_data().get(NON_FIELD_ERRORS, [])]


# -- the happy path ------------------------------------------------------------------------


def test_send_then_verify() -> None:
    form = SendCodeForm({"phone_number": "+1 (202) 555-0143"})
    sent = form.send()

    assert sent is not None
    assert form.errors == {}
    assert form.error is None
    assert sent.phone_number == NUMBER
    assert form.cleaned_data["phone_number"] == NUMBER
    assert [m.phone_number for m in locmem.outbox] == [NUMBER]
    code = code_of(locmem.outbox[-1].text)

    verify = VerifyCodeForm({"phone_number": "+1 202 555 0143", "code": code})
    verified = verify.verify()

    assert verified is not None, verify.errors
    assert verify.errors == {}
    assert verify.error is None
    assert verified.phone_number == NUMBER
    assert verification.phone_from_token(verified.token) == NUMBER
    row = PhoneVerification.objects.get()
    assert row.status == PhoneVerification.Status.VERIFIED
    # A code verifies once.
    again = VerifyCodeForm({"phone_number": NUMBER, "code": code})
    assert again.verify() is None
    assert isinstance(again.error, VerificationExpired)


def test_request_and_user_reach_the_service() -> None:
    user = get_user_model().objects.create_user("alice", password="x")  # noqa: S106
    request = RequestFactory().post("/", REMOTE_ADDR="203.0.113.7")
    request.user = user

    assert SendCodeForm({"phone_number": NUMBER}).send(request=request) is not None

    row = PhoneVerification.objects.get()
    assert row.client_ip == "203.0.113.7"
    assert row.user == user


def test_unbound_form_sends_nothing() -> None:
    form = SendCodeForm()
    assert form.send() is None
    assert locmem.outbox == []
    assert not PhoneVerification.objects.exists()


# -- which code a form checks (issue 11) ----------------------------------------------------


def test_the_session_that_asked_for_the_code_checks_it() -> None:
    """A code is bound to the session that asked for it: another session's guess reaches no
    code (answered as a wrong code, nothing spent); that session's next request verifies."""
    asking = session_request()
    code = send(request=asking)
    asking.session.save()  # as SessionMiddleware does after the response

    other = VerifyCodeForm({"phone_number": NUMBER, "code": code})
    assert other.verify(request=session_request()) is None
    assert isinstance(other.error, InvalidCode)
    assert other.error.attempts_left == 4
    assert other.has_error(NON_FIELD_ERRORS, "invalid_code")
    assert PhoneVerification.objects.get().attempts == 0

    form = VerifyCodeForm({"phone_number": NUMBER, "code": code})
    verified = form.verify(request=session_request(asking.session.session_key))
    assert verified is not None, form.errors
    assert verified.phone_number == NUMBER
    assert PhoneVerification.objects.get().status == PhoneVerification.Status.VERIFIED


def test_a_session_without_a_code_is_answered_as_a_wrong_code() -> None:
    form = VerifyCodeForm({"phone_number": NUMBER, "code": "123456"})

    assert form.verify(request=session_request()) is None

    assert isinstance(form.error, InvalidCode)
    assert form.error.attempts_left == 4
    assert form.has_error(NON_FIELD_ERRORS, "invalid_code")


def test_verify_checks_the_code_its_verification_id_names() -> None:
    sent = SendCodeForm({"phone_number": NUMBER}).send()
    assert sent is not None
    code = code_of(locmem.outbox[-1].text)

    unknown = VerifyCodeForm({"phone_number": NUMBER, "code": code})
    assert unknown.verify(verification_id="not-a-verification-id") is None
    assert isinstance(unknown.error, InvalidCode)
    assert unknown.error.attempts_left == 4
    assert PhoneVerification.objects.get().attempts == 0

    # From a request whose session never asked for it: the handle is enough.
    form = VerifyCodeForm({"phone_number": NUMBER, "code": code})
    verified = form.verify(request=session_request(), verification_id=sent.verification_id)
    assert verified is not None, form.errors
    assert verified.verification.pk == sent.verification.pk


# -- the number ----------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["", "not a number", "+1 202 555 0143 ext. 12", "+١٢٠٢٥٥٥٠١٤٣"])
def test_invalid_number_is_a_field_error(value: str) -> None:
    form = SendCodeForm({"phone_number": value})

    assert form.send() is None

    assert "phone_number" in form.errors
    assert non_field_codes(form) == []
    assert form.error is None
    assert locmem.outbox == []
    assert not PhoneVerification.objects.exists()


def test_number_textflow_refuses_is_a_field_error() -> None:
    locmem.fail_next(TextFlowRejectedNumber("Phone number is invalid", status=400))
    form = SendCodeForm({"phone_number": NUMBER})

    assert form.send() is None

    assert form.has_error("phone_number", "invalid")
    assert locmem.outbox == []
    assert not PhoneVerification.objects.exists()


def test_country_rule_is_answered_by_the_service_on_the_number_field() -> None:
    with textflow(ALLOWED_COUNTRIES=["GB"]):
        form = SendCodeForm({"phone_number": NUMBER})
        assert form.send() is None

        assert form.has_error("phone_number", "country_not_allowed")
        assert isinstance(form.error, CountryNotAllowed)
        assert str(CountryNotAllowed.default_message) in form.errors["phone_number"]
        assert locmem.outbox == []

        # The same form class accepts an allowed country: the rule is read at call time.
        assert SendCodeForm({"phone_number": OTHER}).send() is not None
        assert [m.phone_number for m in locmem.outbox] == [OTHER]


# -- refusals of the service ---------------------------------------------------------------


def test_resend_too_soon_keeps_retry_after() -> None:
    send()
    form = SendCodeForm({"phone_number": NUMBER})

    assert form.send() is None

    assert isinstance(form.error, ResendTooSoon)
    assert form.error.status_code == 429
    assert form.has_error(NON_FIELD_ERRORS, "resend_too_soon")
    assert form.errors.get("phone_number") is None
    assert form.error.retry_after is not None
    assert 0 < form.error.retry_after <= 30
    assert len(locmem.outbox) == 1


def test_wrong_code_says_how_many_attempts_are_left() -> None:
    code = send()
    form = VerifyCodeForm({"phone_number": NUMBER, "code": wrong(code)})

    assert form.verify() is None

    assert isinstance(form.error, InvalidCode)
    assert form.error.attempts_left == 4
    assert form.has_error(NON_FIELD_ERRORS, "invalid_code")
    [message] = form.non_field_errors()
    assert "4 attempts left" in message
    assert PhoneVerification.objects.get().attempts == 1


def test_last_wrong_code_then_locked_on_the_sixth_try() -> None:
    code = send()
    for left in (4, 3, 2, 1):
        form = VerifyCodeForm({"phone_number": NUMBER, "code": wrong(code)})
        assert form.verify() is None
        assert isinstance(form.error, InvalidCode)
        assert form.error.attempts_left == left
    fifth = VerifyCodeForm({"phone_number": NUMBER, "code": wrong(code)})
    assert fifth.verify() is None
    assert isinstance(fifth.error, InvalidCode)
    assert fifth.error.attempts_left == 0
    assert "No attempts left" in fifth.non_field_errors()[0]

    # Sixth try, with the right code: locked, whatever the code.
    sixth = VerifyCodeForm({"phone_number": NUMBER, "code": code})
    assert sixth.verify() is None

    assert isinstance(sixth.error, TooManyAttempts)
    assert sixth.error.status_code == 429
    assert sixth.has_error(NON_FIELD_ERRORS, "too_many_attempts")
    assert PhoneVerification.objects.get().status == PhoneVerification.Status.LOCKED


def test_expired_code() -> None:
    code = send()
    PhoneVerification.objects.update(expires_at=timezone.now() - dt.timedelta(seconds=1))
    form = VerifyCodeForm({"phone_number": NUMBER, "code": code})

    assert form.verify() is None

    assert isinstance(form.error, VerificationExpired)
    assert form.has_error(NON_FIELD_ERRORS, "expired")
    assert PhoneVerification.objects.get().status == PhoneVerification.Status.PENDING


def test_code_never_sent_is_expired() -> None:
    form = VerifyCodeForm({"phone_number": NUMBER, "code": "123456"})

    assert form.verify() is None

    assert form.has_error(NON_FIELD_ERRORS, "expired")


# -- TextFlow failing ----------------------------------------------------------------------


def test_provider_failing_after_the_send_may_have_gone_out_keeps_it() -> None:
    locmem.fail_next(TextFlowServerError("down", status=503))
    form = SendCodeForm({"phone_number": NUMBER})

    assert form.send() is None

    # A 5xx from TextFlow: it answered, badly (502), not "unreachable, retry" (503).
    assert type(form.error) is SMSProviderError
    assert form.error.status_code == 502
    assert non_field_codes(form) == [form.error.code]
    # It may have sent the SMS: the form says the code may still arrive, and the
    # verification is recorded under the handle the refusal carries.
    assert form.non_field_errors() == [str(MAYBE_SENT_MESSAGE)]
    handle = form.error.extra["verification_id"]
    assert form.error.extra == {"code_may_arrive": True, "verification_id": handle}
    row = PhoneVerification.objects.get()
    assert row.handle_hash == hashlib.sha256(str(handle).encode()).hexdigest()
    assert (row.status, row.attempts) == (PhoneVerification.Status.PENDING, 0)
    # The cooldown it took is kept: a retry at once is refused, and sends nothing.
    retry = SendCodeForm({"phone_number": NUMBER})
    assert retry.send() is None
    assert isinstance(retry.error, ResendTooSoon)
    assert locmem.outbox == []


@pytest.mark.parametrize(
    ("failure", "refusal", "retry_after"),
    [
        (TextFlowConnectionError("refused", maybe_sent=False), SMSProviderUnavailable, 5),
        (
            TextFlowRateLimited("Too many requests", status=429, retry_after=7),
            SMSProviderUnavailable,
            7,
        ),
    ],
    ids=["connection-refused", "textflow-429"],
)
def test_provider_failing_before_anything_went_out_consumes_nothing(
    failure: TextFlowError, refusal: type[Exception], retry_after: int
) -> None:
    locmem.fail_next(failure)
    form = SendCodeForm({"phone_number": NUMBER})

    assert form.send() is None

    assert type(form.error) is refusal
    assert form.error.status_code == 503
    assert form.error.retry_after == retry_after
    assert form.error.extra == {}
    assert non_field_codes(form) == [form.error.code]
    assert locmem.outbox == []
    assert not PhoneVerification.objects.exists()
    # No cooldown was claimed: the user can retry at once, and it works.
    retry = SendCodeForm({"phone_number": NUMBER})
    assert retry.send() is not None, retry.errors
    assert len(locmem.outbox) == 1


@textflow(VERIFY_MODE="textflow")  # only TextFlow's own codes are checked by TextFlow
def test_provider_down_on_verify_counts_no_attempt() -> None:
    code = send()
    locmem.fail_next(TextFlowServerError("down", status=503))
    form = VerifyCodeForm({"phone_number": NUMBER, "code": code})

    assert form.verify() is None

    # A 5xx from TextFlow: it answered, badly (502), not "unreachable, retry" (503).
    assert type(form.error) is SMSProviderError
    assert form.error.status_code == 502
    assert non_field_codes(form) == [form.error.code]
    row = PhoneVerification.objects.get()
    assert (row.status, row.attempts) == (PhoneVerification.Status.PENDING, 0)
    retry = VerifyCodeForm({"phone_number": NUMBER, "code": code})
    assert retry.verify() is not None, retry.errors


# -- the code field ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "code",
    [
        "١٢٣٤٥٦",  # Arabic-Indic digits: \d would take them
        "۱۲۳۴۵۶",  # Extended Arabic-Indic (Persian)
        "１２３４５６",  # full-width
        "12 34 56",
        "123",
        "12345678901",
        "12345a",
        "",
    ],
)
def test_code_must_be_ascii_digits(code: str) -> None:
    real = send()
    form = VerifyCodeForm({"phone_number": NUMBER, "code": code})

    assert form.verify() is None

    assert "code" in form.errors
    assert form.error is None
    # Refused by the form: the service never saw it, so no attempt was spent.
    assert PhoneVerification.objects.get().attempts == 0
    assert VerifyCodeForm({"phone_number": NUMBER, "code": real}).verify() is not None


def test_code_widget_helps_the_browser() -> None:
    html = str(VerifyCodeForm()["code"])

    assert 'autocomplete="one-time-code"' in html
    assert 'inputmode="numeric"' in html
    assert 'maxlength="10"' in html


def test_a_limit_store_outage_is_a_form_error_and_sends_nothing() -> None:
    """A rate-limit store that fails: the form refuses with "service_unavailable" and a
    retry_after, like the API's 503; no SMS without its limits."""
    broken = {"BACKEND": "tests.conftest.BrokenCache"}
    with override_settings(CACHES={**settings.CACHES, "limits": broken}):
        with textflow(RATELIMIT_STORE="cache", RATELIMIT_CACHE="limits"):
            form = SendCodeForm({"phone_number": NUMBER})
            assert form.send() is None
    assert form.error is not None and form.error.retry_after == 10
    assert non_field_codes(form) == ["service_unavailable"]
    assert locmem.outbox == []
