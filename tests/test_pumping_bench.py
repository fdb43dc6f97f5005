"""A fast smoke run of ``bench/pumping.py``: a short day with small numbers, through the real
service on the test database, in both modes. It pins the simulation's structure (what it
sends, what it reports) and that the Fraud Guard beats the caps alone; the issue's figures
and targets are the full run's (``make bench``)."""

from __future__ import annotations

import dataclasses

import pytest

from bench import pumping
from textflow_django.models import FraudBlock, PhoneVerification

#: Six hours, a tenth of the traffic: B runs at 1 request every 2 s so its prefix is judged
#: (its grace period is over) before its numbers run out; D keeps its request a minute.
SMOKE = pumping.Scenario(
    day=6 * 3600,
    legit_users=200,
    a_numbers=50,
    b_numbers=300,
    b_ips=100,
    b_start=3600,
    b_rate=0.5,
    c_requests=100,
    c_ips=100,
    c_prefixes=10,
    d_ips=100,
    d_numbers=500,
)


@pytest.fixture(scope="module")
def traffic() -> pumping.Traffic:
    return pumping.build_traffic(SMOKE)


def test_the_traffic_is_the_scenario(traffic: pumping.Traffic) -> None:
    requests = traffic.requests
    by = {who: [r for r in requests if r.who == who] for who in ("legit", *pumping.ATTACKS)}
    assert [len(by[w]) for w in ("legit", "A", "B", "C", "D")] == [200, 50, 300, 100, 360]
    assert [r.at for r in requests] == sorted(r.at for r in requests)
    assert all(0 <= r.at < SMOKE.day for r in requests if r.who != "B")
    # Every number once; every address its own /24, but the attacks' shared ones.
    assert len({r.number for r in requests}) == len(requests)
    networks = {r.ip.rsplit(".", 1)[0] for r in requests}
    assert len(networks) == 200 + 1 + 100 + 100 + 100  # users, A, B, C, D
    assert {r.ip for r in by["A"]} == {by["A"][0].ip}
    # B and D each hit one prefix of one country with users; C 10 prefixes of a country
    # without any; A countries without users.
    assert len({r.number[:8] for r in by["B"]}) == 1 == len({r.number[:8] for r in by["D"]})
    assert len({r.number[:8] for r in by["C"]}) == 10
    legit = {r.region for r in by["legit"]}
    assert legit == set(pumping.LEGIT_COUNTRIES)
    assert {r.region for r in by["C"]}.isdisjoint(legit)
    assert {r.region for r in by["A"]}.isdisjoint(legit)
    assert len(traffic.untouched) == 18
    # 80 % of the users enter their code, a minute or two after it is sent; attackers never.
    entering = [r for r in by["legit"] if r.enter_after is not None]
    assert 0.7 < len(entering) / 200 < 0.9
    assert all(20 <= r.enter_after <= 120 for r in entering if r.enter_after is not None)
    assert all(r.enter_after is None for r in requests if r.who != "legit")
    # The same day for the same seed, another for another.
    assert pumping.build_traffic(SMOKE) == traffic
    other = pumping.build_traffic(dataclasses.replace(SMOKE, seed=SMOKE.seed + 1))
    assert other.requests != traffic.requests


@pytest.mark.django_db
def test_the_guard_beats_the_caps_alone(traffic: pumping.Traffic) -> None:
    on, alone = pumping.modes()
    guard, caps = pumping.simulate(traffic, on), pumping.simulate(traffic, alone)
    assert (guard.mode, caps.mode) == (pumping.GUARD_ON, pumping.CAPS_ALONE)
    # Each run left the database as it found it.
    assert not PhoneVerification.objects.exists() and not FraudBlock.objects.exists()

    entering = sum(r.enter_after is not None for r in traffic.requests if r.who == "legit")
    for run in (guard, caps):
        assert run.legit_users == 200
        assert {name: run.attacks[name].requests for name in pumping.ATTACKS} == {
            "A": 50,
            "B": 300,
            "C": 100,
            "D": 360,
        }
        # Every code entered verified (a refused user had none to enter).
        assert not run.check_failures
        assert entering - run.legit_refused <= run.verified <= entering
    # The caps alone: one address is capped (A: 20 an hour), the botnets are not.
    assert caps.attacks["A"].delivered <= 20 * 6
    for name in "BCD":
        assert caps.attacks[name].delivered == caps.attacks[name].requests
    assert not caps.blocks and caps.legit_refused == 0

    # The guard: B and D are blocked by prefix after their grace period, C is held to the
    # new-country cap, and nobody where no attack went is refused.
    for name in "BD":
        figures = guard.attacks[name]
        assert figures.delivered <= 60 < caps.attacks[name].delivered
        assert figures.attempts_before_block is not None
        assert figures.refused["destination_blocked"] > 0
    assert guard.attacks["C"].delivered < caps.attacks["C"].delivered
    assert {(b.scope, b.value) for b in guard.blocks} >= {
        ("prefix", next(r.number[:8] for r in traffic.requests if r.who == w)) for w in "BD"
    }
    assert sum(guard.refused[c] for c in traffic.untouched) == 0
    assert guard.legit_refused <= 2

    printed = pumping.report(traffic, [guard, caps])
    for heading in ("guard on (", "caps alone (", "Legitimate users refused", "Targets (guard on)"):
        assert heading in printed
    checks = pumping.checks(guard, traffic)
    assert [c.label for c in checks] == [
        "attack B: SMS delivered",
        "attack C: SMS delivered",
        "attack D: SMS delivered",
        "legitimate users refused",
        "legitimate users refused where no attack went",
    ]
    for check in checks:
        assert f"{'PASS' if check.ok else 'MISS'}  {check.label}:" in printed
