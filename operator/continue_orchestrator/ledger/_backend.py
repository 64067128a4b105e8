"""The storage interface both backends implement, and the one schema they share.

Entries, payloads, redactions and checkpoints live in four tables. ``ledger_entries`` is
strictly insert-only; payloads sit apart so that redaction deletes a payload row (allowed
only for sequences listed in ``ledger_redactions``) without touching a hashed row.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Protocol

from continue_orchestrator.ledger import _checkpoint

SCHEMA_VERSION = "1"

# sequence, run_uid, time, kind, actor, payload_digest, prev_hash, entry_hash
EntryRow = tuple[int, str, str, str, str, str, str, str]
# ... then the canonical payload text, or None once redacted
Row = tuple[int, str, str, str, str, str, str, str, str | None]
# sequence, run_uid, kind, whether the payload is still stored
Target = tuple[int, str, str, bool]


class Session(Protocol):
    """Work inside one transaction: a write session holds the ledger's write lock."""

    def origin(self) -> str: ...

    def head(self) -> tuple[int, str]:
        """(number of entries, hash of the last entry or the genesis hash)."""
        ...

    def insert(self, rows: Sequence[EntryRow], payloads: Sequence[tuple[int, str]]) -> None: ...

    def targets(self, *, run_uid: str | None, sequence: int | None) -> list[Target]: ...

    def redact(self, sequences: Sequence[int], tombstone: int) -> None: ...

    def rows(
        self, *, start: int, stop: int | None, run_uid: str | None, limit: int | None
    ) -> Iterator[Row]: ...

    def hashes(self, start: int, stop: int) -> list[str]: ...

    def checkpoints(self) -> list[tuple[_checkpoint.Checkpoint, str]]:
        """Stored checkpoints by size, each with its frontier (concatenated hex roots)."""
        ...

    def insert_checkpoint(self, checkpoint: _checkpoint.Checkpoint, frontier: str) -> None: ...


class Backend(Protocol):
    url: str

    def session(self, *, write: bool) -> contextlib.AbstractContextManager[Session]: ...

    def close(self) -> None: ...


_ROW_SELECT = (
    "SELECT e.sequence, e.run_uid, e.time, e.kind, e.actor, e.payload_digest, e.prev_hash, "
    "e.entry_hash, p.payload FROM ledger_entries e "
    "LEFT JOIN ledger_payloads p ON p.sequence = e.sequence "
)


def rows_query(
    placeholder: str, *, start: int, stop: int | None, run_uid: str | None, limit: int | None
) -> tuple[str, list[object]]:
    """The one query both backends read rows with; ``placeholder`` is ``?`` or ``%s``."""
    query = _ROW_SELECT + f"WHERE e.sequence >= {placeholder}"
    params: list[object] = [start]
    if stop is not None:
        query += f" AND e.sequence < {placeholder}"
        params.append(stop)
    if run_uid is not None:
        query += f" AND e.run_uid = {placeholder}"
        params.append(run_uid)
    query += " ORDER BY e.sequence"
    if limit is not None:
        query += f" LIMIT {placeholder}"
        params.append(limit)
    return query, params


def redacted_url(url: str) -> str:
    """``url`` without a password, for messages."""
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest.split("/", 1)[0]:
        return url
    userinfo, _, hostpart = rest.partition("@")
    user = userinfo.split(":", 1)[0]
    return f"{scheme}://{user}@{hostpart}" if ":" in userinfo else url
