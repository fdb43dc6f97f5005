"""What an SMS text costs and what it may hold: segment arithmetic and control characters.

An SMS carries 140 bytes. A text whose every character is in the GSM 03.38 alphabet
(3GPP TS 23.038) travels as GSM-7: 160 septets in one SMS, 153 per part once it needs
several (each part loses 7 to the header that joins them), and a character of the
extension table (``^ { } [ ] ~ \\ | €`` and form feed) takes two septets, the escape and the
character, which a part boundary never separates. Any other character makes the whole text
UCS-2: 70 UTF-16 code units in one SMS, 67 per part, an astral character (most emoji) two
units that a boundary never separates either. :func:`segments` counts parts exactly that
way, greedily, as carriers fill them.

:func:`find_control` finds the first character a text must not carry: every control
character but the newline (NUL, BEL, ESC, CR, TAB, DEL, C1), invisible format characters
that change how the text around them reads (bidirectional overrides and isolates such as
U+202E, zero-width spaces, the byte-order mark, tag characters), line and paragraph
separators, and lone surrogates (bytes that were not UTF-8). The zero-width joiner and
non-joiner stay allowed: emoji sequences and Persian and Indic scripts need them.

Django-free on purpose (a leaf): the bulk service and any other sender share one rule.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from typing import Final

__all__ = [
    "GSM7_BASIC",
    "GSM7_EXTENSION",
    "MAX_SEGMENTS",
    "Segments",
    "describe_character",
    "find_control",
    "segments",
]

#: The GSM 03.38 default alphabet (ESC, 0x1B, is left out: it only introduces the
#: extension table and is refused as a control character anyway).
GSM7_BASIC: Final = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
#: The extension table: each of these costs two septets.
GSM7_EXTENSION: Final = frozenset("\f^{}\\[]~|€")

#: Most parts one concatenated SMS can have (its header numbers them in one byte).
MAX_SEGMENTS: Final = 255

_GSM7_SINGLE, _GSM7_PART = 160, 153
_UCS2_SINGLE, _UCS2_PART = 70, 67

# Format characters (category Cf) that are allowed: U+200C ZERO WIDTH NON-JOINER and
# U+200D ZERO WIDTH JOINER (emoji sequences, Persian, Indic scripts).
_ALLOWED_FORMAT: Final = frozenset("\u200c\u200d")
# Names for the C0 controls and DEL, which the Unicode database leaves unnamed.
_CONTROL_NAMES: Final = {
    0x00: "NUL",
    0x07: "BEL",
    0x08: "BACKSPACE",
    0x09: "TAB",
    0x0B: "VERTICAL TAB",
    0x0C: "FORM FEED",
    0x0D: "CARRIAGE RETURN",
    0x1B: "ESC",
    0x7F: "DEL",
}


@dataclass(frozen=True, slots=True)
class Segments:
    """How a text travels: ``count`` SMS parts, in ``encoding`` (``"GSM-7"`` or ``"UCS-2"``),
    ``units`` septets (GSM-7) or UTF-16 code units (UCS-2) in all."""

    count: int
    encoding: str
    units: int


def _fill(widths: list[int], single: int, part: int) -> int:
    """Parts needed for characters of these widths: one if they fit ``single``, else
    ``part``-sized parts filled greedily, a character never split across two."""
    total = sum(widths)
    if total <= single:
        return 1 if total else 0
    count, used = 1, 0
    for width in widths:
        if used + width > part:
            count, used = count + 1, 0
        used += width
    return count


def segments(text: str) -> Segments:
    """The SMS parts ``text`` takes: GSM-7 if every character is in the GSM alphabet (an
    extension-table character counts 2), else UCS-2 (a character outside the Basic
    Multilingual Plane counts 2). The empty text takes 0 parts."""
    if all(ch in GSM7_BASIC or ch in GSM7_EXTENSION for ch in text):
        widths = [2 if ch in GSM7_EXTENSION else 1 for ch in text]
        return Segments(_fill(widths, _GSM7_SINGLE, _GSM7_PART), "GSM-7", sum(widths))
    widths = [2 if ord(ch) > 0xFFFF else 1 for ch in text]
    return Segments(_fill(widths, _UCS2_SINGLE, _UCS2_PART), "UCS-2", sum(widths))


def _is_refused(ch: str) -> bool:
    if ch == "\n":
        return False
    category = unicodedata.category(ch)
    if category == "Cf":
        return ch not in _ALLOWED_FORMAT
    # Cc: C0/C1 controls and DEL; Cs: lone surrogates; Zl/Zp: U+2028/U+2029.
    return category in ("Cc", "Cs", "Zl", "Zp")


def find_control(text: str) -> tuple[int, str] | None:
    """The 1-based position and the character of the first character ``text`` must not
    carry (see the module docstring), or None when there is none."""
    if text.isascii() and text.isprintable():  # the common case, in C
        return None
    for position, ch in enumerate(text, 1):
        if _is_refused(ch):
            return position, ch
    return None


def describe_character(ch: str) -> str:
    """``U+001B ESC``, ``U+202E RIGHT-TO-LEFT OVERRIDE``: a character named for a message,
    never the character itself (it may be invisible, or reorder the message)."""
    code = ord(ch)
    name = _CONTROL_NAMES.get(code) or unicodedata.name(ch, "")
    return f"U+{code:04X} {name}".rstrip()
