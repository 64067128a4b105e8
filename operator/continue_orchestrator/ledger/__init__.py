"""The run ledger: append-only, hash-chained, Merkle-checkpointed and verifiable.

Every entry commits to its predecessor and to the SHA-256 of its canonical (RFC 8785)
payload; an RFC 6962 Merkle tree over the entries, with signed checkpoints, makes any
edit, deletion, reordering or truncation detectable by ``verify``. There is no update
and no delete: deleting a run or redacting a payload appends a tombstone. Backends:
SQLite (``sqlite:///path.db``, the default) and PostgreSQL (``postgresql://…``). See
docs/ledger.md.

    with ledger.open("sqlite:///var/lib/orchestrator/ledger.db") as book:
        book.append(run_uid, ledger.Kind.TOOL_CALL, "gateway", {"tool": "Bash", ...})
        ledger.verify(book).raise_for_problems()
"""

from continue_orchestrator.ledger._async import AsyncLedger
from continue_orchestrator.ledger._canonical import canonical
from continue_orchestrator.ledger._checkpoint import (
    Checkpoint,
    CheckpointSigner,
    KeySigner,
    PrivateKey,
    PublicKey,
    key_id,
    load_private_key,
    load_public_key,
)
from continue_orchestrator.ledger._entry import (
    GENESIS_HASH,
    Append,
    Entry,
    Kind,
    Prepared,
    prepare,
)
from continue_orchestrator.ledger._export import export
from continue_orchestrator.ledger._ledger import InclusionProof, Ledger
from continue_orchestrator.ledger._open import open
from continue_orchestrator.ledger._verify import Problem, VerifyReport, verify


def init_postgres(admin_url: str, *, writer_role: str | None = None) -> None:
    """Create the PostgreSQL schema and grant ``writer_role`` append-only rights."""
    from continue_orchestrator.ledger import _postgres

    _postgres.init(admin_url, writer_role=writer_role)


__all__ = [
    "GENESIS_HASH",
    "Append",
    "AsyncLedger",
    "Checkpoint",
    "CheckpointSigner",
    "Entry",
    "InclusionProof",
    "KeySigner",
    "Kind",
    "Ledger",
    "Prepared",
    "PrivateKey",
    "Problem",
    "PublicKey",
    "VerifyReport",
    "canonical",
    "export",
    "init_postgres",
    "key_id",
    "load_private_key",
    "load_public_key",
    "open",
    "prepare",
    "verify",
]
