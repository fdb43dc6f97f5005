r"""Digit automata for the regular expressions phonenumbers' metadata is written in.

:class:`DigitAutomaton` reads one pattern of the subset phonenumbers uses (digits,
classes such as ``[2-9]`` or ``[^0]``, ``\d``, groups, ``|``, ``?``, ``*``, ``+``, ``{n}``,
``{n,m}``) and builds the deterministic automaton over the ten digits that accepts exactly
the digit strings the pattern matches in full (with ``prefix=True``: the strings ``re.match``
matches, some prefix of them matching). Anything else in a pattern raises
:class:`Unsupported`, so a caller never works from a pattern it misread. Over strings of
digits only, ``[^5]`` is "any other digit", and a lazy quantifier matches what a greedy
one does.

The construction is Thompson's, then the subset construction; both are textbook, kept
here apart from what they serve (``_numbering``'s prefix tables) because they know nothing
of phone numbers. Django-free on purpose (a leaf): only the standard library.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import cache
from typing import Final, NamedTuple, TypeAlias

__all__ = ["DigitAutomaton", "Unsupported", "automaton"]

_ALL_DIGITS: Final = frozenset(range(10))


class Unsupported(ValueError):
    """A pattern uses syntax this module does not read."""


class _Set(NamedTuple):
    """One digit of a set."""

    digits: frozenset[int]


class _Cat(NamedTuple):
    """The parts one after the other."""

    parts: tuple[_Node, ...]


class _Alt(NamedTuple):
    """One of the options."""

    options: tuple[_Node, ...]


class _Rep(NamedTuple):
    """``part`` ``least`` times to ``most`` times (None: no bound)."""

    part: _Node
    least: int
    most: int | None


# A parsed pattern.
_Node: TypeAlias = "_Set | _Cat | _Alt | _Rep"


class _Parser:
    """Recursive descent over phonenumbers' regular-expression subset."""

    def __init__(self, pattern: str) -> None:
        self.text = pattern
        self.at = 0

    def parse(self) -> _Node:
        node = self._alternation()
        if self.at != len(self.text):
            raise Unsupported(self.text)
        return node

    def _peek(self, ahead: int = 0) -> str:
        at = self.at + ahead
        return self.text[at] if at < len(self.text) else ""

    def _alternation(self) -> _Node:
        options = [self._sequence()]
        while self._peek() == "|":
            self.at += 1
            options.append(self._sequence())
        return _Alt(tuple(options)) if len(options) > 1 else options[0]

    def _sequence(self) -> _Node:
        parts = []
        while self._peek() not in ("", "|", ")"):
            parts.append(self._repeat())
        return _Cat(tuple(parts))

    def _repeat(self) -> _Node:
        node = self._atom()
        while True:
            char = self._peek()
            if char == "?":
                least, most = 0, 1
            elif char == "*":
                least, most = 0, None
            elif char == "+":
                least, most = 1, None
            elif char == "{":
                end = self.text.find("}", self.at)
                low, comma, high = self.text[self.at + 1 : end].partition(",")
                if end < 0 or not low.isdecimal() or not (high.isdecimal() or not high):
                    raise Unsupported(self.text)
                least = int(low)
                most = (int(high) if high else None) if comma else least
                self.at = end
            else:
                return node
            self.at += 1
            # A lazy "??" or "{n,m}?" matches the same strings in full: read it as optional.
            node = _Rep(node, least, most)

    def _atom(self) -> _Node:
        char = self._peek()
        if "0" <= char <= "9":
            self.at += 1
            return _Set(frozenset({int(char)}))
        if char == "\\" and self._peek(1) == "d":
            self.at += 2
            return _Set(_ALL_DIGITS)
        if char == "[":
            return self._class()
        if char == "(":
            self.at += 3 if self.text.startswith("(?:", self.at) else 1
            node = self._alternation()
            if self._peek() != ")":
                raise Unsupported(self.text)
            self.at += 1
            return node
        raise Unsupported(self.text)

    def _class(self) -> _Node:
        self.at += 1
        negate = self._peek() == "^"
        self.at += negate
        digits: set[int] = set()
        while self._peek() != "]":
            char = self._peek()
            if char == "\\" and self._peek(1) == "d":
                digits |= _ALL_DIGITS
                self.at += 2
                continue
            if not "0" <= char <= "9":
                raise Unsupported(self.text)
            if self._peek(1) == "-" and "0" <= self._peek(2) <= "9":
                digits.update(range(int(char), int(self._peek(2)) + 1))
                self.at += 3
            else:
                digits.add(int(char))
                self.at += 1
        self.at += 1
        # Over strings of digits, "any character but these" is "any other digit".
        return _Set(frozenset(_ALL_DIGITS - digits if negate else digits))


class DigitAutomaton:
    """A deterministic automaton over the digits for one pattern, matched in full (or, with
    ``prefix``, as ``re.match`` does: some prefix of the input matches).

    ``moves[state][digit]`` is the next state, -1 when no completion can match;
    ``accepting[state]`` says whether the digits read so far match.
    """

    def __init__(self, pattern: str, *, prefix: bool = False) -> None:
        node = _Parser(pattern).parse()
        if prefix:
            node = _Cat((node, _Rep(_Set(_ALL_DIGITS), 0, None)))
        self._edges: list[list[tuple[frozenset[int], int]]] = []
        self._empty: list[list[int]] = []
        start = self._state()
        end = self._build(node, start)
        self.moves: list[tuple[int, ...]] = []
        self.accepting: list[bool] = []
        self._determinise(start, end)

    def _state(self) -> int:
        self._edges.append([])
        self._empty.append([])
        return len(self._edges) - 1

    def _build(self, node: _Node, start: int) -> int:
        """Thompson's construction: states for ``node`` from ``start``; returns its end.
        Loops only ever go back to a fresh state, so sharing ``start`` is safe."""
        if isinstance(node, _Set):
            end = self._state()
            self._edges[start].append((node.digits, end))
            return end
        if isinstance(node, _Cat):
            for part in node.parts:
                start = self._build(part, start)
            return start
        if isinstance(node, _Alt):
            end = self._state()
            for option in node.options:
                begin = self._state()
                self._empty[start].append(begin)
                self._empty[self._build(option, begin)].append(end)
            return end
        for _ in range(node.least):
            start = self._build(node.part, start)
        if node.most is None:
            loop = self._state()
            self._empty[start].append(loop)
            self._empty[self._build(node.part, loop)].append(loop)
            return loop
        for _ in range(node.most - node.least):
            end, begin = self._state(), self._state()
            self._empty[start] += [end, begin]
            self._empty[self._build(node.part, begin)].append(end)
            start = end
        return start

    def _closure(self, states: Iterable[int]) -> frozenset[int]:
        seen = set(states)
        stack = list(seen)
        while stack:
            for nxt in self._empty[stack.pop()]:
                if nxt not in seen:
                    seen.add(nxt)
                    stack.append(nxt)
        return frozenset(seen)

    def _determinise(self, start: int, end: int) -> None:
        ids = {self._closure([start]): 0}
        order = list(ids)
        while len(self.moves) < len(order):
            states = order[len(self.moves)]
            row = []
            for digit in range(10):
                target = self._closure(
                    nxt for state in states for digits, nxt in self._edges[state] if digit in digits
                )
                if not target:
                    row.append(-1)
                    continue
                if target not in ids:
                    ids[target] = len(order)
                    order.append(target)
                row.append(ids[target])
            self.moves.append(tuple(row))
            self.accepting.append(end in states)


@cache
def automaton(pattern: str, prefix: bool = False) -> DigitAutomaton:
    """The automaton for ``pattern``, built once per process (phonenumbers' regions share
    many patterns).

    Raises:
        Unsupported: the pattern uses syntax outside the subset.
    """
    return DigitAutomaton(pattern, prefix=prefix)
