"""``AsyncLedger``: appends from many coroutines, committed together.

The gateway appends from hundreds of coroutines at once. Running each append in its own
thread and transaction would queue them on the write lock and pay one fsync each;
instead each coroutine's entry is validated on the spot (so a bad payload fails only its
caller), queued, and a single flusher commits whatever is queued in one transaction off
the event loop ("group commit"). Each ``await append(...)`` returns once its entry is
durable.
"""

from __future__ import annotations

import asyncio
from typing import Any

from continue_orchestrator.ledger import _entry, _ledger


class AsyncLedger:
    """Wraps a ``Ledger`` for asyncio code; the ledger stays usable from threads too."""

    def __init__(self, ledger: _ledger.Ledger, *, max_batch: int = 1024) -> None:
        self.ledger = ledger
        self._max_batch = max_batch
        self._queue: list[tuple[_entry.Prepared, asyncio.Future[_entry.Entry]]] = []
        self._flusher: asyncio.Task[None] | None = None

    async def append(
        self, run_uid: str, kind: _entry.Kind | str, actor: str, payload: dict[str, Any]
    ) -> _entry.Entry:
        prepared = _entry.prepare(_entry.Append(run_uid, kind, actor, payload))
        future: asyncio.Future[_entry.Entry] = asyncio.get_running_loop().create_future()
        self._queue.append((prepared, future))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush())
        # A caller cancelled after queueing still gets its entry committed: a ledger
        # records what was attempted, and a commit cannot be taken back.
        return await future

    async def append_many(
        self, items: list[_entry.Append | tuple[str, _entry.Kind | str, str, dict[str, Any]]]
    ) -> list[_entry.Entry]:
        return await asyncio.to_thread(self.ledger.append_many, items)

    async def tombstone(
        self,
        *,
        reason: str,
        actor: str,
        run_uid: str | None = None,
        sequence: int | None = None,
    ) -> _entry.Entry:
        return await asyncio.to_thread(
            self.ledger.tombstone, reason=reason, actor=actor, run_uid=run_uid, sequence=sequence
        )

    async def flush(self) -> None:
        """Wait until everything queued so far is committed (or failed)."""
        while self._flusher is not None and not self._flusher.done():
            await asyncio.shield(self._flusher)

    async def _flush(self) -> None:
        while self._queue:
            batch = self._queue[: self._max_batch]
            del self._queue[: self._max_batch]
            try:
                entries = await asyncio.to_thread(self.ledger.commit, [p for p, _ in batch])
            except Exception as error:
                for _, future in batch:
                    if not future.done():
                        future.set_exception(error)
                continue
            for (_, future), entry in zip(batch, entries, strict=True):
                if not future.done():
                    future.set_result(entry)
