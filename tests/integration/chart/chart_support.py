"""Running the helm that hack/build-k8s.sh builds against the chart."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import yaml
from tests.kube.controlplane import ensure_binaries, helm_binary

ROOT = Path(__file__).resolve().parents[3]
CHART = ROOT / "charts" / "continue-orchestrator"
RUNNER = "registry.example/continue-orchestrator/runner@sha256:" + "2" * 64
REQUIRED = {"runner.image": RUNNER, "ledger.url": "postgresql://orchestrator@ledger-db/ledger"}
JSON = dict[str, Any]


def helm() -> str:
    ensure_binaries()
    return str(helm_binary())


def run(
    *args: str, env: dict[str, str] | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [helm(), *args], capture_output=True, text=True, env=env, timeout=300, check=False
    )
    if check and result.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed:\n{result.stderr}")
    return result


def set_args(values: dict[str, str]) -> list[str]:
    return [arg for key, value in values.items() for arg in ("--set", f"{key}={value}")]


def template(
    *extra: str,
    values: dict[str, str] | None = None,
    namespace: str = "continue-orchestrator",
    release: str = "continue-orchestrator",
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    return run(
        "template",
        release,
        str(CHART),
        "--namespace",
        namespace,
        *set_args({**REQUIRED, **(values or {})}),
        *extra,
        check=check,
    )


def documents(text: str) -> list[JSON]:
    return [d for d in yaml.safe_load_all(text) if d]


def find(docs: list[JSON], kind: str, name: str | None = None) -> JSON:
    found = [d for d in docs if d["kind"] == kind and name in (None, d["metadata"]["name"])]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def env_of(container: JSON) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}
