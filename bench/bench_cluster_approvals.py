"""How long the cluster side of approvals and attestations takes, on a real kube-apiserver.

``approval_decision``: a call held by ``controller.KubeApprovalBroker``; the time from
the API server's answer to an approver's RunApproval create until the broker hands the
gateway the decision (watch delivery, approver check, status write): the delay a person
adds on top of their own. ``attestation_publish``: ``controller.Attestor.attest_run`` on
a finished run in key mode: build facts from status and ledger, sign, store the
ConfigMap, read it back, verify, append to the ledger, write status.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec
from tests.integration import cluster_support as support
from tests.kube import ControlPlane

from continue_orchestrator import api, attest, controller, gateway, ledger, policy

RUNS = int(os.environ.get("BENCH_CLUSTER_APPROVALS_RUNS", "20"))
GOAL_DECISION_P50_S = 0.5


def _percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _policy_set(namespace: str) -> policy.PolicySet:
    return policy.compile(
        [
            api.RunPolicy.model_validate(
                {
                    "apiVersion": api.API_VERSION,
                    "kind": "RunPolicy",
                    "metadata": {"name": "default", "namespace": namespace},
                    "spec": {
                        "approvers": {"users": ["admin"]},
                        "rules": [
                            {
                                "name": "release",
                                "actions": ["shell.exec"],
                                "commands": ["make release*"],
                                "effect": "RequireApproval",
                            }
                        ],
                    },
                }
            )
        ]
    )


def _decisions(kube: ControlPlane, namespace: str) -> list[float]:
    policy_set = _policy_set(namespace)
    loop = asyncio.new_event_loop()
    threading.Thread(target=loop.run_forever, daemon=True).start()
    samples = []
    try:
        for index in range(RUNS):
            name = f"held-{index:03d}"
            uid = str(support.create_run(kube, namespace, name)["metadata"]["uid"])
            support.set_status(kube, namespace, name, {"phase": "Running"})
            broker = controller.KubeApprovalBroker(
                controller.Kube(kube.api_client()),
                lambda run, n=name: controller.RunScope(namespace, n, policy_set),
                watch_seconds=30,
            )
            approval = gateway.Approval(
                id="call_release", run=uid, tool="Bash", arguments={"command": "make release"},
                rule="default/release", reason="bench", timeout=60,
            )  # fmt: skip
            future = asyncio.run_coroutine_threadsafe(broker.request(uid, approval), loop)
            held: list[dict[str, Any]] = []
            deadline = time.monotonic() + 30
            while not held:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{name}: the call was never held")
                run = support.get_run(kube, namespace, name)
                held = (run.get("status") or {}).get("pendingApprovals") or []
                time.sleep(0.01)
            time.sleep(0.2)  # let the broker's list + watch start, as a person would be slower
            body = support.run_approval(
                namespace, name, held[0]["id"], "Approve", "admin",
                ["system:masters", "system:authenticated"],
            )  # fmt: skip
            kube.rest.request(
                "POST", f"{support.GROUP_PATH}/namespaces/{namespace}/runapprovals", body
            )
            begun = time.perf_counter()
            outcome = future.result(30)
            samples.append(time.perf_counter() - begun)
            assert outcome.approved and outcome.decided_by == "admin"
    finally:
        loop.call_soon_threadsafe(loop.stop)
    return samples


def _attestations(kube: ControlPlane, namespace: str, workdir: Path) -> list[float]:
    book = ledger.open(f"sqlite:///{workdir / 'ledger.db'}")
    signer = attest.KeySigner(ec.generate_private_key(ec.SECP256R1()))
    attestor = controller.Attestor(
        controller.Kube(kube.api_client()), book, signer, builder_id="https://bench.example/op"
    )
    samples = []
    try:
        for index in range(RUNS):
            name = f"done-{index:03d}"
            uid = str(support.create_run(kube, namespace, name)["metadata"]["uid"])
            for kind in (ledger.Kind.RUN_CREATED, ledger.Kind.RUN_FINISHED):
                book.append(uid, kind, "operator", {"name": name})
            support.set_status(
                kube, namespace, name,
                {"phase": "Succeeded", "policyDigest": "sha256:" + "4" * 64,
                 "runnerImage": support.PINNED_IMAGE, "startTime": "2026-11-23T10:00:00Z",
                 "completionTime": "2026-11-23T10:05:00Z"},
            )  # fmt: skip
            run = support.get_run(kube, namespace, name)
            begun = time.perf_counter()
            written = attestor.attest_run(run)
            samples.append(time.perf_counter() - begun)
            assert written is not None and written["signed"] == "true", written
    finally:
        book.close()
    return samples


def run() -> Iterator[dict[str, Any]]:
    workdir = Path(tempfile.mkdtemp(prefix="bench-cluster-approvals-"))
    kube = ControlPlane(workdir / "kube")
    kube.start()
    try:
        support.install(kube)
        namespace = kube.create_namespace("bench-approvals")
        decisions = _decisions(kube, namespace)
        yield {
            "name": "approval_decision_p50",
            "value": round(statistics.median(decisions), 4),
            "unit": "s",
            "goal": GOAL_DECISION_P50_S,
            "runs": len(decisions),
        }
        yield {
            "name": "approval_decision_p99",
            "value": round(_percentile(decisions, 0.99), 4),
            "unit": "s",
            "runs": len(decisions),
        }
        published = _attestations(kube, namespace, workdir)
        yield {
            "name": "attestation_publish_configmap_p50",
            "value": round(statistics.median(published) * 1000, 2),
            "unit": "ms",
            "runs": len(published),
        }
        yield {
            "name": "attestation_publish_configmap_p99",
            "value": round(_percentile(published, 0.99) * 1000, 2),
            "unit": "ms",
            "runs": len(published),
        }
    finally:
        kube.stop()
