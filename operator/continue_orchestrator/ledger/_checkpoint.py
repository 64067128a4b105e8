"""Signed checkpoints: a ledger's size and Merkle root at a moment, under a key.

A checkpoint published outside the ledger (in an attestation, a CI log, a file an
auditor keeps) is what makes truncation and wholesale rewriting detectable: whoever
controls the database can recompute every hash, but not sign a root without the key.
The signed body is the RFC 8785 JSON of (type, origin, size, root_hash, time), so
another implementation can check it without this code.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import pathlib
from collections.abc import Callable
from typing import Any, Protocol, TypeVar, runtime_checkable

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from continue_orchestrator import errors
from continue_orchestrator.ledger import _canonical

CHECKPOINT_TYPE = "continue-orchestrator.dev/ledger-checkpoint/v1"

PrivateKey = ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey
PublicKey = ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey
# The same, for isinstance (and typed so that it narrows to PrivateKey, PublicKey).
_PRIVATE_KEYS: tuple[type[PrivateKey], ...] = (
    ed25519.Ed25519PrivateKey,
    ec.EllipticCurvePrivateKey,
)
_PUBLIC_KEYS: tuple[type[PublicKey], ...] = (ed25519.Ed25519PublicKey, ec.EllipticCurvePublicKey)


@runtime_checkable
class CheckpointSigner(Protocol):
    """Anything that can sign checkpoint bodies: a local key, a KMS, an HSM."""

    @property
    def key_id(self) -> str: ...

    def sign(self, data: bytes) -> bytes: ...


def key_id(public_key: PublicKey) -> str:
    """Base64 SHA-256 of the DER SubjectPublicKeyInfo (cosign's key hint)."""
    der = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(hashlib.sha256(der).digest()).decode("ascii")


def _check_key_type(key: PrivateKey | PublicKey, where: str) -> None:
    if isinstance(key, ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey) and not isinstance(
        key.curve, ec.SECP256R1
    ):
        raise errors.LedgerError(
            f"ECDSA key on curve {key.curve.name} is not supported",
            where=where,
            fix="use an ECDSA P-256 (secp256r1) or Ed25519 key",
        )
    if not isinstance(key, _PRIVATE_KEYS + _PUBLIC_KEYS):
        raise errors.LedgerError(
            f"{type(key).__name__} is not supported",
            where=where,
            fix="use an ECDSA P-256 (secp256r1) or Ed25519 key",
        )


class KeySigner:
    """A ``CheckpointSigner`` over a ``cryptography`` Ed25519 or ECDSA P-256 private key."""

    def __init__(self, private_key: PrivateKey) -> None:
        _check_key_type(private_key, "checkpoint signer")
        self._key = private_key
        self._key_id = key_id(private_key.public_key())

    @property
    def key_id(self) -> str:
        return self._key_id

    def sign(self, data: bytes) -> bytes:
        if isinstance(self._key, ed25519.Ed25519PrivateKey):
            return self._key.sign(data)
        return self._key.sign(data, ec.ECDSA(hashes.SHA256()))


def verify_signature(public_key: PublicKey, data: bytes, signature: bytes) -> bool:
    _check_key_type(public_key, "checkpoint public key")
    try:
        if isinstance(public_key, ed25519.Ed25519PublicKey):
            public_key.verify(signature, data)
        else:
            public_key.verify(signature, data, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        return False
    return True


@dataclasses.dataclass(frozen=True, slots=True)
class Checkpoint:
    """The tree of the first ``size`` entries has root ``root_hash``; signed if ``key_id``."""

    origin: str
    size: int
    root_hash: str
    time: str
    key_id: str = ""
    signature: str = ""

    @property
    def signed(self) -> bool:
        return bool(self.signature)

    def body(self) -> bytes:
        return _canonical.canonical(
            {
                "type": CHECKPOINT_TYPE,
                "origin": self.origin,
                "size": self.size,
                "root_hash": self.root_hash,
                "time": self.time,
            },
            where="checkpoint",
        )

    def signed_by(self, signer: CheckpointSigner) -> Checkpoint:
        signature = base64.b64encode(signer.sign(self.body())).decode("ascii")
        return dataclasses.replace(self, key_id=signer.key_id, signature=signature)

    def verify(self, public_key: PublicKey) -> bool:
        """True when signed by ``public_key``; an unsigned checkpoint never verifies."""
        if not self.signed or self.key_id != key_id(public_key):
            return False
        try:
            signature = base64.b64decode(self.signature, validate=True)
        except ValueError:
            return False
        return verify_signature(public_key, self.body(), signature)

    def to_json(self) -> dict[str, Any]:
        return {
            "type": CHECKPOINT_TYPE,
            "origin": self.origin,
            "size": self.size,
            "root_hash": self.root_hash,
            "time": self.time,
            "key_id": self.key_id,
            "signature": self.signature,
        }

    @classmethod
    def from_json(cls, data: Any, *, where: str) -> Checkpoint:
        with _canonical.reading(
            "is not a ledger checkpoint",
            where=where,
            fix="pass a checkpoint written by 'orchestrator ledger checkpoint' or 'export'",
        ):
            if data.get("type") != CHECKPOINT_TYPE:
                raise ValueError(f"type is {data.get('type')!r}, not {CHECKPOINT_TYPE!r}")
            size = data["size"]
            if type(size) is not int or size < 0:
                raise ValueError(f"size {size!r} is not a non-negative integer")
            return cls(
                origin=str(data["origin"]),
                size=size,
                root_hash=str(data["root_hash"]),
                time=str(data["time"]),
                key_id=str(data.get("key_id", "")),
                signature=str(data.get("signature", "")),
            )


def load_private_key(path: str | pathlib.Path) -> PrivateKey:
    return _load_pem(
        path,
        lambda data: serialization.load_pem_private_key(data, password=None),
        _PRIVATE_KEYS,
        what="a PEM private key",
        fix="pass an unencrypted PKCS#8 PEM Ed25519 or ECDSA P-256 key",
    )


def load_public_key(path: str | pathlib.Path) -> PublicKey:
    return _load_pem(
        path,
        serialization.load_pem_public_key,
        _PUBLIC_KEYS,
        what="a PEM public key",
        fix="pass a SubjectPublicKeyInfo PEM Ed25519 or ECDSA P-256 public key",
    )


_Key = TypeVar("_Key", bound=PrivateKey | PublicKey)


def _load_pem(
    path: str | pathlib.Path,
    load: Callable[[bytes], object],
    kinds: tuple[type[_Key], ...],
    *,
    what: str,
    fix: str,
) -> _Key:
    """The key ``load`` reads from the file at ``path``, if it is one of ``kinds``."""
    where = str(path)
    try:
        key = load(pathlib.Path(path).read_bytes())
    except (OSError, ValueError, TypeError) as error:
        raise errors.LedgerError(f"cannot load {what}: {error}", where=where, fix=fix) from None
    if not isinstance(key, kinds):
        raise errors.LedgerError(
            f"{type(key).__name__} is not supported",
            where=where,
            fix="use an Ed25519 or ECDSA P-256 key",
        )
    _check_key_type(key, where)
    return key
