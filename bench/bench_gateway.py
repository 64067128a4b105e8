"""What the gateway adds to a model call, next to what LiteLLM's proxy adds.

The scripted models, the gateway and LiteLLM's proxy each run in their own process, as
deployed: the gateway is ``orchestrator gateway`` with a real SQLite ledger and record
store, and the run is registered over its admin API with the demo's real policy. The
client calls each model directly, through the gateway and through LiteLLM, one call at
a time, round-robin, and reports the added latency (p50, p99; for streaming also the
delay of the first chunk) in four modes: a short chat, the same streamed, a streamed
turn with a tool call (decided by the policy and committed to the ledger before it is
handed over), and a Continue-sized request (56 KB: tools, long system prompt, history).
The gateway's CPU per call (from /proc) is reported too: unlike latency on a shared
machine, it does not depend on what else runs. LiteLLM comes from
hack/install-litellm.sh (its own venv in the cache); if it cannot be installed or
started, its rows say so and no ratio is claimed.
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
import yaml
from tests import request_support

REPO = pathlib.Path(__file__).resolve().parents[1]
CALLS = int(os.environ.get("BENCH_GATEWAY_CALLS", "150"))
WARMUP = 20
TOKEN = "bench-run-token-0123456789abcdef"
ADMIN_TOKEN = "bench-admin-token-0123456789abcdef0123"
TEXT_SCRIPT = (
    "loop: true\nturns:\n  - text: 'Hello from the scripted model, twenty-odd words of text.'\n"
)
TOOL_SCRIPT = (
    "loop: true\nturns:\n  - text: 'Reading it.'\n    tool_calls:\n"
    "      - name: Read\n        arguments: {filepath: src/pricing.py}\n"
)
SHORT = [{"role": "user", "content": "hello"}]



# mode -> (model name, extra body, stream)
MODES: dict[str, tuple[str, dict[str, Any], bool]] = {
    "nonstream": ("scripted", {"messages": SHORT}, False),
    "stream": ("scripted", {"messages": SHORT}, True),
    "stream_toolcall": ("scripted-tools", {"messages": SHORT}, True),
    "large_nonstream": ("scripted", request_support.continue_sized_request(), False),
}


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


def _cpu_seconds(pid: int) -> float:
    fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _measure(
    targets: dict[str, tuple[str, dict[str, str], dict[str, str]]],
    mode: str,
    gateway_pid: int,
) -> tuple[dict[str, dict[str, list[float]]], float]:
    """Calls round-robin over the targets, so load from elsewhere hits all of them alike.

    ``targets``: name -> (base URL, headers, model name -> name to send). Returns the
    timings and the gateway's CPU seconds per measured call."""
    model, extra, stream = MODES[mode]
    results: dict[str, dict[str, list[float]]] = {
        name: {"total": [], "first": []} for name in targets
    }
    sessions = {
        name: aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=1),
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=20),
        )
        for name, (_, headers, _) in targets.items()
    }
    cpu_start = 0.0
    failed: dict[str, str] = {}
    try:
        for number in range(WARMUP + CALLS):
            if number == WARMUP:
                cpu_start = _cpu_seconds(gateway_pid)
            for name, (base, _, names) in targets.items():
                if name in failed:
                    continue
                body = {**extra, "model": names.get(model, model), "stream": stream}
                start = time.perf_counter()
                try:
                    first_at = await _call(sessions[name], base, body, stream)
                except (aiohttp.ClientError, TimeoutError) as error:
                    if name != "litellm":
                        raise RuntimeError(f"{name} {mode} call {number}: {error!r}") from error
                    failed[name] = f"call {number} failed: {error!r}"
                    continue
                end = time.perf_counter()
                if number >= WARMUP:
                    results[name]["total"].append((end - start) * 1000)
                    if first_at is not None:
                        results[name]["first"].append((first_at - start) * 1000)
        cpu = (_cpu_seconds(gateway_pid) - cpu_start) / CALLS
    finally:
        for session in sessions.values():
            await session.close()
    for name, why in failed.items():
        results[name] = {"total": [], "first": [], "error": why}  # type: ignore[dict-item]
    return results, cpu


async def _call(
    session: aiohttp.ClientSession, base: str, body: dict[str, Any], stream: bool
) -> float | None:
    """One call; when streaming, the time its first content arrived."""
    first_at = None
    async with session.post(f"{base}/chat/completions", json=body) as response:
        if response.status != 200:
            text = await response.text()
            raise aiohttp.ClientError(f"HTTP {response.status}: {text[:300]}")
        if stream:
            async for line in response.content:
                if first_at is None and b'"content"' in line:
                    first_at = time.perf_counter()
        else:
            await response.read()
    return first_at


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


def _policy() -> tuple[list[dict[str, Any]], str]:
    from continue_orchestrator import api, policy

    sources = [
        api.parse(yaml.safe_load((REPO / "examples" / "demo" / name).read_text()))
        for name in ("clusterrunpolicy.yaml", "runpolicy.yaml")
    ]
    manifests = policy.snapshot_document(sources)  # type: ignore[arg-type]
    return manifests, policy.compile(sources).digest  # type: ignore[arg-type]


async def _register(admin: str, models: dict[str, str]) -> str:
    from continue_orchestrator import gateway

    manifests, digest = _policy()
    async with gateway.Client(admin, ADMIN_TOKEN) as client:
        answer = await client.register(
            {
                "uid": "bench-run",
                "name": "bench",
                "namespace": "demo",
                "token": TOKEN,
                "expiresAt": time.time() + 86400,
                "policy": {"digest": digest, "manifests": manifests},
                "models": {
                    name: {"apiBase": base, "apiKey": "sk-bench-upstream"}
                    for name, base in models.items()
                },
                "allowedEgress": ["127.0.0.1"],
            }
        )
    return str(answer["apiBase"])


async def _bench(work: pathlib.Path) -> dict[Any, Any]:
    python = sys.executable
    processes = []
    results: dict[Any, Any] = {}
    direct: dict[str, str] = {}
    try:
        for name, script in (("scripted", TEXT_SCRIPT), ("scripted-tools", TOOL_SCRIPT)):
            port = _free_port()
            (work / f"{name}.yaml").write_text(script)
            processes.append(
                _start(
                    [
                        *(python, "-m", "continue_orchestrator", "scripted-model"),
                        *(str(work / f"{name}.yaml"), "--port", str(port)),
                    ]
                )
            )
            direct[name] = f"http://127.0.0.1:{port}/v1"
            await _wait_ready(direct[name] + "/models", time.monotonic() + 30)
        (work / "admin-token").write_text(ADMIN_TOKEN)
        gateway_process = _start(
            [
                *(python, "-m", "continue_orchestrator", "gateway", "--listen", "127.0.0.1:0"),
                *("--record-root", str(work / "records")),
                *("--ledger", f"sqlite:///{work / 'ledger.db'}"),
                *("--admin-token-file", str(work / "admin-token")),
            ]
        )
        processes.append(gateway_process)
        assert gateway_process.stdout is not None
        line = (await asyncio.to_thread(gateway_process.stdout.readline)).decode()
        admin = line.strip().rsplit(" admin at ", 1)[-1]
        gateway_base = await _register(admin, direct)
        # Both scripted models speak the same API; the direct target routes by model name.
        targets: dict[str, tuple[str, dict[str, str], dict[str, str]]] = {
            "direct": (direct["scripted"], {}, {}),
            "direct-tools": (direct["scripted-tools"], {}, {}),
            "gateway": (gateway_base, {"Authorization": f"Bearer {TOKEN}"}, {}),
        }
        litellm = await asyncio.to_thread(_litellm)
        if litellm:
            port = _free_port()
            (work / "litellm.yaml").write_text(
                "model_list:\n"
                + "".join(
                    f"  - model_name: {name}\n    litellm_params:\n"
                    f"      model: openai/{name}\n      api_base: {base}\n"
                    "      api_key: sk-bench-upstream\n"
                    for name, base in direct.items()
                )
                + "litellm_settings:\n  telemetry: false\n"
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
                        *(litellm, "--config", str(work / "litellm.yaml")),
                        *("--host", "127.0.0.1", "--port", str(port)),
                    ],
                    env,
                )
            )
            try:
                await _wait_ready(
                    f"http://127.0.0.1:{port}/health/liveliness", time.monotonic() + 90
                )
                targets["litellm"] = (f"http://127.0.0.1:{port}/v1", {}, {})
            except TimeoutError:
                results["litellm_error"] = "LiteLLM's proxy did not start within 90 s"
        else:
            results["litellm_error"] = "hack/install-litellm.sh failed"
        for mode, (model, _, _) in MODES.items():
            # The direct baseline is the scripted model the mode's calls go to.
            chosen = {
                name: target
                for name, target in targets.items()
                if not name.startswith("direct")
                or name == ("direct-tools" if model == "scripted-tools" else "direct")
            }
            begun = time.monotonic()
            timings, cpu = await _measure(chosen, mode, gateway_process.pid)
            print(f"bench gateway: {mode} in {time.monotonic() - begun:.0f} s", file=sys.stderr)
            for name, measured in timings.items():
                results[("direct" if name.startswith("direct") else name, mode)] = measured
            results[("cpu", mode)] = cpu
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
    for mode, (_, _, stream) in MODES.items():
        litellm = results.get(("litellm", mode))
        has_litellm = bool(litellm and litellm["total"])
        if litellm and not has_litellm:
            yield {
                "name": f"gateway.{mode}.litellm_baseline",
                "value": None,
                "unit": "",
                "error": f"LiteLLM: {litellm.get('error')}",
            }
        direct = results[("direct", mode)]
        for q, label in ((0.5, "p50"), (0.99, "p99")):
            base = _pct(direct["total"], q)
            ours = _pct(results[("gateway", mode)]["total"], q) - base
            row: dict[str, Any] = {
                "name": f"gateway.{mode}.added_{label}",
                "value": round(ours, 3),
                "unit": "ms",
                "direct_ms": round(base, 3),
            }
            if label == "p50":
                row["goal"] = "<= 2 ms and >= 10x less than LiteLLM"
            if has_litellm:
                theirs = _pct(results[("litellm", mode)]["total"], q) - base
                row["baseline"] = round(theirs, 3)
                row["ratio"] = round(theirs / ours, 1) if ours > 0 else None
            yield row
        if stream:
            base = _pct(direct["first"], 0.5)
            ours = _pct(results[("gateway", mode)]["first"], 0.5) - base
            row = {
                "name": f"gateway.{mode}.first_chunk_added_p50",
                "value": round(ours, 3),
                "unit": "ms",
                "direct_ms": round(base, 3),
            }
            if has_litellm:
                theirs = _pct(results[("litellm", mode)]["first"], 0.5) - base
                row["baseline"] = round(theirs, 3)
                row["ratio"] = round(theirs / ours, 1) if ours > 0 else None
            yield row
        yield {
            "name": f"gateway.{mode}.cpu_per_call",
            "value": round(results[("cpu", mode)] * 1000, 3),
            "unit": "ms",
            "note": "gateway process CPU (user+system, all threads) per call, from /proc",
        }
    if ("litellm", "stream") not in results:
        yield {
            "name": "gateway.litellm_baseline",
            "value": None,
            "unit": "",
            "error": results.get("litellm_error"),
        }
    yield {
        "name": "gateway.calls_per_target_and_mode",
        "value": CALLS,
        "unit": "calls",
        "stdev_direct_ms": round(statistics.pstdev(results[("direct", "nonstream")]["total"]), 3),
        "load_average": round(os.getloadavg()[0], 1),
    }
