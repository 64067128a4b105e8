"""How fast the operator turns AgentRuns into sandbox pods, on a real kube-apiserver.

``apply_to_pod``: AgentRuns created one at a time; the time from the API server's
answer to the create until the run's pod exists (p50, p99). ``burst_200``: 200
AgentRuns created at once from 8 threads; the time until every one of them has a
pod. Nothing runs the pods (no pod executor watches the namespace), so this measures
the operator's own path: validation, ledger, Secret, NetworkPolicy, Pod, status.
"""

from __future__ import annotations

import concurrent.futures
import os
import statistics
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tests.integration.operator import harness
from tests.kube import ControlPlane

from continue_orchestrator import api

SEQUENTIAL = int(os.environ.get("BENCH_OPERATOR_SEQUENTIAL", "40"))
BURST = int(os.environ.get("BENCH_OPERATOR_BURST", "200"))
GOAL_P50_S = 1.0
GOAL_BURST_S = 60.0


def _pods(cluster: harness.Cluster, namespace: str) -> set[str]:
    return {
        pod["metadata"]["labels"][f"{api.GROUP}/run-uid"]
        for pod in cluster.pods(namespace)
    }


def _apply_to_pod(cluster: harness.Cluster, namespace: str) -> list[float]:
    samples = []
    # Run 0 warms up: kopf's watches may still be retrying while the new CRDs' storage
    # initialises; it is not counted.
    for index in range(SEQUENTIAL + 1):
        created = cluster.create(harness.agent_run(namespace, f"seq-{index:03d}"))
        begun = time.perf_counter()
        uid = created["metadata"]["uid"]
        path = f"/api/v1/namespaces/{namespace}/pods"
        while not cluster.list(path, labelSelector=f"{api.GROUP}/run-uid={uid}"):
            if time.perf_counter() - begun > 60:
                raise TimeoutError(f"no pod for seq-{index:03d} after 60s")
            time.sleep(0.005)
        samples.append(time.perf_counter() - begun)
    return samples[1:]


def _burst(cluster: harness.Cluster, namespace: str) -> float:
    names = [f"burst-{index:03d}" for index in range(BURST)]
    begun = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        uids = set(
            pool.map(
                lambda name: cluster.create(harness.agent_run(namespace, name))["metadata"]["uid"],
                names,
            )
        )
    while not uids <= _pods(cluster, namespace):
        if time.perf_counter() - begun > 300:
            raise TimeoutError(f"{len(uids - _pods(cluster, namespace))} runs without pods")
        time.sleep(0.1)
    return time.perf_counter() - begun


def _percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _metric(text: str, name: str, handler: str) -> float:
    prefix = f'{name}{{handler="{handler}"}} '
    for line in text.splitlines():
        if line.startswith(prefix):
            return float(line.removeprefix(prefix))
    return 0.0


def run() -> Iterator[dict[str, Any]]:
    workdir = Path(tempfile.mkdtemp(prefix="bench-operator-"))
    kube = ControlPlane(workdir / "kube")
    kube.start()
    operator = harness.Operator(kube, workdir, resync_seconds=30)  # the production default
    try:
        harness.setup_cluster(kube)
        cluster = harness.Cluster(kube)
        operator.start()
        sequential = kube.create_namespace("bench-sequential")
        cluster.create(harness.run_policy(sequential))
        samples = _apply_to_pod(cluster, sequential)
        yield {
            "name": "operator_apply_to_pod_p50",
            "value": round(statistics.median(samples), 4),
            "unit": "s",
            "goal": GOAL_P50_S,
            "runs": len(samples),
        }
        yield {
            "name": "operator_apply_to_pod_p99",
            "value": round(_percentile(samples, 0.99), 4),
            "unit": "s",
            "runs": len(samples),
        }
        burst = kube.create_namespace("bench-burst")
        cluster.create(harness.run_policy(burst))
        yield {
            "name": f"operator_burst_{BURST}_all_pods",
            "value": round(_burst(cluster, burst), 2),
            "unit": "s",
            "goal": GOAL_BURST_S,
            "runs": BURST,
        }
        metrics = operator.metrics()
        for handler in ("start", "pod", "resync"):
            total = _metric(metrics, "orchestrator_reconcile_duration_seconds_sum", handler)
            count = _metric(metrics, "orchestrator_reconcile_duration_seconds_count", handler)
            if count:
                yield {
                    "name": f"operator_handler_{handler}_mean",
                    "value": round(total / count, 4),
                    "unit": "s",
                    "runs": int(count),
                }
    finally:
        operator.stop()
        kube.stop()
