"""Fixtures for the ledger tests: one suite, run against SQLite and a real PostgreSQL.

The PostgreSQL server is Debian's, started once per session on loopback by
``hack/pgtemp.py`` (``make test-deps`` installs it; nothing is installed here). Each
test gets a fresh database whose schema is owned by the superuser and whose ledger role
may only SELECT and INSERT, as in production. ``CO_TEST_POSTGRES_URL`` (a superuser URL)
points the tests at an existing server instead.
"""

from __future__ import annotations

import importlib.util
import itertools
import os
import pathlib
import shutil
import sqlite3
import sys
import tempfile
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from continue_orchestrator import ledger

ROOT = pathlib.Path(__file__).resolve().parents[3]
WRITER_ROLE = "ledger_writer"
_databases = itertools.count()


def _pgtemp() -> Any:
    spec = importlib.util.spec_from_file_location("pgtemp", ROOT / "hack" / "pgtemp.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["pgtemp"] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def postgres_admin() -> Iterator[str]:
    """Superuser URL (database ``postgres``) of a server running for this session."""
    url = os.environ.get("CO_TEST_POSTGRES_URL")
    server = None
    # Not pytest's tmp_path: that is private to root, and the server runs as 'postgres'.
    directory = pathlib.Path(tempfile.mkdtemp(prefix="co-ledger-pg-"))
    if not url:
        pgtemp = _pgtemp()
        try:
            server = pgtemp.start(directory, durable=False)
        except pgtemp.UnavailableError as error:
            pytest.fail(f"cannot start PostgreSQL for the ledger tests: {error}", pytrace=False)
        url = server.admin_url
    with psycopg.connect(url, autocommit=True) as db:
        exists = db.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (WRITER_ROLE,))
        if exists.fetchone() is None:
            db.execute(f"CREATE ROLE {WRITER_ROLE} LOGIN")
    try:
        yield url
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(directory, ignore_errors=True)


def _with_database(url: str, database: str) -> str:
    base, _, _ = url.rpartition("/")
    return f"{base}/{database}"


def _with_user(url: str, user: str) -> str:
    scheme, rest = url.split("://", 1)
    hostpart = rest.split("@", 1)[-1]
    return f"{scheme}://{user}@{hostpart}"


@pytest.fixture
def postgres_database(postgres_admin: str) -> Iterator[str]:
    """Superuser URL of a fresh database with the ledger schema and grants in place."""
    name = f"ledger_{os.getpid()}_{next(_databases)}"
    with psycopg.connect(postgres_admin, autocommit=True) as db:
        db.execute(f"CREATE DATABASE {name}")
    admin = _with_database(postgres_admin, name)
    ledger.init_postgres(admin, writer_role=WRITER_ROLE)
    yield admin
    with psycopg.connect(postgres_admin, autocommit=True) as db:
        db.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


class Store:
    """One ledger location plus an attacker's raw access to its tables."""

    def __init__(self, backend: str, url: str, admin_url: str) -> None:
        self.backend = backend
        self.url = url
        self.admin_url = admin_url

    def open(self, **options: Any) -> ledger.Ledger:
        return ledger.open(self.url, **options)

    def tamper(self, *statements: str) -> None:
        """Run SQL as someone with full control of the database, triggers out of the way."""
        if self.backend == "sqlite":
            path = self.url.removeprefix("sqlite://")
            db = sqlite3.connect(path, isolation_level=None)
            try:
                triggers = [
                    r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='trigger'")
                ]
                for trigger in triggers:
                    db.execute(f"DROP TRIGGER {trigger}")
                for statement in statements:
                    db.execute(statement)
            finally:
                db.close()
            return
        with psycopg.connect(self.admin_url, autocommit=True) as db, db.transaction():
            db.execute("SET session_replication_role = replica")  # skips every trigger
            for statement in statements:
                db.execute(statement)  # type: ignore[call-overload]

    def query(self, statement: str) -> list[tuple[Any, ...]]:
        if self.backend == "sqlite":
            db = sqlite3.connect(self.url.removeprefix("sqlite://"))
            try:
                return db.execute(statement).fetchall()
            finally:
                db.close()
        with psycopg.connect(self.admin_url, autocommit=True) as db:
            return db.execute(statement).fetchall()  # type: ignore[call-overload, no-any-return]


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def store(request: pytest.FixtureRequest, tmp_path: pathlib.Path) -> Store:
    if request.param == "sqlite":
        url = f"sqlite://{tmp_path / 'ledger.db'}"
        return Store("sqlite", url, url)
    admin = request.getfixturevalue("postgres_database")
    return Store("postgresql", _with_user(admin, WRITER_ROLE), admin)


@pytest.fixture
def postgres_store(postgres_database: str) -> Store:
    return Store("postgresql", _with_user(postgres_database, WRITER_ROLE), postgres_database)


@pytest.fixture(params=["ed25519", "p256"])
def signing_key(request: pytest.FixtureRequest) -> ledger.PrivateKey:
    if request.param == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture
def key() -> ledger.PrivateKey:
    return ed25519.Ed25519PrivateKey.generate()


@pytest.fixture
def filled(store: Store, key: ledger.PrivateKey) -> Callable[[int], None]:
    """Fill ``store`` with ``n`` entries over three runs and sign a checkpoint at the end."""

    def fill(n: int) -> None:
        with store.open() as book:
            book.append_many(
                (f"run-{i % 3}", ledger.Kind.TOOL_CALL, "gateway", {"i": i, "tool": "Bash"})
                for i in range(n)
            )
            book.checkpoint(ledger.KeySigner(key))

    return fill
