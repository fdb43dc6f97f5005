"""The traffic figures (``textflow_django.insights``) and ``manage.py textflow_report``: codes
sent and verified per day (in the current time zone) and per country, the prefixes with the
most unverified codes, the blocks in force, the chart's layout, the cost in queries.

Every figure is computed at a fixed instant (``NOW``) on rows stamped at chosen instants: no
test depends on where the wall clock falls.
"""

from __future__ import annotations

import datetime as dt
import json
from io import StringIO
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from textflow_django import insights
from textflow_django.models import FraudBlock, PhoneVerification, VerificationDay

pytestmark = pytest.mark.django_db

UTC = dt.UTC
#: Noon in Chicago (the suite's TIME_ZONE, Django's default): far from any midnight.
NOW = dt.datetime(2025, 3, 12, 17, 0, tzinfo=UTC)
TODAY = dt.date(2025, 3, 12)
Status = PhoneVerification.Status


def seed(
    at: dt.datetime,
    number: str = "+12025550143",
    *,
    n: int = 1,
    status: str = Status.PENDING,
    country: str = "US",
) -> None:
    """``n`` codes sent to ``number`` at ``at``."""
    rows = PhoneVerification.objects.bulk_create(
        PhoneVerification(
            phone_number=number,
            status=status,
            country=country,
            mode=PhoneVerification.Mode.LOCAL,
            expires_at=at + dt.timedelta(minutes=10),
        )
        for _ in range(n)
    )
    # created_at is auto_now_add: stamped with the real clock, then moved to ``at``.
    PhoneVerification.objects.filter(pk__in=[row.pk for row in rows]).update(created_at=at)


def days_ago(days: int, hours: float = 0) -> dt.datetime:
    return NOW - dt.timedelta(days=days, hours=hours)


def block(value: str, *, scope: str = "prefix", **fields: Any) -> FraudBlock:
    fields.setdefault("until", NOW + dt.timedelta(hours=1))
    made = FraudBlock.objects.create(
        scope=scope, value=value, reason=f"{value} judged", sends=30, conversions=1, **fields
    )
    # Each block a minute newer than the one made before it.
    created_at = NOW - dt.timedelta(hours=2) + dt.timedelta(minutes=FraudBlock.objects.count())
    FraudBlock.objects.filter(pk=made.pk).update(created_at=created_at)
    made.refresh_from_db()
    return made


# -- per day ------------------------------------------------------------------------------


def test_codes_sent_and_verified_per_day() -> None:
    seed(days_ago(0), n=3)
    seed(days_ago(0), n=2, status=Status.VERIFIED)
    seed(days_ago(1), n=4, status=Status.VERIFIED)
    seed(days_ago(1), status=Status.LOCKED)
    seed(days_ago(1), status=Status.SUPERSEDED)
    seed(days_ago(29), n=2)  # the first day of 30
    seed(days_ago(30), n=7)  # the day before: outside
    seed(NOW + dt.timedelta(days=1), n=5)  # tomorrow (a clock ahead): outside

    figures = insights.compute(30, now=NOW)

    assert figures.days == 30
    assert (figures.first_day, figures.last_day) == (dt.date(2025, 2, 11), TODAY)
    assert [day.date for day in figures.daily] == [
        dt.date(2025, 2, 11) + dt.timedelta(days=n) for n in range(30)
    ]
    per_day = {day.date: (day.sent, day.verified) for day in figures.daily}
    assert per_day.pop(TODAY) == (5, 2)
    assert per_day.pop(dt.date(2025, 3, 11)) == (6, 4)
    assert per_day.pop(dt.date(2025, 2, 11)) == (2, 0)
    assert set(per_day.values()) == {(0, 0)}  # every other day is there, with nothing
    assert (figures.totals.sent, figures.totals.verified) == (13, 6)
    today = figures.daily[-1]
    assert today.conversion == pytest.approx(0.4) and today.percent == pytest.approx(40.0)
    assert figures.daily[0].conversion == 0.0
    assert figures.daily[1].conversion is None  # no code: no rate, not 0 %


@pytest.mark.parametrize(
    ("zone", "day"),
    [("America/Chicago", dt.date(2025, 3, 11)), ("UTC", TODAY), ("Asia/Tokyo", TODAY)],
)
def test_a_day_is_a_day_of_the_current_time_zone(settings: Any, zone: str, day: dt.date) -> None:
    settings.TIME_ZONE = zone
    # 03:00 UTC on the 12th: 22:00 on the 11th in Chicago, noon on the 12th in Tokyo.
    seed(dt.datetime(2025, 3, 12, 3, 0, tzinfo=UTC))
    figures = insights.compute(2, now=dt.datetime(2025, 3, 12, 4, 0, tzinfo=UTC))
    sent = {d.date: d.sent for d in figures.daily}
    assert sent[day] == 1 and sum(sent.values()) == 1
    assert figures.last_day == day  # and "today" is the zone's day too


def test_one_day_is_today_since_midnight() -> None:
    seed(days_ago(0, hours=11))  # 01:00 today in Chicago
    seed(days_ago(0, hours=13))  # 23:00 yesterday
    figures = insights.compute(1, now=NOW)
    assert [(d.date, d.sent) for d in figures.daily] == [(TODAY, 1)]
    assert figures.since == dt.datetime(2025, 3, 12, 5, 0, tzinfo=UTC)  # Chicago midnight
    assert figures.until == dt.datetime(2025, 3, 13, 5, 0, tzinfo=UTC)


@pytest.mark.parametrize("days", [0, -1, insights.MAX_DAYS + 1])
def test_a_period_out_of_range_is_refused(days: int) -> None:
    with pytest.raises(ValueError, match=r"days must be 1\.\.365"):
        insights.compute(days, now=NOW)


# -- per country and per prefix ----------------------------------------------------------


def test_codes_per_country_busiest_first_and_the_others_together() -> None:
    # 12 countries: AA has 13 codes, AB 12, ... AL 2; each has one verified code.
    for n in range(12):
        country = f"A{chr(ord('A') + n)}"
        seed(days_ago(2), "+447400123456", n=12 - n, country=country)
        seed(days_ago(2), "+447400123456", status=Status.VERIFIED, country=country)
    seed(days_ago(3), n=13, country="")  # rows older than the field: ties AA, sorts first

    figures = insights.compute(now=NOW)

    listed = [(c.country, c.sent, c.verified) for c in figures.countries]
    assert len(listed) == insights.TOP == 10
    assert listed[:3] == [("", 13, 0), ("AA", 13, 1), ("AB", 12, 1)]
    assert listed[-1] == ("AI", 5, 1)
    # AJ, AK, AL: 4 + 3 + 2 codes, one verified each.
    other = figures.other_countries
    assert (other.sent, other.verified) == (9, 3)
    assert figures.totals.sent == sum(c.sent for c in figures.countries) + other.sent


def test_prefixes_with_the_most_unverified_codes(settings: Any) -> None:
    seed(days_ago(1), "+12025550143", n=8)  # +1202555: 8 + 3 unverified, 4 verified
    seed(days_ago(2), "+12025559999", n=3, status=Status.LOCKED)
    seed(days_ago(2), "+12025551111", n=4, status=Status.VERIFIED)
    seed(days_ago(1), "+447400123456", n=5, country="GB")  # +4474001: 5
    seed(days_ago(1), "+33612345678", n=6, status=Status.VERIFIED, country="FR")  # none
    seed(days_ago(40), "+79161234567", n=50, country="RU")  # outside the period

    figures = insights.compute(now=NOW)

    assert figures.prefix_digits == 7
    assert [(p.prefix, p.sent, p.verified, p.unverified) for p in figures.prefixes] == [
        ("+1202555", 15, 4, 11),
        ("+4474001", 5, 0, 5),
    ]

    settings.TEXTFLOW = {**settings.TEXTFLOW, "FRAUD_GUARD": {"PREFIX_DIGITS": 2}}
    figures = insights.compute(now=NOW)
    assert figures.prefix_digits == 2
    assert [(p.prefix, p.unverified) for p in figures.prefixes] == [("+12", 11), ("+44", 5)]


def test_at_most_top_prefixes_worst_first() -> None:
    for n in range(insights.TOP + 3):
        seed(days_ago(1), f"+1202{n:03d}0000", n=n + 1)
    figures = insights.compute(now=NOW)
    assert [p.unverified for p in figures.prefixes] == list(range(13, 3, -1))


# -- blocks ----------------------------------------------------------------------------


def test_only_blocks_in_force_newest_first() -> None:
    older = block("+1202555")
    newer = block("CU", scope="country")
    block("+4474001", lifted_at=NOW - dt.timedelta(minutes=1))
    block("+7916123", until=NOW)  # ends now: no longer in force
    figures = insights.compute(now=NOW)
    assert [b.pk for b in figures.blocks] == [newer.pk, older.pk]
    assert figures.more_blocks is False


def test_blocks_listed_are_capped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(insights, "MAX_BLOCKS", 2)
    for n in range(3):
        block(f"+120255{n}")
    figures = insights.compute(now=NOW)
    assert len(figures.blocks) == 2 and figures.more_blocks is True


def test_the_active_rule_is_the_one_the_admin_annotates() -> None:
    block("+1202555")
    block("+4474001", lifted_at=NOW)
    block("+7916123", until=NOW - dt.timedelta(seconds=1))
    rows = FraudBlock.objects.annotate(on=insights.is_active(NOW)).order_by("value")
    assert [(b.value, b.on) for b in rows] == [
        ("+1202555", True),
        ("+4474001", False),
        ("+7916123", False),
    ]
    assert list(
        FraudBlock.objects.filter(FraudBlock.in_force(NOW)).values_list("value", flat=True)
    ) == ["+1202555"]


# -- cost ------------------------------------------------------------------------------


def test_five_queries_whatever_the_period_and_the_traffic(
    django_assert_num_queries: Any,
) -> None:
    """The daily totals a cleanup kept (one query: issue 16), the rows by day, by country and
    by prefix, and the blocks: five, with or without totals in the period."""
    with django_assert_num_queries(5):
        insights.compute(1, now=NOW)
    for n in range(40):
        seed(days_ago(n * 9 % 365), f"+1202{n:03d}0000", n=2, country=f"B{n:02d}")
        block(f"+1{n:03d}")
    for n in range(0, 300, 7):  # kept days, some of them runs of days
        VerificationDay.objects.create(day=TODAY - dt.timedelta(days=n), sent=1, verified=1)
        VerificationDay.objects.create(day=TODAY - dt.timedelta(days=n + 1), sent=1)
    with django_assert_num_queries(5):
        figures = insights.compute(insights.MAX_DAYS, now=NOW)
    assert len(figures.daily) == 365


# -- as data ---------------------------------------------------------------------------


def test_as_dict_is_json_with_every_figure() -> None:
    seed(days_ago(0), n=2, status=Status.VERIFIED)
    seed(days_ago(0), "+447400123456", country="GB")
    made = block("+4474001")
    data = json.loads(json.dumps(insights.compute(2, now=NOW).as_dict()))
    assert data["days"] == 2
    assert (data["first_day"], data["last_day"]) == ("2025-03-11", "2025-03-12")
    assert data["totals"] == {"sent": 3, "verified": 2, "conversion": pytest.approx(2 / 3)}
    assert data["daily"] == [
        {"date": "2025-03-11", "sent": 0, "verified": 0, "conversion": None},
        {"date": "2025-03-12", "sent": 3, "verified": 2, "conversion": pytest.approx(2 / 3)},
    ]
    assert [c["country"] for c in data["countries"]] == ["US", "GB"]
    assert data["other_countries"] == {"sent": 0, "verified": 0, "conversion": None}
    assert data["prefixes"] == [
        {"prefix": "+4474001", "sent": 1, "verified": 0, "conversion": 0.0, "unverified": 1}
    ]
    assert data["blocks"] == [
        {
            "scope": "prefix",
            "value": "+4474001",
            "reason": "+4474001 judged",
            "sends": 30,
            "conversions": 1,
            "since": made.created_at.isoformat(),
            "until": made.until.isoformat(),
        }
    ]
    assert data["more_blocks"] is False


# -- the chart -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("largest", "top"), [(0, 1), (1, 1), (2, 2), (3, 5), (7, 10), (10, 10), (11, 20), (4500, 5000)]
)
def test_the_axis_ends_at_a_round_number(largest: int, top: int) -> None:
    assert insights._nice_top(largest) == top


def test_the_chart_lays_out_bars_and_the_conversion_line() -> None:
    days = tuple(
        insights.Day(date=TODAY - dt.timedelta(days=3 - n), sent=s, verified=v)
        for n, (s, v) in enumerate([(20, 10), (0, 0), (5, 5), (16, 4)])
    )
    chart = insights.daily_chart(days, width=400, height=200)

    assert chart.top == 20
    assert [tick[1] for tick in chart.ticks] == [0, 10, 20]
    assert [tick[1] for tick in chart.percent_ticks] == [0, 50, 100]
    plot = chart.bottom - chart.plot_top
    first, empty, full, last = chart.bars
    assert first.sent_height == pytest.approx(plot)  # the busiest day fills the plot
    assert first.verified_height == pytest.approx(plot / 2)
    assert full.sent_height == full.verified_height == pytest.approx(plot / 4)
    assert empty.sent_height == empty.verified_height == 0 and empty.point is None
    # Bars stay inside the plot, day after day, verified beside sent.
    xs = [b.x for b in chart.bars]
    assert xs == sorted(xs) and chart.left <= xs[0] and xs[-1] + 2 * last.width <= chart.right
    assert all(b.verified_x == pytest.approx(b.x + b.width) for b in chart.bars)
    # The line joins the days with codes: 50 %, 100 %, 25 %.
    points = [tuple(map(float, p.split(","))) for p in chart.line.split()]
    assert [y for _x, y in points] == pytest.approx(
        [chart.bottom - plot * share for share in (0.5, 1.0, 0.25)]
    )
    assert chart.labels[-1][1] == TODAY


def test_a_long_period_labels_about_ten_days_ending_today() -> None:
    days = tuple(
        insights.Day(date=TODAY - dt.timedelta(days=89 - n), sent=0, verified=0) for n in range(90)
    )
    chart = insights.daily_chart(days)
    assert 9 <= len(chart.labels) <= 11
    assert chart.labels[-1][1] == TODAY
    assert chart.line == "" and chart.top == 1
    assert [tick[1] for tick in chart.ticks] == [0, 1]  # no half a code


# -- manage.py textflow_report ---------------------------------------------------------


@pytest.fixture
def at_now(monkeypatch: pytest.MonkeyPatch) -> None:
    """The command's clock (``timezone.now``) reads ``NOW``."""
    monkeypatch.setattr(timezone, "now", lambda: NOW)


def report(*args: str) -> str:
    out = StringIO()
    call_command("textflow_report", *args, stdout=out)
    return out.getvalue()


def _seed_report() -> None:
    seed(days_ago(0), n=3)
    seed(days_ago(0), n=1, status=Status.VERIFIED)
    seed(days_ago(1), "+447400123456", n=2, status=Status.VERIFIED, country="GB")
    block("+1202555")


def test_report_as_json_is_the_figures(at_now: None) -> None:
    _seed_report()
    data = json.loads(report("--days", "7", "--format", "json"))
    assert data == json.loads(json.dumps(insights.compute(7, now=NOW).as_dict()))
    assert data["totals"]["sent"] == 6 and len(data["daily"]) == 7


def test_report_as_a_table(at_now: None) -> None:
    _seed_report()
    text = report("--days", "3")
    lines = text.splitlines()
    assert (
        lines[0] == "Codes sent from 2025-03-10 to 2025-03-12 (3 days, time zone America/Chicago)"
    )
    assert lines[1] == "sent 6, verified 3, conversion 50.0%"

    def section(title: str) -> list[str]:
        start = lines.index(title) + 1
        end = lines.index("", start) if "" in lines[start:] else len(lines)
        return lines[start:end]

    assert section("Per day") == [
        "day         sent  verified  conversion",
        "2025-03-10     0         0           -",
        "2025-03-11     2         2      100.0%",
        "2025-03-12     4         1       25.0%",
    ]
    assert section("Per country (the 10 busiest)") == [
        "country  sent  verified  conversion",
        "US          4         1       25.0%",
        "GB          2         2      100.0%",
    ]
    assert section("Prefixes with the most unverified codes (+ and 7 digits)") == [
        "prefix    sent  verified  unverified",
        "+1202555     4         1           3",
    ]
    blocks = section("Blocks in force")
    assert blocks[0].split() == ["destination", "scope", "judged", "verified", "until", "reason"]
    assert blocks[1].split()[:4] == ["+1202555", "prefix", "30", "1"]
    assert blocks[1].endswith("+1202555 judged")
    assert len(blocks) == 2


def test_report_of_an_empty_site(at_now: None) -> None:
    text = report()
    assert "(30 days," in text.splitlines()[0]
    assert "sent 0, verified 0, conversion -" in text
    assert text.rstrip().endswith("Blocks in force\nnone")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--days", "0"], "--days must be 1..365, not 0."),
        (["--days", "366"], "--days must be 1..365, not 366."),
        (["--days", "-3"], "--days must be 1..365, not -3."),
        (["--days", "week"], "argument --days: invalid int value: 'week'"),
        (["--format", "xml"], "argument --format: invalid choice: 'xml'"),
    ],
)
def test_report_refuses_bad_options(args: list[str], message: str) -> None:
    with pytest.raises(CommandError) as refused:
        report(*args)
    assert message in str(refused.value)
