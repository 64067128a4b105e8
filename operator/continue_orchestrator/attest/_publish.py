"""Publish an attestation with an honest status.

``signed`` is true only once the bundle is stored and the stored copy, read back,
verifies as the statement we meant to sign. Anything else is ``failed`` with the
reason, after retries with exponential backoff, and counted in a metric. This is the
lesson of Tekton Chains users who saw ``signed=true`` with nothing signed.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal, Protocol

import prometheus_client
from pydantic import BaseModel, ConfigDict

from continue_orchestrator import digest, errors
from continue_orchestrator.attest import _signers, _statement

SIGNING_FAILURES = prometheus_client.Counter(
    "orchestrator_attestation_signing_failures",
    "Failed attempts to sign, store or re-verify a run attestation.",
    ["mode", "stage"],
)
PUBLISHED = prometheus_client.Counter(
    "orchestrator_attestations_published",
    "Run attestations stored and re-verified.",
    ["mode"],
)

Stage = Literal["sign", "store", "fetch", "verify"]


class BundleStore(Protocol):
    """Durable storage for bundles, where users and admission controllers can fetch them."""

    def put(self, name: str, data: bytes) -> str:
        """Store ``data`` under ``name`` durably; return its location."""
        ...

    def get(self, location: str) -> bytes:
        """The bytes stored at ``location``."""
        ...


_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,252}$")


class FileStore:
    """Bundles as files under one directory (local mode, or a mounted volume)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def put(self, name: str, data: bytes) -> str:
        if not _NAME.match(name):
            raise errors.AttestationError(
                f"invalid bundle name {name!r}",
                where=str(self.root),
                fix="use letters, digits, '.', '_' and '-' only",
            )
        path = self.root / name
        temporary = self.root / f".{name}.{os.getpid()}.tmp"
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            with open(temporary, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, path)
            directory = os.open(self.root, os.O_RDONLY)
            try:
                os.fsync(directory)
            finally:
                os.close(directory)
        except OSError as error:
            temporary.unlink(missing_ok=True)
            raise errors.AttestationError(
                f"cannot store the bundle: {error.strerror}", where=str(path)
            ) from error
        return str(path)

    def get(self, location: str) -> bytes:
        path = Path(location)
        if path.parent.resolve() != self.root.resolve():
            raise errors.AttestationError(
                "location is outside this store", where=location, fix=f"use {self.root}"
            )
        try:
            return path.read_bytes()
        except OSError as error:
            raise errors.AttestationError(
                f"cannot read the bundle: {error.strerror}", where=location
            ) from error


class SigningStatus(BaseModel):
    """What goes into the AgentRun status and the ledger's ``attestation published`` entry."""

    model_config = ConfigDict(frozen=True)

    state: Literal["signed", "failed"]
    signed: bool
    mode: str
    attempts: int
    bundle_digest: str | None = None  # "sha256:<hex>" of the stored bytes
    location: str | None = None
    statement_digest: str | None = None  # "sha256:<hex>" of the signed payload
    reason: str = ""
    at: datetime


def publish(
    statement: _statement.Statement,
    *,
    signer: _signers.Signer,
    store: BundleStore,
    name: str,
    attempts: int = 4,
    backoff_seconds: float = 0.5,
    max_backoff_seconds: float = 30.0,
    sleep: Callable[[float], None] = time.sleep,
) -> SigningStatus:
    """Sign, store, read back and re-verify; retry with backoff; never claim what failed.

    Returns the status to publish; does not raise for signing or storage failures.
    """
    if attempts < 1:
        raise ValueError("attempts must be at least 1")
    payload = statement.to_bytes()
    statement_digest = digest.text(payload)
    reason = ""
    for attempt in range(1, attempts + 1):
        stage: Stage = "sign"
        try:
            bundle = signer.sign(statement)
            stage = "store"
            location = store.put(name, bundle)
            stage = "fetch"
            stored = store.get(location)
            stage = "verify"
            if stored != bundle:
                raise errors.AttestationError(
                    "the stored bundle differs from the one signed", where=location
                )
            verified = signer.verify(stored)
            if verified.to_bytes() != payload:
                raise errors.AttestationError(
                    "the stored bundle verifies but signs a different statement", where=location
                )
        except (errors.OrchestratorError, OSError) as error:
            SIGNING_FAILURES.labels(mode=signer.mode, stage=stage).inc()
            reason = f"{stage} failed (attempt {attempt}/{attempts}): {_describe(error)}"
            if attempt < attempts:
                sleep(min(max_backoff_seconds, backoff_seconds * 2 ** (attempt - 1)))
            continue
        PUBLISHED.labels(mode=signer.mode).inc()
        return SigningStatus(
            state="signed",
            signed=True,
            mode=signer.mode,
            attempts=attempt,
            bundle_digest=digest.text(stored),
            location=location,
            statement_digest=statement_digest,
            at=datetime.now(UTC),
        )
    return SigningStatus(
        state="failed",
        signed=False,
        mode=signer.mode,
        attempts=attempts,
        statement_digest=statement_digest,
        reason=reason,
        at=datetime.now(UTC),
    )


def _describe(error: BaseException) -> str:
    if isinstance(error, errors.OrchestratorError):
        return error.message
    return f"{error.__class__.__name__}: {error}"
