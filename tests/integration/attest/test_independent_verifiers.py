"""Key-mode bundles checked by verifiers this project did not write.

cosign v3 (built from Go modules by hack/build-cosign.sh) and sigstore-js's
@sigstore/verify (installed by hack/install-sigstore-js.sh) must accept our bundles
and reject tampered ones; cosign's own ``generate-key-pair`` output must work as our
signing key. ``make attest-tools`` prepares both; a missing tool fails these tests.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from tests.sigstore_stack import sample_facts

from continue_orchestrator import attest

REPO = Path(__file__).resolve().parents[3]
NODE_SCRIPT = REPO / "tests" / "sigstore_stack" / "sigstore_js_verify.js"


def _tool(script: str) -> str:
    result = subprocess.run(
        [str(REPO / "hack" / script)], capture_output=True, text=True, timeout=3600, check=False
    )
    if result.returncode != 0:
        pytest.fail(f"hack/{script} failed (run `make attest-tools`):\n{result.stderr[-2000:]}")
    return result.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def cosign() -> str:
    return _tool("build-cosign.sh")


@pytest.fixture(scope="module")
def sigstore_js() -> str:
    if shutil.which("node") is None:
        pytest.fail("node is not installed; @sigstore/verify needs Node.js 20 or newer")
    return _tool("install-sigstore-js.sh")


@pytest.fixture(scope="module")
def signer() -> attest.KeySigner:
    return attest.KeySigner(ec.generate_private_key(ec.SECP256R1()))


@pytest.fixture
def files(tmp_path: Path, signer: attest.KeySigner) -> dict[str, Path]:
    bundle = tmp_path / "run.sigstore.json"
    bundle.write_bytes(signer.sign(attest.build_statement(sample_facts())))
    key = tmp_path / "cosign.pub"
    key.write_bytes(signer.public_key_pem())
    other = tmp_path / "other.pub"
    other.write_bytes(attest.public_key_pem(ec.generate_private_key(ec.SECP256R1()).public_key()))
    tampered = tmp_path / "tampered.sigstore.json"
    document = json.loads(bundle.read_bytes())
    payload = json.loads(base64.b64decode(document["dsseEnvelope"]["payload"]))
    payload["predicate"]["toolCalls"]["denied"] = 0
    document["dsseEnvelope"]["payload"] = base64.b64encode(json.dumps(payload).encode()).decode()
    tampered.write_text(json.dumps(document))
    return {"bundle": bundle, "key": key, "other": other, "tampered": tampered}


def _cosign_verify(
    cosign: str, bundle: Path, key: Path, *, digest: str, predicate: str = attest.PREDICATE_TYPE
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            cosign, "verify-blob-attestation",
            "--key", str(key),
            "--bundle", str(bundle),
            "--insecure-ignore-tlog",
            "--type", predicate,
            "--digest", digest,
            "--digestAlg", "sha256",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "HOME": str(bundle.parent), "TUF_ROOT": str(bundle.parent / "tuf")},
    )  # fmt: skip


def test_cosign_accepts_our_bundle(cosign: str, files: dict[str, Path]) -> None:
    for subject in ("run-record", "workspace-diff", "ledger-range", "workspace-tree"):
        digest = attest.verify_bundle(
            files["bundle"].read_bytes(), public_key=files["key"].read_bytes()
        ).subject_digest(subject)
        result = _cosign_verify(cosign, files["bundle"], files["key"], digest=digest)
        assert result.returncode == 0, result.stderr
        assert "Verified OK" in result.stderr + result.stdout


def test_cosign_rejects_tampering_and_mismatches(cosign: str, files: dict[str, Path]) -> None:
    digest = sample_facts().record_digest
    cases: list[tuple[str, dict[str, Any]]] = [
        ("tampered payload", {"bundle": files["tampered"], "key": files["key"]}),
        ("other key", {"bundle": files["bundle"], "key": files["other"]}),
    ]
    for label, case in cases:
        result = _cosign_verify(cosign, case["bundle"], case["key"], digest=digest)
        assert result.returncode != 0, f"cosign accepted the {label}"
        assert "failed to verify signature" in result.stderr, result.stderr
    wrong_subject = _cosign_verify(cosign, files["bundle"], files["key"], digest="0" * 64)
    assert wrong_subject.returncode != 0, "cosign accepted a digest that is no subject"
    wrong_type = _cosign_verify(
        cosign, files["bundle"], files["key"], digest=digest,
        predicate="https://slsa.dev/provenance/v1",
    )  # fmt: skip
    assert wrong_type.returncode != 0, "cosign accepted the wrong predicate type"


def test_cosign_generated_key_signs_bundles_cosign_accepts(cosign: str, tmp_path: Path) -> None:
    password = "correct horse battery staple"
    env = {**os.environ, "COSIGN_PASSWORD": password, "HOME": str(tmp_path)}
    subprocess.run(
        [cosign, "generate-key-pair"], cwd=tmp_path, env=env, check=True, capture_output=True,
        timeout=120,
    )  # fmt: skip
    (tmp_path / "cosign.password").write_text(password)
    signer = attest.KeySigner.from_secret_files(tmp_path)
    bundle = tmp_path / "run.sigstore.json"
    bundle.write_bytes(signer.sign(attest.build_statement(sample_facts())))
    assert signer.public_key_pem().strip() == (tmp_path / "cosign.pub").read_bytes().strip()
    result = _cosign_verify(
        cosign, bundle, tmp_path / "cosign.pub", digest=sample_facts().record_digest
    )
    assert result.returncode == 0, result.stderr


def _node_verify(prefix: str, bundle: Path, key: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["node", str(NODE_SCRIPT), str(bundle), str(key), attest.PREDICATE_TYPE],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "NODE_PATH": str(Path(prefix) / "node_modules")},
    )


def test_sigstore_js_accepts_our_bundle(sigstore_js: str, files: dict[str, Path]) -> None:
    result = _node_verify(sigstore_js, files["bundle"], files["key"])
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "OK"


def test_sigstore_js_rejects_tampering_and_other_keys(
    sigstore_js: str, files: dict[str, Path]
) -> None:
    tampered = _node_verify(sigstore_js, files["tampered"], files["key"])
    assert tampered.returncode == 1 and "SIGNATURE_ERROR" in tampered.stderr
    other = _node_verify(sigstore_js, files["bundle"], files["other"])
    assert other.returncode == 1 and "key not found" in other.stderr
