"""django-allauth's phone support through textflow_django.contrib.allauth, with the real
allauth and Django's test client: signup, verification by code, login by code, resend,
change of number, the unknown-account and account-exists texts, a blocked prefix and a
capped number; every SMS asserted as sent (the locmem outbox, or the emulator's).

allauth's settings are tests/allauth_settings.py's (a phone-only site), applied per test.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.db import IntegrityError, transaction
from django.test import Client
from django.utils import timezone, translation

from tests.allauth_settings import ALLAUTH_SETTINGS
from tests.conftest import tf
from textflow_django import fraud
from textflow_django.backends import locmem
from textflow_django.contrib.allauth import checks
from textflow_django.contrib.allauth.adapter import AccountAdapter
from textflow_django.contrib.allauth.models import PhoneNumber
from textflow_django.exceptions import (
    DestinationBlocked,
)
from textflow_django.models import FraudBlock, PhoneVerification
from textflow_django.ratelimit import get_store
from textflow_django.testing import TextFlowEmulator

pytestmark = pytest.mark.django_db

NUMBER = "+12025550143"
OTHER = "+12025550144"
BLOCKED = "+2348031234567"
CODE = re.compile(r"is: (\d{6})$")

SIGNUP = "/accounts/signup/"
LOGIN = "/accounts/login/"
REQUEST_LOGIN_CODE = "/accounts/login/code/"
CONFIRM_LOGIN = "/accounts/login/code/confirm/"
VERIFY = "/accounts/phone/verify/"
CHANGE = "/accounts/phone/change/"

#: allauth's messages that say a code went out (its templates' English).
SENT = ("A verification code has been sent to", "A sign-in code has been sent to")
BLOCKED_MESSAGE = "We cannot send codes to this number right now."
CAPPED_MESSAGE = "Too many requests. Try again later."
TOO_SOON_MESSAGE = "A code was sent a moment ago. Wait before asking for another."


@pytest.fixture(autouse=True)
def allauth_site(settings: Any) -> Iterator[None]:
    for name, value in ALLAUTH_SETTINGS.items():
        setattr(settings, name, value)
    yield


def sms() -> list[tuple[str, str]]:
    """``(number, text)`` of every SMS sent so far (the locmem backend's outbox)."""
    return [(m.phone_number, m.text) for m in locmem.outbox]


def code_of(text: str) -> str:
    found = CODE.search(text.splitlines()[0])
    assert found, text
    return found[1]


def code_sms(code: str) -> str:
    """textflow-django's own code SMS (TEXTFLOW["SERVICE_NAME"] is "Tests")."""
    return f"Your verification code for Tests is: {code}"


def html(response: Any) -> str:
    return response.content.decode()


def field_errors(response: Any) -> dict[str, list[str]]:
    form = response.context["form"]
    return {name: [str(e) for e in errors] for name, errors in form.errors.items()}


def user_with(number: str, *, verified: bool = True) -> Any:
    user = get_user_model().objects.create_user(username=f"u{number[1:]}")
    PhoneNumber.objects.create(user=user, number=number, verified=verified)
    return user


def signed_in(client: Client) -> Any:
    pk = client.session.get("_auth_user_id")
    return None if pk is None else get_user_model().objects.get(pk=pk)


def block_prefix(number: str) -> None:
    """A Fraud Guard block of the number's prefix (PREFIX_DIGITS 7), as the guard leaves
    one: its row, and its mark in the rate-limit store that every send checks."""
    prefix = number[:8]
    FraudBlock.objects.create(
        scope="prefix",
        value=prefix,
        reason="40 codes sent in 60 min, 1 verified (2%, below 20%)",
        sends=40,
        conversions=1,
        until=timezone.now() + dt.timedelta(hours=20),
    )
    get_store().hold(fraud.block_key("prefix", prefix), 86400)


def sign_up(client: Client, number: str = NUMBER) -> str:
    """Sign up with ``number`` and open the code page; return the code allauth sent."""
    response = client.post(SIGNUP, {"phone": number})
    assert response.status_code == 302 and response["Location"] == VERIFY
    to, text = sms()[-1]
    assert to == number
    assert SENT[0] in html(client.get(VERIFY))  # allauth's message, shown once
    return code_of(text)


# -- signup and verification by code ----------------------------------------------------


def test_signup_sends_allauths_code_and_entering_it_signs_in(client: Client) -> None:
    response = client.post(SIGNUP, {"phone": NUMBER})

    assert response.status_code == 302 and response["Location"] == VERIFY
    [(to, text)] = sms()
    code = code_of(text)
    assert to == NUMBER and text == code_sms(code)
    user = get_user_model().objects.get()
    assert AccountAdapter().get_phone(user) == (NUMBER, False)
    page = client.get(VERIFY)
    assert f"A verification code has been sent to {NUMBER}." in html(page)
    # allauth checks its own code: a wrong one is refused, the one sent signs in.
    wrong = client.post(VERIFY, {"action": "verify", "code": "000000"})
    assert wrong.status_code == 200 and signed_in(client) is None
    response = client.post(VERIFY, {"action": "verify", "code": code})
    assert response.status_code == 302
    assert signed_in(client) == user
    assert AccountAdapter().get_phone(user) == (NUMBER, True)
    # The code is reported as used: the Fraud Guard counts the conversion.
    assert PhoneVerification.objects.get().status == PhoneVerification.Status.VERIFIED


def test_a_national_number_is_read_with_default_region_and_stored_in_e164(
    client: Client, settings: Any
) -> None:
    tf(settings, DEFAULT_REGION="US")
    response = client.post(SIGNUP, {"phone": "(202) 555-0143"})
    assert response.status_code == 302
    assert [to for to, _ in sms()] == [NUMBER]
    assert PhoneNumber.objects.get().number == NUMBER


def test_a_number_textflow_refuses_is_the_fields_error(client: Client, settings: Any) -> None:
    tf(settings, ALLOWED_COUNTRIES=["US"])
    response = client.post(SIGNUP, {"phone": BLOCKED})
    assert response.status_code == 200
    assert field_errors(response) == {
        "phone": ["Phone numbers from this country are not accepted."]
    }
    assert sms() == [] and not get_user_model().objects.exists()


def test_the_webotp_line_ends_the_code_sms(client: Client, settings: Any) -> None:
    tf(settings, WEBOTP_DOMAIN="example.com")
    code = sign_up(client)
    assert sms()[-1][1] == f"{code_sms(code)}\n\n@example.com #{code}"


def test_code_message_words_the_code_sms(client: Client, settings: Any) -> None:
    tf(settings, CODE_MESSAGE="{code} is your {service} code")
    client.post(SIGNUP, {"phone": NUMBER})
    [(_, text)] = sms()
    assert re.fullmatch(r"\d{6} is your Tests code", text)


def test_a_projects_template_words_the_code_sms(
    client: Client, settings: Any, tmp_path: Path
) -> None:
    folder = tmp_path / "textflow_django" / "allauth" / "sms"
    folder.mkdir(parents=True)
    (folder / "verification_code.txt").write_text(
        "{% if reauthentication %}Confirm{% else %}Welcome{% endif %} to {service}, "
        "{{ phone }}: {code}. {% verbatim %}{{literal}}{% endverbatim %} :-} {site}\n"
    )
    settings.TEMPLATES = [{**settings.TEMPLATES[0], "DIRS": [str(tmp_path)]}]
    tf(settings, WEBOTP_DOMAIN="example.com")
    client.post(SIGNUP, {"phone": NUMBER})
    [(_, text)] = sms()
    code = re.findall(r"\d{6}", text)[-1]
    # Only {code} and {service} are placeholders: every other brace is text, as written.
    expected = f"Welcome to Tests, {NUMBER}: {code}. {{{{literal}}}} :-}} {{site}}"
    assert text == f"{expected}\n\n@example.com #{code}"


def test_signing_up_with_a_number_that_has_an_account_texts_it_instead(
    client: Client,
) -> None:
    owner = user_with(NUMBER)
    response = client.post(SIGNUP, {"phone": NUMBER})

    # allauth hides that the number has an account: the same code page as for a new one.
    assert response.status_code == 302 and response["Location"] == VERIFY
    assert sms() == [
        (
            NUMBER,
            "Someone tried to sign up for Tests with this phone number, which already "
            "has an account. If it was you, log in instead.",
        )
    ]
    assert list(get_user_model().objects.all()) == [owner]


def test_the_texts_without_a_service_name(client: Client, settings: Any) -> None:
    tf(settings, SERVICE_NAME="")
    user_with(NUMBER)
    client.post(SIGNUP, {"phone": NUMBER})
    Client().post(LOGIN, {"login": OTHER})
    assert [text for _, text in sms()] == [
        "Someone tried to sign up with this phone number, which already has an account. "
        "If it was you, log in instead.",
        "No account uses this phone number, so no code was sent. If you asked for one, "
        "sign up first.",
    ]


def test_an_unverified_number_is_nobodys(client: Client) -> None:
    # Anyone may type anyone's number: until verified it finds no user, and its owner can
    # still sign up with it.
    squatter = user_with(NUMBER, verified=False)
    adapter = AccountAdapter()
    assert adapter.get_user_by_phone(NUMBER) is None
    code = sign_up(client)
    client.post(VERIFY, {"action": "verify", "code": code})
    owner = signed_in(client)
    assert owner is not None and owner != squatter
    assert adapter.get_user_by_phone(NUMBER) == owner
    assert adapter.get_phone(squatter) == (NUMBER, False)


# -- login by code ----------------------------------------------------------------------


@pytest.mark.parametrize(("url", "field"), [(LOGIN, "login"), (REQUEST_LOGIN_CODE, "phone")])
def test_login_by_code(client: Client, url: str, field: str) -> None:
    user = user_with(NUMBER)
    response = client.post(url, {field: NUMBER})

    assert response.status_code == 302 and response["Location"].startswith(CONFIRM_LOGIN)
    [(to, text)] = sms()
    code = code_of(text)
    assert to == NUMBER and text == code_sms(code)
    response = client.post(CONFIRM_LOGIN, {"code": code})
    assert response.status_code == 302 and signed_in(client) == user
    assert PhoneVerification.objects.get().status == PhoneVerification.Status.VERIFIED


def test_a_login_code_for_a_number_with_no_account_is_a_text_saying_so(client: Client) -> None:
    response = client.post(LOGIN, {"login": OTHER})

    # The same code page as for a number with an account (allauth's enumeration guard).
    assert response.status_code == 302 and response["Location"].startswith(CONFIRM_LOGIN)
    assert sms() == [
        (
            OTHER,
            "No Tests account uses this phone number, so no code was sent. If you asked "
            "for one, sign up first.",
        )
    ]


def test_the_sms_without_a_code_obey_the_same_limits(client: Client, settings: Any) -> None:
    tf(settings, SEND_LIMITS={"number": ("1/h",)}, RESEND_COOLDOWN=0)
    client.post(LOGIN, {"login": OTHER})
    response = Client().post(LOGIN, {"login": OTHER})
    assert response.status_code == 200
    assert field_errors(response) == {"login": [CAPPED_MESSAGE]}
    assert len(sms()) == 1


# -- resend and change of number ---------------------------------------------------------


def test_resend_obeys_the_cooldown_then_sends_a_new_code(client: Client, settings: Any) -> None:
    sign_up(client)
    response = client.post(VERIFY, {"action": "resend"}, follow=True)

    # Refused inside RESEND_COOLDOWN: said on allauth's code page, and nothing sent.
    page = html(response)
    assert TOO_SOON_MESSAGE in page and not any(s in page for s in SENT)
    assert len(sms()) == 1
    tf(settings, RESEND_COOLDOWN=0)
    response = client.post(VERIFY, {"action": "resend"}, follow=True)
    assert SENT[0] in html(response)
    [_, (to, text)] = sms()
    second = code_of(text)
    assert to == NUMBER and text == code_sms(second)
    response = client.post(VERIFY, {"action": "verify", "code": second})
    assert response.status_code == 302 and signed_in(client) is not None


def test_changing_the_number_while_verifying_it(client: Client) -> None:
    sign_up(client)
    response = client.post(VERIFY, {"action": "change", "phone": OTHER})

    assert response.status_code == 302
    to, text = sms()[-1]
    assert to == OTHER
    client.post(VERIFY, {"action": "verify", "code": code_of(text)})
    user = signed_in(client)
    assert user is not None
    assert AccountAdapter().get_phone(user) == (OTHER, True)
    assert PhoneNumber.objects.count() == 1


def test_a_signed_in_user_changes_their_number(client: Client) -> None:
    user = user_with(NUMBER)
    client.force_login(user)
    response = client.post(CHANGE, {"phone": OTHER})

    assert response.status_code == 302 and response["Location"] == VERIFY
    [(to, text)] = sms()
    assert to == OTHER
    response = client.post(VERIFY, {"action": "verify", "code": code_of(text)})
    assert response.status_code == 302
    adapter = AccountAdapter()
    assert adapter.get_phone(user) == (OTHER, True)
    assert adapter.get_user_by_phone(OTHER) == user and adapter.get_user_by_phone(NUMBER) is None


# -- refusals: a blocked prefix, a capped number, TextFlow failing --------------------------


@pytest.mark.parametrize(("url", "field"), [(LOGIN, "login"), (REQUEST_LOGIN_CODE, "phone")])
def test_a_blocked_prefix_is_the_login_forms_error(client: Client, url: str, field: str) -> None:
    user_with(BLOCKED)
    block_prefix(BLOCKED)
    response = client.post(url, {field: BLOCKED})

    assert response.status_code == 200
    assert field_errors(response) == {field: [BLOCKED_MESSAGE]}
    assert sms() == [] and signed_in(client) is None


def test_a_blocked_prefix_at_signup_is_said_on_the_code_page(client: Client) -> None:
    block_prefix(BLOCKED)
    response = client.post(SIGNUP, {"phone": BLOCKED}, follow=True)

    # The account exists by then (allauth creates it before the verification step): the
    # code page says why no code came, where the number can be changed.
    assert response.redirect_chain == [(VERIFY, 302)]
    page = html(response)
    assert BLOCKED_MESSAGE in page and not any(s in page for s in SENT)
    assert sms() == []
    response = client.post(VERIFY, {"action": "change", "phone": NUMBER})
    assert sms()[-1][0] == NUMBER


def test_a_capped_number_is_the_forms_error(client: Client, settings: Any) -> None:
    tf(settings, SEND_LIMITS={"number": ("1/h",)}, RESEND_COOLDOWN=0)
    user = user_with(NUMBER)
    client.post(LOGIN, {"login": NUMBER})
    [(_, text)] = sms()

    response = Client().post(LOGIN, {"login": NUMBER})
    assert response.status_code == 200
    assert field_errors(response) == {"login": [CAPPED_MESSAGE]}
    # And on the change of number, for a signed-in user.
    other = Client()
    other.force_login(user_with(OTHER))
    response = other.post(CHANGE, {"phone": NUMBER})
    assert response.status_code == 200
    assert field_errors(response) == {"phone": [CAPPED_MESSAGE]}
    assert len(sms()) == 1
    # Refusals change nothing: the first login's code still signs in.
    response = client.post(CONFIRM_LOGIN, {"code": code_of(text)})
    assert response.status_code == 302 and signed_in(client) == user


def test_a_capped_number_on_the_code_page(client: Client, settings: Any) -> None:
    sign_up(client)
    tf(settings, SEND_LIMITS={"number": ("1/h",)}, RESEND_COOLDOWN=0)
    response = client.post(VERIFY, {"action": "change", "phone": OTHER}, follow=True)
    assert SENT[0] in html(response)
    response = client.post(VERIFY, {"action": "resend"}, follow=True)
    page = html(response)
    assert CAPPED_MESSAGE in page and not any(s in page for s in SENT)
    assert [to for to, _ in sms()] == [NUMBER, OTHER]


def test_textflow_refusing_the_send_is_the_forms_error(
    client: Client, textflow_live: TextFlowEmulator
) -> None:
    user_with(NUMBER)
    textflow_live.outage("down")  # connections refused: certainly nothing sent
    response = client.post(LOGIN, {"login": NUMBER})
    assert response.status_code == 200
    assert field_errors(response) == {
        "login": ["The SMS service is unavailable. Try again in a moment."]
    }
    textflow_live.outage(None)
    assert textflow_live.messages == []


def test_a_code_that_may_have_gone_out_lets_the_flow_go_on(
    client: Client, textflow_live: TextFlowEmulator
) -> None:
    user_with(NUMBER)
    textflow_live.fault("status", status=500, path="/send-sms")  # it may have sent the SMS
    response = client.post(LOGIN, {"login": NUMBER}, follow=True)

    # The code page, saying the code may still arrive (and not that it was sent).
    assert response.redirect_chain[0][0].startswith(CONFIRM_LOGIN)
    page = html(response)
    assert "the code may still arrive" in page and not any(s in page for s in SENT)
    assert signed_in(client) is None
    assert len(textflow_live.calls("/send-sms")) == 1  # tried once, never re-sent


# -- the request's language ------------------------------------------------------------


@pytest.fixture
def french(settings: Any) -> Iterator[Client]:
    """A client whose browser asks for French, on a site that follows it (LocaleMiddleware)."""
    middleware = list(settings.MIDDLEWARE)
    at = middleware.index("django.contrib.sessions.middleware.SessionMiddleware") + 1
    middleware.insert(at, "django.middleware.locale.LocaleMiddleware")
    settings.MIDDLEWARE = middleware
    before = translation.get_language()
    yield Client(headers={"accept-language": "fr"})
    # LocaleMiddleware leaves the thread in the request's language; the next tests are not.
    translation.activate(before)


def test_the_sms_and_the_refusals_are_in_the_requests_language(french: Client) -> None:
    user_with(BLOCKED)
    block_prefix(BLOCKED)
    french.post(SIGNUP, {"phone": NUMBER})
    Client(headers={"accept-language": "fr"}).post(LOGIN, {"login": OTHER})
    [(_, code_text), (_, unknown)] = sms()
    code = re.findall(r"\d{6}", code_text)[-1]
    assert code_text == f"Votre code de vérification pour Tests est : {code}"
    assert unknown == (
        "Aucun compte Tests n'utilise ce numéro de téléphone, aucun code n'a donc été "
        "envoyé. Si vous en avez demandé un, inscrivez-vous d'abord."
    )
    response = Client(headers={"accept-language": "fr"}).post(LOGIN, {"login": BLOCKED})
    assert field_errors(response) == {
        "login": ["Nous ne pouvons pas envoyer de codes à ce numéro pour le moment."]
    }


# -- through TextFlow's API (the emulator) ----------------------------------------------


def test_signup_through_the_textflow_backend(
    client: Client, textflow_live: TextFlowEmulator
) -> None:
    response = client.post(SIGNUP, {"phone": NUMBER})
    assert response.status_code == 302
    [message] = textflow_live.messages
    code = code_of(message.text)
    assert (message.phone_number, message.text, message.kind) == (NUMBER, code_sms(code), "sms")
    response = client.post(VERIFY, {"action": "verify", "code": code})
    assert response.status_code == 302 and signed_in(client) is not None


# -- where numbers are kept ---------------------------------------------------------------


def test_the_database_keeps_verified_numbers_unique(db: None) -> None:
    first = user_with(NUMBER)
    second = get_user_model().objects.create_user(username="second")
    # Unverified: anyone's, as often as typed.
    PhoneNumber.objects.create(user=second, number=NUMBER, verified=False)
    with pytest.raises(IntegrityError), transaction.atomic():
        PhoneNumber.objects.create(user=second, number=NUMBER, verified=True)
    with pytest.raises(IntegrityError), transaction.atomic():
        PhoneNumber.objects.create(user=first, number=OTHER, verified=True)
    # set_phone keeps one number per user.
    AccountAdapter().set_phone(first, OTHER, False)
    assert list(PhoneNumber.objects.filter(user=first).values_list("number", "verified")) == [
        (OTHER, False)
    ]


def test_numbers_on_a_field_of_the_user_model(client: Client, settings: Any) -> None:
    # auth.User has no phone field: first_name and is_staff stand in for one and its
    # verified flag (a project names its own, e.g. "phone" and "phone_verified").
    tf(settings, ALLAUTH_PHONE_FIELD="first_name", ALLAUTH_PHONE_VERIFIED_FIELD="is_staff")
    assert checks.check_phone_fields() == []
    code = sign_up(client)
    user = get_user_model().objects.get()
    assert (user.first_name, user.is_staff) == (NUMBER, False)
    adapter = AccountAdapter()
    assert adapter.get_user_by_phone(NUMBER) is None
    client.post(VERIFY, {"action": "verify", "code": code})
    user.refresh_from_db()
    assert (user.first_name, user.is_staff) == (NUMBER, True)
    assert adapter.get_user_by_phone(NUMBER) == user and adapter.get_phone(user) == (NUMBER, True)
    assert not PhoneNumber.objects.exists()


def test_checks_name_a_missing_field(settings: Any) -> None:
    assert checks.check_phone_fields() == []
    tf(settings, ALLAUTH_PHONE_FIELD="phone")
    assert [e.id for e in checks.check_phone_fields()] == [
        "textflow_allauth.E001",
        "textflow_allauth.E002",
    ]
    tf(settings, ALLAUTH_PHONE_FIELD="first_name", ALLAUTH_PHONE_VERIFIED_FIELD="last_name")
    assert [e.id for e in checks.check_phone_fields()] == ["textflow_allauth.E002"]


@pytest.mark.parametrize(
    ("wording", "problem"),
    [
        ("", None),  # as shipped: the site's own code SMS
        ("{code} is your {service} code", None),
        ("Your {service} code is ready", "has no {code}"),
        ("{code} is your {service} code :-}", None),  # a brace is text
        ("{code.real} is your code", "has no {code}"),
    ],
)
def test_checks_read_a_projects_code_template(
    settings: Any, tmp_path: Path, wording: str, problem: str | None
) -> None:
    if wording:
        folder = tmp_path / "textflow_django" / "allauth" / "sms"
        folder.mkdir(parents=True)
        (folder / "verification_code.txt").write_text(wording)
        settings.TEMPLATES = [{**settings.TEMPLATES[0], "DIRS": [str(tmp_path)]}]
    errors = checks.check_code_template()
    if problem is None:
        assert errors == []
    else:
        [error] = errors
        assert error.id == "textflow_allauth.E003" and problem in error.msg


def test_a_refusal_outside_a_request_is_raised() -> None:
    # A project's own code calling the adapter (a command, a task): nothing to show it on.
    block_prefix(BLOCKED)
    with pytest.raises(DestinationBlocked):
        AccountAdapter().send_unknown_account_sms(BLOCKED)
    assert sms() == []


def test_allauths_code_cannot_be_guessed_through_the_verify_api(client: Client) -> None:
    """allauth checks its own code, under its own attempt limit: the session that asked for
    it holds no handle of ours, so check_code (the verify-code API, the forms) reaches no
    code of it, not even the right one."""
    from django.test import RequestFactory

    from textflow_django import verification
    from textflow_django.exceptions import InvalidCode

    client.post(SIGNUP, {"phone": NUMBER})
    [(_, text)] = sms()
    request = RequestFactory().post("/api/phone/verify-code/")
    request.session = client.session
    with pytest.raises(InvalidCode):
        verification.check_code(NUMBER, code_of(text), request=request)
    assert PhoneVerification.objects.get().status == PhoneVerification.Status.PENDING
