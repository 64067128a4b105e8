"""Honest signing status: ``signed`` only for a stored, re-verified bundle."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from tests.sigstore_stack import sample_facts

from continue_orchestrator import attest, errors


@pytest.fixture
def signer() -> attest.KeySigner:
    return attest.KeySigner(ec.generate_private_key(ec.SECP256R1()))


@pytest.fixture
def statement() -> attest.Statement:
    return attest.build_statement(sample_facts())


def _failures(stage: str) -> float:
    value = attest.SIGNING_FAILURES.labels(mode="key", stage=stage)._value.get()
    return float(value)


def test_signed_means_stored_and_verifiable(
    tmp_path: Path, signer: attest.KeySigner, statement: attest.Statement
) -> None:
    store = attest.FileStore(tmp_path / "bundles")
    status = attest.publish(statement, signer=signer, store=store, name="run-1.sigstore.json")
    assert status.signed and status.state == "signed" and status.attempts == 1
    assert status.location is not None
    stored = Path(status.location).read_bytes()
    assert status.bundle_digest == f"sha256:{hashlib.sha256(stored).hexdigest()}"
    assert status.statement_digest == (f"sha256:{hashlib.sha256(statement.to_bytes()).hexdigest()}")
    assert attest.verify_bundle(stored, public_key=signer.public_key) == statement


class _FailingSigner:
    mode: attest.Mode = "key"

    def __init__(self, inner: attest.KeySigner, failures: int) -> None:
        self.inner, self.failures, self.calls = inner, failures, 0

    def sign(self, statement: attest.Statement) -> bytes:
        self.calls += 1
        if self.calls <= self.failures:
            raise errors.AttestationError("KMS unavailable", where="signer")
        return self.inner.sign(statement)

    def verify(self, bundle: bytes) -> attest.Statement:
        return self.inner.verify(bundle)


def test_retries_with_backoff_then_fails_honestly(
    tmp_path: Path, signer: attest.KeySigner, statement: attest.Statement
) -> None:
    sleeps: list[float] = []
    before = _failures("sign")
    status = attest.publish(
        statement,
        signer=_FailingSigner(signer, failures=99),
        store=attest.FileStore(tmp_path),
        name="run-2.sigstore.json",
        attempts=4,
        backoff_seconds=0.5,
        sleep=sleeps.append,
    )
    assert not status.signed and status.state == "failed"
    assert status.bundle_digest is None and status.location is None
    assert "KMS unavailable" in status.reason and "attempt 4/4" in status.reason
    assert sleeps == [0.5, 1.0, 2.0]
    assert _failures("sign") == before + 4
    assert not (tmp_path / "run-2.sigstore.json").exists()


def test_recovers_after_a_transient_failure(
    tmp_path: Path, signer: attest.KeySigner, statement: attest.Statement
) -> None:
    status = attest.publish(
        statement,
        signer=_FailingSigner(signer, failures=1),
        store=attest.FileStore(tmp_path),
        name="run-3.sigstore.json",
        sleep=lambda _: None,
    )
    assert status.signed and status.attempts == 2


class _CorruptingStore(attest.FileStore):
    """Storage that silently alters what it keeps (bit rot, a hostile backend)."""

    def get(self, location: str) -> bytes:
        document = json.loads(super().get(location))
        document["dsseEnvelope"]["payload"] = document["dsseEnvelope"]["payload"][::-1]
        return json.dumps(document).encode()


def test_never_signed_when_the_stored_copy_is_not_what_was_signed(
    tmp_path: Path, signer: attest.KeySigner, statement: attest.Statement
) -> None:
    before = _failures("verify")
    status = attest.publish(
        statement,
        signer=signer,
        store=_CorruptingStore(tmp_path),
        name="run-4.sigstore.json",
        attempts=2,
        sleep=lambda _: None,
    )
    assert not status.signed and status.state == "failed"
    assert "verify failed" in status.reason
    assert _failures("verify") == before + 2


class _WrongKeySigner:
    """Signs with one key but its verification material is another's."""

    mode: attest.Mode = "key"

    def __init__(self) -> None:
        self.a = attest.KeySigner(ec.generate_private_key(ec.SECP256R1()))
        self.b = attest.KeySigner(ec.generate_private_key(ec.SECP256R1()))

    def sign(self, statement: attest.Statement) -> bytes:
        return self.a.sign(statement)

    def verify(self, bundle: bytes) -> attest.Statement:
        return self.b.verify(bundle)


def test_never_signed_when_the_bundle_does_not_verify(
    tmp_path: Path, statement: attest.Statement
) -> None:
    status = attest.publish(
        statement,
        signer=_WrongKeySigner(),
        store=attest.FileStore(tmp_path),
        name="run-5.sigstore.json",
        attempts=1,
    )
    assert not status.signed
    assert "hint does not match" in status.reason


def test_unwritable_store_fails_at_store_stage(
    tmp_path: Path, signer: attest.KeySigner, statement: attest.Statement
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    status = attest.publish(
        statement,
        signer=signer,
        store=attest.FileStore(blocker),
        name="run-6.sigstore.json",
        attempts=1,
    )
    assert not status.signed and status.reason.startswith("store failed")


def test_file_store_refuses_path_tricks(tmp_path: Path) -> None:
    store = attest.FileStore(tmp_path / "b")
    for name in ("../escape", "a/b", ".hidden", ""):
        with pytest.raises(errors.AttestationError, match="invalid bundle name"):
            store.put(name, b"x")
    outside = tmp_path / "outside"
    outside.write_bytes(b"secret")
    with pytest.raises(errors.AttestationError, match="outside this store"):
        store.get(str(outside))
    location = store.put("ok.json", b"data")
    assert store.get(location) == b"data"
    assert not list((tmp_path / "b").glob(".*tmp"))
