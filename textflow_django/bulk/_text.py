"""What a bulk job's text may be, and how text from outside is kept and logged.

:func:`check_text` is the one gate a bulk text passes, in :func:`~textflow_django.bulk.create_job`
and, earlier, in the command: not empty, no control or invisible formatting character (see
:mod:`textflow_django._sms`), at most ``TEXTFLOW["MAX_TEXT_LENGTH"]`` SMS segments.
:func:`storable` makes text the job keeps but did not choose (a source's description, a
TextFlow error) safe for any database; :func:`masked` hides the numbers in text bound for a
log or the job's record, with :func:`textflow_django.phone.mask`.
"""

from __future__ import annotations

from .. import phone
from .._sms import Segments, describe_character, find_control, segments
from ..conf import conf

__all__ = ["check_text", "masked", "storable"]


def check_text(text: object) -> Segments:
    """The SMS segments ``text`` takes, once it passes the rules of a bulk text.

    Raises:
        ValueError: saying why: the text is not a string or is empty (blank); it holds a
            control or invisible formatting character (named, with its 1-based position;
            a newline is fine); it takes more segments than ``TEXTFLOW["MAX_TEXT_LENGTH"]``
            (the count, the encoding and the limit are named), or that setting is not a
            whole number.
    """
    if not isinstance(text, str) or not text.strip():
        raise ValueError("The text is empty.")
    control = find_control(text)
    if control is not None:
        position, ch = control
        raise ValueError(
            f"The text holds {describe_character(ch)} at position {position}: control and "
            "invisible formatting characters are refused (a newline is fine)."
        )
    try:
        limit = conf.MAX_TEXT_LENGTH
    except (TypeError, ValueError) as err:
        raise ValueError(f"TEXTFLOW['MAX_TEXT_LENGTH'] is not a whole number: {err}") from err
    found = segments(text)
    if found.count > limit:
        raise ValueError(
            f"The text is {found.count} SMS segments long ({len(text):,} characters, "
            f"{found.encoding}); TEXTFLOW['MAX_TEXT_LENGTH'] allows {limit}."
        )
    return found


def storable(text: str) -> str:
    """``text`` with every character a database may refuse or a reader not see (controls
    such as NUL, lone surrogates from bytes that were not UTF-8, invisible formatting) as
    a Python escape (``\\x00``, ``\\udcff``)."""
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else ascii(ch)[1:-1] for ch in text)


def masked(text: str) -> str:
    """``text`` with every number in it masked (:func:`textflow_django.phone.mask_numbers`,
    the rule's home)."""
    return phone.mask_numbers(text)
