"""Ledger throughput: single and batched appends, group-committed async appends, and
verification, on SQLite and on a real PostgreSQL server (started here, fsync on).

Goals (SQLite): >= 20,000 batched appends/s and >= 200,000 entries/s verified. Each
result also carries ``per_cpu_second`` (count over the CPU time of this process, all its
threads) and the 1-minute load average: on a shared machine the load moves wall-clock
numbers more than any change to the code does. Verification is measured on the
33,400-entry ledger the append benchmarks leave (SQLite through the native core, which
reads in one thread and hashes in another; PostgreSQL in Python) and on a 150,000-entry
SQLite ledger, through the native core and in Python only (``native=False``).
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import pathlib
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from typing import Any

from continue_orchestrator import ledger

ROOT = pathlib.Path(__file__).resolve().parents[1]
BATCHED = 30_000
BATCH = 1_000
SINGLE = 400
ASYNC = 3_000
LARGE = 150_000


def _payload(i: int) -> dict[str, Any]:
    # About the size of a gateway's tool-call record (~300 bytes canonical).
    return {
        "model": "gpt-4.1",
        "request_id": f"req-{i:08d}",
        "tool": "Bash",
        "arguments": {"command": "pytest -q tests/unit", "timeout": 600},
        "decision": {"allowed": True, "policy": "default/baseline", "rule": "bash-tests"},
        "record": f"sha256:{i:064x}",
    }


def _cpu() -> float:
    times = os.times()
    return times.user + times.system + times.children_user + times.children_system


class _Timer:
    """Wall and this process's CPU time (PostgreSQL's server time is not included)."""

    def __init__(self) -> None:
        self.wall = time.perf_counter()
        self.cpu = _cpu()

    def result(self, name: str, count: int, unit: str, goal: float | None = None) -> dict[str, Any]:
        value = count / (time.perf_counter() - self.wall)
        result: dict[str, Any] = {
            "name": name,
            "value": round(value, 1),
            "unit": unit,
            "per_cpu_second": round(count / max(_cpu() - self.cpu, 1e-9), 1),
            "loadavg_1m": round(os.getloadavg()[0], 2),
        }
        if goal is not None:
            result["goal"] = goal
            result["ratio"] = round(value / goal, 3)
        return result


def _measure(backend: str, url: str) -> Iterator[dict[str, Any]]:
    goals = backend == "sqlite"
    with ledger.open(url) as book:
        timer = _Timer()
        for i in range(SINGLE):
            book.append(f"run-{i % 8}", ledger.Kind.TOOL_CALL, "gateway", _payload(i))
        yield timer.result(f"ledger.{backend}.append_single", SINGLE, "appends/s")

        items = [
            ledger.Append(f"run-{i % 8}", ledger.Kind.TOOL_CALL, "gateway", _payload(i))
            for i in range(BATCHED)
        ]
        timer = _Timer()
        for offset in range(0, BATCHED, BATCH):
            book.append_many(items[offset : offset + BATCH])
        yield timer.result(
            f"ledger.{backend}.append_batched", BATCHED, "appends/s", 20_000 if goals else None
        )

        async def storm() -> None:
            wrapper = ledger.AsyncLedger(book)
            await asyncio.gather(
                *(
                    wrapper.append(f"run-{i % 8}", "model.request", "gateway", _payload(i))
                    for i in range(ASYNC)
                )
            )

        timer = _Timer()
        asyncio.run(storm())
        yield timer.result(f"ledger.{backend}.append_async_group_commit", ASYNC, "appends/s")

        timer = _Timer()
        report = ledger.verify(book)
        if not report.ok:
            raise RuntimeError(f"bench ledger does not verify: {report.problems[:3]}")
        yield timer.result(
            f"ledger.{backend}.verify", report.size, "entries/s", 200_000 if goals else None
        )


def _verify_large(url: str) -> Iterator[dict[str, Any]]:
    # Built from 1,000 prepared entries committed over and over: every entry is chained
    # and hashed as usual, only the payload canonicalisation is shared.
    prepared = [
        ledger.prepare(ledger.Append(f"run-{i % 8}", ledger.Kind.TOOL_CALL, "gw", _payload(i)))
        for i in range(1_000)
    ]
    with ledger.open(url) as book:
        for _ in range(LARGE // len(prepared)):
            book.commit(prepared)
        for name, native in (("native", True), ("python", False)):
            timer = _Timer()
            report = ledger.verify(book, native=native)
            if not report.ok or report.size != LARGE:
                raise RuntimeError(f"bench ledger does not verify: {report.problems[:3]}")
            yield timer.result(
                f"ledger.sqlite.verify_{LARGE // 1000}k_{name}",
                LARGE,
                "entries/s",
                200_000 if native else None,
            )


def run() -> Iterator[dict[str, Any]]:
    directory = pathlib.Path(tempfile.mkdtemp(prefix="co-bench-ledger-"))
    try:
        yield from _measure("sqlite", f"sqlite://{directory / 'ledger.db'}")
        yield from _verify_large(f"sqlite://{directory / 'large.db'}?synchronous=normal")
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    pgtemp = _pgtemp()
    # Its own directory: the server runs as 'postgres', which cannot enter a root-only one.
    pg_directory = pathlib.Path(tempfile.mkdtemp(prefix="co-bench-pg-"))
    try:
        try:
            server = pgtemp.start(pg_directory, durable=True)
        except pgtemp.UnavailableError as error:
            yield {"name": "ledger.postgresql", "value": None, "unit": "", "skipped": str(error)}
            return
        try:
            yield from _measure("postgresql", server.admin_url)
        finally:
            server.stop()
    finally:
        shutil.rmtree(pg_directory, ignore_errors=True)


def _pgtemp() -> Any:
    spec = importlib.util.spec_from_file_location("pgtemp", ROOT / "hack" / "pgtemp.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["pgtemp"] = module
    spec.loader.exec_module(module)
    return module
