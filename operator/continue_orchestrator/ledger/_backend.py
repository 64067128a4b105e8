"""The storage interface both backends implement, and what they share to implement it.

Entries, payloads, redactions and checkpoints live in four tables. ``ledger_entries`` is
strictly insert-only; payloads sit apart so that redaction deletes a payload row (allowed
only for sequences listed in ``ledger_redactions``) without touching a hashed row.

Both backends are SQL over DB-API connections, so the tables, the queries that read and
chain entries, and the handling of connections (one per thread, all closed together) and
sessions (the in-process write lock, then the backend's transaction) are written once
here: ``SqlSession`` and ``SqlBackend``. A backend adds only what differs: its column
types and triggers, how it inserts, redacts and streams rows, and how a transaction
begins and fails.
"""

from __future__ import annotations

import abc
import contextlib
import threading
from collections.abc import Iterator, Sequence
from typing import Any, ClassVar, Generic, Protocol, TypeVar

from continue_orchestrator import errors
from continue_orchestrator.ledger import _checkpoint, _entry

SCHEMA_VERSION = "1"

APPEND_ONLY = ("ledger_meta", "ledger_entries", "ledger_redactions", "ledger_checkpoints")
"""The tables no row of which may ever change or go (``ledger_payloads`` loses rows to
tombstones)."""


def tables(*, int64: str, text: str) -> str:
    """The tables and index, in the backend's names for a 64-bit integer and for text."""
    return f"""
CREATE TABLE IF NOT EXISTS ledger_meta (key {text} PRIMARY KEY, value {text} NOT NULL);
CREATE TABLE IF NOT EXISTS ledger_entries (
    sequence {int64} PRIMARY KEY,
    run_uid {text} NOT NULL,
    time {text} NOT NULL,
    kind {text} NOT NULL,
    actor {text} NOT NULL,
    payload_digest {text} NOT NULL,
    prev_hash {text} NOT NULL,
    entry_hash {text} NOT NULL
);
CREATE INDEX IF NOT EXISTS ledger_entries_run ON ledger_entries (run_uid, sequence);
CREATE TABLE IF NOT EXISTS ledger_payloads (sequence {int64} PRIMARY KEY, payload {text} NOT NULL);
CREATE TABLE IF NOT EXISTS ledger_redactions (
    sequence {int64} PRIMARY KEY,
    tombstone {int64} NOT NULL
);
CREATE TABLE IF NOT EXISTS ledger_checkpoints (
    size {int64} NOT NULL,
    origin {text} NOT NULL,
    root_hash {text} NOT NULL,
    time {text} NOT NULL,
    key_id {text} NOT NULL,
    signature {text} NOT NULL,
    frontier {text} NOT NULL,
    PRIMARY KEY (size, key_id)
);
"""


# An entry as stored (``_entry.EntryRow``), then its canonical payload text, or None once
# redacted
Row = tuple[int, str, str, str, str, str, str, str, str | None]
# sequence, run_uid, kind, whether the payload is still stored
Target = tuple[int, str, str, bool]


class Session(Protocol):
    """Work inside one transaction: a write session holds the ledger's write lock."""

    def origin(self) -> str: ...

    def head(self) -> tuple[int, str]:
        """(number of entries, hash of the last entry or the genesis hash)."""
        ...

    def insert(
        self, rows: Sequence[_entry.EntryRow], payloads: Sequence[tuple[int, str]]
    ) -> None: ...

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


class _Cursor(Protocol):
    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...


class Connection(Protocol):
    """What ``SqlSession`` needs of a connection: ``sqlite3``'s and ``psycopg``'s both."""

    def execute(self, query: str, params: Any = ..., /) -> _Cursor: ...

    def close(self) -> None: ...


C = TypeVar("C", bound=Connection)


class SqlSession(Generic[C]):
    """The ``Session`` methods both backends run with the same SQL; a backend's session
    adds ``insert``, ``redact`` and ``rows``, which each does its own way."""

    placeholder: ClassVar[str]
    """The driver's parameter marker: ``?`` or ``%s``."""

    def __init__(self, connection: C) -> None:
        self._db = connection

    def origin(self) -> str:
        row = self._db.execute("SELECT value FROM ledger_meta WHERE key = 'origin'").fetchone()
        return str(row[0]) if row else ""

    def head(self) -> tuple[int, str]:
        row = self._db.execute(
            "SELECT sequence, entry_hash FROM ledger_entries ORDER BY sequence DESC LIMIT 1"
        ).fetchone()
        return (0, _entry.GENESIS_HASH) if row is None else (int(row[0]) + 1, str(row[1]))

    def targets(self, *, run_uid: str | None, sequence: int | None) -> list[Target]:
        p = self.placeholder
        query = (
            "SELECT e.sequence, e.run_uid, e.kind, p.sequence IS NOT NULL FROM ledger_entries e "
            "LEFT JOIN ledger_payloads p ON p.sequence = e.sequence "
        )
        if sequence is not None:
            cursor = self._db.execute(query + f"WHERE e.sequence = {p}", (sequence,))
        else:
            cursor = self._db.execute(
                query + f"WHERE e.run_uid = {p} ORDER BY e.sequence", (run_uid,)
            )
        return [(int(r[0]), str(r[1]), str(r[2]), bool(r[3])) for r in cursor.fetchall()]

    def hashes(self, start: int, stop: int) -> list[str]:
        p = self.placeholder
        cursor = self._db.execute(
            f"SELECT entry_hash FROM ledger_entries WHERE sequence >= {p} AND sequence < {p} "
            "ORDER BY sequence",
            (start, stop),
        )
        return [str(row[0]) for row in cursor.fetchall()]

    def checkpoints(self) -> list[tuple[_checkpoint.Checkpoint, str]]:
        cursor = self._db.execute(
            "SELECT origin, size, root_hash, time, key_id, signature, frontier "
            "FROM ledger_checkpoints ORDER BY size, key_id"
        )
        return [(_checkpoint.Checkpoint(*row[:6]), str(row[6])) for row in cursor.fetchall()]

    def insert_checkpoint(self, checkpoint: _checkpoint.Checkpoint, frontier: str) -> None:
        c, p = checkpoint, self.placeholder
        self._db.execute(
            "INSERT INTO ledger_checkpoints (size, origin, root_hash, time, key_id, signature, "
            f"frontier) VALUES ({p}, {p}, {p}, {p}, {p}, {p}, {p}) "
            "ON CONFLICT (size, key_id) DO NOTHING",
            (c.size, c.origin, c.root_hash, c.time, c.key_id, c.signature, frontier),
        )


class SqlBackend(abc.ABC, Generic[C]):
    """Connections and sessions, as both backends keep them: one connection per thread,
    opened on first use, all closed by ``close``; a write session holds the in-process
    write lock, then the backend's own transaction (``_transaction``)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._where = redacted_url(url)
        self._write_lock = threading.Lock()
        self._local = threading.local()
        self._all: list[C] = []
        self._all_lock = threading.Lock()
        self._closed = False

    @abc.abstractmethod
    def _open(self) -> C:
        """A new connection; raises ``LedgerError`` saying why there is none."""

    def _usable(self, connection: C) -> bool:
        """Whether this thread's connection can still be used (or must be opened again)."""
        return True

    @abc.abstractmethod
    def _transaction(
        self, connection: C, *, write: bool
    ) -> contextlib.AbstractContextManager[Session]:
        """One transaction on ``connection``; its failures raise ``LedgerError``."""

    def _connection(self) -> C:
        db: C | None = getattr(self._local, "db", None)
        if db is None or not self._usable(db):
            if self._closed:
                raise errors.LedgerError(
                    "ledger is closed", where=self._where, fix="open it again with ledger.open()"
                )
            db = self._open()
            self._local.db = db
            with self._all_lock:
                self._all.append(db)
        return db

    @contextlib.contextmanager
    def session(self, *, write: bool) -> Iterator[Session]:
        db = self._connection()
        lock = self._write_lock if write else contextlib.nullcontext()
        with lock, self._transaction(db, write=write) as session:
            yield session

    def close(self) -> None:
        self._closed = True
        with self._all_lock:
            for db in self._all:
                db.close()
            self._all.clear()
        self._local = threading.local()


def redacted_url(url: str) -> str:
    """``url`` without a password, for messages."""
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest.split("/", 1)[0]:
        return url
    userinfo, _, hostpart = rest.partition("@")
    user = userinfo.split(":", 1)[0]
    return f"{scheme}://{user}@{hostpart}" if ":" in userinfo else url
