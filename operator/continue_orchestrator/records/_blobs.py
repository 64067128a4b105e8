"""Content-addressed blob store on the filesystem.

Every model request and response the gateway sees is kept as an immutable blob named by
its SHA-256, so the ledger and the run record can point at exact bytes and a reader can
check them. Writes go to a temporary file in the target directory, are fsynced and then
renamed into place: a crash leaves either the whole blob or nothing, never half of one.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from continue_orchestrator import digest, errors


def digest_of(data: bytes) -> str:
    """The store's name for ``data``: its ``sha256:<hex>`` text (``digest.text``)."""
    return digest.text(data)


def _named(name: str) -> digest.Digest | None:
    """The digest a blob's name stands for, or None unless ``name`` is exactly the
    ``sha256:<hex>`` text the store writes (no bare hex, no spaces, no other case)."""
    try:
        parsed = digest.Digest.parse(name)
    except errors.OrchestratorError:
        return None
    return parsed if str(parsed) == name else None


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

    def path(self, name: str) -> Path:
        named = _named(name)
        if named is None:
            raise errors.RecordError(
                f"not a blob digest: {name!r}",
                where=str(self.root),
                fix='digests look like "sha256:" followed by 64 lowercase hex digits',
            )
        return self.root / "sha256" / named.hex[:2] / named.hex[2:]

    def put(self, data: bytes) -> str:
        """Store ``data`` (idempotent) and return its digest."""
        name = digest_of(data)
        target = self.path(name)
        if target.exists():
            return name
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
                f"cannot write blob {name}: {error.strerror}",
                where=str(target),
                fix="check free space and permissions of the record store",
            ) from error
        return name

    def get(self, name: str) -> bytes:
        """The bytes named ``name``; raises if missing or if they no longer match it."""
        target = self.path(name)
        try:
            data = target.read_bytes()
        except FileNotFoundError as error:
            raise errors.RecordError(
                f"blob {name} is not in the store",
                where=str(self.root),
                fix="the record was written to another store, or the blob was deleted",
            ) from error
        if digest_of(data) != name:
            raise errors.RecordError(
                f"blob {name} was altered: its bytes hash to {digest_of(data)}",
                where=str(target),
                fix="restore the store from a trusted copy; do not trust this run's record",
            )
        return data

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and _named(name) is not None and self.path(name).exists()
