"""A local Fulcio (v2 signingCert), Rekor (v1 log entries) and OIDC token issuer.

Just enough of each for sigstore-python 4.5's real Signer and Verifier:

- Fulcio checks the bearer token's signature, audience and issuer and the CSR's proof
  of possession, then issues a code-signing certificate whose SAN is Fulcio's
  Kubernetes ServiceAccount URI, with the issuer extensions (v1 raw, v2 UTF8String)
  and an embedded precertificate SCT signed by a CT log key named in the trusted root.
- Rekor checks the DSSE signature against the submitted certificate, stores the
  canonical dsse/0.0.1 body in an RFC 6962 Merkle tree and answers with an inclusion
  proof, a signed checkpoint and a signed entry timestamp.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import json
import struct
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
import rfc8785
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID, ObjectIdentifier

from continue_orchestrator import attest

OIDC_ISSUER = "https://kubernetes.default.svc.cluster.local"
SERVICE_ACCOUNT = "system:serviceaccount:orchestrator-system:continue-orchestrator"
IDENTITY = (
    "https://kubernetes.io/namespaces/orchestrator-system/serviceaccounts/continue-orchestrator"
)

_OID_ISSUER_V1 = ObjectIdentifier("1.3.6.1.4.1.57264.1.1")
_OID_ISSUER_V2 = ObjectIdentifier("1.3.6.1.4.1.57264.1.8")
_OID_SCT_LIST = ObjectIdentifier("1.3.6.1.4.1.11129.2.4.2")
_EPOCH = "2020-01-01T00:00:00Z"


def _spki_der(key: ec.EllipticCurvePublicKey) -> bytes:
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _key_id(key: ec.EllipticCurvePublicKey) -> bytes:
    return hashlib.sha256(_spki_der(key)).digest()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _der_octet_string(content: bytes) -> bytes:
    return b"\x04" + _der_length(len(content)) + content


def _der_utf8(text: str) -> bytes:
    data = text.encode()
    return b"\x0c" + _der_length(len(data)) + data


def _der_length(length: int) -> bytes:
    if length < 0x80:
        return bytes([length])
    encoded = length.to_bytes((length.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(encoded)]) + encoded


def _leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def _node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def _root(leaves: list[bytes]) -> bytes:
    if len(leaves) == 1:
        return leaves[0]
    k = _split(len(leaves))
    return _node_hash(_root(leaves[:k]), _root(leaves[k:]))


def _inclusion_path(index: int, leaves: list[bytes]) -> list[bytes]:
    if len(leaves) == 1:
        return []
    k = _split(len(leaves))
    if index < k:
        return [*_inclusion_path(index, leaves[:k]), _root(leaves[k:])]
    return [*_inclusion_path(index - k, leaves[k:]), _root(leaves[:k])]


@dataclass
class SigstoreStack:
    """Keys, CA and log state of one local Sigstore instance."""

    oidc_key: ec.EllipticCurvePrivateKey = field(
        default_factory=lambda: ec.generate_private_key(ec.SECP256R1())
    )
    ca_key: ec.EllipticCurvePrivateKey = field(
        default_factory=lambda: ec.generate_private_key(ec.SECP256R1())
    )
    ct_key: ec.EllipticCurvePrivateKey = field(
        default_factory=lambda: ec.generate_private_key(ec.SECP256R1())
    )
    rekor_key: ec.EllipticCurvePrivateKey = field(
        default_factory=lambda: ec.generate_private_key(ec.SECP256R1())
    )
    url: str = ""
    leaves: list[bytes] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        now = datetime.datetime.now(datetime.UTC)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test-fulcio-root")])
        self.ca_cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.ca_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=1), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=False,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(self.ca_key.public_key()),
                critical=False,
            )
            .sign(self.ca_key, hashes.SHA256())
        )
        self.origin = f"rekor.test - {int.from_bytes(_key_id(self.rekor_key.public_key())[:8])}"

    # --- the client trust configuration ------------------------------------------------

    def _log_instance(self, key: ec.EllipticCurvePrivateKey) -> dict[str, Any]:
        public = key.public_key()
        return {
            "baseUrl": self.url,
            "hashAlgorithm": "SHA2_256",
            "publicKey": {
                "rawBytes": _b64(_spki_der(public)),
                "keyDetails": "PKIX_ECDSA_P256_SHA_256",
                "validFor": {"start": _EPOCH},
            },
            "logId": {"keyId": _b64(_key_id(public))},
        }

    def trusted_root(self) -> dict[str, Any]:
        return {
            "mediaType": "application/vnd.dev.sigstore.trustedroot+json;version=0.1",
            "tlogs": [self._log_instance(self.rekor_key)],
            "certificateAuthorities": [
                {
                    "subject": {"organization": "test", "commonName": "test-fulcio-root"},
                    "uri": self.url,
                    "certChain": {
                        "certificates": [
                            {
                                "rawBytes": _b64(
                                    self.ca_cert.public_bytes(serialization.Encoding.DER)
                                )
                            }
                        ]
                    },
                    "validFor": {"start": _EPOCH},
                }
            ],
            "ctlogs": [self._log_instance(self.ct_key)],
            "timestampAuthorities": [],
        }

    def signing_config(self) -> dict[str, Any]:
        service = {
            "url": self.url,
            "majorApiVersion": 1,
            "validFor": {"start": _EPOCH},
            "operator": "test",
        }
        return {
            "mediaType": "application/vnd.dev.sigstore.signingconfig.v0.2+json",
            "caUrls": [service],
            "oidcUrls": [],
            "rekorTlogUrls": [service],
            "rekorTlogConfig": {"selector": "ANY"},
            "tsaUrls": [],
            "tsaConfig": {"selector": "ANY"},
        }

    def client_trust_config(self) -> str:
        return json.dumps(
            {
                "mediaType": "application/vnd.dev.sigstore.clienttrustconfig.v0.1+json",
                "trustedRoot": self.trusted_root(),
                "signingConfig": self.signing_config(),
            }
        )

    def token(
        self,
        *,
        subject: str = SERVICE_ACCOUNT,
        audience: str = "sigstore",
        issuer: str = OIDC_ISSUER,
        lifetime: int = 600,
    ) -> str:
        now = int(time.time())
        claims = {
            "iss": issuer,
            "sub": subject,
            "aud": audience,
            "iat": now,
            "nbf": now,
            "exp": now + lifetime,
        }
        return jwt.encode(claims, self.oidc_key, algorithm="ES256")

    # --- Fulcio --------------------------------------------------------------------------

    def issue(self, csr_pem: bytes, token: str) -> list[bytes]:
        claims = jwt.decode(
            token,
            self.oidc_key.public_key(),
            algorithms=["ES256"],
            audience="sigstore",
            issuer=OIDC_ISSUER,
        )
        csr = x509.load_pem_x509_csr(csr_pem)
        if not csr.is_signature_valid:
            raise ValueError("CSR signature does not verify (no proof of possession)")
        subject_key = csr.public_key()
        assert isinstance(subject_key, ec.EllipticCurvePublicKey)
        identity = attest.kubernetes_identity(claims["sub"])
        now = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([]))
            .issuer_name(self.ca_cert.subject)
            .public_key(subject_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(seconds=5))
            .not_valid_after(now + datetime.timedelta(minutes=10))
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING]), critical=False
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(subject_key), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.ca_key.public_key()),
                critical=False,
            )
            .add_extension(
                x509.SubjectAlternativeName([x509.UniformResourceIdentifier(identity)]),
                critical=True,
            )
            .add_extension(
                x509.UnrecognizedExtension(_OID_ISSUER_V1, claims["iss"].encode()), critical=False
            )
            .add_extension(
                x509.UnrecognizedExtension(_OID_ISSUER_V2, _der_utf8(claims["iss"])),
                critical=False,
            )
        )
        # The CT log signs the certificate without its SCT list (RFC 6962 precertificate).
        precert_tbs = builder.sign(self.ca_key, hashes.SHA256()).tbs_certificate_bytes
        sct = self._sct(precert_tbs)
        cert = builder.add_extension(
            x509.UnrecognizedExtension(_OID_SCT_LIST, _der_octet_string(sct)), critical=False
        ).sign(self.ca_key, hashes.SHA256())
        assert cert.tbs_precertificate_bytes == precert_tbs
        return [c.public_bytes(serialization.Encoding.PEM) for c in (cert, self.ca_cert)]

    def _sct(self, precert_tbs: bytes) -> bytes:
        timestamp = int(time.time() * 1000)
        issuer_key_hash = _key_id(self.ca_key.public_key())
        signed = (
            struct.pack("!BBQH", 0, 0, timestamp, 1)
            + issuer_key_hash
            + len(precert_tbs).to_bytes(3, "big")
            + precert_tbs
            + struct.pack("!H", 0)
        )
        signature = self.ct_key.sign(signed, ec.ECDSA(hashes.SHA256()))
        serialized = (
            struct.pack("!B", 0)
            + _key_id(self.ct_key.public_key())
            + struct.pack("!QH", timestamp, 0)
            + struct.pack("!BBH", 4, 3, len(signature))
            + signature
        )
        item = struct.pack("!H", len(serialized)) + serialized
        return struct.pack("!H", len(item)) + item

    # --- Rekor ---------------------------------------------------------------------------

    def log_dsse(self, proposed: dict[str, Any]) -> dict[str, Any]:
        if proposed.get("kind") != "dsse":
            raise ValueError(f"unsupported entry kind {proposed.get('kind')!r}")
        content = proposed["spec"]["proposedContent"]
        envelope_json: str = content["envelope"]
        envelope = json.loads(envelope_json)
        verifier_pem = base64.b64decode(content["verifiers"][0])
        cert = x509.load_pem_x509_certificate(verifier_pem)
        public = cert.public_key()
        assert isinstance(public, ec.EllipticCurvePublicKey)
        payload = base64.b64decode(envelope["payload"])
        signatures = []
        for item in envelope["signatures"]:
            sig = base64.b64decode(item["sig"])
            public.verify(
                sig, attest.pae(envelope["payloadType"], payload), ec.ECDSA(hashes.SHA256())
            )
            signatures.append({"signature": item["sig"], "verifier": content["verifiers"][0]})
        body = rfc8785.dumps(
            {
                "apiVersion": "0.0.1",
                "kind": "dsse",
                "spec": {
                    "envelopeHash": {
                        "algorithm": "sha256",
                        "value": hashlib.sha256(envelope_json.encode()).hexdigest(),
                    },
                    "payloadHash": {
                        "algorithm": "sha256",
                        "value": hashlib.sha256(payload).hexdigest(),
                    },
                    "signatures": signatures,
                },
            }
        )
        log_id = _key_id(self.rekor_key.public_key())
        with self.lock:
            index = len(self.leaves)
            self.leaves.append(_leaf_hash(body))
            leaves = list(self.leaves)
        root = _root(leaves)
        proof = _inclusion_path(index, leaves)
        integrated = int(time.time())
        note = f"{self.origin}\n{len(leaves)}\n{_b64(root)}\n"
        note_sig = self.rekor_key.sign(note.encode(), ec.ECDSA(hashes.SHA256()))
        checkpoint = f"{note}\n\u2014 {self.origin.split(' ')[0]} {_b64(log_id[:4] + note_sig)}\n"
        set_payload = rfc8785.dumps(
            {
                "body": _b64(body),
                "integratedTime": integrated,
                "logID": log_id.hex(),
                "logIndex": index,
            }
        )
        entry_set = self.rekor_key.sign(set_payload, ec.ECDSA(hashes.SHA256()))
        return {
            uuid.uuid4().hex: {
                "body": _b64(body),
                "integratedTime": integrated,
                "logID": log_id.hex(),
                "logIndex": index,
                "verification": {
                    "inclusionProof": {
                        "logIndex": index,
                        "rootHash": root.hex(),
                        "treeSize": len(leaves),
                        "hashes": [h.hex() for h in proof],
                        "checkpoint": checkpoint,
                    },
                    "signedEntryTimestamp": _b64(entry_set),
                },
            }
        }


def _handler(stack: SigstoreStack) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # quiet
            pass

        def _reply(self, status: int, document: object) -> None:
            data = json.dumps(document).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            request = json.loads(self.rfile.read(length))
            try:
                if self.path == "/api/v2/signingCert":
                    token = self.headers.get("Authorization", "").removeprefix("Bearer ")
                    csr = base64.b64decode(request["certificateSigningRequest"])
                    chain = stack.issue(csr, token)
                    self._reply(
                        200,
                        {
                            "signedCertificateEmbeddedSct": {
                                "chain": {"certificates": [c.decode() for c in chain]}
                            }
                        },
                    )
                elif self.path == "/api/v1/log/entries":
                    self._reply(201, stack.log_dsse(request))
                else:
                    self._reply(404, {"message": f"no route {self.path}"})
            except Exception as error:  # report to the client, as the real services do
                self._reply(400, {"message": f"{error.__class__.__name__}: {error}"})

    return Handler


@contextmanager
def start_stack() -> Iterator[SigstoreStack]:
    """Run one local Sigstore instance on loopback for the duration of the block."""
    stack = SigstoreStack()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(stack))
    stack.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield stack
    finally:
        server.shutdown()
        server.server_close()
