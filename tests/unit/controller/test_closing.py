"""Nothing is appended for a run once its tombstone is in (controller._closing)."""

from __future__ import annotations

import pathlib

from continue_orchestrator import ledger
from continue_orchestrator.controller import _closing


def test_an_append_after_the_tombstone_is_refused(tmp_path: pathlib.Path) -> None:
    closing = _closing.Closing()
    with ledger.open(f"sqlite:///{tmp_path / 'ledger.db'}") as book:
        assert closing.append(book, "r1", ledger.Kind.RUN_FINISHED, "op", {"phase": "Succeeded"})
        with closing.turn():
            book.tombstone(run_uid="r1", reason="deleted", actor="op")
        refused = closing.append(book, "r1", ledger.Kind.ATTESTATION_PUBLISHED, "op", {"x": 1})
        assert refused is False
        assert [e.kind for e in book.entries(run_uid="r1")] == [
            ledger.Kind.RUN_FINISHED, ledger.Kind.TOMBSTONE
        ]  # fmt: skip
        assert closing.append(book, "r2", ledger.Kind.RUN_FINISHED, "op", {"phase": "Failed"})


def test_only_the_operators_run_finished_is_its_account() -> None:
    def entry(kind: ledger.Kind, actor: str) -> ledger.Entry:
        return ledger.Entry(
            sequence=0, run_uid="r", time="t", kind=kind, actor=actor, payload_json="{}",
            payload_digest="d", prev_hash="p", entry_hash="h",
        )  # fmt: skip

    runner = entry(ledger.Kind.RUN_FINISHED, "runner")
    ours = entry(ledger.Kind.RUN_FINISHED, "system:operator")
    assert not _closing.finished_by([runner], "system:operator")
    assert _closing.finished_by([runner, ours], "system:operator")
