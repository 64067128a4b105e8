"""Verify a Sigstore bundle offline and return the statement it signs.

Key mode is checked here (sigstore-python cannot verify public-key bundles); keyless
bundles go through sigstore-python's ``Verifier`` with an identity policy. Either way
the result is the parsed in-toto statement, and any failure is an
``AttestationError`` saying why.
"""

from __future__ import annotations

import hmac
import json

import sigstore.errors
from cryptography.hazmat.primitives.asymmetric import ec
from sigstore.models import Bundle, ClientTrustConfig, TrustedRoot
from sigstore.verify import Verifier, policy
from sigstore_models.trustroot import v1 as trustroot_v1

from continue_orchestrator import errors
from continue_orchestrator.attest import _dsse, _keys, _statement

_BUNDLE_V03_MEDIA_TYPES = (
    "application/vnd.dev.sigstore.bundle.v0.3+json",
    "application/vnd.dev.sigstore.bundle+json;version=0.3",
)
_WHERE = "attestation bundle"


def verify_bundle(
    bundle: bytes,
    *,
    public_key: ec.EllipticCurvePublicKey | bytes | None = None,
    identity: str | None = None,
    issuer: str | None = None,
    trusted_root: TrustedRoot | bytes | None = None,
    predicate_type: str | None = _statement.PREDICATE_TYPE,
) -> _statement.Statement:
    """Verify ``bundle`` and return its statement.

    Give either ``public_key`` (key mode; PEM bytes or a key object) or ``identity`` and
    ``issuer`` (keyless; ``trusted_root`` as object or JSON bytes, default: Sigstore
    production from the local TUF cache). ``predicate_type=None`` accepts any predicate.
    """
    keyless = identity is not None or issuer is not None
    if (public_key is None) == (not keyless):
        raise errors.AttestationError(
            "give either a public key or an identity and issuer, not both or neither",
            where="verify",
        )
    document = _statement.json_object(bundle, what="the bundle", where=_WHERE)
    if public_key is not None:
        statement = _verify_key_bundle(document, public_key)
    else:
        if not identity or not issuer:
            raise errors.AttestationError(
                "keyless verification needs both identity and issuer", where="verify"
            )
        statement = _verify_keyless_bundle(bundle, identity, issuer, trusted_root)
    if predicate_type is not None and statement.predicate_type != predicate_type:
        raise errors.AttestationError(
            f"predicate type is {statement.predicate_type!r}, expected {predicate_type!r}",
            where=_WHERE,
        )
    return statement


def trusted_root_from_json(data: bytes, *, where: str = "trusted root") -> TrustedRoot:
    """A TrustedRoot from JSON: a bare trusted root, or a ClientTrustConfig holding one."""
    try:
        document = json.loads(data)
        if isinstance(document, dict) and "trustedRoot" in document:
            return ClientTrustConfig.from_json(data.decode()).trusted_root
        return TrustedRoot(trustroot_v1.TrustedRoot.from_json(data))
    except (sigstore.errors.Error, ValueError, UnicodeDecodeError) as error:
        raise errors.AttestationError(
            f"not a Sigstore trusted root: {error}",
            where=where,
            fix="give trusted_root.json (application/vnd.dev.sigstore.trustedroot+json"
            ";version=0.1) or a ClientTrustConfig document",
        ) from error


def _verify_key_bundle(
    document: dict[str, object], public_key: ec.EllipticCurvePublicKey | bytes
) -> _statement.Statement:
    key = (
        _keys.load_public_key(public_key, where="verification key")
        if isinstance(public_key, bytes)
        else public_key
    )
    media_type = document.get("mediaType")
    if media_type not in _BUNDLE_V03_MEDIA_TYPES:
        raise errors.AttestationError(
            f"unsupported bundle mediaType {media_type!r}; key mode uses bundle v0.3",
            where=_WHERE,
        )
    material = document.get("verificationMaterial")
    if not isinstance(material, dict):
        raise errors.AttestationError("verificationMaterial is missing", where=_WHERE)
    hint_holder = material.get("publicKey")
    if not isinstance(hint_holder, dict):
        raise errors.AttestationError(
            "the bundle is not a key-mode bundle (no verificationMaterial.publicKey)",
            where=_WHERE,
            fix="verify keyless bundles with --identity and --issuer",
        )
    hint = hint_holder.get("hint")
    if not isinstance(hint, str) or not hmac.compare_digest(hint, _keys.key_hint(key)):
        raise errors.AttestationError(
            "the bundle's public-key hint does not match the given key",
            where=_WHERE,
            fix="the bundle was signed by another key, or its hint was altered",
        )
    if document.get("messageSignature") is not None:
        raise errors.AttestationError(
            "bundle carries a message signature, not a DSSE envelope", where=_WHERE
        )
    envelope = _dsse.Envelope.from_json_dict(document.get("dsseEnvelope"), where=_WHERE)
    if envelope.payload_type != _statement.PAYLOAD_TYPE:
        raise errors.AttestationError(
            f"payloadType is {envelope.payload_type!r}, not {_statement.PAYLOAD_TYPE!r}",
            where=_WHERE,
        )
    _dsse.verify(key, envelope, where=_WHERE)
    return _statement.parse_statement(envelope.payload)


def _verify_keyless_bundle(
    raw: bytes, identity: str, issuer: str, trusted_root: TrustedRoot | bytes | None
) -> _statement.Statement:
    if isinstance(trusted_root, bytes):
        root = trusted_root_from_json(trusted_root)
    elif trusted_root is None:
        try:
            root = ClientTrustConfig.production(offline=True).trusted_root
        except (sigstore.errors.Error, OSError, ValueError) as error:
            raise errors.AttestationError(
                f"no cached Sigstore production trusted root: {error}",
                where="verify",
                fix="pass the trusted root of the Sigstore instance that signed it",
            ) from error
    else:
        root = trusted_root
    try:
        sigstore_bundle = Bundle.from_json(raw)
        verifier = Verifier(trusted_root=root)
        payload_type, payload = verifier.verify_dsse(
            sigstore_bundle, policy.Identity(identity=identity, issuer=issuer)
        )
    except sigstore.errors.Error as error:
        raise errors.AttestationError(
            f"keyless verification failed: {error}",
            where=_WHERE,
            fix="check the expected identity, issuer and trusted root; otherwise the bundle "
            "is not genuine",
        ) from error
    except Exception as error:  # malformed certificates, entries, proofs: never a pass
        raise errors.AttestationError(
            f"malformed keyless bundle: {error.__class__.__name__}: {error}", where=_WHERE
        ) from error
    if payload_type != _statement.PAYLOAD_TYPE:
        raise errors.AttestationError(
            f"payloadType is {payload_type!r}, not {_statement.PAYLOAD_TYPE!r}", where=_WHERE
        )
    return _statement.parse_statement(payload)


def bundle_statement(data: bytes, *, where: str) -> _statement.Statement:
    """The statement a bundle carries, its signature NOT checked: for a bundle the caller
    already trusts by digest (one ``verify_bundle`` checked when it was stored, read back
    from immutable storage and compared with the digest recorded then)."""
    document = _statement.json_object(data, what="bundle", where=where)
    envelope = _dsse.Envelope.from_json_dict(document.get("dsseEnvelope"), where=where)
    return _statement.parse_statement(envelope.payload)
