"""One digest value: its algorithm, its hex, and its ``sha256:…`` text form.

Digests travel as text (``sha256:<64 hex>``) in the ledger, statuses, annotations and
bundles, and as bare hex in in-toto statements. Building and parsing that text by hand
in each place let the copies drift (one stripped any prefix, another rejected anything
but 64 hex digits), so every digest the project computes or reads is a ``Digest``
(in the spirit of sigstore-python's ``hashes.Hashed``): ``Digest.of(data)`` computes one,
``Digest.parse(text)`` reads one and names what is wrong with a bad one, ``str(d)`` is
the text form and ``d.hex`` the bare form.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from typing import Literal

from continue_orchestrator import errors

Algorithm = Literal["sha256"]
SHA256: Algorithm = "sha256"
_HEX = re.compile(r"[0-9a-f]{64}")


@dataclasses.dataclass(frozen=True, slots=True)
class Digest:
    """A SHA-256 digest. ``str()`` is ``sha256:<hex>``; equal digests compare equal."""

    hex: str
    algorithm: Algorithm = SHA256

    def __post_init__(self) -> None:
        if self.algorithm != SHA256 or not _HEX.fullmatch(self.hex):
            raise errors.OrchestratorError(
                f"{self.algorithm}:{self.hex[:80]!s} is not a SHA-256 digest",
                where="digest",
                fix="expected sha256: and 64 lowercase hex digits",
            )

    @classmethod
    def of(cls, data: bytes | bytearray | memoryview | str) -> Digest:
        """The SHA-256 of ``data`` (text is digested as UTF-8)."""
        if isinstance(data, str):
            data = data.encode("utf-8")
        return cls(hashlib.sha256(data).hexdigest())

    @classmethod
    def from_hash(cls, hashed: hashlib._Hash) -> Digest:
        """The digest a running ``hashlib.sha256()`` has reached."""
        if hashed.name != SHA256:
            raise errors.OrchestratorError(
                f"a {hashed.name} hash is not a SHA-256 digest", where="digest"
            )
        return cls(hashed.hexdigest())

    @classmethod
    def parse(cls, text: str, *, where: str = "digest") -> Digest:
        """``sha256:<hex>`` (or bare 64-digit hex) as a Digest; anything else raises
        ``errors.OrchestratorError`` naming ``where``."""
        value = text.strip() if isinstance(text, str) else ""
        hexpart = value.removeprefix(f"{SHA256}:")
        if not _HEX.fullmatch(hexpart):
            raise errors.OrchestratorError(
                f"{value[:80]!r} is not a SHA-256 digest",
                where=where,
                fix="expected sha256: followed by 64 lowercase hex digits",
            )
        return cls(hexpart)

    @classmethod
    def parse_optional(cls, text: object, *, where: str = "digest") -> Digest | None:
        """Like ``parse``, but None or an empty string (nothing measured) is None."""
        if text is None or text == "":
            return None
        if not isinstance(text, str):
            raise errors.OrchestratorError(
                f"{text!r} is not a SHA-256 digest", where=where, fix="expected a string"
            )
        return cls.parse(text, where=where)

    def __str__(self) -> str:
        return f"{self.algorithm}:{self.hex}"


def of(data: bytes | bytearray | memoryview | str) -> Digest:
    """``Digest.of``: the SHA-256 of ``data``."""
    return Digest.of(data)


def text(data: bytes | bytearray | memoryview | str) -> str:
    """``sha256:<hex>`` of ``data``: the text form most records store."""
    return str(Digest.of(data))


def hex_of(text_or_none: object, *, where: str = "digest") -> str | None:
    """The bare hex of a recorded ``sha256:…`` text, or None if nothing was recorded."""
    found = Digest.parse_optional(text_or_none, where=where)
    return found.hex if found is not None else None
