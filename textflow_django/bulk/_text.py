"""What a bulk job's text may be, and how text from outside is kept and logged.

:func:`check_text` is the one gate a bulk text passes, in :func:`~textflow_django.bulk.create_job`
and, earlier, in the command: not empty, no control or invisible formatting character (see
:mod:`textflow_django._sms`), at most ``TEXTFLOW["MAX_TEXT_LENGTH"]`` SMS segments with the
opt-out footer. :func:`compose` is the SMS a job sends for a text: the text, then a newline
and the footer (``TEXTFLOW["BULK_OPT_OUT_FOOTER"]``, in the active language when the job is
created; none when the setting is None or ""). The job keeps the composed SMS, so what was
checked is what is sent, however the settings or the language change before its batches go.
:func:`storable` makes text the job keeps but did not choose (a source's description, a
TextFlow error) safe for any database; :func:`masked` hides the numbers in text bound for a
log or the job's record, with :func:`textflow_django.phone.mask`.
"""

from __future__ import annotations

from .. import phone
from .._sms import Segments, describe_character, find_control, segments
from ..conf import conf

__all__ = ["check_text", "compose", "footer", "masked", "storable"]


def footer() -> str | None:
    """The opt-out footer line in the active language, or None when it is off.

    Raises:
        ValueError: ``TEXTFLOW["BULK_OPT_OUT_FOOTER"]`` is not a string (``textflow.E022``)
            or holds a control or invisible formatting character.
    """
    try:
        line = conf.BULK_OPT_OUT_FOOTER
    except TypeError as err:
        raise ValueError(str(err)) from err
    if line is not None:
        control = find_control(line)
        if control is not None:
            position, ch = control
            raise ValueError(
                f"TEXTFLOW['BULK_OPT_OUT_FOOTER'] holds {describe_character(ch)} at position "
                f"{position}: control and invisible formatting characters are refused."
            )
    return line


def _composed(text: object) -> tuple[str, Segments]:
    """The SMS for ``text`` (:func:`compose`) and its segments, once both pass the rules."""
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
    line = footer()
    sms = text if line is None else f"{text}\n{line}"
    found = segments(sms)
    if found.count > limit:
        if line is None:
            raise ValueError(
                f"The text is {found.count} SMS segments long ({len(text):,} characters, "
                f"{found.encoding}); TEXTFLOW['MAX_TEXT_LENGTH'] allows {limit}."
            )
        alone = segments(text)
        raise ValueError(
            f"The text with its opt-out footer is {found.count} SMS segments long "
            f"({len(sms):,} characters, {found.encoding}; the text alone "
            f"{alone.count}, {alone.encoding}); TEXTFLOW['MAX_TEXT_LENGTH'] allows {limit}. "
            f"The footer ({len(line) + 1:,} characters with its line break, "
            "TEXTFLOW['BULK_OPT_OUT_FOOTER']) is counted: shorten the text."
        )
    return sms, found


def check_text(text: object) -> Segments:
    """The SMS segments a job for ``text`` sends each recipient (the text and the opt-out
    footer, :func:`compose`), once it passes the rules of a bulk text.

    Raises:
        ValueError: saying why: the text is not a string or is empty (blank); it holds a
            control or invisible formatting character (named, with its 1-based position;
            a newline is fine); with the footer it takes more segments than
            ``TEXTFLOW["MAX_TEXT_LENGTH"]`` (the count, the encoding and the limit are
            named, and that the footer is counted), or a setting is not of its type.
    """
    return _composed(text)[1]


def compose(text: object) -> str:
    """The SMS a job sends for ``text``: the text, then a newline and :func:`footer` when
    the footer is on. Checked as :func:`check_text` checks it, and raises the same."""
    return _composed(text)[0]


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
