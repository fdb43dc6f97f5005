"""The shape of an E.164 number as TextFlow accepts it: ``+`` then 7 to 15 digits.

Kept free of Django so the emulator and the client can use it. This is TextFlow's *wire*
rule; the product's own parsing and normalisation (any format, country rules) lives in
``phone.py``.
"""

import re
from typing import Final

E164_RE: Final = re.compile(r"\+[1-9][0-9]{6,14}")


def is_e164(value: object) -> bool:
    """True when ``value`` is a string in strict E.164 form (ASCII digits only)."""
    return isinstance(value, str) and E164_RE.fullmatch(value) is not None
