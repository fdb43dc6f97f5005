"""``DatabaseStore``: counters in ``RateLimitCounter`` rows (``RATELIMIT_STORE = "database"``,
the default).

Contract: the semantics of :mod:`._base` on any database Django supports, with no lock held
across calls: a claim or a count changes in one single-row ``UPDATE`` (``WHERE count <
limit``, ``WHERE expires_at <= now``) or a unique ``INSERT``, so concurrent writers cannot
pass a limit. A claim is the row ``<key>``; a count the row ``<key>:<window>:<index>``.
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
from ._base import Clock, _OneByOne, _wait_if_reached, _window

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
        return dt.datetime.fromtimestamp(self.clock(), tz=dt.UTC if settings.USE_TZ else None)

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

    def hit(self, key: str, rate: Rate, now: float | None = None) -> int | None:
        index, left = _window(rate, self.clock() if now is None else now)
        full = f"{key}:{rate.window}:{index}"
        rows = self._model.objects.using(self.using)
        # UPDATE ... WHERE count < limit is atomic: concurrent hits cannot pass the limit.
        if rows.filter(key=full, count__lt=rate.limit).update(count=F("count") + 1):
            return None
        if rate.limit > 0 and self._insert(full, 1, self._now() + dt.timedelta(seconds=left + 1)):
            return None
        if rows.filter(key=full, count__lt=rate.limit).update(count=F("count") + 1):
            return None
        return left

    def unhit(self, key: str, rate: Rate, now: float | None = None) -> None:
        index, _left = _window(rate, self.clock() if now is None else now)
        self._model.objects.using(self.using).filter(
            key=f"{key}:{rate.window}:{index}", count__gt=0
        ).update(count=F("count") - 1)

    def peek(self, key: str, rate: Rate) -> int | None:
        index, left = _window(rate, self.clock())
        count = (
            self._model.objects.using(self.using)
            .filter(key=f"{key}:{rate.window}:{index}")
            .values_list("count", flat=True)
            .first()
        )
        return _wait_if_reached(count, rate, left)
