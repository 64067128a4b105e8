"""DSSE (Dead Simple Signing Envelope) v1: PAE, envelope JSON, ECDSA P-256 signatures.

sigstore-python only signs DSSE with Fulcio-issued keys, so key mode needs its own.
Signatures are ASN.1 DER ECDSA over SHA-256 of PAE(payloadType, payload), which is
what cosign, sigstore-go and sigstore-js check.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from continue_orchestrator import errors


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE v1 Pre-Authentication Encoding."""
    kind = payload_type.encode()
    return b"DSSEv1 %d %b %d %b" % (len(kind), kind, len(payload), payload)


@dataclass(frozen=True)
class Envelope:
    payload_type: str
    payload: bytes
    signatures: tuple[bytes, ...]

    def to_json_dict(self) -> dict[str, Any]:
        return {
            "payload": base64.b64encode(self.payload).decode(),
            "payloadType": self.payload_type,
            "signatures": [{"sig": base64.b64encode(sig).decode()} for sig in self.signatures],
        }

    @classmethod
    def from_json_dict(cls, document: object, *, where: str) -> Envelope:
        if not isinstance(document, dict):
            raise errors.AttestationError("dsseEnvelope is not an object", where=where)
        payload_type = document.get("payloadType")
        if not isinstance(payload_type, str) or not payload_type:
            raise errors.AttestationError("dsseEnvelope.payloadType is missing", where=where)
        payload = _b64(document.get("payload"), "dsseEnvelope.payload", where)
        raw_signatures = document.get("signatures")
        if not isinstance(raw_signatures, list) or not raw_signatures:
            raise errors.AttestationError("dsseEnvelope has no signatures", where=where)
        signatures = []
        for index, item in enumerate(raw_signatures):
            field = f"dsseEnvelope.signatures[{index}].sig"
            if not isinstance(item, dict):
                raise errors.AttestationError(f"{field} is missing", where=where)
            signatures.append(_b64(item.get("sig"), field, where))
        return cls(payload_type=payload_type, payload=payload, signatures=tuple(signatures))


def sign(key: ec.EllipticCurvePrivateKey, payload_type: str, payload: bytes) -> Envelope:
    signature = key.sign(pae(payload_type, payload), ec.ECDSA(hashes.SHA256()))
    return Envelope(payload_type=payload_type, payload=payload, signatures=(signature,))


def verify(key: ec.EllipticCurvePublicKey, envelope: Envelope, *, where: str) -> None:
    """Pass if every signature on the envelope is valid for ``key``."""
    message = pae(envelope.payload_type, envelope.payload)
    for index, signature in enumerate(envelope.signatures):
        try:
            key.verify(signature, message, ec.ECDSA(hashes.SHA256()))
        except InvalidSignature:
            raise errors.AttestationError(
                f"DSSE signature {index} does not verify with the given public key",
                where=where,
                fix="the payload or signature was altered, or it was signed by another key",
            ) from None


def _b64(value: object, field: str, where: str) -> bytes:
    if not isinstance(value, str) or not value:
        raise errors.AttestationError(f"{field} is missing", where=where)
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise errors.AttestationError(f"{field} is not valid base64", where=where) from None
