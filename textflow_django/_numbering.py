r"""Which national numbers of a calling code phonenumbers accepts: prefix tables built from
its metadata, so a fast path answers as full validation does without running it.

phonenumbers judges a number by regular expressions over its national digits: for the
region the number belongs to (the only region of its calling code; for a shared code, the
first region whose leading digits match, or, without leading digits, the first where the
number is valid), the general pattern says whether it is valid and the type patterns,
tried in a fixed order, give its type. :func:`prefix_table` turns each of those patterns
into an automaton over digits (``_digit_automata``), runs them side by side and walks the
prefixes of national numbers of one length, from the shortest, until every completion of
a prefix gets the same answer: accepted in one region (valid, of a type the caller does
not refuse), or not. The table keeps the accepted
prefixes with their region, and the undecided ones on the way to them, so a lookup reads a
few dictionary entries. Nothing is approximated: a prefix is accepted only if every number
under it is; what the table does not accept is for full validation to judge.

A calling code with a pattern the automata cannot read, or whose walk would exceed
:data:`MAX_NODES`, gets no table (every number of it goes to full validation).

Django-free on purpose: only phonenumbers, the standard library and the automata leaf.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from functools import cache
from typing import Final, NamedTuple, TypeAlias

import phonenumbers
from phonenumbers import PhoneMetadata, PhoneNumberType

from ._digit_automata import DigitAutomaton, Unsupported, automaton

__all__ = ["MAX_NODES", "MIXED", "PrefixTable", "prefix_table"]

#: Prefixes one table may visit; past it, the prefixes left undecided go to full validation.
MAX_NODES: Final = 50_000

#: The value of an undecided prefix in :attr:`PrefixTable.entries`: read one digit more.
MIXED: Final = ""


class PrefixTable(NamedTuple):
    """Accepted national-number prefixes of one calling code and length.

    ``entries`` maps a prefix to the region every number under it belongs to (accepted),
    or to :data:`MIXED` (undecided: look at one digit more). A prefix that is not there,
    at ``start`` digits or deeper on the way from a ``MIXED`` one, is not accepted.
    ``start`` is the length of the shortest accepted prefix: a lookup begins there.
    """

    start: int
    entries: dict[str, str]


# -- what phonenumbers decides, on automata ---------------------------------------------------

# The type patterns in the order phonenumbers tries them (_number_type_helper), each with
# the type it gives; fixed line and mobile come last and are handled apart.
_TYPE_ORDER: Final = (
    ("premium_rate", PhoneNumberType.PREMIUM_RATE),
    ("toll_free", PhoneNumberType.TOLL_FREE),
    ("shared_cost", PhoneNumberType.SHARED_COST),
    ("voip", PhoneNumberType.VOIP),
    ("personal_number", PhoneNumberType.PERSONAL_NUMBER),
    ("pager", PhoneNumberType.PAGER),
    ("uan", PhoneNumberType.UAN),
    ("voicemail", PhoneNumberType.VOICEMAIL),
)


class _Region(NamedTuple):
    """One region's tests for numbers of one length, as indexes into the automata list
    (None: the test can never pass at that length)."""

    code: str
    leading: int | None  # set only for a shared calling code whose region has leading digits
    general: int | None
    types: tuple[tuple[int | None, int], ...]  # (test, type) in phonenumbers' order
    fixed_line: int | None
    mobile: int | None  # None too when phonenumbers skips it (same pattern as fixed line)


class _Judge:
    """Every automaton a calling code's numbers of one length meet, and the answer
    (region or refusal) for a full number given which of them accept it."""

    def __init__(self, regions: Sequence[str], length: int, refused: frozenset[int]) -> None:
        self.automata: list[DigitAutomaton] = []
        self.refused = refused
        self.shared = len(regions) > 1
        self.regions = [self._region(code, length, shared=self.shared) for code in regions]

    def _add(self, pattern: str, prefix: bool = False) -> int:
        self.automata.append(automaton(pattern, prefix))
        return len(self.automata) - 1

    def _desc(self, metadata: PhoneMetadata, name: str, length: int) -> int | None:
        """The test for ``metadata.<name>`` at ``length`` as phonenumbers'
        _is_number_matching_desc runs it: no pattern, or a length the desc does not allow,
        never matches."""
        desc = getattr(metadata, name)
        if desc is None or not desc.national_number_pattern:
            return None
        lengths = desc.possible_length or ()
        if lengths and length not in lengths:
            return None
        return self._add(desc.national_number_pattern)

    def _region(self, code: str, length: int, *, shared: bool) -> _Region:
        metadata = PhoneMetadata.metadata_for_region(code)
        if metadata is None:
            raise Unsupported(code)
        leading = None
        if shared and metadata.leading_digits is not None:
            leading = self._add(metadata.leading_digits, prefix=True)
        same = bool(metadata.same_mobile_and_fixed_line_pattern)
        return _Region(
            code,
            leading,
            self._desc(metadata, "general_desc", length),
            tuple((self._desc(metadata, name, length), kind) for name, kind in _TYPE_ORDER),
            self._desc(metadata, "fixed_line", length),
            None if same else self._desc(metadata, "mobile", length),
        )

    @staticmethod
    def _type(region: _Region, passed: set[int]) -> int:
        """phonenumbers' _number_type_helper, on the tests the number passed."""
        if region.general not in passed:
            return PhoneNumberType.UNKNOWN
        for test, kind in region.types:
            if test in passed:
                return kind
        if region.fixed_line in passed:
            return PhoneNumberType.FIXED_LINE  # or FIXED_LINE_OR_MOBILE: accepted alike
        if region.mobile in passed:
            return PhoneNumberType.MOBILE
        return PhoneNumberType.UNKNOWN

    def answer(self, passed: set[int]) -> str:
        """The region a number that passes exactly the tests ``passed`` is accepted in,
        or ``_REFUSED`` when full validation refuses it."""
        found = None
        if not self.shared:
            found = self.regions[0]
        else:
            # phonenumbers' _region_code_for_number_from_list.
            for region in self.regions:
                if region.leading is not None:
                    if region.leading in passed:
                        found = region
                        break
                elif self._type(region, passed) != PhoneNumberType.UNKNOWN:
                    found = region
                    break
        if found is None:
            return _REFUSED
        kind = self._type(found, passed)
        if kind == PhoneNumberType.UNKNOWN or kind in self.refused:
            return _REFUSED
        return found.code


# The answer for a number full validation refuses (never a region code).
_REFUSED: Final = "-"

# A product state: the (automaton index, its state) pairs still alive, by index.
_State: TypeAlias = tuple[tuple[int, int], ...]


class _Walk:
    """The automata run side by side over national numbers of one length."""

    def __init__(self, judge: _Judge, length: int) -> None:
        self.judge = judge
        self.length = length
        self.moves = [automaton.moves for automaton in judge.automata]
        self.accepting = [automaton.accepting for automaton in judge.automata]
        self.start: _State = tuple((i, 0) for i in range(len(judge.automata)))
        self._verdicts: dict[tuple[_State, int], str | None] = {}

    def step(self, state: _State, digit: int) -> _State:
        moves = self.moves
        return tuple((i, nxt) for i, current in state if (nxt := moves[i][current][digit]) >= 0)

    def verdict(self, state: _State, left: int) -> str | None:
        """The one answer every completion of ``left`` digits from ``state`` gets, or None
        when they differ."""
        key = (state, left)
        if key in self._verdicts:
            return self._verdicts[key]
        if left == 0:
            accepting = self.accepting
            found: str | None = self.judge.answer({i for i, s in state if accepting[i][s]})
        else:
            found = None
            for digit in range(10):
                answer = self.verdict(self.step(state, digit), left - 1)
                if answer is None or (found is not None and answer != found):
                    found = None
                    break
                found = answer
        self._verdicts[key] = found
        return found


@cache
def prefix_table(calling_code: int, length: int, refused: frozenset[int]) -> PrefixTable | None:
    """The accepted prefixes of ``length``-digit national numbers of ``calling_code``, a
    number being accepted when phonenumbers holds it valid and its type is not in
    ``refused``; built once per process and arguments.

    None when no number is accepted, the calling code is non-geographic (no region of
    its own), or its patterns cannot be read or walked within :data:`MAX_NODES`
    prefixes (full validation then judges every number of it).
    """
    regions = phonenumbers.COUNTRY_CODE_TO_REGION_CODE.get(calling_code, ())
    if not regions or phonenumbers.REGION_CODE_FOR_NON_GEO_ENTITY in regions:
        return None
    try:
        walk = _Walk(_Judge(regions, length, refused), length)
    except Unsupported:
        return None
    entries: dict[str, str] = {}
    # Breadth first: within the budget, short prefixes are decided before long ones.
    pending = deque([("", walk.start)])
    visited = 0
    while pending and visited < MAX_NODES:
        prefix, state = pending.popleft()
        visited += 1
        found = walk.verdict(state, length - len(prefix))
        if found is None:
            entries[prefix] = MIXED
            pending.extend((prefix + str(d), walk.step(state, d)) for d in range(10))
        elif found != _REFUSED:
            entries[prefix] = found
    accepted = [len(prefix) for prefix, found in entries.items() if found != MIXED]
    if not accepted:
        return None
    start = min(accepted)
    return PrefixTable(start, {p: f for p, f in entries.items() if len(p) >= start})
