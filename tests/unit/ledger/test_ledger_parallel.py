"""Parallel verification must give exactly the one-process report, tampered or not.

``_verify.scan_chunk`` + ``_verify.merge`` are compared with ``_verify.check`` on randomly
tampered copies of one ledger (in this process, for many cases), and the real worker
processes of ``_parallel.verify`` on tampering inside a chunk and at chunk boundaries.
"""

from __future__ import annotations

import pathlib
import shutil
import sqlite3
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from continue_orchestrator import ledger
from continue_orchestrator.ledger import _backend, _entry, _parallel, _sqlite, _verify

N = 100
KEY = ed25519.Ed25519PrivateKey.generate()
_FIELDS = ("run_uid", "time", "kind", "actor", "payload_digest", "prev_hash", "entry_hash")


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    """100 entries over three runs, two tombstones, checkpoints at 16, 33 and 64."""
    path = tmp_path_factory.mktemp("parallel") / "base.db"
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
    db = sqlite3.connect(path)
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    return path


def _copy(base: pathlib.Path, directory: pathlib.Path, name: str) -> pathlib.Path:
    path = directory / f"{name}.db"
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
    for sequence, run, time, kind, actor, digest, _, _, _ in rows[start:]:
        if sequence == start:
            actor = "innocent"
            statements.append(
                f"UPDATE ledger_entries SET actor = '{actor}' WHERE sequence = {sequence}"
            )
        new_hash = _entry.entry_hash(sequence, run, time, kind, actor, digest, prev)
        statements.append(
            f"UPDATE ledger_entries SET payload_digest = '{digest}', prev_hash = '{prev}', "
            f"entry_hash = '{new_hash}' WHERE sequence = {sequence}"
        )
        prev = new_hash
    return statements


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
        "forge root": [
            f"UPDATE ledger_checkpoints SET root_hash = '{'cd' * 32}' WHERE size = {at}"
        ],
        "delete row": [
            f"DELETE FROM ledger_payloads WHERE sequence = {at}",
            f"DELETE FROM ledger_entries WHERE sequence = {at}",
        ],
        "truncate": [
            f"DELETE FROM ledger_payloads WHERE sequence >= {at}",
            f"DELETE FROM ledger_entries WHERE sequence >= {at}",
        ],
    }[what]


def _single(path: pathlib.Path) -> ledger.VerifyReport:
    return ledger.verify(f"sqlite://{path}", public_key=KEY.public_key(), workers=1)


def _chunked(path: pathlib.Path, length: int) -> ledger.VerifyReport | None:
    """scan_chunk + merge in this process, as the workers and the parent would."""
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("BEGIN")
    session = _sqlite._Session(db)
    try:
        size, _ = session.head()
        checkpoints = [checkpoint for checkpoint, _ in session.checkpoints()]
        marks = {c.size for c in checkpoints}
        chunks = [
            _verify.scan_chunk(
                session.rows(start=lo, stop=min(lo + length, size), run_uid=None, limit=None),
                lo,
                min(lo + length, size),
                marks,
            )
            for lo in range(0, size, length)
        ]
        return _verify.merge(
            f"sqlite://{path}",
            session.origin(),
            size,
            checkpoints,
            chunks,
            public_key=KEY.public_key(),
        )
    except _verify.ChunkAnomalyError:
        return None
    finally:
        db.close()


WHATS = ["payload", "actor", "kind", "prev_hash", "entry_hash", "drop payload", "swap",
         "rewrite", "forge root", "delete row", "truncate"]  # fmt: skip
CONTIGUOUS = {"delete row": False, "truncate": True}


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    tamperings=st.lists(
        st.tuples(
            st.sampled_from(WHATS),
            st.sampled_from([0, 1, 7, 15, 16, 17, 31, 32, 33, 48, 63, 64, 65, 98, 99]),
        ),
        max_size=3,
    ),
    length=st.sampled_from([1, 2, 4, 8, 16, 32, 64, 128]),
)
def test_chunked_report_is_the_one_pass_report(
    base: pathlib.Path, tmp_path: pathlib.Path, tamperings: list[tuple[str, int]], length: int
) -> None:
    path = _copy(base, tmp_path, "case")
    for what, at in tamperings:
        _tamper(path, _tampering(path, what, at))
    single = _single(path)
    chunked = _chunked(path, length)
    db = sqlite3.connect(path)
    count, top = db.execute(
        "SELECT count(*), coalesce(max(sequence), -1) FROM ledger_entries"
    ).fetchone()
    db.close()
    if count != top + 1:
        assert chunked is None  # a gap: only the one-pass check may say where
    else:
        assert chunked == single


@pytest.mark.parametrize(
    ("what", "at"),
    [("payload", 40), ("prev_hash", 32), ("actor", 31), ("rewrite", 32), ("swap", 63),
     ("drop payload", 16)],
)  # fmt: skip
def test_worker_processes_name_the_same_first_bad_sequence(
    base: pathlib.Path, tmp_path: pathlib.Path, what: str, at: int
) -> None:
    """Chunks of 16: tampering in a middle chunk, and on both sides of boundaries."""
    path = _copy(base, tmp_path, "case")
    _tamper(path, _tampering(path, what, at))
    single = _single(path)
    parallel = _parallel.verify(
        path, f"sqlite://{path}", workers=2, chunk=16, public_key=KEY.public_key()
    )
    assert parallel is not None, "the parallel path gave up on a contiguous ledger"
    assert not single.ok
    assert parallel == single
    assert parallel.first_bad_sequence == single.first_bad_sequence


def test_untouched_ledger_verifies_in_parallel_with_the_same_root(
    base: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    path = _copy(base, tmp_path, "case")
    single = _single(path)
    parallel = _parallel.verify(
        path, f"sqlite://{path}", workers=2, chunk=8, public_key=KEY.public_key()
    )
    assert single.ok and single.redacted > 1
    assert parallel == single


def test_a_gap_falls_back_to_one_process_with_the_same_report(
    base: pathlib.Path, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _copy(base, tmp_path, "case")
    _tamper(path, _tampering(path, "delete row", 40))
    assert _parallel.verify(path, f"sqlite://{path}", workers=2, chunk=16) is None
    monkeypatch.setattr(_parallel, "MIN_ENTRIES", 1)
    report = ledger.verify(f"sqlite://{path}", public_key=KEY.public_key())
    assert report == _single(path) and report.first_bad_sequence == 40


def test_appends_during_parallel_verification_do_not_leak_into_it(
    base: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    """The head is read under the write lock, which is held until every worker has its
    snapshot: an append and a redaction racing with verification are not half-seen."""
    import threading

    path = _copy(base, tmp_path, "case")
    stop = threading.Event()

    def writer() -> None:
        with ledger.open(f"sqlite://{path}") as book:
            while not stop.is_set():
                entry = book.append("run-9", ledger.Kind.TOOL_CALL, "gw", {"n": 1})
                book.tombstone(sequence=entry.sequence, reason="race", actor="t")

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        reports: list[Any] = [
            _parallel.verify(path, f"sqlite://{path}", workers=2, chunk=16) for _ in range(2)
        ]
    finally:
        stop.set()
        thread.join()
    for report in reports:
        assert report is not None and report.ok, report
