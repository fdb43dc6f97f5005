"""SMS pumping simulation: one simulated day of legitimate users and four pumping attacks,
through the real service, with the Fraud Guard on and with the caps alone (issue 13, part 4).

Every request goes through ``textflow_django.verification.send_code`` (and, for the users
who enter their code, ``check_code``), with a ``RequestFactory`` request carrying the
client's address in ``REMOTE_ADDR`` (``NUM_PROXIES`` 0), the database rate-limit store and
the locmem backend (``VERIFY_MODE`` "local"): its outbox is what was delivered, and holds
the codes the users type. One injected clock drives it all: the store is a
``DatabaseStore(clock=...)`` patched in as ``textflow_django.ratelimit.get_store`` (the
guard judges with the store's clock), and ``django.utils.timezone.now`` is patched to read
the same clock (the verifications' ``created_at`` and ``expires_at``, a code's expiry).
Nothing sleeps: the clock jumps from one request to the next.

The day (``Scenario``; the defaults are the issue's figures):

- **legitimate**: 3,000 users across 20 countries (weighted like a site's audience; each
  country's numbers are valid mobile numbers that share the first 4 digits of
  ``phonenumbers``' example for it and vary in the rest, so they spread over hundreds of
  7-digit prefixes), each from an address (and a /24) of its own, at uniformly random
  moments of the day; 80 % enter the right code (read from the outbox) 20 to 120 s later,
  the rest never do. Before the day, one user per country verified (the site's history:
  its countries are not new to the guard).
- **A**: one address, 500 numbers in 20 countries the site has no user in (the issue's
  Cuba, Somalia, Tuvalu, North Korea, Iran...), one request every 173 s all day.
- **B**: 1,000 addresses, 5,000 numbers in one 7-digit prefix of a country with users
  (GB), as fast as the botnet likes: 2 requests a second from 09:00 (5 per address).
- **C**: 1,000 addresses, 1,000 numbers over 50 prefixes of a country the site has never
  verified in (UZ), spread over the whole day (a request every 86 s): the slow way past a
  new country's cap.
- **D**: B slow and low: 1,000 addresses, numbers of one prefix (in ID, a country with
  users), one request a minute all day (1,440).

Attackers never enter a code, and do not adapt: each sends its list whatever the answers.
Every botnet address is in a /24 of its own (a residential-proxy botnet), so the network
caps do not bunch them.

Two runs on the same traffic, each on an empty database (each runs inside a transaction
rolled back at its end; the script's database is SQLite in memory, migrated at start):

- **guard on**: the product's defaults (``SEND_LIMITS`` with its ``"global"`` and
  ``"country"`` budgets, ``FRAUD_GUARD`` as shipped);
- **caps alone**: the product before the guard: ``FRAUD_GUARD["ENABLED"]`` False and
  ``SEND_LIMITS`` without the ``"global"`` and ``"country"`` budgets.

What the simulation sets besides: ``BACKEND`` locmem, ``VERIFY_MODE`` "local" (both for
the outbox's codes) and ``NUM_PROXIES`` 0 (``REMOTE_ADDR`` is the client); nothing else.
The package's WARNING lines (one per refusal and per block) are silenced during a run: the
report counts them instead.

It prints per run: SMS delivered to each attack's numbers, its refusals, the attempts
before its first ``destination_blocked`` refusal, the legitimate users refused (overall,
per country, and in the countries no attack touched), and the guard's blocks; then the
targets (guard on): B <= 60 SMS, C <= 100, D <= 60 in the day, legitimate users refused
<= 1 % and none in a country no attack touched, each PASS or MISS. Exit status 1 on a MISS.

    python bench/pumping.py [--seed N] [--legit N] [--c-span SECONDS]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import heapq
import logging
import os
import random
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from unittest import mock

import phonenumbers

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

__all__ = [
    "ATTACKS",
    "CAPS_ALONE",
    "GUARD_ON",
    "Check",
    "Mode",
    "Request",
    "RunResult",
    "Scenario",
    "Traffic",
    "build_traffic",
    "checks",
    "main",
    "modes",
    "report",
    "simulate",
]

DAY = 86400
#: Midnight UTC of the simulated day (a Monday); any moment would do.
DAY_START = dt.datetime(2025, 6, 2, tzinfo=dt.UTC).timestamp()

#: The site's audience: 20 countries and their shares of its users.
LEGIT_COUNTRIES: dict[str, int] = {
    "US": 22,
    "IN": 10,
    "GB": 8,
    "DE": 6,
    "BR": 6,
    "FR": 5,
    "MX": 4,
    "ES": 4,
    "IT": 4,
    "CA": 4,
    "ID": 4,
    "PH": 4,
    "TR": 3,
    "AU": 3,
    "NL": 3,
    "PL": 3,
    "JP": 2,
    "KR": 2,
    "NG": 2,
    "ZA": 1,
}
#: Attack A's destinations: countries the site has no user in.
A_COUNTRIES = (
    "CU SO TV KP IR SY YE AF LY SD ER TJ TM KG MM LA KH NR KI TO".split()  # noqa: SIM905
)
B_COUNTRY = "GB"
C_COUNTRY = "UZ"
D_COUNTRY = "ID"
ATTACKS = ("A", "B", "C", "D")
GUARD_ON = "guard on"
CAPS_ALONE = "caps alone"
#: Digits of a legitimate number (country code included) kept from the country's example.
LEGIT_FIXED_DIGITS = 4

_MOBILE = (phonenumbers.PhoneNumberType.MOBILE, phonenumbers.PhoneNumberType.FIXED_LINE_OR_MOBILE)


@dataclass(frozen=True)
class Scenario:
    """The day's traffic, in numbers; the defaults are issue 13's."""

    seed: int = 13
    #: Seconds simulated (attacks "all day" run over all of it).
    day: int = DAY
    legit_users: int = 3000
    #: Share of legitimate users who enter their code.
    conversion: float = 0.8
    #: Attack A: numbers asked for from its one address, spread over the day.
    a_numbers: int = 500
    #: Attack B: numbers (one prefix), addresses, start (seconds into the day), rate (per s).
    b_numbers: int = 5000
    b_ips: int = 1000
    b_start: int = 9 * 3600
    b_rate: float = 2.0
    #: Attack C: requests (each a new number), addresses, prefixes, and the seconds from
    #: the day's start it spreads them over (None: the whole day).
    c_requests: int = 1000
    c_ips: int = 1000
    c_prefixes: int = 50
    c_span: int | None = None
    #: Attack D: addresses, the pool of numbers (one prefix), seconds between requests.
    d_ips: int = 1000
    d_numbers: int = 5000
    d_every: int = 60


@dataclass(frozen=True)
class Request:
    """One send-code request of the day. ``who`` is ``"legit"`` or an attack's letter;
    ``enter_after``: seconds after a delivered code its user enters it (None: never)."""

    at: float
    who: str
    number: str
    ip: str
    region: str
    enter_after: float | None = None


@dataclass(frozen=True)
class Traffic:
    """The day's requests in time order, and the site's history before it."""

    scenario: Scenario
    requests: list[Request]
    #: One verified user per legitimate country, two days before the day.
    history: list[Request]
    #: The countries each attack's numbers are in.
    touched: dict[str, frozenset[str]]

    @property
    def legit_countries(self) -> list[str]:
        return list(LEGIT_COUNTRIES)

    @property
    def untouched(self) -> list[str]:
        """Legitimate countries no attack sends to."""
        hit = frozenset().union(*self.touched.values())
        return [c for c in LEGIT_COUNTRIES if c not in hit]


class _Addresses:
    """Distinct public IPv4 addresses, each in a /24 of its own."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.networks: set[tuple[int, int, int]] = set()

    def __call__(self) -> str:
        while True:
            a = self.rng.randint(1, 223)
            b, c = self.rng.randint(0, 255), self.rng.randint(0, 255)
            if a in (10, 127, 100, 169, 172, 192, 198) or (a, b, c) in self.networks:
                continue  # private, loopback, CGNAT, link-local, test ranges: skip them all
            self.networks.add((a, b, c))
            return f"{a}.{b}.{c}.{self.rng.randint(1, 254)}"


class _Numbers:
    """Distinct valid mobile numbers (E.164), never the same one twice in a day."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.taken: set[str] = set()

    @staticmethod
    def example(region: str) -> str:
        """The digits (country code first) of ``phonenumbers``' example mobile number."""
        found = phonenumbers.example_number_for_type(region, phonenumbers.PhoneNumberType.MOBILE)
        assert found is not None, region
        return phonenumbers.format_number(found, phonenumbers.PhoneNumberFormat.E164)[1:]

    def draw(self, region: str, lead: str, count: int) -> list[str]:
        """``count`` numbers of ``region`` starting with the digits ``lead``, the rest random
        (as long as the example's); raises when the range has too few valid ones."""
        length = len(self.example(region))
        found: list[str] = []
        for _ in range(count * 200):
            if len(found) == count:
                return found
            digits = lead + "".join(
                self.rng.choice("0123456789") for _ in range(length - len(lead))
            )
            number = "+" + digits
            if number in self.taken or not _valid_mobile(number, region):
                continue
            self.taken.add(number)
            found.append(number)
        if len(found) < count:
            raise ValueError(f"only {len(found)} valid numbers in +{lead} ({region})")
        return found


def _valid_mobile(number: str, region: str) -> bool:
    parsed = phonenumbers.parse(number)
    return (
        phonenumbers.is_valid_number(parsed)
        and phonenumbers.region_code_for_number(parsed) == region
        and phonenumbers.number_type(parsed) in _MOBILE
    )


def _spread(count: int, start: float, length: float, rng: random.Random) -> list[float]:
    """``count`` moments evenly spread over ``[start, start + length)``, each jittered
    within its slot (a botnet's requests are not clockwork, but keep their pace)."""
    slot = length / count if count else 0.0
    return [start + (i + rng.random()) * slot for i in range(count)]


def _shares(total: int, weights: dict[str, int]) -> dict[str, int]:
    """``total`` split by ``weights`` (largest remainders), each country at least one."""
    whole = sum(weights.values())
    exact = {k: total * w / whole for k, w in weights.items()}
    counts = {k: max(1, int(v)) for k, v in exact.items()}
    for k in sorted(exact, key=lambda k: exact[k] - int(exact[k]), reverse=True):
        if sum(counts.values()) >= total:
            break
        counts[k] += 1
    return counts


def build_traffic(scenario: Scenario) -> Traffic:
    """The day's requests for ``scenario``: the same for a seed, whatever the run."""
    rng = random.Random(scenario.seed)
    ip = _Addresses(rng)
    numbers = _Numbers(rng)
    day = float(scenario.day)
    requests: list[Request] = []

    # The site's history: one user per country verified two days before (not counted).
    history = [
        Request(-2 * DAY + i * 60.0, "history", n, ip(), region, 30.0)
        for i, region in enumerate(LEGIT_COUNTRIES)
        for n in numbers.draw(region, numbers.example(region)[:LEGIT_FIXED_DIGITS], 1)
    ]

    for region, users in _shares(scenario.legit_users, LEGIT_COUNTRIES).items():
        lead = numbers.example(region)[:LEGIT_FIXED_DIGITS]
        for number in numbers.draw(region, lead, users):
            enters = rng.random() < scenario.conversion
            requests.append(
                Request(
                    rng.uniform(0, day),
                    "legit",
                    number,
                    ip(),
                    region,
                    rng.uniform(20, 120) if enters else None,
                )
            )

    # A: one address, numbers in 20 countries the site never sees, all day.
    a_ip = ip()
    per_country = _shares(scenario.a_numbers, dict.fromkeys(A_COUNTRIES, 1))
    a_numbers = [
        (region, n)
        for region, count in per_country.items()
        for n in numbers.draw(region, numbers.example(region)[:LEGIT_FIXED_DIGITS], count)
    ]
    rng.shuffle(a_numbers)
    a_numbers = a_numbers[: scenario.a_numbers]
    for at, (region, n) in zip(_spread(len(a_numbers), 0, day, rng), a_numbers, strict=True):
        requests.append(Request(at, "A", n, a_ip, region))

    # B: one prefix, 1,000 addresses, as fast as the botnet likes from b_start.
    b_prefix = numbers.example(B_COUNTRY)[:7]
    b_ips = [ip() for _ in range(scenario.b_ips)]
    b_numbers = numbers.draw(B_COUNTRY, b_prefix, scenario.b_numbers)
    for i, n in enumerate(b_numbers):
        at = scenario.b_start + i / scenario.b_rate + rng.random() / scenario.b_rate
        requests.append(Request(at, "B", n, b_ips[i % len(b_ips)], B_COUNTRY))

    # C: 50 prefixes of a country nobody verified in, all day.
    c_ips = [ip() for _ in range(scenario.c_ips)]
    lead = numbers.example(C_COUNTRY)[: len(str(_country_code(C_COUNTRY))) + 1]
    prefixes: list[str] = []
    while len(prefixes) < scenario.c_prefixes:
        prefix = numbers.draw(C_COUNTRY, lead, 1)[0][1:8]
        if prefix not in prefixes:
            prefixes.append(prefix)
    per_prefix = _shares(scenario.c_requests, dict.fromkeys(prefixes, 1))
    c_numbers = [n for p, count in per_prefix.items() for n in numbers.draw(C_COUNTRY, p, count)]
    rng.shuffle(c_numbers)
    c_span = day if scenario.c_span is None else float(scenario.c_span)
    c_times = _spread(scenario.c_requests, 0, c_span, rng)
    for i, (at, n) in enumerate(zip(c_times, c_numbers, strict=True)):
        requests.append(Request(at, "C", n, c_ips[i % len(c_ips)], C_COUNTRY))

    # D: B slow and low: one request a minute, all day, one prefix.
    d_prefix = numbers.example(D_COUNTRY)[:7]
    d_ips = [ip() for _ in range(scenario.d_ips)]
    d_count = int(day // scenario.d_every)
    d_numbers = numbers.draw(D_COUNTRY, d_prefix, min(scenario.d_numbers, d_count))
    for i, at in enumerate(_spread(d_count, 0, day, rng)):
        number, address = d_numbers[i % len(d_numbers)], d_ips[i % len(d_ips)]
        requests.append(Request(at, "D", number, address, D_COUNTRY))

    requests.sort(key=lambda r: r.at)
    touched = {
        "A": frozenset(A_COUNTRIES),
        "B": frozenset({B_COUNTRY}),
        "C": frozenset({C_COUNTRY}),
        "D": frozenset({D_COUNTRY}),
    }
    return Traffic(scenario, requests, history, touched)


def _country_code(region: str) -> int:
    return int(phonenumbers.country_code_for_region(region))


@dataclass(frozen=True)
class Mode:
    """A configuration of the product to run the day against."""

    name: str
    textflow: dict[str, Any]


def modes() -> list[Mode]:
    """Guard on (the defaults) and caps alone (the product before the guard)."""
    from textflow_django.conf import DEFAULTS

    common = {
        "BACKEND": "textflow_django.backends.locmem.LocMemBackend",
        "VERIFY_MODE": "local",
        "NUM_PROXIES": 0,
    }
    before = {
        scope: rates
        for scope, rates in DEFAULTS["SEND_LIMITS"].items()
        if scope not in ("global", "country")
    }
    return [
        Mode(GUARD_ON, dict(common)),
        Mode(CAPS_ALONE, {**common, "FRAUD_GUARD": {"ENABLED": False}, "SEND_LIMITS": before}),
    ]


@dataclass
class AttackFigures:
    """What one attack got in a run."""

    requests: int = 0
    #: SMS the backend delivered to the attack's numbers.
    delivered: int = 0
    #: Refusals by error code (``rate_limited``, ``destination_blocked``...).
    refused: Counter[str] = field(default_factory=Counter)
    #: The attack's requests up to its first ``destination_blocked`` refusal (None: none).
    attempts_before_block: int | None = None
    #: Seconds into the day of that refusal.
    blocked_at: float | None = None


@dataclass(frozen=True)
class BlockRow:
    """A ``FraudBlock`` the guard made: scope, destination, when (seconds into the day)."""

    scope: str
    value: str
    at: float
    sends: int
    conversions: int


@dataclass
class RunResult:
    """The figures of one run of the day."""

    mode: str
    attacks: dict[str, AttackFigures]
    users: Counter[str]
    #: Legitimate users whose send was refused, per country.
    refused: Counter[str]
    #: Their refusals by error code.
    refused_why: Counter[str]
    verified: int
    #: Right codes that did not verify (should be none).
    check_failures: Counter[str]
    blocks: list[BlockRow]
    seconds: float

    @property
    def legit_refused(self) -> int:
        return sum(self.refused.values())

    @property
    def legit_users(self) -> int:
        return sum(self.users.values())


class _Clock:
    """The simulation's one clock: epoch seconds, moved by the event loop."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def aware(self) -> dt.datetime:
        """The clock as ``django.utils.timezone.now`` gives it (``USE_TZ``: aware UTC)."""
        from django.conf import settings

        return dt.datetime.fromtimestamp(self.now, tz=dt.UTC if settings.USE_TZ else None)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence the package's WARNING lines (one per refusal and block) during a run."""
    logger = logging.getLogger("textflow_django")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def simulate(traffic: Traffic, mode: Mode) -> RunResult:
    """Run the day through the real service in ``mode``. Needs Django set up and a migrated,
    empty database; leaves it as it found it (the run is one transaction, rolled back)."""
    from django.db import transaction
    from django.test import RequestFactory, override_settings

    from textflow_django import fraud, ratelimit
    from textflow_django.backends import locmem
    from textflow_django.exceptions import VerificationError
    from textflow_django.models import FraudBlock, PhoneVerification
    from textflow_django.verification import check_code, send_code

    clock = _Clock(DAY_START)
    store = ratelimit.DatabaseStore(clock=clock)
    factory = RequestFactory()
    figures = {name: AttackFigures() for name in ATTACKS}
    users: Counter[str] = Counter()
    refused: Counter[str] = Counter()
    refused_why: Counter[str] = Counter()
    check_failures: Counter[str] = Counter()
    verified = 0
    started = time.perf_counter()

    # The events: sends (index into the day's requests) and code entries, by time.
    events: list[tuple[float, int, str, int]] = []
    entries: dict[int, tuple[str, str]] = {}  # event -> (verification_id, code)
    day = [*traffic.history, *traffic.requests]
    for i, r in enumerate(day):
        heapq.heappush(events, (r.at, i, "send", i))
    seq = len(day)

    with contextlib.ExitStack() as stack:
        stack.enter_context(override_settings(TEXTFLOW=mode.textflow))
        stack.enter_context(mock.patch.object(ratelimit, "get_store", lambda: store))
        stack.enter_context(mock.patch("django.utils.timezone.now", clock.aware))
        # What the process remembers of the countries known to the guard belongs to the
        # last database and clock: forget it before the run, and after (the rollback).
        stack.callback(fraud.forget)
        fraud.forget()
        stack.enter_context(_quiet())
        stack.enter_context(transaction.atomic())
        if PhoneVerification.objects.exists():
            raise RuntimeError("simulate() needs an empty database")
        locmem.reset()

        while events:
            at, _seq, kind, index = heapq.heappop(events)
            clock.now = DAY_START + at
            r = day[index]
            request = factory.post("/api/phone/send-code/", REMOTE_ADDR=r.ip)
            if kind == "check":
                handle, code = entries.pop(_seq)
                try:
                    check_code(r.number, code, request=request, verification_id=handle)
                except VerificationError as err:
                    check_failures[err.code] += 1
                else:
                    verified += r.who == "legit"
                continue
            attack = figures.get(r.who)
            if attack is not None:
                attack.requests += 1
            elif r.who == "legit":
                users[r.region] += 1
            try:
                sent = send_code(r.number, request=request, session=False)
            except VerificationError as err:
                if attack is not None:
                    attack.refused[err.code] += 1
                    if err.code == "destination_blocked" and attack.blocked_at is None:
                        attack.attempts_before_block = attack.requests - 1
                        attack.blocked_at = at
                elif r.who == "legit":
                    refused[r.region] += 1
                    refused_why[err.code] += 1
                continue
            if r.enter_after is not None:
                # Local mode sends the code as a plain SMS: it is the text's last word.
                message = locmem.outbox[-1]
                assert message.phone_number == r.number
                heapq.heappush(events, (at + r.enter_after, seq, "check", index))
                entries[seq] = (sent.verification_id, message.text.rsplit(" ", 1)[-1])
                seq += 1

        owner = {r.number: r.who for r in traffic.requests}
        for message in locmem.outbox:
            who = owner.get(message.phone_number)
            if who in figures:
                figures[who].delivered += 1
        blocks = [
            BlockRow(b.scope, b.value, b.created_at.timestamp() - DAY_START, b.sends, b.conversions)
            for b in FraudBlock.objects.order_by("created_at", "id")
        ]
        locmem.reset()
        transaction.set_rollback(True)

    return RunResult(
        mode.name,
        figures,
        users,
        refused,
        refused_why,
        verified,
        check_failures,
        blocks,
        time.perf_counter() - started,
    )


@dataclass(frozen=True)
class Check:
    """One target: its label, the figure, the limit, and whether it holds."""

    label: str
    value: float
    limit: float
    unit: str = ""

    @property
    def ok(self) -> bool:
        return self.value <= self.limit


#: Issue 13's targets: SMS delivered per day to each attack's numbers, guard on.
SMS_TARGETS = {"B": 60, "C": 100, "D": 60}


def checks(result: RunResult, traffic: Traffic) -> list[Check]:
    """Issue 13's targets, on a guard-on run."""
    found = [
        Check(f"attack {name}: SMS delivered", result.attacks[name].delivered, limit)
        for name, limit in SMS_TARGETS.items()
    ]
    share = 100 * result.legit_refused / max(1, result.legit_users)
    found.append(Check("legitimate users refused", share, 1.0, "%"))
    untouched = sum(result.refused[c] for c in traffic.untouched)
    found.append(Check("legitimate users refused where no attack went", untouched, 0))
    return found


def _clock_of(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return time.strftime("%H:%M:%S", time.gmtime(max(0.0, seconds)))


def _reasons(refusals: Counter[str]) -> str:
    return ", ".join(f"{code} {n}" for code, n in sorted(refusals.items())) or "none"


def report(traffic: Traffic, results: Sequence[RunResult]) -> str:
    """The figures of the runs and the targets (on the guard-on run), as printed."""
    s = traffic.scenario
    counts = Counter(r.who for r in traffic.requests)
    c_span = "all day" if s.c_span is None else f"over {s.c_span} s from 00:00"
    lines = [
        "bench/pumping.py: one simulated day through send_code/check_code, the database "
        "rate-limit store and the locmem backend (SQLite in memory)",
        f"  seed {s.seed}; {counts['legit']} legitimate users in {len(LEGIT_COUNTRIES)} "
        f"countries, {s.conversion:.0%} of them enter their code",
        f"  A: 1 address, {counts['A']} numbers in {len(A_COUNTRIES)} countries without "
        "users, all day",
        f"  B: {s.b_ips} addresses, {counts['B']} numbers in one prefix of {B_COUNTRY}, "
        f"{s.b_rate:g} a second from {_clock_of(s.b_start)}",
        f"  C: {s.c_ips} addresses, {counts['C']} numbers over {s.c_prefixes} prefixes of "
        f"{C_COUNTRY} (never verified in), {c_span}",
        f"  D: {s.d_ips} addresses, {counts['D']} requests to one prefix of {D_COUNTRY}, "
        f"one every {s.d_every} s all day",
    ]
    for r in results:
        lines += [
            "",
            f"{r.mode} ({r.seconds:.1f} s): SMS delivered to attacker numbers",
            f"  {'attack':<7}{'requests':>9}{'delivered':>11}{'attempts before block':>23}"
            f"{'blocked at':>12}  refusals",
        ]
        for name in ATTACKS:
            a = r.attacks[name]
            before = "-" if a.attempts_before_block is None else str(a.attempts_before_block)
            lines.append(
                f"  {name:<7}{a.requests:>9}{a.delivered:>11}{before:>23}"
                f"{_clock_of(a.blocked_at):>12}  {_reasons(a.refused)}"
            )
        lines.append(f"  blocks made: {len(r.blocks)}")
        lines += [
            f"    {_clock_of(b.at)} {b.scope} {b.value}: {b.sends} codes judged, "
            f"{b.conversions} verified"
            for b in r.blocks
        ]

    touched = frozenset().union(*traffic.touched.values())
    lines += [
        "",
        "Legitimate users refused",
        f"  {'country':<9}{'users':>6}"
        + "".join(f"{r.mode:>14}" for r in results)
        + "  attacked by",
    ]
    for region in LEGIT_COUNTRIES:
        by = "".join(name for name in ATTACKS if region in traffic.touched[name])
        lines.append(
            f"  {region:<9}{results[0].users[region]:>6}"
            + "".join(f"{r.refused[region]:>14}" for r in results)
            + (f"  {by}" if region in touched else "")
        )
    for r in results:
        untouched = sum(r.refused[c] for c in traffic.untouched)
        lines.append(
            f"  {r.mode}: {r.legit_refused} of {r.legit_users} refused "
            f"({100 * r.legit_refused / max(1, r.legit_users):.2f} %: "
            f"{_reasons(r.refused_why)}), {untouched} in the {len(traffic.untouched)} "
            f"countries no attack touched; {r.verified} verified, right codes refused: "
            f"{_reasons(r.check_failures)}"
        )

    guard = next((r for r in results if r.mode == GUARD_ON), None)
    if guard is not None:
        lines += ["", f"Targets ({GUARD_ON})"]
        lines += [
            f"  {'PASS' if c.ok else 'MISS'}  {c.label}: {c.value:.4g}{c.unit} "
            f"(target <= {c.limit:g}{c.unit})"
            for c in checks(guard, traffic)
        ]
    return "\n".join(lines)


def _setup_django() -> None:
    """The test settings on a SQLite database in memory, migrated."""
    os.environ["DJANGO_SETTINGS_MODULE"] = "tests.settings"
    for name in ("TEST_DATABASE", "TEXTFLOW_TEST_SQLITE", "TEXTFLOW_TEST_EMULATOR_URL"):
        os.environ.pop(name, None)
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def run(
    scenario: Scenario, setup: Callable[[], None] | None = _setup_django
) -> tuple[Traffic, list[RunResult]]:
    """Build the day and run it in both modes, guard on first (``setup`` before, when
    given: the script's; a test has its database already)."""
    traffic = build_traffic(scenario)
    if setup is not None:
        setup()
    return traffic, [simulate(traffic, mode) for mode in modes()]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the day, print the report; 1 when a target is missed."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=Scenario.seed, help="the traffic's seed")
    parser.add_argument(
        "--legit", type=int, default=Scenario.legit_users, help="legitimate users (3000)"
    )
    parser.add_argument(
        "--c-span",
        type=int,
        default=None,
        help="seconds attack C spreads its requests over from midnight (default: the day)",
    )
    args = parser.parse_args(argv)
    scenario = Scenario(seed=args.seed, legit_users=args.legit, c_span=args.c_span)
    traffic, results = run(scenario)
    print(report(traffic, results))
    guard = next(r for r in results if r.mode == GUARD_ON)
    return 0 if all(c.ok for c in checks(guard, traffic)) else 1


if __name__ == "__main__":
    sys.exit(main())
