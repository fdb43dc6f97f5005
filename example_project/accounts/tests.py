"""The example's views, through Django's test client, with the real TextFlow backend talking
HTTP to the bundled emulator (the ``textflow_live`` fixture of textflow-django's pytest plugin).

The example runs in the default ``VERIFY_MODE``, ``"local"``: its codes are textflow-django's
own (6 digits), texted as plain SMS through ``/send-sms`` and checked without TextFlow, so the
tests read them from the SMS the emulator took (:func:`code_for`), as a person reads a phone.

Run: ``cd example_project && ../.venv/bin/python -m pytest`` (the package's suite runs this
module too, from ``tests/test_example_project.py``).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import html
import json
import os
import re
import runpy
import secrets
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core import signing
from django.core.exceptions import ImproperlyConfigured
from django.test import Client, override_settings
from django.urls import reverse
from django.utils import timezone
from textflow_django.exceptions import InvalidToken
from textflow_django.models import PhoneVerification
from textflow_django.signals import phone_verified
from textflow_django.testing import TextFlowEmulator
from textflow_django.verification import make_token, phone_from_token

from accounts.models import Profile, VerifiedNumber
from accounts.receivers import record_verified_number
from accounts.views import SESSION_PHONE, SESSION_TOKEN

User = get_user_model()

NUMBER = "+12025550143"
OTHER = "+12025550144"
PASSWORD = "correct-horse-battery-9"  # noqa: S105 - a test password
WEAK_PASSWORD = "123"  # noqa: S105 - a password the validators refuse
JSON = "application/json"


@pytest.fixture(autouse=True)
def _demo_settings(settings) -> None:  # type: ignore[no-untyped-def]
    # As the demo runs: DEBUG on (pytest-django turns it off) and no TEXTFLOW_API_KEY in the
    # environment; bulk jobs run inline, not in a thread.
    settings.DEBUG = True
    settings.DEMO_USES_EMULATOR = True
    settings.DEMO_BULK_IN_BACKGROUND = False


@pytest.fixture
def emulator(textflow_live: TextFlowEmulator, db: None) -> TextFlowEmulator:
    return textflow_live


def textflow(**overrides: object) -> override_settings:
    return override_settings(TEXTFLOW={**settings.TEXTFLOW, **overrides})


def body(response) -> str:  # type: ignore[no-untyped-def]
    return response.content.decode()


def send(client: Client, number: str = NUMBER):  # type: ignore[no-untyped-def]
    return client.post(reverse("phone"), {"phone_number": number})


def verify(client: Client, code: str):  # type: ignore[no-untyped-def]
    return client.post(reverse("code"), {"code": code})


def alerts(page: str) -> list[str]:
    """The text of each error alert on ``page`` (role="alert"), whitespace collapsed."""
    found = re.findall(r'<div class="alert error" role="alert">(.*?)</div>', page, re.DOTALL)
    return [" ".join(re.sub(r"<[^>]+>", " ", text).split()) for text in found]


def wrong(code: str) -> str:
    """A code of the same length that is certainly not ``code``."""
    return f"{(int(code) + 1) % 10 ** len(code):0{len(code)}d}"


#: A code SMS as the demo words it (SERVICE_NAME "Demo"), in either mode: the code comes last.
CODE_SMS = re.compile(r"Your verification code for Demo is: ([0-9]+)")


def code_for(emulator: TextFlowEmulator, number: str = NUMBER) -> str:
    """The code in the newest code SMS the emulator took for ``number``: a plain SMS in the
    default "local" mode (``emulator.last_code`` only knows TextFlow's own /send-code codes)."""
    texts = [m.text for m in emulator.messages if m.phone_number == number and m.kind != "bulk"]
    assert texts, f"the emulator sent no code to {number}"
    found = CODE_SMS.fullmatch(texts[-1])
    assert found, f"not a code SMS: {texts[-1]!r}"
    return found.group(1)


def sign_up(client: Client, username: str = "ada"):  # type: ignore[no-untyped-def]
    return client.post(
        reverse("signup"), {"username": username, "password1": PASSWORD, "password2": PASSWORD}
    )


# -- the signup flow in pages --------------------------------------------------------------


def test_signup_through_the_pages(client: Client, emulator: TextFlowEmulator) -> None:
    assert client.get(reverse("home")).status_code == 200
    assert client.get(reverse("phone")).status_code == 200

    response = send(client, "+1 (202) 555-0143")
    assert response.status_code == 302 and response.url == reverse("code")
    page = client.get(reverse("code"))
    assert f"We texted a code to <strong>{NUMBER}</strong>." in body(page)

    response = verify(client, code_for(emulator))
    assert response.status_code == 302 and response.url == reverse("signup")
    page = client.get(reverse("signup"))
    assert f"Your number <strong>{NUMBER}</strong> is verified." in body(page)

    response = sign_up(client)
    assert response.status_code == 302 and response.url == reverse("profile")
    page = client.get(reverse("profile"))
    assert page.context["user"].username == "ada"  # logged in
    assert re.search(
        rf'{re.escape(NUMBER)}\s*<span class="badge verified">verified</span>', body(page)
    )
    profile = Profile.objects.get(user__username="ada")
    assert (profile.phone, profile.phone_verified) == (NUMBER, True)
    assert VerifiedNumber.objects.get().claimed_by == profile.user
    assert SESSION_TOKEN not in client.session
    # The default "local" mode: a 6-digit code of textflow-django's own, texted as a plain
    # SMS and checked here; TextFlow's /send-code and /verify-code are never called.
    assert [m.kind for m in emulator.messages] == ["sms"]
    assert len(code_for(emulator)) == 6
    calls = [len(emulator.calls(p)) for p in ("/send-sms", "/send-code", "/verify-code")]
    assert calls == [1, 0, 0]


def test_a_wrong_code_says_how_many_attempts_are_left(
    client: Client, emulator: TextFlowEmulator
) -> None:
    send(client)
    response = verify(client, wrong(code_for(emulator)))
    assert response.status_code == 200
    assert "The code is not valid. 4 attempts left." in body(response)
    assert SESSION_TOKEN not in client.session
    # Letters never reach the service: the form refuses them, and they cost no attempt.
    response = verify(client, "12ab")
    assert "Enter the code you received, digits only." in body(response)
    assert PhoneVerification.objects.get().attempts == 1


def test_too_many_wrong_codes_lock_the_code(client: Client, emulator: TextFlowEmulator) -> None:
    send(client)
    code = code_for(emulator)
    for _ in range(4):
        verify(client, wrong(code))
    response = verify(client, wrong(code))
    assert "No attempts left: request a new code." in body(response)

    response = verify(client, code)  # even the right code, now
    text = body(response)
    # One statement, once: not the service's "Request a new code later." besides the wait.
    assert len(re.findall(r"Too many wrong codes", text)) == 1
    assert re.search(
        r"Too many wrong codes: this code is locked\. You can ask for a new code in \d+ s\.", text
    )
    assert "later" not in text
    assert SESSION_TOKEN not in client.session


def test_an_expired_code_says_so(client: Client, emulator: TextFlowEmulator) -> None:
    send(client)
    PhoneVerification.objects.update(expires_at=timezone.now() - dt.timedelta(seconds=1))
    response = verify(client, code_for(emulator))
    assert "The code has expired or was never sent. Request a new code." in body(response)
    assert SESSION_TOKEN not in client.session


def test_resend_inside_the_cooldown_says_how_long_to_wait(
    client: Client, emulator: TextFlowEmulator
) -> None:
    send(client)
    response = client.post(reverse("resend"), follow=True)
    assert response.redirect_chain == [(reverse("code"), 302)]
    found = re.search(r"Wait (\d+) s before asking for a new code\.", body(response))
    assert found and 1 <= int(found.group(1)) <= 30
    assert len(emulator.calls("/send-sms")) == 1  # nothing was sent


def test_a_second_send_inside_the_cooldown_says_how_long_once(
    client: Client, emulator: TextFlowEmulator
) -> None:
    send(client)
    text = body(send(client))
    [alert] = alerts(text)
    assert re.fullmatch(
        r"A code was sent a moment ago\. Wait \d+ s before asking for a new code\.", alert
    )
    assert "Wait before asking for another" not in text  # the service's, less precise


def test_a_rate_limit_says_when_to_try_again_once(
    client: Client, emulator: TextFlowEmulator
) -> None:
    with textflow(SEND_LIMITS={"ip": ("1/h",)}, RESEND_COOLDOWN=0):
        send(client)
        text = body(send(client, OTHER))
    [alert] = alerts(text)
    assert re.fullmatch(r"Too many requests\. Try again in \d+ s\.", alert)


def test_error_alerts_sit_under_the_heading_on_every_step(
    client: Client, emulator: TextFlowEmulator
) -> None:
    """Phone, code and account steps show their alerts in one place: right under the page's
    heading, before the text and the form."""
    under_heading = re.compile(
        r'</h1>\s*<div class="alerts">\s*(<div class="alert[^"]*" role="alert">)?'
    )

    emulator.fault("rate_limit", path="/send-sms", retry_after=1)
    page = body(send(client))
    assert under_heading.search(page).group(1), page  # type: ignore[union-attr]

    send(client)
    page = body(verify(client, wrong(code_for(emulator))))
    assert under_heading.search(page).group(1), page  # type: ignore[union-attr]

    verify(client, code_for(emulator))
    page = body(client.post(reverse("signup"), {"username": "", "password1": "", "password2": ""}))
    assert under_heading.search(page), page
    # The account step's errors are its fields': the form says them under each field.
    assert alerts(page) == []

    # A flash message from the view goes to the same place.
    session = client.session
    session[SESSION_TOKEN] = "forged"
    session.save()
    page = body(client.get(reverse("signup"), follow=True))
    assert under_heading.search(page).group(1), page  # type: ignore[union-attr]


def test_resend_after_the_cooldown_sends_a_new_code(
    client: Client, emulator: TextFlowEmulator
) -> None:
    with textflow(RESEND_COOLDOWN=0):
        send(client)
        first = code_for(emulator)
        response = client.post(reverse("resend"), follow=True)
    assert f"A new code is on its way to {NUMBER}." in body(response)
    assert len(emulator.calls("/send-sms")) == 2
    second = code_for(emulator)
    if first != second:  # codes are random: they may repeat
        assert "The code is not valid." in body(verify(client, first))
    assert verify(client, second).url == reverse("signup")


MAY_ARRIVE = "The SMS service did not confirm the send, so the code may still arrive"


def test_textflow_refusing_a_send_is_explained_and_uses_nothing_up(
    client: Client, emulator: TextFlowEmulator
) -> None:
    # TextFlow's 429 is a refusal: the SMS certainly did not go out, so nothing is spent.
    emulator.fault("rate_limit", path="/send-sms", retry_after=1)
    response = send(client)
    assert response.status_code == 200
    text = body(response)
    # Said once: the page's sentence, not the service's "unavailable, try again" before it.
    assert alerts(text) == [
        "TextFlow, the SMS service, is not answering right now. Nothing was used up: try "
        "again in a moment."
    ]
    assert "The SMS service is unavailable" not in text
    assert SESSION_PHONE not in client.session
    assert not PhoneVerification.objects.exists()
    # No cooldown was claimed: the user can retry at once, and it works.
    assert send(client).url == reverse("code")
    assert verify(client, code_for(emulator)).url == reverse("signup")


def test_a_send_textflow_did_not_confirm_says_the_code_may_still_arrive(
    client: Client, emulator: TextFlowEmulator
) -> None:
    # A 5xx may come after the SMS went out: the send counts (its cooldown is kept) and its
    # code is recorded, so the user goes on to the code step, told the code may arrive.
    emulator.fault("status", path="/send-sms", status=503)
    response = send(client, NUMBER)
    assert response.status_code == 302 and response.url == reverse("code")
    page = client.get(reverse("code"))
    assert '<div class="alert warning" role="status">' in body(page)
    assert MAY_ARRIVE in body(page)
    assert "Nothing was used up" not in body(page)
    assert PhoneVerification.objects.filter(phone_number=NUMBER).count() == 1
    # The cooldown holds, on the resend button as on the number page.
    response = client.post(reverse("resend"), follow=True)
    found = re.search(r"Wait (\d+) s before asking for a new code\.", body(response))
    assert found and 1 <= int(found.group(1)) <= 30
    assert re.search(r"Wait \d+ s before asking for a new code\.", body(send(client, NUMBER)))
    assert len(emulator.calls("/send-sms")) == 1  # the one that failed


def test_a_code_that_arrives_after_a_timeout_verifies(
    client: Client, emulator: TextFlowEmulator
) -> None:
    # TextFlow sends the SMS but answers after TIMEOUT: the page cannot know it went out,
    # says it may, and the code the phone then shows verifies.
    emulator.fault("delay", path="/send-sms", delay=1.0)
    with textflow(TIMEOUT=0.3):
        response = send(client)
    assert response.status_code == 302 and response.url == reverse("code")
    assert MAY_ARRIVE in body(client.get(reverse("code")))
    assert verify(client, code_for(emulator)).url == reverse("signup")
    assert sign_up(client).url == reverse("profile")


def test_a_resend_textflow_did_not_confirm_replaces_the_code(
    client: Client, emulator: TextFlowEmulator
) -> None:
    with textflow(RESEND_COOLDOWN=0):
        send(client)
        first = code_for(emulator)
        emulator.fault("delay", path="/send-sms", delay=1.0)
        with textflow(TIMEOUT=0.3):
            response = client.post(reverse("resend"), follow=True)
    assert MAY_ARRIVE in body(response)
    assert "A new code is on its way" not in body(response)
    assert "Nothing was used up" not in body(response)
    second = code_for(emulator)
    if first != second:  # codes are random: they may repeat
        assert "The code is not valid." in body(verify(client, first))
    assert verify(client, second).url == reverse("signup")


def test_in_local_mode_checking_a_code_needs_no_textflow(
    client: Client, emulator: TextFlowEmulator
) -> None:
    send(client)
    emulator.fault("status", status=503, times=10)  # TextFlow down after the send
    assert verify(client, code_for(emulator)).url == reverse("signup")
    assert len(emulator.requests) == 1  # the send: the check asked TextFlow nothing


def test_textflow_down_when_checking_is_explained_and_costs_no_attempt(
    client: Client, emulator: TextFlowEmulator
) -> None:
    # Only the "textflow" VERIFY_MODE asks TextFlow to check a code (the demo runs the
    # default "local" mode, which checks its own): its outage is then the page's to explain.
    with textflow(VERIFY_MODE="textflow"):
        send(client)
        assert [m.kind for m in emulator.messages] == ["code"]  # TextFlow's /send-code
        emulator.fault("status", status=503, path="/verify-code")
        response = verify(client, code_for(emulator))
        assert "TextFlow, the SMS service, is not answering right now." in body(response)
        assert PhoneVerification.objects.get().attempts == 0
        assert verify(client, code_for(emulator)).url == reverse("signup")
    assert len(emulator.calls("/verify-code")) == 2


def test_the_account_step_needs_a_verified_number(client: Client, db: None) -> None:
    response = client.get(reverse("signup"))
    assert response.status_code == 302 and response.url == reverse("phone")

    session = client.session
    session[SESSION_TOKEN] = "forged"
    session.save()
    response = client.post(
        reverse("signup"),
        {"username": "mallory", "password1": PASSWORD, "password2": PASSWORD},
        follow=True,
    )
    assert "Your verification has expired or was already used." in body(response)
    assert not User.objects.exists()


def test_without_the_phone_verified_receiver_no_account_is_made(
    client: Client, emulator: TextFlowEmulator
) -> None:
    """The signal is what makes a number verified: with no receiver, a genuine token from
    verify-code is not enough to create an account."""
    assert phone_verified.disconnect(dispatch_uid="accounts.record_verified_number")
    try:
        send(client)
        assert verify(client, code_for(emulator)).url == reverse("signup")
        token = client.session[SESSION_TOKEN]
        response = sign_up(client)
    finally:
        phone_verified.connect(
            record_verified_number, dispatch_uid="accounts.record_verified_number"
        )
    assert response.status_code == 302 and response.url == reverse("phone")
    assert not User.objects.exists() and not Profile.objects.exists()
    # The refused signup rolled back, the token's spending too: it still proves the number.
    assert phone_from_token(token) == NUMBER


def test_a_signed_in_user_changing_number_is_verified_by_the_receiver(
    client: Client, emulator: TextFlowEmulator
) -> None:
    bob = User.objects.create_user("bob", password=PASSWORD)
    Profile.objects.create(user=bob, phone=OTHER, phone_verified=True)
    # Someone else typed the same number once: verifying it proves nothing about them.
    eve = User.objects.create_user("eve", password=PASSWORD)
    Profile.objects.create(user=eve, phone=NUMBER, phone_verified=False)
    client.force_login(bob)

    send(client)
    response = verify(client, code_for(emulator))
    assert response.status_code == 302 and response.url == reverse("profile")
    assert f"{NUMBER} is verified." in body(client.get(reverse("profile")))
    assert Profile.objects.filter(user=bob, phone=NUMBER, phone_verified=True).exists()
    assert Profile.objects.filter(user=eve, phone_verified=False).exists()


# -- the same flow over the API ------------------------------------------------------------


def api_send(client: Client, number: str = NUMBER) -> str:
    """Ask for a code over the API; return the ``verification_id`` it answers."""
    response = client.post("/api/phone/send-code/", {"phone_number": number}, content_type=JSON)
    assert response.status_code == 200, response.content
    verification_id: str = response.json()["verification_id"]
    return verification_id


def api_verify(client: Client, number: str, code: str, verification_id: str | None = None):  # type: ignore[no-untyped-def]
    data = {"phone_number": number, "code": code}
    if verification_id is not None:
        data["verification_id"] = verification_id
    return client.post("/api/phone/verify-code/", data, content_type=JSON)


def api_token(client: Client, emulator: TextFlowEmulator, number: str = NUMBER) -> str:
    """A token from the API's send-code and verify-code, passing ``verification_id`` as a
    client without a session does."""
    verification_id = api_send(client, number)
    response = api_verify(client, number, code_for(emulator, number), verification_id)
    assert response.status_code == 200, response.content
    token: str = response.json()["token"]
    return token


def api_signup(client: Client, token: str, username: str = "ada", password: str = PASSWORD):  # type: ignore[no-untyped-def]
    data = {"username": username, "password": password, "token": token}
    return client.post("/api/signup/", data, content_type=JSON)


def test_api_signup_with_a_verified_token(client: Client, emulator: TextFlowEmulator) -> None:
    token = api_token(client, emulator)
    response = api_signup(client, token)
    assert response.status_code == 201, response.content
    user = User.objects.get(username="ada")
    assert response.json() == {
        "id": user.pk,
        "username": "ada",
        "phone": NUMBER,
        "phone_verified": True,
    }
    assert user.check_password(PASSWORD)

    # One verification, one account: the signup spent the token, and a replay is refused,
    # from any client.
    for replay in (client, Client()):
        response = api_signup(replay, token, username="eve")
        assert response.status_code == 400
        assert response.json() == {"token": ["The verification token is invalid or has expired."]}
    assert not User.objects.filter(username="eve").exists()


def test_api_verify_code_without_a_session_passes_the_verification_id(
    client: Client, emulator: TextFlowEmulator
) -> None:
    """A client that keeps no session cookie (a mobile app, curl) passes back the
    ``verification_id`` send-code answered; one with neither has no code to guess at."""
    verification_id = api_send(client)
    code = code_for(emulator)
    stranger = Client()  # no session: the right code alone reaches nothing
    response = api_verify(stranger, NUMBER, code)
    assert response.status_code == 400
    assert response.json() == {
        "detail": "The code is not valid.",
        "code": "invalid_code",
        "attempts_left": 4,
    }
    assert PhoneVerification.objects.get().attempts == 0  # the owner's code lost nothing
    app = Client()
    response = api_verify(app, NUMBER, code, verification_id)
    assert response.status_code == 200, response.content
    assert api_signup(app, response.json()["token"]).status_code == 201


@pytest.mark.parametrize(
    "token",
    [
        "forged",
        # The shape of a real token (32 URL-safe characters), never handed out.
        secrets.token_urlsafe(24),
        # An old signed token, signed with this site's own key: no longer accepted.
        signing.dumps({"p": NUMBER, "v": 1}, salt="textflow_django.verification.token"),
    ],
    ids=["forged", "random", "old-signed"],
)
def test_api_signup_with_a_forged_token(client: Client, db: None, token: str) -> None:
    response = api_signup(client, token)
    assert response.status_code == 400
    assert list(response.json()) == ["token"]
    assert not User.objects.exists()


def test_api_no_token_for_a_code_never_verified(client: Client, emulator: TextFlowEmulator) -> None:
    verification_id = api_send(client)
    pending = PhoneVerification.objects.get()  # a code was sent, never checked
    with pytest.raises(InvalidToken):
        make_token(pending)  # the package mints tokens for verified numbers only
    response = api_verify(client, NUMBER, wrong(code_for(emulator)), verification_id)
    assert response.status_code == 400 and "token" not in response.json()
    assert not User.objects.exists()


def test_api_signup_checks_username_and_password(
    client: Client, emulator: TextFlowEmulator
) -> None:
    User.objects.create_user("ada", password=PASSWORD)
    token = api_token(client, emulator)
    response = api_signup(client, token, username="ada", password=WEAK_PASSWORD)
    assert response.status_code == 400
    assert set(response.json()) == {"username"}
    response = api_signup(client, token, username="bea", password=WEAK_PASSWORD)
    assert response.status_code == 400
    assert set(response.json()) == {"password"}
    assert User.objects.count() == 1
    # The refusals spent nothing: the token still makes its one account.
    assert api_signup(client, token, username="bea").status_code == 201


def test_tokens_bound_to_the_session_that_verified(
    client: Client, emulator: TextFlowEmulator
) -> None:
    """With TOKEN_SESSION_BINDING, the example hands the request to the token's checks: the
    session that verified signs up, another one cannot."""
    with textflow(TOKEN_SESSION_BINDING=True):
        token = api_token(client, emulator)
        response = api_signup(Client(), token)
        assert response.status_code == 400 and list(response.json()) == ["token"]
        assert api_signup(client, token).status_code == 201

        pages = Client()
        send(pages, OTHER)
        assert verify(pages, code_for(emulator, OTHER)).url == reverse("signup")
        assert sign_up(pages, "bea").url == reverse("profile")
    assert Profile.objects.filter(phone_verified=True).count() == 2


def test_the_api_is_described(client: Client, db: None) -> None:
    if not settings.HAS_SPECTACULAR:
        pytest.skip("drf-spectacular is not installed")
    schema = body(client.get("/api/schema/"))
    for path in ("/api/phone/send-code/", "/api/phone/verify-code/", "/api/signup/"):
        assert f"{path}:" in schema
    home = body(client.get(reverse("home")))
    assert 'href="/api/schema/"' in home
    if settings.HAS_SPECTACULAR_SIDECAR:
        docs = client.get("/api/docs/")
        assert docs.status_code == 200
        assert "drf_spectacular_sidecar/redoc" in body(docs)  # served locally, no CDN
        assert 'href="/api/docs/"' in home


def _schema(client: Client) -> dict[str, Any]:
    response = client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert response.status_code == 200
    schema: dict[str, Any] = json.loads(response.content)
    return schema


def _resolve(schema: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    """``node``, or the component its ``$ref`` names."""
    while "$ref" in node:
        node = schema["components"]["schemas"][node["$ref"].rsplit("/", 1)[-1]]
    return node


def test_the_api_docs_need_nothing_from_another_site(client: Client, db: None) -> None:
    """/api/docs/ works offline: its page refers to no http(s) URL but its own (no CDN
    script, no web fonts); the browser test checks what the page then fetches."""
    if not settings.HAS_SPECTACULAR_SIDECAR:
        pytest.skip("drf-spectacular-sidecar is not installed")
    response = client.get("/api/docs/")
    # Nor may the page's scripts fetch anything from elsewhere (Redoc would, its logo).
    assert response["Content-Security-Policy"].startswith("default-src 'self';")
    page = body(response)
    elsewhere = [
        url
        for url in re.findall(r"(?:https?:)?//[A-Za-z0-9.-]+[^\s\"'<>)]*", page)
        if not url.split("//", 1)[1].startswith("testserver")
    ]
    assert elsewhere == []
    assert re.search(r"<title>textflow-django example API</title>", page)


def test_the_api_schema_names_and_shows_its_operations(client: Client, db: None) -> None:
    if not settings.HAS_SPECTACULAR:
        pytest.skip("drf-spectacular is not installed")
    schema = _schema(client)
    assert schema["info"]["title"] == "textflow-django example API"
    paths = schema["paths"]
    operations = {path: paths[path]["post"]["operationId"] for path in paths}
    assert operations == {
        "/api/phone/send-code/": "sendCode",
        "/api/phone/verify-code/": "verifyCode",
        "/api/signup/": "signup",
    }
    for path in ("/api/phone/send-code/", "/api/phone/verify-code/"):
        body_schema = paths[path]["post"]["requestBody"]["content"]["application/json"]["schema"]
        phone = _resolve(schema, body_schema)["properties"]["phone_number"]
        assert phone["example"] == "+12025550143"
        assert "country code" in phone["description"]


def test_every_answer_of_the_signup_endpoint_is_documented(client: Client, db: None) -> None:
    if not settings.HAS_SPECTACULAR:
        pytest.skip("drf-spectacular is not installed")
    schema = _schema(client)
    signup = schema["paths"]["/api/signup/"]["post"]
    responses = signup["responses"]
    assert set(responses) == {"201", "400", "405", "415"}
    created = _resolve(schema, responses["201"]["content"]["application/json"]["schema"])
    assert set(created["properties"]) == {"id", "username", "phone", "phone_verified"}
    # A 400 is field errors, each field with its messages (the shape the tests above get),
    # or a body that does not parse.
    refused = _resolve(schema, responses["400"]["content"]["application/json"]["schema"])
    assert set(refused["properties"]) == {"username", "password", "token", "detail"}
    assert "required" not in refused  # only the fields at fault appear
    for name in ("username", "password", "token"):
        field = refused["properties"][name]
        assert (field["type"], field["items"]) == ("array", {"type": "string"})
    for status in ("400", "405", "415"):
        assert responses[status]["description"]


def test_the_signup_endpoint_answers_as_documented(client: Client, db: None) -> None:
    """The answers the schema lists besides 201 and 400 are the ones it gives."""
    assert client.get("/api/signup/").status_code == 405
    response = client.post("/api/signup/", "username=ada", content_type="text/plain")
    assert response.status_code == 415
    response = client.post("/api/signup/", "{", content_type=JSON)
    assert response.status_code == 400 and list(response.json()) == ["detail"]


# -- the dev inbox -------------------------------------------------------------------------


def test_dev_inbox_shows_the_codes_newest_first(client: Client, emulator: TextFlowEmulator) -> None:
    send(client, NUMBER)
    send(Client(), OTHER)
    response = client.get(reverse("dev-inbox"))
    assert response.status_code == 200
    text = body(response)
    rows = re.findall(r'<tr class="sms" data-phone="([^"]+)">', text)
    assert rows == [OTHER, NUMBER]
    for number in (NUMBER, OTHER):
        assert f'<td class="code">{code_for(emulator, number)}</td>' in text


def test_dev_inbox_is_not_there_against_textflow(client: Client, db: None) -> None:
    with override_settings(DEMO_USES_EMULATOR=False):
        assert client.get(reverse("dev-inbox")).status_code == 404
    with textflow(API_KEY="a-real-key"):
        assert client.get(reverse("dev-inbox")).status_code == 404


def test_dev_inbox_is_there_only_with_debug_on(client: Client, emulator: TextFlowEmulator) -> None:
    send(client)
    page = client.get(reverse("dev-inbox"))
    assert page.status_code == 200
    assert "only while DEBUG is on and the project runs against the emulator" in body(page)
    assert 'href="/dev/inbox/"' in body(client.get(reverse("home")))
    with override_settings(DEBUG=False):
        assert client.get(reverse("dev-inbox")).status_code == 404
        assert 'href="/dev/inbox/"' not in body(client.get(reverse("home")))
        assert 'href="/dev/inbox/"' not in body(client.get(reverse("code")))


SETTINGS_FILE = Path(__file__).resolve().parent.parent / "demo" / "settings.py"


@pytest.mark.parametrize(
    ("value", "debug"),
    [
        (None, True),
        ("1", True),
        ("true", True),
        ("On", True),
        ("0", False),
        ("false", False),
        ("no", False),
        ("off", False),
    ],
)
def test_debug_comes_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, value: str | None, debug: bool
) -> None:
    if value is None:
        monkeypatch.delenv("DJANGO_DEBUG", raising=False)
    else:
        monkeypatch.setenv("DJANGO_DEBUG", value)
    assert runpy.run_path(str(SETTINGS_FILE))["DEBUG"] is debug


def test_an_unreadable_django_debug_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DJANGO_DEBUG", "maybe")
    with pytest.raises(ImproperlyConfigured, match="DJANGO_DEBUG"):
        runpy.run_path(str(SETTINGS_FILE))


def test_dev_inbox_says_when_the_emulator_is_not_running(client: Client, db: None) -> None:
    with textflow(BASE_URL="http://127.0.0.1:9/api"):
        response = client.get(reverse("dev-inbox"))
    assert response.status_code == 503
    # A sentence that says what is wrong and what to do, never the exception's own text
    # (it was urllib3's "HTTPConnectionPool(host=...): Max retries exceeded ...").
    assert alerts(body(response)) == [
        "The TextFlow emulator at http://127.0.0.1:9 is not answering. Start it with make "
        "demo (with the site), or on its own with python -m textflow_django.testing --port 9."
    ]
    for raw in ("HTTPConnection", "Max retries", "Errno", "refused", "urllib3"):
        assert raw not in body(response)


def outage_switch(client: Client, outage: str):  # type: ignore[no-untyped-def]
    return client.post(reverse("dev-inbox"), {"outage": outage}, follow=True)


def mode_shown(page) -> str:  # type: ignore[no-untyped-def]
    """What the dev inbox says of TextFlow's state, whitespace collapsed."""
    found = re.search(r'<p id="textflow-mode"[^>]*>(.*?)</p>', body(page), re.DOTALL)
    assert found, body(page)
    return " ".join(re.sub(r"<[^>]+>", "", found.group(1)).split())


NOT_ANSWERING = (
    "TextFlow, the SMS service, is not answering right now. Nothing was used up: try again "
    "in a moment."
)


def test_dev_inbox_switches_textflow_faults_on_and_off(
    client: Client, emulator: TextFlowEmulator
) -> None:
    page = client.get(reverse("dev-inbox"))
    assert mode_shown(page) == "TextFlow (the emulator) is working normally."
    for outage in ("down", "slow", "error", "rate_limited", "none"):
        assert f'name="outage" value="{outage}"' in body(page)

    page = outage_switch(client, "rate_limited")
    assert mode_shown(page) == (
        "TextFlow is rate-limiting: it refuses every request with HTTP 429 (Retry-After 30 s), "
        "until switched back here."
    )
    assert emulator.current_outage is not None
    assert emulator.current_outage.mode == "rate_limited"
    assert alerts(body(send(client))) == [NOT_ANSWERING]

    page = outage_switch(client, "error")
    assert mode_shown(page) == (
        "TextFlow is failing: it answers every request with HTTP 500, until switched back here."
    )
    page = outage_switch(client, "slow")
    assert mode_shown(page) == (
        "TextFlow is slow: each answer takes 10 s, and the site waits 5 s at most (TIMEOUT), "
        "until switched back here."
    )

    page = outage_switch(client, "none")
    assert mode_shown(page) == "TextFlow (the emulator) is working normally."
    assert emulator.current_outage is None
    assert send(client).url == reverse("code")  # it works again


def test_failing_and_slow_textflow_as_the_switches_make_them(
    client: Client, emulator: TextFlowEmulator
) -> None:
    """What the example's README says each switch shows: failing (HTTP 500) and slow may have
    sent the SMS, so the page moves on to the code step; a slow TextFlow's code verifies."""
    outage_switch(client, "error")
    response = send(client)
    assert response.url == reverse("code")
    assert MAY_ARRIVE in body(client.get(reverse("code")))
    assert not [m for m in emulator.messages if m.phone_number == NUMBER]  # none will

    outage_switch(client, "slow")
    slow = Client()
    with textflow(TIMEOUT=0.3):  # the demo's 5 s, shorter than the 10 s the switch sets
        response = send(slow, OTHER)
    assert response.url == reverse("code")
    assert MAY_ARRIVE in body(slow.get(reverse("code")))
    outage_switch(client, "none")
    assert verify(slow, code_for(emulator, OTHER)).url == reverse("signup")


def test_dev_inbox_switches_textflow_down_for_a_minute(
    client: Client, emulator: TextFlowEmulator
) -> None:
    """Down closes the emulator's port, this page's way in too: the page knows it switched
    it off, and says so rather than "not answering"."""
    page = outage_switch(client, "down")
    assert page.status_code == 200
    assert emulator.current_outage is not None and emulator.current_outage.mode == "down"
    assert re.fullmatch(
        r"TextFlow is down: it refuses every connection, for (60|59) more seconds\. "
        r"Its SMS cannot be read meanwhile\.",
        mode_shown(page),
    )
    assert alerts(body(page)) == []
    assert alerts(body(send(client, OTHER))) == [NOT_ANSWERING]
    assert not PhoneVerification.objects.exists()  # nothing was used up

    # While it is down, another switch cannot reach it: the page says when it is back.
    page = outage_switch(client, "none")
    assert alerts(body(page)) == [
        "TextFlow is down on purpose and cannot be reached until it is back by itself."
    ]

    emulator.outage(None)  # back (in the real demo: when the minute is over)
    page = client.get(reverse("dev-inbox"))
    assert mode_shown(page) == "TextFlow (the emulator) is working normally."
    assert send(client, OTHER).url == reverse("code")


def test_dev_inbox_refuses_an_unknown_fault(client: Client, emulator: TextFlowEmulator) -> None:
    response = client.post(reverse("dev-inbox"), {"outage": "flood"})
    assert response.status_code == 400
    assert emulator.current_outage is None


def test_only_the_dev_inbox_switches_faults(client: Client, emulator: TextFlowEmulator) -> None:
    with override_settings(DEBUG=False):
        assert client.post(reverse("dev-inbox"), {"outage": "down"}).status_code == 404
    assert emulator.current_outage is None


# -- the dev inbox: reply as a number -------------------------------------------------------


class Webhook:
    """A stand-in for the site's reply webhook (the test client serves no port): records the
    JSON of each POST and answers the next queued status (then 200)."""

    def __init__(self) -> None:
        self.posts: list[Any] = []
        self.answers: list[int] = []
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                hook.posts.append(json.loads(body))
                self.send_response(hook.answers.pop(0) if hook.answers else 200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/api/phone/replies/"
        threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()


@pytest.fixture
def webhook(emulator: TextFlowEmulator) -> Iterator[Webhook]:
    """The emulator's replies go to a :class:`Webhook`, with the demo's secret (as make demo
    sets them up); the plugin's reset puts the emulator's reply settings back after."""
    hook = Webhook()
    emulator.reply_url = hook.url
    emulator.reply_secret = settings.DEMO_REPLY_SECRET
    yield hook
    hook.server.shutdown()
    hook.server.server_close()


def reply_as(client: Client, number: str, text: str):  # type: ignore[no-untyped-def]
    return client.post(reverse("dev-inbox"), {"phone_number": number, "text": text}, follow=True)


def successes(page: str) -> list[str]:
    found = re.findall(r'<div class="alert success" role="status"><p>(.*?)</p></div>', page)
    return [" ".join(text.split()) for text in found]


def test_dev_inbox_has_a_reply_box_on_each_sms(client: Client, emulator: TextFlowEmulator) -> None:
    send(client, NUMBER)
    send(Client(), OTHER)
    page = body(client.get(reverse("dev-inbox")))
    numbers = re.findall(
        r'<form method="post" class="reply">.*?name="phone_number" value="([^"]+)">'
        r'.*?<input type="text" name="text"',
        page,
        re.DOTALL,
    )
    assert numbers == [OTHER, NUMBER]  # one box per SMS, newest first
    assert "Reply as this number" in page


def test_dev_inbox_replies_as_the_number_through_the_emulator(
    client: Client, emulator: TextFlowEmulator, webhook: Webhook
) -> None:
    send(client, NUMBER)
    page = reply_as(client, NUMBER, "STOP")
    assert page.status_code == 200
    assert successes(body(page)) == [f"{NUMBER} replied \u201cSTOP\u201d: the site took it."]
    # As TextFlow posts a reply: the number, the text, the secret the site shares.
    assert webhook.posts == [
        {"phone_number": NUMBER, "text": "STOP", "secret": settings.DEMO_REPLY_SECRET}
    ]
    [made] = emulator.replies
    assert (made.phone_number, made.text, made.delivered) == (NUMBER, "STOP", True)
    # The page lists it with what the site made of it.
    rows = re.findall(
        r'<tr class="reply" data-phone="([^"]+)">\s*<td>[^<]*</td>\s*<td>([^<]*)</td>\s*'
        r'<td class="outcome">([^<]*)</td>',
        body(page),
    )
    assert rows == [(NUMBER, "STOP", "took it")]


@pytest.mark.parametrize(
    ("status", "says"),
    [
        (403, "refused it (HTTP 403): the emulator's --reply-secret is not the site's"),
        (404, "has no reply webhook there (HTTP 404)"),
        (500, "answered HTTP 500"),
    ],
)
def test_dev_inbox_says_why_a_reply_did_not_get_through(
    client: Client,
    emulator: TextFlowEmulator,
    webhook: Webhook,
    monkeypatch: pytest.MonkeyPatch,
    status: int,
    says: str,
) -> None:
    from accounts import dev_inbox

    monkeypatch.setitem(dev_inbox.REPLY_SCHEDULE, "backoff", 0)  # the retries at once
    webhook.answers = [status] * 3
    send(client, NUMBER)
    page = reply_as(client, NUMBER, "STOP")
    [alert] = [html.unescape(text) for text in alerts(body(page))]
    assert alert.startswith(f"The reply from {NUMBER} did not get through: the site {says}")
    assert alert.endswith("(3 tries).")
    assert len(webhook.posts) == 3  # tried as the page's schedule says
    assert "answered HTTP" in body(page) and "(3 tries)" in body(page)


def test_dev_inbox_reply_without_a_reply_url_says_how_to_get_one(
    client: Client, emulator: TextFlowEmulator
) -> None:
    send(client, NUMBER)
    page = reply_as(client, NUMBER, "STOP")
    assert [html.unescape(text) for text in alerts(body(page))] == [
        "The TextFlow emulator has nowhere to send replies: make demo starts it with the "
        "site's reply webhook (--reply-url) and the demo's secret (--reply-secret)."
    ]


def test_dev_inbox_reply_needs_a_text_and_a_number(
    client: Client, emulator: TextFlowEmulator, webhook: Webhook
) -> None:
    page = reply_as(client, NUMBER, "   ")
    assert alerts(body(page)) == ["Type the reply first (at most 1530 characters), e.g. STOP."]
    answer = client.post(reverse("dev-inbox"), {"phone_number": "nope", "text": "STOP"})
    assert answer.status_code == 400
    assert webhook.posts == []


def test_only_the_dev_inbox_replies(
    client: Client, emulator: TextFlowEmulator, webhook: Webhook
) -> None:
    with override_settings(DEBUG=False):
        answer = client.post(reverse("dev-inbox"), {"phone_number": NUMBER, "text": "STOP"})
        assert answer.status_code == 404
    assert webhook.posts == [] and emulator.replies == []


def test_stop_from_the_dev_inbox_opts_the_number_out_through_the_sites_webhook(
    client: Client, emulator: TextFlowEmulator, live_server: Any, transactional_db: None
) -> None:
    """The whole way, as in the demo: the box, the emulator, the site's own reply webhook
    (served here by the live server, with the demo's secret), the opt-out list."""
    from textflow_django.models import OptOut, SMSReply

    emulator.reply_url = live_server.url + reverse("textflow:replies")
    emulator.reply_secret = settings.DEMO_REPLY_SECRET
    send(client, NUMBER)
    page = reply_as(client, NUMBER, "STOP")
    assert successes(body(page)) == [f"{NUMBER} replied \u201cSTOP\u201d: the site took it."]
    assert OptOut.objects.filter(phone_number=NUMBER, source="reply").exists()
    assert SMSReply.objects.filter(phone_number=NUMBER, text="STOP").count() == 1
    reply_as(client, NUMBER, "START")
    assert not OptOut.objects.filter(phone_number=NUMBER).exists()


def test_make_demo_points_the_emulators_replies_at_the_sites_webhook() -> None:
    """run-demo.sh asks the URLs and the settings for the webhook and the secret: the same
    ones the site serves and checks."""
    script = RUN_DEMO.read_text()
    assert 'reverse("textflow:replies")' in script
    assert 'settings.TEXTFLOW["REPLY_SECRET"]' in script
    assert '--reply-url "$site' in script and "--reply-secret" in script
    assert settings.TEXTFLOW["REPLY_SECRET"] == settings.DEMO_REPLY_SECRET
    assert reverse("textflow:replies") == "/api/phone/replies/"


# -- staff: bulk SMS -----------------------------------------------------------------------


def test_the_bulk_page_is_for_staff_only(client: Client, db: None) -> None:
    url = reverse("bulk")
    response = client.get(url)
    assert response.status_code == 302 and response.url == f"{reverse('login')}?next={url}"
    client.force_login(User.objects.create_user("ada", password=PASSWORD))
    assert client.get(url).status_code == 403
    assert client.post(url, {"text": "Hi"}).status_code == 403
    assert client.get(reverse("bulk-job", args=[1])).status_code == 403
    client.force_login(User.objects.create_user("boss", password=PASSWORD, is_staff=True))
    assert client.get(url).status_code == 200


def test_a_signed_in_user_who_is_not_staff_is_told_how_to_sign_in_as_staff(
    client: Client, db: None
) -> None:
    client.force_login(User.objects.create_user("ada", password=PASSWORD))
    response = client.get(reverse("bulk"))
    assert response.status_code == 403
    assert "accounts/base.html" in [t.name for t in response.templates]  # the site's page
    text = " ".join(re.sub(r"<[^>]+>", "", body(response)).split())
    assert "Bulk SMS is for staff only. You are signed in as ada, who is not staff." in text
    assert "log out, then log in as admin (password admin)" in text
    # One button does both: log out, then the login page, back to the bulk page after.
    next_url = f"{reverse('login')}?next={reverse('bulk')}"
    assert re.search(
        rf'<form method="post" action="{reverse("logout")}">.*?'
        rf'name="next" value="{re.escape(next_url)}"',
        body(response),
        re.DOTALL,
    )
    response = client.post(reverse("logout"), {"next": next_url})
    assert response.status_code == 302 and response.url == next_url
    assert "_auth_user_id" not in client.session


def test_the_staff_page_names_the_demo_admin_only_where_the_dev_inbox_is(
    client: Client, db: None
) -> None:
    """With DEBUG off (a deployed copy), the page never tells a user the admin's password."""
    client.force_login(User.objects.create_user("ada", password=PASSWORD))
    with override_settings(DEBUG=False):
        response = client.get(reverse("bulk"))
    assert response.status_code == 403
    text = " ".join(re.sub(r"<[^>]+>", "", body(response)).split())
    assert "log out, then log in as a staff user." in text
    assert "password admin" not in text and "log in as admin" not in text


def test_the_bulk_form_needs_a_text(admin_client: Client) -> None:
    from textflow_django.models import BulkSMSJob

    response = admin_client.post(reverse("bulk"), {"text": "  "})
    assert response.status_code == 200
    assert "This field is required." in body(response)
    assert not BulkSMSJob.objects.exists()


def test_staff_send_a_bulk_sms_to_verified_users(
    admin_client: Client, emulator: TextFlowEmulator
) -> None:
    verified = ["+12025550150", "+12025550151", "+12025550152"]
    for i, number in enumerate([*verified, "+12025550153"]):
        user = User.objects.create_user(f"user{i}", password=PASSWORD)
        Profile.objects.create(user=user, phone=number, phone_verified=i < len(verified))
    page = admin_client.get(reverse("bulk"))
    assert "3 users with a verified number." in body(page)

    with textflow(BULK_BATCH_SIZE=2):
        response = admin_client.post(reverse("bulk"), {"text": "The demo is live."})
    assert response.status_code == 302
    page = admin_client.get(response.url)
    text = body(page)
    assert re.search(r'<strong id="status">finished</strong>: 3 of 3\s+sent \(100%\)', text)
    assert 'http-equiv="refresh"' not in text  # done: it stops refreshing
    sent = sorted(m.phone_number for m in emulator.messages if m.kind == "bulk")
    assert sent == verified
    # With the opt-out footer bulk texts carry unless turned off (BULK_OPT_OUT_FOOTER).
    assert {m.text for m in emulator.messages} == {"The demo is live.\nReply STOP to opt out"}
    assert len(emulator.calls("/bulk-sms")) == 2  # batches of 2


# -- make demo: Ctrl-C stops everything it started -----------------------------------------

RUN_DEMO = Path(__file__).resolve().parent.parent / "run-demo.sh"


#: Run argv[1:] with SIGINT at its default disposition (exec keeps it).
EXEC_WITH_SIGINT = (
    "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
    "os.execvp(sys.argv[1], sys.argv[1:])"
)


def _free_ports(count: int) -> list[int]:
    """``count`` distinct free ports: each probe stays bound until all are picked."""
    probes = [socket.socket() for _ in range(count)]
    try:
        for probe in probes:
            probe.bind(("127.0.0.1", 0))
        return [int(probe.getsockname()[1]) for probe in probes]
    finally:
        for probe in probes:
            probe.close()


def _demo_processes(*needles: str) -> list[int]:
    """Processes whose command line holds any of ``needles`` (the demo's own ports)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            args = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue  # gone meanwhile
        if any(needle in args for needle in needles):
            found.append(int(entry.name))
    return found


@dataclass
class Demo:
    """A ``run-demo.sh`` running on free ports, in a process group of its own."""

    process: subprocess.Popen[bytes]
    port: int
    emulator_port: int
    output: Path
    scratch: Path  # its TMPDIR: the emulator's log lands here

    @property
    def site(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def server_needle(self) -> str:
        return f"127.0.0.1:{self.port} "  # runserver's args end with a space

    @property
    def emulator_needle(self) -> str:
        return f"--port {self.emulator_port} "

    def log(self) -> str:
        return self.output.read_text()

    def wait_for(self, text: str, timeout: float = 120) -> None:
        """Until the demo has printed ``text`` (failing if it exits first)."""
        deadline = time.monotonic() + timeout
        while text not in self.log():
            assert self.process.poll() is None, self.log()
            assert time.monotonic() < deadline, self.log()
            time.sleep(0.1)

    def processes(self) -> list[int]:
        return _demo_processes(self.server_needle, self.emulator_needle)

    def wait_until_all_gone(self) -> None:
        deadline = time.monotonic() + 5  # runserver's reloader child may take a moment
        while self.processes() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert self.processes() == [], self.log()


DEMO_SKIP = pytest.mark.skipif(
    shutil.which("bash") is None or not Path("/proc/self/cmdline").exists(),
    reason="run-demo.sh needs bash; finding its processes needs /proc",
)


@contextlib.contextmanager
def running_demo(tmp_path: Path) -> Iterator[Demo]:
    """``run-demo.sh`` on free ports with its own database, up and serving (its banner
    printed); everything it started is killed on exit, whatever happened."""
    port, emulator_port = _free_ports(2)
    scratch = tmp_path / "tmp"  # run-demo.sh's mktemp (the emulator's log) lands here
    scratch.mkdir()
    env = {
        **os.environ,
        "PYTHON": sys.executable,
        "PORT": str(port),
        "EMULATOR_PORT": str(emulator_port),
        "DEMO_DATABASE": str(tmp_path / "demo.sqlite3"),
        "TMPDIR": str(scratch),
    }
    env.pop("TEXTFLOW_API_KEY", None)  # never the real TextFlow
    env.pop("DJANGO_DEBUG", None)  # the demo's default: on
    output = tmp_path / "demo.log"
    with output.open("w") as out:
        process = subprocess.Popen(  # noqa: S603 - our own script
            # SIGINT back to its default first: under a shell without job control it is
            # ignored, and bash cannot trap a signal ignored on entry.
            [sys.executable, "-c", EXEC_WITH_SIGINT, "bash", str(RUN_DEMO)],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a group of its own for Ctrl-C, as a terminal gives
        )
    demo = Demo(process, port, emulator_port, output, scratch)
    try:
        demo.wait_for("Ctrl-C stops")
        assert len(demo.processes()) >= 2, demo.log()  # emulator, server
        yield demo
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        for pid in demo.processes():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=30) as response:  # noqa: S310 - loopback
            return response.status, response.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def _post_json(url: str, data: dict[str, str]) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(  # noqa: S310 - loopback
        url, json.dumps(data).encode(), {"Content-Type": JSON}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 - loopback
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


@DEMO_SKIP
@pytest.mark.parametrize("interrupts", [1, 2])
def test_ctrl_c_stops_everything_the_demo_started(tmp_path: Path, interrupts: int) -> None:
    # Two Ctrl-C 20 ms apart is an impatient user: the second must not cut the cleanup short.
    with running_demo(tmp_path) as demo:
        for _ in range(interrupts):
            os.killpg(demo.process.pid, signal.SIGINT)
            time.sleep(0.02)
        assert demo.process.wait(timeout=30) == 130
        log = demo.log()
        assert log.rstrip().endswith("Demo stopped."), log
        assert list(demo.scratch.iterdir()) == [], log  # the emulator's temp log is gone
        demo.wait_until_all_gone()


@DEMO_SKIP
def test_the_demo_keeps_serving_when_the_emulator_stops(tmp_path: Path) -> None:
    """The emulator stopping (killed, crashed) is an outage of TextFlow to the site, which
    goes on serving and says so; the demo prints a line and carries on."""
    with running_demo(tmp_path) as demo:
        for pid in _demo_processes(demo.emulator_needle):
            os.kill(pid, signal.SIGTERM)
        demo.wait_for("The TextFlow emulator stopped")
        assert demo.process.poll() is None, demo.log()

        status, page = _get(demo.site + "/")
        assert status == 200
        status, page = _get(demo.site + "/dev/inbox/")
        assert status == 503
        assert (
            f"The TextFlow emulator at http://127.0.0.1:{demo.emulator_port} is not answering"
            in page
        )
        status, answer = _post_json(demo.site + "/api/phone/send-code/", {"phone_number": NUMBER})
        assert (status, answer["code"]) == (503, "sms_provider_unavailable")

        os.killpg(demo.process.pid, signal.SIGINT)  # Ctrl-C still stops the rest
        assert demo.process.wait(timeout=30) == 130
        assert demo.log().rstrip().endswith("Demo stopped."), demo.log()
        demo.wait_until_all_gone()


@DEMO_SKIP
def test_the_demos_emulator_forwards_replies_to_the_sites_webhook(tmp_path: Path) -> None:
    """make demo starts the emulator with the site's reply webhook and the demo's secret: a
    reply (what the dev inbox's box asks for) reaches the site, which opts the number out."""
    with running_demo(tmp_path) as demo:
        emulator = f"http://127.0.0.1:{demo.emulator_port}/_emulator"
        status, answer = _post_json(emulator + "/reply", {"phone_number": NUMBER, "text": "STOP"})
        assert status == 200, answer
        assert (answer["delivered"], answer["attempts"]) == (True, 1), answer
        assert answer["url"] == f"{demo.site}/api/phone/replies/"
        with contextlib.closing(sqlite3.connect(tmp_path / "demo.sqlite3")) as db:
            rows = db.execute("SELECT phone_number, source FROM textflow_optout").fetchall()
        assert rows == [(NUMBER, "reply")]


@DEMO_SKIP
def test_the_demo_stops_when_its_dev_server_stops(tmp_path: Path) -> None:
    with running_demo(tmp_path) as demo:
        for pid in _demo_processes(demo.server_needle):
            with contextlib.suppress(ProcessLookupError):  # the reloader's child goes with it
                os.kill(pid, signal.SIGTERM)
        assert demo.process.wait(timeout=30) == 1
        log = demo.log()
        assert "The dev server stopped; stopping the demo." in log, log
        assert log.rstrip().endswith("Demo stopped."), log
        demo.wait_until_all_gone()
