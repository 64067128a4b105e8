"""Replay wall time against the original run, with a model that takes 200 ms a turn.

One AgentRun (the real Continue CLI in gVisor behind the gateway, ``orchestrator run``'s
pipeline) is recorded against the scripted model answering each of its turns after
200 ms, then replayed from its record. A third run with a zero-latency scripted model
measures the floor a replay cannot go under while tools really run: sandbox and
network namespace, clone, the CLI's start-up and tool calls, ledger and attestation.
The cost of matching one recorded request (normalise, canonical JSON, digest) is
measured apart. The goal (replay <= 10% of the original) is reported against all three.

Each run is broken down from its own ledger entries' times, so anyone can see what bounds
the ratio: ``setup`` (policy, digests, network namespace, gateway: start to
``run.started``), ``to_first_answer`` (gVisor, the runner's start, clone, the CLI's
start-up, the first model answer), ``turns`` (first answer to the last), split into
``agent`` (the CLI running the tool and building the next request: an answer's
``policy.decision`` to the next ``tool.result``) and ``gateway_model`` (the rest: the
gateway and the model's latency), ``wrap_up`` (the CLI's exit, diff, verify, outcome)
and ``finish`` (teardown, record seal, ledger verification, attestation). The fixed
costs inside one sandbox (``runsc do /bin/true``, the runner's imports, ``cn
--version``) are timed apart as the floor's parts no replay can remove.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import datetime
from typing import Any

from continue_orchestrator import errors, ledger, local, records
from continue_orchestrator.local import _options

REPO = pathlib.Path(__file__).resolve().parents[1]
TURN_MS = 200
TOOL_TURNS = int(os.environ.get("BENCH_REPLAY_TURNS", "12"))
KEY = "sk-bench-placeholder-0123456789"
CONFIG = """name: bench
version: 1.0.0
schema: v1
models:
  - name: fixer
    provider: openai
    model: gpt-4.1
    apiBase: https://api.openai.com/v1
    apiKey: ${{ secrets.OPENAI_API_KEY }}
    roles: [chat]
"""
POLICY = """apiVersion: orchestrator.continue.dev/v1alpha1
kind: RunPolicy
metadata: {name: bench, namespace: bench}
spec:
  defaultEffect: Deny
  allowedSecrets: [OPENAI_API_KEY]
  sandbox: {runtimeClassName: gvisor, maxTimeoutSeconds: 900}
  rules:
    - {name: repo, actions: [repository.access], repositories: ["file://ROOT/*"], effect: Allow}
    - {name: key, actions: [secret.read], secrets: [OPENAI_API_KEY], effect: Allow}
    - {name: tools, actions: [tool.call], tools: [Read, List, Bash], effect: Allow}
    - {name: read, actions: [file.read], paths: ["**"], effect: Allow}
    - {name: look, actions: [shell.exec], commands: ["cat *", "ls*", "wc *"], effect: Allow}
"""


def _script(delay_ms: int) -> dict[str, Any]:
    calls = [
        ("Read", {"filepath": "README.md"}),
        ("Bash", {"command": "ls src"}),
        ("Read", {"filepath": "src/app.py"}),
        ("Bash", {"command": "wc -l src/app.py"}),
    ]
    turns: list[dict[str, Any]] = [
        {
            "delay_ms": delay_ms,
            "tool_calls": [
                {"id": f"call_{n}", "name": calls[n % 4][0], "arguments": calls[n % 4][1]}
            ],
        }
        for n in range(TOOL_TURNS)
    ]
    turns.append({"delay_ms": delay_ms, "text": "Looked around; nothing to change."})
    return {"turns": turns}


def _git(cwd: pathlib.Path, *args: str) -> None:
    env = {
        **os.environ, "GIT_CONFIG_NOSYSTEM": "1", "HOME": str(cwd),
        "GIT_AUTHOR_NAME": "b", "GIT_AUTHOR_EMAIL": "b@example.invalid",
        "GIT_COMMITTER_NAME": "b", "GIT_COMMITTER_EMAIL": "b@example.invalid",
    }  # fmt: skip
    subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, check=True)


def _project(root: pathlib.Path) -> local.Inputs:
    work = root / "work"
    (work / "src").mkdir(parents=True)
    (work / "README.md").write_text("bench\n")
    (work / "src" / "app.py").write_text("".join(f"x{n} = {n}\n" for n in range(50)))
    _git(work, "init", "-q", "-b", "main")
    _git(work, "add", "-A")
    _git(work, "commit", "-qm", "base")
    _git(root, "clone", "-q", "--bare", str(work), str(root / "origin.git"))
    (root / "runpolicy.yaml").write_text(POLICY.replace("ROOT", str(root)))
    manifest = root / "agentrun.json"
    manifest.write_text(
        json.dumps(
            {
                "apiVersion": "orchestrator.continue.dev/v1alpha1",
                "kind": "AgentRun",
                "metadata": {"name": "bench", "namespace": "bench"},
                "spec": {
                    "policyRef": {"name": "bench"},
                    "repository": {"url": f"file://{root / 'origin.git'}", "ref": "main"},
                    "agent": {"config": CONFIG},
                    "secrets": [
                        {"name": "OPENAI_API_KEY", "secretKeyRef": {"name": "k", "key": "k"}}
                    ],
                    "prompt": "Look around.",
                    "timeoutSeconds": 600,
                },
            }
        )
    )
    os.environ["BENCH_REPLAY_KEY"] = KEY
    return local.load(
        manifest,
        policy_files=[root / "runpolicy.yaml"],
        secrets=["OPENAI_API_KEY=env:BENCH_REPLAY_KEY"],
    )


def _timed_run(
    inputs: local.Inputs, state: pathlib.Path, script: pathlib.Path
) -> tuple[float, local.Report, dict[str, float]]:
    options = local.Options(state_dir=state, model_script=script, approvals="deny")
    started, wall = time.perf_counter(), time.time()
    report = local.run(inputs, options, say=lambda line: None)
    elapsed = time.perf_counter() - started
    if report.phase != "Succeeded" or report.record_digest is None:
        raise errors.OrchestratorError(f"the benchmark run ended {report.phase}: {report.reason}")
    return elapsed, report, _breakdown(state, report.uid, wall, wall + elapsed)


def _breakdown(state: pathlib.Path, uid: str, start: float, end: float) -> dict[str, float]:
    """Seconds per phase of one run, from its ledger entries' times (see the docstring)."""
    with ledger.open(f"sqlite:///{state / 'ledger.db'}") as book:
        entries = [
            (str(e.kind), e.actor, datetime.fromisoformat(e.time.replace("Z", "+00:00")))
            for e in book.entries(run_uid=uid)
        ]

    def at(kind: str, actor: str | None = None, *, last: bool = False) -> float:
        found = [t for k, a, t in entries if k == kind and actor in (None, a)]
        return (found[-1] if last else found[0]).timestamp()

    answers = [t.timestamp() for k, _, t in entries if k == "tool.call"]
    requests = [t.timestamp() for k, _, t in entries if k == "tool.result"]
    agent = sum(min((r for r in requests if r > a), default=a) - a for a in answers)
    running, first = at("run.started"), at("policy.decision")
    last, runner = at("model.response", last=True), at("run.finished", "runner")
    return {
        "setup": running - start,
        "to_first_answer": first - running,
        "turns": last - first,
        "agent": agent,
        "gateway_model": (last - first) - agent,
        "wrap_up": runner - last,
        "finish": end - runner,
    }


def _fixed_costs() -> dict[str, float]:
    """Seconds for what every sandboxed run starts with, each in a fresh gVisor sandbox."""
    cn = os.path.realpath(local.default_cn())
    binds = [local.Bind(str(pathlib.Path(cn).parents[2])), *local.python_binds()]
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": "/tmp"}
    costs: dict[str, float] = {}
    with local.Sandbox() as box:
        for name, argv in (
            ("runsc_do_true", ["/bin/true"]),
            ("runner_imports", [sys.executable, "-c", "import continue_orchestrator.runner"]),
            ("cn_version", [cn, "--version"]),
        ):
            best = float("inf")
            for _ in range(2):
                started = time.perf_counter()
                done = box.run(argv, env=env, cwd="/", binds=binds, timeout=120)
                if done.exit_code != 0:
                    raise errors.SandboxError(f"{argv[0]} failed in the sandbox", where=name)
                best = min(best, time.perf_counter() - started)
            costs[name] = best
    return costs


def _matching_cost(store: records.BlobStore, digest: str) -> float:
    """Milliseconds to match one recorded request (the largest) against itself."""
    turns = records.recorded_turns(records.record_by_digest(store, digest))
    body = max((turn.body() for turn in turns), key=lambda b: len(json.dumps(b)))
    rounds = 50
    started = time.perf_counter()
    for _ in range(rounds):
        assert records.compare(body, body, turn=0, step=1) is None
    return (time.perf_counter() - started) / rounds * 1000


def run() -> Iterator[dict[str, Any]]:
    try:
        local.runsc_path()
    except errors.SandboxError as error:
        yield {"name": "replay.skipped", "value": 0, "unit": "", "reason": error.message}
        return
    if os.geteuid() != 0:
        yield {"name": "replay.skipped", "value": 0, "unit": "", "reason": "needs root"}
        return
    subprocess.run([str(REPO / "hack" / "install-cn.sh")], capture_output=True, check=True)
    # The runner image is the package source's digest; an edit to the working tree during
    # the benchmark would make the replay input drift, so pin it for the benchmark.
    image, source_digest = _options.runner_image(), _options.runner_image
    _options.runner_image = lambda: image
    try:
        yield from _measure()
    finally:
        _options.runner_image = source_digest


def _measure() -> Iterator[dict[str, Any]]:
    with tempfile.TemporaryDirectory(prefix="bench-replay-") as temporary:
        root = pathlib.Path(temporary)
        inputs = _project(root)
        slow, fast = root / "slow.yaml", root / "fast.yaml"
        slow.write_text(json.dumps(_script(TURN_MS)))
        fast.write_text(json.dumps(_script(0)))
        _timed_run(inputs, root / "warm-up", fast)  # first-run costs: keys, ledger, page cache
        state = root / "state"
        original, report, original_parts = _timed_run(inputs, state, slow)
        assert report.record_digest is not None
        started, wall = time.perf_counter(), time.time()
        replayed = local.replay(
            report.record_digest,
            local.Options(state_dir=state, approvals="deny"),
            secrets={"OPENAI_API_KEY": KEY},
            say=lambda line: None,
        )
        replay = time.perf_counter() - started
        if not replayed.identical or replayed.replay is None:
            raise errors.OrchestratorError(f"the benchmark's replay diverged: {replayed.render()}")
        replay_parts = _breakdown(state, replayed.replay, wall, wall + replay)
        floor, _, floor_parts = _timed_run(inputs, root / "floor", fast)
        matching = _matching_cost(records.BlobStore(state / "records"), report.record_digest)
        fixed = _fixed_costs()
    turns = TOOL_TURNS + 1
    yield {"name": "replay.original_run", "value": round(original, 2), "unit": "s",
           "turns": turns, "model_time_s": turns * TURN_MS / 1000}  # fmt: skip
    yield {"name": "replay.replay_run", "value": round(replay, 2), "unit": "s",
           "identical": replayed.identical, "baseline": round(original, 2),
           "ratio": round(replay / original, 3), "goal": 0.10}  # fmt: skip
    yield {"name": "replay.floor_zero_latency_model", "value": round(floor, 2), "unit": "s",
           "baseline": round(original, 2), "ratio": round(floor / original, 3)}  # fmt: skip
    yield {"name": "replay.match_one_request", "value": round(matching, 3), "unit": "ms"}
    for run_name, parts in (("original", original_parts), ("replay", replay_parts),
                            ("floor", floor_parts)):  # fmt: skip
        for part, seconds in parts.items():
            yield {"name": f"replay.{run_name}.{part}", "value": round(seconds, 2), "unit": "s"}
    for name, seconds in fixed.items():
        yield {"name": f"replay.fixed.{name}", "value": round(seconds, 2), "unit": "s"}
    best = (floor - floor_parts["turns"]) / original
    yield {"name": "replay.bound_without_turns", "value": round(best, 3), "unit": "ratio",
           "goal": 0.10, "what": "(floor - its turns) / original: no replay goes under this "
           "while the sandbox, the clone and the CLI's start-up really run"}  # fmt: skip
