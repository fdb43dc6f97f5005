"""Replies: the SMS people send to the site's TextFlow number, as TextFlow forwards them to
the replies webhook (``textflow:replies``), and the opt-out keywords among them.

The webhook (``views.RepliesView``) parses and authenticates; every rule is here:

- :func:`receive` stores a delivery once (an ``SMSReply``), fires ``sms_received`` when it
  commits, and acts on a keyword: an opt-out keyword puts the number on the opt-out list
  (``optouts.opt_out(source="reply")``), an opt-in keyword takes it off. With
  ``REPLY_CONFIRMATIONS`` one SMS confirms it, at most one a day per number: every opt-out
  keyword but a retry (CTIA expects an answer to each STOP, on the list already or not), an
  opt-in keyword only when it took the number off the list.
- :func:`secret_matches` checks the webhook's secret in constant time; :func:`admit` is the
  webhook's per-source rate limit (``REPLY_RATE``).

**Keywords.** A reply is a keyword when the whole message is one (CTIA's Messaging
Principles and Best Practices, Twilio and the carriers act on single-word replies only; the
FCC's 2024 revocation rule, 47 CFR 64.1200(a)(12), names "stop", "quit", "end", "revoke",
"opt out", "cancel" and "unsubscribe" sent in reply as per se revocations). Case, accents,
spaces and punctuation are ignored (:func:`keyword_form`): "Stop", " STOP! ", "opt-out",
"Arrêt" and "stop all" are keywords, "stop texting me" and "please stop" are not (they are
stored like any reply, for a person to read). ``OPT_OUT_KEYWORDS`` / ``OPT_IN_KEYWORDS``
replace the built-in lists, :data:`OPT_OUT_KEYWORDS_BY_LANGUAGE` and
:data:`OPT_IN_KEYWORDS_BY_LANGUAGE`; a reply in both lists opts out (the safe reading).

**Once per delivery.** TextFlow's forwarder (the opensms app on the account's phone) posts
each received SMS part and retries every answer but 200, without end, through Android's
WorkManager with a linear back-off that WorkManager caps at 5 hours. A delivery carries no
id, so it is known by its :func:`digest` (number and text). A second delivery of a digest
is a retry when it comes within :data:`DEDUP_WINDOW` (24 hours) and no other reply of the
number was stored since: a retry only reaches the site when its 200 was lost, and the next
attempt comes hours later; 24 hours covers several lost answers in a row. "No other reply
since" keeps STOP, START, STOP within a day three actions, not two. Of two concurrent
deliveries of one digest exactly one is stored: the rate-limit store's atomic ``claim`` of
``reply:<digest>`` decides (the model cannot have a unique constraint: a person may send
the same text again tomorrow). A failed store or commit is a retry answered with an error,
so the claim is released and TextFlow's next attempt is stored; a receiver of a signal that
raises after the commit changes nothing (the commit callbacks are ``robust``).

**A retry cannot tell itself from the same text sent again, so a keyword errs toward
fewer texts.** An opt-out keyword taken for a retry still calls
``optouts.opt_out(number, source="reply")``: a true retry changes nothing (the number is on
the list already), while a person's second STOP after the site opted them back in (the
admin, ``optouts.opt_in(source="api")``) is honoured. An opt-in keyword is a retry when
*any* reply of the number with its digest was stored within the window, not only the last:
a START whose 200 was lost, retried hours later after a STOP, must not undo that STOP. So
START, STOP, START (the same text) within 24 hours leaves the number opted out; a START
after the window, a differently written one ("Start"), or the admin opts it back in.

When the rate-limit store is down the reply is still stored and acted on (a STOP must not
wait for Redis): the database's last reply of the number stands in for the claim, without
the guarantee against two concurrent identical deliveries.

Why one module of over 400 lines: its one job is a reply's way from the webhook to the
opt-out list, and a third of it is the keyword tables with their sources, kept beside the
one rule that reads them.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import re
import unicodedata
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Final

from django.db import transaction
from django.utils import timezone, translation
from django.utils.translation import gettext

from . import optouts, phone, signals
from ._client_ip import ip_scope
from ._events import emit
from .backends import get_backend
from .conf import conf
from .exceptions import TextFlowError
from .models import SMSReply
from .ratelimit import get_store

__all__ = [
    "CONFIRMATION_INTERVAL",
    "DEDUP_WINDOW",
    "MAX_TEXT_LENGTH",
    "OPT_IN_KEYWORDS_BY_LANGUAGE",
    "OPT_OUT_KEYWORDS_BY_LANGUAGE",
    "ReceiveResult",
    "admit",
    "confirmation_text",
    "digest",
    "is_configured",
    "keyword_action",
    "keyword_form",
    "keyword_language",
    "keywords_problem",
    "normalize_sender",
    "opt_in_keywords",
    "opt_out_keywords",
    "receive",
    "secret_matches",
    "storable_text",
]

#: Seconds a delivery's digest stays claimed: a second delivery of it within this time,
#: with no other reply of its number in between, is TextFlow retrying (module docstring).
DEDUP_WINDOW: Final = 86400
#: Seconds between two confirmation SMS to one number (``REPLY_CONFIRMATIONS``).
CONFIRMATION_INTERVAL: Final = 86400
#: Longest reply text accepted, in characters: ten SMS segments, the most a concatenated
#: SMS is commonly allowed (TextFlow's forwarder posts each SMS part alone: 160 at most).
MAX_TEXT_LENGTH: Final = 1600

#: Built-in opt-out keywords by language (Django's language codes: English and the
#: languages the package ships), as people write them; they are compared in
#: :func:`keyword_form`. Sources:
#:
#: - en: the CTIA/carrier set Twilio acts on (STOP, STOPALL, UNSUBSCRIBE, CANCEL, END,
#:   QUIT) and the FCC's per se list (adds REVOKE, OPT OUT; "OPTOUT", "opt-out" compare
#:   alike).
#: - es: BAJA (Spain: "envía BAJA"), ALTO (US and Mexican Spanish programs), PARAR,
#:   CANCELAR.
#: - fr: STOP (the word French SMS marketing mandates, "STOP au 36xxx"), ARRÊT and ARRÊTE
#:   (Canadian French; Twilio and AWS act on ARRET), DÉSABONNER.
#: - de: STOPP, ABMELDEN, ABBESTELLEN (what German SMS platforms act on), ENDE.
#: - it: STOP (what Italian SMS marketing uses), ANNULLA (AGCOM's word for cancelling an
#:   SMS subscription), CANCELLA.
#: - pt-br: SAIR (Anatel's word for leaving operators' SMS marketing), PARAR, CANCELAR.
OPT_OUT_KEYWORDS_BY_LANGUAGE: Final[Mapping[str, tuple[str, ...]]] = {
    "en": ("STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "REVOKE", "OPT OUT"),
    "es": ("BAJA", "ALTO", "PARAR", "CANCELAR"),
    "fr": ("STOP", "ARRÊT", "ARRÊTE", "DÉSABONNER"),
    "de": ("STOPP", "ABMELDEN", "ABBESTELLEN", "ENDE"),
    "it": ("STOP", "ANNULLA", "CANCELLA"),
    "pt-br": ("SAIR", "PARAR", "CANCELAR"),
}

#: Built-in opt-in keywords by language. Fewer than the opt-out ones on purpose: a reply
#: wrongly read as an opt-out costs one person their texts until START; one wrongly read as
#: an opt-in texts someone who asked not to be. START (which every language's confirmation
#: names) and UNSTOP are what US carriers and Twilio act on; COMENZAR is the Spanish one
#: platforms use. YES is left out although carriers list it: it is how people answer
#: "Reply YES to confirm your appointment", and must not re-subscribe them to marketing. No
#: word is one letter away from an opt-out keyword (ALTA/ALTO and ANMELDEN/ABMELDEN are
#: left out for that: a typo must not opt someone back in).
OPT_IN_KEYWORDS_BY_LANGUAGE: Final[Mapping[str, tuple[str, ...]]] = {
    "en": ("START", "UNSTOP"),
    "es": ("COMENZAR",),
    "fr": (),
    "de": (),
    "it": (),
    "pt-br": (),
}

#: ``SMSReply.Action`` values, as plain strings.
OPT_OUT: Final = str(SMSReply.Action.OPT_OUT.value)
OPT_IN: Final = str(SMSReply.Action.OPT_IN.value)
NONE: Final = str(SMSReply.Action.NONE.value)

# Characters no database text column takes (PostgreSQL refuses NUL) and lone surrogates
# (which JSON may carry and UTF-8 cannot): stored as U+FFFD, so a delivery is never refused
# for them (TextFlow would retry it forever).
_UNSTORABLE_RE: Final = re.compile("[\x00\ud800-\udfff]")


def storable_text(text: str) -> str:
    """``text`` with each NUL and lone surrogate replaced by U+FFFD: what a reply's fields
    are stored and validated as (the one rule; the webhook's serializer applies it before
    its validators, which would refuse those characters)."""
    return _UNSTORABLE_RE.sub("\ufffd", text)


# -- keywords --------------------------------------------------------------------------------


def keyword_form(text: str) -> str:
    """``text`` as keywords are compared: compatibility-decomposed, accents (combining
    marks) dropped, case-folded to upper case, and only letters and digits kept
    (``" Arrêt! "`` -> ``"ARRET"``, ``"opt-out"`` -> ``"OPTOUT"``)."""
    decomposed = unicodedata.normalize("NFKD", text)
    kept = "".join(ch for ch in decomposed if ch.isalnum() and not unicodedata.combining(ch))
    return kept.casefold().upper()


@lru_cache(maxsize=32)
def _forms(keywords: tuple[str, ...]) -> frozenset[str]:
    return frozenset(form for form in map(keyword_form, keywords) if form)


def _all(by_language: Mapping[str, tuple[str, ...]]) -> tuple[str, ...]:
    return tuple(keyword for keywords in by_language.values() for keyword in keywords)


def keyword_forms(
    configured: Iterable[str] | None, by_language: Mapping[str, tuple[str, ...]]
) -> frozenset[str]:
    """The keywords in effect, in :func:`keyword_form`: ``configured`` (a setting's value,
    already valid), or, when it is None, every built-in language's of ``by_language``."""
    return _forms(_all(by_language) if configured is None else tuple(configured))


def opt_out_keywords() -> frozenset[str]:
    """The opt-out keywords in effect (``OPT_OUT_KEYWORDS``, read now)."""
    return keyword_forms(conf.OPT_OUT_KEYWORDS, OPT_OUT_KEYWORDS_BY_LANGUAGE)


def opt_in_keywords() -> frozenset[str]:
    """The opt-in keywords in effect (``OPT_IN_KEYWORDS``, read now)."""
    return keyword_forms(conf.OPT_IN_KEYWORDS, OPT_IN_KEYWORDS_BY_LANGUAGE)


def keyword_action(text: str) -> str:
    """What the reply ``text`` asks of the opt-out list: an ``SMSReply.Action`` value
    (``"opt_out"``, ``"opt_in"``, or ``""`` when it is no keyword). A text in both lists
    opts out."""
    form = keyword_form(text)
    if form and form in opt_out_keywords():
        return OPT_OUT
    if form and form in opt_in_keywords():
        return OPT_IN
    return NONE


def keyword_language(text: str) -> str | None:
    """The language whose built-in lists hold the keyword ``text``, when exactly one does
    (``"BAJA"`` -> ``"es"``; ``"STOP"``, English, French and Italian, -> None)."""
    form = keyword_form(text)
    found = {
        language
        for table in (OPT_OUT_KEYWORDS_BY_LANGUAGE, OPT_IN_KEYWORDS_BY_LANGUAGE)
        for language, keywords in table.items()
        if form in _forms(keywords)
    }
    return found.pop() if len(found) == 1 else None


def keywords_problem(value: object) -> str | None:
    """What keeps ``value`` from being an ``OPT_OUT_KEYWORDS``/``OPT_IN_KEYWORDS`` setting,
    or None: it is None (the built-in lists) or a list of strings each with a letter or a
    digit (:func:`keyword_form` of it is not empty). The one rule; the checks call it."""
    if value is None:
        return None
    if isinstance(value, str) or not isinstance(value, list | tuple | set | frozenset):
        return f"is not a list of keywords ({type(value).__name__})"
    bad = [k for k in value if not isinstance(k, str) or not keyword_form(k)]
    if bad:
        return f"holds what no reply can match: {', '.join(map(repr, bad))}"
    return None


# -- the webhook's guards --------------------------------------------------------------------


def is_configured() -> bool:
    """Whether the replies webhook is on: ``REPLY_SECRET`` is set."""
    return bool(conf.REPLY_SECRET)


def secret_matches(given: object) -> bool:
    """Whether ``given`` is ``REPLY_SECRET``, compared in constant time
    (``hmac.compare_digest`` on the UTF-8 bytes: no early exit on the first wrong
    character). False for anything but a non-empty string, and while no secret is set."""
    expected = conf.REPLY_SECRET
    if not expected or not isinstance(given, str) or not given:
        return False
    return hmac.compare_digest(
        given.encode("utf-8", "surrogatepass"), expected.encode("utf-8", "surrogatepass")
    )


def admit(ip: str | None) -> int | None:
    """Count one webhook request from ``ip`` (an address, None when unknown) against
    ``REPLY_RATE`` per source (an IPv4 address, an IPv6 /64). None when it may go on, else
    the whole seconds until one may.

    A failing rate-limit store lets the request through (logged as
    ``textflow.store.failed``): the secret still guards the webhook, and an opt-out must
    not wait for the store to come back."""
    scope = ip_scope(ip) if ip else "unknown"
    rate = conf.REPLY_RATE  # a bad setting is textflow.E021's, not a store failure
    try:
        return get_store().hit(f"reply-ip:{scope}", rate)
    except Exception as err:  # noqa: BLE001 - any store failure: fail open, see above
        _store_failed(err, "reply_rate")
        return None


def _store_failed(err: Exception, during: str) -> None:
    # The error's class only: a store's message may name a key, which holds a number.
    emit("textflow.store.failed", error=type(err).__name__, detail=during)


# -- receiving -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReceiveResult:
    """What :func:`receive` did with one delivery."""

    #: The sender, in E.164.
    phone_number: str
    #: What the text asks of the opt-out list (an ``SMSReply.Action`` value).
    action: str
    #: The stored reply; None when the delivery was a retry.
    reply: SMSReply | None
    #: True when the delivery was taken for TextFlow retrying one already stored: nothing
    #: was stored and ``sms_received`` did not fire; an opt-out keyword was applied again
    #: (``changed`` says whether that changed the list: module docstring).
    duplicate: bool = False
    #: Whether the opt-out list changed (False for a STOP from a number already on it).
    changed: bool = False


def normalize_sender(value: object) -> str:
    """A sender's number in E.164, whatever its country (the country rules decide whom the
    site texts, not who may opt out). A number without ``+`` is read in
    ``DEFAULT_REGION``, else as international digits (Android may give the sender without
    its ``+``).

    Raises:
        phone.InvalidPhoneNumberError: not a number that can send an SMS.
    """
    try:
        return phone.normalize(value, check_countries=False)
    except phone.InvalidPhoneNumberError as err:
        text = value.strip() if isinstance(value, str) else ""
        if err.code != "no_country_code" or not text.isdigit() or not text.isascii():
            raise
        return phone.normalize(f"+{text}", check_countries=False)


def digest(number: str, text: str) -> str:
    """What identifies a delivery: the SHA-256 of the E.164 number and the text, apart (a
    number ends where the text begins: ``"+1202555014", "5 hi"`` is another delivery than
    ``"+12025550145", " hi"``)."""
    return hashlib.sha256(f"{number}\n{text}".encode("utf-8", "surrogatepass")).hexdigest()


def receive(phone_number: str, text: str, *, received_at: datetime | None = None) -> ReceiveResult:
    """Take one delivery of a reply: store it once, act on a keyword, and signal.

    ``phone_number`` in any format :func:`normalize_sender` reads; ``text`` as received (a
    NUL or a lone surrogate is stored as U+FFFD). ``received_at`` defaults to now.

    A first delivery is stored as an ``SMSReply`` with its ``action`` and ``digest``; an
    opt-out keyword calls ``optouts.opt_out(number, source="reply")``, an opt-in keyword
    ``optouts.opt_in``; ``sms_received`` fires (and ``opted_out``/``opted_in`` when the list
    changed) once the transaction commits, and with ``REPLY_CONFIRMATIONS`` a confirmation
    SMS goes out then (:func:`confirmation_text`; its failure is logged, never raised; a
    receiver that raises is logged by Django, never raised). A retry of a stored delivery
    (module docstring) stores and signals nothing, but an opt-out keyword in it is applied
    again, which changes nothing on a true retry. Call it
    outside any transaction that may roll back (the webhook does): a cache store's claim
    would outlive the rolled-back reply, and TextFlow's next attempt be taken for a retry.
    Event ``textflow.reply.received`` with the masked number and the action (``opt_out``,
    ``opt_in``, ``none``, or ``retry``).

    Raises:
        phone.InvalidPhoneNumberError: the sender is not a phone number.
        ValueError: ``text`` is not a string of at most :data:`MAX_TEXT_LENGTH` characters.
        Anything the database raises; the delivery is then not taken (TextFlow's next
        attempt is stored).
    """
    if not isinstance(text, str) or len(text) > MAX_TEXT_LENGTH:
        raise ValueError(f"a reply's text is a string of at most {MAX_TEXT_LENGTH} characters")
    number = normalize_sender(phone_number)
    text = storable_text(text)
    key = digest(number, text)
    action = keyword_action(text)
    masked = phone.mask(number)
    store = get_store()
    try:
        claimed = store.claim(f"reply:{key}", DEDUP_WINDOW) is None
    except Exception as err:  # noqa: BLE001 - the store down: the database decides, below
        _store_failed(err, "reply_dedup")
        claimed = None
    if (
        claimed is False
        or (claimed is None and _last_delivery(number) == key)
        or (action == OPT_IN and _delivered(number, key))
    ):
        return _retry(number, text, action)
    committed = False

    def mark_committed() -> None:
        nonlocal committed
        committed = True

    try:
        with transaction.atomic():
            # The first commit callback: whatever raises after it, the reply is stored.
            transaction.on_commit(mark_committed)
            previous = _last_delivery(number)
            reply = SMSReply.objects.create(
                phone_number=number,
                text=text,
                received_at=received_at or timezone.now(),
                action=action,
                digest=key,
            )
            changed = _act(number, action)
            # robust: a site's receiver that raises is logged by Django, and the webhook
            # still answers 200 (else TextFlow would retry a reply that is stored).
            transaction.on_commit(
                lambda: signals.sms_received.send(
                    sender=SMSReply, reply=reply, phone_number=number, text=text
                ),
                robust=True,
            )
            _confirm_on_commit(number, text, action, changed=changed, duplicate=False)
    except BaseException:
        if claimed and not committed:
            with contextlib.suppress(Exception):  # at worst the retry waits for the window
                store.release(f"reply:{key}")
        raise
    if previous is not None and previous != key:
        # Another text came in between: the earlier one, sent again, is a new reply.
        with contextlib.suppress(Exception):
            store.release(f"reply:{previous}")
    emit("textflow.reply.received", number=masked, action=action or "none")
    return ReceiveResult(number, action, reply, changed=changed)


def _retry(number: str, text: str, action: str) -> ReceiveResult:
    """A delivery taken for a retry: nothing stored or signalled, but an opt-out keyword is
    applied again (module docstring: it may be the person's second STOP)."""
    changed = False
    if action == OPT_OUT:
        changed = optouts.opt_out(number, source="reply")
        _confirm_on_commit(number, text, action, changed=changed, duplicate=True)
    emit("textflow.reply.received", number=phone.mask(number), action="retry")
    return ReceiveResult(number, action, None, duplicate=True, changed=changed)


def _delivered(number: str, key: str) -> bool:
    """Whether any reply of ``number`` with the digest ``key`` was stored within
    :data:`DEDUP_WINDOW` (an opt-in's retry test: module docstring)."""
    since = timezone.now() - timedelta(seconds=DEDUP_WINDOW)
    return SMSReply.objects.filter(phone_number=number, digest=key, received_at__gte=since).exists()


def _last_delivery(number: str) -> str | None:
    """The digest of the number's last reply stored within :data:`DEDUP_WINDOW`, if any."""
    since = timezone.now() - timedelta(seconds=DEDUP_WINDOW)
    return (
        SMSReply.objects.filter(phone_number=number, received_at__gte=since)
        .order_by("-pk")
        .values_list("digest", flat=True)
        .first()
    )


def _act(number: str, action: str) -> bool:
    """Apply a keyword to the opt-out list; whether the list changed."""
    if action == OPT_OUT:
        return optouts.opt_out(number, source="reply")
    if action == OPT_IN:
        return optouts.opt_in(number, source="reply")
    return False


# -- confirmations ---------------------------------------------------------------------------


def confirmation_text(action: str) -> str:
    """The SMS that confirms ``action`` (``"opt_out"`` or ``"opt_in"``), in the active
    language: ``SERVICE_NAME: `` then what changed and the keyword that undoes it (the
    first keyword of the other list, START by default; left out when that list is empty).
    No marketing: the FCC allows only a confirmation after an opt-out."""
    if action == OPT_OUT:
        undo = _first(conf.OPT_IN_KEYWORDS, OPT_IN_KEYWORDS_BY_LANGUAGE)
        text = (
            gettext(
                "You are unsubscribed and will get no more messages. "
                "Reply {keyword} to subscribe again."
            )
            if undo
            else gettext("You are unsubscribed and will get no more messages.")
        )
    elif action == OPT_IN:
        undo = _first(conf.OPT_OUT_KEYWORDS, OPT_OUT_KEYWORDS_BY_LANGUAGE)
        text = (
            gettext("You are subscribed again. Reply {keyword} to unsubscribe.")
            if undo
            else gettext("You are subscribed again.")
        )
    else:
        raise ValueError(f"no confirmation for action {action!r}")
    text = text.format(keyword=undo)
    service = conf.SERVICE_NAME
    return f"{service}: {text}" if service else text


def _first(configured: tuple[str, ...] | None, by_language: Mapping[str, Iterable[str]]) -> str:
    keywords = list(configured) if configured is not None else list(by_language.get("en", ()))
    return next((k.strip() for k in keywords if keyword_form(k)), "")


@contextlib.contextmanager
def _language(language: str | None) -> Iterator[None]:
    if language is None:
        yield
    else:
        with translation.override(language):
            yield


def _confirm_on_commit(
    number: str, text: str, action: str, *, changed: bool, duplicate: bool
) -> None:
    """With ``REPLY_CONFIRMATIONS``, confirm ``action`` once the transaction commits: an
    opt-out keyword unless it is a retry that changed nothing (CTIA expects an answer to
    each STOP, from a number on the list already too), an opt-in keyword only when it took
    the number off the list (a START from a number never on it confirms nothing, and spends
    no day)."""
    if not conf.REPLY_CONFIRMATIONS or not action:
        return
    if changed or (action == OPT_OUT and not duplicate):
        language = keyword_language(text)
        transaction.on_commit(lambda: _confirm(number, action, language), robust=True)


def _confirm(number: str, action: str, language: str | None) -> None:
    """Send the confirmation of ``action`` to ``number``, unless one went to it within
    :data:`CONFIRMATION_INTERVAL` (the claim ``reply-confirm:<number>``). Transactional:
    the number has just opted out, and the confirmation is what it asked for. In the
    keyword's language when it has one, else the active one. Never raises: the reply is
    stored already, and its webhook must answer 200."""
    masked = phone.mask(number)
    store = get_store()
    key = f"reply-confirm:{number}"
    try:
        if store.claim(key, CONFIRMATION_INTERVAL) is not None:
            return
    except Exception as err:  # noqa: BLE001 - no store, no proof of "one a day": none sent
        _store_failed(err, "reply_confirm")
        return
    try:
        with _language(language):
            text = confirmation_text(action)
        get_backend().send_sms(number, text, transactional=True)
    except Exception as err:  # noqa: BLE001 - logged; the reply itself is taken
        if not (isinstance(err, TextFlowError) and err.maybe_sent):
            with contextlib.suppress(Exception):  # it surely did not go: the day is not spent
                store.release(key)
        emit(
            "textflow.reply.confirm_failed",
            number=masked,
            action=action,
            error=type(err).__name__,
        )
        return
    emit("textflow.reply.confirmed", number=masked, action=action)
