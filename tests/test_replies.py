"""The replies webhook (``textflow:replies``) and the service behind it
(``textflow_django.replies``): the secret, idempotent deliveries, the opt-out and opt-in
keywords of every shipped language, confirmations, the webhook's limits, the settings and
their checks. SQLite and PostgreSQL (the concurrent deliveries need PostgreSQL)."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import logging
import unicodedata
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.db import connection, connections, transaction
from django.db.models.signals import post_save
from django.test import Client
from django.urls import resolve, reverse
from django.utils import timezone, translation

import textflow_django
from textflow_django import checks, optouts, replies, signals
from textflow_django.backends import get_backend, locmem
from textflow_django.conf import conf
from textflow_django.exceptions import InsufficientBalance, TextFlowOptedOut, TextFlowTimeout
from textflow_django.models import OptOut, SMSReply
from textflow_django.ratelimit import DatabaseStore

from .conftest import race, requires_postgres, requires_redis, tf

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("no_secrets_in_logs")]

URL = "/api/phone/replies/"
NUMBER = "+12025550143"
MASKED = "+1********43"
OTHER = "+12025550144"
SECRET = "s3cr3t-Reply-Webhook-Secret-0123456789abcdef"


@pytest.fixture(autouse=True)
def configured(settings: Any) -> None:
    """The webhook on (REPLY_SECRET set), as every test but the 404 one wants it."""
    tf(settings, REPLY_SECRET=SECRET)


@pytest.fixture
def web() -> Client:
    return Client()


@pytest.fixture
def deliver(web: Client, django_capture_on_commit_callbacks: Any):
    """POST a reply as TextFlow does (commit callbacks run: signals, confirmations)."""

    def post(
        text: str = "hello",
        number: str = NUMBER,
        secret: object = SECRET,
        client: Client | None = None,
        **extra: Any,
    ) -> Any:
        payload = {"phone_number": number, "text": text, "secret": secret}
        with django_capture_on_commit_callbacks(execute=True):
            return (client or web).post(
                URL, data=json.dumps(payload), content_type="application/json", **extra
            )

    return post


@pytest.fixture
def take(django_capture_on_commit_callbacks: Any):
    """Call ``replies.receive`` with its commit callbacks run."""

    def call(number: str, text: str, **kwargs: Any) -> replies.ReceiveResult:
        with django_capture_on_commit_callbacks(execute=True):
            return replies.receive(number, text, **kwargs)

    return call


class Recorder:
    """The keyword arguments of every send of one signal."""

    def __init__(self, signal: Any) -> None:
        self.signal = signal
        self.calls: list[dict[str, Any]] = []
        signal.connect(self.receive, weak=False)

    def receive(self, sender: Any, **kwargs: Any) -> None:
        self.calls.append({"sender": sender, **kwargs})

    def close(self) -> None:
        self.signal.disconnect(self.receive)


@pytest.fixture
def record():
    made: list[Recorder] = []

    def make(signal: Any) -> Recorder:
        made.append(Recorder(signal))
        return made[-1]

    yield make
    for recorder in made:
        recorder.close()


class Clock:
    """A store clock the test moves (no real sleep)."""

    def __init__(self, now: float = 1_750_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    """The replies service's rate-limit store on a clock the test moves."""
    moment = Clock()
    monkeypatch.setattr(replies, "get_store", lambda: DatabaseStore(clock=moment))
    return moment


class BrokenStore:
    """A rate-limit store whose every call fails, as Redis gone away would."""

    def __getattr__(self, name: str) -> Any:
        def fail(*args: object, **kwargs: object) -> None:
            raise ConnectionError("store went away")

        return fail


# -- the webhook -------------------------------------------------------------------------------


def test_url_name() -> None:
    assert reverse("textflow:replies") == URL


def test_a_reply_is_stored_signalled_and_answered_ok(deliver, record, caplog) -> None:
    caplog.set_level(logging.INFO, logger="textflow_django")
    received = record(signals.sms_received)
    response = deliver("Thanks, see you at 5", number="+1 (202) 555-0143")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    reply = SMSReply.objects.get()
    assert (reply.phone_number, reply.text, reply.action) == (
        NUMBER,
        "Thanks, see you at 5",
        "",
    )
    expected = hashlib.sha256(f"{NUMBER}\nThanks, see you at 5".encode()).hexdigest()
    assert reply.digest == expected
    assert received.calls == [
        {
            "sender": SMSReply,
            "signal": signals.sms_received,
            "reply": reply,
            "phone_number": NUMBER,
            "text": "Thanks, see you at 5",
        }
    ]
    assert f"textflow.reply.received number={MASKED} action=none" in caplog.text
    assert "see you" not in caplog.text
    assert not OptOut.objects.exists()


@pytest.mark.parametrize(
    ("given", "region", "expected"),
    [
        ("+12025550143", None, NUMBER),
        ("12025550143", None, NUMBER),  # Android may give the sender without its +
        ("0612345678", "FR", "+33612345678"),
        ("+33 6 12 34 56 78", "US", "+33612345678"),
    ],
)
def test_the_sender_is_normalised(settings, take, given, region, expected) -> None:
    tf(settings, DEFAULT_REGION=region)
    assert take(given, "hi").phone_number == expected
    assert SMSReply.objects.get().phone_number == expected


def test_a_sender_from_a_country_the_site_does_not_text_may_still_opt_out(settings, take):
    tf(settings, ALLOWED_COUNTRIES=["FR"])
    assert take(NUMBER, "STOP").changed
    assert optouts.is_opted_out(NUMBER)


def test_off_without_a_secret_404(settings, deliver) -> None:
    tf(settings, REPLY_SECRET="")
    response = deliver("STOP", secret="")
    assert response.status_code == 404
    assert response.json()["code"] == "not_configured"
    assert not SMSReply.objects.exists()
    assert not OptOut.objects.exists()


@pytest.mark.parametrize(
    "secret",
    [SECRET[:-1] + "X", SECRET + "x", "", None, 123, [SECRET], {"s": SECRET}, SECRET.upper()],
    ids=["last-char", "longer", "empty", "null", "number", "list", "object", "case"],
)
def test_a_wrong_secret_is_403_and_logged_without_the_body(deliver, caplog, secret) -> None:
    caplog.set_level(logging.DEBUG)
    response = deliver("STOP-unique-text-0143", secret=secret)
    assert response.status_code == 403
    assert response.json()["code"] == "bad_secret"
    assert not SMSReply.objects.exists()
    assert not OptOut.objects.exists()
    assert "textflow.reply.rejected reason=bad_secret" in caplog.text
    # Not the client's address: personal data no erasure could take back out of the logs.
    for leaked in ("STOP-unique-text-0143", NUMBER, "202", SECRET[:12], "127.0.0.1", "ip="):
        assert leaked not in caplog.text


def test_a_missing_secret_is_403(web, caplog) -> None:
    caplog.set_level(logging.INFO)
    payload = {"phone_number": NUMBER, "text": "STOP"}
    response = web.post(URL, data=json.dumps(payload), content_type="application/json")
    assert response.status_code == 403
    assert "reason=bad_secret" in caplog.text
    assert not OptOut.objects.exists()


def test_the_secret_is_compared_with_hmac_compare_digest(deliver, monkeypatch) -> None:
    """Constant time: the comparison is hmac.compare_digest's, never ``==``."""
    calls: list[tuple[object, object]] = []
    original = hmac.compare_digest

    def spy(a: Any, b: Any) -> bool:
        calls.append((a, b))
        return original(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    assert deliver("hi", secret="w" * len(SECRET)).status_code == 403
    assert calls == [(b"w" * len(SECRET), SECRET.encode())]
    calls.clear()
    assert deliver("hi").status_code == 200
    assert calls == [(SECRET.encode(), SECRET.encode())]


def test_secret_matches_takes_only_a_non_empty_string(settings) -> None:
    assert replies.secret_matches(SECRET)
    assert replies.secret_matches("é" * 3) is False  # non-ASCII: no TypeError
    for given in ("", None, 1, b"x", [SECRET]):
        assert replies.secret_matches(given) is False
    tf(settings, REPLY_SECRET="")
    assert replies.secret_matches("") is False


def test_the_secret_is_checked_before_the_fields(deliver) -> None:
    """Without the secret, nothing is told about the body."""
    response = deliver("x" * (replies.MAX_TEXT_LENGTH + 1), number="nope", secret="wrong")
    assert response.status_code == 403


def test_a_retry_is_stored_once_and_signalled_once(deliver, record, caplog) -> None:
    caplog.set_level(logging.INFO, logger="textflow_django")
    received, out = record(signals.sms_received), record(signals.opted_out)
    first, second = deliver("STOP"), deliver("STOP")
    assert (first.status_code, second.status_code) == (200, 200)
    assert second.json() == {"status": "ok"}
    assert SMSReply.objects.count() == 1
    assert len(received.calls) == 1
    assert len(out.calls) == 1
    assert f"textflow.reply.received number={MASKED} action=retry" in caplog.text


def test_stop_start_stop_in_one_day_are_three_replies(take, record) -> None:
    """A retry is the number's last delivery again: STOP after START is a new STOP."""
    out, back = record(signals.opted_out), record(signals.opted_in)
    assert take(NUMBER, "STOP").changed
    assert take(NUMBER, "START").changed
    third = take(NUMBER, "STOP")
    assert not third.duplicate and third.changed
    assert optouts.is_opted_out(NUMBER)
    assert list(SMSReply.objects.order_by("pk").values_list("action", flat=True)) == [
        "opt_out",
        "opt_in",
        "opt_out",
    ]
    assert (len(out.calls), len(back.calls)) == (2, 1)


def test_a_second_stop_after_the_site_opted_the_number_back_in_is_honoured(take, record):
    """STOP, the person opts back in on the website (optouts.opt_in, source api), STOP
    again within the day: the second STOP looks like a retry of the first (same number and
    text, no reply between), and is applied all the same."""
    out = record(signals.opted_out)
    assert take(NUMBER, "STOP").changed
    optouts.opt_in(NUMBER, source="api")
    second = take(NUMBER, "STOP")
    assert (second.duplicate, second.changed) == (True, True)
    assert optouts.is_opted_out(NUMBER)
    assert OptOut.objects.get().source == "reply"
    assert len(out.calls) == 2
    assert SMSReply.objects.count() == 1  # still taken for a retry: stored once


def test_a_retried_stop_changes_nothing(take, record) -> None:
    out = record(signals.opted_out)
    take(NUMBER, "STOP")
    again = take(NUMBER, "STOP")
    assert (again.duplicate, again.changed) == (True, False)
    assert len(out.calls) == 1


def test_a_start_retried_after_a_stop_does_not_undo_it(take, record) -> None:
    """START (its 200 lost), STOP, then TextFlow's retry of that START hours later: an
    opt-in is a retry when any reply of the number with its text is within the window, so
    the STOP stands (the safe side: START, STOP, START within a day stays opted out)."""
    back = record(signals.opted_in)
    optouts.opt_out(NUMBER, source="admin")
    assert take(NUMBER, "START").changed
    assert take(NUMBER, "STOP").changed
    retried = take(NUMBER, "START")
    assert (retried.duplicate, retried.changed) == (True, False)
    assert optouts.is_opted_out(NUMBER)
    assert len(back.calls) == 1
    assert SMSReply.objects.count() == 2
    # Written otherwise, it is another text: the person opting back in.
    assert take(NUMBER, "Start").changed
    assert not optouts.is_opted_out(NUMBER)


def test_an_opt_in_after_the_window_is_taken(take, clock) -> None:
    optouts.opt_out(NUMBER, source="admin")
    take(NUMBER, "START")
    take(NUMBER, "STOP")
    later = timezone.now() - dt.timedelta(seconds=replies.DEDUP_WINDOW + 1)
    SMSReply.objects.update(received_at=later)  # a day has passed (the database's clock)
    clock.now += replies.DEDUP_WINDOW + 1  # (the store's)
    assert take(NUMBER, "START").changed
    assert not optouts.is_opted_out(NUMBER)


def test_the_same_text_from_two_numbers_is_two_replies(take) -> None:
    assert not take(NUMBER, "STOP").duplicate
    assert not take(OTHER, "STOP").duplicate
    assert set(OptOut.objects.values_list("phone_number", flat=True)) == {NUMBER, OTHER}


def test_a_delivery_after_the_window_is_a_new_reply(take, clock) -> None:
    assert not take(NUMBER, "hello").duplicate
    clock.now += replies.DEDUP_WINDOW - 1
    assert take(NUMBER, "hello").duplicate
    clock.now += 2
    assert not take(NUMBER, "hello").duplicate
    assert SMSReply.objects.count() == 2


def test_digest_keeps_number_and_text_apart() -> None:
    assert replies.digest("+1202555014", "5 hi") != replies.digest("+12025550145", " hi")


def test_a_failed_store_leaves_the_delivery_to_the_next_attempt(take, monkeypatch) -> None:
    """The claim is released when storing fails: TextFlow's retry is then taken."""

    def broken(number: str, **kwargs: Any) -> bool:
        raise RuntimeError("database hiccup")

    monkeypatch.setattr(optouts, "opt_out", broken)
    with pytest.raises(RuntimeError):
        take(NUMBER, "STOP")
    assert not SMSReply.objects.exists()
    monkeypatch.undo()
    result = take(NUMBER, "STOP")
    assert not result.duplicate and result.changed
    assert SMSReply.objects.count() == 1


def test_with_the_store_down_replies_are_still_taken_once(deliver, monkeypatch, caplog):
    caplog.set_level(logging.INFO, logger="textflow_django")
    monkeypatch.setattr(replies, "get_store", BrokenStore)
    assert deliver("STOP").status_code == 200
    assert deliver("STOP").status_code == 200  # the database's last reply stands in
    assert SMSReply.objects.count() == 1
    assert optouts.is_opted_out(NUMBER)
    assert "textflow.store.failed error=ConnectionError detail=reply_dedup" in caplog.text
    assert "detail=reply_rate" in caplog.text  # the rate limit let it through


def test_unstorable_characters_are_kept_as_replacement_characters(take) -> None:
    take(NUMBER, "a\x00b\ud800c")
    assert SMSReply.objects.get().text == "a\ufffdb\ufffdc"


@pytest.mark.parametrize(
    ("text", "stored"),
    [("STOP\x00", "STOP\ufffd"), ("hi\ud800", "hi\ufffd"), ("\x00", "\ufffd")],
    ids=["nul", "surrogate", "nul-only"],
)
def test_unstorable_characters_over_http_are_taken_not_refused(deliver, text, stored) -> None:
    """DRF's CharField refuses NUL and lone surrogates: the serializer replaces them first,
    by replies' one rule, so the webhook answers 200 (a 400 would be retried forever)."""
    response = deliver(text)  # json.dumps writes them as \u0000 and \ud800
    assert response.status_code == 200, response.content
    assert SMSReply.objects.get().text == stored


def test_the_reply_serializer_replaces_by_replies_rule() -> None:
    from textflow_django.serializers import ReplySerializer

    fields = ReplySerializer(data={"phone_number": NUMBER, "text": "a\x00b\udfffc"})
    assert fields.is_valid(), fields.errors
    assert (
        fields.validated_data["text"] == replies.storable_text("a\x00b\udfffc") == "a\ufffdb\ufffdc"
    )


def test_received_at_is_kept(take) -> None:
    moment = dt.datetime(2025, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    take(NUMBER, "hi", received_at=moment)
    assert SMSReply.objects.get().received_at == moment


def test_receive_refuses_a_text_too_long(take) -> None:
    with pytest.raises(ValueError):
        take(NUMBER, "x" * (replies.MAX_TEXT_LENGTH + 1))
    assert not SMSReply.objects.exists()


# -- concurrency (PostgreSQL) ------------------------------------------------------------------


@requires_postgres
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("store", ["database", pytest.param("cache-redis", marks=requires_redis)])
def test_twenty_concurrent_deliveries_store_one_reply(settings, record, store) -> None:
    if store == "cache-redis":
        from django.core.cache import caches

        caches["redis"].clear()
        tf(settings, RATELIMIT_STORE="cache", RATELIMIT_CACHE="redis")
    received, out = record(signals.sms_received), record(signals.opted_out)
    results = race(lambda: replies.receive(NUMBER, "STOP"))
    assert all(isinstance(r, replies.ReceiveResult) for r in results), results
    assert sum(not r.duplicate for r in results) == 1
    assert SMSReply.objects.count() == 1
    assert OptOut.objects.get().phone_number == NUMBER
    assert len(received.calls) == 1
    assert len(out.calls) == 1


# -- a receiver that raises (committed for real: transaction=True) ----------------------------


def _raising(sender: Any, **kwargs: Any) -> None:
    raise RuntimeError("the site's receiver has a bug")


def _post(web: Client, text: str) -> int:
    payload = {"phone_number": NUMBER, "text": text, "secret": SECRET}
    response = web.post(URL, data=json.dumps(payload), content_type="application/json")
    return int(response.status_code)


@pytest.fixture
def connect():
    """Connect receivers for the test, disconnected after it."""
    made: list[tuple[Any, Any, Any]] = []

    def make(signal: Any, receiver: Any, sender: Any = None) -> None:
        signal.connect(receiver, sender=sender, weak=False)
        made.append((signal, receiver, sender))

    yield make
    for signal, receiver, sender in made:
        assert signal.disconnect(receiver, sender=sender)


@pytest.mark.django_db(transaction=True)
def test_a_raising_sms_received_receiver_is_logged_and_the_reply_taken_once(connect, caplog):
    """The receiver runs after the commit: its error must not answer 500 (TextFlow would
    retry) nor release the claim (each retry would be stored again)."""
    connect(signals.sms_received, _raising)
    web = Client(raise_request_exception=False)
    assert [_post(web, "hello") for _ in range(3)] == [200, 200, 200]
    assert SMSReply.objects.count() == 1
    assert "the site's receiver has a bug" in caplog.text  # Django's on_commit log


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("text", ["STOP", "START"])
def test_a_raising_opted_out_or_opted_in_receiver_leaves_the_reply_taken(connect, text):
    if text == "START":
        optouts.opt_out(NUMBER, source="admin")
    connect(signals.opted_out if text == "STOP" else signals.opted_in, _raising)
    web = Client(raise_request_exception=False)
    assert _post(web, text) == 200
    assert optouts.is_opted_out(NUMBER) is (text == "STOP")
    assert SMSReply.objects.count() == 1


@pytest.mark.django_db(transaction=True)
def test_a_commit_callback_that_raises_keeps_the_claim(connect) -> None:
    """Whatever raises once the reply is committed (here a site's own non-robust commit
    callback), the reply is stored: the claim stays, and TextFlow's retry is a retry."""

    def on_save(sender: Any, **kwargs: Any) -> None:
        transaction.on_commit(lambda: _raising(sender))

    connect(post_save, on_save, sender=SMSReply)
    web = Client(raise_request_exception=False)
    assert _post(web, "hello") == 500
    assert _post(web, "hello") == 200
    assert SMSReply.objects.count() == 1


# -- keywords ----------------------------------------------------------------------------------


def _unaccented(text: str) -> str:
    return "".join(ch for ch in unicodedata.normalize("NFD", text) if not unicodedata.combining(ch))


def _variants(keyword: str) -> list[str]:
    """How people type a keyword: any case, accents or not, spaces and punctuation around."""
    plain = _unaccented(keyword)
    return [
        keyword,
        keyword.lower(),
        keyword.title(),
        f"  {keyword}  ",
        f"{keyword.lower()}!",
        f"\n{plain}.\n",
        plain.lower(),
        keyword.replace(" ", "-"),
        keyword.replace(" ", ""),
    ]


OPT_OUTS = [
    pytest.param(language, keyword, id=f"{language}-{keyword}")
    for language, keywords in replies.OPT_OUT_KEYWORDS_BY_LANGUAGE.items()
    for keyword in keywords
]
OPT_INS = [
    pytest.param(language, keyword, id=f"{language}-{keyword}")
    for language, keywords in replies.OPT_IN_KEYWORDS_BY_LANGUAGE.items()
    for keyword in keywords
]


def _shipped_languages() -> set[str]:
    locale = Path(textflow_django.__file__).parent / "locale"
    return {translation.to_language(d.name) for d in locale.iterdir() if d.is_dir()}


def test_every_shipped_language_has_its_keyword_lists() -> None:
    languages = {"en"} | _shipped_languages()
    assert set(replies.OPT_OUT_KEYWORDS_BY_LANGUAGE) == languages
    assert set(replies.OPT_IN_KEYWORDS_BY_LANGUAGE) == languages
    assert all(replies.OPT_OUT_KEYWORDS_BY_LANGUAGE.values())


@pytest.mark.parametrize(("language", "keyword"), OPT_OUTS)
def test_every_opt_out_keyword_opts_out(take, record, language, keyword) -> None:
    for variant in _variants(keyword):
        assert replies.keyword_action(variant) == "opt_out", variant
    out = record(signals.opted_out)
    result = take(NUMBER, f" {keyword.lower()}! ")
    assert (result.action, result.changed) == ("opt_out", True)
    assert OptOut.objects.get().source == "reply"
    assert SMSReply.objects.get().action == "opt_out"
    assert [c["phone_number"] for c in out.calls] == [NUMBER]


@pytest.mark.parametrize(("language", "keyword"), OPT_INS)
def test_every_opt_in_keyword_opts_back_in(take, record, language, keyword) -> None:
    for variant in _variants(keyword):
        assert replies.keyword_action(variant) == "opt_in", variant
    optouts.opt_out(NUMBER, source="admin")
    back = record(signals.opted_in)
    result = take(NUMBER, keyword.title())
    assert (result.action, result.changed) == ("opt_in", True)
    assert not optouts.is_opted_out(NUMBER)
    assert [(c["phone_number"], c["source"]) for c in back.calls] == [(NUMBER, "reply")]


@pytest.mark.parametrize(
    "text",
    [
        "stop texting me",
        "please stop",
        "STOP STOP",
        "Stopped",
        "",
        "   ",
        "🛑",
        "start me up",
        "FINE",
        "ALTA",
        "ANMELDEN",
        "What time is it?",
    ],
)
def test_a_reply_that_is_no_keyword_is_stored_with_no_action(take, record, text) -> None:
    out = record(signals.opted_out)
    result = take(NUMBER, text)
    assert (result.action, result.changed, result.duplicate) == ("", False, False)
    assert SMSReply.objects.get().action == ""
    assert not OptOut.objects.exists()
    assert out.calls == []


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("opt-out", "opt_out"),
        ("Opt out", "opt_out"),
        ("OPTOUT", "opt_out"),
        ("stop all", "opt_out"),
        ("Arrêt", "opt_out"),
        ("ARRET", "opt_out"),
        ("désabonner", "opt_out"),
        ("ＳＴＯＰ", "opt_out"),  # full-width, as some keyboards type it
        ("Yes!", ""),  # not by default: module docstring, OPT_IN_KEYWORDS_BY_LANGUAGE
        ("Unstop", "opt_in"),
    ],
)
def test_keyword_forms(text, expected) -> None:
    assert replies.keyword_action(text) == expected


def test_no_opt_in_keyword_is_a_typo_away_from_an_opt_out_keyword() -> None:
    def distance(a: str, b: str) -> int:
        row = list(range(len(b) + 1))
        for i, ca in enumerate(a, 1):
            previous, row[0] = row[0], i
            for j, cb in enumerate(b, 1):
                previous, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, previous + (ca != cb))
        return row[-1]

    outs = replies.opt_out_keywords()
    for keyword in replies.opt_in_keywords():
        near = [o for o in outs if distance(keyword, o) <= 1]
        assert not near, (keyword, near)


def test_keyword_language() -> None:
    assert replies.keyword_language("baja") == "es"
    assert replies.keyword_language("SAIR") == "pt-br"
    assert replies.keyword_language("Stopp") == "de"
    assert replies.keyword_language("STOP") is None  # English, French and Italian
    assert replies.keyword_language("CANCELAR") is None  # Spanish and Portuguese
    assert replies.keyword_language("hello") is None


def test_start_after_stop(deliver, record) -> None:
    out, back = record(signals.opted_out), record(signals.opted_in)
    deliver("STOP")
    assert optouts.is_opted_out(NUMBER)
    deliver("start")
    assert not optouts.is_opted_out(NUMBER)
    assert (len(out.calls), len(back.calls)) == (1, 1)
    deliver("START")  # a retry of it: nothing more
    assert len(back.calls) == 1


def test_yes_opts_nobody_back_in_by_default(take) -> None:
    """A YES answers "Reply YES to confirm your appointment": it must not re-subscribe a
    number to marketing."""
    assert "YES" not in replies.opt_in_keywords()
    optouts.opt_out(NUMBER, source="reply")
    assert take(NUMBER, "Yes").action == ""
    assert optouts.is_opted_out(NUMBER)


def test_stop_from_a_number_already_opted_out_changes_nothing(take, record) -> None:
    optouts.opt_out(NUMBER, source="import")
    out = record(signals.opted_out)
    result = take(NUMBER, "STOP")
    assert (result.action, result.changed) == ("opt_out", False)
    assert OptOut.objects.get().source == "import"
    assert out.calls == []


def test_custom_keywords_replace_the_built_in_ones(settings, take) -> None:
    tf(settings, OPT_OUT_KEYWORDS=["Halt", "no more"], OPT_IN_KEYWORDS=["Again"])
    assert conf.OPT_OUT_KEYWORDS == ("Halt", "no more")
    assert take(NUMBER, "STOP").action == ""
    assert take(NUMBER, "NO MORE!").action == "opt_out"
    assert optouts.is_opted_out(NUMBER)
    assert take(NUMBER, "START").action == ""
    assert take(NUMBER, "again").action == "opt_in"
    assert not optouts.is_opted_out(NUMBER)


def test_empty_opt_in_keywords_turn_opt_in_by_reply_off(settings) -> None:
    tf(settings, OPT_IN_KEYWORDS=[])
    assert replies.keyword_action("START") == ""
    assert replies.keyword_action("STOP") == "opt_out"


def test_one_string_is_one_keyword(settings) -> None:
    tf(settings, OPT_OUT_KEYWORDS="HALT")
    assert conf.OPT_OUT_KEYWORDS == ("HALT",)
    assert replies.keyword_action("halt") == "opt_out"
    assert replies.keyword_action("H") == ""


def test_a_word_in_both_lists_opts_out(settings) -> None:
    tf(settings, OPT_IN_KEYWORDS=["STOP"])
    assert replies.keyword_action("STOP") == "opt_out"


# -- confirmations -----------------------------------------------------------------------------


def test_no_confirmation_by_default(deliver) -> None:
    deliver("STOP")
    deliver("START")
    assert locmem.outbox == []


def test_an_opt_out_is_confirmed_once_transactionally(settings, deliver, caplog) -> None:
    caplog.set_level(logging.INFO, logger="textflow_django")
    tf(settings, REPLY_CONFIRMATIONS=True)
    deliver("STOP")
    assert [(m.phone_number, m.text) for m in locmem.outbox] == [
        (
            NUMBER,
            "Tests: You are unsubscribed and will get no more messages. "
            "Reply START to subscribe again.",
        )
    ]
    # It reached an opted-out number: only a transactional send does.
    assert optouts.is_opted_out(NUMBER)
    with pytest.raises(TextFlowOptedOut):
        get_backend().send_sms(NUMBER, "marketing")
    assert f"textflow.reply.confirmed number={MASKED} action=opt_out" in caplog.text


def test_confirmations_are_sent_with_transactional_true(settings, deliver):
    # The confirmation of a STOP goes to a number already on the list: only a transactional
    # send reaches it (a plain one is refused with TextFlowOptedOut and sends nothing).
    tf(settings, REPLY_CONFIRMATIONS=True)
    deliver("STOP")
    assert optouts.is_opted_out(NUMBER)
    assert [m.phone_number for m in locmem.outbox] == [NUMBER]


def test_at_most_one_confirmation_a_day_per_number(settings, deliver, clock) -> None:
    tf(settings, REPLY_CONFIRMATIONS=True)
    deliver("STOP")
    deliver("START")
    deliver("STOP")
    assert optouts.is_opted_out(NUMBER)  # the last STOP was taken
    assert len(locmem.outbox) == 1
    deliver("STOP", number=OTHER)  # another number has its own day
    assert [m.phone_number for m in locmem.outbox] == [NUMBER, OTHER]
    clock.now += replies.CONFIRMATION_INTERVAL + 1
    # A day later in the database too: within it, this START would be taken for a retry of
    # the first (an opt-in is a retry when any reply with its text is within the window).
    SMSReply.objects.update(received_at=timezone.now() - dt.timedelta(days=1, seconds=1))
    deliver("START")
    assert [m.phone_number for m in locmem.outbox] == [NUMBER, OTHER, NUMBER]
    assert locmem.outbox[-1].text == "Tests: You are subscribed again. Reply STOP to unsubscribe."


def test_an_opt_in_that_changed_nothing_is_not_confirmed_and_spends_no_day(settings, take):
    """START from a number never on the list: no "You are subscribed again", and the
    day's one confirmation is left for a STOP."""
    tf(settings, REPLY_CONFIRMATIONS=True)
    assert not take(NUMBER, "START").changed
    assert locmem.outbox == []
    take(NUMBER, "STOP")
    assert [m.text for m in locmem.outbox] == [
        "Tests: You are unsubscribed and will get no more messages. Reply START to subscribe again."
    ]


def test_a_stop_from_a_number_on_the_list_is_confirmed(settings, take) -> None:
    """CTIA expects an answer to every STOP: one from a listed number is confirmed too
    (still at most once a day)."""
    tf(settings, REPLY_CONFIRMATIONS=True)
    optouts.opt_out(NUMBER, source="import")
    assert not take(NUMBER, "STOP").changed
    assert [m.phone_number for m in locmem.outbox] == [NUMBER]
    take(NUMBER, "STOP")  # a retry: nothing more
    assert len(locmem.outbox) == 1


def test_a_second_stop_taken_for_a_retry_is_confirmed(settings, take) -> None:
    take(NUMBER, "STOP")  # confirmations off then: the day is not spent
    optouts.opt_in(NUMBER, source="api")
    tf(settings, REPLY_CONFIRMATIONS=True)
    assert take(NUMBER, "STOP").duplicate
    assert [m.phone_number for m in locmem.outbox] == [NUMBER]
    assert "unsubscribed" in locmem.outbox[0].text


def test_a_confirmation_is_in_the_keywords_language(settings, take, monkeypatch) -> None:
    tf(settings, REPLY_CONFIRMATIONS=True)
    languages: list[str | None] = []
    original = replies.confirmation_text

    def spy(action: str) -> str:
        languages.append(translation.get_language())
        return original(action)

    monkeypatch.setattr(replies, "confirmation_text", spy)
    take(NUMBER, "BAJA")
    take(OTHER, "STOP")
    assert languages == ["es", settings.LANGUAGE_CODE]


def test_a_confirmation_without_opt_in_keywords_names_none(settings, take) -> None:
    tf(settings, REPLY_CONFIRMATIONS=True, OPT_IN_KEYWORDS=[], SERVICE_NAME="")
    take(NUMBER, "STOP")
    assert locmem.outbox[-1].text == "You are unsubscribed and will get no more messages."


def test_a_failed_confirmation_is_logged_and_the_reply_still_taken(settings, deliver, caplog):
    caplog.set_level(logging.INFO, logger="textflow_django")
    tf(settings, REPLY_CONFIRMATIONS=True)
    locmem.fail_next(InsufficientBalance("no credit"))  # surely not sent: the day is kept
    assert deliver("STOP").status_code == 200
    assert optouts.is_opted_out(NUMBER)
    assert locmem.outbox == []
    assert (
        f"textflow.reply.confirm_failed number={MASKED} action=opt_out "
        "error=InsufficientBalance" in caplog.text
    )
    deliver("START")
    assert len(locmem.outbox) == 1  # the day was not spent by the failed one


def test_a_confirmation_that_may_have_gone_spends_the_day(settings, deliver) -> None:
    tf(settings, REPLY_CONFIRMATIONS=True)
    locmem.fail_next(TextFlowTimeout("timed out"))
    deliver("STOP")
    deliver("START")
    assert locmem.outbox == []


def test_no_confirmation_while_the_store_is_down(settings, deliver, monkeypatch) -> None:
    """Without the store there is no proof of "one a day": none is sent."""
    tf(settings, REPLY_CONFIRMATIONS=True)
    monkeypatch.setattr(replies, "get_store", BrokenStore)
    deliver("STOP")
    assert optouts.is_opted_out(NUMBER)
    assert locmem.outbox == []


# -- the webhook's limits ----------------------------------------------------------------------


def test_a_body_too_large_is_413_unparsed(web, caplog) -> None:
    caplog.set_level(logging.INFO)
    payload = {"phone_number": NUMBER, "text": "x" * (16 * 1024), "secret": SECRET}
    response = web.post(URL, data=json.dumps(payload), content_type="application/json")
    assert response.status_code == 413
    assert response.json()["code"] == "too_large"
    assert "textflow.reply.rejected reason=too_large" in caplog.text
    assert not SMSReply.objects.exists()


def test_a_declared_length_too_large_is_413_before_reading(web, monkeypatch) -> None:
    from django.core.handlers.wsgi import WSGIRequest

    def unread(self: Any, *args: Any) -> bytes:
        raise AssertionError("the body was read")

    monkeypatch.setattr(WSGIRequest, "read", unread)
    response = web.generic(
        "POST", URL, b"{}", content_type="application/json", CONTENT_LENGTH="100000"
    )
    assert response.status_code == 413


@pytest.mark.parametrize(
    "body",
    [b"{not json", b"[1, 2]", b'"text"', b"", b"\xff\xfe\xfa", b"[" * 5000 + b"]" * 5000],
    ids=["malformed", "array", "string", "empty", "not-utf8", "deep"],
)
def test_a_body_that_is_no_json_object_is_400(web, body) -> None:
    response = web.generic("POST", URL, body, content_type="application/json")
    assert response.status_code == 400
    assert response.json()["code"] == "parse_error"


@pytest.mark.parametrize(
    ("payload", "errors"),
    [
        ({}, {"phone_number", "text"}),
        ({"text": "hi"}, {"phone_number"}),
        ({"phone_number": NUMBER}, {"text"}),
        ({"phone_number": 12025550143, "text": "hi"}, {"phone_number"}),
        ({"phone_number": NUMBER, "text": ["hi"]}, {"text"}),
        ({"phone_number": NUMBER, "text": "x" * (replies.MAX_TEXT_LENGTH + 1)}, {"text"}),
    ],
    ids=["empty", "no-number", "no-text", "number-int", "text-list", "text-long"],
)
def test_missing_or_bad_fields_are_400_with_field_errors(web, payload, errors) -> None:
    response = web.post(
        URL, data=json.dumps({**payload, "secret": SECRET}), content_type="application/json"
    )
    assert response.status_code == 400
    body = response.json()
    assert set(body) == errors
    assert all(isinstance(m, list) and m for m in body.values())
    assert not SMSReply.objects.exists()


@pytest.mark.parametrize(
    "sender",
    ["not a number", "+1 900 555 0100", "12345", "\x00", "+" + "1" * 5000],
    ids=["words", "premium", "short-code", "nul", "long"],
)
def test_a_sender_that_is_no_phone_number_is_ignored_with_200(deliver, caplog, sender):
    """A right request from a sender no number can be made of (a short code, an
    alphanumeric sender): answered 200 so TextFlow stops retrying, stored nowhere (the
    model's number is a PhoneNumberField), logged without the sender."""
    caplog.set_level(logging.INFO, logger="textflow_django")
    response = deliver("STOP", number=sender)
    assert response.status_code == 200
    assert response.json() == {"status": "ignored", "reason": "invalid_phone_number"}
    assert not SMSReply.objects.exists()
    assert not OptOut.objects.exists()
    [line] = [r.getMessage() for r in caplog.records if "reply.rejected" in r.getMessage()]
    assert line == "textflow.reply.rejected reason=invalid_sender"


def test_no_rejection_logs_the_clients_address(web, caplog) -> None:
    caplog.set_level(logging.INFO, logger="textflow_django")
    for body in (b"{nope", b"{}", json.dumps({"secret": SECRET}).encode(), b"x" * 20000):
        web.generic("POST", URL, body, content_type="application/json")
    lines = [r.getMessage() for r in caplog.records if "reply.rejected" in r.getMessage()]
    assert len(lines) == 4
    assert not [line for line in lines if "ip=" in line or "127.0.0.1" in line]


def test_the_longest_text_is_taken(deliver) -> None:
    assert deliver("é" * replies.MAX_TEXT_LENGTH).status_code == 200


def test_rate_limited_per_source_429_with_retry_after(settings, deliver, clock) -> None:
    tf(settings, REPLY_RATE="2/m")
    assert deliver("one").status_code == 200
    assert deliver("two").status_code == 200
    response = deliver("three")
    assert response.status_code == 429
    assert response.json()["code"] == "rate_limited"
    assert 1 <= int(response["Retry-After"]) <= 60
    assert deliver("three", REMOTE_ADDR="198.51.100.7").status_code == 200
    clock.now += 120
    assert deliver("four").status_code == 200
    assert SMSReply.objects.count() == 4


def test_wrong_secrets_count_toward_the_rate(settings, deliver, clock) -> None:
    tf(settings, REPLY_RATE="3/m")
    for _ in range(3):
        assert deliver("x", secret="guess").status_code == 403
    assert deliver("x").status_code == 429


def test_csrf_checks_do_not_apply(deliver) -> None:
    strict = Client(enforce_csrf_checks=True)
    assert deliver("hi", client=strict).status_code == 200


def test_a_logged_in_session_changes_nothing(deliver) -> None:
    """No session authentication: a browser's session and no CSRF token, still 200."""
    strict = Client(enforce_csrf_checks=True)
    strict.force_login(get_user_model().objects.create_user("someone"))
    assert deliver("hi", client=strict).status_code == 200


def test_the_verification_throttles_do_not_apply(settings, deliver) -> None:
    tf(
        settings,
        THROTTLE_CLASSES=["tests.test_replies.RefuseAll"],
        PERMISSION_CLASSES=["rest_framework.permissions.IsAuthenticated"],
    )
    assert deliver("hi").status_code == 200


class RefuseAll:
    """A DRF throttle that refuses everything."""

    def allow_request(self, request: Any, view: Any) -> bool:
        return False

    def wait(self) -> float:
        return 60.0


def test_a_500_report_shows_no_local_of_the_view(settings, monkeypatch) -> None:
    """Django's error report (admin e-mails, DEBUG pages) lists each frame's locals: the
    view's hold the body with the secret, so they are sensitive_variables."""

    from django.test import RequestFactory
    from django.views.debug import ExceptionReporter

    from textflow_django.views import RepliesView

    def fail(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("database down")

    monkeypatch.setattr(replies, "receive", fail)
    body = json.dumps({"phone_number": NUMBER, "text": "hi", "secret": SECRET})
    request = RequestFactory().post(URL, data=body, content_type="application/json")
    del body
    with pytest.raises(RuntimeError) as caught:
        RepliesView.as_view()(request)
    frames = ExceptionReporter(request, caught.type, caught.value, caught.tb).get_traceback_frames()
    [post] = [f for f in frames if f["function"] == "post" and "views.py" in f["filename"]]
    assert post["vars"]
    assert SECRET not in repr(post["vars"])
    report = ExceptionReporter(request, caught.type, caught.value, caught.tb)
    assert SECRET not in report.get_traceback_text()


def test_only_post(web) -> None:
    assert web.get(URL).status_code == 405
    assert web.put(URL, data="{}", content_type="application/json").status_code == 405


def test_outside_atomic_requests_in_every_database() -> None:
    assert set(resolve(URL).func._non_atomic_requests) == set(connections)


@pytest.mark.django_db(transaction=True)
def test_outside_atomic_requests(monkeypatch, record) -> None:
    """The service commits the reply itself: with ATOMIC_REQUESTS on, no request
    transaction holds it (a claim must never outlive a reply rolled back with the request).
    The setting on the connection's own dict, put back after the test."""
    monkeypatch.setitem(connections["default"].settings_dict, "ATOMIC_REQUESTS", True)
    seen: list[bool] = []
    original = replies.receive

    def spy(*args: Any, **kwargs: Any) -> replies.ReceiveResult:
        result = original(*args, **kwargs)
        seen.append(connection.in_atomic_block)
        return result

    monkeypatch.setattr(replies, "receive", spy)
    received = record(signals.sms_received)
    payload = {"phone_number": NUMBER, "text": "STOP", "secret": SECRET}
    response = Client().post(URL, data=json.dumps(payload), content_type="application/json")
    assert response.status_code == 200
    assert seen == [False]  # committed when receive returned, before the view answered
    assert len(received.calls) == 1


# -- settings and checks -----------------------------------------------------------------------


def test_conf_defaults(settings) -> None:
    settings.TEXTFLOW = {}
    assert conf.REPLY_SECRET == ""
    assert conf.REPLY_RATE.limit == 600 and conf.REPLY_RATE.window == 60
    assert conf.REPLY_CONFIRMATIONS is False
    assert conf.OPT_OUT_KEYWORDS is None and conf.OPT_IN_KEYWORDS is None
    assert not replies.is_configured()


def _ids(settings: Any, **overrides: Any) -> dict[str, str]:
    tf(settings, **overrides)
    wanted = ("textflow.E021", "textflow.W017")
    return {m.id: m.msg for m in checks.check_settings() if m.id in wanted}


def test_no_reply_check_message_with_the_defaults_or_a_good_secret(settings) -> None:
    settings.TEXTFLOW = {"BACKEND": "textflow_django.backends.locmem.LocMemBackend"}
    assert _ids(settings) == {}
    assert _ids(settings, REPLY_SECRET=SECRET, REPLY_CONFIRMATIONS=True) == {}


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        ({"REPLY_SECRET": 12345678901234567890}, "REPLY_SECRET must be a string"),
        ({"REPLY_SECRET": "short-secret"}, "REPLY_SECRET has 12 characters, fewer than 16"),
        ({"REPLY_SECRET": SECRET + "\n"}, "REPLY_SECRET begins or ends with whitespace"),
        ({"REPLY_SECRET": " " * 40}, "REPLY_SECRET begins or ends with whitespace"),
        ({"OPT_OUT_KEYWORDS": "STOP"}, "OPT_OUT_KEYWORDS is not a list"),
        ({"OPT_OUT_KEYWORDS": ["STOP", 3]}, "OPT_OUT_KEYWORDS holds what no reply can match: 3"),
        ({"OPT_IN_KEYWORDS": ["START", "!!"]}, "OPT_IN_KEYWORDS holds what no reply can match"),
        ({"OPT_IN_KEYWORDS": ["stop"]}, "STOP is in both OPT_OUT_KEYWORDS and OPT_IN_KEYWORDS"),
        ({"REPLY_RATE": "often"}, "REPLY_RATE:"),
        ({"REPLY_CONFIRMATIONS": "yes"}, "REPLY_CONFIRMATIONS must be True or False"),
    ],
)
def test_e021(settings, overrides, fragment) -> None:
    found = _ids(settings, **overrides)
    assert "textflow.E021" in found
    assert fragment in found["textflow.E021"]
    assert SECRET not in found["textflow.E021"]


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        ({"REPLY_SECRET": "a" * 20 + "bcdefghijk"}, "30 characters, fewer than 32"),
        ({"REPLY_SECRET": "abab" * 10}, "only 2 distinct characters"),
        ({"REPLY_SECRET": SECRET, "API_KEY": SECRET}, "REPLY_SECRET is the API key"),
        ({"REPLY_SECRET": "", "REPLY_CONFIRMATIONS": True}, "REPLY_CONFIRMATIONS is set"),
        ({"REPLY_SECRET": "", "OPT_OUT_KEYWORDS": ["HALT"]}, "OPT_OUT_KEYWORDS is set"),
    ],
)
def test_w017(settings, overrides, fragment) -> None:
    found = _ids(settings, **overrides)
    assert "textflow.E021" not in found
    assert fragment in found["textflow.W017"]
    assert SECRET not in found["textflow.W017"]
