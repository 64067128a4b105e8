"""The native verification core must give exactly the pure-Python report, or step aside.

``ledger.verify`` on SQLite takes the native core's (operator/native) word only for a
clean ledger. These tests compare ``verify`` with ``verify(..., native=False)`` on clean
and tampered ledgers (hypothesis picks the tampering), check that the core ran wherever
it should (``check`` made to fail), that it is built in this environment at all, that it
never brings a second SQLite into the process, and that appends racing with it are never
half-seen.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from continue_orchestrator import errors, ledger
from continue_orchestrator.ledger import _backend, _entry, _merkle, _verify

N = 100
KEY = ed25519.Ed25519PrivateKey.generate()
SQLITE_LIBRARY = getattr(sys.modules[sqlite3.connect.__module__], "__file__", None)
KINDS = sorted(kind.value for kind in ledger.Kind)


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    """100 entries over three runs, a tombstoned entry and a tombstoned run, checkpoints at
    16, 33, 64 and 100."""
    path = tmp_path_factory.mktemp("native") / "base.db"
    signer = ledger.KeySigner(KEY)
    with ledger.open(f"sqlite://{path}") as book:
        for i in range(N - 2):
            book.append(f"run-{i % 3}", ledger.Kind.TOOL_CALL, "gateway", {"i": i})
            if len(book) in (16, 33, 64):
                book.checkpoint(signer)
            if i == 40:
                book.tombstone(sequence=7, reason="leak", actor="alice")
            if i == 70:
                book.tombstone(run_uid="run-2", reason="erasure", actor="alice")
        book.checkpoint(signer)
    _settle(path)
    return path


def _settle(path: pathlib.Path) -> None:
    """Fold the WAL into the file, so that a copy of the file is the whole ledger."""
    db = sqlite3.connect(path)
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()


def _copy(base: pathlib.Path, directory: pathlib.Path, name: str) -> pathlib.Path:
    path = directory / f"{name}.db"
    for stale in (directory / f"{name}.db-wal", directory / f"{name}.db-shm"):
        stale.unlink(missing_ok=True)
    shutil.copyfile(base, path)
    return path


def _tamper(path: pathlib.Path, statements: list[str]) -> None:
    db = sqlite3.connect(path, isolation_level=None)
    for (trigger,) in db.execute("SELECT name FROM sqlite_master WHERE type='trigger'").fetchall():
        db.execute(f"DROP TRIGGER {trigger}")
    for statement in statements:
        db.execute(statement)
    db.close()


def _rewrite_from(path: pathlib.Path, start: int) -> list[str]:
    """Edit entry ``start``'s actor and recompute every hash after it, consistently."""
    db = sqlite3.connect(path)
    query, params = _backend.rows_query("?", start=0, stop=None, run_uid=None, limit=None)
    rows = db.execute(query, params).fetchall()
    db.close()
    statements: list[str] = []
    if start >= len(rows):
        return statements
    prev = rows[start - 1][7] if start else _entry.GENESIS_HASH
    for sequence, run, time_, kind, actor, digest, _, _, _ in rows[start:]:
        if sequence == start:
            actor = "innocent"
            statements.append(
                f"UPDATE ledger_entries SET actor = '{actor}' WHERE sequence = {sequence}"
            )
        if not isinstance(actor, str):
            return []  # a blob field from an earlier tampering: no honest hash to forge
        new_hash = _entry.entry_hash(sequence, run, time_, kind, actor, digest, prev)
        statements.append(
            f"UPDATE ledger_entries SET payload_digest = '{digest}', prev_hash = '{prev}', "
            f"entry_hash = '{new_hash}' WHERE sequence = {sequence}"
        )
        prev = new_hash
    return statements


def _rehash_one(path: pathlib.Path, at: int) -> list[str]:
    """Edit entry ``at``'s actor and recompute its hash alone: only the next entry's link
    (and the checkpoints' roots, if any cover it) disagree."""
    statements = _rewrite_from(path, at)
    return statements[:2]


def _tampering(path: pathlib.Path, what: str, at: int) -> list[str]:
    other = (at + 5) % N
    return {
        "payload": [f"UPDATE ledger_payloads SET payload = '{{\"i\":999}}' WHERE sequence = {at}"],
        "actor": [f"UPDATE ledger_entries SET actor = 'admin' WHERE sequence = {at}"],
        "kind": [f"UPDATE ledger_entries SET kind = 'no.such' WHERE sequence = {at}"],
        "prev_hash": [
            f"UPDATE ledger_entries SET prev_hash = (SELECT entry_hash FROM ledger_entries "
            f"WHERE sequence = {other}) WHERE sequence = {at}"
        ],
        "entry_hash": [
            f"UPDATE ledger_entries SET entry_hash = '{'ab' * 32}' WHERE sequence = {at}"
        ],
        "drop payload": [f"DELETE FROM ledger_payloads WHERE sequence = {at}"],
        "swap": [
            f"UPDATE ledger_entries SET sequence = -1 WHERE sequence = {at}",
            f"UPDATE ledger_entries SET sequence = {at} WHERE sequence = {other}",
            f"UPDATE ledger_entries SET sequence = {other} WHERE sequence = -1",
        ],
        "rewrite": _rewrite_from(path, at),
        "rehash one": _rehash_one(path, at),
        "drop checkpoints": [f"DELETE FROM ledger_checkpoints WHERE size >= {at}"],
        "forge root": [
            f"UPDATE ledger_checkpoints SET root_hash = '{'cd' * 32}' WHERE size = {at}"
        ],
        "foreign checkpoint": [
            f"UPDATE ledger_checkpoints SET origin = 'urn:uuid:other' WHERE size = {at}"
        ],
        "bad signature": [
            f"UPDATE ledger_checkpoints SET signature = 'AAAA' || signature WHERE size = {at}"
        ],
        "delete row": [
            f"DELETE FROM ledger_payloads WHERE sequence = {at}",
            f"DELETE FROM ledger_entries WHERE sequence = {at}",
        ],
        "truncate": [
            f"DELETE FROM ledger_payloads WHERE sequence >= {at}",
            f"DELETE FROM ledger_entries WHERE sequence >= {at}",
        ],
        "blob field": [
            f"UPDATE ledger_entries SET actor = CAST(actor AS BLOB) WHERE sequence = {at}"
        ],
        "stray payload": [f"INSERT OR IGNORE INTO ledger_payloads VALUES ({N + at}, '{{}}')"],
        "unlisted redaction": [
            # The tombstones (entries 41 and 72) edited to list nothing they redacted.
            f"UPDATE ledger_payloads SET payload = '{{\"redacted\":[]}}' WHERE sequence = {s}"
            for s in (41, 72)
        ],
    }[what]


WHATS = [
    "payload", "actor", "kind", "prev_hash", "entry_hash", "drop payload", "swap", "rewrite",
    "rehash one", "drop checkpoints", "forge root", "foreign checkpoint", "bad signature",
    "delete row", "truncate", "blob field", "stray payload", "unlisted redaction",
]  # fmt: skip
AT = [0, 1, 7, 15, 16, 17, 32, 33, 42, 63, 64, 65, 73, 98, 99]


def _reports(
    path: pathlib.Path, trusted: ledger.Checkpoint | None = None
) -> tuple[ledger.VerifyReport, ledger.VerifyReport, ledger.VerifyReport | None]:
    """Python's report, ``verify``'s, and the native fast path's alone (None: stepped aside)."""
    url = f"sqlite://{path}"
    python = ledger.verify(
        url, public_key=KEY.public_key(), trusted_checkpoint=trusted, native=False
    )
    default = ledger.verify(url, public_key=KEY.public_key(), trusted_checkpoint=trusted)
    fast = _verify._verify_clean_sqlite(path, url, KEY.public_key(), trusted)
    return python, default, fast


def _trusted(base: pathlib.Path, size: int, forged: bool) -> ledger.Checkpoint:
    with ledger.open(f"sqlite://{base}", create=False) as book:
        kept = next(c for c in book.checkpoints() if c.size == size)
    if forged:
        return ledger.Checkpoint(kept.origin, kept.size, "ef" * 32, kept.time)
    return kept


@settings(
    max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    tamperings=st.lists(st.tuples(st.sampled_from(WHATS), st.sampled_from(AT)), max_size=3),
    trusted=st.sampled_from([None, (64, False), (100, False), (33, True)]),
)
def test_native_and_python_give_the_same_report(
    base: pathlib.Path,
    tmp_path: pathlib.Path,
    tamperings: list[tuple[str, int]],
    trusted: tuple[int, bool] | None,
) -> None:
    path = _copy(base, tmp_path, "case")
    for what, at in tamperings:
        _tamper(path, _tampering(path, what, at))
    kept = _trusted(base, *trusted) if trusted is not None else None
    python, default, fast = _reports(path, kept)
    assert default == python
    # The fast path speaks only for a clean ledger, and then says exactly what Python says.
    assert fast == (python if python.ok else None)


@pytest.mark.parametrize("what", ["rehash one", "rewrite"])
@pytest.mark.parametrize("at", [0, 50, 98])
def test_without_checkpoints_the_links_alone_give_an_edit_away(
    base: pathlib.Path, tmp_path: pathlib.Path, what: str, at: int
) -> None:
    path = _copy(base, tmp_path, "case")
    _tamper(path, [*_tampering(path, what, at), "DELETE FROM ledger_checkpoints"])
    url = f"sqlite://{path}"
    python = ledger.verify(url, native=False)
    assert ledger.verify(url) == python
    assert _verify._verify_clean_sqlite(path, url, None, None) == (python if python.ok else None)
    # One rehashed entry breaks the link to the next (blamed on the entry that changed);
    # a consistent rewrite leaves nothing to see without a checkpoint.
    assert python.first_bad_sequence == (at if what == "rehash one" else None)


@pytest.fixture(scope="module")
def large(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    """2,101 entries (more than two of the core's batches), 1,030 redacted, a checkpoint."""
    path = tmp_path_factory.mktemp("native") / "large.db"
    with ledger.open(f"sqlite://{path}") as book:
        book.append_many((f"run-{i % 3}", "tool.call", "gw", {"i": i}) for i in range(1500))
        book.tombstone(sequence=1030, reason="leak", actor="alice")
        book.append_many((f"run-{i % 3}", "tool.call", "gw", {"i": i}) for i in range(600))
        book.checkpoint(ledger.KeySigner(KEY))
    _settle(path)
    return path


@pytest.mark.parametrize(
    "what", ["payload", "actor", "prev_hash", "drop payload", "swap", "delete row", "truncate"]
)
@pytest.mark.parametrize("at", [1023, 1024, 1025, 2047, 2048, 2100])
def test_tampering_at_batch_boundaries_is_reported_as_python_does(
    large: pathlib.Path, tmp_path: pathlib.Path, what: str, at: int
) -> None:
    """The core hands entries between its two threads in batches of 1,024."""
    path = _copy(large, tmp_path, "case")
    statements = {
        "payload": [f"UPDATE ledger_payloads SET payload = '{{}}' WHERE sequence = {at}"],
        "actor": [f"UPDATE ledger_entries SET actor = 'admin' WHERE sequence = {at}"],
        "prev_hash": [f"UPDATE ledger_entries SET prev_hash = '{'0' * 64}' WHERE sequence = {at}"],
        "drop payload": [f"DELETE FROM ledger_payloads WHERE sequence = {at}"],
        "swap": [
            f"UPDATE ledger_entries SET sequence = -1 WHERE sequence = {at}",
            f"UPDATE ledger_entries SET sequence = {at} WHERE sequence = {at - 1}",
            f"UPDATE ledger_entries SET sequence = {at - 1} WHERE sequence = -1",
        ],
        "delete row": [f"DELETE FROM ledger_entries WHERE sequence = {at}"],
        "truncate": [f"DELETE FROM ledger_entries WHERE sequence >= {at}"],
    }[what]
    clean = _reports(path)
    assert clean[0].ok and clean[0].redacted == 1 and clean[1:] == (clean[0], clean[0])
    _tamper(path, statements)
    python, default, fast = _reports(path)
    assert default == python and fast is None
    assert python.first_bad_sequence == (at - 1 if what == "swap" else at)


def test_clean_ledgers_never_reach_the_python_pass(
    base: pathlib.Path, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    empty = tmp_path / "empty.db"
    ledger.open(f"sqlite://{empty}").close()
    kept = _trusted(base, 64, forged=False)
    signed = ledger.verify(f"sqlite://{base}", public_key=KEY.public_key(), native=False)
    trusted = ledger.verify(f"sqlite://{base}", trusted_checkpoint=kept, native=False)
    nothing = ledger.verify(f"sqlite://{empty}", native=False)

    def no_python_pass(*args: Any, **kwargs: Any) -> ledger.VerifyReport:
        raise AssertionError("the native core stepped aside on a clean ledger")

    monkeypatch.setattr(_verify, "check", no_python_pass)
    assert ledger.verify(f"sqlite://{base}", public_key=KEY.public_key()) == signed
    with ledger.open(f"sqlite://{base}", create=False) as book:
        assert ledger.verify(book, trusted_checkpoint=kept) == trusted
    assert ledger.verify(f"sqlite://{empty}") == nothing
    assert signed.ok and signed.redacted > 1 and signed.signatures_verified == 4
    assert trusted.ok and trusted.checkpoints == 5
    assert nothing.ok and nothing.size == 0 and nothing.root_hash == _merkle.EMPTY_ROOT.hex()


def test_a_closed_ledger_is_not_verified_behind_its_back(tmp_path: pathlib.Path) -> None:
    book = ledger.open(f"sqlite://{tmp_path / 'closed.db'}")
    book.append("run-1", ledger.Kind.TOOL_CALL, "gw", {})
    book.close()
    for native in (True, False):
        with pytest.raises(errors.LedgerError, match="ledger is closed"):
            ledger.verify(book, native=native)


def test_the_native_core_is_built_in_this_environment(base: pathlib.Path) -> None:
    """Installed without Rust, verification silently runs in Python; CI must not."""
    from continue_orchestrator.ledger import _native  # no skip: a missing core fails here

    scanned = _native.scan_sqlite(SQLITE_LIBRARY, str(base), KINDS, "tombstone", [])
    assert not isinstance(scanned, str), scanned
    origin, rows, size, root_hash, roots, missing, tombstones = scanned
    assert (size, len(rows), [sequence for sequence, _ in tombstones]) == (N, 4, [41, 72])
    assert {row[0] for row in rows} == {origin} and {2, 7} <= set(missing)
    assert roots[100] == root_hash == rows[-1][2]


def test_the_core_uses_pythons_sqlite_and_never_a_copy_of_its_own(base: pathlib.Path) -> None:
    """Two SQLite libraries in one process drop each other's POSIX locks: the core must
    bind to the one sqlite3 loaded, and refuse rather than load another."""
    from continue_orchestrator.ledger import _native

    built = pathlib.Path(_native.__file__).read_bytes()
    assert b"SQLite format 3" not in built  # the file header string every SQLite carries
    other = "/usr/lib/x86_64-linux-gnu/libsqlite3.so.0-not-loaded"
    refused = _native.scan_sqlite(other, str(base), KINDS, "tombstone", [])
    assert isinstance(refused, str) and "not loaded" in refused


def test_without_the_native_core_verification_is_the_same(
    base: pathlib.Path, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _copy(base, tmp_path, "case")
    _tamper(path, _tampering(path, "payload", 40))
    reports = [_reports(p)[0] for p in (base, path)]
    monkeypatch.setitem(sys.modules, "continue_orchestrator.ledger._native", None)
    for p, report in zip((base, path), reports, strict=True):
        assert ledger.verify(f"sqlite://{p}", public_key=KEY.public_key()) == report
    assert reports[0].ok and reports[1].first_bad_sequence == 40


_WRITER = textwrap.dedent(
    """
    import sys, time
    from cryptography.hazmat.primitives.asymmetric import ed25519
    from continue_orchestrator import errors, ledger
    signer = ledger.KeySigner(ed25519.Ed25519PrivateKey.generate())
    deadline = time.monotonic() + float(sys.argv[2])
    with ledger.open("sqlite://" + sys.argv[1]) as book:
        while time.monotonic() < deadline:
            entry = book.append("run-p", "tool.call", "proc", {"n": 1})
            book.tombstone(sequence=entry.sequence, reason="race", actor="p")
            book.checkpoint(signer)
    """
)


def test_appends_racing_with_verification_are_never_half_seen(
    base: pathlib.Path, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A thread and a process append, redact and checkpoint while the core verifies: every
    report is clean and comes from the core (entries, payloads and checkpoints read in one
    snapshot), and none falls back to the Python pass."""
    path = _copy(base, tmp_path, "case")
    stop = threading.Event()
    failures: list[BaseException] = []

    def writer() -> None:
        try:
            signer = ledger.KeySigner(KEY)
            with ledger.open(f"sqlite://{path}") as book:
                while not stop.is_set():
                    entry = book.append("run-9", ledger.Kind.TOOL_CALL, "gw", {"n": 1})
                    book.tombstone(sequence=entry.sequence, reason="race", actor="t")
                    book.checkpoint(signer)
        except BaseException as error:  # surfaced below
            failures.append(error)

    def no_python_pass(*args: Any, **kwargs: Any) -> ledger.VerifyReport:
        raise AssertionError("the native core stepped aside while appends raced with it")

    env = {**os.environ, "PYTHONPATH": str(pathlib.Path(_verify.__file__).parents[2])}
    process = subprocess.Popen([sys.executable, "-c", _WRITER, str(path), "6"], env=env)
    thread = threading.Thread(target=writer)
    thread.start()
    monkeypatch.setattr(_verify, "check", no_python_pass)
    sizes = []
    try:
        deadline = time.monotonic() + 4
        while time.monotonic() < deadline:
            report = ledger.verify(f"sqlite://{path}")
            assert report.ok, report.problems[:3]
            sizes.append(report.size)
    finally:
        stop.set()
        thread.join()
        process.wait(30)
    assert not failures, failures
    assert process.returncode == 0
    assert len(set(sizes)) > 2, sizes  # the writers really wrote in between
    monkeypatch.undo()
    final = ledger.verify(f"sqlite://{path}", native=False)
    assert final.ok and final.size > N
