"""Signers: key mode (air-gapped) and keyless (Fulcio + Rekor), behind one protocol.

Key mode builds the Sigstore bundle itself: sigstore-python can neither make nor
verify a bundle whose verification material is a public-key hint. Keyless mode is
sigstore-python's ``SigningContext`` fed with a projected ServiceAccount token.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Literal, Protocol

import sigstore.errors
from cryptography.hazmat.primitives.asymmetric import ec
from sigstore import dsse as sigstore_dsse
from sigstore import oidc
from sigstore.models import ClientTrustConfig
from sigstore.sign import SigningContext

from continue_orchestrator import errors
from continue_orchestrator.attest import _dsse, _keys, _statement, _verify

BUNDLE_MEDIA_TYPE = "application/vnd.dev.sigstore.bundle.v0.3+json"
DEFAULT_TOKEN_PATH = Path("/var/run/secrets/tokens/sigstore/token")
TOKEN_AUDIENCE = "sigstore"

Mode = Literal["key", "keyless"]


class Signer(Protocol):
    """Signs a statement into a Sigstore bundle, and verifies its own bundles."""

    @property
    def mode(self) -> Mode: ...

    def sign(self, statement: _statement.Statement) -> bytes:
        """The Sigstore bundle (JSON bytes) of ``statement``."""
        ...

    def verify(self, bundle: bytes) -> _statement.Statement:
        """Verify a bundle as a third party would, with this signer's public material."""
        ...


class KeySigner:
    """Key mode: an ECDSA P-256 key, a DSSE envelope, a bundle v0.3 with a key hint."""

    mode: Mode = "key"

    def __init__(self, private_key: ec.EllipticCurvePrivateKey) -> None:
        self._key = private_key
        self.public_key = private_key.public_key()
        self.hint = _keys.key_hint(self.public_key)

    @classmethod
    def from_pem(cls, data: bytes, password: bytes | None = None, *, where: str = "") -> KeySigner:
        return cls(_keys.load_private_key(data, password, where=where or "signing key"))

    @classmethod
    def from_secret_files(cls, directory: Path) -> KeySigner:
        """From a mounted Secret: ``cosign.key`` + ``cosign.password``, or ``key.pem``
        (+ ``password``). Passwords are used byte for byte, as cosign does."""
        for key_name, password_name in (("cosign.key", "cosign.password"), ("key.pem", "password")):
            key_path, password_path = directory / key_name, directory / password_name
            if key_path.exists():
                password = password_path.read_bytes() if password_path.exists() else None
                return cls.from_pem(key_path.read_bytes(), password, where=str(key_path))
        raise errors.AttestationError(
            "no signing key found",
            where=str(directory),
            fix="the Secret needs cosign.key (+ cosign.password) or key.pem (+ password)",
        )

    def public_key_pem(self) -> bytes:
        return _keys.public_key_pem(self.public_key)

    def sign(self, statement: _statement.Statement) -> bytes:
        envelope = _dsse.sign(self._key, _statement.PAYLOAD_TYPE, statement.to_bytes())
        bundle = {
            "mediaType": BUNDLE_MEDIA_TYPE,
            "verificationMaterial": {"publicKey": {"hint": self.hint}, "tlogEntries": []},
            "dsseEnvelope": envelope.to_json_dict(),
        }
        return json.dumps(bundle, indent=2).encode() + b"\n"

    def verify(self, bundle: bytes) -> _statement.Statement:
        return _verify.verify_bundle(bundle, public_key=self.public_key)


TokenSource = Callable[[], str]


def token_file(path: Path = DEFAULT_TOKEN_PATH) -> TokenSource:
    """Read the projected ServiceAccount token afresh each time (the kubelet rotates it)."""

    def read() -> str:
        try:
            return path.read_text().strip()
        except OSError as error:
            raise errors.AttestationError(
                f"cannot read the identity token: {error.strerror}",
                where=str(path),
                fix="project a ServiceAccount token with audience 'sigstore' at this path",
            ) from error

    return read


def load_trust_config(source: str) -> ClientTrustConfig:
    """Trust configuration: ``production``, ``staging``, or ClientTrustConfig JSON content.

    The named instances come from Sigstore's TUF repositories (network); a private
    instance (or an air-gapped copy) is the JSON itself, e.g. from a ConfigMap.
    """
    where = "sigstore trust configuration"
    try:
        if source == "production":
            return ClientTrustConfig.production()
        if source == "staging":
            return ClientTrustConfig.staging()
        config = ClientTrustConfig.from_json(source)
        config.trusted_root  # noqa: B018  (validates the media type now, not at signing)
        config.signing_config  # noqa: B018
        return config
    except (sigstore.errors.Error, ValueError) as error:
        raise errors.AttestationError(
            f"cannot load: {error}",
            where=where,
            fix="give 'production', 'staging' or a ClientTrustConfig JSON document "
            "(mediaType application/vnd.dev.sigstore.clienttrustconfig.v0.1+json)",
        ) from error


def kubernetes_identity(subject: str) -> str:
    """The SAN Fulcio puts in certificates for a Kubernetes ServiceAccount token's subject."""
    parts = subject.split(":")
    if len(parts) == 4 and parts[:2] == ["system", "serviceaccount"]:
        return f"https://kubernetes.io/namespaces/{parts[2]}/serviceaccounts/{parts[3]}"
    return subject


class KeylessSigner:
    """Keyless mode: a short-lived Fulcio certificate for the operator's identity, logged in Rekor.

    ``identity``/``issuer`` are what verifiers are expected to check; by default they
    follow from the token (Fulcio's Kubernetes SAN for ServiceAccount subjects).
    """

    mode: Mode = "keyless"

    def __init__(
        self,
        trust_config: ClientTrustConfig,
        token: TokenSource,
        *,
        identity: str | None = None,
        issuer: str | None = None,
    ) -> None:
        self._trust_config = trust_config
        self._token = token
        self._identity = identity
        self._issuer = issuer

    def _identity_token(self) -> oidc.IdentityToken:
        try:
            return oidc.IdentityToken(self._token(), client_id=TOKEN_AUDIENCE)
        except oidc.IdentityError as error:
            raise errors.AttestationError(
                f"the identity token is unusable: {error}",
                where="keyless signing",
                fix="project a fresh ServiceAccount token with audience 'sigstore'",
            ) from error

    def expected_identity(self) -> tuple[str, str]:
        """(identity, issuer) a verifier must require for this signer's bundles."""
        if self._identity and self._issuer:
            return self._identity, self._issuer
        token = self._identity_token()
        return (
            self._identity or kubernetes_identity(token.identity),
            self._issuer or token.issuer,
        )

    def sign(self, statement: _statement.Statement) -> bytes:
        token = self._identity_token()
        try:
            context = SigningContext.from_trust_config(self._trust_config)
            payload = sigstore_dsse.Statement(statement.to_bytes())
            # cache=True: with cache=False sigstore-python 4.5 signs with a different
            # ephemeral key than the one it certified. One signer per call keeps it fresh.
            with context.signer(token, cache=True) as signer:
                bundle = signer.sign_dsse(payload)
        except (sigstore.errors.Error, OSError, ValueError) as error:
            raise errors.AttestationError(
                f"keyless signing failed: {error}",
                where="keyless signing",
                fix="check the Fulcio/Rekor URLs in the trust configuration and that they "
                "accept this cluster's ServiceAccount tokens",
            ) from error
        except Exception as error:  # requests and Fulcio/Rekor client errors
            raise errors.AttestationError(
                f"keyless signing failed: {error.__class__.__name__}: {error}",
                where="keyless signing",
                fix="check that Fulcio and Rekor are reachable and accept the token",
            ) from error
        return bundle.to_json().encode()

    def verify(self, bundle: bytes) -> _statement.Statement:
        identity, issuer = self.expected_identity()
        return _verify.verify_bundle(
            bundle,
            identity=identity,
            issuer=issuer,
            trusted_root=self._trust_config.trusted_root,
        )
