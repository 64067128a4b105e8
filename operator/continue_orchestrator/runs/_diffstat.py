"""Lines added and removed per file, counted from the patch the runner reported.

The runner reports the files it found changed (``git diff --name-status``) and the patch
(``git diff --binary --full-index --no-renames``, both in git's path order), cut at its
size limit. Evidence shows each file with its counts, as ``git diff --stat`` would; a
file whose part of the patch was cut off has no counts rather than wrong ones.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses

from continue_orchestrator import runner

_CHANGES = {"A": "added", "M": "modified", "D": "deleted", "T": "type changed"}


@dataclasses.dataclass(frozen=True, slots=True)
class FileStat:
    """One changed file; counts are None when the patch the runner kept does not hold
    all of its part."""

    path: str
    change: str
    additions: int | None
    deletions: int | None
    binary: bool = False


@dataclasses.dataclass(slots=True)
class _Section:
    additions: int = 0
    deletions: int = 0
    binary: bool = False
    in_hunk: bool = False


def _sections(patch: bytes) -> list[_Section]:
    """Each file's part of a patch, in order (one per ``diff --git`` header)."""
    found: list[_Section] = []
    for line in patch.split(b"\n"):
        if line.startswith(b"diff --git "):
            found.append(_Section())
            continue
        if not found:
            continue
        part = found[-1]
        if line.startswith(b"@@"):
            part.in_hunk = True
        elif not part.in_hunk:
            part.binary = part.binary or line.startswith((b"GIT binary patch", b"Binary files"))
        elif line.startswith(b"+"):
            part.additions += 1
        elif line.startswith(b"-"):
            part.deletions += 1
    return found


def stat(diff: runner.DiffReport) -> list[FileStat]:
    """The runner's changed files with their counts, in its order."""
    try:
        patch = base64.b64decode(diff.patch_base64, validate=True)
    except (binascii.Error, ValueError):
        patch = b""
    sections = _sections(patch)
    # A cut patch's last part is incomplete, and the files after it are not in it at all.
    complete = len(sections) - 1 if diff.truncated else len(sections)
    stats: list[FileStat] = []
    for index, changed in enumerate(diff.files):
        change = _CHANGES.get(changed.status, changed.status)
        if index < min(complete, len(sections)):
            part = sections[index]
            stats.append(
                FileStat(changed.path, change, part.additions, part.deletions, part.binary)
            )
        else:
            stats.append(FileStat(changed.path, change, None, None))
    return stats
