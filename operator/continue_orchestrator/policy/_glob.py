"""Globs compiled to regular expressions, once, when a policy loads.

Two flavours, because a path and a command line are different things:

- segment globs (paths, tools, arguments, repositories, branches, secrets): ``*`` and
  ``?`` stay within one ``/``-separated segment, ``**`` as a whole segment spans any
  number of segments (zero included), ``[abc]`` / ``[!abc]`` are character classes;
- text globs (commands, hosts): ``*`` and ``?`` match any character, ``/`` included.

``*`` matches names starting with a dot: a policy that means "not dotfiles" says so
with a Deny rule. Many globs of one selector become one alternation, so a selector
costs one ``fullmatch`` however many entries it lists.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence

from continue_orchestrator import errors

Matcher = re.Pattern[str]


class GlobSyntaxError(ValueError):
    """A glob cannot be translated; the message says where."""


def _class(pattern: str, start: int, *, segment: bool) -> tuple[str, int]:
    end = start + 1
    if end < len(pattern) and pattern[end] in "!^":
        end += 1
    if end < len(pattern) and pattern[end] == "]":
        end += 1
    end = pattern.find("]", end)
    if end < 0:
        raise GlobSyntaxError(f"unclosed character class at column {start + 1}")
    body = pattern[start + 1 : end]
    negate = body[:1] in ("!", "^")
    if negate:
        body = body[1:]
    body = body.replace("\\", "\\\\").replace("^", "\\^").replace("[", "\\[")
    if negate:
        return f"[^{body}/]" if segment else f"[^{body}]", end + 1
    return f"[{body}]", end + 1


def _translate_text(pattern: str, *, segment: bool) -> str:
    star, one = ("[^/]*", "[^/]") if segment else (".*", ".")
    out: list[str] = []
    i = 0
    while i < len(pattern):
        char = pattern[i]
        if char == "*":
            while i < len(pattern) and pattern[i] == "*":
                i += 1
            out.append(star)
            continue
        if char == "?":
            out.append(one)
        elif char == "[":
            piece, i = _class(pattern, i, segment=segment)
            out.append(piece)
            continue
        else:
            out.append(re.escape(char))
        i += 1
    return "".join(out)


def translate_segments(pattern: str) -> str:
    """A segment glob as a regular expression (unanchored; callers fullmatch)."""
    if not pattern:
        raise GlobSyntaxError("empty glob")
    segments = pattern.split("/")
    out = ""
    last = len(segments) - 1
    for index, segment in enumerate(segments):
        if segment == "**":
            if index == last:
                out = out[:-1] + "(?:/.*)?" if out.endswith("/") else out + ".*"
            else:
                out += "(?:.+/)?"
            continue
        out += _translate_text(segment, segment=True)
        if index != last:
            out += "/"
    return out


def translate_text(pattern: str) -> str:
    """A text glob as a regular expression (unanchored; callers fullmatch)."""
    if not pattern:
        raise GlobSyntaxError("empty glob")
    return _translate_text(pattern, segment=False)


def compile_globs(patterns: Sequence[str], *, segments: bool) -> Matcher:
    """One regular expression matching any of ``patterns`` (use ``fullmatch``)."""
    translate = translate_segments if segments else translate_text
    return re.compile("|".join(f"(?:{translate(p)})" for p in patterns), re.DOTALL)


def compile_checked(
    patterns: Sequence[str], *, segments: bool, field: str, where: str
) -> Matcher | None:
    """``compile_globs`` of a policy field (None when empty); a bad glob is an
    ``errors.PolicyError`` naming its place, ``WHERE.FIELD[i]``."""
    if not patterns:
        return None
    for position, pattern in enumerate(patterns):
        try:
            compile_globs([pattern], segments=segments)
        except (GlobSyntaxError, re.error) as error:
            raise errors.PolicyError(
                f"{field}[{position}] {pattern!r} is not a valid glob: {error}",
                where=f"{where}.{field}[{position}]",
            ) from None
    return compile_globs(patterns, segments=segments)


# Intersections: could a shell glob name a file a policy glob matches? ------------------

_CharSet = tuple[str, bool, frozenset[str]]
"""(kind, negated, chars): kind "any" (every character), "seg" (any but ``/``), "set"."""
_ANY: _CharSet = ("any", False, frozenset())
_SEG: _CharSet = ("seg", False, frozenset())
_SLASH: _CharSet = ("set", False, frozenset("/"))
_POOL = "x0_-./aA"
_MAX_STATES = 256
_MAX_WILDCARDS = 6
_MAX_GLOB = 256


def _has(charset: _CharSet, char: str) -> bool:
    kind, negated, chars = charset
    if kind == "any":
        return True
    if char == "/":
        return kind == "set" and not negated and "/" in chars
    return kind == "seg" or (char in chars) != negated


def _meet(a: _CharSet, b: _CharSet) -> str | None:
    candidates = [*sorted(c for s in (a, b) if s[0] == "set" and not s[1] for c in s[2]), *_POOL]
    return next((c for c in candidates if _has(a, c) and _has(b, c)), None)


def _glob_class(pattern: str, start: int) -> tuple[_CharSet, int]:
    end = start + 1
    if end < len(pattern) and pattern[end] in "!^":
        end += 1
    if end < len(pattern) and pattern[end] == "]":
        end += 1
    end = pattern.find("]", end)
    if end < 0:
        return ("set", False, frozenset("[")), start + 1  # a literal '[', as the shell does
    body = pattern[start + 1 : end]
    negated = body[:1] in ("!", "^")
    body = body[1:] if negated else body
    chars: set[str] = set()
    i = 0
    while i < len(body):
        if i + 2 < len(body) and body[i + 1] == "-":
            low, high = ord(body[i]), ord(body[i + 2])
            chars.update(chr(c) for c in range(low, min(high, low + 512) + 1))
            i += 3
        else:
            chars.add(body[i])
            i += 1
    return ("set", negated, frozenset(chars)), end + 1


_Token = tuple[str, _CharSet]
"""("one", set): one character; ("star", set): any run of them; ("dirs",): ``(.*/)?``;
("tail",): ``(/.*)?``."""


def _text_tokens(pattern: str, *, globstar: bool) -> list[_Token]:
    tokens: list[_Token] = []
    i = 0
    while i < len(pattern):
        char = pattern[i]
        if char == "*":
            run = i
            while i < len(pattern) and pattern[i] == "*":
                i += 1
            tokens.append(("star", _ANY if globstar and i - run > 1 else _SEG))
            continue
        if char == "?":
            tokens.append(("one", _SEG))
        elif char == "[":
            charset, i = _glob_class(pattern, i)
            tokens.append(("one", charset))
            continue
        else:
            tokens.append(("one", ("set", False, frozenset(char))))
        i += 1
    return tokens


def _segment_tokens(pattern: str) -> list[_Token]:
    """A policy's segment glob as tokens, with ``**`` exactly as ``translate_segments``."""
    tokens: list[_Token] = []
    segments = pattern.split("/")
    last = len(segments) - 1
    for index, segment in enumerate(segments):
        if segment == "**":
            if index == last:
                if tokens and tokens[-1] == ("one", _SLASH):
                    tokens[-1] = ("tail", _ANY)
                else:
                    tokens.append(("star", _ANY))
            else:
                tokens.append(("dirs", _ANY))
            continue
        tokens.extend(_text_tokens(segment, globstar=False))
        if index != last:
            tokens.append(("one", _SLASH))
    return tokens


_Pair = tuple[frozenset[int], frozenset[int]]


class _Nfa:
    __slots__ = ("accept", "epsilon", "moves")

    def __init__(self, tokens: list[_Token]) -> None:
        self.moves: list[list[tuple[_CharSet, int]]] = [[] for _ in range(len(tokens) + 1)]
        self.epsilon: list[list[int]] = [[] for _ in range(len(tokens) + 1)]
        self.accept = len(tokens)
        for state, (kind, charset) in enumerate(tokens):
            if kind == "one":
                self.moves[state].append((charset, state + 1))
            elif kind == "star":
                self.moves[state].append((charset, state))
                self.epsilon[state].append(state + 1)
            else:  # dirs: (.*/)?   tail: (/.*)?
                aux = len(self.moves)
                self.moves.append([])
                self.epsilon.append([])
                self.epsilon[state].append(state + 1)
                if kind == "dirs":
                    self.moves[state].append((_ANY, aux))
                    self.moves[aux].append((_ANY, aux))
                    self.moves[aux].append((_SLASH, state + 1))
                else:
                    self.moves[state].append((_SLASH, aux))
                    self.moves[aux].append((_ANY, aux))
                    self.epsilon[aux].append(state + 1)

    def closure(self, states: set[int]) -> frozenset[int]:
        stack = list(states)
        seen = set(states)
        while stack:
            for nxt in self.epsilon[stack.pop()]:
                if nxt not in seen:
                    seen.add(nxt)
                    stack.append(nxt)
        return frozenset(seen)


def witness(shell_glob: str, policy_glob: str) -> str | None:
    """A shortest path both the shell's glob (``*`` within a segment, ``**`` across) and
    a policy's segment glob match, or None when no path matches both.

    ``*`` here also matches names starting with a dot (as with ``dotglob``), so the
    answer is the strictest reading of what the shell could expand the glob to. A glob
    too long or too wild to intersect cheaply (a hostile one could cost seconds) is
    taken as ``**``, any path: stricter, never looser.
    """
    wildcards = sum(shell_glob.count(c) for c in "*?[")
    if shell_glob != "**" and (len(shell_glob) > _MAX_GLOB or wildcards > _MAX_WILDCARDS):
        shell_glob = "**"
    return _witness(shell_glob, policy_glob)


@functools.lru_cache(maxsize=4096)
def _witness(shell_glob: str, policy_glob: str) -> str | None:
    left = _Nfa(_text_tokens(shell_glob, globstar=True))
    right = _Nfa(_segment_tokens(policy_glob))
    start = (left.closure({0}), right.closure({0}))
    parents: dict[_Pair, tuple[_Pair | None, str]] = {start: (None, "")}
    queue = [start]
    while queue and len(parents) < _MAX_STATES:
        current = queue.pop(0)
        a, b = current
        if left.accept in a and right.accept in b:
            out: list[str] = []
            node: _Pair | None = current
            while node is not None:
                node, char = parents[node]
                out.append(char)
            return "".join(reversed(out))
        chars = {
            met
            for sa in a for ca, _ in left.moves[sa]
            for sb in b for cb, _ in right.moves[sb]
            if (met := _meet(ca, cb)) is not None
        }
        for char in sorted(chars):
            na = left.closure({t for s in a for cs, t in left.moves[s] if _has(cs, char)})
            nb = right.closure({t for s in b for cs, t in right.moves[s] if _has(cs, char)})
            following = (na, nb)
            if following not in parents:
                parents[following] = (current, char)
                queue.append(following)
    if queue and shell_glob != "**":
        return _witness("**", policy_glob)  # gave up: any path, the strictest answer
    return None
