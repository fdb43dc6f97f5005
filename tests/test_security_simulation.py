"""Issue 11's attacker, simulated on the real API with a clock the test moves: the guessing odds
and the longest lockout at the shipped defaults, printed, and the bounds asserted.

The rate-limit store runs on a fake clock (days pass in milliseconds); each simulated request
comes from its own address in its own network, as a botnet's would. Run with ``-s`` to read
the figures (the closing note and the README quote them).
"""

from __future__ import annotations

import re

import pytest
from rest_framework.test import APIClient

from textflow_django import ratelimit, signals
from textflow_django.backends import locmem
from textflow_django.conf import DEFAULTS, conf
from textflow_django.models import PhoneVerification
from textflow_django.ratelimit import DatabaseStore
from textflow_django.verification.odds import DAY, codes_per_day, guess_chance

pytestmark = pytest.mark.django_db

OWNER = "+12025550143"
SEND = "/api/phone/send-code/"
VERIFY = "/api/phone/verify-code/"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0  # a fixed moment, not the wall clock

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(settings, monkeypatch):  # type: ignore[no-untyped-def]
    """The shipped rules (no test overrides), locmem delivery, a database store on a fake
    clock."""
    settings.TEXTFLOW = {"BACKEND": "textflow_django.backends.locmem.LocMemBackend"}
    fake = FakeClock()
    monkeypatch.setattr(ratelimit, "get_store", lambda: DatabaseStore(clock=fake))
    locmem.reset()
    return fake


def stranger(n: int) -> APIClient:
    """Client number ``n`` of a botnet: its own IPv4 address in its own /24."""
    return APIClient(REMOTE_ADDR=f"10.{n // 250 % 250}.{n % 250}.7")


def code_sent_to(number: str) -> str:
    message = [m for m in locmem.outbox if m.phone_number == number][-1]
    found = re.search(r"([0-9]{6,10})$", message.text)
    assert found is not None
    return found.group(1)


def test_the_defaults_are_local_six_digit_codes_and_no_per_number_check_cap():
    assert DEFAULTS["VERIFY_MODE"] == "local" and DEFAULTS["CODE_LENGTH"] == 6
    assert "number" not in DEFAULTS["FAILED_CHECK_LIMITS"]


def test_strangers_guesses_never_lock_the_owner_out(clock):
    owner = APIClient(REMOTE_ADDR="198.51.100.5")
    sent = owner.post(SEND, {"phone_number": OWNER}, format="json")
    assert sent.status_code == 200, sent.content
    handle = sent.json()["verification_id"]
    code = code_sent_to(OWNER)
    wrong = f"{(int(code) + 1) % 10**6:06d}"
    # 400 strangers, 3 wrong codes each (1,200 guesses), with no handle of the owner's code:
    # each is answered as a wrong code, and none reaches the owner's verification.
    answers = set()
    for n in range(400):
        client = stranger(n)
        for _ in range(3):
            response = client.post(VERIFY, {"phone_number": OWNER, "code": wrong}, format="json")
            answers.add((response.status_code, response.json()["code"]))
    assert answers == {(400, "invalid_code")}
    row = PhoneVerification.objects.get()
    assert (row.status, row.attempts) == ("pending", 0)
    # A stranger who guesses the very code still has no code to check.
    guessed = stranger(999).post(VERIFY, {"phone_number": OWNER, "code": code}, format="json")
    assert guessed.status_code == 400 and guessed.json()["code"] == "invalid_code"
    # The owner's right code verifies.
    done = owner.post(
        VERIFY, {"phone_number": OWNER, "code": code, "verification_id": handle}, format="json"
    )
    assert done.status_code == 200, done.content
    assert done.json()["verified"] is True


def test_guessing_a_numbers_code_stays_below_one_in_ten_thousand_a_day(clock, capsys):
    """The attacker's best play: make the site text codes to the number (each gives it a
    handle) and spend every attempt of each, day after day, from fresh addresses."""
    reached = []  # guesses compared against a real code of the owner's number
    signals.verification_failed.connect(
        receiver := lambda sender, reason, verification, **kw: (
            reached.append(reason)
            if verification is not None and reason == "invalid_code"
            else None
        ),
        weak=False,
    )
    days, per_day = 3, []
    try:
        n = 0
        for _day in range(days):
            before = len(reached)
            for _ in range(40):  # far more sends than the caps allow
                n += 1
                client = stranger(n)
                sent = client.post(SEND, {"phone_number": OWNER}, format="json")
                if sent.status_code == 200:
                    handle = sent.json()["verification_id"]
                    for guess in range(10):  # more guesses than MAX_ATTEMPTS
                        client.post(
                            VERIFY,
                            {
                                "phone_number": OWNER,
                                "code": f"{guess:06d}",
                                "verification_id": handle,
                            },
                            format="json",
                        )
                clock.now += DAY / 40  # spread over the day, as a patient attacker would
            per_day.append(len(reached) - before)
    finally:
        signals.verification_failed.disconnect(receiver)
    codes = codes_per_day(conf.SEND_LIMITS["number"])
    attempts = conf.MAX_ATTEMPTS
    daily = guess_chance(conf.CODE_LENGTH)
    assert codes == 20 and attempts == 5 and daily is not None
    with capsys.disabled():
        print(
            f"\nguessing at the defaults: at most {codes} codes in any 24 h x {attempts} "
            f"attempts = {codes * attempts} guesses a day reach a number's codes (simulated, "
            f"per day: {per_day}); "
            f"chance of a right guess <= {daily:.4%} a day, "
            f"{1 - (1 - daily) ** 365:.2%} a year"
        )
    assert max(per_day) <= codes * attempts
    assert daily <= 1e-4


def test_a_stranger_spending_the_numbers_sends_makes_the_owner_wait_a_bounded_time(clock, capsys):
    """What a stranger can still do: spend the number's send cap, texting codes to the owner.
    An owner arriving at the worst moment of a day of that waits the longest refusal's
    Retry-After (the refusals are by the number's cap, which the owner shares); the wait is
    bounded, logged and signalled, and the owner then gets a code."""
    limited = []
    signals.rate_limited.connect(receiver := lambda sender, **kw: limited.append(kw), weak=False)
    try:
        n = spent = 0
        longest = 0
        start = clock.now
        while clock.now < start + DAY:  # a day of spending every send the caps free
            n += 1
            sent = stranger(n).post(SEND, {"phone_number": OWNER}, format="json")
            if sent.status_code == 200:
                spent += 1
                clock.now += 31  # the resend cooldown
            else:
                assert (sent.status_code, sent.json()["code"]) == (429, "rate_limited")
                wait = int(sent["Retry-After"])
                longest = max(longest, wait)
                clock.now += wait
        owner = APIClient(REMOTE_ADDR="198.51.100.5")
        assert owner.post(SEND, {"phone_number": OWNER}, format="json").status_code == 200
    finally:
        signals.rate_limited.disconnect(receiver)
    with capsys.disabled():
        print(
            f"\nlockout at the defaults: a stranger spending every send the caps free for a "
            f"day got {spent} codes texted to the owner; an owner arriving at the worst moment "
            f"waited {longest / 3600:.1f} h"
        )
    assert limited and all(kw["action"] == "send" for kw in limited)
    assert all("number" in kw["scopes"] for kw in limited)
    assert 0 < longest <= DAY
