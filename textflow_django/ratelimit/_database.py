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

One round trip per request. On PostgreSQL and SQLite (3.35+: ``RETURNING``), :meth:`acquire`
takes the claim and every cap of a request in one statement, whatever the number of scopes:
an ``INSERT ... SELECT ... ON CONFLICT (key) DO UPDATE ... WHERE ... RETURNING key`` over all
the rows, each row's room computed in the statement from its previous window's row (the
rule of :func:`._base._room`, in integer SQL) and the claim taken over only when its deadline
has passed. The rows the statement returns are the ones it took; a missing one is a refusal,
and what was taken is then given back (all or nothing, as before: a refusal costs a read of
the refused rows and the undo). :meth:`give_back` is one ``UPDATE`` on every database. The
rows go in key order, so two requests sharing rows (one address, two numbers) lock them in
the same order and cannot deadlock. MySQL and MariaDB have no ``RETURNING`` on an upsert:
there the single-key operations run one after the other (a claim, then per cap a ``SELECT``
of its two windows and an ``UPDATE`` or ``INSERT``), all or nothing by undoing.

Why one module of over 400 lines: its one job is the database store, and it holds the
store's portable single-key operations next to the one-statement forms that must decide
exactly as they do (the same rows, keys and room), and the SQL of those statements.

Two rates of one scope with the same window share a row (``<key>:<window>:<index>``); one
request counts in it once, against the tighter of the two, which is what counting one event
against both means.
"""

from __future__ import annotations

import datetime as dt
import functools
import math
import random
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.db import IntegrityError, connections, transaction
from django.db.models import F, Q

from .. import _sql
from .._rates import Rate
from ._base import _MS, Clock, Counts, Refusal, _OneByOne, _Position, _position, _room, _wait

if TYPE_CHECKING:
    from ..models import RateLimitCounter

__all__ = ["DatabaseStore", "epoch_datetime"]


def epoch_datetime(moment: float) -> dt.datetime:
    """A store clock's reading (epoch seconds) as ``timezone.now()`` gives the time: aware
    in UTC under ``USE_TZ``, naive local time otherwise (what the ORM stores and compares)."""
    return dt.datetime.fromtimestamp(moment, tz=dt.UTC if settings.USE_TZ else None)


class DatabaseStore(_OneByOne):
    """Counters in ``RateLimitCounter`` rows; works on every database Django supports."""

    #: One write in this many also purges expired rows, which keeps the table small
    #: without a scheduled job.
    purge_one_in = 50

    #: The database is one for every process.
    shared = True

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
        """The clock's reading as ``timezone.now()`` would give it."""
        return epoch_datetime(self.clock())

    def _maybe_purge(self) -> None:
        """Now and then (one write in ``purge_one_in``), delete the rows that have expired."""
        if random.randrange(self.purge_one_in) == 0:  # noqa: S311 - not security
            # One plain DELETE: QuerySet.delete() would wrap it in a transaction (BEGIN and
            # COMMIT: two more round trips) to collect cascades this model does not have.
            connection = connections[self.using]
            sql = _purge_sql(self.using, self._model._meta.db_table)
            with connection.cursor() as cursor:
                cursor.execute(sql, [connection.ops.adapt_datetimefield_value(self._now())])

    def _insert(self, key: str, count: int, expires_at: dt.datetime) -> bool:
        """Insert a fresh row; False when another writer holds the key."""
        model = self._model
        self._maybe_purge()
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
        return self._left(key, self.clock()) or 1

    def release(self, key: str) -> None:
        # One plain DELETE: QuerySet.delete() would wrap it in a transaction (BEGIN and
        # COMMIT, two more round trips in autocommit) to collect cascades this model has not.
        connection = connections[self.using]
        table = connection.ops.quote_name(self._model._meta.db_table)
        with connection.cursor() as cursor:
            cursor.execute(
                f"DELETE FROM {table} WHERE {connection.ops.quote_name('key')} = %s",  # noqa: S608
                [key],
            )

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
        return epoch_datetime((at.index + 2) * at.span / _MS)

    def unhit(self, key: str, rate: Rate, now: float | None = None) -> None:
        at = _position(rate, self.clock() if now is None else now)
        self._model.objects.using(self.using).filter(
            key=f"{key}:{rate.window}:{at.index}", count__gt=0
        ).update(count=F("count") - 1)

    def peek(self, key: str, rate: Rate) -> int | None:
        at = _position(rate, self.clock())
        return _wait(rate, at, *self._counts(key, rate, at))

    # -- one round trip for a whole request (PostgreSQL, SQLite) ---------------------------

    def acquire(
        self,
        claim: tuple[str, int] | None,
        hits: Sequence[tuple[str, Rate]],
        now: float,
        *,
        blocks: Sequence[str] = (),
        waivers: Mapping[str, str] | None = None,
        counts: Counts | None = None,
    ) -> Refusal | None:
        if not _sql.returning(self.using):
            return super().acquire(claim, hits, now, blocks=blocks, waivers=waivers, counts=counts)
        caps = _rows(hits, now)
        if claim is None and not caps:
            return super().acquire(None, (), now, blocks=blocks)  # only the blocks to read
        connection = connections[self.using]
        adapt = connection.ops.adapt_datetimefield_value
        present = adapt(epoch_datetime(now))
        waivers = waivers or {}
        values: list[tuple[Any, ...]] = []
        if claim is not None:
            values.append((claim[0], adapt(epoch_datetime(now + claim[1])), None, None, 0, 0, 1))
        for row in caps:
            values.append(
                (
                    row.key,
                    adapt(self._expiry(row.at)),
                    row.previous,
                    waivers.get(row.hit),
                    row.rate.limit * row.at.span,
                    row.at.overlap,
                    row.at.span,
                )
            )
        arrays = connection.vendor == "postgresql"
        # PostgreSQL takes the rows as seven arrays: a handful of parameters, whatever the
        # number of rows (psycopg converts a statement of 50 parameters or more anew on
        # every call); SQLite, as a VALUES list.
        params: list[Any] = [list(c) for c in zip(*values, strict=True)] if arrays else []
        if not arrays:
            params += [value for row_values in values for value in row_values]
        params += [present, *blocks, present] if blocks else [present]
        if claim is not None:
            params += [claim[0], claim[0], claim[0], present]
        sql = _acquire_sql(
            self.using,
            self._model._meta.db_table,
            0 if arrays else len(values),
            claim is not None,
            len(blocks),
        )
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            taken = dict(cursor.fetchall())
        if len(taken) == len(caps) + (claim is not None):
            self._maybe_purge()
            if counts is not None:
                # A waived row is returned too (its count unchanged): only hits without a
                # waiver are reported (module docstring of ._base).
                counts.update(
                    {(r.hit, r.rate.window): taken[r.key] for r in caps if r.hit not in waivers}
                )
            return None
        if not taken and blocks:
            waits = [wait for key in blocks if (wait := self.held(key)) is not None]
            if waits:
                return Refusal("blocked", max(waits))
        # Refused somewhere: give back what was taken, then say why (a held claim first, as
        # the single-key operations would have stopped there).
        claim_taken = claim is not None and claim[0] in taken
        self._give_back_rows(
            claim[0] if claim_taken and claim is not None else None,
            [row.key for row in caps if row.key in taken],
            now,
        )
        if claim is not None and not claim_taken:
            return Refusal("claim", self._left(claim[0], now) or 1)
        refused = [row for row in caps if row.key not in taken]
        rows = self._model.objects.using(self.using)
        keys = [key for row in refused for key in (row.key, row.previous)]
        found = dict(rows.filter(key__in=keys).values_list("key", "count"))
        waits = []
        for row in refused:
            prev = found.get(row.previous, 0)
            room = _room(row.rate, row.at, prev)
            # Refused: the row was at its room when the statement looked, whatever is read now.
            wait = _wait(row.rate, row.at, prev, max(found.get(row.key, 0), room))
            waits.append(row.rate.window if wait is None else wait)
        return Refusal("hit", max(waits))

    def hold(self, key: str, seconds: int) -> None:
        until = epoch_datetime(self.clock() + seconds)
        rows = self._model.objects.using(self.using)
        if _sql.returning(self.using):  # an upsert: one statement
            connection = connections[self.using]
            qn = connection.ops.quote_name
            t, k, c, e = qn(self._model._meta.db_table), qn("key"), qn("count"), qn("expires_at")
            sql = (
                f"INSERT INTO {t} ({k}, {c}, {e}) VALUES (%s, 1, %s) "  # noqa: S608
                f"ON CONFLICT ({k}) DO UPDATE SET {c} = 1, {e} = excluded.{e}"
            )
            with connection.cursor() as cursor:
                cursor.execute(sql, [key, connection.ops.adapt_datetimefield_value(until)])
        elif not rows.filter(key=key).update(count=1, expires_at=until):
            if not self._insert(key, 1, until):
                rows.filter(key=key).update(count=1, expires_at=until)

    def held(self, key: str) -> int | None:
        return self._left(key, self.clock(), alive=True)

    def incr(self, key: str, ttl: int) -> int:
        """One upsert on PostgreSQL and SQLite (``RETURNING`` the new count); elsewhere an
        ``UPDATE`` (or the first ``INSERT``) and a ``SELECT`` of the count. The row expires
        ``ttl`` seconds after this increment (the purge removes it then)."""
        until = epoch_datetime(self.clock() + ttl)
        self._maybe_purge()
        if _sql.returning(self.using):
            connection = connections[self.using]
            qn = connection.ops.quote_name
            t, k, c, e = qn(self._model._meta.db_table), qn("key"), qn("count"), qn("expires_at")
            sql = (
                f"INSERT INTO {t} ({k}, {c}, {e}) VALUES (%s, 1, %s) "  # noqa: S608
                f"ON CONFLICT ({k}) DO UPDATE SET {c} = {t}.{c} + 1, {e} = excluded.{e} "
                f"RETURNING {c}"
            )
            with connection.cursor() as cursor:
                cursor.execute(sql, [key, connection.ops.adapt_datetimefield_value(until)])
                return int(cursor.fetchone()[0])
        rows = self._model.objects.using(self.using).filter(key=key)
        if not rows.update(count=F("count") + 1, expires_at=until):
            if self._insert(key, 1, until):
                return 1
            rows.update(count=F("count") + 1, expires_at=until)
        # MySQL: the count as read just after (another increment may have come in between).
        return int(next(iter(rows.values_list("count", flat=True)), 1))

    def count(self, key: str) -> int:
        """One ``SELECT`` of the row's count."""
        rows = self._model.objects.using(self.using).filter(key=key)
        return int(next(iter(rows.values_list("count", flat=True)[:1]), 0))  # no ORDER BY

    def forget(self, keys: Sequence[str], *, windows: Iterable[int] = ()) -> int:
        """Delete the rows ``<key>`` and ``<key>:...`` of every key (``windows`` is not
        needed: the rows are found by their keys). A ``LIKE`` prefix match that no index
        serves (a scan of the counters, which the purge keeps small), then the matching
        rows' exact keys checked in Python (SQLite's ``LIKE`` ignores case) and deleted by
        id, a hundred keys at a time."""
        rows = self._model.objects.using(self.using)
        deleted = 0
        for start in range(0, len(keys), 100):
            chunk = list(dict.fromkeys(keys[start : start + 100]))
            exact, prefixes = set(chunk), tuple(f"{key}:" for key in chunk)
            found = Q(key__in=chunk)
            for prefix in prefixes:
                found |= Q(key__startswith=prefix)
            ids = [
                pk
                for pk, key in rows.filter(found).values_list("pk", "key")
                if key in exact or key.startswith(prefixes)
            ]
            if ids:
                deleted += rows.filter(pk__in=ids).delete()[0]
        return deleted

    def _current(self, hits: Sequence[tuple[str, Rate]], now: float) -> Counts:
        rows = {(key, rate.window): _rows([(key, rate)], now)[0].key for key, rate in hits}
        found = dict(
            self._model.objects.using(self.using)
            .filter(key__in=list(rows.values()))
            .values_list("key", "count")
        )
        return {name: found.get(full, 0) for name, full in rows.items()}

    def _left(self, key: str, now: float, *, alive: bool = False) -> int | None:
        """The whole seconds (at least 1) ``key``'s row holds past ``now``; None without a
        row (or, with ``alive``, without one still held at ``now``). One SELECT."""
        rows = self._model.objects.using(self.using).filter(key=key)
        if alive:
            rows = rows.filter(expires_at__gt=epoch_datetime(now))
        until = next(iter(rows.values_list("expires_at", flat=True)[:1]), None)  # no ORDER BY
        if until is None:
            return None
        return max(1, math.ceil((until - epoch_datetime(now)).total_seconds()))

    def give_back(
        self, claim: tuple[str, int] | None, hits: Sequence[tuple[str, Rate]], now: float
    ) -> None:
        """Undo a successful :meth:`acquire` in one ``UPDATE``: each hit's row (in the
        window of ``now``, the acquire's) loses one, and the claim ends at once."""
        self._give_back_rows(
            None if claim is None else claim[0], [row.key for row in _rows(hits, now)], now
        )

    def _give_back_rows(self, claim: str | None, keys: Sequence[str], now: float) -> None:
        """One UPDATE: each of ``keys`` loses one (not below zero), and ``claim`` ends (its
        deadline set to the store's present, so the next claim takes it over)."""
        if claim is None and not keys:
            return
        connection = connections[self.using]
        params: list[Any] = []
        if claim is not None:
            ended = connection.ops.adapt_datetimefield_value(epoch_datetime(min(now, self.clock())))
            params += [claim, claim, ended, claim]
        params += keys
        sql = _give_back_sql(self.using, self._model._meta.db_table, len(keys), claim is not None)
        with connection.cursor() as cursor:
            cursor.execute(sql, params)


@functools.cache
def _purge_sql(alias: str, table: str) -> str:
    """The DELETE of the expired rows. On PostgreSQL it never waits for a row: it skips
    the rows other statements hold (``FOR UPDATE SKIP LOCKED``; a later purge takes them).
    A plain DELETE locks expired rows in the order it finds them, which is no order the
    upsert and the refund keep: two purges and a refund at once deadlocked (found by the
    suite, on 20 threads of sends and refunds). Elsewhere (SQLite's one writer; MySQL,
    which cannot DELETE from a subquery of its own table) the plain DELETE."""
    connection = connections[alias]
    qn = connection.ops.quote_name
    t, pk, e = qn(table), qn("id"), qn("expires_at")
    if connection.vendor == "postgresql":
        return (
            f"DELETE FROM {t} WHERE {pk} IN (SELECT {pk} FROM {t} "  # noqa: S608
            f"WHERE {e} <= %s FOR UPDATE SKIP LOCKED)"
        )
    return f"DELETE FROM {t} WHERE {e} <= %s"  # noqa: S608


@functools.cache
def _give_back_sql(alias: str, table: str, keys: int, claim: bool) -> str:
    """The UPDATE of :meth:`DatabaseStore._give_back_rows` (plain SQL: the ORM's query
    building cost more than the statement), built once per shape. Parameters: for a claim
    its key twice, the present and its key again; then the keys.

    On PostgreSQL the rows are locked in key order first (``SELECT ... ORDER BY key FOR
    UPDATE``), the order :meth:`DatabaseStore.acquire`'s upsert takes them in: an UPDATE
    alone locks rows in the order it finds them, and a refund crossing a send that shares
    its rows (one address, one number, the site's budget) would deadlock with it."""
    connection = connections[alias]
    qn = connection.ops.quote_name
    t, pk, k, c, e = qn(table), qn("id"), qn("key"), qn("count"), qn("expires_at")
    counted = f"({c} > 0 AND {k} IN ({', '.join(['%s'] * keys)}))" if keys else ""
    if claim:
        sets = (
            f"{c} = CASE WHEN {k} = %s THEN {c} ELSE {c} - 1 END, "
            f"{e} = CASE WHEN {k} = %s THEN %s ELSE {e} END"
        )
        which = f"{k} = %s" + (f" OR {counted}" if counted else "")
    else:
        sets, which = f"{c} = {c} - 1", counted
    if connection.vendor == "postgresql":
        which = f"{pk} IN (SELECT {pk} FROM {t} WHERE {which} ORDER BY {k} FOR UPDATE)"  # noqa: S608
    return f"UPDATE {t} SET {sets} WHERE {which}"  # noqa: S608


@dataclass(frozen=True)
class _Row:
    """One cap's row for a request: its current window's key and its previous one's."""

    key: str
    previous: str
    rate: Rate
    at: _Position
    #: The hit's own key (without window and index), as the caller named it.
    hit: str


def _rows(hits: Sequence[tuple[str, Rate]], now: float) -> list[_Row]:
    """The distinct rows ``hits`` count in at ``now``, in key order (the order the statement
    locks them in); of two rates on one row, the tighter one."""
    rows: dict[str, _Row] = {}
    for key, rate in hits:
        at = _position(rate, now)
        window = f"{key}:{rate.window}"
        row = _Row(f"{window}:{at.index}", f"{window}:{at.index - 1}", rate, at, key)
        known = rows.get(row.key)
        if known is None or rate.limit < known.rate.limit:
            rows[row.key] = row
    return [rows[key] for key in sorted(rows)]


@functools.cache
def _acquire_sql(alias: str, table: str, values: int, claim: bool, blocks: int) -> str:
    """The one statement of :meth:`DatabaseStore.acquire` for ``values`` rows (the claim's
    included; 0: the rows come as seven arrays, on PostgreSQL), maybe a claim and ``blocks``
    block keys (PostgreSQL and SQLite), built once per shape.

    ``v`` lists the rows: key, expiry, previous window's key (NULL for the claim), waiver
    key (or NULL), and the room's integers ``limit * span``, ``overlap``, ``span``
    (:func:`._base._room`: room = ``(limit * span - prev * overlap) // span``; SQL's division
    truncates where Python's floors, which differs only below zero, where both refuse).
    ``w`` marks the rows whose waiver is held (``n``: they add 0, their room is unbounded);
    ``r`` adds each row's room. A row is inserted when its room is at least one (a claim
    always), or, when it exists, counted when below its room (a claim: taken over when its
    deadline has passed); nothing at all when a block key is held. ``RETURNING`` answers
    each written row's key and count. Parameters, in order: the rows' seven values each,
    the present (for the waivers), the block keys and the present again (when there are
    blocks), then for a claim its key three times and the present."""
    qn = connections[alias].ops.quote_name
    t, key, count, expires = qn(table), qn("key"), qn("count"), qn("expires_at")
    if values:
        value = "(%s, %s, %s, %s, CAST(%s AS BIGINT), CAST(%s AS BIGINT), CAST(%s AS BIGINT))"
        source = "VALUES " + ", ".join([value] * values)
    else:
        source = (
            "SELECT * FROM unnest(%s::text[], %s::timestamptz[], %s::text[], %s::text[], "
            "%s::bigint[], %s::bigint[], %s::bigint[])"
        )
    # Names from the model, quoted; every value is a parameter.
    room_of = f"(SELECT r.room FROM r WHERE r.k = {t}.{key})"  # noqa: S608
    add_of = f"(SELECT r.n FROM r WHERE r.k = {t}.{key})"  # noqa: S608
    below_room = f"{t}.{count} < {room_of}"
    if claim:
        set_count = f"CASE WHEN {t}.{key} = %s THEN 1 ELSE {t}.{count} + {add_of} END"
        set_expires = f"CASE WHEN {t}.{key} = %s THEN excluded.{expires} ELSE {t}.{expires} END"
        room_ok = f"CASE WHEN {t}.{key} = %s THEN {t}.{expires} <= %s ELSE {below_room} END"
    else:
        set_count = f"{t}.{count} + {add_of}"
        set_expires = f"{t}.{expires}"
        room_ok = below_room
    unblocked = ""
    if blocks:
        held = ", ".join(["%s"] * blocks)
        unblocked = (
            f" AND NOT EXISTS (SELECT 1 FROM {t} b WHERE b.{key} IN ({held}) "  # noqa: S608
            f"AND b.{expires} > %s)"
        )
    return (
        f"WITH v(k, e, p, wk, ls, ov, sp) AS ({source}), "  # noqa: S608
        f"w(k, e, p, ls, ov, sp, waived) AS (SELECT v.k, v.e, v.p, v.ls, v.ov, v.sp, "
        f"CASE WHEN v.wk IS NOT NULL AND EXISTS (SELECT 1 FROM {t} h WHERE h.{key} = v.wk "
        f"AND h.{expires} > %s) THEN 1 ELSE 0 END FROM v), "
        f"r(k, e, room, n) AS (SELECT w.k, w.e, CASE WHEN w.p IS NULL THEN 1 "
        f"WHEN w.waived = 1 THEN 9223372036854775807 ELSE "
        f"(w.ls - COALESCE((SELECT c.{count} FROM {t} c WHERE c.{key} = w.p), 0) * w.ov) / w.sp "
        f"END, 1 - w.waived FROM w) "
        f"INSERT INTO {t} ({key}, {count}, {expires}) "
        f"SELECT r.k, r.n, r.e FROM r WHERE r.room >= 1{unblocked} ORDER BY r.k "
        f"ON CONFLICT ({key}) DO UPDATE SET {count} = {set_count}, {expires} = {set_expires} "
        f"WHERE {room_ok} RETURNING {key}, {count}"
    )
