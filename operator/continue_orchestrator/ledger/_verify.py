"""Verification: recompute everything and say where the ledger stops being trustworthy.

One streaming pass checks, for every entry: its sequence is the next one, its fields hash
to its entry hash, it links to the entry before, its payload matches its digest (or a
tombstone redacted it); then that every checkpoint's root matches the tree of that size,
is signed by the given key, and that no checkpoint covers entries that are gone. It reads
a live ledger (in one snapshot) or a JSONL export, and never trusts stored derived data.

A SQLite ledger is first scanned by the native core (``_native``, Rust), which does that
per-entry pass several times faster and answers only "clean, with these roots" or "not
clean"; the report is then built here from its snapshot. Anything else (not clean, a
checkpoint that does not hold, no native core) goes through ``check``, the one place that
says what is wrong.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import sqlite3
import sys
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from continue_orchestrator import errors
from continue_orchestrator.ledger import (
    _backend,
    _checkpoint,
    _entry,
    _export,
    _ledger,
    _merkle,
    _open,
    _sqlite,
)

_MAX_PROBLEMS = 1000
_KINDS = frozenset(kind.value for kind in _entry.Kind)
_TOMBSTONE = _entry.Kind.TOMBSTONE.value
_ZERO = bytes(32)


@dataclasses.dataclass(frozen=True, slots=True)
class Problem:
    sequence: int
    what: str


@dataclasses.dataclass(frozen=True, slots=True)
class VerifyReport:
    """What verification checked and found; ``ok`` when ``problems`` is empty."""

    source: str
    origin: str
    size: int
    root_hash: str
    checkpoints: int
    signatures_verified: int
    redacted: int
    problems: tuple[Problem, ...]
    warnings: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def first_bad_sequence(self) -> int | None:
        return self.problems[0].sequence if self.problems else None

    def error(self) -> errors.LedgerIntegrityError | None:
        if not self.problems:
            return None
        first = self.problems[0]
        more = f" ({len(self.problems) - 1} more problems)" if len(self.problems) > 1 else ""
        return errors.LedgerIntegrityError(
            f"entry {first.sequence}: {first.what}{more}",
            sequence=first.sequence,
            where=self.source,
            fix="treat this entry and everything after it as untrusted; compare with an "
            "export or checkpoint kept elsewhere",
        )

    def raise_for_problems(self) -> None:
        error = self.error()
        if error is not None:
            raise error

    def to_json(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "ok": self.ok,
            "origin": self.origin,
            "size": self.size,
            "root_hash": self.root_hash,
            "checkpoints": self.checkpoints,
            "signatures_verified": self.signatures_verified,
            "redacted": self.redacted,
            "first_bad_sequence": self.first_bad_sequence,
            "problems": [{"sequence": p.sequence, "what": p.what} for p in self.problems],
            "warnings": list(self.warnings),
        }


def verify(
    source: _ledger.Ledger | str | os.PathLike[str],
    *,
    public_key: _checkpoint.PublicKey | None = None,
    trusted_checkpoint: _checkpoint.Checkpoint | None = None,
    native: bool = True,
) -> VerifyReport:
    """Verify a ledger, a ledger URL or a JSONL export file.

    ``public_key``: every checkpoint must be signed by it. ``trusted_checkpoint``: a
    checkpoint kept outside the ledger; the only defence against an attacker who truncates
    the ledger and deletes its stored checkpoints too. ``native=False``: verify a SQLite
    ledger in Python only (slower); the report is the same either way.
    """
    if isinstance(source, _ledger.Ledger):
        return _verify_ledger(source, public_key, trusted_checkpoint, native)
    text = os.fspath(source)
    if "://" in text:
        with _open.open(text, create=False) as opened:
            return _verify_ledger(opened, public_key, trusted_checkpoint, native)
    with _export.read(text) as material:
        return check(
            text,
            material.origin,
            material.checkpoints,
            material.rows,
            public_key=public_key,
            trusted_checkpoint=trusted_checkpoint,
            expected_size=material.size,
        )


def _verify_ledger(
    ledger: _ledger.Ledger,
    public_key: _checkpoint.PublicKey | None,
    trusted_checkpoint: _checkpoint.Checkpoint | None,
    native: bool,
) -> VerifyReport:
    source = _backend.redacted_url(ledger.url)
    backend = ledger._backend
    if native and isinstance(backend, _sqlite.SQLiteBackend):
        backend.ensure_open()  # the core opens the file itself; a closed ledger stays closed
        report = _verify_clean_sqlite(backend.path, source, public_key, trusted_checkpoint)
        if report is not None:
            return report
    with ledger._session() as session:
        return check(
            source,
            session.origin(),
            [checkpoint for checkpoint, _ in session.checkpoints()],
            session.rows(start=0, stop=None, run_uid=None, limit=None),
            public_key=public_key,
            trusted_checkpoint=trusted_checkpoint,
        )


def _verify_clean_sqlite(
    path: os.PathLike[str],
    source: str,
    public_key: _checkpoint.PublicKey | None,
    trusted_checkpoint: _checkpoint.Checkpoint | None,
) -> VerifyReport | None:
    """The report on a SQLite ledger that the native core finds clean, all from the one
    snapshot it read (checkpoints included); None when it is not clean, when a checkpoint
    does not hold, or when the core is not installed: then ``check`` must say why."""
    try:
        from continue_orchestrator.ledger import _native
    except ImportError:  # installed without Rust: the extension is optional
        return None
    scanned = _native.scan_sqlite(
        # The SQLite library that sqlite3 loaded (its module's file; None: built into the
        # interpreter): two copies of SQLite in one process break each other's file locks.
        getattr(sys.modules[sqlite3.connect.__module__], "__file__", None),
        os.fspath(path),
        sorted(_KINDS),
        _TOMBSTONE,
        [trusted_checkpoint.size] if trusted_checkpoint is not None else [],
    )
    if isinstance(scanned, str):
        return None  # why the core gave up; check() will say it properly
    origin, rows, size, root_hash, roots, missing, tombstones = scanned
    found = _Pass(
        source,
        origin,
        [_checkpoint.Checkpoint(*row) for row in rows],
        public_key,
        trusted_checkpoint,
    )
    found.missing.extend(missing)
    for sequence, payload in tombstones:
        _note_redactions(sequence, payload, found.redacted_by, found.problems.add)
    found.root_mismatches.extend(
        (found.first_new[index], checkpoint.size)
        for index, checkpoint in enumerate(found.stored)
        if roots.get(checkpoint.size) != checkpoint.root_hash
    )
    report = found.report(size, root_hash)
    return report if report.ok else None


def check(
    source: str,
    origin: str,
    checkpoints: Iterable[_checkpoint.Checkpoint],
    rows: Iterator[_backend.Row],
    *,
    public_key: _checkpoint.PublicKey | None = None,
    trusted_checkpoint: _checkpoint.Checkpoint | None = None,
    expected_size: int | None = None,
) -> VerifyReport:
    """Verify raw rows in sequence order against ``checkpoints`` (the core of ``verify``)."""
    found = _Pass(source, origin, checkpoints, public_key, trusted_checkpoint)
    bad = found.problems.add
    first_new = found.first_new
    missing = found.missing
    redacted_by = found.redacted_by
    root_mismatches = found.root_mismatches
    sha256 = hashlib.sha256
    kinds = _KINDS
    # The Merkle frontier, inlined: this loop is the ledger's hottest code.
    merkle_roots: list[bytes] = []
    merkle_size = 0
    pending = [(i, c) for i, c in enumerate(found.stored)]
    pending.reverse()
    expected = 0
    previous_hash = _entry.GENESIS_HASH
    broken = False

    def check_roots() -> int:
        """Compare every checkpoint of the current size; return the next size to stop at."""
        root = _merkle.Frontier(merkle_size, merkle_roots).root().hex()
        while pending and pending[-1][1].size == merkle_size:
            index, checkpoint = pending.pop()
            if not broken and checkpoint.root_hash != root:
                root_mismatches.append((first_new[index], checkpoint.size))
        return pending[-1][1].size if pending else -1

    next_checkpoint = check_roots()
    for row in rows:
        sequence, run_uid, time, kind, actor, digest, prev_hash, entry_hash, payload = row
        # No escaping: honest fields never need any (writes refuse quotes, backslashes and
        # control characters), and a field that would need it cannot reproduce an honest
        # header's bytes, since those hold a fixed number of quotes and no such characters.
        # (The native core, operator/native/src/scan.rs, hashes the same bytes.)
        try:
            leaf = sha256(
                f'\x00{{"actor":"{actor}","kind":"{kind}","payload_digest":"{digest}",'
                f'"prev_hash":"{prev_hash}","run_uid":"{run_uid}","sequence":{sequence:d},'
                f'"time":"{time}","v":1}}'.encode()
            ).digest()
        except (UnicodeEncodeError, TypeError, ValueError):
            leaf = b""
        intact = leaf.hex() == entry_hash
        if not intact:
            bad(sequence, "its fields do not hash to its entry_hash (edited?)")
        if sequence != expected:
            if sequence > expected:
                gap = f"{expected}" if sequence == expected + 1 else f"{expected}..{sequence - 1}"
                bad(expected, f"entry {gap} is missing (deleted?)")
            else:
                bad(sequence, "entry is out of order or duplicated")
            broken = True
            pending.clear()
            expected = sequence
        elif prev_hash != previous_hash:
            if not sequence:
                bad(sequence, "the first entry does not start from the genesis hash")
            elif intact:
                # This entry is as written, so the one before it changed since.
                bad(sequence - 1, f"entry {sequence} does not link to this entry (rewritten?)")
            else:
                bad(sequence, "it does not link to the entry before it (moved or replaced?)")
        if kind not in kinds:
            bad(sequence, f"unknown kind {kind!r}")
        if payload is None:
            missing.append(sequence)
        elif sha256(payload.encode("utf-8", "surrogatepass")).hexdigest() != digest:
            bad(sequence, "its payload does not match its payload_digest (edited?)")
        elif kind == _TOMBSTONE:
            _note_redactions(sequence, payload, redacted_by, bad)
        if not broken:
            node = leaf or _ZERO
            carry = merkle_size
            while carry & 1:
                node = sha256(b"\x01" + merkle_roots.pop() + node).digest()
                carry >>= 1
            merkle_roots.append(node)
            merkle_size += 1
            if merkle_size == next_checkpoint:
                next_checkpoint = check_roots()
        previous_hash = entry_hash
        expected = sequence + 1
    return found.report(
        expected,
        _merkle.Frontier(merkle_size, merkle_roots).root().hex() if not broken else "",
        expected_size=expected_size,
    )


class _Problems:
    """Problems in the order they were found, at most ``_MAX_PROBLEMS`` of them."""

    __slots__ = ("items",)

    def __init__(self) -> None:
        self.items: list[Problem] = []

    def add(self, sequence: int, what: str) -> None:
        if len(self.items) < _MAX_PROBLEMS:
            self.items.append(Problem(sequence, what))


def _check_checkpoints(
    origin: str,
    checkpoints: Iterable[_checkpoint.Checkpoint],
    public_key: _checkpoint.PublicKey | None,
    trusted_checkpoint: _checkpoint.Checkpoint | None,
    bad: Callable[[int, str], None],
) -> tuple[list[_checkpoint.Checkpoint], dict[int, int], int]:
    """Check origins and signatures; return the checkpoints by size, the first sequence
    each one vouches for beyond the next smaller one (by index), and the signature count."""
    stored = sorted(checkpoints, key=lambda c: c.size)
    if trusted_checkpoint is not None:
        stored.append(trusted_checkpoint)
        stored.sort(key=lambda c: c.size)
    signatures = 0
    sizes = sorted({checkpoint.size for checkpoint in stored})
    range_start = dict(zip(sizes, [0, *sizes], strict=False))
    first_new = {index: range_start[c.size] for index, c in enumerate(stored)}
    wanted = _checkpoint.key_id(public_key) if public_key is not None else None
    for index, checkpoint in enumerate(stored):
        label = f"checkpoint at size {checkpoint.size}"
        if checkpoint.origin != origin:
            bad(first_new[index], f"{label} is for ledger {checkpoint.origin}, not {origin}")
        if public_key is not None and checkpoint.key_id == wanted:
            if checkpoint.verify(public_key):
                signatures += 1
            else:
                bad(first_new[index], f"{label} claims the given key but its signature fails")
    if public_key is not None and not signatures:
        bad(0, "no checkpoint is signed by the given key (removed, or never signed with it?)")
    return stored, first_new, signatures


class _Pass:
    """One verification pass: the checkpoints checked up front, what the pass over the
    entries finds (problems, payloads gone, redactions, checkpoint roots that do not
    match), and the report they make."""

    def __init__(
        self,
        source: str,
        origin: str,
        checkpoints: Iterable[_checkpoint.Checkpoint],
        public_key: _checkpoint.PublicKey | None,
        trusted_checkpoint: _checkpoint.Checkpoint | None,
    ) -> None:
        self.source = source
        self.origin = origin
        self.public_key = public_key
        self.problems = _Problems()
        self.missing: list[int] = []
        """Sequences whose payload is gone."""
        self.redacted_by: dict[int, int] = {}
        """Sequence -> the first tombstone that redacted it."""
        self.root_mismatches: list[tuple[int, int]] = []
        """(first sequence a checkpoint vouches for, its size), for each whose root differs."""
        self.stored, self.first_new, self.signatures = _check_checkpoints(
            origin, checkpoints, public_key, trusted_checkpoint, self.problems.add
        )
        """The checkpoints by size, the first sequence each one vouches for beyond the
        next smaller one (by index), and how many signatures verified."""

    def report(
        self, size: int, root_hash: str, *, expected_size: int | None = None
    ) -> VerifyReport:
        """The checks after the pass over the entries, and the report."""
        bad = self.problems.add
        found = self.problems.items
        stored = self.stored
        warnings: list[str] = []
        if expected_size is not None and expected_size != size:
            bad(
                min(size, expected_size),
                f"the export's header says {expected_size} entries but it holds {size} "
                "(cut short?)",
            )
        for checkpoint in stored:
            if checkpoint.size > size:
                gap = f"{size}" if checkpoint.size == size + 1 else f"{size}..{checkpoint.size - 1}"
                bad(
                    size,
                    f"the checkpoint at size {checkpoint.size} covers entries {gap}, which are "
                    "gone (truncated?)",
                )
                break
        for low, high in self.root_mismatches:
            # Reported only when no entry in the range explains it, at the range's start: the
            # chain was rewritten consistently, so only the signed root can tell.
            if not any(low <= problem.sequence < high for problem in found):
                bad(
                    low,
                    f"entries {low}..{high - 1} do not hash to the root of the checkpoint at "
                    f"size {high} (rewritten, or the checkpoint forged?)",
                )
        count = 0
        for sequence in self.missing:
            if sequence in self.redacted_by:
                count += 1
            else:
                bad(sequence, "its payload is gone but no tombstone redacted it (deleted?)")
        if not stored:
            warnings.append(
                "no checkpoints: removal of the newest entries cannot be detected; keep a "
                "signed checkpoint outside the ledger and pass it"
            )
        elif self.public_key is None:
            warnings.append("checkpoint signatures were not checked: pass the public key")
        found.sort(key=lambda problem: problem.sequence)
        return VerifyReport(
            source=self.source,
            origin=self.origin,
            size=size,
            root_hash=root_hash,
            checkpoints=len(stored),
            signatures_verified=self.signatures,
            redacted=count,
            problems=tuple(found),
            warnings=tuple(warnings),
        )


def _note_redactions(sequence: int, payload: str, redacted_by: dict[int, int], bad: Any) -> None:
    try:
        listed = json.loads(payload)["redacted"]
        targets = [int(target) for target in listed if type(target) is int]
    except (ValueError, KeyError, TypeError):
        bad(sequence, "tombstone payload does not list what it redacted")
        return
    for target in targets:
        if 0 <= target < sequence:
            redacted_by.setdefault(target, sequence)
