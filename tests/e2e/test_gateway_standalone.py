"""``orchestrator gateway`` as its own process: registered over HTTP, stopped by SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import pathlib
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
from tests import continue_config

from continue_orchestrator import api, gateway, ledger, local, policy, records, runs

REPO = pathlib.Path(__file__).resolve().parents[2]
ADMIN = "standalone-admin-token-0123456789abcdef"
TOKEN = "standalone-run-token-0123456789abcdef"
UPSTREAM_KEY = "sk-standalone-upstream-key-0123456789"


def _snapshot() -> tuple[list[dict[str, Any]], str]:
    import yaml

    sources = [
        api.parse(yaml.safe_load((REPO / "examples/demo" / name).read_text()))
        for name in ("clusterrunpolicy.yaml", "runpolicy.yaml")
    ]
    return (
        policy.snapshot_document(sources),  # type: ignore[arg-type]
        policy.compile(sources).digest,  # type: ignore[arg-type]
    )


def _spawn(work: pathlib.Path, grace: float) -> subprocess.Popen[bytes]:
    (work / "admin-token").write_text(ADMIN + "\n")
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "continue_orchestrator",
            "gateway",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
            "--record-root",
            str(work / "records"),
            "--ledger",
            f"sqlite:///{work / 'ledger.db'}",
            "--admin-token-file",
            str(work / "admin-token"),
            "--grace-seconds",
            str(grace),
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={k: v for k, v in os.environ.items() if not k.startswith("ORCHESTRATOR_")},
    )


def _files_holding(root: pathlib.Path, value: str) -> list[pathlib.Path]:
    return [
        path
        for path in root.rglob("*")
        if path.is_file() and path.name != "admin-token" and value.encode() in path.read_bytes()
    ]


@contextlib.asynccontextmanager
async def _gateway_process(
    work: pathlib.Path, grace: float = 20
) -> AsyncIterator[tuple[subprocess.Popen[bytes], str, str]]:
    process = await asyncio.to_thread(_spawn, work, grace)
    try:
        assert process.stdout is not None
        line = (await asyncio.wait_for(asyncio.to_thread(process.stdout.readline), 60)).decode()
        assert line.startswith("gateway serving agents at "), line + _stderr(process)
        agents, admin = line.removeprefix("gateway serving agents at ").strip().split(", admin at ")
        yield process, agents, admin
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(10)


async def _refused(url: str) -> bool:
    """Whether a new connection to ``url`` is refused. A probe that raced the signal may
    be accepted, then held until the drain ends or dropped: that is not a refusal yet."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=1)) as fresh:
        try:
            async with fresh.get(url):
                return False
        except aiohttp.ClientConnectorError:
            return True
        except (TimeoutError, aiohttp.ClientError):
            return False


def _stderr(process: subprocess.Popen[bytes]) -> str:
    if process.poll() is None:
        process.kill()
        process.wait(10)
    assert process.stderr is not None
    return process.stderr.read().decode(errors="replace")


def _registration(model_base: str, *, uid: str = "run-standalone") -> runs.Registration:
    manifests, digest = _snapshot()
    return runs.Registration(
        uid=uid,
        name="fix-rounding",
        namespace="demo",
        token=TOKEN,
        expires_at=time.time() + 600,
        policy=json.dumps(manifests).encode(),
        policy_digest=digest,
        allowed_egress=("127.0.0.1",),
        config=continue_config.text(
            name="demo", model_name="m", model="m", api_base=model_base, roles=None
        ),
        secrets={"OPENAI_API_KEY": UPSTREAM_KEY},
    )


async def _stream(session: aiohttp.ClientSession, url: str, content: str) -> list[dict[str, Any]]:
    chunks = []
    body = {"model": "m", "stream": True, "messages": [{"role": "user", "content": content}]}
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with session.post(url, json=body, headers=headers) as response:
        assert response.status == 200, await response.text()
        async for line in response.content:
            if line.startswith(b"data: ") and line.strip() != b"data: [DONE]":
                chunks.append(json.loads(line[6:]))
            elif line.strip() == b"data: [DONE]":
                chunks.append({"done": True})
    return chunks


def test_standalone_gateway_registers_serves_and_seals(tmp_path: pathlib.Path) -> None:
    turns = [
        {
            "text": "Reading the sources.",
            "tool_calls": [{"name": "Read", "id": "r1", "arguments": {"filepath": "src/a.py"}}],
        },
    ]

    async def main() -> None:
        model = local.ScriptedModel(local.Script.from_data({"turns": turns}))
        model_base = await model.start()
        try:
            async with _gateway_process(tmp_path) as (process, agents, admin):
                async with gateway.Client(admin, ADMIN) as client:
                    answer = await client.register(_registration(model_base))
                    assert answer["apiBase"] == f"{agents}/runs/run-standalone/v1"
                    async with aiohttp.ClientSession() as session:
                        chunks = await _stream(
                            session, answer["apiBase"] + "/chat/completions", "read it"
                        )
                    calls = [
                        part
                        for chunk in chunks
                        for choice in chunk.get("choices", [])
                        for part in choice["delta"].get("tool_calls") or []
                    ]
                    assert [c["function"]["name"] for c in calls] == ["Read"]
                    assert chunks[-1] == {"done": True}
                    # The real key went upstream; the agent only ever held its run token.
                    assert model.authorizations == [f"Bearer {UPSTREAM_KEY}"]
                    status = await client.status("run-standalone")
                    assert status is not None and status["steps"] == 1
                    digest = await client.unregister("run-standalone")
                    assert digest is not None
                    assert await client.unregister("run-standalone") is None
                process.send_signal(signal.SIGTERM)
                assert await asyncio.to_thread(process.wait, 30) == 0
        finally:
            await model.stop()
        store = records.BlobStore(str(tmp_path / "records"))
        manifest = json.loads(store.get(digest))
        assert [e["kind"] for e in manifest["exchanges"]] == ["model"]
        with ledger.open(f"sqlite:///{tmp_path / 'ledger.db'}") as book:
            kinds = [e.kind for e in book.entries(run_uid="run-standalone")]
            ledger.verify(book).raise_for_problems()
        assert kinds[:2] == ["policy.decision", "tool.call"]
        assert await asyncio.to_thread(_files_holding, tmp_path, UPSTREAM_KEY) == []

    asyncio.run(main())


def test_sigterm_finishes_the_call_in_flight_then_seals_and_exits(tmp_path: pathlib.Path) -> None:
    # Slow enough that a loaded machine still refuses new calls before this one ends.
    turns = [{"text": "A slow but complete answer.", "delay_ms": 6000}]

    async def main() -> None:
        model = local.ScriptedModel(local.Script.from_data({"turns": turns}))
        model_base = await model.start()
        try:
            async with _gateway_process(tmp_path) as (process, agents, admin):
                async with gateway.Client(admin, ADMIN) as client:
                    answer = await client.register(_registration(model_base))
                async with aiohttp.ClientSession() as session:
                    call = asyncio.ensure_future(
                        _stream(session, answer["apiBase"] + "/chat/completions", "slowly")
                    )
                    deadline = time.monotonic() + 30
                    while not model.requests:  # the call has reached upstream
                        assert time.monotonic() < deadline, _stderr(process)
                        await asyncio.sleep(0.02)
                    process.send_signal(signal.SIGTERM)
                    # No new calls are taken while the old one finishes...
                    deadline = time.monotonic() + 5
                    while not await _refused(agents + "/healthz"):
                        assert time.monotonic() < deadline, "still serving 5 s after SIGTERM"
                        await asyncio.sleep(0.05)
                    assert not call.done()
                    # ...and the one in flight completes, [DONE] included.
                    chunks = await asyncio.wait_for(call, 30)
                text = "".join(
                    choice["delta"].get("content") or ""
                    for chunk in chunks
                    for choice in chunk.get("choices", [])
                )
                assert text == "A slow but complete answer."
                assert chunks[-1] == {"done": True}
                assert await asyncio.to_thread(process.wait, 30) == 0
                assert "sealed 1 live run record(s)" in _stderr(process)
        finally:
            await model.stop()
        sealed = (tmp_path / "records" / "runs" / "run-standalone" / "manifest").read_text()
        store = records.BlobStore(str(tmp_path / "records"))
        manifest = json.loads(store.get(sealed.strip()))
        assert [e["kind"] for e in manifest["exchanges"]] == ["model"]

    asyncio.run(main())
