"""Helpers and fixtures for the runner driven end to end: the real Continue CLI, a real git origin,
the scripted model, and a stand-in for the gateway's run-facing surface.

The stand-in does what the runner relies on the gateway for and nothing more: it
serves ``/runs/{run}/v1/chat/completions`` only to the run token (forwarding to the
scripted model, streaming included) and accepts ``/runs/{run}/outcome``. It records
every path and Authorization header it sees so tests can prove where the CLI called.
"""

from __future__ import annotations

import asyncio
import json
import pathlib
import secrets
import subprocess
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from tests import continue_config

from continue_orchestrator import local, runner

ROOT = pathlib.Path(__file__).resolve().parents[1]

PERMISSIONS_ALL = "allow:\n  - Read\n  - List\n  - Write\n  - Edit\n  - Bash\n"


@pytest.fixture(scope="session")
def cn_path() -> str:
    """The pinned Continue CLI, installed into the cache by hack/install-cn.sh."""
    result = subprocess.run(
        [str(ROOT / "hack" / "install-cn.sh")], capture_output=True, text=True, check=True
    )
    return result.stdout.strip().splitlines()[-1]


@dataclass
class Origin:
    url: str
    commit: str
    path: pathlib.Path


def make_origin(base: pathlib.Path, files: dict[str, str]) -> Origin:
    work = base / "origin-work"
    work.mkdir()
    for name, text in files.items():
        (work / name).parent.mkdir(parents=True, exist_ok=True)
        (work / name).write_text(text)
    env = {"GIT_CONFIG_NOSYSTEM": "1", "HOME": str(base), "PATH": "/usr/bin:/bin"}

    def git(*args: str, cwd: pathlib.Path = work) -> str:
        return subprocess.run(
            ["git", *args], cwd=cwd, env=env, check=True, capture_output=True, text=True
        ).stdout.strip()

    git("init", "-q", "-b", "main")
    git("add", "-A")
    git("-c", "user.name=t", "-c", "user.email=t@example.invalid", "commit", "-qm", "base")
    commit = git("rev-parse", "HEAD")
    bare = base / "origin.git"
    git("clone", "-q", "--bare", str(work), str(bare), cwd=base)
    return Origin(url=f"file://{bare}", commit=commit, path=bare)


REPO_FILES = {
    ".gitignore": "__pycache__/\n.pytest_cache/\n",
    "README.md": "# demo\nThe answer is in src/answer.py.\n",
    "src/answer.py": "ANSWER = 41\n",
    "tests/check.sh": "#!/bin/sh\ngrep -q 'ANSWER = 42' src/answer.py\n",
}


@pytest.fixture
def origin(tmp_path: pathlib.Path) -> Origin:
    return make_origin(tmp_path, REPO_FILES)


@dataclass
class StandInGateway:
    model: local.ScriptedModel
    run: str
    token: str
    url: str = ""
    seen: list[tuple[str, str]] = field(default_factory=list)
    """(path, Authorization header) of every request."""
    outcomes: list[dict[str, Any]] = field(default_factory=list)
    receipt: dict[str, Any] = field(default_factory=dict)


def _serve(gateway: StandInGateway, upstream: str) -> web.Application:
    async def completions(request: web.Request) -> web.StreamResponse:
        auth = request.headers.get("Authorization", "")
        gateway.seen.append((request.path, auth))
        if request.match_info["run"] != gateway.run or auth != f"Bearer {gateway.token}":
            return web.json_response({"error": {"message": "unauthorized"}}, status=401)
        body = await request.read()
        async with (
            aiohttp.ClientSession() as session,
            session.post(
                f"{upstream}/chat/completions",
                data=body,
                headers={"Content-Type": "application/json"},
            ) as answer,
        ):
            response = web.StreamResponse(
                status=answer.status,
                headers={"Content-Type": answer.headers.get("Content-Type", "application/json")},
            )
            await response.prepare(request)
            async for chunk in answer.content.iter_any():
                await response.write(chunk)
            await response.write_eof()
            return response

    async def outcome(request: web.Request) -> web.Response:
        auth = request.headers.get("Authorization", "")
        gateway.seen.append((request.path, auth))
        if request.match_info["run"] != gateway.run or auth != f"Bearer {gateway.token}":
            return web.json_response({"error": "unauthorized"}, status=401)
        gateway.outcomes.append(await request.json())
        return web.json_response({"accepted": True, **gateway.receipt})

    app = web.Application()
    app.router.add_post("/runs/{run}/v1/chat/completions", completions)
    app.router.add_post("/runs/{run}/outcome", outcome)
    return app


@pytest.fixture
def stand_in_gateway() -> Iterator[Callable[[str], StandInGateway]]:
    """A factory: ``stand_in_gateway(script_yaml)`` starts the model and the stand-in."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    cleanups: list[Callable[[], Any]] = []

    def start(script: str, host: str = "127.0.0.1") -> StandInGateway:
        model = local.ScriptedModel(local.Script.from_yaml(script))
        gateway = StandInGateway(model=model, run="run-1", token=secrets.token_urlsafe(32))

        async def up() -> str:
            upstream = await model.start()
            app_runner = web.AppRunner(_serve(gateway, upstream), access_log=None)
            await app_runner.setup()
            site = web.TCPSite(app_runner, host, 0)
            await site.start()
            port = app_runner.addresses[0][1]
            cleanups.append(app_runner.cleanup)
            cleanups.append(model.stop)
            return f"http://{host}:{port}"

        gateway.url = asyncio.run_coroutine_threadsafe(up(), loop).result(30)
        return gateway

    yield start
    for cleanup in reversed(cleanups):
        asyncio.run_coroutine_threadsafe(cleanup(), loop).result(30)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)


def bundle_for(
    gateway: StandInGateway,
    origin: Origin,
    tmp_path: pathlib.Path,
    cn: str,
    **overrides: Any,
) -> runner.RunBundle:
    """A bundle whose workspace and home live under ``tmp_path``."""
    data: dict[str, Any] = {
        "run": gateway.run,
        "repository": {"url": origin.url, "ref": "main", "commit": origin.commit},
        "config": CONFIG,
        "prompt": "Make the answer 42.",
        "gatewayUrl": gateway.url,
        "allowedSecrets": ["OPENAI_API_KEY"],
        "permissionsYaml": PERMISSIONS_ALL,
        "agentTimeoutSeconds": 120,
        "paths": {
            "workspace": str(tmp_path / "workspace"),
            "home": str(tmp_path / "home"),
            "cn": cn,
        },
    }
    data.update(overrides)
    return runner.RunBundle.model_validate(json.loads(json.dumps(data)))


CONFIG = (
    "# An unchanged user config: the runner must route it through the gateway.\n"
    + continue_config.text(roles="[chat, edit]")
)


def probe_report(state_dir: pathlib.Path, uid: str, call_id: str) -> dict[str, Any]:
    """What a probe the agent ran printed on its ``PROBE {json}`` line, read from the run's
    record (the tool result the gateway saw), never from anything the agent claims."""
    from continue_orchestrator import records

    store = records.BlobStore(str(state_dir / "records"))
    results = [
        json.loads(store.get(x.blobs["result"]))
        for x in records.load(store, uid).exchanges
        if x.kind == "tool.result" and x.facts.get("toolCallId") == call_id
    ]
    assert len(results) == 1, results
    line = next(w for w in str(results[0]["content"]).splitlines() if "PROBE " in w)
    found: dict[str, Any] = json.loads(line.split("PROBE ", 1)[1])
    return found
