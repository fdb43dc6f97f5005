"""The verification service: every rule, in both modes, through the locmem backend and the
emulator. No log record of these tests may contain a code or the API key.

A code is bound to the client that asked for it (its ``verification_id``, or its session):
``Browser`` stands for a client with a session, as ``SessionMiddleware`` gives each request
one. Tokens have their own tests (test_tokens.py).
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.contrib.sessions.backends.db import SessionStore
from django.db import DatabaseError
from django.test import RequestFactory
from django.utils import timezone

from textflow_django import signals, verification
from textflow_django.backends import locmem
from textflow_django.exceptions import (
    MAYBE_SENT_MESSAGE,
    CountryNotAllowed,
    InsufficientBalance,
    InvalidCode,
    RateLimited,
    ResendTooSoon,
    SMSProviderError,
    SMSProviderUnavailable,
    TextFlowBadResponse,
    TextFlowCircuitOpen,
    TextFlowConnectionError,
    TextFlowRateLimited,
    TextFlowRejectedNumber,
    TextFlowServerError,
    TextFlowTimeout,
    TooManyAttempts,
    VerificationExpired,
)
from textflow_django.models import PhoneVerification
from textflow_django.phone import InvalidPhoneNumberError
from textflow_django.testing import EMULATOR_API_KEY

from .conftest import race, requires_postgres, requires_redis, tf

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("no_secrets_in_logs")]

NUMBER = "+12025550143"
OTHER = "+12025550144"


@pytest.fixture(autouse=True)
def rules(settings) -> Iterator[None]:
    settings.TEXTFLOW = {
        **settings.TEXTFLOW,
        "BACKEND": "textflow_django.backends.locmem.LocMemBackend",
    }
    locmem.reset()
    yield


class Recorder:
    def __init__(self, signal):
        self.calls: list[dict] = []
        self.signal = signal
        signal.connect(self.receive)

    def receive(self, sender, **kwargs):
        self.calls.append(kwargs)

    def close(self):
        self.signal.disconnect(self.receive)


@pytest.fixture
def record():
    made: list[Recorder] = []

    def make(signal):
        rec = Recorder(signal)
        made.append(rec)
        return rec

    yield make
    for rec in made:
        rec.close()


@pytest.fixture(
    params=[
        ("database", "textflow"),
        ("database", "local"),
        pytest.param(("redis", "textflow"), marks=requires_redis),
        pytest.param(("redis", "local"), marks=requires_redis),
    ],
    ids="-".join,
)
def limit_store(request, settings):
    """Run a limit test against each shared store (the database, and Redis: CI has one), in
    each VERIFY_MODE: every rule holds whoever holds the code."""
    store, mode = request.param
    if store == "redis":
        from django.core.cache import caches

        caches["redis"].clear()
        tf(settings, RATELIMIT_STORE="cache", RATELIMIT_CACHE="redis", VERIFY_MODE=mode)
    else:
        tf(settings, RATELIMIT_STORE="database", VERIFY_MODE=mode)
    return store


def last_code() -> str:
    """The code of the last SMS (in "local" mode it travels as a plain SMS: read the text)."""
    message = locmem.outbox[-1]
    return message.code or message.text.rsplit(" ", 1)[-1]


#: The API path each VERIFY_MODE sends a code through.
SEND_PATH = {"textflow": "/send-code", "local": "/send-sms"}


def emulator_code(emulator: Any, mode: str) -> str:
    """The code the emulator last texted: TextFlow's own (``textflow`` mode), or ours, read
    from the SMS text (``local`` mode: the emulator holds no code for a plain SMS)."""
    if mode == "textflow":
        code = emulator.last_code(NUMBER)
        assert code is not None
        return str(code)
    return str(emulator.messages[-1].text.rsplit(" ", 1)[-1])


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def request_from(ip: str = "203.0.113.7", xff: str | None = None):
    """A request without a session (as an API client without cookies makes)."""
    extra = {"REMOTE_ADDR": ip}
    if xff:
        extra["HTTP_X_FORWARDED_FOR"] = xff
    return RequestFactory().post("/", **extra)


class Browser:
    """A client with a session of its own: each request loads the session from the database
    and saves it afterwards, failed or not, as ``SessionMiddleware`` does (it saves on every
    answer but a 500)."""

    def __init__(self, ip: str = "203.0.113.7") -> None:
        session = SessionStore()
        session.create()
        self.key = session.session_key
        self.ip = ip

    def request(self):
        request = request_from(self.ip)
        request.session = SessionStore(self.key)
        return request

    def send(self, number: str) -> verification.CodeSent:
        request = self.request()
        try:
            return verification.send_code(number, request=request)
        finally:
            request.session.save()

    def check(self, number: str, code: str) -> verification.Verified:
        request = self.request()
        try:
            return verification.check_code(number, code, request=request)
        finally:
            request.session.save()


def wrong_code(right: str) -> str:
    """A code of the same length that is not ``right``."""
    return f"{(int(right) + 1) % 10 ** len(right):0{len(right)}d}"


# -- the happy path ---------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["textflow", "local"])
def test_send_then_check(settings, record, mode):
    tf(settings, VERIFY_MODE=mode, SERVICE_NAME="Acme")
    sent_signal = record(signals.code_sent)
    verified_signal = record(signals.phone_verified)

    sent = verification.send_code("+1 (202) 555-0143", request=request_from())

    assert sent.phone_number == NUMBER
    assert sent.resend_after == 30
    assert dt.timedelta(seconds=590) < sent.expires_at - timezone.now() <= dt.timedelta(seconds=600)
    [sms] = locmem.outbox
    assert sms.phone_number == NUMBER
    assert sms.text == f"Your verification code for Acme is: {last_code()}"
    assert sms.kind == ("code" if mode == "textflow" else "sms")
    row = PhoneVerification.objects.get()
    assert (row.status, row.mode, row.attempts, row.client_ip) == (
        "pending",
        mode,
        0,
        "203.0.113.7",
    )
    assert last_code() not in row.code_hash
    assert bool(row.code_hash) is (mode == "local")
    # The handle is opaque and kept as its SHA-256 only.
    assert len(sent.verification_id) >= 32 and NUMBER[1:] not in sent.verification_id
    assert row.handle_hash == sha256(sent.verification_id)
    assert len(sent_signal.calls) == 1 and sent_signal.calls[0]["phone_number"] == NUMBER

    verified = verification.check_code(NUMBER, last_code())

    assert verified.phone_number == NUMBER
    assert verification.phone_from_token(verified.token) == NUMBER
    row.refresh_from_db()
    assert row.status == "verified" and row.verified_at is not None
    assert len(verified_signal.calls) == 1
    assert verified_signal.calls[0]["phone_number"] == NUMBER
    assert verified_signal.calls[0]["token"] == verified.token


@pytest.mark.parametrize("mode", ["textflow", "local"])
def test_a_code_verifies_once(settings, mode):
    tf(settings, VERIFY_MODE=mode)
    sent = verification.send_code(NUMBER)
    code = last_code()
    verification.check_code(NUMBER, code)
    # The site's own call (no request, no handle) is told the number has no live code; the
    # holder of the used code's handle is answered as for a wrong code.
    with pytest.raises(VerificationExpired):
        verification.check_code(NUMBER, code)
    with pytest.raises(InvalidCode) as info:
        verification.check_code(NUMBER, code, verification_id=sent.verification_id)
    assert info.value.attempts_left == 4
    assert PhoneVerification.objects.get().status == "verified"


def test_the_verification_is_linked_to_the_user(settings):
    user = get_user_model().objects.create_user("ann", password="x")
    verification.send_code(NUMBER, user=user)
    verified = verification.check_code(NUMBER, last_code())
    assert verified.verification.user == user


def test_authenticated_request_user_is_used(settings):
    user = get_user_model().objects.create_user("bob", password="x")
    request = request_from()
    request.user = user
    verification.send_code(NUMBER, request=request)
    assert PhoneVerification.objects.get().user == user


def test_a_new_code_supersedes_the_previous(settings):
    tf(settings, RESEND_COOLDOWN=0)
    verification.send_code(NUMBER)
    first = last_code()
    verification.send_code(NUMBER)
    second = last_code()
    assert list(PhoneVerification.objects.order_by("id").values_list("status", flat=True)) == [
        "superseded",
        "pending",
    ]
    if first != second:
        with pytest.raises(InvalidCode):
            verification.check_code(NUMBER, first)
    verification.check_code(NUMBER, second)


# -- the codes: ours, 6 digits by default ------------------------------------------------------


def test_by_default_the_code_is_ours_and_has_six_digits():
    """No VERIFY_MODE or CODE_LENGTH set (the ``rules`` fixture sets the backend only)."""
    verification.send_code(NUMBER)
    [sms] = locmem.outbox
    assert sms.kind == "sms" and sms.code is None  # a plain SMS: TextFlow holds no code
    code = last_code()
    assert len(code) == 6 and code.isdigit()
    row = PhoneVerification.objects.get()
    assert row.mode == "local" and row.code_hash and code not in row.code_hash
    assert verification.check_code(NUMBER, code).phone_number == NUMBER


def test_code_length_sets_the_digits_of_local_codes(settings):
    tf(settings, VERIFY_MODE="local", CODE_LENGTH=8, RESEND_COOLDOWN=0)
    codes = []
    for _ in range(3):
        verification.send_code(NUMBER)
        codes.append(last_code())
    assert all(len(code) == 8 and code.isdigit() for code in codes), codes
    # The 6-digit prefix of the newest code is a wrong code, not a match.
    with pytest.raises(InvalidCode):
        verification.check_code(NUMBER, codes[-1][:6])
    assert verification.check_code(NUMBER, codes[-1]).phone_number == NUMBER


# -- a code is bound to the client that asked for it -------------------------------------------


@pytest.mark.parametrize("mode", ["textflow", "local"])
def test_the_session_that_asked_verifies_without_a_handle(settings, mode):
    tf(settings, VERIFY_MODE=mode)
    owner = Browser()
    sent = owner.send(NUMBER)
    # Keyed by a hash of the number, not the number (tests/test_privacy.py).
    assert list(SessionStore(owner.key)["textflow_verifications"].values()) == [
        sent.verification_id
    ]
    verified = owner.check(NUMBER, last_code())
    assert verified.phone_number == NUMBER
    assert PhoneVerification.objects.get().status == "verified"


@pytest.mark.parametrize("mode", ["textflow", "local"])
def test_nobody_else_reaches_the_code_not_even_with_the_right_one(settings, record, mode):
    """Another session's request, or one without a session, has no code to guess at: even
    the right code is answered as a first wrong code (attempts_left MAX_ATTEMPTS - 1, always),
    counts against that caller's failed-check cap, and leaves the owner's code untouched."""
    tf(settings, VERIFY_MODE=mode, FAILED_CHECK_LIMITS={"ip": ["3/h"]})
    owner = Browser("198.51.100.5")
    owner.send(NUMBER)
    code = last_code()
    failed = record(signals.verification_failed)
    stranger = Browser("203.0.113.9")
    lefts = []
    for check in [
        lambda: stranger.check(NUMBER, code),
        lambda: stranger.check(NUMBER, wrong_code(code)),
        lambda: verification.check_code(NUMBER, code, request=request_from("203.0.113.9")),
    ]:
        with pytest.raises(InvalidCode) as info:
            check()
        lefts.append(info.value.attempts_left)
    assert lefts == [4, 4, 4]
    # Those three were counted against the stranger's address.
    with pytest.raises(RateLimited):
        stranger.check(NUMBER, code)
    assert [c["reason"] for c in failed.calls] == ["invalid_code"] * 3 + ["rate_limited"]
    row = PhoneVerification.objects.get()
    assert (row.status, row.attempts) == ("pending", 0)
    assert owner.check(NUMBER, code).phone_number == NUMBER


def test_a_stranger_with_a_handle_of_its_own_does_not_reach_another_code(settings):
    """A handle names one code: the handle of another client's code, or of another number's
    code, reaches nothing else."""
    tf(settings, RESEND_COOLDOWN=0)
    owner = Browser("198.51.100.5")
    owner.send(NUMBER)
    code = last_code()
    others = verification.send_code(OTHER, request=request_from("203.0.113.9"))
    with pytest.raises(InvalidCode) as info:
        verification.check_code(NUMBER, code, verification_id=others.verification_id)
    assert info.value.attempts_left == 4
    with pytest.raises(InvalidCode):
        verification.check_code(NUMBER, code, verification_id="x" * 32)
    with pytest.raises(InvalidCode):
        verification.check_code(NUMBER, code, verification_id="x" * 2000)
    assert PhoneVerification.objects.get(phone_number=NUMBER).attempts == 0
    assert owner.check(NUMBER, code).phone_number == NUMBER


def test_expired_is_answered_only_to_the_holder_of_the_code(settings):
    owner = Browser()
    sent = owner.send(NUMBER)
    code = last_code()
    PhoneVerification.objects.update(expires_at=timezone.now() - dt.timedelta(seconds=1))
    # To anyone else, an expired code is no code: a wrong one.
    with pytest.raises(InvalidCode) as info:
        Browser("203.0.113.9").check(NUMBER, code)
    assert info.value.attempts_left == 4
    with pytest.raises(InvalidCode):
        verification.check_code(NUMBER, code, request=request_from("203.0.113.9"))
    # The holder (its session, or its handle) and the site's own call are told it expired.
    with pytest.raises(VerificationExpired):
        owner.check(NUMBER, code)
    with pytest.raises(VerificationExpired):
        verification.check_code(NUMBER, code, verification_id=sent.verification_id)
    with pytest.raises(VerificationExpired):
        verification.check_code(NUMBER, code)


def test_a_superseded_or_used_code_is_a_wrong_code_to_its_holder(settings):
    tf(settings, RESEND_COOLDOWN=0)
    owner = Browser()
    first = owner.send(NUMBER)
    first_code = last_code()
    second = owner.send(NUMBER)
    second_code = last_code()
    assert list(PhoneVerification.objects.order_by("id").values_list("status", flat=True)) == [
        "superseded",
        "pending",
    ]
    with pytest.raises(InvalidCode) as info:
        verification.check_code(NUMBER, first_code, verification_id=first.verification_id)
    assert info.value.attempts_left == 4
    assert owner.check(NUMBER, second_code).phone_number == NUMBER  # the session holds the newest
    with pytest.raises(InvalidCode):
        owner.check(NUMBER, second_code)
    with pytest.raises(InvalidCode):
        verification.check_code(NUMBER, second_code, verification_id=second.verification_id)


def test_a_send_supersedes_only_the_same_clients_earlier_code(settings):
    """Two clients verifying one number (two devices, or a stranger asking for a code) each
    keep theirs: a client's new code replaces only its own earlier one."""
    tf(settings, RESEND_COOLDOWN=0)
    alice, bob = Browser("198.51.100.1"), Browser("198.51.100.2")
    alice.send(NUMBER)
    alice_code = last_code()
    bob.send(NUMBER)
    bob.send(NUMBER)
    bob_code = last_code()
    assert list(PhoneVerification.objects.order_by("id").values_list("status", flat=True)) == [
        "pending",
        "superseded",
        "pending",
    ]
    assert alice.check(NUMBER, alice_code).phone_number == NUMBER
    assert bob.check(NUMBER, bob_code).phone_number == NUMBER


# -- attempts and locking ----------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["textflow", "local"])
def test_wrong_codes_lock_after_max_attempts(settings, record, mode):
    tf(settings, VERIFY_MODE=mode)
    failed = record(signals.verification_failed)
    verification.send_code(NUMBER)
    code = last_code()
    wrong = "000000" if code != "000000" else "111111"
    lefts = []
    for _ in range(5):
        with pytest.raises(InvalidCode) as info:
            verification.check_code(NUMBER, wrong)
        lefts.append(info.value.attempts_left)
    assert lefts == [4, 3, 2, 1, 0]
    assert PhoneVerification.objects.get().status == "locked"
    with pytest.raises(TooManyAttempts) as info:
        verification.check_code(NUMBER, code)  # even the right code
    assert info.value.status_code == 429
    assert [c["reason"] for c in failed.calls] == ["invalid_code"] * 5 + ["too_many_attempts"]


def test_a_locked_number_is_not_asked_of_textflow(settings, textflow_live):
    tf(settings, VERIFY_MODE="textflow", MAX_ATTEMPTS=2)
    verification.send_code(NUMBER)
    code = textflow_live.last_code(NUMBER)
    for _ in range(2):
        with pytest.raises(InvalidCode):
            verification.check_code(NUMBER, "0000" if code != "0000" else "1111")
    asked = len(textflow_live.calls("/verify-code"))
    with pytest.raises(TooManyAttempts):
        verification.check_code(NUMBER, code)
    assert len(textflow_live.calls("/verify-code")) == asked == 2


def test_malformed_codes_count_but_are_not_sent_to_textflow(settings, textflow_live):
    tf(settings, VERIFY_MODE="textflow")
    verification.send_code(NUMBER)
    for bad in ["abc", "١٢٣٤", "12", 1234, None]:
        with pytest.raises(InvalidCode):
            verification.check_code(NUMBER, bad)
    assert textflow_live.calls("/verify-code") == []
    assert PhoneVerification.objects.get().attempts == 5


def test_expired_verification(settings):
    verification.send_code(NUMBER)
    PhoneVerification.objects.update(expires_at=timezone.now() - dt.timedelta(seconds=1))
    with pytest.raises(VerificationExpired) as info:
        verification.check_code(NUMBER, last_code())
    assert info.value.code == "expired" and info.value.status_code == 400


def test_no_verification_at_all():
    with pytest.raises(VerificationExpired):
        verification.check_code(NUMBER, "123456")


@pytest.mark.parametrize("mode", ["textflow", "local"])
def test_a_caller_without_a_live_code_is_answered_as_a_wrong_code_and_pays_for_it(
    settings, record, mode
):
    """No free probing: a request for a number nobody is verifying gets the very refusal a
    first wrong code gets (class, code, status, message, extra fields), and it counts
    against the caller's failed-check cap."""
    tf(settings, VERIFY_MODE=mode, FAILED_CHECK_LIMITS={"ip": ["2/h"]})
    owner = Browser("198.51.100.5")
    owner.send(NUMBER)
    with pytest.raises(InvalidCode) as live:
        owner.check(NUMBER, wrong_code(last_code()))
    failed = record(signals.verification_failed)
    prober = "203.0.113.9"
    refusals = []
    for number in (OTHER, "+12025550145"):  # nobody asked for a code for either
        with pytest.raises(InvalidCode) as info:
            verification.check_code(number, "123456", request=request_from(prober))
        refusals.append(info.value)
    for refusal in refusals:
        assert type(refusal) is type(live.value)
        assert (refusal.code, refusal.status_code, str(refusal.message), refusal.extra) == (
            live.value.code,
            live.value.status_code,
            str(live.value.message),
            live.value.extra,
        )
    assert live.value.extra == {"attempts_left": 4}
    assert [c["reason"] for c in failed.calls] == ["invalid_code", "invalid_code"]
    with pytest.raises(RateLimited):
        verification.check_code(OTHER, "123456", request=request_from(prober))
    assert not PhoneVerification.objects.filter(phone_number=OTHER).exists()


# -- cooldown and caps -------------------------------------------------------------------------


def test_resend_cooldown(settings, record, limit_store):
    capped = record(signals.rate_limited)
    verification.send_code(NUMBER)
    with pytest.raises(ResendTooSoon) as info:
        verification.send_code(NUMBER)
    assert 1 <= info.value.retry_after <= 30
    assert info.value.status_code == 429
    assert len(locmem.outbox) == 1
    assert capped.calls == []  # the cooldown is not a cap: no rate_limited signal
    verification.send_code(OTHER)  # other numbers are not affected
    assert len(locmem.outbox) == 2


def test_send_cap_per_number(settings, record, caplog, limit_store):
    tf(settings, RESEND_COOLDOWN=0, SEND_LIMITS={"number": ["2/h"]})
    capped = record(signals.rate_limited)
    verification.send_code(NUMBER)
    verification.send_code(NUMBER)
    request = request_from()
    with pytest.raises(RateLimited) as info:
        verification.send_code(NUMBER, request=request)
    assert info.value.retry_after >= 1
    assert len(locmem.outbox) == 2
    # What a stranger can still do to a number's owner is spend its send cap: logged and
    # signalled, so the Fraud Guard sees it.
    assert capped.calls == [
        {
            "signal": signals.rate_limited,
            "phone_number": NUMBER,
            "action": "send",
            "scopes": ("number",),
            "retry_after": info.value.retry_after,
            "request": request,
        }
    ]
    [logged] = [r.getMessage() for r in caplog.records if "send_code.refused" in r.getMessage()]
    assert logged == (
        f"textflow.send_code.refused reason=rate_limited number=+1********43 scopes=number "
        f"retry_after={info.value.retry_after}"
    )


def test_send_cap_per_ip_ignores_a_forged_forwarded_for(settings, limit_store):
    tf(settings, SEND_LIMITS={"ip": ["2/h"]})
    for i in range(2):
        verification.send_code(f"+1202555014{i}", request=request_from(xff=f"198.51.100.{i}"))
    with pytest.raises(RateLimited):
        verification.send_code("+12025550149", request=request_from(xff="198.51.100.99"))
    assert len(locmem.outbox) == 2


def test_num_proxies_reads_the_proxy_appended_address(settings):
    tf(settings, NUM_PROXIES=1)
    request = request_from(ip="10.0.0.1", xff="1.1.1.1, 198.51.100.5")
    assert verification.client_ip(request) == "198.51.100.5"
    tf(settings, NUM_PROXIES=0)
    assert verification.client_ip(request) == "10.0.0.1"
    assert verification.client_ip(request_from(ip="not-an-ip")) is None
    assert verification.client_ip(None) is None


def test_a_malformed_forwarded_address_falls_back_to_remote_addr(settings):
    tf(settings, NUM_PROXIES=1)
    assert verification.client_ip(request_from(ip="10.0.0.1", xff="junk")) == "10.0.0.1"
    assert verification.client_ip(request_from(ip="10.0.0.1", xff="1.1.1.1, junk")) == "10.0.0.1"
    # An IPv4-mapped IPv6 address is its IPv4 address (one client, one count).
    assert verification.client_ip(request_from(ip="::ffff:198.51.100.5")) == "198.51.100.5"


def test_the_ip_caps_count_an_ipv6_client_by_its_64(settings, limit_store):
    """A client can rotate through its /64's addresses at will: they share one count."""
    tf(settings, SEND_LIMITS={"ip": ["2/h"]})
    verification.send_code(NUMBER, request=request_from(ip="2001:db8:1:2::1"))
    verification.send_code(OTHER, request=request_from(ip="2001:db8:1:2:ffff::9"))
    with pytest.raises(RateLimited):
        verification.send_code("+12025550145", request=request_from(ip="2001:db8:1:2::abcd"))
    # Another /64 is another client; the rows keep each full address.
    verification.send_code("+12025550146", request=request_from(ip="2001:db8:1:3::1"))
    assert len(locmem.outbox) == 3
    assert set(PhoneVerification.objects.values_list("client_ip", flat=True)) == {
        "2001:db8:1:2::1",
        "2001:db8:1:2:ffff::9",
        "2001:db8:1:3::1",
    }


def test_failed_check_cap_per_number(settings, record, limit_store):
    """Not in the defaults any more (anyone could spend it: system check W006), but a site
    may still set one, and it holds."""
    tf(settings, MAX_ATTEMPTS=10, FAILED_CHECK_LIMITS={"number": ["3/d"]})
    failed = record(signals.verification_failed)
    verification.send_code(NUMBER)
    code = last_code()
    for _ in range(3):
        with pytest.raises(InvalidCode):
            verification.check_code(NUMBER, "000000" if code != "000000" else "111111")
    with pytest.raises(RateLimited):
        verification.check_code(NUMBER, code)
    assert failed.calls[-1]["reason"] == "rate_limited"
    assert PhoneVerification.objects.get().status == "pending"


def test_failed_check_cap_per_ip_spans_numbers(settings, record, limit_store):
    tf(settings, RESEND_COOLDOWN=0, FAILED_CHECK_LIMITS={"ip": ["2/h"]})
    capped = record(signals.rate_limited)
    handles = {}
    for number in (NUMBER, OTHER, "+12025550145"):
        handles[number] = verification.send_code(number).verification_id
    # A right code takes a slot before it is compared and gives it back: it is no wrong code.
    verified = verification.check_code(
        "+12025550145", last_code(), request=request_from(), verification_id=handles["+12025550145"]
    )
    assert verified.phone_number == "+12025550145"
    for number in (NUMBER, OTHER):
        with pytest.raises(InvalidCode) as info:
            verification.check_code(
                number, "0000000", request=request_from(), verification_id=handles[number]
            )
        assert info.value.attempts_left == 4  # a real wrong code, counted on its verification
    request = request_from()
    with pytest.raises(RateLimited) as refused:
        verification.check_code(NUMBER, "0000000", request=request, verification_id=handles[NUMBER])
    assert [(c["action"], c["scopes"], c["request"]) for c in capped.calls] == [
        ("check", ("ip",), request)
    ]
    assert capped.calls[0]["retry_after"] == refused.value.retry_after
    assert list(PhoneVerification.objects.order_by("id").values_list("attempts", flat=True)) == [
        1,
        1,
        0,
    ]


@pytest.mark.parametrize(
    ("member", "neighbour", "outsider"),
    [
        ("198.51.100.1", "198.51.100.254", "198.51.101.1"),  # IPv4: a /24
        ("2001:db8:1:1::1", "2001:db8:1:ffff::1", "2001:db8:2:1::1"),  # IPv6: a /48
    ],
    ids=["ipv4-24", "ipv6-48"],
)
def test_the_network_caps_count_a_network_across_its_addresses(
    settings, limit_store, member, neighbour, outsider
):
    """Networks, not just addresses: a client with a network of addresses (a /24, a /48 of
    65,536 /64s) meets the per-network cap, on sends and on wrong codes."""
    tf(
        settings,
        RESEND_COOLDOWN=0,
        SEND_LIMITS={"ip": ["10/h"], "network": ["2/h"]},
        FAILED_CHECK_LIMITS={"ip": ["10/h"], "network": ["2/h"]},
    )
    verification.send_code(NUMBER, request=request_from(member))
    verification.send_code(OTHER, request=request_from(neighbour))
    with pytest.raises(RateLimited):
        verification.send_code("+12025550145", request=request_from(neighbour))
    verification.send_code("+12025550145", request=request_from(outsider))
    assert len(locmem.outbox) == 3
    for ip in (member, neighbour):
        with pytest.raises(InvalidCode):
            verification.check_code(NUMBER, "123456", request=request_from(ip))
    with pytest.raises(RateLimited):
        verification.check_code(NUMBER, "123456", request=request_from(member))
    with pytest.raises(InvalidCode):
        verification.check_code(NUMBER, "123456", request=request_from(outsider))


# -- TextFlow failures: what certainly sent nothing consumes nothing; what may have, counts --------


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (TextFlowConnectionError("refused", maybe_sent=False), SMSProviderUnavailable),
        (TextFlowTimeout("connect timeout", maybe_sent=False), SMSProviderUnavailable),
        (TextFlowCircuitOpen("open", retry_after=7), SMSProviderUnavailable),
        (TextFlowRateLimited("slow down", status=429, retry_after=9), SMSProviderUnavailable),
        (InsufficientBalance("no credit", status=400), SMSProviderError),
        (TextFlowRejectedNumber("Phone number is invalid", status=400), InvalidPhoneNumberError),
    ],
    ids=["refused", "connect-timeout", "breaker-open", "429", "no-credit", "rejected-number"],
)
def test_a_send_that_certainly_failed_consumes_nothing(settings, limit_store, error, expected):
    assert not error.maybe_sent
    tf(settings, SEND_LIMITS={"number": ["1/h"], "ip": ["1/h"]})
    verification.send_code(OTHER)  # an earlier, live verification of another number
    tf(settings, SEND_LIMITS={"number": ["1/h"], "ip": ["1/h"]}, RESEND_COOLDOWN=30)
    locmem.fail_next(error)
    with pytest.raises(expected) as info:
        verification.send_code(NUMBER, request=request_from("198.51.100.1"))
    assert type(info.value) is expected
    if expected is not InvalidPhoneNumberError:
        assert info.value.extra == {}  # nothing may arrive: no code_may_arrive, no handle
        assert str(info.value.message) == str(expected.default_message)
    assert not PhoneVerification.objects.filter(phone_number=NUMBER).exists()
    assert PhoneVerification.objects.get(phone_number=OTHER).status == "pending"
    # Cooldown, per-number and per-IP caps are all untouched: the retry goes through at once.
    sent = verification.send_code(NUMBER, request=request_from("198.51.100.1"))
    assert sent.phone_number == NUMBER


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (TextFlowServerError("down", status=500), SMSProviderError),
        (TextFlowBadResponse("not JSON", status=200), SMSProviderError),
        (TextFlowTimeout("slow"), SMSProviderUnavailable),
        (TextFlowConnectionError("reset after sending", maybe_sent=True), SMSProviderUnavailable),
    ],
    ids=["500", "garbled", "read-timeout", "reset"],
)
def test_a_send_that_may_have_gone_out_keeps_its_limits_and_is_recorded(
    settings, limit_store, error, expected
):
    """A slow TextFlow that still sends skips no cap: the send keeps its cooldown and caps,
    and its verification is recorded (see the emulator test below for its code verifying)."""
    assert error.maybe_sent
    mode = settings.TEXTFLOW["VERIFY_MODE"]
    tf(settings, SEND_LIMITS={"number": ["1/h"], "ip": ["1/h"]}, RESEND_COOLDOWN=30)
    verification.send_code(OTHER)  # an earlier, live verification of another number
    locmem.fail_next(error)
    with pytest.raises(expected) as info:
        verification.send_code(NUMBER, request=request_from("198.51.100.1"))
    refusal = info.value
    assert type(refusal) is expected
    assert str(refusal.message) == str(MAYBE_SENT_MESSAGE)
    handle = refusal.extra["verification_id"]
    assert refusal.extra == {"code_may_arrive": True, "verification_id": handle}
    assert isinstance(handle, str) and len(handle) >= 32
    row = PhoneVerification.objects.get(phone_number=NUMBER)
    assert (row.status, row.mode, row.attempts, row.client_ip) == (
        "pending",
        mode,
        0,
        "198.51.100.1",
    )
    assert row.handle_hash == sha256(handle)
    assert bool(row.code_hash) is (mode == "local")  # we hold its hash, or TextFlow the code
    assert PhoneVerification.objects.get(phone_number=OTHER).status == "pending"
    # The cooldown holds...
    with pytest.raises(ResendTooSoon):
        verification.send_code(NUMBER, request=request_from("198.51.100.1"))
    tf(settings, RESEND_COOLDOWN=0)
    # ...and so do the per-number and the per-IP caps it took.
    with pytest.raises(RateLimited):
        verification.send_code(NUMBER, request=request_from("198.51.100.2"))
    with pytest.raises(RateLimited):
        verification.send_code("+12025550145", request=request_from("198.51.100.1"))
    verification.send_code("+12025550145", request=request_from("198.51.100.2"))
    assert [m.phone_number for m in locmem.outbox] == [OTHER, "+12025550145"]


@pytest.mark.parametrize("holder", ["session", "verification_id"])
@pytest.mark.parametrize("mode", ["textflow", "local"])
def test_the_code_of_a_send_that_timed_out_verifies_when_it_arrives(
    settings, textflow_live, mode, holder
):
    """TextFlow sends the SMS but answers after TIMEOUT: the user sees "may still arrive",
    cannot have a second SMS at once, and the code that did arrive verifies, for the client
    that asked (its session remembers the handle; the refusal carries it)."""
    tf(settings, VERIFY_MODE=mode, TIMEOUT=0.3, BREAKER_THRESHOLD=0)
    path = SEND_PATH[mode]
    textflow_live.fault("delay", path=path, delay=1.0)
    owner = Browser()
    with pytest.raises(SMSProviderUnavailable) as info:
        owner.send(NUMBER)
    assert info.value.extra["code_may_arrive"] is True
    assert len(textflow_live.calls(path)) == 1  # it went out, once
    code = emulator_code(textflow_live, mode)
    with pytest.raises(ResendTooSoon):
        owner.send(NUMBER)
    assert len(textflow_live.calls(path)) == 1 and len(textflow_live.messages) == 1
    tf(settings, TIMEOUT=5.0)  # the check must not time out on a busy machine
    if holder == "session":
        verified = owner.check(NUMBER, code)
    else:
        handle = info.value.extra["verification_id"]
        verified = verification.check_code(
            NUMBER, code, request=request_from("203.0.113.9"), verification_id=handle
        )
    assert verified.phone_number == NUMBER
    assert PhoneVerification.objects.get().status == "verified"


def test_a_send_that_went_out_keeps_its_cooldown_when_recording_fails(settings, monkeypatch):
    """Once the SMS is out, a failure to record it (the database) gives nothing back: the
    cooldown still stops a second SMS."""

    def record_fails(*args, **kwargs):
        raise DatabaseError("the database went away")

    with monkeypatch.context() as patched:
        patched.setattr(verification._sending, "_record", record_fails)
        with pytest.raises(DatabaseError):
            verification.send_code(NUMBER)
    assert len(locmem.outbox) == 1
    with pytest.raises(ResendTooSoon):
        verification.send_code(NUMBER)
    assert len(locmem.outbox) == 1


def test_a_failed_check_consumes_no_attempt_and_no_wrong_code_slot(settings):
    # "textflow" mode only: in "local" mode a check never calls TextFlow.
    tf(settings, VERIFY_MODE="textflow", FAILED_CHECK_LIMITS={"ip": ["1/h"]})
    handle = verification.send_code(NUMBER).verification_id
    locmem.fail_next(TextFlowTimeout("slow"))
    with pytest.raises(SMSProviderUnavailable):
        verification.check_code(NUMBER, last_code(), request=request_from(), verification_id=handle)
    row = PhoneVerification.objects.get()
    assert (row.status, row.attempts) == ("pending", 0)
    verification.check_code(NUMBER, last_code(), request=request_from(), verification_id=handle)
    # Neither the failed check nor the right code kept the slot each took: one is left.
    with pytest.raises(InvalidCode):
        verification.check_code(OTHER, "1234", request=request_from())
    with pytest.raises(RateLimited):
        verification.check_code(OTHER, "1234", request=request_from())


@pytest.mark.parametrize("mode", ["textflow", "local"])
def test_textflow_rejecting_the_number_is_a_phone_error(settings, textflow_live, mode):
    tf(settings, VERIFY_MODE=mode)
    textflow_live.fault(
        "respond",
        path=SEND_PATH[mode],
        status=400,
        body='{"ok": false, "status": 400, "message": "Phone number is invalid"}',
    )
    with pytest.raises(InvalidPhoneNumberError):
        verification.send_code(NUMBER)
    assert not PhoneVerification.objects.exists()
    verification.send_code(NUMBER)  # nothing consumed
    assert len(textflow_live.calls(SEND_PATH[mode])) == 2


# -- phone rules -----------------------------------------------------------------------------


def test_invalid_number_sends_nothing():
    with pytest.raises(InvalidPhoneNumberError):
        verification.send_code("not a number")
    assert locmem.outbox == []


@pytest.mark.parametrize("mode", ["textflow", "local"])
def test_country_rules(settings, mode):
    tf(settings, ALLOWED_COUNTRIES=["GB"], VERIFY_MODE=mode)
    with pytest.raises(CountryNotAllowed) as info:
        verification.send_code(NUMBER)
    assert info.value.code == "country_not_allowed"
    tf(settings, ALLOWED_COUNTRIES=None, BLOCKED_COUNTRIES=["US"])
    with pytest.raises(CountryNotAllowed):
        verification.send_code(NUMBER)
    assert locmem.outbox == []


# -- concurrency (PostgreSQL) -----------------------------------------------------------------


@requires_postgres
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("mode", ["textflow", "local"])
def test_twenty_parallel_right_codes_verify_once(settings, record, textflow_live, mode):
    tf(settings, VERIFY_MODE=mode)
    verified = record(signals.phone_verified)
    verification.send_code(NUMBER)
    code = textflow_live.last_code(NUMBER) if mode == "textflow" else None
    if code is None:
        code = next(m.text.rsplit(" ", 1)[-1] for m in textflow_live.messages)
    results = race(lambda: verification.check_code(NUMBER, code))
    successes = [r for r in results if isinstance(r, verification.Verified)]
    assert len(successes) == 1
    # The others lost the race: the row was verified under them, or every attempt was in
    # flight when they came (attempts are spent before they are tried).
    others = [r for r in results if r not in successes]
    assert all(isinstance(r, VerificationExpired | TooManyAttempts) for r in others), others
    assert len(verified.calls) == 1
    row = PhoneVerification.objects.get()
    assert (row.status, row.attempts) == ("verified", 0)  # every right-code attempt refunded


def use_store(settings, store: str) -> None:
    """The rate-limit store a race runs against: the database, or Redis (cleared first:
    Redis outlives each test's database rollback)."""
    if store == "cache-redis":
        from django.core.cache import caches

        caches["redis"].clear()
        tf(settings, RATELIMIT_STORE="cache", RATELIMIT_CACHE="redis")
    else:
        tf(settings, RATELIMIT_STORE="database")


@requires_postgres
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("mode", ["textflow", "local"])
@pytest.mark.parametrize("store", ["database", pytest.param("cache-redis", marks=requires_redis)])
def test_twenty_parallel_sends_send_one_sms(settings, textflow_live, store, mode):
    use_store(settings, store)
    tf(settings, VERIFY_MODE=mode)
    results = race(lambda: verification.send_code(NUMBER))
    assert sum(isinstance(r, verification.CodeSent) for r in results) == 1
    assert all(
        isinstance(r, ResendTooSoon) for r in results if not isinstance(r, verification.CodeSent)
    )
    assert len(textflow_live.calls(SEND_PATH[mode])) == 1
    assert len(textflow_live.messages) == 1


@requires_postgres
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("mode", ["textflow", "local"])
@pytest.mark.parametrize("store", ["database", pytest.param("cache-redis", marks=requires_redis)])
def test_twenty_parallel_wrong_codes_check_no_more_than_the_cap(settings, store, mode):
    """Reserve, then check: each wrong code takes its slot of the caller's cap before it is
    compared, so 20 parallel guesses from one address get exactly the cap's 5 answers, and
    the other 15 are refused without being compared."""
    use_store(settings, store)
    tf(settings, VERIFY_MODE=mode, MAX_ATTEMPTS=100, FAILED_CHECK_LIMITS={"ip": ("5/h",)})
    owner = Browser("198.51.100.77")
    owner.send(NUMBER)
    wrong = wrong_code(last_code())

    def guess() -> verification.Verified:
        request = owner.request()  # the session that asked: each guess reaches the code
        return verification.check_code(NUMBER, wrong, request=request)

    results = race(guess)
    answers = Counter(type(r).__name__ for r in results)
    assert answers == {"InvalidCode": 5, "RateLimited": 15}, results
    # Only the compared ones were counted on the verification.
    assert PhoneVerification.objects.get().attempts == 5


@requires_postgres
@pytest.mark.django_db(transaction=True)
def test_parallel_sends_without_cooldown_leave_only_the_newest_code_pending(
    settings, textflow_live
):
    # Each send INSERTs its row, then supersedes the older ones, with no transaction around
    # the two: whatever the interleaving, the newest row stays pending and is the one checked;
    # no send supersedes a newer one. (An older row whose INSERT was not yet visible to the
    # newer send's UPDATE may stay pending, and is never checked.) TextFlow's mode: the
    # emulator's last code for the number is the code of the newest send it answered.
    tf(settings, VERIFY_MODE="textflow", RESEND_COOLDOWN=0, SEND_LIMITS={})
    results = race(lambda: verification.send_code(NUMBER), n=10)
    assert all(isinstance(r, verification.CodeSent) for r in results)
    rows = list(PhoneVerification.objects.order_by("id").values_list("status", flat=True))
    assert len(rows) == 10 and rows[-1] == "pending"
    assert set(rows[:-1]) <= {"superseded", "pending"}
    verification.check_code(NUMBER, textflow_live.last_code(NUMBER))
    statuses = list(PhoneVerification.objects.order_by("id").values_list("status", flat=True))
    assert statuses[-1] == "verified" and "verified" not in statuses[:-1]


# -- a refusal by TextFlow that the user cannot fix ------------------------------------------


def _no_credit(settings, emulator) -> None:
    emulator.credits = 0


def _forbidden(settings, emulator) -> None:
    body = '{"ok": false, "status": 403, "message": "Forbidden"}'
    emulator.fault("respond", status=403, body=body)


def _wrong_key(settings, emulator) -> None:
    tf(settings, API_KEY="x" * 64)


@pytest.mark.parametrize(
    ("refuse", "kind", "status"),
    [
        (_no_credit, "InsufficientBalance", 400),
        (_forbidden, "TextFlowAPIError", 403),
        (_wrong_key, "InvalidAPIKey", 404),
    ],
    ids=["no-credit", "forbidden", "wrong-key"],
)
@pytest.mark.parametrize("mode", ["textflow", "local"])
def test_a_refusal_the_user_cannot_fix_is_a_provider_error_and_consumes_nothing(
    settings, textflow_live, caplog, refuse, kind, status, mode
):
    tf(settings, VERIFY_MODE=mode, RESEND_COOLDOWN=60, SEND_LIMITS={"number": ["1/h"]})
    path = SEND_PATH[mode]
    refuse(settings, textflow_live)
    with pytest.raises(SMSProviderError) as info:
        verification.send_code(NUMBER)
    assert type(info.value) is SMSProviderError  # not "unavailable": retrying will not help
    assert info.value.status_code == 502
    assert info.value.extra == {}  # nothing went out: no code may arrive
    assert not PhoneVerification.objects.exists()
    [logged] = [r.getMessage() for r in caplog.records if "send_code.refused" in r.getMessage()]
    # The mask keeps the calling code and the last two digits only.
    assert logged == (
        "textflow.send_code.refused reason=sms_provider_error number=+1********43 "
        f"error={kind} status={status} maybe_sent=False"
    )
    [failed] = [r.getMessage() for r in caplog.records if "api.failed" in r.getMessage()]
    assert failed.startswith(f"textflow.api.failed operation={path[1:].replace('-', '_')} ")

    # Fixed (credit bought, key corrected): the cooldown and the cap were not taken.
    textflow_live.reset()
    tf(settings, API_KEY=EMULATOR_API_KEY)
    assert verification.send_code(NUMBER).phone_number == NUMBER
    assert len(textflow_live.calls(path)) == 1


def test_a_refused_check_is_a_provider_error_and_counts_no_attempt(settings, textflow_live):
    tf(settings, VERIFY_MODE="textflow")
    verification.send_code(NUMBER)
    code = textflow_live.last_code(NUMBER)
    body = '{"ok": false, "status": 403, "message": "Forbidden"}'
    textflow_live.fault("respond", path="/verify-code", status=403, body=body)
    with pytest.raises(SMSProviderError):
        verification.check_code(NUMBER, code)
    row = PhoneVerification.objects.get()
    assert (row.status, row.attempts) == ("pending", 0)
    assert verification.check_code(NUMBER, code).phone_number == NUMBER
