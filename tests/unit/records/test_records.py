"""Record store: blobs are immutable and checked; run records are ordered and sealed."""

from __future__ import annotations

import pathlib

import pytest

from continue_orchestrator import errors, records


def test_put_get_round_trip_and_idempotent(tmp_path: pathlib.Path) -> None:
    store = records.BlobStore(tmp_path)
    digest = store.put(b"hello")
    assert digest == records.digest_of(b"hello")
    assert store.put(b"hello") == digest
    assert store.get(digest) == b"hello"
    assert digest in store
    assert not list(tmp_path.rglob(".tmp-*"))


def test_altered_blob_is_refused(tmp_path: pathlib.Path) -> None:
    store = records.BlobStore(tmp_path)
    digest = store.put(b"original")
    store.path(digest).write_bytes(b"tampered")
    with pytest.raises(errors.RecordError, match="altered"):
        store.get(digest)


@pytest.mark.parametrize("bad", ["sha256:../../etc/passwd", "md5:abc", "sha256:" + "A" * 64])
def test_malformed_digest_cannot_escape_the_store(tmp_path: pathlib.Path, bad: str) -> None:
    store = records.BlobStore(tmp_path)
    with pytest.raises(errors.RecordError, match="not a blob digest"):
        store.get(bad)
    assert bad not in store


def test_missing_blob_says_so(tmp_path: pathlib.Path) -> None:
    store = records.BlobStore(tmp_path)
    with pytest.raises(errors.RecordError, match="not in the store"):
        store.get(records.digest_of(b"never stored"))


def test_run_record_steps_persist_and_seal(tmp_path: pathlib.Path) -> None:
    store = records.BlobStore(tmp_path)
    request = store.put(b'{"messages": []}')
    record = records.RunRecord(store, "run-1")
    first = record.append("model", blobs={"agentRequest": request}, facts={"model": "m"})
    second = record.append("tool.result", facts={"toolCallId": "call_1"})
    assert (first.step, second.step) == (1, 2)
    reopened = records.load(store, "run-1")
    assert reopened.exchanges == record.exchanges
    digest = reopened.seal()
    assert digest == record.seal()
    assert b'"toolCallId":"call_1"' in store.get(digest)


def test_record_refuses_unknown_blob_and_bad_run_id(tmp_path: pathlib.Path) -> None:
    store = records.BlobStore(tmp_path)
    with pytest.raises(errors.RecordError, match="cannot name a record"):
        records.RunRecord(store, "../escape")
    record = records.RunRecord(store, "run-2")
    with pytest.raises(errors.RecordError, match="not in the store"):
        record.append("model", blobs={"agentRequest": records.digest_of(b"x")})
    assert record.exchanges == ()


def test_edited_record_is_refused(tmp_path: pathlib.Path) -> None:
    store = records.BlobStore(tmp_path)
    record = records.RunRecord(store, "run-3")
    record.append("model")
    record.append("model")
    path = tmp_path / "runs" / "run-3" / "record.jsonl"
    lines = path.read_text().splitlines()
    path.write_text("\n".join(reversed(lines)) + "\n")
    with pytest.raises(errors.RecordError, match="holds step 2"):
        records.load(store, "run-3")


def test_normalised_hash_ignores_stream_paths_and_dates() -> None:
    one = {
        "model": "m",
        "stream": True,
        "messages": [{"role": "system", "content": "cwd /tmp/a1 today 2026-11-03"}],
    }
    two = {
        "model": "m",
        "stream": False,
        "messages": [{"role": "system", "content": "cwd /tmp/b2 today 2026-11-04"}],
    }
    assert records.normalised_request_hash(
        one, replacements={"/tmp/a1": "<WS>"}
    ) == records.normalised_request_hash(two, replacements={"/tmp/b2": "<WS>"})
    two["messages"][0]["content"] = "something else"
    assert records.normalised_request_hash(one) != records.normalised_request_hash(two)
