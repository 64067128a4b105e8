"""Signed run attestations: in-toto statements in Sigstore bundles.

Build the statement of a finished run from ``RunFacts``, sign it with a ``Signer``
(``KeySigner`` for key mode, ``KeylessSigner`` for Fulcio + Rekor), ``publish`` it to a
``BundleStore`` with an honest ``SigningStatus``, and ``verify_bundle`` offline.
"""

from continue_orchestrator.attest._dsse import Envelope, pae
from continue_orchestrator.attest._facts import (
    Intervention,
    LedgerRange,
    ModelUse,
    RunFacts,
    RunRef,
    ToolCallCounts,
    ToolCallSummary,
    VerifyResult,
)
from continue_orchestrator.attest._keys import (
    DevKey,
    ensure_dev_key,
    key_hint,
    load_private_key,
    load_public_key,
    public_key_pem,
)
from continue_orchestrator.attest._publish import (
    PUBLISHED,
    SIGNING_FAILURES,
    BundleStore,
    FileStore,
    SigningStatus,
    publish,
)
from continue_orchestrator.attest._signers import (
    BUNDLE_MEDIA_TYPE,
    DEFAULT_TOKEN_PATH,
    TOKEN_AUDIENCE,
    KeylessSigner,
    KeySigner,
    Mode,
    Signer,
    TokenSource,
    kubernetes_identity,
    load_trust_config,
    token_file,
)
from continue_orchestrator.attest._statement import (
    PAYLOAD_TYPE,
    PREDICATE_TYPE,
    STATEMENT_TYPE,
    Statement,
    Subject,
    build_statement,
    parse_statement,
)
from continue_orchestrator.attest._verify import (
    bundle_statement,
    trusted_root_from_json,
    verify_bundle,
)

__all__ = [
    "BUNDLE_MEDIA_TYPE",
    "DEFAULT_TOKEN_PATH",
    "PAYLOAD_TYPE",
    "PREDICATE_TYPE",
    "PUBLISHED",
    "SIGNING_FAILURES",
    "STATEMENT_TYPE",
    "TOKEN_AUDIENCE",
    "BundleStore",
    "DevKey",
    "Envelope",
    "FileStore",
    "Intervention",
    "KeySigner",
    "KeylessSigner",
    "LedgerRange",
    "Mode",
    "ModelUse",
    "RunFacts",
    "RunRef",
    "Signer",
    "SigningStatus",
    "Statement",
    "Subject",
    "TokenSource",
    "ToolCallCounts",
    "ToolCallSummary",
    "VerifyResult",
    "build_statement",
    "bundle_statement",
    "ensure_dev_key",
    "key_hint",
    "kubernetes_identity",
    "load_private_key",
    "load_public_key",
    "load_trust_config",
    "pae",
    "parse_statement",
    "public_key_pem",
    "publish",
    "token_file",
    "trusted_root_from_json",
    "verify_bundle",
]
