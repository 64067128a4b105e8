"""``orchestrator ledger show|export|prove|checkpoint|init`` on a real ledger."""

from __future__ import annotations

import json
import pathlib
from typing import TYPE_CHECKING

import pytest
from cryptography.hazmat.primitives import serialization

from continue_orchestrator import cli, ledger

if TYPE_CHECKING:
    from conftest import Store


def _keys(key: ledger.PrivateKey, directory: pathlib.Path) -> tuple[str, str]:
    private = directory / "ledger.key"
    public = directory / "ledger.pub"
    private.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    public.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return str(private), str(public)


def _run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = cli.main(["ledger", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_checkpoint_export_prove_show_round_trip(
    store: Store,
    signing_key: ledger.PrivateKey,
    tmp_path: pathlib.Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    private, public = _keys(signing_key, tmp_path)
    with store.open() as book:
        book.append_many((f"run-{i % 2}", "tool.call", "gw", {"i": i}) for i in range(30))
        book.tombstone(sequence=4, reason="test", actor="admin")

    code, out, _ = _run(capsys, "checkpoint", store.url, "--key", private)
    checkpoint = ledger.Checkpoint.from_json(json.loads(out), where="test")
    assert code == 0 and checkpoint.size == 31 and checkpoint.verify(signing_key.public_key())

    export = tmp_path / "out" / "ledger.jsonl"
    assert _run(capsys, "export", store.url, "-o", str(export))[0] == 1  # no such directory
    export.parent.mkdir()
    code, _, err = _run(capsys, "export", store.url, "-o", str(export))
    assert code == 0 and "exported 31 entries" in err
    code, out, _ = _run(capsys, "verify", str(export), "--public-key", public)
    assert code == 0 and "ok: the ledger verifies" in out

    code, out, _ = _run(capsys, "prove", store.url, "7", "--public-key", public)
    assert code == 0
    ledger.InclusionProof.from_json(json.loads(out)).verify(signing_key.public_key())

    code, out, _ = _run(capsys, "show", store.url, "--run", "run-0", "--json")
    shown = [json.loads(line) for line in out.splitlines()]
    assert [e["sequence"] for e in shown] == [*range(0, 30, 2), 30]  # 30: its tombstone
    assert shown[2]["payload"] is None and shown[2]["redacted"] is True
    code, out, _ = _run(capsys, "show", store.url, "--start", "29")
    assert code == 0 and "<redacted>" not in out and "tombstone" in out


def test_errors_are_one_clear_line(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = _run(capsys, "show", f"sqlite://{tmp_path / 'missing.db'}")
    assert code == 1 and "no ledger file here" in err and "Traceback" not in err
    code, _, err = _run(capsys, "verify", str(tmp_path / "missing.jsonl"))
    assert code == 1 and "cannot read the export" in err
    (tmp_path / "bad.jsonl").write_text('{"type": "something else"}\n')
    code, _, err = _run(capsys, "verify", str(tmp_path / "bad.jsonl"))
    assert code == 1 and "not a ledger export header" in err
    code, _, err = _run(capsys, "init", f"sqlite://{tmp_path / 'x.db'}")
    assert code == 1 and "init is for PostgreSQL" in err
    url = f"sqlite://{tmp_path / 'one.db'}"
    with ledger.open(url) as book:
        book.append("run", "run.created", "op", {})
    code, _, err = _run(capsys, "prove", url, "5")
    assert code == 1 and "entry 5 does not exist" in err


@pytest.mark.postgres
def test_init_creates_an_append_only_schema_for_a_writer_role(
    postgres_admin: str, capsys: pytest.CaptureFixture[str]
) -> None:
    import psycopg

    with psycopg.connect(postgres_admin, autocommit=True) as db:
        db.execute("DROP DATABASE IF EXISTS ledger_cli_init WITH (FORCE)")
        db.execute("CREATE DATABASE ledger_cli_init")
    admin = postgres_admin.rpartition("/")[0] + "/ledger_cli_init"
    writer = admin.replace("postgres@", "ledger_writer@")
    with pytest.raises(Exception, match="no ledger schema"):
        ledger.open(writer, create=False)
    code, out, _ = _run(capsys, "init", admin, "--writer-role", "ledger_writer")
    assert code == 0 and "ledger_writer may append" in out
    assert _run(capsys, "init", admin, "--writer-role", "ledger_writer")[0] == 0  # idempotent
    with ledger.open(writer, create=False) as book:
        book.append("run", "run.created", "operator", {})
        assert ledger.verify(book).ok
    with psycopg.connect(postgres_admin, autocommit=True) as db:
        db.execute("DROP DATABASE ledger_cli_init WITH (FORCE)")
