"""The embedded SQLite backend (WAL): the default, one file, no server.

Writers in one process queue on a lock; writers in different processes queue on SQLite's
``BEGIN IMMEDIATE`` write lock, so every append reads the head and extends it inside one
transaction: no gaps, no forks, and a killed process leaves its transaction unapplied.
Triggers reject UPDATE and DELETE and any insert that does not extend the chain head;
they guard against mistakes, not against someone who can edit the file (verification
and signed checkpoints are for that).
"""

from __future__ import annotations

import contextlib
import pathlib
import sqlite3
import urllib.parse
import uuid
from collections.abc import Iterator, Sequence

from continue_orchestrator import errors
from continue_orchestrator.ledger import _backend, _entry

_SCHEMA = (
    _backend.tables(int64="INTEGER", text="TEXT")
    + f"""CREATE TRIGGER IF NOT EXISTS ledger_entries_chain BEFORE INSERT ON ledger_entries
WHEN NEW.sequence IS NOT (SELECT coalesce(max(sequence) + 1, 0) FROM ledger_entries)
  OR NEW.prev_hash IS NOT coalesce(
       (SELECT entry_hash FROM ledger_entries ORDER BY sequence DESC LIMIT 1),
       '{_entry.GENESIS_HASH}')
BEGIN SELECT RAISE(ABORT, 'ledger_entries: an insert must extend the chain head'); END;
CREATE TRIGGER IF NOT EXISTS ledger_payloads_delete BEFORE DELETE ON ledger_payloads
WHEN NOT EXISTS (SELECT 1 FROM ledger_redactions WHERE sequence = OLD.sequence)
BEGIN SELECT RAISE(ABORT, 'ledger_payloads: only a tombstone may redact a payload'); END;
"""
)


def _schema() -> str:
    statements = [_SCHEMA]
    for table in (*_backend.APPEND_ONLY, "ledger_payloads"):
        verbs = ("UPDATE", "DELETE") if table != "ledger_payloads" else ("UPDATE",)
        for verb in verbs:
            statements.append(
                f"CREATE TRIGGER IF NOT EXISTS {table}_no_{verb.lower()} BEFORE {verb} ON {table} "
                f"BEGIN SELECT RAISE(ABORT, '{table} is append-only: {verb} rejected'); END;"
            )
    return "\n".join(statements)


def path_from_url(url: str) -> tuple[pathlib.Path, dict[str, str]]:
    """``sqlite:///abs/path.db`` or ``sqlite://relative.db``, with ``?synchronous=normal``."""
    parsed = urllib.parse.urlsplit(url)
    path = url[len("sqlite://") :].split("?", 1)[0]
    if parsed.scheme != "sqlite" or not path:
        raise errors.LedgerError(
            f"{url!r} is not a SQLite ledger URL",
            where="ledger URL",
            fix="write sqlite:///absolute/path.db or sqlite://relative/path.db",
        )
    options = dict(urllib.parse.parse_qsl(parsed.query))
    unknown = set(options) - {"synchronous"}
    if unknown or options.get("synchronous", "full").lower() not in ("full", "normal"):
        raise errors.LedgerError(
            f"unsupported options {sorted(options.items())}",
            where=url,
            fix="the only option is synchronous=full (default) or synchronous=normal",
        )
    return pathlib.Path(urllib.parse.unquote(path)), options


class _Session(_backend.SqlSession[sqlite3.Connection]):
    placeholder = "?"

    def insert(self, rows: Sequence[_entry.EntryRow], payloads: Sequence[tuple[int, str]]) -> None:
        self._db.executemany("INSERT INTO ledger_entries VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)
        self._db.executemany("INSERT INTO ledger_payloads VALUES (?, ?)", payloads)

    def redact(self, sequences: Sequence[int], tombstone: int) -> None:
        self._db.executemany(
            "INSERT INTO ledger_redactions VALUES (?, ?)", [(s, tombstone) for s in sequences]
        )
        self._db.executemany(
            "DELETE FROM ledger_payloads WHERE sequence = ?", [(s,) for s in sequences]
        )

    def rows(
        self, *, start: int, stop: int | None, run_uid: str | None, limit: int | None
    ) -> Iterator[_backend.Row]:
        query, params = _backend.rows_query(
            "?", start=start, stop=stop, run_uid=run_uid, limit=limit
        )
        cursor = self._db.execute(query, params)
        while batch := cursor.fetchmany(4096):
            yield from batch


class SQLiteBackend(_backend.SqlBackend[sqlite3.Connection]):
    def __init__(self, url: str, *, create: bool = True) -> None:
        super().__init__(url)
        self._path, options = path_from_url(url)
        self._synchronous = options.get("synchronous", "full").upper()
        if not create and not self._path.exists():
            raise errors.LedgerError(
                "no ledger file here",
                where=str(self._path),
                fix="check the path, or append to the ledger once to create it",
            )
        db = self._connection()
        try:
            if create:
                db.execute("PRAGMA journal_mode=WAL")
                # One script, one transaction: concurrent first opens cannot half-create.
                db.executescript(
                    f"BEGIN IMMEDIATE;\n{_schema()}\n"
                    "INSERT OR IGNORE INTO ledger_meta VALUES "
                    f"('origin', 'urn:uuid:{uuid.uuid4()}'), "
                    f"('schema_version', '{_backend.SCHEMA_VERSION}');\nCOMMIT;"
                )
            tables = {
                row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")
            }
            if "ledger_entries" not in tables:
                raise errors.LedgerError(
                    "file is not a ledger (no ledger_entries table)",
                    where=str(self._path),
                    fix="point at a ledger file",
                )
        except sqlite3.Error as error:
            if db.in_transaction:
                db.execute("ROLLBACK")
            self.close()
            raise errors.LedgerError(
                f"cannot open: {error}",
                where=str(self._path),
                fix="check that the file is a ledger and the directory is writable",
            ) from None
        except errors.LedgerError:
            self.close()
            raise

    @property
    def path(self) -> pathlib.Path:
        return self._path

    def ensure_open(self) -> None:
        """Raise ``LedgerError`` if this ledger is closed, as any read through it would."""
        self._connection()

    def _open(self) -> sqlite3.Connection:
        try:
            db = sqlite3.connect(
                self._path, isolation_level=None, check_same_thread=False, timeout=60.0
            )
        except sqlite3.Error as error:
            raise errors.LedgerError(
                f"cannot open: {error}",
                where=str(self._path),
                fix="check the path and its permissions",
            ) from None
        db.execute(f"PRAGMA synchronous={self._synchronous}")
        db.execute("PRAGMA busy_timeout=60000")
        return db

    @contextlib.contextmanager
    def _transaction(self, db: sqlite3.Connection, *, write: bool) -> Iterator[_backend.Session]:
        try:
            db.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            yield _Session(db)
            db.execute("COMMIT")
        except sqlite3.Error as error:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise errors.LedgerError(
                f"{'write' if write else 'read'} failed: {error}",
                where=str(self._path),
                fix="if a trigger rejected it, the ledger is append-only; otherwise check "
                "the disk and run 'orchestrator ledger verify'",
            ) from None
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
