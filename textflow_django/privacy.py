"""Erasure of a phone number (a GDPR Art. 17 or CCPA deletion request): every row the package
keeps that holds the number, removed in one transaction, and a report of what went.

Contract of :func:`erase_phone_number`:

- The number is read as the site reads numbers (``DEFAULT_REGION``), without the country
  rules (a number of a country refused since must still be erasable); input that is no
  phone number raises ``InvalidPhoneNumberError``, the error the API answers with, and
  erases nothing.
- Removed: the number's ``PhoneVerification`` rows, its ``BulkRecipient`` rows (each job's
  counts stay: they are figures, not the number), its ``SMSReply`` rows, and the
  rate-limit store's counters and claims keyed by it or by its replies (:func:`store_keys`:
  the resend cooldown, its send and wrong-code caps, the daily reply confirmation, the
  replies' retry claims). The package's entries in the admin's history that name the number
  are anonymised (the number masked as in the logs): who did what stays, the number goes.
  The samples of invalid input a bulk job keeps hold no number to erase: the ingest stores
  every number in them masked, however it was typed (``bulk.ingest``).
- Kept by default: the number's ``OptOut`` row. Erasing it would let the site text the
  person again; keeping a suppression entry to honour an objection is what GDPR Art.
  17(3) and Art. 21 allow (and CCPA's 1798.105(d)). ``keep_opt_out=False`` removes it too
  (without ``opted_in``: the person did not opt back in; ``phone_number_erased`` says it).
- ``signals.phone_number_erased`` is sent inside the transaction with ``erased`` (the
  counts so far, ``{kind: count}``), to which receivers add their own kinds (the allauth
  integration adds ``allauth_phone_numbers``); a receiver that raises undoes the whole
  erasure. The counters go last, after the receivers: a cache store is no transaction.
- Idempotent: a second call finds nothing and reports zeros (and the kept opt-out again).
- ``dry_run=True`` does the same in a transaction that is rolled back, so the counts are
  exact and nothing changes; the signal is sent with ``dry_run=True`` (a receiver that
  does more than database writes must look at it). A cache store's counters cannot be
  counted without dropping them: a dry run on one reports them as not counted (None).
- One line is logged once the erasure commits: ``textflow.privacy.erased number=<masked>
  <kind>=<count> ... opt_out=kept|removed|none`` (nothing for a dry run).

Not erased here: the number in the web server's own logs, at TextFlow (ask the provider),
and in the project's own models (connect a receiver). A session that asked for a code keeps
its handle until the session expires, under a keyed hash of the number (``SECRET_KEY``),
not the number: nothing to erase there.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

from django.apps import apps
from django.db import router, transaction
from django.utils.translation import ngettext

from . import _events, phone, signals
from .models import BulkRecipient, BulkSMSJob, OptOut, PhoneVerification, SMSReply
from .ratelimit import DatabaseStore, RateLimitStore, get_store

__all__ = [
    "KINDS",
    "ErasureReport",
    "counted",
    "erase_phone_number",
    "parse_number",
    "store_keys",
]

#: The kinds :func:`erase_phone_number` counts itself, in the order reports list them.
KINDS = (
    "verifications",
    "bulk_recipients",
    "replies",
    "opt_outs",
    "admin_log_entries",
    "rate_limit_counters",
)
#: Jobs named per statement when deleting a number's bulk recipients (an ``IN`` list: SQLite
#: takes 32,766 parameters at most, and each job is one probe of an index).
_JOBS_PER_STATEMENT = 1_000
#: The app labels whose admin history entries are anonymised (the package and its contrib).
_LOGGED_APPS = ("textflow", "textflow_allauth")


@dataclass(frozen=True)
class ErasureReport:
    """What :func:`erase_phone_number` removed for one number (E.164).

    Each count is of rows (for the counters, of the store's keys or rows) removed, or for
    ``admin_log_entries`` anonymised. ``rate_limit_counters`` is None when not counted (a
    dry run on a cache store). ``opt_out_kept`` is True when the number is on the opt-out
    list and stays there. ``others`` holds the counts the signal's receivers added.
    """

    phone_number: str
    verifications: int = 0
    bulk_recipients: int = 0
    replies: int = 0
    opt_outs: int = 0
    admin_log_entries: int = 0
    rate_limit_counters: int | None = 0
    opt_out_kept: bool = False
    dry_run: bool = False
    others: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))

    def as_dict(self) -> dict[str, int]:
        """Every count by kind: :data:`KINDS` first (``rate_limit_counters`` left out when
        not counted), then the receivers' kinds in the order they were added."""
        counts = {kind: getattr(self, kind) for kind in KINDS}
        if counts["rate_limit_counters"] is None:
            del counts["rate_limit_counters"]
        return {**counts, **self.others}

    @property
    def total(self) -> int:
        """All the rows and keys counted, of every kind."""
        return sum(self.as_dict().values())


def _counted(template: str, count: int) -> str:
    return template % {"count": f"{count:,}"}


#: A count of each kind in words, for the command's lines and the admin's messages.
_PHRASES: Mapping[str, Callable[[int], str]] = {
    "verifications": lambda n: _counted(
        ngettext("%(count)s verification", "%(count)s verifications", n), n
    ),
    "bulk_recipients": lambda n: _counted(
        ngettext("%(count)s bulk SMS recipient", "%(count)s bulk SMS recipients", n), n
    ),
    "replies": lambda n: _counted(ngettext("%(count)s SMS reply", "%(count)s SMS replies", n), n),
    "opt_outs": lambda n: _counted(
        ngettext("%(count)s opt-out list entry", "%(count)s opt-out list entries", n), n
    ),
    "admin_log_entries": lambda n: _counted(
        ngettext(
            "%(count)s admin history entry anonymised",
            "%(count)s admin history entries anonymised",
            n,
        ),
        n,
    ),
    "rate_limit_counters": lambda n: _counted(
        ngettext("%(count)s rate-limit counter", "%(count)s rate-limit counters", n), n
    ),
    "allauth_phone_numbers": lambda n: _counted(
        ngettext("%(count)s allauth phone number", "%(count)s allauth phone numbers", n), n
    ),
}


def counted(counts: Mapping[str, int]) -> str:
    """The non-zero ``counts`` (``ErasureReport.as_dict()``, or several reports' summed) in
    words: ``"2 verifications, 1 SMS reply"``; a kind a project's receiver adds reads
    ``kind: count``. ``""`` when every count is zero."""
    return ", ".join(
        _PHRASES[kind](count) if kind in _PHRASES else f"{kind}: {count:,}"
        for kind, count in counts.items()
        if count
    )


def parse_number(value: object) -> str:
    """``value`` in E.164 as an erasure reads it (``DEFAULT_REGION``, no country rules).

    Raises ``InvalidPhoneNumberError`` (``textflow_django.phone``) for what is no number."""
    return phone.normalize(value, check_countries=False)


def store_keys(number: str, digests: Iterable[str] = ()) -> tuple[str, ...]:
    """The rate-limit store's keys that name ``number`` (E.164): its resend cooldown
    (``verification._sending``), its send and wrong-code caps (``verification._service.
    caps``, scope ``number``), the claim that allows one reply confirmation a day
    (``replies._confirm``), and the claims that recognise a retried delivery of its replies
    (``replies.receive``: ``reply:<digest>``, the digest of the number and a text: the
    ``digests`` of its ``SMSReply`` rows). tests/test_privacy.py makes each of them through
    the services, then finds none after an erasure: a key added there fails it."""
    return (
        f"cooldown:{number}",
        f"send:number:{number}",
        f"fail:number:{number}",
        f"reply-confirm:{number}",
        *(f"reply:{digest}" for digest in dict.fromkeys(digests)),
    )


def erase_phone_number(
    number: object, *, keep_opt_out: bool = True, dry_run: bool = False
) -> ErasureReport:
    """Remove every row that holds ``number``; see the module docstring for the contract.

    Raises ``InvalidPhoneNumberError`` for input that is no phone number (nothing erased).
    """
    e164 = parse_number(number)
    store = get_store()
    alias = router.db_for_write(PhoneVerification)
    aliases = {alias} | {router.db_for_write(model) for model in (BulkRecipient, SMSReply, OptOut)}
    if isinstance(store, DatabaseStore):
        aliases.add(store.using)
    with _atomic(sorted(aliases), rollback=dry_run):
        # The replies' digests name store keys: read before their rows go.
        digests = list(SMSReply.objects.filter(phone_number=e164).values_list("digest", flat=True))
        counts = _erase_rows(e164, keep_opt_out)
        opt_out_kept = keep_opt_out and OptOut.objects.filter(phone_number=e164).exists()
        erased = dict(counts)
        signals.phone_number_erased.send(
            sender=__name__, phone_number=e164, erased=erased, dry_run=dry_run
        )
        # In the transaction: a receiver's count that is no number undoes the erasure.
        others = {kind: int(n) for kind, n in erased.items() if kind not in counts}
        counters = _forget(store, store_keys(e164, digests), dry_run)
        report = ErasureReport(
            e164,
            **counts,
            rate_limit_counters=counters,
            opt_out_kept=opt_out_kept,
            dry_run=dry_run,
            others=MappingProxyType(others),
        )
        if not dry_run:
            transaction.on_commit(lambda: _log(report), using=alias)
    return report


def _log(report: ErasureReport) -> None:
    """The erasure's one log line (a receiver's kind named like a secret is left out)."""
    counts = {
        kind: count
        for kind, count in report.as_dict().items()
        if kind not in _events.FORBIDDEN_FIELDS and kind not in ("number", "opt_out")
    }
    opt_out = "kept" if report.opt_out_kept else ("removed" if report.opt_outs else "none")
    _events.emit(
        "textflow.privacy.erased",
        number=phone.mask(report.phone_number),
        **counts,
        opt_out=opt_out,
    )


@contextlib.contextmanager
def _atomic(aliases: list[str], *, rollback: bool) -> Iterator[None]:
    """One transaction on each database involved (the package's models may be routed to
    more than one); rolled back at the end when ``rollback``."""
    with contextlib.ExitStack() as stack:
        for alias in aliases:
            stack.enter_context(transaction.atomic(using=alias))
        yield
        if rollback:
            for alias in aliases:
                transaction.set_rollback(True, using=alias)


def _erase_rows(number: str, keep_opt_out: bool) -> dict[str, int]:
    """Delete the package's rows holding ``number``; the counts by kind (no counters)."""
    counts = {
        "verifications": PhoneVerification.objects.filter(phone_number=number).delete()[0],
        # Only the rows: a job's total, sent and invalid counts are figures, and stay.
        "bulk_recipients": _delete_bulk_recipients(number),
        "replies": SMSReply.objects.filter(phone_number=number).delete()[0],
        "opt_outs": 0 if keep_opt_out else OptOut.objects.filter(phone_number=number).delete()[0],
        "admin_log_entries": _anonymise_admin_log(number),
    }
    return counts


def _delete_bulk_recipients(number: str) -> int:
    """Delete ``number``'s ``BulkRecipient`` rows, of every job; how many went.

    No index starts with the number (the unique (job, phone_number) and the (job, batch)
    ones start with the job): a filter on the number alone reads the whole table, a million
    rows a campaign. Naming every job, ``job_id IN (...) AND phone_number = ...``, makes it
    one probe of the unique index per job (on PostgreSQL an Index Scan with ``job_id =
    ANY(...)``; tests/test_privacy.py checks the plan). Jobs are few (one per campaign),
    read :data:`_JOBS_PER_STATEMENT` to a statement."""
    jobs = list(BulkSMSJob.objects.order_by("pk").values_list("pk", flat=True))
    deleted = 0
    for start in range(0, len(jobs), _JOBS_PER_STATEMENT):
        some = jobs[start : start + _JOBS_PER_STATEMENT]
        deleted += BulkRecipient.objects.filter(job_id__in=some, phone_number=number).delete()[0]
    return deleted


def _anonymise_admin_log(number: str) -> int:
    """Mask ``number`` in the ``object_repr`` of the admin history entries of the package's
    models (an opt-out's or a verification's entry is named by its number). The history
    of a project's own models is the project's to handle (a signal receiver)."""
    if not apps.is_installed("django.contrib.admin"):
        return 0
    from django.contrib.admin.models import LogEntry

    # Not followed by a digit: erasing +1202555014 leaves +12025550143's entries alone.
    exact = re.compile(re.escape(number) + r"(?!\d)")
    masked = phone.mask(number)
    changed = 0
    entries = LogEntry.objects.filter(
        content_type__app_label__in=_LOGGED_APPS, object_repr__contains=number
    ).only("object_repr")
    for entry in entries:
        anonymous = exact.sub(masked, entry.object_repr)
        if anonymous != entry.object_repr:
            LogEntry.objects.filter(pk=entry.pk).update(object_repr=anonymous)
            changed += 1
    return changed


def _forget(store: RateLimitStore, keys: Sequence[str], dry_run: bool) -> int | None:
    """Drop the store's counters under ``keys``; how many keys or rows went, or None when a
    dry run cannot count them (a cache store: counting them would drop them)."""
    if dry_run and not isinstance(store, DatabaseStore):
        return None
    return store.forget(keys)
