"""Literal prefilters for tool-result patterns: skip RE2 when a match is impossible.

cel-expr-python compiles an RE2 pattern at every evaluation of ``matches`` (about
60-700 us per pattern here) and offers no way to precompile one. Almost every tool
result matches no withhold pattern, so each pattern gets, once when the policy
compiles, a set of literal strings at least one of which every match must contain
(``AKIA`` or ``ASIA`` for ``\\b(AKIA|ASIA)[0-9A-Z]{16}\\b``). A result holding none of
them cannot match and RE2 is not asked; otherwise RE2 decides, as before. The filter
can only say "cannot match" when that is certain: a pattern it does not fully
understand gets no filter and is always evaluated.

The pattern is parsed with Python's own regular-expression parser, after refusing the
few spellings that parser reads differently from RE2 (``[[:alpha:]]``, ``x{,2}``);
anything it parses into a construct RE2 lacks makes the pattern unfiltered. Under
``(?i)`` literals are ASCII only and compared case-folded (RE2's ``(?i)k`` also matches
KELVIN SIGN, which ``casefold`` maps to ``k``).
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import Any

_PARSER: Any = importlib.import_module("re._parser")
_IGNORECASE = 2
_MAX_EXACT = 32
_MAX_CLASS = 8
_Exact = frozenset[str] | None
_Need = frozenset[str] | None


class _UnsupportedError(Exception):
    """The pattern holds something the filter does not reason about."""


@dataclasses.dataclass(frozen=True, slots=True)
class Prefilter:
    """Every match of a pattern contains one of ``literals`` (case-folded if ``fold``)."""

    literals: tuple[str, ...]
    fold: bool

    def may_match(self, text: str, folded: str) -> bool:
        """False only when no match of the pattern can be found in ``text``;
        ``folded`` is ``text`` case-folded (read only when ``fold``)."""
        haystack = folded if self.fold else text
        return any(literal in haystack for literal in self.literals)


def fold(text: str) -> str:
    """``text`` as a folding prefilter reads it."""
    return text.lower() if text.isascii() else text.casefold()


def prefilter(pattern: str) -> Prefilter | None:
    """The literal filter of an RE2 ``pattern``, or None when it cannot have one."""
    if "[:" in pattern or "{," in pattern:
        return None  # POSIX classes and {,n}: Python's parser reads them otherwise
    try:
        parsed = _PARSER.parse(pattern)
    except Exception:
        return None
    folding = bool(parsed.state.flags & _IGNORECASE) or _scoped_ignorecase(parsed.data)
    try:
        exact, need = _sequence(parsed.data, folding)
    except (_UnsupportedError, RecursionError):
        return None
    found = _usable(exact) or need
    if not found:
        return None
    return Prefilter(tuple(sorted(_narrowed(found))), folding)


def _narrowed(found: frozenset[str]) -> frozenset[str]:
    """Fewer literals to look for, each costing a scan: one holding another is dropped
    (text holding it holds the other), and several sharing a prefix or suffix of 3
    characters or more become that (every match still contains it)."""
    found = frozenset(a for a in found if not any(b != a and b in a for b in found))
    if len(found) < 2:
        return found
    prefix = _common_prefix(list(found))
    suffix = _common_prefix([literal[::-1] for literal in found])[::-1]
    shared = max(prefix, suffix, key=len)
    return frozenset({shared}) if len(shared) >= 3 else found


def _scoped_ignorecase(items: Any) -> bool:
    for op, value in items:
        name = str(op)
        if name == "SUBPATTERN":
            if value[1] & _IGNORECASE or _scoped_ignorecase(value[3]):
                return True
        elif name == "BRANCH":
            if any(_scoped_ignorecase(branch) for branch in value[1]):
                return True
        elif name in ("MAX_REPEAT", "MIN_REPEAT") and _scoped_ignorecase(value[2]):
            return True
    return False


def _common_prefix(texts: list[str]) -> str:
    first, last = min(texts), max(texts)
    length = 0
    while length < min(len(first), len(last)) and first[length] == last[length]:
        length += 1
    return first[:length]


def _usable(exact: _Exact) -> _Need:
    """``exact`` as a need: only when every string in it is non-empty."""
    if exact is None or not exact or "" in exact:
        return None
    return exact


def _best(candidates: list[frozenset[str]]) -> _Need:
    if not candidates:
        return None
    return max(candidates, key=lambda found: (min(map(len, found)), -len(found)))


def _char(code: int, folding: bool) -> _Exact:
    char = chr(code)
    if not folding:
        return frozenset({char})
    if not char.isascii():
        return None
    return frozenset({char.lower()})


def _sequence(items: Any, folding: bool) -> tuple[_Exact, _Need]:
    """(exact strings the sequence matches, or None; a need set, or None)."""
    run: _Exact = frozenset({""})
    needs: list[frozenset[str]] = []
    for item in items:
        exact, need = _node(item, folding)
        if need:
            needs.append(need)
        if run is not None and exact is not None and len(run) * len(exact) <= _MAX_EXACT:
            run = frozenset(a + b for a in run for b in exact)
            continue
        closed = _usable(run)
        if closed:
            needs.append(closed)
        run = exact
    if not needs:
        return run, None
    closed = _usable(run)
    if closed:
        needs.append(closed)
    return None, _best(needs)


def _node(item: Any, folding: bool) -> tuple[_Exact, _Need]:
    op, value = item
    name = str(op)
    if name == "LITERAL":
        return _char(value, folding), None
    if name in ("ANY", "NOT_LITERAL"):
        return None, None
    if name == "AT":
        return frozenset({""}), None
    if name == "IN":
        return _class(value, folding), None
    if name == "SUBPATTERN":
        # (?-i:...) inside (?i) is folded too: a looser filter, still sound.
        return _sequence(value[3], folding)
    if name == "BRANCH":
        return _branch(value[1], folding)
    if name in ("MAX_REPEAT", "MIN_REPEAT"):
        low, high, body = value
        exact, need = _sequence(body, folding)
        if low == 0:
            if high == 1 and exact is not None:
                return exact | {""}, None
            return None, None
        if low == high == 1:
            return exact, need
        return None, _usable(exact) or need
    raise _UnsupportedError(name)


def _branch(branches: Any, folding: bool) -> tuple[_Exact, _Need]:
    infos = [_sequence(branch, folding) for branch in branches]
    exacts = [exact for exact, _ in infos]
    if all(exact is not None for exact in exacts):
        union = frozenset().union(*(exact for exact in exacts if exact is not None))
        if len(union) <= _MAX_EXACT:
            return union, None
    needs: set[str] = set()
    for exact, need in infos:
        found = _usable(exact) or need
        if not found:
            return None, None
        needs |= found
    return None, frozenset(needs)


def _class(items: Any, folding: bool) -> _Exact:
    chars: set[str] = set()
    for op, value in items:
        name = str(op)
        if name == "LITERAL":
            codes = [value]
        elif name == "RANGE" and value[1] - value[0] < _MAX_CLASS:
            codes = list(range(value[0], value[1] + 1))
        else:
            return None  # NEGATE, CATEGORY, wide ranges: too many characters
        for code in codes:
            found = _char(code, folding)
            if found is None:
                return None
            chars |= found
        if len(chars) > _MAX_CLASS:
            return None
    return frozenset(chars)

