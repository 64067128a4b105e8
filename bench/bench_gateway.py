"""What the gateway adds to a model call, next to what LiteLLM's proxy adds.

The scripted model, the gateway (with its real SQLite ledger and record store on the
hot path) and LiteLLM's proxy each run in their own process, as deployed; the client
calls the model directly, through the gateway and through LiteLLM, one call at a time,
and reports the added latency (p50, p99; for streaming also the delay of the first
chunk). LiteLLM comes from hack/install-litellm.sh (its own venv in the cache); if it
cannot be installed or started, its rows say so and no ratio is claimed.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pathlib
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from typing import Any

import aiohttp

REPO = pathlib.Path(__file__).resolve().parents[1]
CALLS = int(os.environ.get("BENCH_GATEWAY_CALLS", "300"))
WARMUP = 30
BODY = {"model": "scripted", "messages": [{"role": "user", "content": "hello"}]}
SCRIPT = (
    "loop: true\nturns:\n  - text: 'Hello from the scripted model, twenty-odd words of text.'\n"
)
TOKEN = "bench-run-token-0123456789abcdef"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _wait_ready(url: str, deadline: float) -> None:
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            with contextlib.suppress(aiohttp.ClientError):
                async with session.get(url) as response:
                    if response.status < 500:
                        return
            await asyncio.sleep(0.2)
    raise TimeoutError(f"{url} did not come up")


async def _measure(
    targets: dict[str, tuple[str, dict[str, str]]], *, stream: bool
) -> dict[str, dict[str, list[float]]]:
    """Calls round-robin over the targets, so load from elsewhere hits all of them alike."""
    results: dict[str, dict[str, list[float]]] = {
        name: {"total": [], "first": []} for name in targets
    }
    body = {**BODY, "stream": stream}
    sessions = {
        name: aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1), headers=headers)
        for name, (_, headers) in targets.items()
    }
    try:
        for number in range(WARMUP + CALLS):
            for name, (base, _) in targets.items():
                start = time.perf_counter()
                async with sessions[name].post(f"{base}/chat/completions", json=body) as response:
                    if response.status != 200:
                        text = await response.text()
                        raise RuntimeError(f"{name}: HTTP {response.status}: {text[:300]}")
                    first_at = None
                    if stream:
                        async for line in response.content:
                            if first_at is None and b'"content"' in line:
                                first_at = time.perf_counter()
                    else:
                        await response.read()
                end = time.perf_counter()
                if number >= WARMUP:
                    results[name]["total"].append((end - start) * 1000)
                    if first_at is not None:
                        results[name]["first"].append((first_at - start) * 1000)
    finally:
        for session in sessions.values():
            await session.close()
    return results


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _start(argv: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        argv,
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def _litellm() -> str | None:
    result = subprocess.run(
        ["bash", str(REPO / "hack" / "install-litellm.sh")], capture_output=True, text=True
    )
    path = result.stdout.strip().splitlines()[-1] if result.returncode == 0 else ""
    return path or None


async def _bench(work: pathlib.Path) -> dict[str, Any]:
    python = sys.executable
    model_port = _free_port()
    (work / "script.yaml").write_text(SCRIPT)
    processes = []
    results: dict[str, Any] = {}
    try:
        processes.append(
            _start(
                [
                    python,
                    "-m",
                    "continue_orchestrator",
                    "scripted-model",
                    str(work / "script.yaml"),
                    "--port",
                    str(model_port),
                ]
            )
        )
        direct = f"http://127.0.0.1:{model_port}/v1"
        await _wait_ready(direct + "/models", time.monotonic() + 30)
        child = _start(
            [
                python,
                "-m",
                "bench._gateway_child",
                direct,
                TOKEN,
                str(work / "records"),
                f"sqlite:///{work / 'ledger.db'}",
            ]
        )
        processes.append(child)
        assert child.stdout is not None
        gateway_base = (await asyncio.to_thread(child.stdout.readline)).decode().strip()
        gateway_headers = {"Authorization": f"Bearer {TOKEN}"}
        targets: dict[str, tuple[str, dict[str, str]]] = {
            "direct": (direct, {}),
            "gateway": (gateway_base, gateway_headers),
        }
        litellm = await asyncio.to_thread(_litellm)
        if litellm:
            port = _free_port()
            (work / "litellm.yaml").write_text(
                "model_list:\n  - model_name: scripted\n    litellm_params:\n"
                f"      model: openai/scripted\n      api_base: {direct}\n"
                "      api_key: sk-bench-upstream\n"
                "litellm_settings:\n  telemetry: false\n"
            )
            env = dict(
                os.environ,
                LITELLM_LOCAL_MODEL_COST_MAP="True",
                LITELLM_LOG="ERROR",
                LITELLM_TELEMETRY="False",
                DISABLE_SCHEMA_UPDATE="True",
                NO_DOCS="True",
            )
            processes.append(
                _start(
                    [
                        litellm,
                        "--config",
                        str(work / "litellm.yaml"),
                        "--host",
                        "127.0.0.1",
                        "--port",
                        str(port),
                    ],
                    env,
                )
            )
            try:
                await _wait_ready(
                    f"http://127.0.0.1:{port}/health/liveliness", time.monotonic() + 90
                )
                targets["litellm"] = (f"http://127.0.0.1:{port}/v1", {})
            except TimeoutError:
                results["litellm_error"] = "LiteLLM's proxy did not start within 90 s"
        else:
            results["litellm_error"] = "hack/install-litellm.sh failed"
        for stream in (False, True):
            for name, measured in (await _measure(targets, stream=stream)).items():
                results[(name, stream)] = measured
    finally:
        for process in processes:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
        for process in processes:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(10)
    return results


def run() -> Iterator[dict[str, Any]]:
    with tempfile.TemporaryDirectory(prefix="bench-gateway-") as work:
        results = asyncio.run(_bench(pathlib.Path(work)))
    has_litellm = ("litellm", False) in results
    for stream in (False, True):
        mode = "stream" if stream else "nonstream"
        direct = results[("direct", stream)]
        for q, label in ((0.5, "p50"), (0.99, "p99")):
            base = _pct(direct["total"], q)
            ours = _pct(results[("gateway", stream)]["total"], q) - base
            row: dict[str, Any] = {
                "name": f"gateway.{mode}.added_{label}",
                "value": round(ours, 3),
                "unit": "ms",
                "direct_ms": round(base, 3),
            }
            if label == "p50":
                row["goal"] = "<= 2 ms and >= 10x less than LiteLLM"
            if has_litellm:
                theirs = _pct(results[("litellm", stream)]["total"], q) - base
                row["baseline"] = round(theirs, 3)
                row["ratio"] = round(theirs / ours, 1) if ours > 0 else None
            yield row
        if stream:
            base = _pct(direct["first"], 0.5)
            ours = _pct(results[("gateway", True)]["first"], 0.5) - base
            row = {
                "name": "gateway.stream.first_chunk_added_p50",
                "value": round(ours, 3),
                "unit": "ms",
                "direct_ms": round(base, 3),
            }
            if has_litellm:
                theirs = _pct(results[("litellm", True)]["first"], 0.5) - base
                row["baseline"] = round(theirs, 3)
                row["ratio"] = round(theirs / ours, 1) if ours > 0 else None
            yield row
    if not has_litellm:
        yield {
            "name": "gateway.litellm_baseline",
            "value": None,
            "unit": "",
            "error": results.get("litellm_error"),
        }
    yield {
        "name": "gateway.calls_per_target",
        "value": CALLS,
        "unit": "calls",
        "stdev_direct_ms": round(statistics.pstdev(results[("direct", False)]["total"]), 3),
    }
