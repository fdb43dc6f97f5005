"""Counted words the management commands print: "1 batch", "2 batches", translatable.

Each phrase is a literal ``ngettext`` call (so ``makemessages`` finds both forms) whose
``%(count)s`` :func:`with_count` fills with the number as the commands show numbers
(``1,000``). A sentence about one count is one ``ngettext`` call of its own, filled the same
way; a sentence about several counts is a ``gettext`` template whose placeholders take
these phrases.
"""

from __future__ import annotations

from django.utils.translation import ngettext

__all__ = [
    "batches",
    "characters",
    "delivered",
    "duplicates",
    "invalid_numbers",
    "recipients",
    "sms_segments",
    "uncertain",
    "with_count",
]


def with_count(template: str, count: int, **values: object) -> str:
    """``template`` (an ``ngettext`` result chosen for ``count``) with its ``%(count)s``
    filled in, and any other placeholder from ``values``: the one place a count is shown,
    with thousands separators."""
    return template % {**values, "count": f"{count:,}"}


def recipients(count: int) -> str:
    """``1 recipient``, ``2 recipients``."""
    return with_count(ngettext("%(count)s recipient", "%(count)s recipients", count), count)


def delivered(count: int) -> str:
    """``1 recipient delivered``, ``2 recipients delivered``."""
    return with_count(
        ngettext("%(count)s recipient delivered", "%(count)s recipients delivered", count),
        count,
    )


def batches(count: int) -> str:
    """``1 batch``, ``2 batches``."""
    return with_count(ngettext("%(count)s batch", "%(count)s batches", count), count)


def invalid_numbers(count: int) -> str:
    """``1 invalid number``, ``2 invalid numbers``."""
    return with_count(
        ngettext("%(count)s invalid number", "%(count)s invalid numbers", count), count
    )


def duplicates(count: int) -> str:
    """``1 duplicate``, ``2 duplicates``."""
    return with_count(ngettext("%(count)s duplicate", "%(count)s duplicates", count), count)


def uncertain(count: int) -> str:
    """``1 uncertain``: the same in both English forms, not in every language."""
    return with_count(ngettext("%(count)s uncertain", "%(count)s uncertain", count), count)


def characters(count: int) -> str:
    """``1 character``, ``2 characters``."""
    return with_count(ngettext("%(count)s character", "%(count)s characters", count), count)


def sms_segments(count: int) -> str:
    """``1 SMS segment``, ``3 SMS segments``."""
    return with_count(ngettext("%(count)s SMS segment", "%(count)s SMS segments", count), count)
