"""The run record: the ordered exchanges of one run, each pointing at blobs.

A run's record is what replay (and a reviewer) reads: step by step, what the agent
asked, what went upstream, what came back, what the policy decided and what the agent
was handed. Each exchange is one JSON line appended (and fsynced) to
``runs/RUN/record.jsonl`` beside the blob store; sealing the record stores its manifest,
the canonical JSON (RFC 8785) of all exchanges, as a blob whose digest names the whole
run. Requests carry a normalised hash so replay can match them although the agent's
system prompt holds the working directory and today's date.
"""

from __future__ import annotations

import json
import os
import re
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import rfc8785

from continue_orchestrator import errors, ledger
from continue_orchestrator.records import _blobs

_RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,252}")
# Fields that change between identical turns and do not affect what the model answers.
_VOLATILE_FIELDS = frozenset({"stream", "stream_options", "user", "metadata"})
# Means \b\d{4}-\d{2}-\d{2}\b; starting with \d (its boundary checked by the lookbehind)
# lets the regex engine skip ahead to digits, 3-4x faster on a long request.
_DATE = re.compile(r"\d(?<!\w\d)\d{3}-\d{2}-\d{2}\b")


def normalised_request_hash(
    body: Mapping[str, Any], *, replacements: Mapping[str, str] | None = None
) -> str:
    """A digest of a chat request that ignores transport options, paths and dates.

    ``replacements`` maps run-specific strings (the workspace path) to stable
    placeholders; ISO dates become ``<DATE>``.
    """
    kept = {key: value for key, value in body.items() if key not in _VOLATILE_FIELDS}
    # ledger.canonical: RFC 8785 bytes, ~20x faster than rfc8785 for plain JSON (a 56 KB
    # request: 20 ms -> 1 ms), which the gateway computes for every model call.
    text = ledger.canonical(kept, where="chat request").decode()
    for original, placeholder in sorted(
        (replacements or {}).items(), key=lambda item: -len(item[0])
    ):
        if original:
            text = text.replace(original, placeholder)
    text = _DATE.sub("<DATE>", text)
    return _blobs.digest_of(text.encode())


@dataclass(frozen=True)
class Exchange:
    """One step of a run: blobs by role, plus small facts (decisions, tool calls)."""

    step: int
    kind: str
    blobs: Mapping[str, str] = field(default_factory=dict)
    request_hash: str | None = None
    facts: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "kind": self.kind,
            "blobs": dict(self.blobs),
            "requestHash": self.request_hash,
            "facts": dict(self.facts),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Exchange:
        return cls(
            step=int(data["step"]),
            kind=str(data["kind"]),
            blobs=dict(data.get("blobs") or {}),
            request_hash=data.get("requestHash"),
            facts=dict(data.get("facts") or {}),
        )


class RunRecord:
    """Append-only record of one run in a :class:`BlobStore`'s ``runs/`` directory."""

    def __init__(self, store: _blobs.BlobStore, run: str) -> None:
        if not _RUN_ID.fullmatch(run):
            raise errors.RecordError(
                f"run id {run!r} cannot name a record",
                where=str(store.root),
                fix="use the run's uid: letters, digits, '.', '_' or '-'",
            )
        self.store = store
        self.run = run
        self.directory = store.root / "runs" / run
        self.directory.mkdir(parents=True, exist_ok=True)
        self._path = self.directory / "record.jsonl"
        self._lock = threading.Lock()
        self._exchanges = list(_read(self._path))

    @property
    def exchanges(self) -> tuple[Exchange, ...]:
        return tuple(self._exchanges)

    def append(
        self,
        kind: str,
        *,
        blobs: Mapping[str, str] | None = None,
        request_hash: str | None = None,
        facts: Mapping[str, Any] | None = None,
    ) -> Exchange:
        """Add the next step; its line is on disk before this returns."""
        for role, digest in (blobs or {}).items():
            if digest not in self.store:
                raise errors.RecordError(
                    f"exchange blob {role!r} ({digest}) is not in the store",
                    where=str(self._path),
                    fix="put the blob before recording the exchange",
                )
        with self._lock:
            exchange = Exchange(
                step=len(self._exchanges) + 1,
                kind=kind,
                blobs=dict(blobs or {}),
                request_hash=request_hash,
                facts=dict(facts or {}),
            )
            line = json.dumps(exchange.to_json(), sort_keys=True, separators=(",", ":"))
            try:
                with self._path.open("a", encoding="utf-8") as handle:
                    handle.write(line + "\n")
                    handle.flush()
                    os.fsync(handle.fileno())
            except OSError as error:
                raise errors.RecordError(
                    f"cannot append step {exchange.step}: {error.strerror}",
                    where=str(self._path),
                    fix="check free space and permissions of the record store",
                ) from error
            self._exchanges.append(exchange)
        return exchange

    def manifest(self) -> dict[str, Any]:
        return {
            "run": self.run,
            "exchanges": [exchange.to_json() for exchange in self._exchanges],
        }

    def seal(self) -> str:
        """Store the manifest as a blob and return its digest (names the whole run)."""
        digest = self.store.put(rfc8785.dumps(self.manifest()))
        (self.directory / "manifest").write_text(digest + "\n", encoding="utf-8")
        return digest


def load(store: _blobs.BlobStore, run: str) -> RunRecord:
    """The record of ``run``; raises if it does not exist."""
    if not (store.root / "runs" / run / "record.jsonl").exists():
        raise errors.RecordError(
            f"no record for run {run!r}",
            where=str(store.root),
            fix="check the run id and the record store path",
        )
    return RunRecord(store, run)


def _read(path: Path) -> Iterable[Exchange]:
    if not path.exists():
        return
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            try:
                exchange = Exchange.from_json(json.loads(line))
            except (ValueError, KeyError, TypeError) as error:
                raise errors.RecordError(
                    f"line {number} is not a valid exchange ({error})",
                    where=str(path),
                    fix="the record was cut short or edited; restore it from the ledger's blobs",
                ) from error
            if exchange.step != number:
                raise errors.RecordError(
                    f"line {number} holds step {exchange.step}",
                    where=str(path),
                    fix="the record was reordered or edited; do not trust it",
                )
            yield exchange
