"""The ledger: append, tombstone, read, checkpoint and prove, over either backend.

There is no update and no delete here by design. Chaining happens under the backend's
write lock (one transaction reads the head and inserts after it); canonicalising and
hashing payloads happens before, outside the lock, so concurrent writers mostly wait on
the disk, not on each other's JSON.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterable, Iterator, Sequence
from types import TracebackType
from typing import Any

from continue_orchestrator import errors
from continue_orchestrator.ledger import _backend, _canonical, _checkpoint, _entry, _merkle

_PAGE = 2048


@dataclasses.dataclass(frozen=True, slots=True)
class InclusionProof:
    """Proof that ``entry`` is leaf ``entry.sequence`` of the tree of ``tree_size`` entries."""

    entry: _entry.Entry
    tree_size: int
    root_hash: str
    audit_path: tuple[str, ...]
    checkpoint: _checkpoint.Checkpoint | None

    def verify(self, public_key: _checkpoint.PublicKey | None = None) -> None:
        """Raise ``LedgerIntegrityError`` unless the proof holds (and is signed, given a key)."""
        entry = self.entry
        where = f"inclusion proof for entry {entry.sequence}"

        def fail(what: str) -> errors.LedgerIntegrityError:
            return errors.LedgerIntegrityError(
                what, sequence=entry.sequence, where=where, fix="do not trust this entry"
            )

        if entry.computed_hash() != entry.entry_hash:
            raise fail("the entry's fields do not hash to its entry_hash")
        if entry.payload_json is not None:
            data = entry.payload_json.encode("utf-8", "surrogatepass")
            if _entry.payload_digest(data) != entry.payload_digest:
                raise fail("the payload does not match its payload_digest")
        try:
            path = [bytes.fromhex(node) for node in self.audit_path]
            root = bytes.fromhex(self.root_hash)
            leaf = bytes.fromhex(entry.entry_hash)
        except ValueError:
            raise fail("a hash in the proof is not hex") from None
        if not _merkle.verify_inclusion(leaf, entry.sequence, self.tree_size, path, root):
            raise fail(f"the audit path does not lead to root {self.root_hash}")
        checkpoint = self.checkpoint
        if checkpoint is not None and (
            checkpoint.size != self.tree_size or checkpoint.root_hash != self.root_hash
        ):
            raise fail("the checkpoint is for a different tree than the proof")
        if public_key is not None:
            if checkpoint is None:
                raise fail("the proof has no signed checkpoint to check the key against")
            if not checkpoint.verify(public_key):
                raise fail(
                    f"the checkpoint at size {checkpoint.size} is not signed by the given key"
                )

    def to_json(self) -> dict[str, Any]:
        return {
            "type": "continue-orchestrator.dev/ledger-inclusion-proof/v1",
            "entry": self.entry.to_json(),
            "leaf_index": self.entry.sequence,
            "tree_size": self.tree_size,
            "root_hash": self.root_hash,
            "audit_path": list(self.audit_path),
            "checkpoint": self.checkpoint.to_json() if self.checkpoint else None,
        }

    @classmethod
    def from_json(cls, data: Any, *, where: str = "inclusion proof") -> InclusionProof:
        with _canonical.reading(
            "is not an inclusion proof",
            where=where,
            fix="pass the JSON written by 'orchestrator ledger prove'",
        ):
            checkpoint = data.get("checkpoint")
            return cls(
                entry=_entry.Entry.from_json(data["entry"], where=where),
                tree_size=int(data["tree_size"]),
                root_hash=str(data["root_hash"]),
                audit_path=tuple(str(node) for node in data["audit_path"]),
                checkpoint=(
                    None
                    if checkpoint is None
                    else _checkpoint.Checkpoint.from_json(checkpoint, where=where)
                ),
            )


def row_to_entry(row: _backend.Row) -> _entry.Entry:
    sequence, run_uid, time, kind, actor, digest, prev_hash, entry_hash, payload = row
    return _entry.Entry(
        sequence,
        run_uid,
        time,
        _entry.parse_kind(kind, where=f"ledger entry {sequence}"),
        actor,
        payload,
        digest,
        prev_hash,
        entry_hash,
    )


class Ledger:
    """An open ledger. Use ``ledger.open(url)``; safe to share between threads."""

    def __init__(
        self,
        backend: _backend.Backend,
        *,
        signer: _checkpoint.CheckpointSigner | None = None,
        checkpoint_every: int = 0,
    ) -> None:
        if checkpoint_every < 0:
            raise errors.LedgerError(
                f"checkpoint_every is {checkpoint_every}",
                where="ledger.open",
                fix="pass 0 (only explicit checkpoints) or a positive number of entries",
            )
        self._backend = backend
        self._signer = signer
        self._checkpoint_every = checkpoint_every
        with backend.session(write=False) as session:
            self._origin = session.origin()

    @property
    def url(self) -> str:
        return self._backend.url

    @property
    def origin(self) -> str:
        """The ledger's identity (``urn:uuid:…``), bound into every checkpoint it signs."""
        return self._origin

    def __enter__(self) -> Ledger:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self._backend.close()

    def __len__(self) -> int:
        with self._backend.session(write=False) as session:
            return session.head()[0]

    def append(
        self, run_uid: str, kind: _entry.Kind | str, actor: str, payload: dict[str, Any]
    ) -> _entry.Entry:
        """Append one entry and return it as stored."""
        return self.commit([_entry.prepare(_entry.Append(run_uid, kind, actor, payload))])[0]

    def append_many(
        self, items: Iterable[_entry.Append | tuple[str, _entry.Kind | str, str, dict[str, Any]]]
    ) -> list[_entry.Entry]:
        """Append several entries in one transaction: all of them or, on error, none."""
        prepared = [
            _entry.prepare(_entry.Append(*item), where=f"ledger append_many item {index}")
            for index, item in enumerate(items)
        ]
        return self.commit(prepared)

    def commit(self, prepared: Sequence[_entry.Prepared]) -> list[_entry.Entry]:
        """Chain and store already prepared entries (see ``ledger.prepare``)."""
        if not prepared:
            return []
        with self._backend.session(write=True) as session:
            size, prev_hash = session.head()
            time = _entry.now()
            rows: list[_entry.EntryRow] = []
            payloads: list[tuple[int, str]] = []
            for offset, item in enumerate(prepared):
                row = _entry.chained(size + offset, item, time, prev_hash)
                rows.append(row)
                payloads.append((row[0], item.payload.decode("utf-8")))
                prev_hash = row[-1]
            session.insert(rows, payloads)
        self._after_append(size, size + len(rows))
        return [
            row_to_entry((*row, payload)) for row, (_, payload) in zip(rows, payloads, strict=True)
        ]

    def _after_append(self, old_size: int, new_size: int) -> None:
        every = self._checkpoint_every
        if every and new_size // every > old_size // every:
            self.checkpoint()

    def tombstone(
        self,
        *,
        reason: str,
        actor: str,
        run_uid: str | None = None,
        sequence: int | None = None,
    ) -> _entry.Entry:
        """Redact one entry's payload (``sequence``) or every payload of a run (``run_uid``).

        Appends a tombstone entry naming what it redacts and deletes those payload bytes in
        the same transaction. The redacted entries stay, digest included, so the chain
        still verifies; reads return them with ``payload=None``.
        """
        where = "ledger tombstone"
        if (run_uid is None) == (sequence is None):
            raise errors.LedgerError(
                "name exactly one of run_uid= or sequence=",
                where=where,
                fix="tombstone(run_uid=...) deletes a run; tombstone(sequence=...) redacts one",
            )
        if not isinstance(reason, str) or not reason.strip():
            raise errors.LedgerError(
                "a tombstone needs a reason",
                where=where,
                fix="say why, e.g. 'leaked secret in tool output' or 'erasure request #123'",
            )
        with self._backend.session(write=True) as session:
            size, prev_hash = session.head()
            targets = session.targets(run_uid=run_uid, sequence=sequence)
            if not targets:
                what = (
                    f"run {run_uid!r} has no entries"
                    if sequence is None
                    else (f"entry {sequence} does not exist (the ledger has {size} entries)")
                )
                raise errors.LedgerError(what, where=where, fix="check the run UID or sequence")
            if sequence is not None:
                _, target_run, kind, stored = targets[0]
                if kind == _entry.Kind.TOMBSTONE:
                    raise errors.LedgerError(
                        f"entry {sequence} is a tombstone; tombstones cannot be redacted",
                        where=where,
                        fix="redact the entries it names instead",
                    )
                if not stored:
                    raise errors.LedgerError(
                        f"entry {sequence} is already redacted",
                        where=where,
                        fix="nothing to do",
                    )
                target: dict[str, Any] = {"sequence": sequence}
            else:
                assert run_uid is not None
                target_run, target = run_uid, {"run_uid": run_uid}
            redacted = [
                seq for seq, _, kind, stored in targets if stored and kind != _entry.Kind.TOMBSTONE
            ]
            prepared = _entry.prepare(
                _entry.Append(
                    target_run,
                    _entry.Kind.TOMBSTONE,
                    actor,
                    {"target": target, "reason": reason, "redacted": redacted},
                ),
                where=where,
                tombstone=True,
            )
            row = _entry.chained(size, prepared, _entry.now(), prev_hash)
            payload = prepared.payload.decode("utf-8")
            session.insert([row], [(size, payload)])
            session.redact(redacted, size)
        self._after_append(size, size + 1)
        return row_to_entry((*row, payload))

    def entries(
        self, *, run_uid: str | None = None, start: int = 0, stop: int | None = None
    ) -> Iterator[_entry.Entry]:
        """Entries with ``start <= sequence < stop`` (of one run, if given), in order.

        Reads page by page, each page its own short transaction, so iterating never holds
        up writers; entries are immutable, so pages cannot disagree.
        """
        while stop is None or start < stop:
            with self._backend.session(write=False) as session:
                page = list(session.rows(start=start, stop=stop, run_uid=run_uid, limit=_PAGE))
            for row in page:
                yield row_to_entry(row)
            if len(page) < _PAGE:
                return
            start = page[-1][0] + 1

    def entry(self, sequence: int) -> _entry.Entry:
        for found in self.entries(start=sequence, stop=sequence + 1):
            return found
        raise errors.LedgerError(
            f"entry {sequence} does not exist",
            where=self._backend.url,
            fix="list entries with 'orchestrator ledger show'",
        )

    def checkpoints(self) -> list[_checkpoint.Checkpoint]:
        with self._backend.session(write=False) as session:
            return [checkpoint for checkpoint, _ in session.checkpoints()]

    def checkpoint(
        self, signer: _checkpoint.CheckpointSigner | None = None
    ) -> _checkpoint.Checkpoint:
        """Record (and sign, with ``signer`` or the ledger's signer) the current tree head.

        Several keys may sign the same tree head (cosigning); asking again with the same key
        and no new entries returns the stored checkpoint.
        """
        signer = signer or self._signer
        key = signer.key_id if signer is not None else ""
        with self._backend.session(write=True) as session:
            size, _ = session.head()
            stored_checkpoints = session.checkpoints()
            for stored, _roots in stored_checkpoints:
                if stored.size == size and stored.key_id == key:
                    return stored
            frontier = _merkle.Frontier()
            for stored, roots in reversed(stored_checkpoints):
                resumed = _frontier(stored, roots)
                if resumed is not None and stored.size <= size:
                    frontier = resumed
                    break
            for entry_hash in session.hashes(frontier.size, size):
                frontier.append(bytes.fromhex(entry_hash))
            checkpoint = _checkpoint.Checkpoint(
                origin=self._origin,
                size=size,
                root_hash=frontier.root().hex(),
                time=_entry.now(),
            )
            if signer is not None:
                checkpoint = checkpoint.signed_by(signer)
            session.insert_checkpoint(checkpoint, "".join(r.hex() for r in frontier.roots))
        return checkpoint

    def prove(
        self, sequence: int, *, checkpoint: _checkpoint.Checkpoint | None = None
    ) -> InclusionProof:
        """Inclusion proof of entry ``sequence`` against ``checkpoint``, by default the latest
        stored checkpoint that covers it (or, if none does, the current unsigned tree)."""
        with self._backend.session(write=False) as session:
            size, _ = session.head()
            if not 0 <= sequence < size:
                raise errors.LedgerError(
                    f"entry {sequence} does not exist (the ledger has {size} entries)",
                    where=self._backend.url,
                    fix="prove an existing sequence number",
                )
            if checkpoint is None:
                covering = [c for c, _ in session.checkpoints() if c.size > sequence]
                checkpoint = covering[-1] if covering else None
            elif checkpoint.size <= sequence or checkpoint.size > size:
                raise errors.LedgerError(
                    f"checkpoint at size {checkpoint.size} cannot include entry {sequence} "
                    f"of a ledger with {size} entries",
                    where=self._backend.url,
                    fix="pass a later checkpoint",
                )
            tree_size = checkpoint.size if checkpoint else size
            leaves = [bytes.fromhex(h) for h in session.hashes(0, tree_size)]
            rows = list(session.rows(start=sequence, stop=sequence + 1, run_uid=None, limit=1))
        root = _merkle.root(leaves).hex()
        if len(leaves) != tree_size or not rows or (checkpoint and checkpoint.root_hash != root):
            raise errors.LedgerIntegrityError(
                f"the stored entries do not match the checkpoint at size {tree_size}",
                sequence=sequence,
                where=self._backend.url,
                fix="run 'orchestrator ledger verify' to find the first altered entry",
            )
        return InclusionProof(
            entry=row_to_entry(rows[0]),
            tree_size=tree_size,
            root_hash=root,
            audit_path=tuple(node.hex() for node in _merkle.inclusion_path(sequence, leaves)),
            checkpoint=checkpoint,
        )

    def _session(self) -> contextlib.AbstractContextManager[_backend.Session]:
        return self._backend.session(write=False)


def _frontier(checkpoint: _checkpoint.Checkpoint, roots: str) -> _merkle.Frontier | None:
    """The stored frontier, if it really yields the checkpoint's root."""
    try:
        nodes = [bytes.fromhex(roots[i : i + 64]) for i in range(0, len(roots), 64)]
        frontier = _merkle.Frontier(checkpoint.size, nodes)
    except ValueError:
        return None
    return frontier if frontier.root().hex() == checkpoint.root_hash else None
