"""A writer killed with SIGKILL in the middle of an append storm loses nothing it was
told was committed, leaves no partial entry, and the ledger verifies on restart."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from typing import TYPE_CHECKING

from continue_orchestrator import ledger

if TYPE_CHECKING:
    from conftest import Store

_WRITER = """
import sys
from continue_orchestrator import ledger
book = ledger.open(sys.argv[1])
worker = sys.argv[2]
i = 0
while True:
    i += 1
    if i % 3:
        last = book.append(f"run-{worker}", "model.request", "gateway",
                           {"i": i, "body": "x" * 200}).sequence
    else:
        items = [(f"run-{worker}", "tool.call", "gateway", {"i": i, "j": j, "body": "y" * 200})
                 for j in range(400)]
        last = book.append_many(items)[-1].sequence
    if i % 50 == 0:
        book.tombstone(sequence=last, reason="storm redaction", actor="admin")
    print(last, flush=True)
"""


def _storm(store: Store, writers: int, at_least: int) -> int:
    """Run ``writers`` processes until ``at_least`` entries exist; SIGKILL them; return the
    highest sequence any of them reported committed."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", _WRITER, store.url, str(w)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for w in range(writers)
    ]
    deadline = time.monotonic() + 120
    acknowledged = -1
    try:
        while time.monotonic() < deadline:
            line = processes[0].stdout.readline() if processes[0].stdout else ""
            if not line:
                break
            acknowledged = max(acknowledged, int(line))
            if acknowledged >= at_least:
                break
    finally:
        for process in processes:
            process.send_signal(signal.SIGKILL)
        for process in processes:
            out, err = process.communicate()
            for line in out.split():
                acknowledged = max(acknowledged, int(line))
            assert process.returncode == -signal.SIGKILL, err
    assert acknowledged >= at_least, "the writers did not get far enough before the deadline"
    return acknowledged


def test_kill_9_during_an_append_storm_leaves_a_verifiable_ledger(store: Store) -> None:
    with store.open() as book:
        book.append("run-0", "run.created", "operator", {})
    for round_number in range(3):
        acknowledged = _storm(store, writers=3, at_least=(round_number + 1) * 1500)
        with store.open() as book:
            report = ledger.verify(book)
            assert report.ok, report.problems[:5]
            sequences = [entry.sequence for entry in book.entries()]
            assert sequences == list(range(len(sequences)))
            assert len(sequences) > acknowledged  # everything acknowledged survived
            # No partial entry: every entry has its payload or a tombstone naming it.
            assert report.redacted == sum(1 for e in book.entries() if e.payload is None)
            book.append("run-0", "run.finished", "operator", {"round": round_number})
