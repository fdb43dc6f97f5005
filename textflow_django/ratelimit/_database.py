"""``DatabaseStore``: counters in ``RateLimitCounter`` rows (``RATELIMIT_STORE = "database"``,
the default).

Contract: the semantics of :mod:`._base` on any database Django supports, with no lock held
across calls: a claim or a count changes in one single-row ``UPDATE`` (``WHERE count <
room``, ``WHERE expires_at <= now``) or a unique ``INSERT``, so concurrent writers cannot
pass a limit. A claim is the row ``<key>``; a window's count the row
``<key>:<window>:<index>``, which expires when the next window ends. A hit reads the previous
window's count and the room it leaves (one ``SELECT`` of both rows), then counts in the
current window's row only while it is below that room: concurrent hits at one moment read
the same previous count (it changes only when a refund lowers it, which errs on the side of
refusing), so exactly as many are allowed as fit.
Expired rows are purged now and then as new ones are written (``purge_one_in``), which keeps
the table small without a scheduled job. "Expired" is always judged against the store's clock,
read in Python and sent as a parameter, never the database server's ``NOW()``.
"""

from __future__ import annotations

import datetime as dt
import math
import random
import time
from typing import TYPE_CHECKING

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F

from .._rates import Rate
from ._base import _MS, Clock, _OneByOne, _Position, _position, _room, _wait

if TYPE_CHECKING:
    from ..models import RateLimitCounter

__all__ = ["DatabaseStore"]


class DatabaseStore(_OneByOne):
    """Counters in ``RateLimitCounter`` rows; works on every database Django supports."""

    #: One write in this many also purges expired rows, which keeps the table small
    #: without a scheduled job.
    purge_one_in = 50

    def __init__(self, using: str = "default", *, clock: Clock = time.time) -> None:
        self.using = using
        self.clock = clock

    @property
    def _model(self) -> type[RateLimitCounter]:
        # Imported here, not at the top: models need the app registry, and this package is
        # importable before it is ready.
        from ..models import RateLimitCounter

        return RateLimitCounter

    def _now(self) -> dt.datetime:
        """The clock's reading as ``timezone.now()`` would give it: aware in UTC under
        ``USE_TZ``, naive local time otherwise."""
        return self._now_at(self.clock())

    def _now_at(self, moment: float) -> dt.datetime:
        """``moment`` (epoch seconds) as :meth:`_now` gives a clock's reading."""
        return dt.datetime.fromtimestamp(moment, tz=dt.UTC if settings.USE_TZ else None)

    def _insert(self, key: str, count: int, expires_at: dt.datetime) -> bool:
        """Insert a fresh row; False when another writer holds the key."""
        model = self._model
        if random.randrange(self.purge_one_in) == 0:  # noqa: S311 - not security
            model.objects.using(self.using).filter(expires_at__lte=self._now()).delete()
        try:
            with transaction.atomic(using=self.using):
                model.objects.using(self.using).create(key=key, count=count, expires_at=expires_at)
        except IntegrityError:
            return False
        return True

    def claim(self, key: str, ttl: int) -> int | None:
        model = self._model
        now = self._now()
        rows = model.objects.using(self.using)
        until = now + dt.timedelta(seconds=ttl)
        # Take over an expired claim in one UPDATE (atomic), else insert a new one.
        if rows.filter(key=key, expires_at__lte=now).update(count=1, expires_at=until):
            return None
        if self._insert(key, 1, until):
            return None
        if rows.filter(key=key, expires_at__lte=now).update(count=1, expires_at=until):
            return None
        held = rows.filter(key=key).values_list("expires_at", flat=True).first()
        return 1 if held is None else max(1, math.ceil((held - now).total_seconds()))

    def release(self, key: str) -> None:
        self._model.objects.using(self.using).filter(key=key).delete()

    def _counts(self, key: str, rate: Rate, at: _Position) -> tuple[int, int]:
        """(previous window's count, current window's count) at ``at``, in one query."""
        before, full = f"{key}:{rate.window}:{at.index - 1}", f"{key}:{rate.window}:{at.index}"
        rows = self._model.objects.using(self.using).filter(key__in=[before, full])
        counts = dict(rows.values_list("key", "count"))
        return counts.get(before, 0), counts.get(full, 0)

    def hit(self, key: str, rate: Rate, now: float | None = None) -> int | None:
        at = _position(rate, self.clock() if now is None else now)
        full = f"{key}:{rate.window}:{at.index}"
        prev, curr = self._counts(key, rate, at)
        room = _room(rate, at, prev)
        rows = self._model.objects.using(self.using)
        # UPDATE ... WHERE count < room is atomic: concurrent hits cannot pass the room. (A
        # count read at or past it is refused at once: counts only fall by a refund.)
        if curr < room and (
            rows.filter(key=full, count__lt=room).update(count=F("count") + 1)
            or self._insert(full, 1, self._expiry(at))
            or rows.filter(key=full, count__lt=room).update(count=F("count") + 1)
        ):
            return None
        # Refused: the row was at its room when the UPDATE looked, whatever was read before.
        return _wait(rate, at, prev, max(curr, room))

    def _expiry(self, at: _Position) -> dt.datetime:
        """When a count of ``at``'s window is needed no more: the end of the next window."""
        return self._now_at((at.index + 2) * at.span / _MS)

    def unhit(self, key: str, rate: Rate, now: float | None = None) -> None:
        at = _position(rate, self.clock() if now is None else now)
        self._model.objects.using(self.using).filter(
            key=f"{key}:{rate.window}:{at.index}", count__gt=0
        ).update(count=F("count") - 1)

    def peek(self, key: str, rate: Rate) -> int | None:
        at = _position(rate, self.clock())
        return _wait(rate, at, *self._counts(key, rate, at))
