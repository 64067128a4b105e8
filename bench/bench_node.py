"""Pod start on the real node: gVisor against runc, measured in the same run.

A control plane and a real node (tests/kube/node.py: containerd, kubelet, kube-proxy,
kube-scheduler; hack/build-node.sh) are started for the bench, a busybox image is
imported, and ``BENCH_NODE_RUNS`` pods of each RuntimeClass are created one at a time,
alternating runc and gvisor so the machine's load hits both alike; each is timed from
the create's answer to the API server reporting it Running (polled every 50 ms), then
deleted. ``ratio`` = runc p50 / gvisor p50 (below 1: what the gVisor sandbox costs a
pod's start; each gVisor pod boots two sandboxes, the pause container's and the app's).

Not measured yet (issue 15): apply → the runner pod Running and apply → the agent's
first model call on the deployed path (the chart's operator and gateway as real pods).
"""

from __future__ import annotations

import contextlib
import os
import statistics
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tests.kube import ControlPlane
from tests.kube.images import busybox_image
from tests.kube.node import Node, ensure_node_binaries
from tests.kube.rest import ApiError

RUNS = int(os.environ.get("BENCH_NODE_RUNS", "20"))
RUNTIMES = ("runc", "gvisor")


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
            values = samples[runtime]
            yield {
                "name": f"node_pod_start_{runtime}",
                "value": round(p50[runtime], 3),
                "unit": "s",
                "p50": round(p50[runtime], 3),
                "p99": round(_percentile(values, 0.99), 3),
                "runs": len(values),
                **({"ratio": round(p50["runc"] / p50["gvisor"], 3), "peer": "runc"}
                   if runtime == "gvisor" else {}),
            }  # fmt: skip
    finally:
        if node is not None:
            node.stop()
        kube.stop()
