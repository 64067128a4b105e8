"""The PostgreSQL backend, for many writers and large ledgers.

Appends serialise on a transaction-scoped advisory lock, then read the head and insert
after it. The database enforces append-only on its own: triggers reject UPDATE, DELETE
and TRUNCATE on every ledger table (payload rows may be deleted only when a redaction
names them) and any insert that does not extend the chain head; ``init`` grants the
ledger's role SELECT and INSERT only (plus DELETE on payloads, for tombstones).
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator, Sequence

import psycopg
from psycopg import sql

from continue_orchestrator import errors
from continue_orchestrator.ledger import _backend, _entry

# Arbitrary but fixed: every writer of every ledger in a database takes this lock.
_LOCK_KEY = 0x6C6564676572  # "ledger"

SCHEMA = (
    _backend.tables(int64="bigint", text="text")
    + f"""
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
"""
)


def _trigger(table: str, name: str, event: str, function: str) -> str:
    """(Re)create trigger ``{table}_{name}``, running ``function`` before ``event``: once
    per statement for TRUNCATE, once per row otherwise."""
    each = "STATEMENT" if event == "TRUNCATE" else "ROW"
    return (
        f"DROP TRIGGER IF EXISTS {table}_{name} ON {table};\n"
        f"CREATE TRIGGER {table}_{name} BEFORE {event} ON {table} "
        f"FOR EACH {each} EXECUTE FUNCTION {function}();"
    )


def _triggers() -> str:
    """Every trigger: the chain check on insert, payloads removed only by a tombstone,
    and no UPDATE, DELETE or TRUNCATE of anything else."""
    statements = [
        _trigger("ledger_entries", "chain", "INSERT", "ledger_chain"),
        _trigger("ledger_payloads", "redact", "DELETE", "ledger_redact_only"),
        _trigger("ledger_payloads", "no_update", "UPDATE", "ledger_reject"),
        _trigger("ledger_payloads", "no_truncate", "TRUNCATE", "ledger_reject"),
    ]
    for table in _backend.APPEND_ONLY:
        statements.append(_trigger(table, "append_only", "UPDATE OR DELETE", "ledger_reject"))
        statements.append(_trigger(table, "no_truncate", "TRUNCATE", "ledger_reject"))
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
        db.execute(SCHEMA + _triggers())
        db.execute(
            "INSERT INTO ledger_meta VALUES ('origin', %s), ('schema_version', %s) "
            "ON CONFLICT (key) DO NOTHING",
            (f"urn:uuid:{uuid.uuid4()}", _backend.SCHEMA_VERSION),
        )
        tables = (*_backend.APPEND_ONLY, "ledger_payloads")
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


class _Session(_backend.SqlSession[psycopg.Connection[tuple[object, ...]]]):
    placeholder = "%s"

    def insert(self, rows: Sequence[_entry.EntryRow], payloads: Sequence[tuple[int, str]]) -> None:
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


class PostgresBackend(_backend.SqlBackend[psycopg.Connection[tuple[object, ...]]]):
    def __init__(self, url: str, *, create: bool = True) -> None:
        super().__init__(url)
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

    def _open(self) -> psycopg.Connection[tuple[object, ...]]:
        return _connect(self.url)

    def _usable(self, connection: psycopg.Connection[tuple[object, ...]]) -> bool:
        return not connection.closed

    @contextlib.contextmanager
    def _transaction(
        self, db: psycopg.Connection[tuple[object, ...]], *, write: bool
    ) -> Iterator[_backend.Session]:
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
