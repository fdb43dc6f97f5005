"""The traffic the Fraud Guard watches, as figures: codes sent and verified per day and per
country, the prefixes with the most unverified codes, and the blocks in force.

The admin's insights page and ``manage.py textflow_report`` show what :func:`compute`
returns; neither counts anything itself.

Contract of the figures:

- A code is a ``PhoneVerification`` row; it counts on the day it was *sent*
  (``created_at``, in the site's time zone), and as verified if it ever was (status
  ``verified``), whenever that happened. A day's conversion is the share of that day's
  codes that were verified: a cohort, so codes still pending make a recent day's rate look
  low until they are used or expire.
- A day ``manage.py textflow_cleanup`` deleted the rows of (``textflow_django.retention``)
  is read from its totals, ``VerificationDay`` (sent and verified per country, written
  before the rows went), and only from those: rows of such a day that a cleanup cut short
  left are not counted again. So the day and country figures are the same before and after
  a cleanup.
- Every day is a calendar day of the site's time zone (``TIME_ZONE``), whatever time zone
  is active (a middleware may activate a user's): the daily totals are the site's days, and
  a day of another zone would cut across them.
- The prefix figures come from rows only: a day read from its totals has none.
- The period is ``days`` whole calendar days ending with today: from midnight ``days - 1``
  days ago to the coming midnight.
- A prefix is ``+`` and the first ``FRAUD_GUARD["PREFIX_DIGITS"]`` digits of the number,
  as the guard judges it. Rows older than the ``country`` field have country ``""``.
- A block is in force while it was not lifted and its ``until`` is ahead
  (``FraudBlock.in_force``, the one definition the admin's list uses too).

Cost: five queries whatever the period, the countries or the traffic: the period's daily
totals, then the rows grouped by the database (days, countries and prefixes: ``TruncDate``,
``country``, ``Substr``), then the blocks. No row of the verification table is read into
Python: the totals (a day and country each) and the groups are.

The chart of the page is laid out here too (:func:`daily_chart`): coordinates only, plain
arithmetic on the figures, so the template draws SVG without computing anything.

Why one module of over 400 lines: it is one page's contract, the figures (with the daily
totals a cleanup keeps) and the chart laid out from them; the chart reads the figures'
dataclasses and nothing else, and splitting it off would leave each half a fragment.
"""

from __future__ import annotations

import datetime as dt
import itertools
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

from django.conf import settings
from django.db.models import BooleanField, Count, ExpressionWrapper, Q, QuerySet
from django.db.models.functions import TruncDate
from django.utils import timezone

from . import fraud
from .conf import conf
from .models import FraudBlock, PhoneVerification, VerificationDay

__all__ = [
    "DEFAULT_DAYS",
    "MAX_BLOCKS",
    "MAX_DAYS",
    "TOP",
    "Bar",
    "Country",
    "Day",
    "DailyChart",
    "Figures",
    "Insights",
    "Prefix",
    "check_days",
    "compute",
    "daily_chart",
    "is_active",
]

#: The period shown unless another is asked for, and the longest one may ask for.
DEFAULT_DAYS = 30
MAX_DAYS = 365
#: Countries and prefixes listed (the busiest, the most unverified).
TOP = 10
#: Blocks in force listed; a site with more has a list to read in the admin instead.
MAX_BLOCKS = 100

_Key = TypeVar("_Key")

_VERIFIED = Q(status=PhoneVerification.Status.VERIFIED)
_SENT = Count("pk")
_CONVERTED = Count("pk", filter=_VERIFIED)


def check_days(days: int) -> int:
    """``days`` if it is a period :func:`compute` takes (1 to ``MAX_DAYS``); ValueError
    saying so otherwise."""
    if not 1 <= days <= MAX_DAYS:
        raise ValueError(f"days must be 1..{MAX_DAYS}, not {days}")
    return days


def is_active(now: dt.datetime) -> ExpressionWrapper[Q]:
    """``FraudBlock.in_force`` as a boolean to annotate blocks with (the admin's column)."""
    return ExpressionWrapper(FraudBlock.in_force(now), output_field=BooleanField())


@dataclass(frozen=True, kw_only=True)
class Figures:
    """Codes sent and how many of them were verified."""

    sent: int
    verified: int

    @property
    def unverified(self) -> int:
        return self.sent - self.verified

    @property
    def conversion(self) -> float | None:
        """Share of the codes verified, 0.0 to 1.0; None when none were sent."""
        return self.verified / self.sent if self.sent else None

    @property
    def percent(self) -> float | None:
        """:attr:`conversion` in percent (what people read)."""
        return None if self.conversion is None else 100 * self.conversion

    def as_dict(self) -> dict[str, Any]:
        return {"sent": self.sent, "verified": self.verified, "conversion": self.conversion}


@dataclass(frozen=True, kw_only=True)
class Day(Figures):
    """The codes sent on one day (the site's time zone)."""

    date: dt.date

    def as_dict(self) -> dict[str, Any]:
        return {"date": self.date.isoformat(), **super().as_dict()}


@dataclass(frozen=True, kw_only=True)
class Country(Figures):
    """The codes sent to one country (ISO 3166-1 region; "" for rows older than the field)."""

    country: str

    def as_dict(self) -> dict[str, Any]:
        return {"country": self.country, **super().as_dict()}


@dataclass(frozen=True, kw_only=True)
class Prefix(Figures):
    """The codes sent to one number prefix."""

    prefix: str

    def as_dict(self) -> dict[str, Any]:
        return {"prefix": self.prefix, **super().as_dict(), "unverified": self.unverified}


@dataclass(frozen=True, kw_only=True)
class Insights:
    """The figures of one period (see the module's contract)."""

    days: int
    #: The first and last day of the period, and the instants it spans.
    first_day: dt.date
    last_day: dt.date
    since: dt.datetime
    until: dt.datetime
    #: When the figures were computed (blocks are "in force" as of then).
    now: dt.datetime
    prefix_digits: int
    totals: Figures
    #: Every day of the period, oldest first, days without codes included (as zeros).
    daily: tuple[Day, ...]
    #: The ``TOP`` countries by codes sent, busiest first, and the others together.
    countries: tuple[Country, ...]
    other_countries: Figures
    #: The ``TOP`` prefixes by unverified codes (none without any), worst first.
    prefixes: tuple[Prefix, ...]
    #: The blocks in force, newest first, at most ``MAX_BLOCKS``; ``more_blocks`` if cut.
    blocks: tuple[FraudBlock, ...]
    more_blocks: bool

    def as_dict(self) -> dict[str, Any]:
        """The figures as JSON-ready values (dates and instants in ISO 8601)."""
        return {
            "days": self.days,
            "first_day": self.first_day.isoformat(),
            "last_day": self.last_day.isoformat(),
            "since": self.since.isoformat(),
            "until": self.until.isoformat(),
            "now": self.now.isoformat(),
            "prefix_digits": self.prefix_digits,
            "totals": self.totals.as_dict(),
            "daily": [day.as_dict() for day in self.daily],
            "countries": [country.as_dict() for country in self.countries],
            "other_countries": self.other_countries.as_dict(),
            "prefixes": [prefix.as_dict() for prefix in self.prefixes],
            "blocks": [
                {
                    "scope": block.scope,
                    "value": block.value,
                    "reason": block.reason,
                    "sends": block.sends,
                    "conversions": block.conversions,
                    "since": block.created_at.isoformat(),
                    "until": block.until.isoformat(),
                }
                for block in self.blocks
            ],
            "more_blocks": self.more_blocks,
        }


def _midnight(day: dt.date) -> dt.datetime:
    """The start of ``day`` in the current time zone (naive without ``USE_TZ``); called
    with the site's activated (:func:`compute`)."""
    start = dt.datetime.combine(day, dt.time.min)
    return timezone.make_aware(start) if settings.USE_TZ else start


def _runs(days: list[dt.date]) -> list[tuple[dt.date, dt.date]]:
    """Sorted ``days`` as runs of consecutive days, (first, last) each."""
    runs: list[tuple[dt.date, dt.date]] = []
    for day in days:
        if runs and day == runs[-1][1] + dt.timedelta(days=1):
            runs[-1] = (runs[-1][0], day)
        else:
            runs.append((day, day))
    return runs


def _summed(figures: Iterable[tuple[_Key, int, int]]) -> dict[_Key, tuple[int, int]]:
    """(key, sent, verified) figures added up per key: {key: (sent, verified)}."""
    summed: dict[_Key, tuple[int, int]] = {}
    for key, sent, verified in figures:
        before = summed.get(key, (0, 0))
        summed[key] = (before[0] + sent, before[1] + verified)
    return summed


def compute(days: int = DEFAULT_DAYS, *, now: dt.datetime | None = None) -> Insights:
    """The figures of the ``days`` (1 to ``MAX_DAYS``; ValueError otherwise) calendar days
    of the site's time zone ending with the day of ``now`` (default: now), in five queries.
    """
    check_days(days)
    # The site's days, as the daily totals are (retention), whatever zone a request activated.
    with timezone.override(timezone.get_default_timezone()):
        return _compute(days, now)


def _compute(days: int, now: dt.datetime | None) -> Insights:
    """:func:`compute` in the active time zone (the site's: compute activates it)."""
    now = timezone.now() if now is None else now
    today = timezone.localdate(now) if settings.USE_TZ else now.date()
    first_day = today - dt.timedelta(days=days - 1)
    since, until = _midnight(first_day), _midnight(today + dt.timedelta(days=1))
    digits = conf.FRAUD_GUARD.prefix_digits

    # The days a cleanup kept as totals: read from those, and their rows (a cleanup cut
    # short leaves some) left out. They are the period's oldest days, so this is one range
    # at most, in practice.
    kept = list(
        VerificationDay.objects.filter(day__gte=first_day, day__lte=today)
        .order_by()
        .values_list("day", "country", "sent", "verified")
    )
    rows = PhoneVerification.objects.filter(created_at__gte=since, created_at__lt=until)
    for first, last in _runs(sorted({day for day, *_ in kept})):
        end = _midnight(last + dt.timedelta(days=1))
        rows = rows.exclude(created_at__gte=_midnight(first), created_at__lt=end)

    # order_by() first: the model's default ordering would join the GROUP BY.
    per_day = _summed(
        itertools.chain(
            (
                (row["day"], row["sent"], row["verified"])
                for row in rows.order_by()
                .annotate(day=TruncDate("created_at"))
                .values("day")
                .annotate(sent=_SENT, verified=_CONVERTED)
            ),
            ((day, sent, verified) for day, _, sent, verified in kept),
        )
    )
    daily = tuple(
        Day(date=day, sent=sent, verified=verified)
        for day in (first_day + dt.timedelta(days=n) for n in range(days))
        for sent, verified in [per_day.get(day, (0, 0))]
    )
    totals = Figures(
        sent=sum(day.sent for day in daily), verified=sum(day.verified for day in daily)
    )

    # Every country's group (a few hundred at most) with its totals, then the busiest.
    per_country = _summed(
        itertools.chain(
            (
                (row["country"], row["sent"], row["verified"])
                for row in rows.order_by()
                .values("country")
                .annotate(sent=_SENT, verified=_CONVERTED)
            ),
            ((country, sent, verified) for _, country, sent, verified in kept),
        )
    )
    busiest = sorted(per_country.items(), key=lambda item: (-item[1][0], item[0]))[:TOP]
    countries = tuple(
        Country(country=country, sent=sent, verified=verified)
        for country, (sent, verified) in busiest
    )
    other_countries = Figures(
        sent=totals.sent - sum(c.sent for c in countries),
        verified=totals.verified - sum(c.verified for c in countries),
    )

    prefix = fraud.prefix_sql(digits)
    prefixes = tuple(
        Prefix(prefix=row["prefix"], sent=row["sent"], verified=row["verified"])
        for row in rows.order_by()
        .annotate(prefix=prefix)
        .values("prefix")
        .annotate(sent=_SENT, verified=_CONVERTED, unverified=Count("pk", filter=~_VERIFIED))
        .filter(unverified__gt=0)
        .order_by("-unverified", "-sent", "prefix")[:TOP]
    )

    blocks: QuerySet[FraudBlock] = FraudBlock.objects.filter(FraudBlock.in_force(now)).order_by(
        "-created_at", "-id"
    )
    listed = tuple(blocks[: MAX_BLOCKS + 1])
    return Insights(
        days=days,
        first_day=first_day,
        last_day=today,
        since=since,
        until=until,
        now=now,
        prefix_digits=digits,
        totals=totals,
        daily=daily,
        countries=countries,
        other_countries=other_countries,
        prefixes=prefixes,
        blocks=listed[:MAX_BLOCKS],
        more_blocks=len(listed) > MAX_BLOCKS,
    )


# -- the chart -------------------------------------------------------------------------


@dataclass(frozen=True)
class Bar:
    """One day's two bars (codes sent, codes verified) in the chart's coordinates."""

    day: Day
    #: The left edge of the sent bar, and of the verified bar beside it.
    x: float
    verified_x: float
    width: float
    sent_y: float
    sent_height: float
    verified_y: float
    verified_height: float
    #: The conversion point (x, y), None on a day without codes.
    point: tuple[float, float] | None


@dataclass(frozen=True)
class DailyChart:
    """The per-day chart laid out in a ``width`` x ``height`` SVG viewBox: bars of codes
    sent and verified against the left axis (0 to ``top``), the conversion rate as a line
    against the right axis (0 to 100 %)."""

    width: int
    height: int
    left: float
    right: float
    plot_top: float
    bottom: float
    top: int
    bars: tuple[Bar, ...]
    #: The left axis' ticks: (y, codes); the right axis' ticks: (y, percent).
    ticks: tuple[tuple[float, int], ...]
    percent_ticks: tuple[tuple[float, int], ...]
    #: Days labelled under the axis (x, date): about ten whatever the period.
    labels: tuple[tuple[float, dt.date], ...]
    #: The conversion line, "x,y x,y ..." (an SVG polyline's points; "" without codes).
    line: str

    @property
    def left_labels(self) -> float:
        """Where the left axis' labels end (they are right-aligned there)."""
        return self.left - 6

    @property
    def right_labels(self) -> float:
        """Where the right axis' labels start."""
        return self.right + 6

    @property
    def day_labels(self) -> float:
        """The baseline of the day labels, under the plot."""
        return self.bottom + 18


def _nice_top(largest: int) -> int:
    """The smallest 1, 2 or 5 times a power of ten at or above ``largest`` (at least 1)."""
    if largest <= 1:
        return 1
    power = int(10 ** math.floor(math.log10(largest)))
    return next(step * power for step in (1, 2, 5, 10) if step * power >= largest)


def daily_chart(daily: tuple[Day, ...], width: int = 900, height: int = 260) -> DailyChart:
    """Lay out the per-day chart of ``daily`` (at least one day)."""
    left, right, plot_top, bottom = 52.0, width - 48.0, 12.0, height - 28.0
    plot = bottom - plot_top
    top = _nice_top(max(day.sent for day in daily))
    slot = (right - left) / len(daily)
    bar = slot * 0.38  # two bars and a gap per day

    def y(share: float) -> float:
        return round(bottom - plot * share, 2)

    bars = []
    for n, day in enumerate(daily):
        x = left + slot * n + slot * 0.12
        sent_y, verified_y = y(day.sent / top), y(day.verified / top)
        middle = round(left + slot * (n + 0.5), 2)
        conversion = day.conversion
        bars.append(
            Bar(
                day=day,
                x=round(x, 2),
                verified_x=round(x + bar, 2),
                width=round(bar, 2),
                sent_y=sent_y,
                sent_height=round(bottom - sent_y, 2),
                verified_y=verified_y,
                verified_height=round(bottom - verified_y, 2),
                point=None if conversion is None else (middle, y(conversion)),
            )
        )
    every = math.ceil(len(daily) / 10)
    # A middle tick only where it is a whole number of codes (not on a scale of 1 or 5).
    shares = (0.0, 0.5, 1.0) if top % 2 == 0 else (0.0, 1.0)
    return DailyChart(
        width=width,
        height=height,
        left=left,
        right=right,
        plot_top=plot_top,
        bottom=bottom,
        top=top,
        bars=tuple(bars),
        ticks=tuple((y(share), round(top * share)) for share in shares),
        percent_ticks=tuple((y(share), round(100 * share)) for share in (0.0, 0.5, 1.0)),
        labels=tuple(
            (round(left + slot * (n + 0.5), 2), day.date)
            for n, day in enumerate(daily)
            if (len(daily) - 1 - n) % every == 0  # always label the last day (today)
        ),
        line=" ".join(f"{b.point[0]},{b.point[1]}" for b in bars if b.point is not None),
    )
