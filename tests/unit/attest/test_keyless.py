"""Keyless signing with the real sigstore-python Signer and Verifier, offline.

A local Fulcio, Rekor and token issuer (tests/sigstore_stack) stand in for Sigstore's;
everything sigstore-python checks (SCT, chain, inclusion proof, checkpoint, SET,
identity) is really checked.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.sigstore_stack import SigstoreStack, sample_facts, start_stack
from tests.sigstore_stack.stack import IDENTITY, OIDC_ISSUER

from continue_orchestrator import attest, errors


@pytest.fixture(scope="module")
def stack() -> Iterator[SigstoreStack]:
    with start_stack() as running:
        yield running


@pytest.fixture(scope="module")
def signer(stack: SigstoreStack, tmp_path_factory: pytest.TempPathFactory) -> attest.KeylessSigner:
    token = tmp_path_factory.mktemp("token") / "token"
    token.write_text(stack.token())
    config = attest.load_trust_config(stack.client_trust_config())
    return attest.KeylessSigner(config, attest.token_file(token))


@pytest.fixture(scope="module")
def statement() -> attest.Statement:
    return attest.build_statement(sample_facts())


@pytest.fixture(scope="module")
def bundle(signer: attest.KeylessSigner, statement: attest.Statement) -> bytes:
    return signer.sign(statement)


def _root(stack: SigstoreStack) -> bytes:
    return json.dumps(stack.trusted_root()).encode()


def test_signs_and_verifies(
    stack: SigstoreStack, signer: attest.KeylessSigner, statement: attest.Statement, bundle: bytes
) -> None:
    document = json.loads(bundle)
    assert document["mediaType"] == "application/vnd.dev.sigstore.bundle.v0.3+json"
    assert document["verificationMaterial"]["tlogEntries"][0]["kindVersion"]["kind"] == "dsse"
    assert signer.expected_identity() == (IDENTITY, OIDC_ISSUER)
    assert signer.verify(bundle) == statement
    verified = attest.verify_bundle(
        bundle, identity=IDENTITY, issuer=OIDC_ISSUER, trusted_root=_root(stack)
    )
    assert verified.run_facts() == sample_facts()


def test_wrong_identity_is_rejected(stack: SigstoreStack, bundle: bytes) -> None:
    other = "https://kubernetes.io/namespaces/team-b/serviceaccounts/default"
    with pytest.raises(errors.AttestationError, match="SANs do not match"):
        attest.verify_bundle(bundle, identity=other, issuer=OIDC_ISSUER, trusted_root=_root(stack))


def test_wrong_issuer_is_rejected(stack: SigstoreStack, bundle: bytes) -> None:
    with pytest.raises(errors.AttestationError, match="OIDCIssuer does not match"):
        attest.verify_bundle(
            bundle,
            identity=IDENTITY,
            issuer="https://token.actions.githubusercontent.com",
            trusted_root=_root(stack),
        )


def test_wrong_trust_root_is_rejected(bundle: bytes) -> None:
    with (
        start_stack() as other,
        pytest.raises(errors.AttestationError, match="keyless verification failed"),
    ):
        attest.verify_bundle(
            bundle, identity=IDENTITY, issuer=OIDC_ISSUER, trusted_root=_root(other)
        )


def test_tampered_payload_is_rejected(stack: SigstoreStack, bundle: bytes) -> None:
    document = json.loads(bundle)
    payload = json.loads(base64.b64decode(document["dsseEnvelope"]["payload"]))
    payload["predicate"]["outcome"] = "failed"
    document["dsseEnvelope"]["payload"] = base64.b64encode(json.dumps(payload).encode()).decode()
    with pytest.raises(errors.AttestationError):
        attest.verify_bundle(
            json.dumps(document).encode(),
            identity=IDENTITY,
            issuer=OIDC_ISSUER,
            trusted_root=_root(stack),
        )


def test_key_mode_verification_of_a_keyless_bundle_fails(bundle: bytes) -> None:
    signer = attest.KeySigner.from_pem(_fresh_pem())
    with pytest.raises(errors.AttestationError, match="not a key-mode bundle"):
        attest.verify_bundle(bundle, public_key=signer.public_key)


def _fresh_pem() -> bytes:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    return ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


@pytest.mark.parametrize(
    ("claims", "message"),
    [
        ({"audience": "kubernetes"}, "unusable"),
        ({"lifetime": -60}, "unusable"),
    ],
)
def test_unusable_tokens_are_refused_before_signing(
    stack: SigstoreStack, statement: attest.Statement, claims: dict[str, object], message: str
) -> None:
    token = stack.token(**claims)  # type: ignore[arg-type]
    signer = attest.KeylessSigner(
        attest.load_trust_config(stack.client_trust_config()), lambda: token
    )
    with pytest.raises(errors.AttestationError, match=message):
        signer.sign(statement)


def test_token_from_another_issuer_is_refused_by_fulcio(
    stack: SigstoreStack, statement: attest.Statement
) -> None:
    token = stack.token(issuer="https://evil.example")
    signer = attest.KeylessSigner(
        attest.load_trust_config(stack.client_trust_config()), lambda: token
    )
    with pytest.raises(errors.AttestationError, match="keyless signing failed"):
        signer.sign(statement)


def test_missing_token_file_says_where(tmp_path: Path, stack: SigstoreStack) -> None:
    signer = attest.KeylessSigner(
        attest.load_trust_config(stack.client_trust_config()),
        attest.token_file(tmp_path / "nope"),
    )
    with pytest.raises(errors.AttestationError, match="nope"):
        signer.sign(attest.build_statement(sample_facts()))


def test_bad_trust_config_is_refused() -> None:
    with pytest.raises(errors.AttestationError, match="ClientTrustConfig"):
        attest.load_trust_config('{"mediaType": "nope"}')


def test_kubernetes_identity_mapping() -> None:
    assert (
        attest.kubernetes_identity("system:serviceaccount:ns:sa")
        == "https://kubernetes.io/namespaces/ns/serviceaccounts/sa"
    )
    assert attest.kubernetes_identity("alice@example.com") == "alice@example.com"
