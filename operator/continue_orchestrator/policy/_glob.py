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
