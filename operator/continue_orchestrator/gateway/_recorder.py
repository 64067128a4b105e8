"""Writing what the gateway sees: redacted blobs, the run record and ledger entries.

Secret values (the run's granted secrets, upstream keys, the run token) are replaced by
``[REDACTED:NAME]`` before anything is stored, both as written and as JSON escapes them,
so no record, blob or ledger payload ever holds one. File and database writes happen in a
worker thread so the event loop keeps streaming other runs meanwhile.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Iterable, Mapping, Sequence
from typing import Any, Protocol

from continue_orchestrator import records

ACTOR = "gateway"

Entry = tuple[str, str, dict[str, Any]]  # kind, actor, payload
LedgerItem = tuple[str, str, str, dict[str, Any]]  # run uid, kind, actor, payload


class LedgerSink(Protocol):
    """What the gateway needs of ``ledger.Ledger``: appending several entries at once."""

    def append_many(self, items: Iterable[LedgerItem]) -> Sequence[Any]: ...


class RunRecorder:
    """Records one run: blobs and exchanges in the store, entries in the ledger."""

    def __init__(
        self,
        run: str,
        store: records.BlobStore,
        ledger: LedgerSink | None,
        redactor: records.Redactor,
    ) -> None:
        self.run = run
        self.store = store
        self.record = records.RunRecord(store, run)
        self.ledger = ledger
        self.redact = redactor
        self._lock = asyncio.Lock()
        self._pending: set[asyncio.Task[records.Exchange]] = set()

    def later(self, write: Coroutine[Any, Any, records.Exchange]) -> None:
        """Run ``write`` (an ``exchange(...)``) off the response path; ``drain`` waits for it."""
        task = asyncio.ensure_future(write)
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def backpressure(self, limit: int = 4) -> None:
        """Wait while more than ``limit`` exchanges are still being written."""
        while len(self._pending) > limit:
            await asyncio.wait(list(self._pending), return_when=asyncio.FIRST_COMPLETED)

    async def drain(self) -> None:
        """Wait until every exchange recorded ``later`` is on disk (raises its errors)."""
        while self._pending:
            await asyncio.gather(*list(self._pending))

    def put(self, data: bytes) -> str:
        return self.store.put(self.redact(data))

    async def ledger_entries(self, entries: Sequence[Entry]) -> None:
        """Append (kind, actor, payload) entries for this run, redacted, in one transaction."""
        if self.ledger is None or not entries:
            return
        items = [
            (self.run, kind, actor, self.redact.json(payload)) for kind, actor, payload in entries
        ]
        await asyncio.to_thread(self.ledger.append_many, items)

    async def exchange(
        self,
        kind: str,
        *,
        blobs: Mapping[str, bytes],
        request_hash: str | Callable[[], str] | None = None,
        facts: Mapping[str, Any] | None = None,
        entries: Sequence[Entry] = (),
    ) -> records.Exchange:
        """Store ``blobs`` and append one exchange plus its ledger entries, in order."""
        async with self._lock:
            # One worker-thread hop for all of it: each hop costs the event loop a wake-up.
            return await asyncio.to_thread(
                self._write, kind, blobs, request_hash, facts or {}, entries
            )

    def _write(
        self,
        kind: str,
        blobs: Mapping[str, bytes],
        request_hash: str | Callable[[], str] | None,
        facts: Mapping[str, Any],
        entries: Sequence[Entry],
    ) -> records.Exchange:
        digests = {role: self.put(data) for role, data in blobs.items()}
        hashed = request_hash() if callable(request_hash) else request_hash  # may add a fact
        exchange = self.record.append(
            kind, blobs=digests, request_hash=hashed, facts=self.redact.json(dict(facts))
        )
        if self.ledger is not None and entries:
            self.ledger.append_many(
                [
                    (
                        self.run,
                        entry_kind,
                        actor,
                        self.redact.json(
                            {"step": exchange.step, **_fill(payload, digests, exchange)}
                        ),
                    )
                    for entry_kind, actor, payload in entries
                ]
            )
        return exchange


def _fill(
    payload: dict[str, Any], digests: Mapping[str, str], exchange: records.Exchange
) -> dict[str, Any]:
    """Resolve ``{"blob": ROLE}`` to the stored digest, ``{"exchange": FIELD}`` to its value."""
    filled = {}
    for key, value in payload.items():
        if isinstance(value, dict) and "blob" in value:
            value = digests[value["blob"]]
        elif isinstance(value, dict) and "exchange" in value:
            value = exchange.to_json()[value["exchange"]]
        filled[key] = value
    return filled
