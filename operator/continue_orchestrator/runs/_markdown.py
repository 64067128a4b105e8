"""Markdown that text from a run cannot break: fences, code spans, table cells, cuts.

A pull request's evidence quotes what the agent, its tests and its model wrote: verify
output, tool arguments, file names, the model's last words. Any of them may hold
backticks, pipes, HTML, terminal colour codes or a ``@mention``; pasted as they are they
could close a code fence early and turn the rest of the body into live Markdown (links,
images, mentions, fake sections). Everything quoted goes through here: control
characters and bidirectional overrides out, and a code fence or span longer than any run
of backticks inside it, so nothing quoted can end it. ``cut`` shortens generated Markdown
at a line boundary and closes what it leaves open.
"""

from __future__ import annotations

import re
from collections.abc import Callable

# A terminal's colour and cursor codes (CSI), then the other C0 controls and DEL (tab and
# newline stay), and the bidirectional overrides that make text read unlike its bytes.
_CSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f\u202a-\u202e\u2066-\u2069]")
_BACKTICKS = re.compile(r"`+")
_FENCE = re.compile(r"(`{3,})")


def clean(text: str) -> str:
    """``text`` with line ends as ``\\n``, colour codes dropped and every other control
    character (and bidirectional override) shown as U+FFFD."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return _CONTROL.sub("\ufffd", _CSI.sub("", text))


def _ticks(text: str, least: int) -> str:
    longest = max((len(run) for run in _BACKTICKS.findall(text)), default=0)
    return "`" * max(least, longest + 1)


def fenced(text: str, info: str = "text") -> str:
    """A fenced code block holding ``text`` literally: its fence is longer than any run
    of backticks in it, so no line of it can close the block."""
    body = clean(text).rstrip("\n")
    fence = _ticks(body, 3)
    return f"{fence}{info}\n{body}\n{fence}" if body else f"{fence}{info}\n{fence}"


def code(text: str) -> str:
    """``text`` as one inline code span on one line (``—`` for nothing), safe in a table
    cell: its pipes are escaped, which GitHub's tables undo inside code spans too."""
    text = clean(text).replace("\n", " ").replace("\t", " ")
    if not text.strip():
        return "—"
    ticks = _ticks(text, 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{ticks}{pad}{text}{pad}{ticks}".replace("|", "\\|")


def shorten(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, an ellipsis marking the cut."""
    return text if len(text) <= limit else text[: max(0, limit - 1)] + "…"


def _closers(line: str, open_: list[str]) -> None:
    """Update the stack of what must be closed (a fence, a ``<details>``) after ``line``."""
    if open_ and open_[-1].startswith("`"):
        stripped = line.strip()
        if stripped and set(stripped) == {"`"} and len(stripped) >= len(open_[-1]):
            open_.pop()
        return
    fence = _FENCE.match(line)
    if fence:
        open_.append(fence.group(1))
    elif line.startswith("<details>"):
        open_.append("</details>")
    elif line.startswith("</details>") and "</details>" in open_:
        open_.remove("</details>")


def cut(markdown: str, budget: int, note: Callable[[int], str]) -> str:
    """``markdown`` in at most ``budget`` characters: whole lines from the top, every
    fence and ``<details>`` they leave open closed, then ``note(characters left out)``.
    Unchanged if it fits; just the note if not even that fits with one line."""
    if len(markdown) <= budget:
        return markdown
    reserve = len(note(len(markdown))) + 2
    kept: list[str] = []
    open_: list[str] = []
    size = 0
    for line in markdown.split("\n"):
        after = list(open_)
        _closers(line, after)
        closing = sum(len(closer) + 1 for closer in after)
        if size + len(line) + 1 + closing + reserve > budget:
            break
        kept.append(line)
        size += len(line) + 1
        open_ = after
    text = "\n".join([*kept, *reversed(open_)])
    return f"{text}\n\n{note(len(markdown) - len(text))}" if kept else note(len(markdown))
