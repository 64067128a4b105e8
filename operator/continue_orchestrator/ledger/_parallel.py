"""Parallel verification of a SQLite ledger: chunks of entries checked in worker processes.

One process verifies about 100,000 entries per CPU-second (half fetching rows, half
hashing), so a large ledger is split into power-of-two chunks that worker processes check
with ``_verify.scan_chunk``; ``_verify.merge`` stitches the links between chunks, the
Merkle tree and the checkpoints, and gives exactly the report the one-pass ``check``
would. Every worker reads the same snapshot: the parent holds the write lock (``BEGIN
IMMEDIATE``) from reading the head until every worker has opened its read transaction,
so no commit can fall between them. Anything unexpected (rows that are not exactly
``0..size-1``, a worker that dies, a file we cannot lock) returns ``None`` and the caller
verifies in one process. Workers are fresh interpreters (``python -c``), not forked (a
forked child inherits the parent's SQLite connections and lock state SQLite does not
expect) nor ``multiprocessing``-spawned (which re-runs the caller's main script).
"""

from __future__ import annotations

import contextlib
import multiprocessing.connection
import os
import pathlib
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

from continue_orchestrator.ledger import _checkpoint, _sqlite, _verify

# Below this many entries, starting processes (about 0.25 CPU-seconds each, mostly
# imports) costs more than it saves.
MIN_ENTRIES = 100_000
_MIN_CHUNK = 1 << 12
_CHUNKS_PER_WORKER = 4


def workers_for(size: int, requested: int | None) -> int:
    """How many processes to verify ``size`` entries with; 1 means in this process."""
    if requested is not None:
        return max(1, requested)
    if size < MIN_ENTRIES:
        return 1
    return max(1, min(os.cpu_count() or 1, 8))


def chunk_size(size: int, workers: int) -> int:
    target = max(size // (workers * _CHUNKS_PER_WORKER), _MIN_CHUNK)
    return 1 << (target.bit_length() - 1)


def verify(
    path: pathlib.Path,
    source: str,
    *,
    workers: int,
    chunk: int | None = None,
    public_key: _checkpoint.PublicKey | None = None,
    trusted_checkpoint: _checkpoint.Checkpoint | None = None,
) -> _verify.VerifyReport | None:
    """Verify the ledger file at ``path`` with ``workers`` processes, or return ``None``
    when it cannot be done exactly (then verify in one process)."""
    try:
        db = sqlite3.connect(path, isolation_level=None, timeout=60.0)
    except sqlite3.Error:
        return None
    processes: list[subprocess.Popen[bytes]] = []
    pipes: list[_Pipe] = []
    try:
        try:
            db.execute("BEGIN IMMEDIATE")
            session = _sqlite._Session(db)
            origin = session.origin()
            checkpoints = [checkpoint for checkpoint, _ in session.checkpoints()]
            head = session.head()
            count, low = db.execute(
                "SELECT count(*), coalesce(min(sequence), 0) FROM ledger_entries"
            ).fetchone()
        except sqlite3.Error:
            return None
        size = head[0]
        if count != size or low != 0 or not size:
            return None  # gaps or strays: the one-pass check reports them exactly
        length = chunk if chunk is not None else chunk_size(size, workers)
        if length < 1 or length & (length - 1):
            raise ValueError(f"chunk length {length} is not a power of two")
        ranges = [(lo, min(lo + length, size)) for lo in range(0, size, length)]
        marks = {c.size for c in checkpoints}
        if trusted_checkpoint is not None:
            marks.add(trusted_checkpoint.size)
        for _ in range(min(workers, len(ranges))):
            process, pipe = _start(path)
            processes.append(process)
            pipes.append(pipe)
        # The fence: no commit until every worker has its snapshot.
        for pipe in pipes:
            if _receive(pipe) != ("ready", head):
                return None
        db.execute("ROLLBACK")
        chunks = _dispatch(pipes, ranges, sorted(marks))
        if chunks is None:
            return None
        try:
            return _verify.merge(
                source,
                origin,
                size,
                checkpoints,
                chunks,
                public_key=public_key,
                trusted_checkpoint=trusted_checkpoint,
            )
        except _verify.ChunkAnomalyError:
            return None
    finally:
        if db.in_transaction:
            db.execute("ROLLBACK")
        db.close()
        for pipe in pipes:
            with contextlib.suppress(OSError):
                pipe.send(None)
            pipe.close()
        for process in processes:
            try:
                process.wait(5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


class _Pipe:
    """The worker's stdin and stdout as one two-way ``Connection``-like object."""

    def __init__(self, process: subprocess.Popen[bytes]) -> None:
        assert process.stdin is not None and process.stdout is not None
        self._out = multiprocessing.connection.Connection(
            os.dup(process.stdin.fileno()), readable=False
        )
        self._in = multiprocessing.connection.Connection(
            os.dup(process.stdout.fileno()), writable=False
        )
        process.stdin.close()
        process.stdout.close()

    def fileno(self) -> int:
        return self._in.fileno()

    def send(self, value: Any) -> None:
        self._out.send(value)

    def recv(self) -> Any:
        return self._in.recv()

    def close(self) -> None:
        self._out.close()
        self._in.close()


def _start(path: pathlib.Path) -> tuple[subprocess.Popen[bytes], _Pipe]:
    package_root = pathlib.Path(__file__).resolve().parents[2]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(package_root), *filter(None, [env.get("PYTHONPATH")])])
    process = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from continue_orchestrator.ledger import _parallel; _parallel.worker_main()",
            os.fspath(path),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=env,
    )
    return process, _Pipe(process)


def _receive(pipe: _Pipe) -> Any:
    try:
        return pipe.recv()
    except (EOFError, OSError):
        return None  # the worker died


def _dispatch(
    pipes: list[_Pipe],
    ranges: list[tuple[int, int]],
    marks: list[int],
) -> list[_verify.Chunk] | None:
    """Hand out chunks to whichever worker is free; return them in order."""
    queue: Iterator[tuple[int, int]] = iter(ranges)
    done: dict[int, _verify.Chunk] = {}
    busy: dict[int, _Pipe] = {}

    def hand_out(pipe: _Pipe) -> None:
        task = next(queue, None)
        if task is not None:
            lo, hi = task
            pipe.send((lo, hi, [m for m in marks if lo < m <= hi]))
            busy[pipe.fileno()] = pipe

    for pipe in pipes:
        hand_out(pipe)
    while busy:
        for fileno in multiprocessing.connection.wait(list(busy)):
            assert isinstance(fileno, int)
            ready = busy.pop(fileno)
            answer = _receive(ready)
            if not isinstance(answer, _verify.Chunk):
                return None
            done[answer.lo] = answer
            hand_out(ready)
    if len(done) != len(ranges):
        return None
    return [done[lo] for lo, _ in ranges]


def worker_main() -> None:
    """A worker's entry point: talk pickles over stdin and stdout (stdout goes to stderr)."""
    out = multiprocessing.connection.Connection(os.dup(1), readable=False)
    os.dup2(2, 1)
    source = multiprocessing.connection.Connection(os.dup(0), writable=False)
    _worker(sys.argv[1], source, out)


def _worker(
    path: str,
    source: multiprocessing.connection.Connection,
    out: multiprocessing.connection.Connection,
) -> None:
    """Open one read snapshot, say so, then check the chunks handed over until ``None``."""
    try:
        db = sqlite3.connect(path, isolation_level=None, timeout=60.0)
        db.execute("BEGIN")
        session = _sqlite._Session(db)
        out.send(("ready", session.head()))  # the first read fixes the snapshot
        while (task := source.recv()) is not None:
            lo, hi, marks = task
            rows = session.rows(start=lo, stop=hi, run_uid=None, limit=None)
            try:
                out.send(_verify.scan_chunk(rows, lo, hi, marks))
            except _verify.ChunkAnomalyError as anomaly:
                out.send(("anomaly", str(anomaly)))
        db.execute("ROLLBACK")
        db.close()
    except (EOFError, OSError, sqlite3.Error):
        pass  # the parent sees the pipe close and verifies in one process
