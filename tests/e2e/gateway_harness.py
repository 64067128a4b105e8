"""Drives the real Continue CLI through the gateway to the scripted model.

One ``Harness`` is one run: a temporary git workspace with a bare ``origin`` whose
pre-receive hook writes a canary (so a push that got through cannot go unnoticed), the
scripted model, a gateway with a real SQLite ledger and record store, and ``cn -p``
pointed at the gateway with only the run token.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import pathlib
import subprocess
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from tests import continue_config

from continue_orchestrator import gateway, ledger, local, policy

REPO = pathlib.Path(__file__).resolve().parents[2]
UPSTREAM_KEY = "sk-upstream-REAL-key-0123456789"
SECRET_VALUE = "hunter2-very-secret-value"


def cn_path() -> str:
    result = subprocess.run(
        ["bash", str(REPO / "hack" / "install-cn.sh")], capture_output=True, text=True, check=True
    )
    return result.stdout.strip().splitlines()[-1]


POLICY = """\
apiVersion: orchestrator.continue.dev/v1alpha1
kind: RunPolicy
metadata: {name: e2e, namespace: test}
spec:
  defaultEffect: Deny
  approvers: {users: [alice]}
  rules:
    - name: agent-tools
      actions: [tool.call]
      tools: [Read, List, Write, Edit, MultiEdit, Bash]
      effect: Allow
    - name: read-workspace
      actions: [file.read]
      paths: ["**"]
      effect: Allow
    - name: write-sources
      actions: [file.write]
      paths: ["src/**"]
      effect: Allow
    - name: release-file  # `touch release.txt` writes it; the command itself is held below
      actions: [file.write]
      paths: ["release.txt"]
      effect: Allow
    - name: no-push
      actions: [shell.exec]
      commands: ["git push*"]
      effect: Deny
      reason: pushing is the orchestrator's job, not the agent's
    - name: release
      actions: [shell.exec]
      commands: ["touch release.txt"]
      effect: RequireApproval
      reason: releases need a person
"""


def load_policy(root: pathlib.Path) -> policy.PolicySet:
    path = root / "policy.yaml"
    path.write_text(POLICY)
    return policy.load_policies(path)


@dataclasses.dataclass
class Result:
    exit_code: int
    stdout: str
    stderr: str
    model: local.ScriptedModel
    gateway: gateway.Gateway
    registration: gateway.RunRegistration
    workspace: pathlib.Path
    remote: pathlib.Path
    records: pathlib.Path
    ledger_path: pathlib.Path
    manifest: str | None

    def entries(self) -> list[Any]:
        with ledger.open(f"sqlite:///{self.ledger_path}") as opened:
            return [e for e in opened.entries() if e.run_uid == self.registration.uid]

    def kinds(self) -> list[str]:
        return [str(entry.kind) for entry in self.entries()]


def git(cwd: pathlib.Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=cwd, capture_output=True, text=True, check=True
    ).stdout


def make_workspace(root: pathlib.Path) -> tuple[pathlib.Path, pathlib.Path]:
    remote = root / "origin.git"
    git(root, "init", "-q", "--bare", str(remote))
    hook = remote / "hooks" / "pre-receive"
    hook.write_text(f"#!/bin/sh\ntouch {root / 'PUSH_CANARY'}\ncat > /dev/null\n")
    hook.chmod(0o755)
    workspace = root / "ws"
    workspace.mkdir()
    (workspace / "README.md").write_text(f"hello readme\nthe key is {SECRET_VALUE}\n")
    (workspace / "src").mkdir()
    (workspace / "src" / "app.py").write_text("print('app')\n")
    git(workspace, "init", "-q", "-b", "main")
    git(workspace, "-c", "user.name=t", "-c", "user.email=t@example.com", "add", ".")
    git(workspace, "-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-qm", "base")
    git(workspace, "remote", "add", "origin", str(remote))
    return workspace, remote


PERMISSIONS = "allow:\n" + "".join(
    f"  - {tool}\n" for tool in ("Read", "List", "Write", "Edit", "MultiEdit", "Bash")
)


async def run_agent(
    root: pathlib.Path,
    turns: list[dict[str, Any]],
    *,
    person: Callable[[gateway.Gateway, str], Awaitable[None]] | None = None,
    approval_timeout: float = 60.0,
    prompt: str = "do the task",
) -> Result:
    workspace, remote = make_workspace(root)
    model = local.ScriptedModel(local.Script.from_data({"turns": turns}))
    model_base = await model.start()
    admin_token = gateway.new_token()
    ledger_path = root / "ledger.db"
    opened = ledger.open(f"sqlite:///{ledger_path}")
    server = gateway.Gateway(
        record_root=str(root / "records"),
        ledger=opened,
        admin_token=admin_token,
    )
    await server.start()
    registration = gateway.RunRegistration(
        uid="run-" + uuid.uuid4().hex[:12],
        token=gateway.new_token(),
        expires_at=time.time() + 600,
        policy_set=load_policy(root),
        name="e2e",
        namespace="test",
        models={"scripted": gateway.Upstream(model_base, UPSTREAM_KEY)},
        allowed_egress={"127.0.0.1"},
        secrets={"API_TOKEN": SECRET_VALUE},
        workspace=str(workspace),
        approval_timeout=approval_timeout,
    )
    api_base = server.register_run(registration)
    config = root / "config.yaml"
    config.write_text(
        continue_config.text(
            name="e2e",
            version="0.0.1",
            model_name="scripted",
            model="scripted",
            api_base=api_base,
            api_key=registration.token,
        )
    )
    global_dir = root / "continue"
    global_dir.mkdir()
    (global_dir / "permissions.yaml").write_text(PERMISSIONS)
    home = root / "home"
    home.mkdir()
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(home),
        "CONTINUE_GLOBAL_DIR": str(global_dir),
        "GIT_TERMINAL_PROMPT": "0",
    }
    person_task = (
        asyncio.ensure_future(person(server, registration.uid)) if person is not None else None
    )
    try:
        process = await asyncio.create_subprocess_exec(
            cn_path(),
            "-p",
            "--config",
            str(config),
            prompt,
            cwd=workspace,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        stdout, stderr = await asyncio.wait_for(process.communicate(), 180)
        if person_task is not None:
            await asyncio.wait_for(person_task, 30)
    finally:
        if person_task is not None and not person_task.done():
            person_task.cancel()
        manifest = await server.unregister_run(registration.uid)
        await server.stop()
        await model.stop()
        opened.close()
    return Result(
        exit_code=process.returncode or 0,
        stdout=stdout.decode(errors="replace"),
        stderr=stderr.decode(errors="replace"),
        model=model,
        gateway=server,
        registration=registration,
        workspace=workspace,
        remote=remote,
        records=root / "records",
        ledger_path=ledger_path,
        manifest=manifest,
    )
