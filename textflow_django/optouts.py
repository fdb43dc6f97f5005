"""The opt-out list: numbers that asked not to be texted (``OptOut``), and the one place
that adds to it, takes from it and asks it.

Contract:

- A number is opted out while it has an ``OptOut`` row. Numbers are E.164 (the callers
  normalise: the replies webhook, the admin's form, ``textflow_optout``).
- :func:`opt_out` and :func:`opt_in` are idempotent and safe under concurrency (the unique
  number decides who created or deleted the row); the signal fires only for the call that
  changed the list, after its transaction commits.
- Bulk jobs leave opted-out numbers out, and a backend refuses a non-transactional send to
  one (``TextFlowOptedOut``); verification codes are transactional.
"""

from __future__ import annotations

from django.db import IntegrityError, transaction

from . import signals
from .models import OptOut

__all__ = ["is_opted_out", "opt_in", "opt_out", "opted_out_among"]


def is_opted_out(number: str) -> bool:
    """Whether ``number`` (E.164) is on the list: one indexed query."""
    return OptOut.objects.filter(phone_number=number).exists()


def opted_out_among(numbers: list[str]) -> set[str]:
    """The numbers of ``numbers`` (E.164) that are on the list: one query."""
    if not numbers:
        return set()
    return set(
        OptOut.objects.filter(phone_number__in=numbers).values_list("phone_number", flat=True)
    )


def opt_out(number: str, *, source: str, note: str = "") -> bool:
    """Put ``number`` on the list. True if this call added it (and ``opted_out`` fires on
    commit), False if it was there already (nothing changes, not even its source)."""
    if source not in OptOut.Source.values:
        raise ValueError(f"unknown opt-out source {source!r}")
    try:
        with transaction.atomic():
            OptOut.objects.create(phone_number=number, source=source, note=note)
    except IntegrityError:
        return False
    transaction.on_commit(
        lambda: signals.opted_out.send(sender=OptOut, phone_number=number, source=source)
    )
    return True


def opt_in(number: str, *, source: str) -> bool:
    """Take ``number`` off the list. True if this call removed it (and ``opted_in`` fires on
    commit), False if it was not there."""
    if source not in OptOut.Source.values:
        raise ValueError(f"unknown opt-out source {source!r}")
    deleted, _ = OptOut.objects.filter(phone_number=number).delete()
    if not deleted:
        return False
    transaction.on_commit(
        lambda: signals.opted_in.send(sender=OptOut, phone_number=number, source=source)
    )
    return True
