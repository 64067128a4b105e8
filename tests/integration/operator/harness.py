"""The operator under test as a real process, and helpers to drive AgentRuns through it.

The operator runs as ``orchestrator operator`` in a subprocess (so killing it is a real
crash), against the local control plane, with the pod executor as its kubelet and a
stand-in runner (``fake_runner.py``) whose behaviour each test sets per run.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.kube import ControlPlane, PodExecutor
from tests.kube.rest import ApiError

from continue_orchestrator import api, ledger

ROOT = Path(__file__).resolve().parents[3]
FAKE_RUNNER = Path(__file__).with_name("fake_runner.py")
IMAGE = "registry.example/continue-orchestrator/runner@sha256:" + "1" * 64
GROUP_PATH = f"/apis/{api.GROUP}/{api.VERSION}"
CONFIG = "name: test-agent\nversion: 0.0.1\nschema: v1\nmodels: []\n"
TERMINAL = {p.value for p in api.TERMINAL_PHASES}
JSON = dict[str, Any]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Operator:
    """One ``orchestrator operator`` process; ``start``, ``kill`` (SIGKILL), ``stop``."""

    def __init__(
        self,
        kube: ControlPlane,
        workdir: Path,
        *,
        peering: str | None = None,
        priority: int | None = None,
        extra: tuple[str, ...] = (),
        resync_seconds: float = 2,
    ) -> None:
        self.kube = kube
        self.workdir = workdir
        self.ledger_path = workdir / "ledger.db"
        # Not under /tmp: in the sandbox that is the pod's own emptyDir.
        self.control = Path(tempfile.mkdtemp(prefix="operator-control-", dir="/var/tmp"))
        self.control.chmod(0o755)
        weakref.finalize(self, shutil.rmtree, self.control, True)
        self.peering = peering
        self.priority = priority
        self.extra = extra
        self.resync_seconds = resync_seconds
        self.process: subprocess.Popen[bytes] | None = None
        self.metrics_port = 0
        self.starts = 0

    @property
    def ledger_url(self) -> str:
        return f"sqlite:///{self.ledger_path}"

    def start(self, timeout: float = 60.0) -> Operator:
        self.starts += 1
        self.metrics_port = free_port()
        health = free_port()
        argv = [
            str(ROOT / ".venv" / "bin" / "orchestrator"),
            "operator",
            "--runner-image",
            IMAGE,
            "--runner-command",
            f"/usr/bin/python3 {FAKE_RUNNER} {self.control}",
            "--ledger",
            self.ledger_url,
            "--operator-namespace",
            "orchestrator-system",
            "--resync-seconds",
            "2",
            "--timeout-grace-seconds",
            "5",
            "--metrics-port",
            str(self.metrics_port),
            "--liveness",
            f"http://127.0.0.1:{health}/healthz",
            *self.extra,
        ]
        if self.peering is None:
            argv.append("--standalone")
        else:
            argv += ["--peering", self.peering]
            if self.priority is not None:
                argv += ["--priority", str(self.priority)]
        log = (self.workdir / f"operator-{self.starts}.log").open("ab")
        self.process = subprocess.Popen(
            argv, env=self.kube.env(), stdout=log, stderr=subprocess.STDOUT, cwd=self.workdir
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"operator exited {self.process.returncode}:\n{self.log_tail()}")
            with contextlib.suppress(OSError):
                urllib.request.urlopen(f"http://127.0.0.1:{health}/healthz", timeout=1).read()
                return self
            time.sleep(0.2)
        raise TimeoutError(f"operator not healthy after {timeout}s:\n{self.log_tail()}")

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()

    def log_tail(self, lines: int = 60) -> str:
        out = []
        for path in sorted(self.workdir.glob("operator-*.log")):
            out += path.read_text(errors="replace").splitlines()[-lines:]
        return "\n".join(out[-lines:])

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics") as r:
            return str(r.read().decode())

    def behave(self, run: str, *, sleep: float = 1, exit: int = 0) -> None:
        """Set what the stand-in runner of ``run`` does."""
        path = self.control / run
        path.write_text(json.dumps({"sleep": sleep, "exit": exit}))
        path.chmod(0o644)

    def entries(
        self, uid: str, *, until: str | None = None, timeout: float = 30.0
    ) -> list[ledger.Entry]:
        """The run's ledger entries; with ``until``, once an entry of that kind is there.

        The terminal phase is written before ``run.finished`` is appended (only the status
        write that wins may append it), so a reader who saw the phase waits for the entry.
        """
        deadline = time.monotonic() + timeout
        while True:
            with ledger.open(self.ledger_url, create=False) as book:
                found = list(book.entries(run_uid=uid))
            if until is None or any(e.kind.value == until for e in found):
                return found
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"no {until} entry for run {uid} after {timeout}s: {kinds(found)}\n"
                    + self.log_tail()
                )
            time.sleep(0.2)


def setup_cluster(kube: ControlPlane) -> None:
    """CRDs (ours and kopf's peering) and the gvisor RuntimeClass."""
    files = sorted((ROOT / "crds").glob("*.yaml"))
    kube.apply(*files)
    for name in (
        "agentruns.orchestrator.continue.dev",
        "runpolicies.orchestrator.continue.dev",
        "clusterrunpolicies.orchestrator.continue.dev",
        "clusterkopfpeerings.kopf.dev",
        "kopfpeerings.kopf.dev",
    ):
        path = f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}"
        deadline = time.monotonic() + 30
        while not any(
            c["type"] == "Established" and c["status"] == "True"
            for c in (kube.rest.get(path).get("status") or {}).get("conditions") or []
        ):
            if time.monotonic() > deadline:
                raise TimeoutError(f"CRD {name} not Established after 30s")
            time.sleep(0.1)
    with contextlib.suppress(ApiError):
        kube.rest.request(
            "POST",
            "/apis/node.k8s.io/v1/runtimeclasses",
            {
                "apiVersion": "node.k8s.io/v1",
                "kind": "RuntimeClass",
                "metadata": {"name": "gvisor"},
                "handler": "runsc",
            },
        )


def run_policy(namespace: str, name: str = "default", **spec: Any) -> JSON:
    body: JSON = {
        "defaultEffect": "Deny",
        "allowedSecrets": ["API_TOKEN"],
        "rules": [
            {
                "name": "acme-repos",
                "actions": ["repository.access"],
                "repositories": ["https://github.com/acme/*"],
                "effect": "Allow",
            },
            {
                "name": "granted-secrets",
                "actions": ["secret.read"],
                "secrets": ["API_TOKEN"],
                "effect": "Allow",
            },
        ],
        **spec,
    }
    return {
        "apiVersion": api.API_VERSION,
        "kind": "RunPolicy",
        "metadata": {"name": name, "namespace": namespace},
        "spec": body,
    }


def agent_run(namespace: str, name: str, **spec: Any) -> JSON:
    body: JSON = {
        "agent": {"config": CONFIG},
        "prompt": "make the tests pass",
        "repository": {"url": "https://github.com/acme/widgets"},
        "policyRef": {"name": "default"},
        "timeoutSeconds": 600,
        **spec,
    }
    return {
        "apiVersion": api.API_VERSION,
        "kind": "AgentRun",
        "metadata": {"name": name, "namespace": namespace},
        "spec": body,
    }


def secret(namespace: str, name: str, data: dict[str, str]) -> JSON:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace},
        "stringData": data,
    }


class Cluster:
    """Thin helpers over the control plane's REST client."""

    def __init__(self, kube: ControlPlane) -> None:
        self.kube = kube
        self.rest = kube.rest

    def create(self, manifest: JSON) -> JSON:
        kind = manifest["kind"]
        ns = manifest["metadata"].get("namespace")
        path = {
            "AgentRun": f"{GROUP_PATH}/namespaces/{ns}/agentruns",
            "RunPolicy": f"{GROUP_PATH}/namespaces/{ns}/runpolicies",
            "Secret": f"/api/v1/namespaces/{ns}/secrets",
            "ConfigMap": f"/api/v1/namespaces/{ns}/configmaps",
        }[kind]
        return self.rest.request("POST", path, manifest)

    def run(self, namespace: str, name: str) -> JSON | None:
        try:
            return self.rest.get(f"{GROUP_PATH}/namespaces/{namespace}/agentruns/{name}")
        except ApiError as error:
            if error.status == 404:
                return None
            raise

    def patch_run(self, namespace: str, name: str, patch: JSON) -> JSON:
        return self.rest.request(
            "PATCH",
            f"{GROUP_PATH}/namespaces/{namespace}/agentruns/{name}",
            patch,
            content_type="application/merge-patch+json",
        )

    def list(self, path: str, **params: str) -> list[JSON]:
        return list(self.rest.get(path, **params).get("items", []))

    def pods(self, namespace: str, uid: str | None = None) -> list[JSON]:
        selector = f"{api.GROUP}/run-uid" + (f"={uid}" if uid else "")
        return self.list(f"/api/v1/namespaces/{namespace}/pods", labelSelector=selector)

    def events(self, namespace: str, uid: str) -> list[JSON]:
        return [
            e
            for e in self.list(f"/api/v1/namespaces/{namespace}/events")
            if e.get("involvedObject", {}).get("uid") == uid
        ]

    def wait(
        self,
        what: str,
        probe: Callable[[], Any],
        timeout: float = 60.0,
        explain: Callable[[], str] = lambda: "",
    ) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = probe()
            if value:
                return value
            time.sleep(0.25)
        raise AssertionError(f"timed out after {timeout}s waiting for {what}\n{explain()}")

    def wait_phase(
        self,
        namespace: str,
        name: str,
        phases: set[str] | frozenset[str] = frozenset(TERMINAL),
        timeout: float = 60.0,
        explain: Callable[[], str] = lambda: "",
    ) -> JSON:
        def probe() -> JSON | None:
            run = self.run(namespace, name)
            phase = ((run or {}).get("status") or {}).get("phase")
            return run if phase in phases else None

        return dict(
            self.wait(
                f"AgentRun {namespace}/{name} in {sorted(phases)}",
                probe,
                timeout,
                lambda: (
                    json.dumps((self.run(namespace, name) or {}).get("status"), indent=1)
                    + "\n"
                    + explain()
                ),
            )
        )


def conditions(run: JSON) -> dict[str, JSON]:
    return {c["type"]: c for c in (run.get("status") or {}).get("conditions", [])}


def kinds(entries: list[ledger.Entry]) -> list[str]:
    return [entry.kind.value for entry in entries]


def exactly_once(cluster: Cluster, operator: Operator, namespace: str, names: list[str]) -> None:
    """Each run: terminal, one run.created and run.finished, one pod at most, one terminal
    Event."""
    for name in names:
        run = cluster.run(namespace, name)
        assert run is not None
        uid = run["metadata"]["uid"]
        assert run["status"]["phase"] in TERMINAL
        found = kinds(operator.entries(uid, until="run.finished"))
        assert found.count("run.created") == 1, (name, found)
        assert found.count("run.finished") == 1, (name, found)
        assert len(cluster.pods(namespace, uid)) <= 1
        cluster.wait(
            f"the terminal Event of {name}",
            lambda: any(e["reason"] in TERMINAL for e in cluster.events(namespace, uid)),  # noqa: B023
            timeout=15,
        )
        terminal = [e for e in cluster.events(namespace, uid) if e["reason"] in TERMINAL]
        assert len(terminal) == 1 and terminal[0].get("count", 1) == 1, (name, terminal)


def report(executor: PodExecutor, namespace: str, pod: str, *, timeout: float = 0) -> JSON:
    """What the stand-in runner saw in its sandbox (its first stdout line), waiting up to
    ``timeout`` seconds for it."""
    deadline = time.monotonic() + timeout
    while True:
        for line in executor.logs(namespace, pod).splitlines():
            if line.startswith('{"report"'):
                return dict(json.loads(line)["report"])
        if time.monotonic() >= deadline:
            raise AssertionError(f"no report in the log of pod {namespace}/{pod}")
        time.sleep(0.5)
