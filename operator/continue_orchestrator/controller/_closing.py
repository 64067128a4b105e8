"""Appends to a run's ledger that must not land after its tombstone.

The finalizer tombstones a run's ledger entries while other handlers may still be
appending to them: the one that won the terminal phase (``run.finished``) and the
attestor (``attestation.published``), which kopf can run at the same moment. They take
turns on one lock per operator process, and nothing is appended once the tombstone is
in: an entry after it would hold the very names and digests it redacts.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

from continue_orchestrator import ledger


class Closing:
    """The turn-taking of one operator process's ledger writers at a run's end."""

    def __init__(self) -> None:
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def turn(self) -> Iterator[None]:
        """Hold the turn (the finalizer holds it while it tombstones)."""
        with self._lock:
            yield

    def append(
        self, book: ledger.Ledger, uid: str, kind: ledger.Kind, actor: str, payload: Any
    ) -> bool:
        """Append unless the run is tombstoned; whether it was appended."""
        with self._lock:
            if any(e.kind is ledger.Kind.TOMBSTONE for e in book.entries(run_uid=uid)):
                return False
            book.append(uid, kind, actor, payload)
            return True


def finished_by(entries: Iterator[ledger.Entry] | list[ledger.Entry], actor: str) -> bool:
    """Whether ``actor`` (the operator) appended the run's ``run.finished``: the runner's
    own report, which reaches the shared ledger through the gateway, is not the
    operator's account of the run."""
    return any(e.kind is ledger.Kind.RUN_FINISHED and e.actor == actor for e in entries)
