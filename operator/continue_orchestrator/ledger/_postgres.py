"""The PostgreSQL backend, for many writers and large ledgers.

Appends serialise on a transaction-scoped advisory lock, then read the head and insert
after it. The database enforces append-only on its own: triggers reject UPDATE, DELETE
and TRUNCATE on every ledger table (payload rows may be deleted only when a redaction
names them) and any insert that does not extend the chain head; ``init`` grants the
ledger's role SELECT and INSERT only (plus DELETE on payloads, for tombstones).
"""

from __future__ import annotations

import contextlib
import threading
import uuid
from collections.abc import Iterator, Sequence

import psycopg
from psycopg import sql

from continue_orchestrator import errors
from continue_orchestrator.ledger import _backend, _checkpoint, _entry

# Arbitrary but fixed: every writer of every ledger in a database takes this lock.
_LOCK_KEY = 0x6C6564676572  # "ledger"

SCHEMA = f"""
CREATE TABLE IF NOT EXISTS ledger_meta (key text PRIMARY KEY, value text NOT NULL);
CREATE TABLE IF NOT EXISTS ledger_entries (
    sequence bigint PRIMARY KEY,
    run_uid text NOT NULL,
    time text NOT NULL,
    kind text NOT NULL,
    actor text NOT NULL,
    payload_digest text NOT NULL,
    prev_hash text NOT NULL,
    entry_hash text NOT NULL
);
CREATE INDEX IF NOT EXISTS ledger_entries_run ON ledger_entries (run_uid, sequence);
CREATE TABLE IF NOT EXISTS ledger_payloads (sequence bigint PRIMARY KEY, payload text NOT NULL);
CREATE TABLE IF NOT EXISTS ledger_redactions (
    sequence bigint PRIMARY KEY,
    tombstone bigint NOT NULL
);
CREATE TABLE IF NOT EXISTS ledger_checkpoints (
    size bigint NOT NULL,
    origin text NOT NULL,
    root_hash text NOT NULL,
    time text NOT NULL,
    key_id text NOT NULL,
    signature text NOT NULL,
    frontier text NOT NULL,
    PRIMARY KEY (size, key_id)
);

CREATE OR REPLACE FUNCTION ledger_reject() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only: % rejected', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'insufficient_privilege';
END $$;

CREATE OR REPLACE FUNCTION ledger_chain() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE head ledger_entries%ROWTYPE;
BEGIN
    SELECT * INTO head FROM ledger_entries ORDER BY sequence DESC LIMIT 1;
    IF NEW.sequence IS DISTINCT FROM coalesce(head.sequence + 1, 0)
       OR NEW.prev_hash IS DISTINCT FROM coalesce(head.entry_hash, '{_entry.GENESIS_HASH}') THEN
        RAISE EXCEPTION 'ledger_entries: entry % does not extend the chain head %',
            NEW.sequence, head.sequence USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    RETURN NEW;
END $$;

CREATE OR REPLACE FUNCTION ledger_redact_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (
        SELECT 1 FROM ledger_redactions r JOIN ledger_entries t ON t.sequence = r.tombstone
        WHERE r.sequence = OLD.sequence AND t.kind = 'tombstone'
    ) THEN
        RAISE EXCEPTION 'ledger_payloads: payload % may only be removed by a tombstone',
            OLD.sequence USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN OLD;
END $$;

DROP TRIGGER IF EXISTS ledger_entries_chain ON ledger_entries;
CREATE TRIGGER ledger_entries_chain BEFORE INSERT ON ledger_entries
    FOR EACH ROW EXECUTE FUNCTION ledger_chain();
DROP TRIGGER IF EXISTS ledger_payloads_redact ON ledger_payloads;
CREATE TRIGGER ledger_payloads_redact BEFORE DELETE ON ledger_payloads
    FOR EACH ROW EXECUTE FUNCTION ledger_redact_only();
DROP TRIGGER IF EXISTS ledger_payloads_no_update ON ledger_payloads;
CREATE TRIGGER ledger_payloads_no_update BEFORE UPDATE ON ledger_payloads
    FOR EACH ROW EXECUTE FUNCTION ledger_reject();
DROP TRIGGER IF EXISTS ledger_payloads_no_truncate ON ledger_payloads;
CREATE TRIGGER ledger_payloads_no_truncate BEFORE TRUNCATE ON ledger_payloads
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_reject();
"""

_APPEND_ONLY = ("ledger_meta", "ledger_entries", "ledger_redactions", "ledger_checkpoints")


def _append_only_triggers() -> str:
    statements = []
    for table in _APPEND_ONLY:
        statements.append(
            f"DROP TRIGGER IF EXISTS {table}_append_only ON {table};\n"
            f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
            "FOR EACH ROW EXECUTE FUNCTION ledger_reject();\n"
            f"DROP TRIGGER IF EXISTS {table}_no_truncate ON {table};\n"
            f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
            "FOR EACH STATEMENT EXECUTE FUNCTION ledger_reject();"
        )
    return "\n".join(statements)


def _connect(url: str) -> psycopg.Connection[tuple[object, ...]]:
    try:
        return psycopg.connect(url, autocommit=True, connect_timeout=10)
    except psycopg.Error as error:
        raise errors.LedgerError(
            f"cannot connect: {str(error).strip()}",
            where=_backend.redacted_url(url),
            fix="check the URL, that the server runs, and the role's password",
        ) from None


def init(admin_url: str, *, writer_role: str | None = None) -> None:
    """Create the ledger schema (as its owner) and, optionally, grant ``writer_role`` only
    what appending needs: SELECT and INSERT, plus DELETE on payloads for tombstones."""
    with _connect(admin_url) as db, db.transaction():
        db.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
        db.execute(SCHEMA + _append_only_triggers())
        db.execute(
            "INSERT INTO ledger_meta VALUES ('origin', %s), ('schema_version', %s) "
            "ON CONFLICT (key) DO NOTHING",
            (f"urn:uuid:{uuid.uuid4()}", _backend.SCHEMA_VERSION),
        )
        tables = ("ledger_meta", *_APPEND_ONLY[1:], "ledger_payloads")
        for table in tables:
            db.execute(sql.SQL("REVOKE ALL ON {} FROM PUBLIC").format(sql.Identifier(table)))
        if writer_role is not None:
            role = sql.Identifier(writer_role)
            for table in tables:
                db.execute(sql.SQL("REVOKE ALL ON {} FROM {}").format(sql.Identifier(table), role))
            db.execute(sql.SQL("GRANT SELECT ON ledger_meta TO {}").format(role))
            for table in ("ledger_entries", "ledger_redactions", "ledger_checkpoints"):
                db.execute(
                    sql.SQL("GRANT SELECT, INSERT ON {} TO {}").format(sql.Identifier(table), role)
                )
            db.execute(
                sql.SQL("GRANT SELECT, INSERT, DELETE ON ledger_payloads TO {}").format(role)
            )


class _Session:
    def __init__(self, connection: psycopg.Connection[tuple[object, ...]]) -> None:
        self._db = connection

    def origin(self) -> str:
        row = self._db.execute("SELECT value FROM ledger_meta WHERE key = 'origin'").fetchone()
        return str(row[0]) if row else ""

    def head(self) -> tuple[int, str]:
        row = self._db.execute(
            "SELECT sequence, entry_hash FROM ledger_entries ORDER BY sequence DESC LIMIT 1"
        ).fetchone()
        return (0, _entry.GENESIS_HASH) if row is None else (int(row[0]) + 1, str(row[1]))  # type: ignore[call-overload]

    def insert(
        self, rows: Sequence[_backend.EntryRow], payloads: Sequence[tuple[int, str]]
    ) -> None:
        with self._db.cursor() as cursor:
            with cursor.copy(
                "COPY ledger_entries (sequence, run_uid, time, kind, actor, payload_digest, "
                "prev_hash, entry_hash) FROM STDIN"
            ) as copy:
                for row in rows:
                    copy.write_row(row)
            with cursor.copy("COPY ledger_payloads (sequence, payload) FROM STDIN") as copy:
                for payload in payloads:
                    copy.write_row(payload)

    def targets(self, *, run_uid: str | None, sequence: int | None) -> list[_backend.Target]:
        query = (
            "SELECT e.sequence, e.run_uid, e.kind, p.sequence IS NOT NULL FROM ledger_entries e "
            "LEFT JOIN ledger_payloads p ON p.sequence = e.sequence "
        )
        if sequence is not None:
            cursor = self._db.execute(query + "WHERE e.sequence = %s", (sequence,))
        else:
            cursor = self._db.execute(
                query + "WHERE e.run_uid = %s ORDER BY e.sequence", (run_uid,)
            )
        return [(int(r[0]), str(r[1]), str(r[2]), bool(r[3])) for r in cursor]  # type: ignore[call-overload]

    def redact(self, sequences: Sequence[int], tombstone: int) -> None:
        if not sequences:
            return
        with self._db.cursor() as cursor:
            cursor.executemany(
                "INSERT INTO ledger_redactions VALUES (%s, %s)", [(s, tombstone) for s in sequences]
            )
            cursor.execute(
                "DELETE FROM ledger_payloads WHERE sequence = ANY(%s)", (list(sequences),)
            )

    def rows(
        self, *, start: int, stop: int | None, run_uid: str | None, limit: int | None
    ) -> Iterator[_backend.Row]:
        query, params = _backend.rows_query(
            "%s", start=start, stop=stop, run_uid=run_uid, limit=limit
        )
        # A server-side cursor streams a large ledger instead of loading it whole.
        with self._db.cursor(name=f"ledger_rows_{uuid.uuid4().hex}") as cursor:
            cursor.itersize = 8192
            cursor.execute(query.encode(), params)
            yield from cursor

    def hashes(self, start: int, stop: int) -> list[str]:
        cursor = self._db.execute(
            "SELECT entry_hash FROM ledger_entries WHERE sequence >= %s AND sequence < %s "
            "ORDER BY sequence",
            (start, stop),
        )
        return [str(row[0]) for row in cursor]

    def checkpoints(self) -> list[tuple[_checkpoint.Checkpoint, str]]:
        cursor = self._db.execute(
            "SELECT origin, size, root_hash, time, key_id, signature, frontier "
            "FROM ledger_checkpoints ORDER BY size, key_id"
        )
        return [
            (_checkpoint.Checkpoint(*row[:6]), str(row[6]))  # type: ignore[arg-type]
            for row in cursor
        ]

    def insert_checkpoint(self, checkpoint: _checkpoint.Checkpoint, frontier: str) -> None:
        c = checkpoint
        self._db.execute(
            "INSERT INTO ledger_checkpoints (size, origin, root_hash, time, key_id, signature, "
            "frontier) VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (size, key_id) DO NOTHING",
            (c.size, c.origin, c.root_hash, c.time, c.key_id, c.signature, frontier),
        )


class PostgresBackend:
    def __init__(self, url: str, *, create: bool = True) -> None:
        self.url = url
        self._where = _backend.redacted_url(url)
        self._write_lock = threading.Lock()
        self._local = threading.local()
        self._all: list[psycopg.Connection[tuple[object, ...]]] = []
        self._all_lock = threading.Lock()
        self._closed = False
        db = self._connection()
        exists = db.execute("SELECT to_regclass('ledger_entries') IS NOT NULL").fetchone()
        if not (exists and exists[0]):
            if not create:
                self.close()
                raise errors.LedgerError(
                    "the database has no ledger schema",
                    where=self._where,
                    fix="create it with 'orchestrator ledger init URL --writer-role ROLE'",
                )
            try:
                init(url)
            except psycopg.Error as error:
                self.close()
                raise errors.LedgerError(
                    f"cannot create the ledger schema: {str(error).strip()}",
                    where=self._where,
                    fix="run 'orchestrator ledger init' as the schema owner first",
                ) from None

    def _connection(self) -> psycopg.Connection[tuple[object, ...]]:
        db: psycopg.Connection[tuple[object, ...]] | None = getattr(self._local, "db", None)
        if db is None or db.closed:
            if self._closed:
                raise errors.LedgerError(
                    "ledger is closed", where=self._where, fix="open it again with ledger.open()"
                )
            db = _connect(self.url)
            self._local.db = db
            with self._all_lock:
                self._all.append(db)
        return db

    @contextlib.contextmanager
    def session(self, *, write: bool) -> Iterator[_backend.Session]:
        db = self._connection()
        lock = self._write_lock if write else contextlib.nullcontext()
        with lock:
            try:
                with db.transaction():
                    if write:
                        db.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
                    else:
                        db.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                    yield _Session(db)
            except psycopg.Error as error:
                raise errors.LedgerError(
                    f"{'write' if write else 'read'} failed: {str(error).strip()}",
                    where=self._where,
                    fix="if a trigger or privilege rejected it, the ledger is append-only; "
                    "otherwise check the server and run 'orchestrator ledger verify'",
                ) from None

    def close(self) -> None:
        self._closed = True
        with self._all_lock:
            for db in self._all:
                db.close()
            self._all.clear()
        self._local = threading.local()
