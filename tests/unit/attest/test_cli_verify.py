"""``orchestrator verify``: exit 0 with a summary, or exit 1 with the reason."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from tests.sigstore_stack import sample_facts, start_stack
from tests.sigstore_stack.stack import IDENTITY, OIDC_ISSUER

from continue_orchestrator import attest, cli


@pytest.fixture
def key_bundle(tmp_path: Path) -> tuple[Path, Path]:
    signer = attest.KeySigner(ec.generate_private_key(ec.SECP256R1()))
    bundle = tmp_path / "run.sigstore.json"
    bundle.write_bytes(signer.sign(attest.build_statement(sample_facts())))
    key = tmp_path / "cosign.pub"
    key.write_bytes(signer.public_key_pem())
    return bundle, key


def test_key_mode_ok(key_bundle: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    bundle, key = key_bundle
    assert cli.main(["verify", str(bundle), "--key", str(key)]) == 0
    out = capsys.readouterr().out
    assert "verified" in out and "team-a/fix-flaky-test (succeeded)" in out
    assert f"run-record sha256:{sample_facts().record_digest}" in out


def test_key_mode_tampered(
    key_bundle: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    bundle, key = key_bundle
    document = json.loads(bundle.read_bytes())
    payload = json.loads(base64.b64decode(document["dsseEnvelope"]["payload"]))
    payload["subject"][0]["digest"]["sha256"] = "0" * 64
    document["dsseEnvelope"]["payload"] = base64.b64encode(json.dumps(payload).encode()).decode()
    bundle.write_text(json.dumps(document))
    assert cli.main(["verify", str(bundle), "--key", str(key)]) == 1
    err = capsys.readouterr().err
    assert "orchestrator verify:" in err and "does not verify" in err


def test_keyless_ok_and_wrong_identity(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with start_stack() as stack:
        config = attest.load_trust_config(stack.client_trust_config())
        signer = attest.KeylessSigner(config, stack.token)
        bundle = tmp_path / "b.json"
        bundle.write_bytes(signer.sign(attest.build_statement(sample_facts())))
        root = tmp_path / "trusted_root.json"
        root.write_text(json.dumps(stack.trusted_root()))
        args = ["verify", str(bundle), "--issuer", OIDC_ISSUER, "--trusted-root", str(root)]
        assert cli.main([*args, "--identity", IDENTITY]) == 0
        assert cli.main([*args, "--identity", "https://example.com/other"]) == 1
    assert "SANs do not match" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ([], "say whom to trust"),
        (["--identity", "x"], "say whom to trust"),
        (["--key", "k.pub", "--identity", "x", "--issuer", "y"], "cannot be combined"),
        (["--key", "missing.pub"], "cannot read"),
    ],
)
def test_usage_errors_exit_1_with_reason(
    key_bundle: tuple[Path, Path],
    capsys: pytest.CaptureFixture[str],
    extra: list[str],
    message: str,
) -> None:
    bundle, _ = key_bundle
    assert cli.main(["verify", str(bundle), *extra]) == 1
    assert message in capsys.readouterr().err


def test_missing_bundle(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["verify", str(tmp_path / "none.json"), "--key", "k"]) == 1
    assert "none.json: cannot read" in capsys.readouterr().err
