"""An attacker with full control of the database edits rows; verify must say where.

Each test fills a ledger, tampers with the stored rows directly in SQL (triggers dropped
or bypassed, as someone with the file or a superuser would), and runs the real
``orchestrator ledger verify`` entry point: exit 1 and the first bad sequence.
"""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

import psycopg
import pytest

from continue_orchestrator import cli, errors, ledger

if TYPE_CHECKING:
    from conftest import Store

N = 40


def _verify_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = cli.main(["ledger", "verify", *args])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def _public_key_file(key: ledger.PrivateKey, directory: pathlib.Path) -> str:
    from cryptography.hazmat.primitives import serialization

    path = directory / "ledger.pub"
    path.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return str(path)


def test_untouched_ledger_verifies(
    store: Store,
    filled: Callable[[int], None],
    key: ledger.PrivateKey,
    tmp_path: pathlib.Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    filled(N)
    code, output = _verify_cli(capsys, store.url, "--public-key", _public_key_file(key, tmp_path))
    assert code == 0, output
    assert f"{N} entries, 1 checkpoints (1 signatures verified)" in output


TAMPERING = {
    "update a payload": (
        ['UPDATE ledger_payloads SET payload = \'{"i":999,"tool":"Bash"}\' WHERE sequence = 17'],
        17,
    ),
    "update a kind": (["UPDATE ledger_entries SET kind = 'tool.result' WHERE sequence = 12"], 12),
    "update an actor": (["UPDATE ledger_entries SET actor = 'admin' WHERE sequence = 30"], 30),
    "update a digest to match an edited payload": (
        [
            "UPDATE ledger_payloads SET payload = '{}' WHERE sequence = 9",
            "UPDATE ledger_entries SET payload_digest = "
            "'44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a' WHERE sequence = 9",
        ],
        9,
    ),
    "delete a middle row": (
        [
            "DELETE FROM ledger_payloads WHERE sequence = 21",
            "DELETE FROM ledger_entries WHERE sequence = 21",
        ],
        21,
    ),
    "delete only a payload": (["DELETE FROM ledger_payloads WHERE sequence = 5"], 5),
    "swap two rows (reorder)": (
        [
            "UPDATE ledger_entries SET sequence = -1 WHERE sequence = 25",
            "UPDATE ledger_entries SET sequence = 25 WHERE sequence = 26",
            "UPDATE ledger_entries SET sequence = 26 WHERE sequence = -1",
        ],
        25,
    ),
    "truncate the tail": (
        [
            "DELETE FROM ledger_payloads WHERE sequence >= 33",
            "DELETE FROM ledger_entries WHERE sequence >= 33",
        ],
        33,
    ),
    "forge a checkpoint root": (
        ["UPDATE ledger_checkpoints SET root_hash = '" + "ab" * 32 + "'"],
        0,
    ),
}


@pytest.mark.parametrize("case", TAMPERING, ids=list(TAMPERING))
def test_verify_names_the_first_bad_sequence(
    store: Store,
    filled: Callable[[int], None],
    key: ledger.PrivateKey,
    tmp_path: pathlib.Path,
    capsys: pytest.CaptureFixture[str],
    case: str,
) -> None:
    statements, first_bad = TAMPERING[case]
    filled(N)
    store.tamper(*statements)
    code, output = _verify_cli(capsys, store.url, "--public-key", _public_key_file(key, tmp_path))
    assert code == 1, output
    assert f"FAILED: first bad sequence {first_bad}\n" in output
    report = ledger.verify(store.url, public_key=key.public_key())
    with pytest.raises(errors.LedgerIntegrityError) as caught:
        report.raise_for_problems()
    assert caught.value.sequence == first_bad


def test_rewriting_the_whole_chain_is_caught_by_the_signed_checkpoint(
    store: Store,
    filled: Callable[[int], None],
    key: ledger.PrivateKey,
    tmp_path: pathlib.Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The attacker edits entry 10 and recomputes every hash after it: only the
    checkpoint, which they cannot re-sign, gives them away."""
    filled(N)
    rows = store.query(
        "SELECT e.sequence, e.run_uid, e.time, e.kind, e.actor, e.payload_digest, e.prev_hash, "
        "e.entry_hash, p.payload FROM ledger_entries e JOIN ledger_payloads p "
        "ON p.sequence = e.sequence ORDER BY e.sequence"
    )
    from continue_orchestrator.ledger import _entry

    statements = []
    prev = rows[9][7]
    for sequence, run, time, kind, actor, digest, _, _, payload in rows[10:]:
        if sequence == 10:
            payload = '{"i":10,"tool":"Innocent"}'
            digest = _entry.payload_digest(payload.encode())
            statements.append(
                f"UPDATE ledger_payloads SET payload = '{payload}' WHERE sequence = 10"
            )
        new_hash = _entry.entry_hash(sequence, run, time, kind, actor, digest, prev)
        statements.append(
            f"UPDATE ledger_entries SET payload_digest = '{digest}', prev_hash = '{prev}', "
            f"entry_hash = '{new_hash}' WHERE sequence = {sequence}"
        )
        prev = new_hash
    store.tamper(*statements)
    code, output = _verify_cli(capsys, store.url)  # no key: the root still disagrees
    assert code == 1 and "do not hash to the root" in output, output
    assert "FAILED: first bad sequence 0" in output  # the last range a checkpoint vouches for
    # And a checkpoint forged to match is not signed by the key.
    with store.open() as book:
        honest_root = ledger.verify(book).root_hash
    store.tamper(f"UPDATE ledger_checkpoints SET root_hash = '{honest_root}'")
    assert _verify_cli(capsys, store.url)[0] == 0  # without the key, nothing to catch
    code, output = _verify_cli(capsys, store.url, "--public-key", _public_key_file(key, tmp_path))
    assert code == 1 and "claims the given key but its signature fails" in output, output


def test_truncation_with_checkpoints_deleted_is_caught_by_a_kept_checkpoint(
    store: Store,
    filled: Callable[[int], None],
    tmp_path: pathlib.Path,
    capsys: pytest.CaptureFixture[str],
    key: ledger.PrivateKey,
) -> None:
    filled(N)
    kept = tmp_path / "checkpoint.json"
    with store.open() as book:
        kept.write_text(json.dumps(book.checkpoints()[-1].to_json()))
    store.tamper(
        "DELETE FROM ledger_checkpoints",
        "DELETE FROM ledger_payloads WHERE sequence >= 35",
        "DELETE FROM ledger_entries WHERE sequence >= 35",
    )
    code, output = _verify_cli(capsys, store.url)
    assert code == 0 and "no checkpoints" in output  # undetectable from the inside alone
    code, output = _verify_cli(
        capsys,
        store.url,
        "--checkpoint",
        str(kept),
        "--public-key",
        _public_key_file(key, tmp_path),
    )
    assert code == 1 and "FAILED: first bad sequence 35" in output, output


@pytest.mark.postgres
def test_postgres_ledger_role_cannot_update_delete_or_truncate(
    postgres_store: Store, key: ledger.PrivateKey
) -> None:
    store = postgres_store
    with store.open() as book:
        book.append_many(("run", "tool.call", "gw", {"i": i}) for i in range(5))
        book.checkpoint(ledger.KeySigner(key))
    attempts = [
        "UPDATE ledger_entries SET kind = 'x' WHERE sequence = 1",
        "DELETE FROM ledger_entries WHERE sequence = 4",
        "TRUNCATE ledger_entries",
        "UPDATE ledger_payloads SET payload = '{}' WHERE sequence = 1",
        "DELETE FROM ledger_payloads WHERE sequence = 1",
        "DELETE FROM ledger_checkpoints",
        "INSERT INTO ledger_entries VALUES (9, 'r', 't', 'tool.call', 'a', 'd', 'p', 'h')",
    ]
    for url in (store.url, store.admin_url):  # the ledger's role, then the schema owner
        for statement in attempts:
            with psycopg.connect(url, autocommit=True) as db, pytest.raises(psycopg.Error):
                db.execute(statement)  # type: ignore[call-overload]
    with store.open() as book:
        assert len(book) == 5 and ledger.verify(book).ok


def test_sqlite_triggers_refuse_edits_through_a_plain_connection(tmp_path: pathlib.Path) -> None:
    import sqlite3

    path = tmp_path / "ledger.db"
    with ledger.open(f"sqlite://{path}") as book:
        book.append_many(("run", "tool.call", "gw", {"i": i}) for i in range(5))
    store_path = str(path)
    db = sqlite3.connect(store_path)
    for statement in (
        "UPDATE ledger_entries SET kind = 'x' WHERE sequence = 1",
        "DELETE FROM ledger_entries WHERE sequence = 4",
        "DELETE FROM ledger_payloads WHERE sequence = 1",
        "INSERT INTO ledger_entries VALUES (3, 'r', 't', 'tool.call', 'a', 'd', 'p', 'h')",
    ):
        with pytest.raises(sqlite3.DatabaseError):
            db.execute(statement)
    db.close()


def test_the_installed_command_exits_1(store: Store, filled: Callable[[int], None]) -> None:
    filled(10)
    store.tamper("UPDATE ledger_entries SET run_uid = 'run-x' WHERE sequence = 6")
    result = subprocess.run(
        [sys.executable, "-m", "continue_orchestrator", "ledger", "verify", store.url],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 1, result.stderr
    assert "bad entry 6: its fields do not hash to its entry_hash" in result.stderr
