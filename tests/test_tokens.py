"""Verification tokens (issue 11, finding 6): opaque, stored as a SHA-256 only, single use,
expiring after TOKEN_MAX_AGE, optionally bound to the session that verified, and spent by
exactly one of many parallel requests."""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import json
import re

import pytest
from django.contrib.sessions.backends.db import SessionStore
from django.core import signing
from django.test import RequestFactory
from django.utils import timezone

from textflow_django import verification
from textflow_django.backends import locmem
from textflow_django.exceptions import InvalidToken
from textflow_django.models import PhoneVerification

from .conftest import race, requires_postgres, tf

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("no_secrets_in_logs")]

NUMBER = "+12025550143"


@pytest.fixture(autouse=True)
def rules(settings) -> None:
    # No cooldown: the tests verify one number several times in a row.
    tf(settings, BACKEND="textflow_django.backends.locmem.LocMemBackend", RESEND_COOLDOWN=0)
    locmem.reset()


def last_code() -> str:
    message = locmem.outbox[-1]
    return message.code or message.text.rsplit(" ", 1)[-1]


def session_request(key: str | None = None):
    """A request carrying a saved session (``key``'s, or a new one)."""
    session = SessionStore(key)
    if key is None:
        session.create()
    request = RequestFactory().post("/", REMOTE_ADDR="203.0.113.7")
    request.session = session
    return request


def verified_token(request=None) -> str:
    """A token for NUMBER, verified by ``request`` (its session remembers the code it asked
    for), or by the site's own calls without one."""
    verification.send_code(NUMBER, request=request)
    return verification.check_code(NUMBER, last_code(), request=request).token


def decodings(token: str) -> list[bytes]:
    """Whatever a reader without the key could get out of the token: the token itself and
    each ``.``/``:``-separated part, as text and base64-decoded (both alphabets, padded)."""
    found = [token.encode()]
    for part in {token, *re.split(r"[.:]", token)}:
        padded = part + "=" * (-len(part) % 4)
        for decode in (base64.urlsafe_b64decode, base64.b64decode):
            try:
                found.append(decode(padded))
            except (binascii.Error, ValueError):
                pass
    return found


# -- opaque ------------------------------------------------------------------------------------


def test_a_token_reveals_neither_the_number_nor_the_row():
    tokens = [verified_token() for _ in range(3)]
    rows = list(PhoneVerification.objects.order_by("id"))
    assert len(set(tokens)) == 3
    for token, row in zip(tokens, rows, strict=True):
        # At least 128 bits of URL-safe randomness, not a payload: no decoding of it reads
        # as the number or as JSON (the earlier tokens were {"p": number, "v": id}).
        assert re.fullmatch(r"[A-Za-z0-9_-]{32,}", token), token
        for data in decodings(token):
            assert b"2025550143" not in data
            with pytest.raises(ValueError):
                json.loads(data)
        with pytest.raises(signing.BadSignature):
            signing.loads(token, salt="textflow_django.verification.token")
        # Only its SHA-256 is stored; no field of the row holds the token itself.
        assert row.token_hash == hashlib.sha256(token.encode()).hexdigest()
        values = [str(getattr(row, f.attname)) for f in PhoneVerification._meta.concrete_fields]
        assert not any(token in value for value in values)


def test_a_token_signed_the_old_way_is_refused():
    """Signed tokens of the earlier release (``{"p": number, "v": id}``, readable without the
    key) prove nothing any more, even for a verification that did verify."""
    verified_token()
    row = PhoneVerification.objects.get()
    old = signing.dumps({"p": NUMBER, "v": row.pk}, salt="textflow_django.verification.token")
    with pytest.raises(InvalidToken):
        verification.phone_from_token(old)
    with pytest.raises(InvalidToken):
        verification.consume_token(old)


def test_a_forged_or_mangled_token_is_refused():
    token = verified_token()
    for bad in [token[:-2] + ("xx" if token[-2:] != "xx" else "yy"), token + "x", "", "x" * 2000]:
        with pytest.raises(InvalidToken):
            verification.phone_from_token(bad)
    for bad in [None, 12345, b"bytes"]:
        with pytest.raises(InvalidToken):
            verification.phone_from_token(bad)  # type: ignore[arg-type]
    assert verification.phone_from_token(token) == NUMBER  # the genuine one still works


# -- single use ------------------------------------------------------------------------------


def test_a_token_is_spent_once():
    token = verified_token()
    # Reading it does not spend it...
    assert verification.phone_from_token(token) == NUMBER
    assert verification.phone_from_token(token) == NUMBER
    # ...consuming it does, once.
    assert verification.consume_token(token) == NUMBER
    with pytest.raises(InvalidToken):
        verification.consume_token(token)
    with pytest.raises(InvalidToken):
        verification.phone_from_token(token)
    row = PhoneVerification.objects.get()
    assert row.token_used_at is not None and row.status == "verified"


def test_phone_from_token_with_consume_spends_it():
    token = verified_token()
    assert verification.phone_from_token(token, consume=True) == NUMBER
    with pytest.raises(InvalidToken):
        verification.phone_from_token(token, consume=True)
    with pytest.raises(InvalidToken):
        verification.consume_token(token)


def test_make_token_replaces_the_token_and_needs_a_verified_verification(settings):
    first = verified_token()
    row = PhoneVerification.objects.get()
    second = verification.make_token(row)
    assert second != first
    with pytest.raises(InvalidToken):
        verification.phone_from_token(first)
    assert verification.consume_token(second) == NUMBER
    # A fresh token for the same verification proves it once more (the site's own choice).
    third = verification.make_token(row)
    assert verification.consume_token(third) == NUMBER
    # A verification that did not verify has nothing to prove.
    tf(settings, RESEND_COOLDOWN=0)
    verification.send_code(NUMBER)
    pending = PhoneVerification.objects.get(status="pending")
    with pytest.raises(InvalidToken):
        verification.make_token(pending)


# -- expiry ----------------------------------------------------------------------------------


@pytest.mark.parametrize("spend", ["peek", "consume"])
def test_a_token_expires_after_token_max_age(settings, spend):
    """Judged against the verification's ``verified_at``, moved back rather than waited for."""
    tf(settings, TOKEN_MAX_AGE=60)
    read = verification.phone_from_token if spend == "peek" else verification.consume_token

    def verified_seconds_ago(seconds: int) -> str:
        token = verified_token()
        PhoneVerification.objects.filter(pk=PhoneVerification.objects.latest("id").pk).update(
            verified_at=timezone.now() - dt.timedelta(seconds=seconds)
        )
        return token

    young, old = verified_seconds_ago(50), verified_seconds_ago(61)
    assert read(young) == NUMBER  # 50 s old: within TOKEN_MAX_AGE
    with pytest.raises(InvalidToken):
        read(old)
    # An explicit max_age overrides the setting.
    assert verification.phone_from_token(old, max_age=dt.timedelta(seconds=120)) == NUMBER
    with pytest.raises(InvalidToken):
        verification.phone_from_token(verified_seconds_ago(10), max_age=5)


# -- bound to the session that verified (TOKEN_SESSION_BINDING) ---------------------------------


def test_a_token_bound_to_its_session_is_refused_elsewhere(settings):
    tf(settings, TOKEN_SESSION_BINDING=True)
    verifier = session_request()
    key = verifier.session.session_key
    token = verified_token(verifier)
    row = PhoneVerification.objects.get()
    assert row.token_session == hashlib.sha256(key.encode()).hexdigest()
    for stranger in [session_request(), RequestFactory().post("/"), None]:
        with pytest.raises(InvalidToken):
            verification.phone_from_token(token, request=stranger)
        with pytest.raises(InvalidToken):
            verification.consume_token(token, request=stranger)
    # The refusals spent nothing: the session that verified still can, once.
    assert verification.phone_from_token(token, request=session_request(key)) == NUMBER
    assert verification.consume_token(token, request=session_request(key)) == NUMBER
    with pytest.raises(InvalidToken):
        verification.consume_token(token, request=session_request(key))


def test_a_verifier_without_a_session_yet_gets_one_and_the_token_is_bound_to_it(settings):
    """An API client passing verification_id, with no session cookie yet: the verify gives
    it a session (its cookie goes out with the answer), and the token is bound to that."""
    tf(settings, TOKEN_SESSION_BINDING=True)
    sent = verification.send_code(NUMBER)
    verifier = RequestFactory().post("/", REMOTE_ADDR="203.0.113.7")
    verifier.session = SessionStore()  # no key: nothing saved yet
    token = verification.check_code(
        NUMBER, last_code(), request=verifier, verification_id=sent.verification_id
    ).token
    key = verifier.session.session_key
    assert key and verifier.session.modified  # saved, and the middleware will send it
    assert PhoneVerification.objects.get().token_session == hashlib.sha256(key.encode()).hexdigest()
    with pytest.raises(InvalidToken):
        verification.consume_token(token)  # not from anywhere
    assert verification.consume_token(token, request=session_request(key)) == NUMBER


def test_without_session_binding_a_token_is_accepted_from_anywhere(settings):
    tf(settings, TOKEN_SESSION_BINDING=False)
    token = verified_token(session_request())
    assert PhoneVerification.objects.get().token_session == ""
    assert verification.phone_from_token(token, request=session_request()) == NUMBER
    assert verification.consume_token(token) == NUMBER


# -- a replay race (PostgreSQL) ----------------------------------------------------------------


@requires_postgres
def test_ten_parallel_consumes_of_one_token_spend_it_once(transactional_db):
    token = verified_token()
    results = race(lambda: verification.consume_token(token), n=10)
    assert results.count(NUMBER) == 1, results
    assert all(isinstance(r, InvalidToken) for r in results if r != NUMBER), results
    assert PhoneVerification.objects.get().token_used_at is not None
