"""The one rule of the admin's searches by phone number (every admin searching numbers
calls :func:`phone_term`), and the separators people type in numbers and prefixes."""

from __future__ import annotations

import re

from .. import phone

__all__ = ["SEPARATORS_RE", "phone_term"]

# A search term that is a formatted phone number: "+1 (202) 555-0143", "202.555.0143".
_PHONE_TERM_RE = re.compile(r"\+?[0-9][0-9 ().\-]*[0-9]")
#: The separators dropped from a number or a prefix as typed.
SEPARATORS_RE = re.compile(r"[ ().\-]")


def phone_term(term: str) -> str:
    """A search term as numbers are stored: a number the site reads is searched in E.164
    ("+1 (202) 555-0143", or "(202) 555-0143" with ``DEFAULT_REGION`` "US", as
    "+12025550143"), other digits with their separators dropped ("555-01" as "55501"); a
    term that is not a number is left as it is."""
    term = term.strip()
    if not _PHONE_TERM_RE.fullmatch(term):
        return term
    try:
        return phone.normalize(term, check_countries=False)
    except phone.InvalidPhoneNumberError:
        return SEPARATORS_RE.sub("", term)
