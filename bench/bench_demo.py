"""``make demo``'s run, timed: the whole ``orchestrator run`` and where its time goes.

One warm run of examples/demo (the real Continue CLI in gVisor behind the gateway, the
scripted model, ledger, record store, development-key attestation), as ``make demo``
runs it. The split comes from the ledger's own timestamps: before the sandbox starts
(manifests, policy, gateway, sandbox network), inside it (clone, agent, verify, up to
the runner's report), and after (record seal, checkpoint, attestation, ledger verify).
Goal: the whole run under 120 s warm.
"""

from __future__ import annotations

import datetime
import json
import os
import pathlib
import subprocess
import tempfile
import time
from collections.abc import Iterator
from typing import Any

from continue_orchestrator import ledger

REPO = pathlib.Path(__file__).resolve().parents[1]
DEMO = REPO / "examples" / "demo"


def _at(entry: ledger.Entry) -> float:
    return datetime.datetime.fromisoformat(entry.time.replace("Z", "+00:00")).timestamp()


def run() -> Iterator[dict[str, Any]]:
    subprocess.run([str(REPO / "hack" / "demo-origin.sh")], check=True, capture_output=True)
    subprocess.run([str(REPO / "hack" / "install-cn.sh")], check=True, capture_output=True)
    with tempfile.TemporaryDirectory(prefix="bench-demo-") as state:
        argv = [
            str(REPO / ".venv" / "bin" / "orchestrator"), "run", str(DEMO / "agentrun.yaml"),
            "--config-map", f"demo-agent={DEMO / 'continue' / 'config.yaml'}",
            "--secret", "OPENAI_API_KEY=env:DEMO_OPENAI_API_KEY",
            "--model-script", str(DEMO / "model-script.yaml"),
            "--approve-all", "--state-dir", state,
        ]  # fmt: skip
        env = {**os.environ, "DEMO_OPENAI_API_KEY": "sk-bench-placeholder-0123456789"}
        started = time.time()
        done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=300)
        wall = time.time() - started
        if done.returncode != 0:
            raise RuntimeError(f"the demo run failed:\n{done.stdout[-3000:]}{done.stderr[-3000:]}")
        (report_path,) = pathlib.Path(state).glob("runs/*/report.json")
        report = json.loads(report_path.read_text())
        with ledger.open(f"sqlite:///{state}/ledger.db") as book:
            entries = list(book.entries(run_uid=report["uid"]))
    by_kind: dict[str, ledger.Entry] = {}
    for entry in entries:
        key = f"{entry.kind.value}:{entry.actor == 'runner'}"
        by_kind.setdefault(key, entry)
    run_started = _at(by_kind["run.started:False"])
    runner_done = _at(by_kind["run.finished:True"])
    attested = _at(entries[-1])
    yield {"name": "demo_wall_seconds", "value": round(wall, 2), "unit": "s", "goal": 120,
           "ratio": round(wall / 120, 3)}  # fmt: skip
    yield {"name": "demo_before_sandbox_seconds", "value": round(run_started - started, 2),
           "unit": "s"}  # fmt: skip
    yield {"name": "demo_in_sandbox_seconds", "value": round(runner_done - run_started, 2),
           "unit": "s"}  # fmt: skip
    yield {"name": "demo_after_runner_seconds", "value": round(attested - runner_done, 2),
           "unit": "s"}  # fmt: skip
    yield {"name": "demo_tool_calls", "value": len(report["toolCalls"]), "unit": "calls"}
    yield {"name": "demo_ledger_entries", "value": len(entries), "unit": "entries"}
