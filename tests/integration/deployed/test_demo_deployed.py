"""The demo on the deployed path: the chart's operator and gateway as real pods on the
real node, the demo's objects applied with kubectl in a namespace that enforces the
`restricted` Pod Security Standard, the runner pod in gVisor running the real `cn` from
the runner image, talking to the scripted model through the gateway's Service; the
demo's held tool call approved with `orchestrator approve` by an approver of the policy;
the run Succeeds and its attestation verifies with the key the chart was given.

The demo's origin is served by a real Gitea on the host (the gateway pod cannot see a
file:// path on the host), reached through a relay on the node's address; the scripted
model listens on the node's address, where the gateway pod reaches it."""

from __future__ import annotations

import json
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests.integration import cluster_support as support
from tests.integration.deployed.conftest import ModelThread
from tests.integration.deployed.deployed_support import Release, eventually
from tests.kube import ControlPlane
from tests.kube.node import Node

from continue_orchestrator import cli

pytestmark = [pytest.mark.node, pytest.mark.cluster]

DEMO = Path(__file__).resolve().parents[3] / "examples" / "demo"
KEY = "sk-demo-placeholder-0123456789abcdef"
TERMINAL = ("Succeeded", "Failed", "Cancelled", "TimedOut", "Error")
JSON = dict[str, Any]


def apply(kube: ControlPlane, *documents: JSON) -> None:
    kube.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(documents))


OUTCOME = """
import json, sys
from continue_orchestrator import records
store = records.BlobStore("/var/lib/continue-orchestrator/records")
for x in records.load(store, sys.argv[1]).exchanges:
    if x.kind == "run.outcome":
        print(store.get(x.blobs["outcome"]).decode()[-4000:])
"""


def outcome(kube: ControlPlane, release: Release, uid: str) -> str:
    """The run's outcome (the agent's stderr tail) from the gateway's record store."""
    pod = release.ready_pod("gateway") or {}
    name = pod.get("metadata", {}).get("name", "")
    result = kube.kubectl(
        "exec", "-n", release.namespace, name, "--",
        "/opt/orchestrator/bin/python", "-c", OUTCOME, uid, check=False,
    )  # fmt: skip
    return result.stdout + result.stderr


def demo_objects(namespace: str, repo_url: str, commit: str, model: ModelThread) -> list[JSON]:
    policy = yaml.safe_load((DEMO / "runpolicy.yaml").read_text())
    policy["metadata"]["namespace"] = namespace
    policy["spec"]["allowedEgress"] = [model.hostport]
    for rule in policy["spec"]["rules"]:
        if rule["name"] == "demo-repository":
            rule["repositories"] = [repo_url.removesuffix(".git")]
        if rule["name"] == "model-egress":
            rule["hosts"] = [model.hostport]
    config = yaml.safe_load((DEMO / "continue" / "config.yaml").read_text())
    for m in config["models"]:
        m["apiBase"] = model.base
    run = yaml.safe_load((DEMO / "agentrun.yaml").read_text())
    run["metadata"]["namespace"] = namespace
    run["spec"]["repository"] = {
        "url": repo_url, "ref": "main", "commit": commit,
        "credentialsSecretRef": {"name": "forge", "key": "token"},
    }  # fmt: skip
    return [
        policy,
        {"apiVersion": "v1", "kind": "ConfigMap",
         "metadata": {"name": "demo-agent", "namespace": namespace},
         "data": {"config.yaml": yaml.safe_dump(config)}},
        run,
    ]  # fmt: skip


def test_the_demo_runs_on_the_deployed_path(
    kube: ControlPlane,
    node: Node,
    release: Release,
    forge_for_pods: tuple[Any, str],
    scripted_model: ModelThread,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    gitea, forge_base = forge_for_pods
    namespace = kube.create_namespace(
        f"demo-{uuid.uuid4().hex[:6]}", labels={"pod-security.kubernetes.io/enforce": "restricted"}
    )
    # The demo's ClusterRunPolicy names no allowedEgress; runs/_plan.py keeps only the
    # RunPolicy's entries every source lists, so with it as is no model egress is ever
    # allowed (403 from the gateway). Here it lists the model (docs/testing.md).
    baseline_doc = yaml.safe_load((DEMO / "clusterrunpolicy.yaml").read_text())
    baseline_doc["spec"]["allowedEgress"] = [scripted_model.hostport]
    baseline = tmp_path / "clusterrunpolicy.yaml"
    baseline.write_text(yaml.safe_dump(baseline_doc))
    kube.kubectl("apply", "-f", str(baseline))
    try:
        kube.kubectl("create", "secret", "generic", "demo-openai", "-n", namespace,
                     f"--from-literal=api-key={KEY}")  # fmt: skip
        kube.kubectl("create", "secret", "generic", "forge", "-n", namespace,
                     f"--from-literal=token={gitea.token}")  # fmt: skip
        support.grant(kube, namespace, "approvers", support.APPROVER_RULES,
                      [support.user("alice")])  # fmt: skip
        alice = support.user_kubeconfig(kube, tmp_path, "alice", ("shop-maintainers",))
        repo_url = f"{forge_base}/{gitea.full_name('demo')}.git"
        objects = demo_objects(namespace, repo_url, gitea.seed_commit, scripted_model)
        name = objects[-1]["metadata"]["name"]
        start = time.monotonic()
        apply(kube, *objects)
        timings: dict[str, float] = {}
        approved: set[str] = set()
        run: JSON = {}
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            run = support.get_run(kube, namespace, name)
            status = run.get("status") or {}
            if "runner pod Running" not in timings:
                pods = json.loads(kube.kubectl("get", "pods", "-n", namespace, "-o", "json").stdout)
                if any(p["status"].get("phase") == "Running" for p in pods["items"]):
                    timings["runner pod Running"] = time.monotonic() - start
            if "first model call" not in timings and scripted_model.model.requests:
                timings["first model call"] = time.monotonic() - start
            for pending in status.get("pendingApprovals") or []:
                if pending["id"] not in approved:
                    argv = [
                        "approve",
                        name,
                        pending["id"],
                        "-n",
                        namespace,
                        "--kubeconfig",
                        str(alice),
                        "--reason",
                        "the regression test is right",
                    ]
                    assert cli.main(argv) == 0  # fmt: skip
                    approved.add(pending["id"])
            if status.get("phase") in TERMINAL:
                runner_logs = kube.kubectl(
                    "logs", "-n", namespace, "--all-containers", "--tail=80", "-l",
                    f"orchestrator.continue.dev/run-uid={run['metadata']['uid']}", check=False,
                )  # fmt: skip
                break
            time.sleep(1)
        timings["run terminal"] = time.monotonic() - start
        print(f"\n[deployed] demo timings (from apply): {timings}", file=sys.stderr)
        status = run.get("status") or {}
        assert status.get("phase") == "Succeeded", (
            json.dumps(status, indent=1)[-1500:] + "\n" + release.describe("gateway")[-3000:]
            + "\n--- runner ---\n" + runner_logs.stdout + runner_logs.stderr
            + "\n--- outcome ---\n" + outcome(kube, release, run["metadata"]["uid"])
            + "\nmodel failures: " + repr(scripted_model.model.failures)
        )  # fmt: skip
        assert approved, "the demo's test change was held for approval"
        assert not scripted_model.model.failures
        # The upstream key was put on every model call by the gateway (the sandbox holds a
        # run token only).
        assert set(scripted_model.model.authorizations) == {f"Bearer {KEY}"}
        print(f"\n[deployed] interventions: {status.get('interventions')}", file=sys.stderr)
        assert (status.get("interventions") or {}).get("approvals") == 1, status

        signed = eventually(
            "status.attestation signed",
            lambda: (a := (support.get_run(kube, namespace, name).get("status") or {})
                     .get("attestation") or {}).get("signed") in ("true", "failed") and a,
            timeout=120,
        )  # fmt: skip
        assert signed["signed"] == "true", signed
        bundle = tmp_path / "bundle.json"
        argv = ["attestation", "get", name, "-n", namespace, "--kubeconfig", str(kube.kubeconfig)]
        assert cli.main([*argv, "-o", str(bundle)]) == 0
        capsys.readouterr()
        assert cli.main(["verify", str(bundle), "--key", str(release.public_key_path)]) == 0
        assert f"{namespace}/{name}" in capsys.readouterr().out
    finally:
        kube.kubectl("delete", "-f", str(baseline), "--ignore-not-found", check=False)
        kube.delete_namespace(namespace)
