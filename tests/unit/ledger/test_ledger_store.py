"""The ledger's behaviour, the same on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import pathlib
import threading
from typing import TYPE_CHECKING, Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from continue_orchestrator import errors, ledger

if TYPE_CHECKING:
    from conftest import Store


def test_append_chains_and_reads_back(store: Store) -> None:
    with store.open() as book:
        first = book.append("run-a", ledger.Kind.RUN_CREATED, "operator", {"image": "x", "n": 1})
        second = book.append("run-a", "tool.call", "gateway", {"tool": "Read", "f": 0.5})
        assert (first.sequence, second.sequence) == (0, 1)
        assert first.prev_hash == ledger.GENESIS_HASH
        assert second.prev_hash == first.entry_hash
        assert second.kind is ledger.Kind.TOOL_CALL
        assert list(book.entries()) == [first, second]
        assert book.entry(1).payload == {"tool": "Read", "f": 0.5}
        assert first.computed_hash() == first.entry_hash
        assert len(book) == 2
    with store.open(create=False) as again:
        assert [e.entry_hash for e in again.entries()] == [first.entry_hash, second.entry_hash]


def test_entries_filters_by_run_and_range_across_pages(store: Store) -> None:
    with store.open() as book:
        book.append_many((f"run-{i % 2}", "tool.call", "gw", {"i": i}) for i in range(5000))
        odd = list(book.entries(run_uid="run-1"))
        assert [e.payload["i"] for e in odd if e.payload] == list(range(1, 5000, 2))
        window = list(book.entries(start=2040, stop=2060))
        assert [e.sequence for e in window] == list(range(2040, 2060))


@pytest.mark.parametrize(
    ("item", "message"),
    [
        (("run", "no.such.kind", "gw", {}), "unknown entry kind"),
        (("run", "tombstone", "gw", {}), "cannot be appended directly"),
        (("run", "tool.call", "gw", ["not", "an", "object"]), "must be a JSON object"),
        (("run", "tool.call", "gw", {"n": 2**64}), "canonical JSON"),
        (('run"x', "tool.call", "gw", {}), "run_uid"),
        (("run", "tool.call", "", {}), "actor"),
        ((["unhashable"], "tool.call", "gw", {}), "run_uid"),
        (("run", "secret.read", "gw", {"name": "gh", "value": "ghp_123"}), "never a secret"),
    ],
)
def test_bad_input_is_refused_and_nothing_is_written(
    store: Store, item: tuple[Any, ...], message: str
) -> None:
    with store.open() as book:
        book.append("run", "run.created", "operator", {})
        with pytest.raises(errors.LedgerError, match=message) as caught:
            book.append_many([("run", "tool.call", "gw", {"ok": True}), item])
        assert "item 1" in caught.value.where
        assert len(book) == 1


def test_tombstone_redacts_a_payload_and_the_chain_still_verifies(
    store: Store, key: ledger.PrivateKey
) -> None:
    secret = "ghp_leakedtoken123"
    with store.open(signer=ledger.KeySigner(key)) as book:
        book.append("run-a", "tool.call", "gw", {"tool": "Bash"})
        leaked = book.append("run-a", "tool.result", "gw", {"output": f"token={secret}"})
        book.checkpoint()
        tomb = book.tombstone(sequence=leaked.sequence, reason="leaked token", actor="admin")
        assert tomb.kind is ledger.Kind.TOMBSTONE and tomb.run_uid == "run-a"
        assert tomb.payload == {
            "target": {"sequence": 1}, "reason": "leaked token", "redacted": [1],
        }  # fmt: skip
        hidden = book.entry(leaked.sequence)
        assert hidden.redacted and hidden.payload is None
        assert hidden.payload_digest == leaked.payload_digest
        assert hidden.entry_hash == leaked.entry_hash
        with pytest.raises(errors.LedgerError, match="already redacted"):
            book.tombstone(sequence=leaked.sequence, reason="again", actor="admin")
        with pytest.raises(errors.LedgerError, match="tombstones cannot be redacted"):
            book.tombstone(sequence=tomb.sequence, reason="hide the hiding", actor="admin")
        report = ledger.verify(book, public_key=key.public_key())
        assert report.ok, report.problems
        assert report.redacted == 1
    # The bytes are gone from storage, not merely hidden by the API.
    rows = store.query("SELECT payload FROM ledger_payloads")
    assert rows and all(secret not in row[0] for row in rows)


def test_deleting_a_run_tombstones_all_its_payloads(store: Store) -> None:
    with store.open() as book:
        book.append_many(
            (f"run-{i % 2}", "tool.call", "gw", {"i": i}) for i in range(10)
        )  # fmt: skip
        tomb = book.tombstone(run_uid="run-0", reason="erasure request 42", actor="admin")
        assert tomb.payload is not None and tomb.payload["redacted"] == [0, 2, 4, 6, 8]
        kept = {e.sequence: e.payload for e in book.entries(run_uid="run-1")}
        assert all(payload is not None for payload in kept.values())
        gone = [e for e in book.entries(run_uid="run-0") if e.kind is ledger.Kind.TOOL_CALL]
        assert len(gone) == 5 and all(e.payload is None for e in gone)
        with pytest.raises(errors.LedgerError, match="has no entries"):
            book.tombstone(run_uid="run-nope", reason="x", actor="admin")
        with pytest.raises(errors.LedgerError, match="exactly one"):
            book.tombstone(reason="x", actor="admin")
        assert ledger.verify(book).ok


def test_checkpoints_are_signed_and_bound_to_the_ledger(
    store: Store, signing_key: ledger.PrivateKey
) -> None:
    signer = ledger.KeySigner(signing_key)
    with store.open(signer=signer, checkpoint_every=10) as book:
        for i in range(25):
            book.append("run", "tool.call", "gw", {"i": i})
        sizes = [c.size for c in book.checkpoints()]
        assert sizes == [10, 20]
        final = book.checkpoint()
        assert final.size == 25 and final.signed and final.origin == book.origin
        assert book.checkpoint() == final  # nothing new: the same checkpoint
        assert final.verify(signing_key.public_key())
        assert not final.verify(ed25519.Ed25519PrivateKey.generate().public_key())
        assert not final.verify(ec.generate_private_key(ec.SECP256R1()).public_key())
        report = ledger.verify(book, public_key=signing_key.public_key())
        assert report.ok and report.signatures_verified == 3
        other = ledger.verify(book, public_key=ed25519.Ed25519PrivateKey.generate().public_key())
        assert not other.ok and other.first_bad_sequence == 0
        assert "no checkpoint is signed by the given key" in other.problems[0].what
        # A second key cosigns the same tree head; an unsigned head can sit beside them.
        cosigner = ed25519.Ed25519PrivateKey.generate()
        book.append("run", "tool.call", "gw", {"i": 25})
        with store.open() as without_signer:
            unsigned = without_signer.checkpoint()
        cosigned = book.checkpoint(ledger.KeySigner(cosigner))
        assert (unsigned.size, cosigned.size) == (26, 26) and not unsigned.signed
        assert book.checkpoint(ledger.KeySigner(cosigner)) == cosigned
        assert len(book.checkpoints()) == 5
        for public_key in (signing_key.public_key(), cosigner.public_key()):
            assert ledger.verify(book, public_key=public_key).ok


def test_unsupported_keys_are_refused() -> None:
    with pytest.raises(errors.LedgerError, match="secp384r1"):
        ledger.KeySigner(ec.generate_private_key(ec.SECP384R1()))


def test_inclusion_proofs_verify_and_detect_forgery(store: Store, key: ledger.PrivateKey) -> None:
    with store.open(signer=ledger.KeySigner(key)) as book:
        book.append_many(("run", "tool.call", "gw", {"i": i}) for i in range(37))
        unsigned = book.prove(36)
        assert unsigned.checkpoint is None
        unsigned.verify()
        with pytest.raises(errors.LedgerIntegrityError, match="no signed checkpoint"):
            unsigned.verify(key.public_key())
        book.checkpoint()
        for sequence in (0, 17, 36):
            proof = book.prove(sequence)
            assert proof.tree_size == 37 and proof.checkpoint is not None
            proof.verify(key.public_key())
            again = ledger.InclusionProof.from_json(json.loads(json.dumps(proof.to_json())))
            again.verify(key.public_key())
        proof = book.prove(17)
    forged_payload = ledger.InclusionProof.from_json(
        {**proof.to_json(), "entry": {**proof.entry.to_json(), "payload": {"i": 999}}}
    )
    with pytest.raises(errors.LedgerIntegrityError, match="payload"):
        forged_payload.verify(key.public_key())
    bent = list(proof.audit_path)
    bent[0] = "00" * 32
    forged_path = ledger.InclusionProof.from_json({**proof.to_json(), "audit_path": bent})
    with pytest.raises(errors.LedgerIntegrityError, match="audit path"):
        forged_path.verify(key.public_key())
    with pytest.raises(errors.LedgerIntegrityError, match="not signed by the given key"):
        proof.verify(ed25519.Ed25519PrivateKey.generate().public_key())


def test_many_threads_append_without_gaps_or_forks(store: Store) -> None:
    with store.open() as book:

        def writer(worker: int) -> None:
            for i in range(40):
                if i % 10 == 0:
                    book.append_many((f"run-{worker}", "tool.call", "gw", {"i": i, "j": j})
                                     for j in range(5))  # fmt: skip
                else:
                    book.append(f"run-{worker}", "tool.call", "gw", {"i": i})

        threads = [threading.Thread(target=writer, args=(w,)) for w in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        entries = list(book.entries())
        assert [e.sequence for e in entries] == list(range(8 * (36 + 20)))
        assert ledger.verify(book).ok


def test_two_ledger_handles_interleave_like_two_processes(store: Store) -> None:
    with store.open() as one, store.open() as two:
        for i in range(20):
            (one if i % 2 else two).append("run", "tool.call", "gw", {"i": i})
        assert len(one) == len(two) == 20
        assert ledger.verify(one).ok


def test_async_appends_from_many_coroutines_group_commit(store: Store) -> None:
    with store.open() as book:
        book_async = ledger.AsyncLedger(book)

        async def main() -> list[ledger.Entry]:
            async def one(i: int) -> ledger.Entry:
                return await book_async.append(f"run-{i % 4}", "model.request", "gateway", {"i": i})

            results = await asyncio.gather(*(one(i) for i in range(300)))
            with pytest.raises(errors.LedgerError, match="never a secret"):
                await book_async.append("run", "secret.read", "gw", {"value": "x"})
            await book_async.tombstone(run_uid="run-0", reason="test", actor="admin")
            return list(results)

        results = asyncio.run(main())
        assert sorted(e.sequence for e in results) == list(range(300))
        assert {e.payload["i"] for e in results if e.payload} == set(range(300))
        assert len(book) == 301 and ledger.verify(book).ok


def test_export_verifies_on_its_own(
    store: Store, key: ledger.PrivateKey, tmp_path: pathlib.Path
) -> None:
    with store.open(signer=ledger.KeySigner(key)) as book:
        book.append_many(
            ("run", "model.response", "gw", {"i": i, "x": 1.25, "s": "é\n\u2028"})
            for i in range(50)
        )
        book.tombstone(sequence=3, reason="redacted for the test", actor="admin")
        book.checkpoint()
        path = tmp_path / "ledger.jsonl"
        with path.open("w", encoding="utf-8") as out:
            assert ledger.export(book, out) == 51
    report = ledger.verify(path, public_key=key.public_key())
    assert report.ok, report.problems
    assert (report.size, report.checkpoints, report.redacted) == (51, 1, 1)
    lines = path.read_text(encoding="utf-8").splitlines()
    line = json.loads(lines[2 + 10])
    line["payload"]["i"] = 1000
    lines[2 + 10] = json.dumps(line)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    tampered = ledger.verify(path, public_key=key.public_key())
    assert tampered.first_bad_sequence == 10
    path.write_text("\n".join(lines[:-5]) + "\n", encoding="utf-8")
    truncated = ledger.verify(path, public_key=key.public_key())
    # Cutting the tail also cut the tombstone (50) that justified entry 3's missing payload.
    assert [p.sequence for p in truncated.problems] == [3, 10, 46, 46]
    assert "no tombstone" in truncated.problems[0].what
    whats = " ".join(p.what for p in truncated.problems[2:])
    assert "truncated" in whats and "header says 51 entries but it holds 46" in whats


def test_opening_a_missing_ledger_without_create_fails_clearly(tmp_path: pathlib.Path) -> None:
    with pytest.raises(errors.LedgerError, match="no ledger file"):
        ledger.open(f"sqlite://{tmp_path / 'nope.db'}", create=False)
    with pytest.raises(errors.LedgerError, match="unsupported ledger URL"):
        ledger.open("mysql://x")
    with pytest.raises(errors.LedgerError, match="synchronous"):
        ledger.open(f"sqlite://{tmp_path / 'x.db'}?synchronous=off")
