"""Phone numbers: parse any common format, normalise to E.164, apply the product's rules.

This module is the one place textflow-django's phone-number rules live. The verification
service, bulk sending, the model/form/serializer fields and user code all call it; none of
them re-implements a rule. The rules:

- Input is a ``str`` (or a :class:`PhoneNumber` from :func:`parse`). ``None``, numbers,
  booleans, lists and dicts (JSON can send all of them) are refused, never ``str()``-ed.
- Accepted formats: E.164 (``+12025550143``), international with spaces, dots, dashes,
  parentheses or slashes (``+1 (202) 555-0143``, ``+44 (0)20 7946 0958``), and national
  format (``(202) 555-0143``) when a region is given or ``TEXTFLOW["DEFAULT_REGION"]`` is set.
- Refused: empty input (code ``empty``); more than 64 characters or 15 digits, letters
  (``phonenumbers`` would read vanity numbers such as ``1-800-FLOWERS``), any digit that is
  not ASCII ``0-9``, numbers ``phonenumbers`` does not consider valid (code ``invalid``);
  extensions such as ``ext. 12``, ``x12``, ``;ext=12`` (code ``extension``); premium-rate,
  shared-cost, UAN, voicemail and personal numbers and every non-geographic number
  (``+800``, ``+808``, ``+870``, ``+881``, ``+882``, ``+883``, ``+979``...): the ranges
  SMS-pumping fraud uses (code ``premium``); and, when country rules are applied, numbers
  outside ``ALLOWED_COUNTRIES`` or inside ``BLOCKED_COUNTRIES`` (code ``country_not_allowed``).
- Every refusal is an :class:`InvalidPhoneNumberError`, a Django ``ValidationError`` with a
  stable ``code`` and a translatable message that never echoes the input.

Settings are read at call time through :data:`textflow_django.conf.conf`.

Cost: a strict E.164 string skips ``phonenumbers.parse`` (the country code is read straight
off the digits) and its classification is memoised in a small bounded LRU cache, so a bulk
sender can push a million E.164 strings through :func:`normalize` in well under a minute;
:func:`bulk_normalizer` is faster still, with the same answers.

:func:`mask` is the one way a number is written to a log: the calling code and the last two
digits (``+1********43``).

Why one module of ~500 lines: its one job is the number rules, and the two fast paths
(classification and :func:`bulk_normalizer`) must agree with the slow one to the number; they
share one calling-code table and the same refusal types, so they stay side by side (the
prefix tables the bulk path reads are built in ``_numbering``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cache, lru_cache
from typing import TYPE_CHECKING, Any, ClassVar, Final, NamedTuple

import phonenumbers
from django.core.exceptions import ValidationError
from django.utils.translation import gettext_lazy as _

from ._e164 import E164_RE as _E164_SHAPE
from ._e164 import is_e164
from ._numbering import MIXED, PrefixTable, prefix_table
from .conf import conf

if TYPE_CHECKING:
    from django.utils.functional import _StrPromise

__all__ = [
    "bulk_normalizer",
    "ERROR_MESSAGES",
    "MAX_DIGITS",
    "MAX_INPUT_LENGTH",
    "REFUSED_NUMBER_TYPES",
    "CountryNotAllowedError",
    "InvalidPhoneNumberError",
    "PhoneNumber",
    "check_country",
    "is_valid",
    "mask",
    "mask_numbers",
    "normalize",
    "parse",
]

#: Longest input accepted, in characters, before any parsing (a cheap guard on hostile input).
MAX_INPUT_LENGTH: Final = 64

#: Most digits a number may have (the E.164 maximum, country code included).
MAX_DIGITS: Final = 15

#: ``phonenumbers.PhoneNumberType`` values refused whatever the country: numbers that cost
#: the sender a premium or cannot receive an SMS, the ranges SMS-pumping fraud targets.
REFUSED_NUMBER_TYPES: Final[frozenset[int]] = frozenset(
    {
        phonenumbers.PhoneNumberType.PREMIUM_RATE,
        phonenumbers.PhoneNumberType.SHARED_COST,
        phonenumbers.PhoneNumberType.UAN,
        phonenumbers.PhoneNumberType.VOICEMAIL,
        # Follow-me numbers (UK 070...) are billed like premium numbers.
        phonenumbers.PhoneNumberType.PERSONAL_NUMBER,
    }
)

#: The message for each error code. Form and serializer fields use these as their defaults,
#: so a project overrides a message per field with ``error_messages={code: ...}``.
ERROR_MESSAGES: Final[Mapping[str, _StrPromise]] = {
    "invalid": _("Enter a valid phone number."),
    "empty": _("Enter a phone number."),
    # National format ("202 555 0143") with no region to read it in (no DEFAULT_REGION).
    "no_country_code": _("Enter the number with + and the country code, e.g. +1 202 555 0143."),
    "extension": _("Enter the phone number without an extension."),
    "premium": _("Premium-rate, shared-cost and other special-service numbers are not accepted."),
    "country_not_allowed": _("Phone numbers from this country are not accepted."),
}

# What a formatted number may contain: an optional "(" then "+" at the start, then ASCII
# digits and the usual separators (space, no-break space, dot, dashes, slash, parentheses).
# Letters and non-ASCII digits fail here, before phonenumbers (which accepts both) sees them.
_FORMATTED_RE: Final = re.compile(r"\(?\+?[0-9 \u00a0().\-\u2010-\u2015\u2212/]+")
# An extension at the end: ";ext=12", "ext. 12", "extension 12", "x12", "#12", ",12".
_EXTENSION_RE: Final = re.compile(
    r"\s*(?:;\s*ext\s*=|,|;|\#|(?:ext(?:ension)?|x)\s*[.:]?)\s*[0-9]{1,10}\s*\#?\s*\Z",
    re.IGNORECASE | re.ASCII,
)
_NOT_ASCII_DIGIT_RE: Final = re.compile(r"[^0-9]+")

_E164_FORMAT: Final = phonenumbers.PhoneNumberFormat.E164
_UNKNOWN_TYPE: Final = phonenumbers.PhoneNumberType.UNKNOWN
_NON_GEO: Final = phonenumbers.REGION_CODE_FOR_NON_GEO_ENTITY


class InvalidPhoneNumberError(ValidationError):
    """A value that is not an acceptable phone number.

    ``code`` is one of :data:`ERROR_MESSAGES`' keys and is stable (API clients and forms
    branch on it); the message is translatable and never contains the input. Being a
    ``ValidationError``, it surfaces as a field error in forms and ``full_clean()``.
    """

    default_code: ClassVar[str] = "invalid"
    #: Always set (one of ERROR_MESSAGES' keys), unlike on a plain ValidationError.
    code: str

    # Same positional order as ValidationError's, so the exception pickles and copies.
    def __init__(
        self,
        message: str | _StrPromise | None = None,
        code: str | None = None,
        params: dict[str, Any] | None = None,
    ) -> None:
        code = code or self.default_code
        super().__init__(ERROR_MESSAGES[code] if message is None else message, code, params)


class CountryNotAllowedError(InvalidPhoneNumberError):
    """A valid number from a country the settings refuse (code ``country_not_allowed``).

    ``params["region"]`` (also :attr:`region`) is the number's ISO 3166-1 region, so a
    project's own message may say ``%(region)s`` (forms) or ``{region}`` (serializers).
    """

    default_code: ClassVar[str] = "country_not_allowed"

    @property
    def region(self) -> str | None:
        """The ISO region of the refused number."""
        params = getattr(self, "params", None) or {}
        region = params.get("region")
        return region if isinstance(region, str) else None


@dataclass(frozen=True, slots=True)
class PhoneNumber:
    """A valid, accepted phone number.

    Attributes:
        e164: the number in E.164 (``+12025550143``): what is stored and sent.
        region: its ISO 3166-1 alpha-2 region (``"US"``).
        country_code: its calling code (``1``).
        number_type: its ``phonenumbers.PhoneNumberType`` (``MOBILE``, ``FIXED_LINE``...).
    """

    e164: str
    region: str
    country_code: int
    number_type: int

    def __str__(self) -> str:
        return self.e164

    @property
    def national(self) -> str:
        """The number as dialled inside its country (``(202) 555-0143``), for display."""
        return self._format(phonenumbers.PhoneNumberFormat.NATIONAL)

    @property
    def international(self) -> str:
        """The number in international format (``+1 202-555-0143``), for display."""
        return self._format(phonenumbers.PhoneNumberFormat.INTERNATIONAL)

    def _format(self, number_format: int) -> str:
        numobj = _numobj_from_e164(self.e164)
        return self.e164 if numobj is None else phonenumbers.format_number(numobj, number_format)


class _Classified(NamedTuple):
    e164: str
    region: str
    country_code: int
    number_type: int


def _numobj_from_e164(e164: str) -> phonenumbers.PhoneNumber | None:
    """Build the ``phonenumbers.PhoneNumber`` for a strict E.164 string without parsing.

    Calling codes are prefix-free, so the first 1-3 digits that are a known code are the
    code; the rest is the national significant number. This is ~10x cheaper than
    ``phonenumbers.parse``; for a valid number the result is the same (a test holds the two
    together over phonenumbers' example numbers).
    """
    digits = e164[1:]
    codes = _calling_codes_by_prefix()
    for length in (1, 2, 3):
        if digits[:length] in codes:
            country_code = int(digits[:length])
            national = digits[length:]
            if not national:
                return None
            numobj = phonenumbers.PhoneNumber(
                country_code=country_code, national_number=int(national)
            )
            # Leading zeros of the national number are significant (Italy: +39 06...).
            if len(national) > 1 and national[0] == "0":
                numobj.italian_leading_zero = True
                zeros = 1
                while zeros < len(national) - 1 and national[zeros] == "0":
                    zeros += 1
                if zeros != 1:
                    numobj.number_of_leading_zeros = zeros
            return numobj
    return None


def _classify_numobj(numobj: phonenumbers.PhoneNumber) -> _Classified | None:
    """Region and type of a number, or None when phonenumbers does not hold it valid."""
    region = phonenumbers.region_code_for_number(numobj)
    if region is None:
        return None
    # number_type() is UNKNOWN exactly when is_valid_number() is False (both run the same
    # matcher on the same metadata), so one call answers both and halves the cost.
    number_type = phonenumbers.number_type(numobj)
    if number_type == _UNKNOWN_TYPE:
        return None
    e164 = phonenumbers.format_number(numobj, _E164_FORMAT)
    if not is_e164(e164):
        return None
    return _Classified(e164, region, int(numobj.country_code or 0), number_type)


# Bounded: a verification flow normalises the same number several times (form, service,
# model save, lookups); a bulk list of distinct numbers just cycles through it.
@lru_cache(maxsize=4096)
def _classify_e164(e164: str) -> _Classified | None:
    """Classify a string that matches the E.164 shape; None when it is not a valid number."""
    numobj = _numobj_from_e164(e164)
    if numobj is not None:
        classified = _classify_numobj(numobj)
        if classified is not None:
            return classified
    # Rare: phonenumbers also reads "+44 0 20..." style input (a trunk prefix after the
    # country code) as a valid number; follow it, so E.164 and formatted input agree.
    try:
        numobj = phonenumbers.parse(e164, None)
    except phonenumbers.NumberParseException:
        return None
    return _classify_numobj(numobj)


def _e164_from_formatted(text: str, region: str | None) -> str:
    """E.164 digits for formatted input, or raise. Does not check validity."""
    if _FORMATTED_RE.fullmatch(text) is None:
        extension = _EXTENSION_RE.search(text)
        if extension is not None:
            number = text[: extension.start()].rstrip()
            if number and _FORMATTED_RE.fullmatch(number) is not None:
                raise InvalidPhoneNumberError(code="extension")
        raise InvalidPhoneNumberError()
    if len(_NOT_ASCII_DIGIT_RE.sub("", text)) > MAX_DIGITS:
        raise InvalidPhoneNumberError()
    if "+" not in text:
        region = (region or conf.DEFAULT_REGION or "").upper() or None
        if region is None:
            # National format needs a region to know the country: say how to give one.
            raise InvalidPhoneNumberError(code="no_country_code")
    try:
        numobj = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException as err:
        raise InvalidPhoneNumberError() from err
    if numobj.extension:
        raise InvalidPhoneNumberError(code="extension")
    e164 = phonenumbers.format_number(numobj, _E164_FORMAT)
    if not is_e164(e164):
        raise InvalidPhoneNumberError()
    return e164


def _apply_country_rules(region: str) -> None:
    allowed = conf.ALLOWED_COUNTRIES
    if (allowed is not None and region not in allowed) or region in conf.BLOCKED_COUNTRIES:
        raise CountryNotAllowedError(params={"region": region})


def parse(value: object, *, region: str | None = None, check_countries: bool = True) -> PhoneNumber:
    """Parse ``value`` into an accepted :class:`PhoneNumber`, or raise.

    Args:
        value: a ``str`` in any format the module docstring lists, or a :class:`PhoneNumber`
            (re-checked, so country rules apply to it as they stand now).
        region: ISO region for national-format input; ``None`` means
            ``TEXTFLOW["DEFAULT_REGION"]`` (read now). Input starting with ``+`` ignores it.
        check_countries: apply ``ALLOWED_COUNTRIES`` / ``BLOCKED_COUNTRIES``.

    Raises:
        InvalidPhoneNumberError: with code ``empty``, ``invalid``, ``extension`` or
            ``premium``; :class:`CountryNotAllowedError` (code ``country_not_allowed``).
    """
    if isinstance(value, PhoneNumber):
        text = value.e164
    elif isinstance(value, str):
        text = value
    elif value is None:
        raise InvalidPhoneNumberError(code="empty")
    else:
        raise InvalidPhoneNumberError()
    if len(text) > MAX_INPUT_LENGTH:
        raise InvalidPhoneNumberError()
    text = text.strip()
    if not text:
        raise InvalidPhoneNumberError(code="empty")
    classified = _classify_e164(text if is_e164(text) else _e164_from_formatted(text, region))
    if classified is None:
        raise InvalidPhoneNumberError()
    if classified.region == _NON_GEO or classified.number_type in REFUSED_NUMBER_TYPES:
        raise InvalidPhoneNumberError(code="premium")
    if check_countries:
        _apply_country_rules(classified.region)
    return PhoneNumber(*classified)


def normalize(value: object, *, region: str | None = None, check_countries: bool = True) -> str:
    """The E.164 form of ``value`` (``"+1 (202) 555-0143"`` -> ``"+12025550143"``), or raise.

    Same arguments and exceptions as :func:`parse`. Idempotent: ``normalize(normalize(x))``
    equals ``normalize(x)``.
    """
    return parse(value, region=region, check_countries=check_countries).e164


def is_valid(value: object, *, region: str | None = None, check_countries: bool = True) -> bool:
    """True when :func:`normalize` would accept ``value``; never raises."""
    try:
        parse(value, region=region, check_countries=check_countries)
    except InvalidPhoneNumberError:
        return False
    return True


def check_country(e164: str) -> str:
    """The ISO region of an E.164 number, if the country rules (read now) accept it.

    Only the country rules are applied: a caller holding a number from :func:`normalize`
    with ``check_countries=False`` (a stored number, say) uses this to check it at send
    time. Non-geographic numbers have the region ``"001"``.

    Raises:
        CountryNotAllowedError: ``ALLOWED_COUNTRIES`` is set and does not contain the
            region, or ``BLOCKED_COUNTRIES`` contains it.
        InvalidPhoneNumberError: ``e164`` is not a valid number in E.164 (code ``invalid``).
    """
    classified = _classify_e164(e164) if is_e164(e164) else None
    if classified is None:
        raise InvalidPhoneNumberError()
    _apply_country_rules(classified.region)
    return classified.region


class _CallingCode(NamedTuple):
    """What the E.164 fast paths (classification, bulk, masks) know of one calling code."""

    regions: tuple[str, ...]
    #: Characters before the national number: "+" and the code's digits.
    skip: int
    #: Every national number length a region of the code allows.
    lengths: frozenset[int]
    #: The calling code itself.
    number: int


@cache
def _calling_codes_by_prefix() -> dict[str, _CallingCode]:
    """Every calling code, by its digits as a string (prefix-free: at most one of a number's
    first one, two and three digits is a key). The one calling-code table of the package,
    built once per process from phonenumbers' metadata (~50 ms)."""
    table = {}
    for calling_code, regions in phonenumbers.COUNTRY_CODE_TO_REGION_CODE.items():
        lengths: set[int] = set()
        for found in regions:
            metadata = (
                phonenumbers.PhoneMetadata.metadata_for_nongeo_region(calling_code)
                if found == "001"
                else phonenumbers.PhoneMetadata.metadata_for_region(found)
            )
            if metadata is not None and metadata.general_desc is not None:
                lengths.update(metadata.general_desc.possible_length or ())
        digits = str(calling_code)
        table[digits] = _CallingCode(
            tuple(regions), 1 + len(digits), frozenset(lengths), calling_code
        )
    return table


def _code_of(digits: str) -> _CallingCode | None:
    """The calling code ``digits`` (no "+") begins with, if any."""
    codes = _calling_codes_by_prefix()
    return codes.get(digits[:1]) or codes.get(digits[:2]) or codes.get(digits[:3])


#: Most ``*`` a mask writes: a junk input's length is not worth revealing either.
_MASK_MAX_HIDDEN: Final = MAX_DIGITS


def mask(number: object) -> str:
    """``number`` for a log line: its calling code and its last two digits, every other
    digit a ``*`` (``+12025550143`` -> ``+1********43``, ``+6907191`` -> ``+690**91``).

    The one masking rule of the package. Safe on any input, valid or not, and never
    raises: the calling code is kept only after a ``+`` and when the table of calling
    codes knows it; the last two digits only when at least two others stay hidden (a
    short input shows none); characters other than ASCII digits are dropped; at most
    15 ``*`` are written; something with no digit at all is ``***``.
    """
    if isinstance(number, PhoneNumber):
        number = number.e164
    if not isinstance(number, str):
        return "***"
    digits = "".join(ch for ch in number if "0" <= ch <= "9")
    prefix = ""
    if number.lstrip().startswith("+"):
        code = _code_of(digits)
        if code is not None:
            prefix = f"+{code.number}"
            digits = digits[code.skip - 1 :]
    if not prefix and not digits:
        return "***"
    shown = digits[-2:] if len(digits) >= 4 else ""
    return prefix + "*" * min(len(digits) - len(shown), _MASK_MAX_HIDDEN) + shown


# Digits as people type a number, separators allowed between them (``+1 (202) 555-0143``,
# ``tel:+12025550143``); one holding 7 digits or more is long enough to be a phone number.
_TYPED_DIGITS: Final = re.compile(r"\+?[0-9](?:[\s().\-/]*[0-9])*")
_NUMBER_DIGITS: Final = 7


def mask_numbers(text: str) -> str:
    """``text`` (an error message, a server's answer, a sample of a user's input) with
    every number in it masked as :func:`mask` masks one, however it was typed: a run of
    ASCII digits (a ``+`` before it included) with spaces, dots, dashes, slashes or
    brackets between them, holding 7 digits or more. For a log line or a stored text that
    may quote a number. It errs toward masking: a date written ``2026-12-05`` is masked too.
    """

    def masked(match: re.Match[str]) -> str:
        found = match.group()
        return mask(found) if sum(ch.isdigit() for ch in found) >= _NUMBER_DIGITS else found

    return _TYPED_DIGITS.sub(masked, text)


def bulk_normalizer(*, strict: bool = False, region: str | None = None) -> Callable[[str], str]:
    """A normaliser for long recipient lists; settings are read once, when it is made.

    It gives :func:`normalize`'s answers, value for value (the same E.164 string, the same
    refusal and code). With ``strict=False`` a value already in strict E.164 takes a fast
    path: its calling code and length pick a prefix table built once from phonenumbers'
    metadata (``_numbering.prefix_table``), which accepts a number, with its region, only
    when full validation would (valid, of no type in :data:`REFUSED_NUMBER_TYPES`); the
    country rules are then applied to that region. A value the table does not accept
    (premium-rate, unassigned or impossible ranges, non-geographic codes) goes to
    :func:`normalize`, which refuses it with its exact code, as does every value in any
    other format, and every value with ``strict=True``. The fast path costs about a
    microsecond a number (full validation ~20); its table for a calling code and length is
    built the first time a number of them is met (a few milliseconds to a few tenths of
    a second, once per process).

    The returned callable raises ``InvalidPhoneNumberError`` like :func:`normalize`.
    """
    allowed = conf.ALLOWED_COUNTRIES
    blocked = conf.BLOCKED_COUNTRIES
    has_rules = allowed is not None or bool(blocked)
    fullmatch = _E164_SHAPE.fullmatch

    def full(value: str) -> str:
        return normalize(value, region=region)

    if strict:
        return full

    codes = _calling_codes_by_prefix()
    code_for = codes.get
    tables: dict[tuple[int, int], PrefixTable | None] = {}

    def table_for(code: _CallingCode, length: int) -> PrefixTable | None:
        key = (code.number, length)
        if key not in tables:
            national = length - code.skip
            tables[key] = (
                prefix_table(code.number, national, REFUSED_NUMBER_TYPES)
                if national in code.lengths
                else None
            )
        return tables[key]

    def fast(value: str) -> str:
        if fullmatch(value) is None:
            return full(value)
        code = code_for(value[1:2]) or code_for(value[1:3]) or code_for(value[1:4])
        if code is None:
            raise InvalidPhoneNumberError()
        table = table_for(code, len(value))
        if table is None:
            return full(value)
        # The shortest prefix that decides: an accepted one names its region; MIXED asks
        # for a digit more; one the table lacks is not accepted (normalize says why).
        skip = code.skip
        end = skip + table.start
        entries = table.entries
        found = entries.get(value[skip:end])
        while found == MIXED:
            end += 1
            found = entries.get(value[skip:end])
        if found is None:
            return full(value)
        if has_rules and ((allowed is not None and found not in allowed) or found in blocked):
            raise CountryNotAllowedError(params={"region": found})
        return value

    return fast
