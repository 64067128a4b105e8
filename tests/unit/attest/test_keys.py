"""Loading signing keys: PKCS#8, SEC1, cosign's encrypted format; dev keys."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import stat
from pathlib import Path

import nacl.secret
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from continue_orchestrator import attest, errors


def _cosign_key(key: ec.EllipticCurvePrivateKey, password: bytes, *, n: int = 32768) -> bytes:
    """What go-securesystemslib's encrypted.Encrypt + cosign's PEM wrapping produce."""
    der = key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    salt, nonce = os.urandom(32), os.urandom(24)
    secret = Scrypt(salt=salt, length=32, n=n, r=8, p=1).derive(password)
    ciphertext = nacl.secret.SecretBox(secret).encrypt(der, nonce).ciphertext
    document = {
        "kdf": {"name": "scrypt", "params": {"N": n, "r": 8, "p": 1}, "salt": _b64(salt)},
        "cipher": {"name": "nacl/secretbox", "nonce": _b64(nonce)},
        "ciphertext": _b64(ciphertext),
    }
    body = base64.encodebytes(json.dumps(document).encode()).decode()
    return (
        f"-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----\n{body}"
        "-----END ENCRYPTED SIGSTORE PRIVATE KEY-----\n"
    ).encode()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@pytest.fixture(scope="module")
def key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _same(a: ec.EllipticCurvePrivateKey, b: ec.EllipticCurvePrivateKey) -> bool:
    return a.private_numbers() == b.private_numbers()


def test_pkcs8_plain_and_encrypted(key: ec.EllipticCurvePrivateKey) -> None:
    plain = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    assert _same(attest.load_private_key(plain), key)
    locked = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"s3cret"),
    )
    assert _same(attest.load_private_key(locked, b"s3cret"), key)
    with pytest.raises(errors.AttestationError, match="password"):
        attest.load_private_key(locked, b"wrong")
    with pytest.raises(errors.AttestationError, match="password"):
        attest.load_private_key(locked)


def test_sec1_pem(key: ec.EllipticCurvePrivateKey) -> None:
    sec1 = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    assert _same(attest.load_private_key(sec1), key)


@pytest.mark.parametrize("pem_type", ["SIGSTORE", "COSIGN"])
def test_cosign_encrypted_key(key: ec.EllipticCurvePrivateKey, pem_type: str) -> None:
    data = _cosign_key(key, b"hunter2").replace(b"SIGSTORE", pem_type.encode())
    assert _same(attest.load_private_key(data, b"hunter2"), key)
    with pytest.raises(errors.AttestationError, match="wrong password"):
        attest.load_private_key(data, b"hunter3")
    with pytest.raises(errors.AttestationError, match="no password"):
        attest.load_private_key(data)


def test_cosign_key_with_empty_password(key: ec.EllipticCurvePrivateKey) -> None:
    assert _same(attest.load_private_key(_cosign_key(key, b""), b""), key)


def test_altered_cosign_ciphertext_is_refused(key: ec.EllipticCurvePrivateKey) -> None:
    data = _cosign_key(key, b"pw")
    lines = data.split(b"\n")
    body = json.loads(base64.b64decode(b"".join(lines[1:-2])))
    raw = bytearray(base64.b64decode(body["ciphertext"]))
    raw[-1] ^= 1
    body["ciphertext"] = _b64(bytes(raw))
    altered = (
        b"-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----\n"
        + base64.encodebytes(json.dumps(body).encode())
        + b"-----END ENCRYPTED SIGSTORE PRIVATE KEY-----\n"
    )
    with pytest.raises(errors.AttestationError, match="wrong password or altered"):
        attest.load_private_key(altered, b"pw")


def test_cosign_key_with_unknown_scrypt_parameters_is_refused(
    key: ec.EllipticCurvePrivateKey,
) -> None:
    with pytest.raises(errors.AttestationError, match="scrypt parameters"):
        attest.load_private_key(_cosign_key(key, b"pw", n=1024), b"pw")


@pytest.mark.parametrize(
    "other",
    [
        rsa.generate_private_key(public_exponent=65537, key_size=2048),
        ec.generate_private_key(ec.SECP384R1()),
    ],
)
def test_only_p256_keys(other: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> None:
    pem = other.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    with pytest.raises(errors.AttestationError, match="not ECDSA P-256"):
        attest.load_private_key(pem)
    with pytest.raises(errors.AttestationError, match="not ECDSA P-256"):
        attest.load_public_key(
            other.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )


def test_garbage_is_refused() -> None:
    with pytest.raises(errors.AttestationError, match="no PEM block"):
        attest.load_private_key(b"hello")
    with pytest.raises(errors.AttestationError, match="not a PEM public key"):
        attest.load_public_key(b"hello")


def test_key_hint_is_base64_sha256_of_der(key: ec.EllipticCurvePrivateKey) -> None:
    der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert attest.key_hint(key.public_key()) == _b64(hashlib.sha256(der).digest())


def test_dev_key_is_labelled_private_and_stable(tmp_path: Path) -> None:
    first = attest.ensure_dev_key(tmp_path / "keys")
    assert first.created
    assert "DEVELOPMENT" in first.private_key_path.name
    data = first.private_key_path.read_bytes()
    assert data.startswith(b"# DEVELOPMENT KEY")
    assert stat.S_IMODE(first.private_key_path.stat().st_mode) == 0o600
    second = attest.ensure_dev_key(tmp_path / "keys")
    assert not second.created
    assert second.private_key_path.read_bytes() == data
    signer = attest.KeySigner.from_pem(data)
    assert signer.public_key_pem() == first.public_key_path.read_bytes()


def test_signer_from_mounted_secret(tmp_path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    (tmp_path / "cosign.key").write_bytes(_cosign_key(key, b"pw\n"))
    (tmp_path / "cosign.password").write_bytes(b"pw\n")  # byte for byte, newline included
    signer = attest.KeySigner.from_secret_files(tmp_path)
    assert signer.hint == attest.key_hint(key.public_key())
    with pytest.raises(errors.AttestationError, match="no signing key"):
        attest.KeySigner.from_secret_files(tmp_path / "empty")
