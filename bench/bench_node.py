"""Pod start on the real node: gVisor against runc, measured in the same run.

A control plane and a real node (tests/kube/node.py: containerd, kubelet, kube-proxy,
kube-scheduler; hack/build-node.sh) are started for the bench, a busybox image is
imported, and ``BENCH_NODE_RUNS`` pods of each RuntimeClass are created one at a time,
alternating runc and gvisor so the machine's load hits both alike; each is timed from
the create's answer to the API server reporting it Running (polled every 50 ms), then
deleted. ``ratio`` = runc p50 / gvisor p50 (below 1: what the gVisor sandbox costs a
pod's start; each gVisor pod boots two sandboxes, the pause container's and the app's).

Then, on the same node, the deployed path (as tests/integration/deployed makes it): the
images hack/build-images.sh built imported into containerd, the chart helm-installed
once (operator and gateway as real pods; PostgreSQL ledger, record store, the relays),
a real Gitea seeded with the demo repository, and a scripted model on the node's
address. The demo's AgentRun (RunPolicy, ConfigMap, Secrets, in a namespace enforcing
the `restricted` Pod Security Standard) is created ``BENCH_NODE_DEPLOYED_RUNS`` times
(default 20), one at a time under names of their own; each is timed from just before
the create request to

- its runner pod's phase Running (the API server's view, polled every 50 ms);
- the agent's first model call: the moment the scripted model's chat handler receives
  the first request after the create (timed in the handler, before the body is read);
  it came through the gateway's Service, so the clone through the gateway, the
  runner's start and `cn`'s start in gVisor are all in it.

The bench's model answers every request with a text and no tool call, so `cn` ends after
one call and the run ends; the next run is created once the previous one is terminal and
its pod is not running.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import yaml
from aiohttp import web
from tests.kube import ControlPlane
from tests.kube.images import busybox_image
from tests.kube.node import Node, ensure_node_binaries
from tests.kube.rest import ApiError

RUNS = int(os.environ.get("BENCH_NODE_RUNS", "20"))
DEPLOYED_RUNS = int(os.environ.get("BENCH_NODE_DEPLOYED_RUNS", "20"))
RUNTIMES = ("runc", "gvisor")
RUN_UID_LABEL = "orchestrator.continue.dev/run-uid"
KEY = "sk-bench-placeholder-0123456789abcdef"
TERMINAL = ("Succeeded", "Failed", "Cancelled", "TimedOut", "Error")


def _percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _pod(name: str, image: str, runtime: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "runtimeClassName": runtime,
            "automountServiceAccountToken": False,
            "enableServiceLinks": False,
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": 0,
            "containers": [{"name": "main", "image": image, "imagePullPolicy": "Never",
                            "command": ["sleep", "600"]}],
        },
    }  # fmt: skip


def _start(kube: ControlPlane, namespace: str, image: str, runtime: str) -> float:
    """Seconds from the create's answer to phase Running; the pod is deleted after."""
    name = f"start-{runtime}-{uuid.uuid4().hex[:6]}"
    path = f"/api/v1/namespaces/{namespace}/pods"
    kube.rest.request("POST", path, _pod(name, image, runtime))
    begun = time.perf_counter()
    try:
        while True:
            phase = (kube.rest.get(f"{path}/{name}").get("status") or {}).get("phase")
            if phase == "Running":
                return time.perf_counter() - begun
            if phase in ("Succeeded", "Failed") or time.perf_counter() - begun > 120:
                raise RuntimeError(f"pod {namespace}/{name} ({runtime}) never ran: {phase}")
            time.sleep(0.05)
    finally:
        with contextlib.suppress(ApiError):
            kube.rest.request("DELETE", f"{path}/{name}",
                              {"apiVersion": "v1", "kind": "DeleteOptions",
                               "gracePeriodSeconds": 0})  # fmt: skip


def _figure(name: str, values: list[float], **extra: Any) -> dict[str, Any]:
    p50 = statistics.median(values)
    return {"name": name, "value": round(p50, 3), "unit": "s", "p50": round(p50, 3),
            "p99": round(_percentile(values, 0.99), 3), "runs": len(values), **extra}  # fmt: skip


class _Model:
    """A scripted model (local.ScriptedModel) on the node's address, on a loop of its own,
    whose chat handler notes when each request arrives."""

    def __init__(self, host: str) -> None:
        from continue_orchestrator import local

        arrivals: list[float] = []

        class Timed(local.ScriptedModel):
            async def chat(self, request: web.Request) -> web.StreamResponse:
                arrivals.append(time.monotonic())
                return await super().chat(request)

        script = local.Script.from_data({"loop": True, "turns": [{"text": "Nothing to do."}]})
        self.arrivals = arrivals
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, daemon=True).start()
        self.model = Timed(script)
        self.base: str = self._call(self.model.start(host, 0))
        self.hostport = self.base.split("//", 1)[1].split("/", 1)[0]

    def _call(self, coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(60)

    def first_after(self, moment: float) -> float | None:
        return next((t for t in self.arrivals if t >= moment), None)

    def stop(self) -> None:
        self._call(self.model.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)


@contextlib.contextmanager
def _deployed(kube: ControlPlane, node: Node, workdir: Path) -> Iterator[tuple[Any, Any, str]]:
    """The deployed path as tests/integration/deployed/conftest.py's fixtures make it
    (the same bridges, ledger and forge), outside pytest: (release, gitea, forge base)."""
    from tests.forge import Gitea
    from tests.integration.deployed import conftest as deployed
    from tests.integration.deployed.deployed_support import Release

    with contextlib.ExitStack() as stack:
        images = {
            kind: node.import_image(deployed._archive(kind)) for kind in ("operator", "runner")
        }
        # The API server for pods (10.96.0.1:443 -> a relay -> loopback).
        port = int(kube.server.rsplit(":", 1)[1])
        relay = deployed.Relay(node.node_ip, ("127.0.0.1", port))
        stack.callback(relay.close)
        table = deployed.NFT_TABLE
        deployed._nft(f"delete table ip {table}", check=False)
        deployed._nft(
            f"""table ip {table} {{
  chain prerouting {{
    type nat hook prerouting priority -150; policy accept;
    ip saddr {node.pod_cidr} ip daddr {deployed.KUBERNETES_SERVICE_IP} tcp dport 443 \\
      dnat to {node.node_ip}:{relay.port}
  }}
}}
"""
        )
        stack.callback(deployed._nft, f"delete table ip {table}", False)
        # The PostgreSQL ledger, listening on the node's address for the pods.
        pgtemp = deployed._pgtemp()
        directory = Path(tempfile.mkdtemp(prefix="bench-node-ledger-"))
        stack.callback(shutil.rmtree, directory, True)
        server = pgtemp.start(directory, durable=False)
        server.stop()
        with (server.data / "pg_hba.conf").open("a") as hba:
            hba.write(f"host all all {node.pod_cidr} trust\n")
        options = (
            f"-c listen_addresses=127.0.0.1,{node.node_ip} -c unix_socket_directories= "
            f"-c max_connections=200 -c fsync=off -p {server.port}"
        )
        subprocess.run(
            [*server.as_user, str(server.bindir / "pg_ctl"), "-D", str(server.data), "-l",
             str(server.data.parent / "server.log"), "-w", "-t", "60", "-o", options, "start"],
            check=True, capture_output=True, text=True,
        )  # fmt: skip
        stack.callback(server.stop)
        # The forge.
        (workdir / "gitea").mkdir()
        gitea = Gitea(workdir / "gitea")
        gitea.start()
        stack.callback(gitea.stop)
        forge_relay = deployed.Relay(node.node_ip, ("127.0.0.1", gitea.port))
        stack.callback(forge_relay.close)
        # The chart.
        namespace = kube.create_namespace(f"co-system-{uuid.uuid4().hex[:6]}")
        ledger = f"postgresql://postgres@{node.node_ip}:{server.port}/postgres"
        release = Release(kube, node, namespace, images, ledger, workdir / "release")
        release.workdir.mkdir()
        stack.callback(kube.delete_namespace, namespace)
        stack.callback(release.uninstall)
        release.install()
        print(f"[bench node] deployed: {release.timings}", file=sys.stderr)
        yield release, gitea, f"http://{node.node_ip}:{forge_relay.port}"


def _apply_latencies(
    kube: ControlPlane, node: Node, workdir: Path
) -> tuple[list[float], list[float]]:
    """(apply -> runner pod Running, apply -> first model call), one of each per run."""
    from tests.integration.deployed.test_demo_deployed import demo_objects

    running: list[float] = []
    first_call: list[float] = []
    model = _Model(node.node_ip)
    try:
        with _deployed(kube, node, workdir) as (_release, gitea, forge_base):
            namespace = kube.create_namespace(
                f"bench-demo-{uuid.uuid4().hex[:6]}",
                labels={"pod-security.kubernetes.io/enforce": "restricted"},
            )
            demo = Path(__file__).resolve().parents[1] / "examples" / "demo"
            baseline = yaml.safe_load((demo / "clusterrunpolicy.yaml").read_text())
            baseline["spec"]["allowedEgress"] = [model.hostport]
            kube.kubectl("apply", "-f", "-", input=yaml.safe_dump(baseline))
            try:
                kube.kubectl("create", "secret", "generic", "demo-openai", "-n", namespace,
                             f"--from-literal=api-key={KEY}")  # fmt: skip
                kube.kubectl("create", "secret", "generic", "forge", "-n", namespace,
                             f"--from-literal=token={gitea.token}")  # fmt: skip
                repo_url = f"{forge_base}/{gitea.full_name('demo')}.git"
                objects = demo_objects(namespace, repo_url, gitea.seed_commit, model)
                *setup, run = objects
                kube.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(setup))
                path = f"/apis/orchestrator.continue.dev/v1alpha1/namespaces/{namespace}/agentruns"
                pods = f"/api/v1/namespaces/{namespace}/pods"
                for i in range(DEPLOYED_RUNS):
                    name = f"bench-{i:02d}"
                    run["metadata"]["name"] = name
                    begun = time.monotonic()
                    created = kube.rest.request("POST", path, run)
                    selector = quote(f"{RUN_UID_LABEL}={created['metadata']['uid']}")
                    seen_running: float | None = None
                    deadline = begun + 300
                    phase = None
                    while time.monotonic() < deadline:
                        now = time.monotonic()
                        listed = kube.rest.get(f"{pods}?labelSelector={selector}")["items"]
                        if seen_running is None and any(
                            p["status"].get("phase") == "Running" for p in listed
                        ):
                            seen_running = now
                        phase = (kube.rest.get(f"{path}/{name}").get("status") or {}).get("phase")
                        done = ("Succeeded", "Failed")
                        alive = [p for p in listed if p["status"].get("phase") not in done]
                        if phase in TERMINAL and not alive and model.first_after(begun):
                            break
                        time.sleep(0.05)
                    called = model.first_after(begun)
                    if seen_running is None or called is None:
                        raise RuntimeError(f"run {name}: Running {seen_running}, model {called}, "
                                           f"phase {phase}")  # fmt: skip
                    running.append(seen_running - begun)
                    first_call.append(called - begun)
                    print(f"[bench node] {name}: Running {running[-1]:.2f}s, first model call "
                          f"{first_call[-1]:.2f}s, {phase}", file=sys.stderr)  # fmt: skip
            finally:
                kube.kubectl("delete", "clusterrunpolicy", baseline["metadata"]["name"],
                             "--ignore-not-found", check=False)  # fmt: skip
                kube.delete_namespace(namespace)
    finally:
        model.stop()
    return running, first_call


def run() -> Iterator[dict[str, Any]]:
    ensure_node_binaries()
    workdir = Path(tempfile.mkdtemp(prefix="bench-node-"))
    kube = ControlPlane(workdir / "kube")
    kube.start()
    node: Node | None = None
    try:
        node = Node(kube, workdir / "node").start()
        busybox_image(workdir / "busybox.tar", "continue-orchestrator.local/busybox:bench")
        image = node.import_image(workdir / "busybox.tar")
        namespace = kube.create_namespace(f"bench-node-{uuid.uuid4().hex[:6]}")
        samples: dict[str, list[float]] = {runtime: [] for runtime in RUNTIMES}
        for _ in range(RUNS):
            for runtime in RUNTIMES:
                samples[runtime].append(_start(kube, namespace, image, runtime))
        p50 = {runtime: statistics.median(values) for runtime, values in samples.items()}
        for runtime in RUNTIMES:
            yield _figure(
                f"node_pod_start_{runtime}", samples[runtime],
                **({"ratio": round(p50["runc"] / p50["gvisor"], 3), "peer": "runc"}
                   if runtime == "gvisor" else {}),
            )  # fmt: skip
        if DEPLOYED_RUNS > 0:
            running, first_call = _apply_latencies(kube, node, workdir)
            yield _figure("node_deployed_apply_to_runner_running", running)
            yield _figure("node_deployed_apply_to_first_model_call", first_call)
    finally:
        if node is not None:
            node.stop()
        kube.stop()
        # The node's state (containerd's images, pods' files): gigabytes per run.
        shutil.rmtree(workdir, ignore_errors=True)
