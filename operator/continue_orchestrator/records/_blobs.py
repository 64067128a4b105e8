"""Content-addressed blob store on the filesystem.

Every model request and response the gateway sees is kept as an immutable blob named by
its SHA-256, so the ledger and the run record can point at exact bytes and a reader can
check them. Writes go to a temporary file in the target directory, are fsynced and then
renamed into place: a crash leaves either the whole blob or nothing, never half of one.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from pathlib import Path

from continue_orchestrator import errors

_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")


def digest_of(data: bytes) -> str:
    """The store's name for ``data``: ``"sha256:"`` and the hex SHA-256."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


class BlobStore:
    """Immutable blobs under ``root/sha256/ab/cdef…``; names are their digests."""

    def __init__(self, root: str | os.PathLike[str], *, fsync: bool = True) -> None:
        self.root = Path(root)
        self._fsync = fsync
        try:
            (self.root / "sha256").mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise errors.RecordError(
                f"cannot create the blob store: {error.strerror}",
                where=str(self.root),
                fix="point the record store at a writable directory",
            ) from error

    def path(self, digest: str) -> Path:
        if not _DIGEST.fullmatch(digest):
            raise errors.RecordError(
                f"not a blob digest: {digest!r}",
                where=str(self.root),
                fix='digests look like "sha256:" followed by 64 lowercase hex digits',
            )
        hexdigest = digest.removeprefix("sha256:")
        return self.root / "sha256" / hexdigest[:2] / hexdigest[2:]

    def put(self, data: bytes) -> str:
        """Store ``data`` (idempotent) and return its digest."""
        digest = digest_of(data)
        target = self.path(digest)
        if target.exists():
            return digest
        target.parent.mkdir(exist_ok=True)
        fd, temporary = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                if self._fsync:
                    handle.flush()
                    os.fsync(handle.fileno())
            os.replace(temporary, target)
        except OSError as error:
            Path(temporary).unlink(missing_ok=True)
            raise errors.RecordError(
                f"cannot write blob {digest}: {error.strerror}",
                where=str(target),
                fix="check free space and permissions of the record store",
            ) from error
        return digest

    def get(self, digest: str) -> bytes:
        """The bytes named ``digest``; raises if missing or if they no longer match it."""
        target = self.path(digest)
        try:
            data = target.read_bytes()
        except FileNotFoundError as error:
            raise errors.RecordError(
                f"blob {digest} is not in the store",
                where=str(self.root),
                fix="the record was written to another store, or the blob was deleted",
            ) from error
        if digest_of(data) != digest:
            raise errors.RecordError(
                f"blob {digest} was altered: its bytes hash to {digest_of(data)}",
                where=str(target),
                fix="restore the store from a trusted copy; do not trust this run's record",
            )
        return data

    def __contains__(self, digest: object) -> bool:
        return (
            isinstance(digest, str)
            and _DIGEST.fullmatch(digest) is not None
            and (self.path(digest).exists())
        )
