"""The verification service: every rule, in both modes, through the locmem backend and the
emulator. No log record of these tests may contain a code or the API key."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pytest
from django.contrib.auth import get_user_model
from django.core import signing
from django.db import DatabaseError
from django.test import RequestFactory
from django.utils import timezone

from textflow_django import signals, verification
from textflow_django.backends import locmem
from textflow_django.exceptions import (
    CountryNotAllowed,
    InvalidCode,
    InvalidToken,
    RateLimited,
    ResendTooSoon,
    SMSProviderError,
    SMSProviderUnavailable,
    TextFlowServerError,
    TextFlowTimeout,
    TooManyAttempts,
    VerificationExpired,
)
from textflow_django.models import PhoneVerification
from textflow_django.phone import InvalidPhoneNumberError
from textflow_django.testing import EMULATOR_API_KEY
from textflow_django.verification import tokens

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


def request_from(ip: str = "203.0.113.7", xff: str | None = None):
    extra = {"REMOTE_ADDR": ip}
    if xff:
        extra["HTTP_X_FORWARDED_FOR"] = xff
    return RequestFactory().post("/", **extra)


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
    verification.send_code(NUMBER)
    code = last_code()
    verification.check_code(NUMBER, code)
    with pytest.raises(VerificationExpired):
        verification.check_code(NUMBER, code)


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
    tf(settings, MAX_ATTEMPTS=2)
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


# -- cooldown and caps -------------------------------------------------------------------------


def test_resend_cooldown(settings, limit_store):
    verification.send_code(NUMBER)
    with pytest.raises(ResendTooSoon) as info:
        verification.send_code(NUMBER)
    assert 1 <= info.value.retry_after <= 30
    assert info.value.status_code == 429
    assert len(locmem.outbox) == 1
    verification.send_code(OTHER)  # other numbers are not affected
    assert len(locmem.outbox) == 2


def test_send_cap_per_number(settings, limit_store):
    tf(settings, RESEND_COOLDOWN=0, SEND_LIMITS={"number": ["2/h"]})
    verification.send_code(NUMBER)
    verification.send_code(NUMBER)
    with pytest.raises(RateLimited) as info:
        verification.send_code(NUMBER)
    assert info.value.retry_after >= 1
    assert len(locmem.outbox) == 2


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


def test_failed_check_cap_per_ip_spans_numbers(settings, limit_store):
    tf(settings, RESEND_COOLDOWN=0, FAILED_CHECK_LIMITS={"ip": ["2/h"]})
    for number in (NUMBER, OTHER):
        verification.send_code(number)
        with pytest.raises(InvalidCode):
            verification.check_code(number, "0000000", request=request_from())
    with pytest.raises(RateLimited):
        verification.check_code(NUMBER, "0000000", request=request_from())


# -- TextFlow failures consume nothing ---------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (TextFlowServerError("down", status=500), SMSProviderError),
        (TextFlowTimeout("slow"), SMSProviderUnavailable),
    ],
)
def test_a_failed_send_consumes_nothing(settings, limit_store, error, expected):
    tf(settings, SEND_LIMITS={"number": ["1/h"], "ip": ["1/h"]})
    verification.send_code(OTHER)  # an earlier, live verification of another number
    tf(settings, SEND_LIMITS={"number": ["1/h"], "ip": ["1/h"]}, RESEND_COOLDOWN=30)
    locmem.fail_next(error)
    with pytest.raises(expected):
        verification.send_code(NUMBER, request=request_from("198.51.100.1"))
    assert not PhoneVerification.objects.filter(phone_number=NUMBER).exists()
    # Cooldown, per-number and per-IP caps are all untouched: the retry goes through at once.
    sent = verification.send_code(NUMBER, request=request_from("198.51.100.1"))
    assert sent.phone_number == NUMBER


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


def test_a_failed_check_consumes_no_attempt(settings):
    # "textflow" mode only: in "local" mode a check never calls TextFlow.
    verification.send_code(NUMBER)
    locmem.fail_next(TextFlowTimeout("slow"))
    with pytest.raises(SMSProviderUnavailable):
        verification.check_code(NUMBER, last_code())
    row = PhoneVerification.objects.get()
    assert (row.status, row.attempts) == ("pending", 0)
    verification.check_code(NUMBER, last_code())


def test_textflow_rejecting_the_number_is_a_phone_error(settings, textflow_live):
    textflow_live.fault(
        "respond",
        path="/send-code",
        status=400,
        body='{"ok": false, "status": 400, "message": "Phone number is invalid"}',
    )
    with pytest.raises(InvalidPhoneNumberError):
        verification.send_code(NUMBER)
    verification.send_code(NUMBER)  # nothing consumed


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


# -- tokens ----------------------------------------------------------------------------------


def test_tokens_are_tamper_proof_and_expire(settings):
    verification.send_code(NUMBER)
    token = verification.check_code(NUMBER, last_code()).token
    assert verification.phone_from_token(token) == NUMBER
    for bad in [token[:-2] + "xx", "", "x" * 2000, None]:
        with pytest.raises(InvalidToken):
            verification.phone_from_token(bad)
    with pytest.raises(InvalidToken):
        verification.phone_from_token(token, max_age=-1)


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


@requires_postgres
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("store", ["database", pytest.param("cache-redis", marks=requires_redis)])
def test_twenty_parallel_sends_send_one_sms(settings, textflow_live, store):
    if store == "cache-redis":
        from django.core.cache import caches

        caches["redis"].clear()  # Redis outlives each test's database rollback
        tf(settings, RATELIMIT_STORE="cache", RATELIMIT_CACHE="redis")
    results = race(lambda: verification.send_code(NUMBER))
    assert sum(isinstance(r, verification.CodeSent) for r in results) == 1
    assert all(
        isinstance(r, ResendTooSoon) for r in results if not isinstance(r, verification.CodeSent)
    )
    assert len(textflow_live.calls("/send-code")) == 1


@requires_postgres
@pytest.mark.django_db(transaction=True)
def test_parallel_sends_without_cooldown_leave_only_the_newest_code_pending(
    settings, textflow_live
):
    # Each send INSERTs its row, then supersedes the older ones, with no transaction around
    # the two: whatever the interleaving, the newest row stays pending and is the one checked;
    # no send supersedes a newer one. (An older row whose INSERT was not yet visible to the
    # newer send's UPDATE may stay pending, and is never checked.)
    tf(settings, RESEND_COOLDOWN=0, SEND_LIMITS={})
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
        (_wrong_key, "InvalidAPIKey", 400),
    ],
    ids=["no-credit", "forbidden", "wrong-key"],
)
def test_a_refusal_the_user_cannot_fix_is_a_provider_error_and_consumes_nothing(
    settings, textflow_live, caplog, refuse, kind, status
):
    tf(settings, RESEND_COOLDOWN=60, SEND_LIMITS={"number": ["1/h"]})
    refuse(settings, textflow_live)
    with pytest.raises(SMSProviderError) as info:
        verification.send_code(NUMBER)
    assert type(info.value) is SMSProviderError  # not "unavailable": retrying will not help
    assert info.value.status_code == 502
    assert not PhoneVerification.objects.exists()
    [logged] = [r.getMessage() for r in caplog.records if r.name == "textflow_django"]
    assert logged.startswith("TextFlow send for +1202***43 failed: TextFlow /send-code: ")
    assert logged.endswith(f"(HTTP {status}) ({kind}, maybe_sent=False)")

    # Fixed (credit bought, key corrected): the cooldown and the cap were not taken.
    textflow_live.reset()
    tf(settings, API_KEY=EMULATOR_API_KEY)
    assert verification.send_code(NUMBER).phone_number == NUMBER
    assert len(textflow_live.calls("/send-code")) == 1


def test_a_refused_check_is_a_provider_error_and_counts_no_attempt(settings, textflow_live):
    verification.send_code(NUMBER)
    code = textflow_live.last_code(NUMBER)
    body = '{"ok": false, "status": 403, "message": "Forbidden"}'
    textflow_live.fault("respond", path="/verify-code", status=403, body=body)
    with pytest.raises(SMSProviderError):
        verification.check_code(NUMBER, code)
    row = PhoneVerification.objects.get()
    assert (row.status, row.attempts) == ("pending", 0)
    assert verification.check_code(NUMBER, code).phone_number == NUMBER


# -- tokens of another shape ---------------------------------------------------------------


@pytest.mark.parametrize(
    "payload",
    [{"v": 1}, {"p": 12025550143, "v": 1}, ["+12025550143"], "+12025550143"],
    ids=["no-number", "number-not-a-string", "a-list", "a-bare-string"],
)
def test_a_genuinely_signed_token_without_a_number_is_invalid(payload):
    # Signed with our key and salt (a token format of another release, say), but carrying
    # no number: refused, not answered with whatever the payload holds.
    token = signing.dumps(payload, salt=tokens._TOKEN_SALT)
    assert signing.loads(token, salt=tokens._TOKEN_SALT) == payload  # the signature is good
    with pytest.raises(InvalidToken):
        verification.phone_from_token(token)
