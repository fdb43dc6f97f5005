r"""The wire shapes TextFlow deals in: an E.164 number (``+`` then 7 to 15 digits) and a
verification code (4 to 10 digits).

Kept free of Django so the emulator, which imports no Django, shares them with the emulating
backends, ``phone``, the fields and the verification service. These are *shape* rules only;
the product's own parsing and normalisation of numbers (any format, country rules) lives in
``phone.py``. ``[0-9]`` and ``fullmatch``, never ``\d`` or ``$``: ``\d`` accepts non-ASCII
digits and ``$`` a trailing newline.
"""

import re
from typing import Final

E164_RE: Final = re.compile(r"\+[1-9][0-9]{6,14}")
CODE_RE: Final = re.compile(r"[0-9]{4,10}")
#: A number prefix (the Fraud Guard's ALLOW_PREFIXES, the admin's allowed prefixes): ``+``
#: then 1 to 15 ASCII digits.
PREFIX_RE: Final = re.compile(r"\+[0-9]{1,15}")


def is_code(value: object) -> bool:
    """True when ``value`` could be a verification code (ASCII digits, 4 to 10 of them)."""
    return isinstance(value, str) and CODE_RE.fullmatch(value) is not None


def is_prefix(value: object) -> bool:
    """True when ``value`` is a number prefix: ``+`` then 1 to 15 ASCII digits."""
    return isinstance(value, str) and PREFIX_RE.fullmatch(value) is not None


def is_e164(value: object) -> bool:
    """True when ``value`` is a string in strict E.164 form (ASCII digits only)."""
    return isinstance(value, str) and E164_RE.fullmatch(value) is not None
