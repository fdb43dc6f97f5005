"""What each request costs the database (issue 12), on PostgreSQL and on SQLite.

Finding: a send-code issued 12 SQL statements in 8 writes (a SELECT and an UPDATE per cap,
an INSERT with its savepoint per new window), a verify-code 12 for a right code and 16 for a
wrong one. Now each is pinned, statement by statement, with the database rate-limit store
and the occasional purge of expired counters forced on (the worst case); a project's own
session and middleware queries are not counted (the session lives in a signed cookie here).
The README's "What each request costs" says what each statement is for.

Every statement of the hot path is also planned with ``EXPLAIN`` and must use an index, so
a request's cost does not grow with the verification table (``bench/load.py`` measures it
with 100,000 old verifications).

These tests use ``transaction=True``: the requests run as in production, in autocommit, and
the counts include no savepoint of a test transaction.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from django.contrib.sessions.backends.signed_cookies import SessionStore
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from rest_framework.test import APIClient

from textflow_django import _sql, fraud, verification
from textflow_django.models import PhoneVerification
from textflow_django.ratelimit import DatabaseStore

pytestmark = [pytest.mark.django_db(transaction=True)]

NUMBER = "+12025550143"
SEND = "/api/phone/send-code/"
VERIFY = "/api/phone/verify-code/"
#: Every scope counted, a second rate on most, and the Fraud Guard's counters (on by
#: default): still one statement.
EVERY_SCOPE = {
    "SEND_LIMITS": {
        "number": ("5/h", "10/d"),
        "ip": ("20/h", "50/d"),
        "network": ("60/h",),
        "global": ("1000/h", "10000/d"),
        "country": ("300/h",),
    },
    "FAILED_CHECK_LIMITS": {"ip": ("60/h", "300/d"), "network": ("200/h",)},
}


@pytest.fixture(autouse=True)
def _worst_case(settings: Any, monkeypatch: pytest.MonkeyPatch, transactional_db: None) -> None:
    """Every scope counted, the purge of expired counters on every write (it runs one
    write in 50), sessions in a signed cookie (no query of their own)."""
    settings.TEXTFLOW = {**settings.TEXTFLOW, **EVERY_SCOPE, "RATELIMIT_STORE": "database"}
    settings.SESSION_ENGINE = "django.contrib.sessions.backends.signed_cookies"
    monkeypatch.setattr(DatabaseStore, "purge_one_in", 1)
    # A site that has verified US numbers, and a process that has marked it today and knows
    # it (the once-a-day mark and the once-a-process read have tests of their own).
    fraud.mark_known(DatabaseStore(), "US")


def kinds(context: CaptureQueriesContext) -> list[str]:
    """Each statement as what it does: ``counters`` (the store's one upsert), ``purge``,
    ``refund`` (the store's give-back), ``record`` (the verification's INSERT),
    ``supersede``, ``attempt`` (verify-code's UPDATE ... RETURNING), ``find`` (the
    SELECT that says why no attempt was taken), ``verified``, ``lock``, ``held`` (a refused
    send reading the cooldown's end)."""
    names = []
    for query in context.captured_queries:
        sql = query["sql"]
        if sql.startswith("WITH v("):
            names.append("counters")
        elif sql.startswith('DELETE FROM "textflow_ratelimitcounter"'):
            names.append("purge")
        elif sql.startswith('UPDATE "textflow_ratelimitcounter"'):
            names.append("refund")
        elif sql.startswith('INSERT INTO "textflow_ratelimitcounter"'):
            names.append("known")
        elif "'breaker:" in sql:  # the shared circuit breaker's reads of its failure count
            names.append("breaker")
        elif sql.startswith('SELECT "textflow_ratelimitcounter"'):
            names.append("held")
        elif sql.startswith('INSERT INTO "textflow_phoneverification"'):
            names.append("record")
        elif sql.startswith('UPDATE "textflow_phoneverification" SET "attempts" = "attempts" + 1'):
            names.append("attempt")
        elif sql.startswith('SELECT "textflow_phoneverification"'):
            names.append("find")
        elif "'superseded'" in sql:
            names.append("supersede")
        elif "'verified'" in sql:
            names.append("verified")
        elif "'locked'" in sql:
            names.append("lock")
        else:
            names.append(sql)
    return names


def session_client() -> APIClient:
    """A client already holding a session (a signed cookie)."""
    session = SessionStore()
    session["seen"] = True
    session.save()
    api = APIClient()
    api.cookies["sessionid"] = session.session_key
    return api


def sent(api: APIClient, outbox: list[Any], number: str = NUMBER) -> tuple[str, str]:
    response = api.post(SEND, {"phone_number": number}, format="json")
    assert response.status_code == 200, response.content
    return response.json()["verification_id"], outbox[-1].text.rsplit(" ", 1)[-1]


# -- send-code: at most 4 statements ----------------------------------------------------


def test_send_code_from_a_fresh_client(sms_outbox: Any, django_assert_max_num_queries: Any) -> None:
    with django_assert_max_num_queries(4) as context:
        sent(APIClient(), sms_outbox)
    assert kinds(context) == ["counters", "purge", "record"]


def test_send_code_that_replaces_the_sessions_previous_code(
    settings: Any, sms_outbox: Any, django_assert_max_num_queries: Any
) -> None:
    settings.TEXTFLOW = {**settings.TEXTFLOW, "RESEND_COOLDOWN": 0}
    api = session_client()
    sent(api, sms_outbox)
    with django_assert_max_num_queries(4) as context:
        sent(api, sms_outbox)
    assert kinds(context) == ["counters", "purge", "record", "supersede"]
    statuses = PhoneVerification.objects.order_by("id").values_list("status", flat=True)
    assert list(statuses) == ["superseded", "pending"]


def test_send_code_by_the_site_itself(sms_outbox: Any, django_assert_max_num_queries: Any) -> None:
    with django_assert_max_num_queries(4) as context:
        verification.send_code(NUMBER)
    assert kinds(context) == ["counters", "purge", "record", "supersede"]


def test_a_refused_send_costs_no_more(sms_outbox: Any, django_assert_max_num_queries: Any) -> None:
    api = APIClient()
    sent(api, sms_outbox)
    with django_assert_max_num_queries(4) as context:
        response = api.post(SEND, {"phone_number": NUMBER}, format="json")
    assert response.status_code == 429
    # The statement took the caps but not the cooldown: it gives them back, then reads the
    # cooldown's end for Retry-After.
    assert kinds(context) == ["counters", "refund", "held"]


# -- verify-code: at most 5 statements ----------------------------------------------------


@pytest.mark.parametrize("mode", ["local", "textflow"])
def test_verify_code_right(
    request: pytest.FixtureRequest, settings: Any, mode: str, django_assert_max_num_queries: Any
) -> None:
    if mode == "textflow":
        emulator = request.getfixturevalue("textflow_live")
        fraud.mark_known(DatabaseStore(), "US")  # the fixture reset the process's memory
        settings.TEXTFLOW = {**settings.TEXTFLOW, "VERIFY_MODE": "textflow"}
        api = APIClient()
        response = api.post(SEND, {"phone_number": NUMBER}, format="json")
        handle, code = response.json()["verification_id"], emulator.last_code(NUMBER)
    else:
        handle, code = sent(APIClient(), request.getfixturevalue("sms_outbox"))
    data = {"phone_number": NUMBER, "code": code, "verification_id": handle}
    # Asking TextFlow adds the circuit breaker's two reads of its failure count (its state
    # is the store's): before the call, and after its success, which must clear what other
    # workers counted while it was in flight.
    breaker = ["breaker", "breaker"] if mode == "textflow" else []
    with django_assert_max_num_queries(5 + len(breaker)) as context:
        response = APIClient().post(VERIFY, data, format="json")
    assert response.status_code == 200, response.content
    assert kinds(context) == ["counters", "purge", "attempt", *breaker, "verified", "refund"]
    row = PhoneVerification.objects.get()
    assert (row.status, row.attempts) == ("verified", 0)


def test_the_first_verification_of_a_country_today_marks_it_known(
    monkeypatch: pytest.MonkeyPatch, sms_outbox: Any, django_assert_max_num_queries: Any
) -> None:
    """Once a day per country and process, a right code also renews the country's "verified
    here" mark for the Fraud Guard's new-country cap: one more statement."""
    fraud.forget()
    handle, code = sent(APIClient(), sms_outbox)
    data = {"phone_number": NUMBER, "code": code, "verification_id": handle}
    with django_assert_max_num_queries(6) as context:
        assert APIClient().post(VERIFY, data, format="json").status_code == 200
    assert kinds(context) == ["counters", "purge", "attempt", "verified", "refund", "known"]
    assert DatabaseStore().held("fraud:known:US") == 30 * 86400


def test_the_first_send_to_a_country_in_a_process_reads_whether_it_is_known(
    sms_outbox: Any, django_assert_max_num_queries: Any
) -> None:
    """Once per country and process (and a minute at most for an unknown one): a send to a
    known country then adds nothing to its round trip."""
    fraud.forget()
    with django_assert_max_num_queries(5) as context:
        sent(APIClient(), sms_outbox)
    assert kinds(context) == ["held", "counters", "purge", "record"]
    with django_assert_max_num_queries(4) as context:
        sent(APIClient(), sms_outbox, "+12025550144")
    assert kinds(context) == ["counters", "purge", "record"]


def test_a_send_the_fraud_guard_does_not_apply_to_reads_nothing_of_it(
    settings: Any, sms_outbox: Any, django_assert_max_num_queries: Any
) -> None:
    """A number in ALLOW_PREFIXES: no read of whether its country is known."""
    settings.TEXTFLOW = {**settings.TEXTFLOW, "FRAUD_GUARD": {"ALLOW_PREFIXES": ["+1202"]}}
    fraud.forget()
    with django_assert_max_num_queries(4) as context:
        sent(APIClient(), sms_outbox)
    assert kinds(context) == ["counters", "purge", "record"]


def test_verify_code_wrong_then_locked(sms_outbox: Any, django_assert_max_num_queries: Any) -> None:
    handle, code = sent(APIClient(), sms_outbox)
    wrong = {"phone_number": NUMBER, "code": "000000" if code != "000000" else "111111"}
    wrong["verification_id"] = handle
    for _ in range(4):
        with django_assert_max_num_queries(5) as context:
            assert APIClient().post(VERIFY, wrong, format="json").status_code == 400
        assert kinds(context) == ["counters", "purge", "attempt"]
    with django_assert_max_num_queries(5) as context:
        assert APIClient().post(VERIFY, wrong, format="json").status_code == 400
    assert kinds(context) == ["counters", "purge", "attempt", "lock"]
    assert PhoneVerification.objects.get().status == "locked"
    with django_assert_max_num_queries(5) as context:
        response = APIClient().post(VERIFY, {**wrong, "code": code}, format="json")
    assert response.json()["code"] == "too_many_attempts"
    assert kinds(context) == ["counters", "purge", "attempt", "find", "refund"]


def test_verify_code_with_no_code_to_check(
    sms_outbox: Any, django_assert_max_num_queries: Any
) -> None:
    """A stranger (no verification_id) and the holder of an expired code: the attempt finds
    nothing to take, and one SELECT says why."""
    handle, _code = sent(APIClient(), sms_outbox)
    data = {"phone_number": NUMBER, "code": "123456"}
    with django_assert_max_num_queries(5) as context:
        assert APIClient().post(VERIFY, data, format="json").json()["code"] == "invalid_code"
    assert kinds(context) == ["counters", "purge", "attempt", "find"]
    PhoneVerification.objects.update(expires_at=timezone.now() - dt.timedelta(seconds=1))
    with django_assert_max_num_queries(5) as context:
        response = APIClient().post(VERIFY, {**data, "verification_id": handle}, format="json")
    assert response.json()["code"] == "expired"
    # Not a guess: the wrong-code slot is given back.
    assert kinds(context) == ["counters", "purge", "attempt", "find", "refund"]


# -- the path of databases without RETURNING (MySQL, MariaDB) ---------------------------


@contextmanager
def without_returning(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """As on MySQL: no upsert or UPDATE with RETURNING; the store's one-by-one operations
    and verify-code's SELECT ... FOR UPDATE take over."""
    with monkeypatch.context() as patch:
        patch.setattr(_sql, "returning", lambda alias: False)
        yield


def test_the_fallback_path_keeps_every_rule(
    monkeypatch: pytest.MonkeyPatch, settings: Any, sms_outbox: Any
) -> None:
    settings.TEXTFLOW = {**settings.TEXTFLOW, "MAX_ATTEMPTS": 2}
    with without_returning(monkeypatch):
        api = APIClient()
        handle, code = sent(api, sms_outbox)
        assert api.post(SEND, {"phone_number": NUMBER}, format="json").status_code == 429
        data = {"phone_number": NUMBER, "verification_id": handle}
        wrong = "000000" if code != "000000" else "111111"
        answers = [api.post(VERIFY, {**data, "code": c}, format="json") for c in (wrong, code)]
        assert [a.status_code for a in answers] == [400, 200]
        assert PhoneVerification.objects.get().status == "verified"
        # Locked after MAX_ATTEMPTS wrong codes; expired is told to the holder.
        settings.TEXTFLOW = {**settings.TEXTFLOW, "RESEND_COOLDOWN": 0}
        handle, code = sent(api, sms_outbox, "+12025550144")
        data = {"phone_number": "+12025550144", "verification_id": handle}
        codes = [wrong, wrong, code]
        answers = [api.post(VERIFY, {**data, "code": c}, format="json").json() for c in codes]
        assert [a["code"] for a in answers] == ["invalid_code", "invalid_code", "too_many_attempts"]
        handle, code = sent(api, sms_outbox, "+12025550145")
        PhoneVerification.objects.filter(phone_number="+12025550145").update(
            expires_at=timezone.now() - dt.timedelta(seconds=1)
        )
        data = {"phone_number": "+12025550145", "verification_id": handle, "code": code}
        assert api.post(VERIFY, data, format="json").json()["code"] == "expired"


# -- every statement uses an index -----------------------------------------------------


@contextmanager
def statements() -> Iterator[list[tuple[str, Any]]]:
    """Every statement run inside, with its parameters (to plan them again)."""
    seen: list[tuple[str, Any]] = []

    def record(execute: Callable[..., Any], sql: str, params: Any, many: bool, ctx: Any) -> Any:
        seen.append((sql, params))
        return execute(sql, params, many, ctx)

    with connection.execute_wrapper(record):
        yield seen


def plan(sql: str, params: Any) -> str:
    """The database's plan for ``sql``, as text; on PostgreSQL with sequential scans made
    as costly as they can be, so the plan shows a seq scan only where no index serves."""
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("SET enable_seqscan = off")
            try:
                cursor.execute(f"EXPLAIN {sql}", params)
                return "\n".join(row[0] for row in cursor.fetchall())
            finally:
                cursor.execute("SET enable_seqscan = on")
        cursor.execute(f"EXPLAIN QUERY PLAN {sql}", params)
        return "\n".join(str(row[-1]) for row in cursor.fetchall())


def full_scans(text: str) -> list[str]:
    """The lines of a plan that read a whole table (or a whole index) of this app:
    PostgreSQL's "Seq Scan", SQLite's "SCAN" of anything but the statement's own VALUES."""
    found = []
    for line in (raw.strip() for raw in text.splitlines()):
        if "Seq Scan on textflow_" in line or (
            line.startswith("SCAN ") and not re.match(r"SCAN (v|w|r|\d+ CONSTANT ROWS)$", line)
        ):
            found.append(line)
    return found


def test_every_statement_of_the_hot_path_uses_an_index(sms_outbox: Any) -> None:
    for i in range(50):  # old rows of other numbers, in other prefixes
        verification.send_code(f"+1202{300 + i:03d}0143")
    with statements() as seen:
        api = session_client()
        handle, code = sent(api, sms_outbox)
        refused = APIClient().post(SEND, {"phone_number": NUMBER}, format="json")
        assert refused.status_code == 429  # the cooldown
        verification.send_code("+12025550198")  # the site's own: supersedes older codes
        wrong = "000000" if code != "000000" else "111111"
        data = {"phone_number": NUMBER, "verification_id": handle}
        api.post(VERIFY, {**data, "code": wrong}, format="json")
        api.post(VERIFY, {"phone_number": NUMBER, "code": wrong}, format="json")
        handle, code = sent(APIClient(), sms_outbox, "+12025550199")
        data = {"phone_number": "+12025550199", "verification_id": handle, "code": code}
        assert APIClient().post(VERIFY, data, format="json").status_code == 200
    ours = [(sql, p) for sql, p in seen if "textflow_" in sql]
    assert len(ours) > 15
    # The check can fail: a lookup no index serves is caught.
    unindexed = 'SELECT "id" FROM "textflow_phoneverification" WHERE "code_hash" = %s'
    assert full_scans(plan(unindexed, ["x"]))
    scans = {sql[:120]: full_scans(plan(sql, p)) for sql, p in ours}
    assert {sql: s for sql, s in scans.items() if s} == {}


def test_the_counter_table_keeps_only_the_indexes_its_queries_use() -> None:
    """Every new counter row pays for each index, and a send writes about ten: the primary
    key, the key's uniqueness (the upsert's arbiter) and the expiry (the purge), no more
    (``unique=True`` added a pattern-matching index on PostgreSQL that nothing used)."""
    with connection.cursor() as cursor:
        found = connection.introspection.get_constraints(cursor, "textflow_ratelimitcounter")
    indexed = {tuple(c["columns"]) for c in found.values() if c["index"] or c["unique"]}
    # (SQLite's introspection does not list the rowid primary key: it is the table itself.)
    assert indexed - {("id",)} == {("expires_at",), ("key",)}
    assert len([c for c in found.values() if c["index"] or c["unique"]]) == len(indexed)
