"""Workspace paths, normalised before any glob sees them.

A path rule is only as good as the path it is matched against: ``src/../.git/config``
must meet the ``.git/**`` rule, and ``../../etc/passwd`` must never reach a rule at all.
``normalise`` turns what the agent sent into one canonical form relative to the
workspace root, or says why it refuses to.
"""

from __future__ import annotations

import os
import pathlib
import re

# Already normal: relative, no empty, '.' or '..' segment, no '~' start, nothing odd.
_SEGMENT = r"(?!\.\.?(?:/|$))[^/\x00-\x1f\x7f\\]+"
_CLEAN = re.compile(rf"(?!~){_SEGMENT}(?:/{_SEGMENT})*")

ROOT = "."
"""The normalised form of the workspace root itself."""


class PathRejectedError(ValueError):
    """The path is not a workspace path; the message says why, for the agent and the log."""


def _check_characters(path: str) -> None:
    if not path:
        raise PathRejectedError("empty path")
    if "\x00" in path:
        raise PathRejectedError("path contains a NUL byte")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in path):
        raise PathRejectedError("path contains control characters")
    if "\\" in path:
        raise PathRejectedError("path contains a backslash, which is not a separator here")
    if path.startswith("~"):
        raise PathRejectedError("path starts with ~ (a home directory is outside the workspace)")


def normalise(path: str, *, root: str) -> str:
    """``path`` (absolute, or relative to ``root``) as a clean path relative to ``root``.

    ``root`` is the workspace root as the agent sees it (for example ``/workspace``).
    The result has no ``.``, ``..``, empty or trailing segments; the root itself is
    ``"."``. Raises ``PathRejectedError`` for anything outside the root or malformed.
    """
    if _CLEAN.fullmatch(path):
        return path
    _check_characters(path)
    if path.startswith("/"):
        clean_root = root.rstrip("/") or "/"
        parts = _resolve_dots(path.split("/"), original=path)
        absolute = "/" + "/".join(parts)
        if clean_root == "/":
            relative = absolute[1:]
        elif absolute == clean_root:
            relative = ""
        elif absolute.startswith(clean_root + "/"):
            relative = absolute[len(clean_root) + 1 :]
        else:
            raise PathRejectedError(f"absolute path {path!r} is outside the workspace {root}")
        if relative.startswith("~"):
            raise PathRejectedError(f"path {path!r} starts with ~ once normalised")
        return relative or ROOT
    parts = _resolve_dots(path.split("/"), original=path)
    if parts and parts[0].startswith("~"):
        # A shell would expand it as written; refusing keeps the result a fixed point.
        raise PathRejectedError(f"path {path!r} starts with ~ once normalised")
    return "/".join(parts) or ROOT


def _resolve_dots(segments: list[str], *, original: str) -> list[str]:
    stack: list[str] = []
    for segment in segments:
        if segment in ("", "."):
            continue
        if segment == "..":
            if not stack:
                raise PathRejectedError(f"path {original!r} escapes the workspace")
            stack.pop()
        else:
            stack.append(segment)
    return stack


def resolve_symlinks(relative: str, *, workspace: pathlib.Path) -> str:
    """``relative`` (already normalised) with symlinks resolved inside ``workspace``.

    ``workspace`` is a real directory holding the same tree the agent sees. Raises
    ``PathRejectedError`` when a symlink on the way leads outside it.
    """
    base = pathlib.Path(os.path.realpath(workspace))
    target = pathlib.Path(os.path.realpath(base / relative))
    try:
        resolved = target.relative_to(base)
    except ValueError:
        raise PathRejectedError(
            f"path {relative!r} resolves through a symlink to {target}, outside the workspace"
        ) from None
    return resolved.as_posix() if resolved.parts else ROOT
