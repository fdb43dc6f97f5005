"""The Fraud Guard (issue 13): budgets, the prefix and country judgement, the grace period,
blocks and their expiry, the allow list, the new-country cap, the signal and the log line,
on the database and Redis stores, in both verify modes, and a pumping attack through the
emulator's HTTP path end to end.

Finding: caps per number, address and network let an attacker with 1,000 addresses and
5,000 numbers in one range get thousands of SMS an hour past them. Each test below fails on
the product before the guard (no block, no budget, no new-country cap).

Time is simulated: the rate-limit store reads a fake clock, and ``timezone.now`` (which
stamps the verification rows the guard judges) reads the same clock.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from django.core.cache import caches
from django.utils import timezone
from rest_framework.test import APIClient

from textflow_django import fraud, signals, verification
from textflow_django.backends import locmem
from textflow_django.exceptions import DestinationBlocked, RateLimited
from textflow_django.forms import SendCodeForm
from textflow_django.models import FraudAllowedPrefix, FraudBlock, PhoneVerification
from textflow_django.ratelimit import DatabaseStore, RateLimitStore, RedisCacheStore

from .conftest import requires_redis
from .test_ratelimit import T0, FakeClock

pytestmark = [pytest.mark.django_db]

PREFIX = "+1202555"
SEND = "/api/phone/send-code/"
VERIFY = "/api/phone/verify-code/"
#: The guard's defaults, spelled out: what the thresholds below count against.
MIN_SENDS, GRACE, WINDOW = 20, 300, 3600


def number(i: int, prefix: str = PREFIX) -> str:
    """The ``i``-th number of a prefix (valid US numbers for the default prefix)."""
    return f"{prefix}{i:04d}"


@pytest.fixture(params=["database", pytest.param("redis", marks=requires_redis)])
def store(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, settings: Any
) -> Iterator[RateLimitStore]:
    """The service's store on a fake clock that ``timezone.now`` reads too."""
    clock = FakeClock(T0)
    monkeypatch.setattr(timezone, "now", lambda: dt.datetime.fromtimestamp(clock(), tz=dt.UTC))
    made: RateLimitStore
    if request.param == "redis":
        caches["redis"].clear()
        settings.TEXTFLOW = {**settings.TEXTFLOW, "RATELIMIT_STORE": "cache"}
        made = RedisCacheStore("redis", clock=clock)
    else:
        made = DatabaseStore(clock=clock)
    monkeypatch.setattr("textflow_django.ratelimit.get_store", lambda: made)
    # The site has verified US numbers before: the new-country cap has its own tests.
    made.hold(fraud.known_key("US"), fraud.KNOWN_SECONDS)
    yield made
    if request.param == "redis":
        caches["redis"].clear()


def advance(store: RateLimitStore, seconds: float) -> None:
    store.clock.advance(seconds)  # type: ignore[attr-defined]


@pytest.fixture
def blocked() -> Iterator[list[FraudBlock]]:
    """Every ``destination_blocked`` signal's block."""
    seen: list[FraudBlock] = []
    signals.destination_blocked.connect(
        lambda block, **kw: seen.append(block), weak=False, dispatch_uid="test-fraud"
    )
    yield seen
    signals.destination_blocked.disconnect(dispatch_uid="test-fraud")


def send(i: int, prefix: str = PREFIX) -> Any:
    """A site's own send to the ``i``-th number of ``prefix``: the code or the refusal."""
    try:
        return verification.send_code(number(i, prefix))
    except (DestinationBlocked, RateLimited) as err:
        return err


def verify_last(phone_number: str) -> None:
    code = next(m for m in reversed(locmem.outbox) if m.phone_number == phone_number).text.split()[
        -1
    ]
    verification.check_code(phone_number, code)


# -- the prefix -----------------------------------------------------------------------


def test_a_prefix_whose_codes_are_not_used_is_blocked(
    store: RateLimitStore, sms_outbox: Any, blocked: list[FraudBlock], caplog: Any
) -> None:
    caplog.set_level(logging.WARNING, logger="textflow_django")
    for i in range(MIN_SENDS):  # a burst in one grace period: the most the guard lets pile up
        assert not isinstance(send(i), Exception)
        advance(store, 10)
    # One more in the same grace period: the prefix's cap holds it, and nothing is old
    # enough to judge yet.
    refused = send(MIN_SENDS)
    assert isinstance(refused, RateLimited)
    assert FraudBlock.objects.count() == 0
    advance(store, GRACE + 60)  # now every code of the burst is old enough to judge
    answers = [send(100 + i) for i in range(5)]
    # The fifth code of the new grace period calls for a judgement: 20 codes, none used.
    assert [isinstance(a, DestinationBlocked) for a in answers] == [False] * 4 + [True]
    assert len(sms_outbox) == MIN_SENDS + 4
    [block] = FraudBlock.objects.all()
    assert (block.scope, block.value, block.sends, block.conversions) == ("prefix", PREFIX, 20, 0)
    assert block.until == timezone.now() + dt.timedelta(seconds=86400)
    assert blocked == [block]
    [line] = [r.getMessage() for r in caplog.records if "fraud.blocked" in r.getMessage()]
    assert line == (
        f"textflow.fraud.blocked scope=prefix value={PREFIX} seconds=86400 sends=20 verified=0"
    )
    assert number(0) not in line
    # Blocked: nothing is sent, to any number of the prefix; other prefixes are not touched.
    assert isinstance(send(999), DestinationBlocked)
    assert not isinstance(send(0, "+1202556"), Exception)
    assert len(sms_outbox) == MIN_SENDS + 5


def test_codes_in_their_grace_period_are_not_judged(store: RateLimitStore, sms_outbox: Any) -> None:
    for i in range(MIN_SENDS):
        send(i)
    advance(store, GRACE - 1)  # the burst's last code is young yet
    fraud_block = fraud.judge_prefix(PREFIX, fraud_settings(), store, store.clock())
    assert fraud_block is None
    advance(store, 1 + 2 * GRACE)
    assert fraud.judge_prefix(PREFIX, fraud_settings(), store, store.clock()) is not None


def fraud_settings() -> Any:
    from textflow_django.conf import conf

    return conf.FRAUD_GUARD


@pytest.mark.parametrize(("used", "blocks"), [(4, False), (3, True)])
def test_enough_used_codes_keep_a_prefix_open(
    store: RateLimitStore, sms_outbox: Any, used: int, blocks: bool
) -> None:
    """MIN_CONVERSION 0.2: 4 codes of 20 used (20 %) keep it open, 3 (15 %) do not."""
    for i in range(MIN_SENDS):
        send(i)
        if i < used:
            verify_last(number(i))
    advance(store, GRACE + 1)
    made = fraud.judge_prefix(PREFIX, fraud_settings(), store, store.clock())
    assert (made is not None) == blocks
    assert PhoneVerification.objects.filter(status="verified").count() == used


def test_too_few_codes_are_not_judged(store: RateLimitStore, sms_outbox: Any) -> None:
    for i in range(MIN_SENDS - 1):
        send(i)
    advance(store, GRACE + 1)
    assert fraud.judge_prefix(PREFIX, fraud_settings(), store, store.clock()) is None


def test_a_block_ends_after_block_seconds_and_costs_nothing_meanwhile(
    settings: Any, store: RateLimitStore, sms_outbox: Any
) -> None:
    settings.TEXTFLOW = {**settings.TEXTFLOW, "FRAUD_GUARD": {"BLOCK_SECONDS": 3600}}
    for i in range(MIN_SENDS):
        send(i)
    advance(store, GRACE + 1)
    assert fraud.judge_prefix(PREFIX, fraud_settings(), store, store.clock()) is not None
    for _ in range(3):  # refused: no cooldown, no cap spent by the refusals
        assert isinstance(send(50), DestinationBlocked)
    advance(store, 3599)
    assert isinstance(send(50), DestinationBlocked)
    advance(store, 1)
    assert not isinstance(send(50), Exception)


def test_lifting_a_block_lets_codes_through_at_once(store: RateLimitStore, sms_outbox: Any) -> None:
    for i in range(MIN_SENDS):
        send(i)
    advance(store, GRACE + 1)
    block = fraud.judge_prefix(PREFIX, fraud_settings(), store, store.clock())
    assert block is not None and isinstance(send(50), DestinationBlocked)
    fraud.lift(block, store, store.clock())
    block.refresh_from_db()
    assert block.lifted_at == timezone.now()
    # The prefix's grace-period cap still counts the burst for a while; then the codes
    # go, and the guard does not block again on the evidence a person judged.
    advance(store, GRACE)
    answers = [send(50 + i) for i in range(2 * MIN_SENDS // 4)]
    assert not [a for a in answers if isinstance(a, Exception)]
    assert FraudBlock.objects.count() == 1


# -- the allow list -----------------------------------------------------------------------


def test_allow_prefixes_are_never_blocked_nor_slowed(
    settings: Any, store: RateLimitStore, sms_outbox: Any
) -> None:
    settings.TEXTFLOW = {**settings.TEXTFLOW, "FRAUD_GUARD": {"ALLOW_PREFIXES": ["+120255"]}}
    answers = [send(i) for i in range(2 * MIN_SENDS)]  # past the prefix's cap
    assert not [a for a in answers if isinstance(a, Exception)]
    advance(store, GRACE + 1)
    assert fraud.judge_prefix(PREFIX, fraud_settings(), store, store.clock()) is None
    assert not isinstance(send(100), Exception)


def test_a_prefix_allowed_from_the_admin_is_lifted_and_not_slowed(
    store: RateLimitStore, sms_outbox: Any
) -> None:
    for i in range(MIN_SENDS):
        send(i)
    advance(store, GRACE + 1)
    block = fraud.judge_prefix(PREFIX, fraud_settings(), store, store.clock())
    assert block is not None
    fraud.allow_prefix(PREFIX, store, store.clock(), note="our call centre")
    assert FraudAllowedPrefix.objects.get().note == "our call centre"
    block.refresh_from_db()
    assert block.lifted_at is not None
    # Not judged again, and its grace-period cap does not hold it either.
    answers = [send(200 + i) for i in range(MIN_SENDS + 5)]
    assert not [a for a in answers if isinstance(a, Exception)]
    assert FraudBlock.objects.count() == 1


# -- the country --------------------------------------------------------------------------


def test_a_country_whose_codes_are_not_used_is_blocked(
    store: RateLimitStore, sms_outbox: Any
) -> None:
    """40 codes (2 x MIN_SENDS) over 40 prefixes, none used: no prefix has enough to judge,
    the country does."""
    for i in range(2 * MIN_SENDS):
        assert not isinstance(send(0, f"+1202{300 + i:03d}"), Exception)
    advance(store, GRACE + 1)
    answers = [send(0, f"+1212{300 + i:03d}") for i in range(MIN_SENDS)]
    # The country's 60th code calls for its judgement (every MIN_SENDS-th, from 40 on).
    assert isinstance(answers[-1], DestinationBlocked)
    assert not [a for a in answers[:-1] if isinstance(a, Exception)]
    block = FraudBlock.objects.get()
    assert (block.scope, block.value, block.sends, block.conversions) == ("country", "US", 40, 0)
    assert isinstance(send(0, "+1415555"), DestinationBlocked)


def test_a_country_with_used_codes_stays_open(store: RateLimitStore, sms_outbox: Any) -> None:
    for i in range(2 * MIN_SENDS):
        send(0, f"+1202{300 + i:03d}")
        if i % 4 == 0:  # 25 % used: over the country's 10 %
            verify_last(number(0, f"+1202{300 + i:03d}"))
    advance(store, GRACE + 1)
    assert fraud.judge_country("US", fraud_settings(), store, store.clock()) == []


def test_judging_a_country_finds_its_slow_bad_prefixes(
    store: RateLimitStore, sms_outbox: Any
) -> None:
    """A slow attack never crowds its prefix's grace period; the country's judgement sweeps
    its prefixes and finds it among good traffic."""
    for i in range(MIN_SENDS):
        send(i)  # the bad prefix: 20 codes, none used, one every 3 minutes
        send(0, f"+1212{300 + i:03d}")  # good traffic elsewhere: every code used
        verify_last(number(0, f"+1212{300 + i:03d}"))
        advance(store, 180)
    advance(store, GRACE)
    blocks = fraud.judge_country("US", fraud_settings(), store, store.clock())
    assert [(b.scope, b.value) for b in blocks] == [("prefix", PREFIX)]


# -- a country never verified in ------------------------------------------------------------


def test_a_new_country_gets_ten_codes_an_hour_until_a_number_verifies(
    store: RateLimitStore, sms_outbox: Any
) -> None:
    cuba = [f"+535{i:07d}" for i in range(12)]
    answers = []
    for phone_number in cuba:
        try:
            answers.append(verification.send_code(phone_number))
        except RateLimited as err:
            answers.append(err)
    assert [isinstance(a, RateLimited) for a in answers] == [False] * 10 + [True, True]
    verify_last(cuba[0])  # a number of the country verified: it is known for 30 days
    assert verification.send_code(cuba[11])
    advance(store, fraud.KNOWN_SECONDS - 1)
    assert verification.send_code("+5351234567")


def test_a_new_country_whose_codes_are_never_used_is_blocked_within_hours(
    store: RateLimitStore, sms_outbox: Any, blocked: list[FraudBlock]
) -> None:
    """Attack C of bench/pumping.py: a trickle to a country nobody verified in. The cap lets
    10 an hour through, too few to judge in WINDOW; its refusals judge the country over a
    day, which blocks it once 40 of its codes (2 x MIN_SENDS) went unused."""
    answers: list[Any] = []
    for hour in range(6):
        for i in range(15):  # 15 asked for, 10 an hour let through
            try:
                answers.append(verification.send_code(f"+535{hour:02d}{i:05d}"))
            except (DestinationBlocked, RateLimited) as err:
                answers.append(err)
            advance(store, 240)
    delivered = len(sms_outbox)
    assert 40 <= delivered <= 50  # caps alone: all 90; the cap alone: 60
    block = FraudBlock.objects.get()
    assert (block.scope, block.value, block.conversions) == ("country", "CU", 0)
    assert blocked == [block]
    assert isinstance(answers[-1], DestinationBlocked)


def test_refusals_judge_a_destination_at_most_every_judge_every_seconds() -> None:
    assert fraud.due("prefix", PREFIX, 1000.0)
    assert not fraud.due("prefix", PREFIX, 1000.0 + fraud.JUDGE_EVERY - 1)
    assert fraud.due("country", "US", 1001.0)  # each destination on its own
    assert fraud.due("prefix", PREFIX, 1000.0 + fraud.JUDGE_EVERY)


# -- the budgets ------------------------------------------------------------------------


def test_the_global_and_country_budgets_answer_429_with_retry_after(
    settings: Any, sms_outbox: Any
) -> None:
    limits = {**settings.TEXTFLOW.get("SEND_LIMITS", {}), "number": ("100/h",)}
    settings.TEXTFLOW = {
        **settings.TEXTFLOW,
        "SEND_LIMITS": {"global": ("3/h",), "country": ("2/h",), **limits},
        "FRAUD_GUARD": {"ENABLED": False},
    }
    api = APIClient()
    statuses = [
        api.post(SEND, {"phone_number": n}, format="json", REMOTE_ADDR=f"198.51.100.{i}")
        for i, n in enumerate(["+12025550100", "+12025550101", "+12025550102"])
    ]
    assert [r.status_code for r in statuses] == [200, 200, 429]  # the country's 2/h
    assert statuses[-1].json()["code"] == "rate_limited"
    assert int(statuses[-1]["Retry-After"]) > 0
    gb = api.post(SEND, {"phone_number": "+447911123456"}, format="json", REMOTE_ADDR="203.0.113.1")
    assert gb.status_code == 200
    other = api.post(
        SEND, {"phone_number": "+33612345678"}, format="json", REMOTE_ADDR="203.0.113.2"
    )
    assert other.status_code == 429  # the site's 3/h


# -- what a blocked user sees ------------------------------------------------------------------


def test_a_blocked_destination_is_403_in_the_api_and_a_field_error_in_forms(
    store: RateLimitStore, sms_outbox: Any
) -> None:
    store.hold(fraud.block_key("prefix", PREFIX), 600)
    response = APIClient().post(SEND, {"phone_number": number(1)}, format="json")
    assert response.status_code == 403
    assert response.json() == {
        "detail": "We cannot send codes to this number right now.",
        "code": "destination_blocked",
    }
    form = SendCodeForm(data={"phone_number": number(1)})
    assert form.send() is None
    assert form.errors == {"phone_number": ["We cannot send codes to this number right now."]}
    assert sms_outbox == []


# -- both modes, and the emulator's HTTP path end to end ----------------------------------------


@pytest.mark.parametrize("mode", ["local", "textflow"])
def test_a_pumping_attack_through_the_emulator_is_stopped(
    settings: Any, textflow_live: Any, store: RateLimitStore, mode: str
) -> None:
    """1,000 addresses, numbers of one prefix, none ever verified: the attack gets the
    codes of one grace period and a few more, then nothing; TextFlow is asked nothing more."""
    settings.TEXTFLOW = {**settings.TEXTFLOW, "VERIFY_MODE": mode}
    api = APIClient()
    statuses: list[int] = []
    for i in range(120):
        address = f"10.{i // 250}.{i % 250}.1"
        answer = api.post(SEND, {"phone_number": number(i)}, format="json", REMOTE_ADDR=address)
        statuses.append(answer.status_code)
        advance(store, 20)  # one request every 20 s: 40 minutes in all
    delivered = statuses.count(200)
    path = "/send-sms" if mode == "local" else "/send-code"
    assert len(textflow_live.calls(path)) == delivered
    assert delivered <= 2 * MIN_SENDS  # caps alone: all 120
    assert statuses[-1] == 403 and statuses.count(403) >= 60
    assert set(statuses) <= {200, 403, 429}


def test_the_same_attack_with_caps_alone_gets_every_code(
    settings: Any, textflow_live: Any, store: RateLimitStore
) -> None:
    """The finding, as the product stood before the guard: caps per number, address and
    network, no budgets, no guard: all 120 codes go out."""
    settings.TEXTFLOW = {
        **settings.TEXTFLOW,
        "FRAUD_GUARD": {"ENABLED": False},
        "SEND_LIMITS": {"number": ("5/h", "10/d"), "ip": ("20/h", "100/d"), "network": ("60/h",)},
    }
    api = APIClient()
    statuses = []
    for i in range(120):
        address = f"10.{i // 250}.{i % 250}.1"
        answer = api.post(SEND, {"phone_number": number(i)}, format="json", REMOTE_ADDR=address)
        statuses.append(answer.status_code)
        advance(store, 20)
    assert statuses == [200] * 120
    assert len(textflow_live.calls("/send-sms")) == 120


def test_a_judgement_that_fails_sends_nothing_and_spends_nothing(
    store: RateLimitStore, sms_outbox: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The database fails while the guard judges: 503 (LimitsUnavailable), no SMS, and the
    cooldown and caps the send took are given back."""
    from django.db import DatabaseError

    from textflow_django.exceptions import LimitsUnavailable

    for i in range(MIN_SENDS // 4 - 1):
        send(i)

    def failing(*args: Any, **kwargs: Any) -> None:
        raise DatabaseError("the database went away")

    with monkeypatch.context() as patch:
        patch.setattr("textflow_django.fraud._judge.judge_prefix", failing)
        with pytest.raises(LimitsUnavailable):
            verification.send_code(number(99))  # the prefix's 5th code calls for a judgement
    assert len(sms_outbox) == MIN_SENDS // 4 - 1
    assert verification.send_code(number(99))  # its cooldown was not spent
