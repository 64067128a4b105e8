"""Key-mode bundles: what they contain, and the attacks verification must stop."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from tests.sigstore_stack import sample_facts

from continue_orchestrator import attest, errors


@pytest.fixture(scope="module")
def signer() -> attest.KeySigner:
    return attest.KeySigner(ec.generate_private_key(ec.SECP256R1()))


@pytest.fixture(scope="module")
def statement() -> attest.Statement:
    return attest.build_statement(sample_facts())


@pytest.fixture(scope="module")
def bundle(signer: attest.KeySigner, statement: attest.Statement) -> bytes:
    return signer.sign(statement)


def _edit(bundle: bytes, change: Any) -> bytes:
    document = json.loads(bundle)
    change(document)
    return json.dumps(document).encode()


def _set_payload(document: dict[str, Any], payload: bytes) -> None:
    document["dsseEnvelope"]["payload"] = base64.b64encode(payload).decode()


def test_pae_matches_the_dsse_spec_example() -> None:
    assert (
        attest.pae("http://example.com/HelloWorld", b"hello world")
        == b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"
    )


def test_bundle_is_v03_with_public_key_hint(
    signer: attest.KeySigner, statement: attest.Statement, bundle: bytes
) -> None:
    document = json.loads(bundle)
    assert document["mediaType"] == "application/vnd.dev.sigstore.bundle.v0.3+json"
    assert document["verificationMaterial"] == {
        "publicKey": {"hint": signer.hint},
        "tlogEntries": [],
    }
    envelope = document["dsseEnvelope"]
    assert envelope["payloadType"] == "application/vnd.in-toto+json"
    assert base64.b64decode(envelope["payload"]) == statement.to_bytes()
    signature = base64.b64decode(envelope["signatures"][0]["sig"])
    signer.public_key.verify(
        signature,
        attest.pae(envelope["payloadType"], statement.to_bytes()),
        ec.ECDSA(hashes.SHA256()),
    )


def test_verifies_with_key_object_or_pem(
    signer: attest.KeySigner, statement: attest.Statement, bundle: bytes
) -> None:
    assert attest.verify_bundle(bundle, public_key=signer.public_key) == statement
    assert attest.verify_bundle(bundle, public_key=signer.public_key_pem()) == statement


def test_tampered_payload_is_rejected(signer: attest.KeySigner, bundle: bytes) -> None:
    def lie(document: dict[str, Any]) -> None:
        payload = json.loads(base64.b64decode(document["dsseEnvelope"]["payload"]))
        payload["predicate"]["outcome"] = "failed"
        payload["predicate"]["toolCalls"]["denied"] = 0
        _set_payload(document, json.dumps(payload).encode())

    with pytest.raises(errors.AttestationError, match="does not verify"):
        attest.verify_bundle(_edit(bundle, lie), public_key=signer.public_key)


def test_flipped_signature_bit_is_rejected(signer: attest.KeySigner, bundle: bytes) -> None:
    def flip(document: dict[str, Any]) -> None:
        sig = bytearray(base64.b64decode(document["dsseEnvelope"]["signatures"][0]["sig"]))
        sig[-1] ^= 0x01
        document["dsseEnvelope"]["signatures"][0]["sig"] = base64.b64encode(sig).decode()

    with pytest.raises(errors.AttestationError, match="does not verify"):
        attest.verify_bundle(_edit(bundle, flip), public_key=signer.public_key)


def test_other_key_is_rejected(bundle: bytes) -> None:
    other = ec.generate_private_key(ec.SECP256R1()).public_key()
    with pytest.raises(errors.AttestationError, match="hint does not match"):
        attest.verify_bundle(bundle, public_key=other)


def test_attacker_resigning_under_the_victims_hint_is_rejected(
    signer: attest.KeySigner, statement: attest.Statement
) -> None:
    attacker = attest.KeySigner(ec.generate_private_key(ec.SECP256R1()))
    forged = _edit(
        attacker.sign(statement),
        lambda d: d["verificationMaterial"]["publicKey"].update(hint=signer.hint),
    )
    with pytest.raises(errors.AttestationError, match="does not verify"):
        attest.verify_bundle(forged, public_key=signer.public_key)


def test_extra_forged_signature_is_rejected(signer: attest.KeySigner, bundle: bytes) -> None:
    attacker = ec.generate_private_key(ec.SECP256R1())

    def add(document: dict[str, Any]) -> None:
        envelope = document["dsseEnvelope"]
        payload = base64.b64decode(envelope["payload"])
        sig = attacker.sign(attest.pae(envelope["payloadType"], payload), ec.ECDSA(hashes.SHA256()))
        envelope["signatures"].append({"sig": base64.b64encode(sig).decode()})

    with pytest.raises(errors.AttestationError, match="signature 1 does not verify"):
        attest.verify_bundle(_edit(bundle, add), public_key=signer.public_key)


def test_payload_type_swap_is_rejected(signer: attest.KeySigner, bundle: bytes) -> None:
    swapped = _edit(bundle, lambda d: d["dsseEnvelope"].update(payloadType="text/plain"))
    with pytest.raises(errors.AttestationError, match="payloadType"):
        attest.verify_bundle(swapped, public_key=signer.public_key)


def test_genuine_bundle_of_another_predicate_is_rejected_by_default(
    signer: attest.KeySigner,
) -> None:
    other = attest.build_statement(sample_facts()).model_copy(
        update={"predicate_type": "https://slsa.dev/provenance/v1"}
    )
    bundle = signer.sign(other)
    with pytest.raises(errors.AttestationError, match="expected 'https://orchestrator"):
        attest.verify_bundle(bundle, public_key=signer.public_key)
    assert attest.verify_bundle(bundle, public_key=signer.public_key, predicate_type=None) == other


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"{", "not JSON"),
        (b"[]", "not a JSON object"),
        (b'{"mediaType": "application/vnd.dev.sigstore.bundle+json;version=0.1"}', "mediaType"),
        (
            b'{"mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json", '
            b'"verificationMaterial": {"certificate": {"rawBytes": "AA=="}}}',
            "not a key-mode bundle",
        ),
    ],
)
def test_malformed_bundles_say_why(signer: attest.KeySigner, raw: bytes, message: str) -> None:
    with pytest.raises(errors.AttestationError, match=message):
        attest.verify_bundle(raw, public_key=signer.public_key)


def test_missing_or_bad_envelope_fields(signer: attest.KeySigner, bundle: bytes) -> None:
    cases = {
        "dsseEnvelope.payload is not valid base64": lambda d: d["dsseEnvelope"].update(
            payload="***"
        ),
        "no signatures": lambda d: d["dsseEnvelope"].update(signatures=[]),
        "dsseEnvelope is not an object": lambda d: d.update(dsseEnvelope="x"),
    }
    for message, change in cases.items():
        with pytest.raises(errors.AttestationError, match=message):
            attest.verify_bundle(_edit(bundle, change), public_key=signer.public_key)


def test_verify_needs_exactly_one_kind_of_trust(bundle: bytes, signer: attest.KeySigner) -> None:
    with pytest.raises(errors.AttestationError, match="either a public key or an identity"):
        attest.verify_bundle(bundle)
    with pytest.raises(errors.AttestationError, match="either a public key or an identity"):
        attest.verify_bundle(bundle, public_key=signer.public_key, identity="x", issuer="y")
    with pytest.raises(errors.AttestationError, match="both identity and issuer"):
        attest.verify_bundle(bundle, identity="x")
