"""Run a child process with a deadline, bounded output, and nothing left behind.

The child gets its own session so that, on timeout or after it exits, the whole group
(including anything the agent started in the background through Bash) is killed and
cannot tamper with the verify step or the diff. Output is read concurrently and only
its tail is kept, so a chatty process cannot exhaust memory.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from typing import IO

_KILL_GRACE_SECONDS = 5.0


@dataclasses.dataclass(frozen=True)
class Completed:
    """How a child process ended."""

    exit_code: int | None
    """None when it was killed at the deadline."""
    timed_out: bool
    duration_seconds: float
    stdout: bytes
    """The last ``limit`` bytes of stdout (stdout and stderr when merged)."""
    stdout_bytes: int
    """Total bytes written, kept or not."""
    stderr: bytes
    stderr_bytes: int


class _Tail:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.data = bytearray()
        self.total = 0

    def drain(self, stream: IO[bytes]) -> None:
        while chunk := stream.read1(65536):  # type: ignore[attr-defined]
            self.total += len(chunk)
            self.data += chunk
            if len(self.data) > 2 * self.limit:
                del self.data[: len(self.data) - self.limit]
        stream.close()

    def value(self) -> bytes:
        return bytes(self.data[-self.limit :])


def run(
    argv: Sequence[str],
    *,
    cwd: str,
    env: Mapping[str, str],
    timeout: float,
    limit: int = 65536,
    merge_stderr: bool = False,
    stdin: bytes | None = None,
) -> Completed:
    """Run ``argv`` to completion or ``timeout``; the process group is always reaped."""
    start = time.monotonic()
    process = subprocess.Popen(
        list(argv),
        cwd=cwd,
        env=dict(env),
        stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT if merge_stderr else subprocess.PIPE,
        start_new_session=True,
    )
    out, err = _Tail(limit), _Tail(limit)
    readers = [threading.Thread(target=out.drain, args=(process.stdout,), daemon=True)]
    if not merge_stderr:
        readers.append(threading.Thread(target=err.drain, args=(process.stderr,), daemon=True))
    for reader in readers:
        reader.start()
    if stdin is not None and process.stdin is not None:
        try:
            process.stdin.write(stdin)
            process.stdin.close()
        except BrokenPipeError:
            pass
    timed_out = False
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        _kill_group(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=_KILL_GRACE_SECONDS)
        except subprocess.TimeoutExpired:
            _kill_group(process.pid, signal.SIGKILL)
            process.wait()
    except BaseException:
        _kill_group(process.pid, signal.SIGKILL)
        process.wait()
        raise
    finally:
        # Stragglers (background jobs) die with the group even when the leader exited.
        _kill_group(process.pid, signal.SIGKILL)
    for reader in readers:
        reader.join(timeout=_KILL_GRACE_SECONDS)
    return Completed(
        exit_code=None if timed_out else process.returncode,
        timed_out=timed_out,
        duration_seconds=round(time.monotonic() - start, 3),
        stdout=out.value(),
        stdout_bytes=out.total,
        stderr=err.value(),
        stderr_bytes=err.total,
    )


def _kill_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)
