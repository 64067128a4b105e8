"""The demo on the deployed path: the chart's operator and gateway as real pods on the
real node, the demo's objects applied with kubectl in a namespace that enforces the
`restricted` Pod Security Standard, the runner pod in gVisor running the real `cn` from
the runner image, talking to the scripted model through the gateway's Service; the
demo's held tool call approved with `orchestrator approve` by an approver of the policy;
the run Succeeds and its attestation verifies with the key the chart was given.

The demo's origin is served by a real Gitea on the host (the gateway pod cannot see a
file:// path on the host), reached through a relay on the node's address; the scripted
model listens on the node's address, where the gateway pod reaches it.

The second test asks for the pull request (`spec.output.pullRequest.enabled`) with the
forge token in the Secret `spec.repository.credentialsSecretRef` names, on a repository
of its own in the Gitea: after the run Succeeded and its attestation is signed, the
chart's operator holds publication for the demo's test change until alice approves,
runs the verify commands again in a `-verify` pod (gVisor, deleted afterwards), pushes
`agent/<run>` and opens the pull request, whose body carries the evidence
(docs/publishing.md, "In a cluster")."""

from __future__ import annotations

import base64
import json
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

import pytest
import yaml
from tests.forge import Gitea
from tests.forge import gitea as forge_fixture
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


class Model(Protocol):
    base: str
    hostport: str


PUBLISH_RULES = [
    {"name": "push-agent-branches", "actions": ["branch.push"], "branches": ["agent/*"],
     "effect": "Allow"},
    {"name": "open-pull-requests", "actions": ["pullRequest.create"], "effect": "Allow"},
]  # fmt: skip


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


def demo_objects(namespace: str, repo_url: str, commit: str, model: Model) -> list[JSON]:
    """The demo's RunPolicy, ConfigMap and AgentRun for `namespace`, cloning `repo_url`
    at `commit`, the model at `model` (its `base` URL and `hostport`)."""
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


def own_repository(gitea: Gitea) -> str:
    """A copy of the seeded demo repository, so that no other test's branch is in the way."""
    name = f"deployed-{uuid.uuid4().hex[:8]}"
    gitea.api("POST", "/user/repos", {"name": name, "default_branch": "main"})
    seed = gitea.state_dir / "seed" / f"{forge_fixture.SEED_REPO}.git"
    gitea.git("push", "--quiet", gitea.clone_url(name), "main", cwd=seed)
    gitea.wait_for_branch("main", gitea.seed_commit, repo=name)
    return name


class VerifyPods:
    """Watches the namespace for the operator's `-verify` pods (they live seconds): each
    one's RuntimeClass, the phases it was seen in, and the OCI runtime binary containerd
    was given for its containers (read from the node's containerd while it exists)."""

    def __init__(self, kube: ControlPlane, node: Node, namespace: str) -> None:
        self.kube, self.node, self.namespace = kube, node, namespace
        self.seen: dict[str, JSON] = {}
        self.errors: list[str] = []
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._watch, daemon=True)
        self.thread.start()

    def _runtimes(self, pod: str) -> set[str]:
        """What containerd runs the pod's containers (its sandbox's and its own) with."""
        found: set[str] = set()
        for container in self.node.ctr("containers", "list", "-q", check=False).stdout.split():
            info = self.node.ctr("containers", "info", container, check=False).stdout
            try:
                described = json.loads(info)
            except json.JSONDecodeError:
                continue
            if (described.get("Labels") or {}).get("io.kubernetes.pod.name") != pod:
                continue
            runtime = described.get("Runtime") or {}
            options = runtime.get("Options") or {}
            # The runc shim's options (BinaryName) as JSON, or protobuf bytes in `value`.
            said = json.dumps(options)
            if isinstance(options.get("value"), str):
                said += base64.b64decode(options["value"]).decode(errors="replace")
            found.add("runsc" if "runsc" in said else str(runtime.get("Name")))
        return found

    def _watch(self) -> None:
        path = f"/api/v1/namespaces/{self.namespace}/pods"
        rest = self.kube.new_rest()
        while not self.stopped.is_set():
            try:
                self._look(rest, path)
            except Exception as error:  # a watcher that stops sees nothing
                self.errors.append(repr(error))
            self.stopped.wait(0.2)

    def _look(self, rest: Any, path: str) -> None:
        names = set()
        for pod in rest.get(path).get("items", []):
            name = pod["metadata"]["name"]
            if not name.endswith("-verify"):
                continue
            names.add(name)
            seen = self.seen.setdefault(name, {"phases": set(), "runtimes": set(),
                                               "gone": False})  # fmt: skip
            seen["runtimeClassName"] = pod["spec"].get("runtimeClassName")
            seen["phases"].add(pod["status"].get("phase"))
            if not seen["runtimes"]:
                seen["runtimes"] |= self._runtimes(name)
        for name, seen in self.seen.items():
            seen["gone"] = name not in names

    def stop(self) -> dict[str, JSON]:
        self.stopped.set()
        self.thread.join(10)
        return self.seen


def published(status: JSON) -> JSON:
    return next((c for c in status.get("conditions") or [] if c["type"] == "Published"), {})


def test_the_deployed_run_opens_a_pull_request(
    kube: ControlPlane,
    node: Node,
    release: Release,
    forge_for_pods: tuple[Any, str],
    scripted_model: ModelThread,
    tmp_path: Path,
) -> None:
    if release.records_dir is None:
        pytest.skip("publication needs the record store (recordStore.existingClaim), "
                    "which only the real node's hostPath volume gives here")  # fmt: skip
    gitea, forge_base = forge_for_pods
    repository = own_repository(gitea)
    full = gitea.full_name(repository)
    restricted = {"pod-security.kubernetes.io/enforce": "restricted"}
    namespace = kube.create_namespace(f"publish-{uuid.uuid4().hex[:6]}", labels=restricted)
    baseline_doc = yaml.safe_load((DEMO / "clusterrunpolicy.yaml").read_text())
    baseline_doc["spec"]["allowedEgress"] = [scripted_model.hostport]
    baseline = tmp_path / "clusterrunpolicy.yaml"
    baseline.write_text(yaml.safe_dump(baseline_doc))
    kube.kubectl("apply", "-f", str(baseline))
    verify_pods = VerifyPods(kube, node, namespace)
    try:
        kube.kubectl("create", "secret", "generic", "demo-openai", "-n", namespace,
                     f"--from-literal=api-key={KEY}")  # fmt: skip
        # The token the gateway clones with is the one the operator publishes with: it
        # may push and open pull requests (Gitea's admin token).
        kube.kubectl("create", "secret", "generic", "forge", "-n", namespace,
                     f"--from-literal=token={gitea.token}")  # fmt: skip
        support.grant(kube, namespace, "approvers", support.APPROVER_RULES,
                      [support.user("alice")])  # fmt: skip
        alice = support.user_kubeconfig(kube, tmp_path, "alice", ("shop-maintainers",))
        repo_url = f"{forge_base}/{full}.git"
        objects = demo_objects(namespace, repo_url, gitea.seed_commit, scripted_model)
        policy, run_doc = objects[0], objects[-1]
        policy["spec"]["rules"] += [
            {**rule, "repositories": [repo_url.removesuffix(".git")]} for rule in PUBLISH_RULES
        ]
        run_doc["spec"]["output"] = {"pullRequest": {"enabled": True}}
        name = run_doc["metadata"]["name"]
        branch = f"agent/{name}"
        start = time.monotonic()
        apply(kube, *objects)
        approved: dict[str, str] = {}
        run: JSON = {}
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            run = support.get_run(kube, namespace, name)
            status = run.get("status") or {}
            for pending in status.get("pendingApprovals") or []:
                if pending["id"] not in approved:
                    argv = ["approve", name, pending["id"], "-n", namespace,
                            "--kubeconfig", str(alice), "--reason", "reviewed"]  # fmt: skip
                    assert cli.main(argv) == 0
                    approved[pending["id"]] = pending.get("tool", "")
            if published(status).get("reason") in ("Opened", "Failed", "NotAttested"):
                break
            if status.get("phase") in TERMINAL and status.get("phase") != "Succeeded":
                break
            time.sleep(1)
        took = time.monotonic() - start
        print(f"\n[deployed] apply -> Published {published(status)} in {took:.1f}s; "
              f"approvals {approved}", file=sys.stderr)  # fmt: skip
        status = run.get("status") or {}
        assert status.get("phase") == "Succeeded", json.dumps(status, indent=1)[-2000:]
        condition = published(status)
        assert (condition.get("status"), condition.get("reason")) == ("True", "Opened"), (
            json.dumps(status, indent=1)[-2000:] + "\n" + release.describe("operator")[-3000:]
        )  # fmt: skip
        # The agent's test change was approved during the run, and again for publication.
        assert sorted(approved.values()).count("publication") == 1, approved
        assert status["pendingApprovals"] == []

        # The verify pod ran in gVisor and is gone.
        eventually("the verify pod deleted",
                   lambda: verify_pods.seen and all(v["gone"] for v in verify_pods.seen.values()),
                   timeout=60)  # fmt: skip
        seen = verify_pods.stop()
        assert len(seen) == 1, (seen, verify_pods.errors)
        (verify,) = seen.values()
        assert verify["runtimeClassName"] == "gvisor", verify
        assert verify["runtimes"] == {"runsc"}, verify
        assert verify["phases"] & {"Running", "Succeeded"}, verify

        pull = status["pullRequest"]
        assert {"url", "number", "branch", "headSha", "state"} <= set(pull), pull
        assert (pull["branch"], pull["state"]) == (branch, "open"), pull
        (opened,) = gitea.pulls(repository)
        # Gitea names its pages after the host it was asked under: the operator asked
        # through the node's relay, this test on loopback. Same page, same number.
        assert (opened.number, opened.state) == (pull["number"], "open"), (opened, pull)
        seen_by_operator, seen_here = urlsplit(pull["url"]), urlsplit(opened.html_url)
        assert seen_by_operator.path == seen_here.path, (opened, pull)
        assert seen_by_operator.netloc == urlsplit(forge_base).netloc, (pull, forge_base)
        detail: JSON = gitea.api("GET", f"/repos/{full}/pulls/{pull['number']}")
        assert detail["head"]["ref"] == branch and detail["head"]["sha"] == pull["headSha"]
        head: JSON = gitea.api("GET", f"/repos/{full}/branches/{branch.replace('/', '%2F')}")
        assert head["commit"]["id"] == pull["headSha"]

        # The body is the evidence: the signed attestation's digest (the one in the
        # status), both sandboxes' verify rows, the run; the commit carries the trailers.
        attestation = status["attestation"]
        assert attestation["signed"] == "true", attestation
        body = str(detail["body"])
        assert attestation["digest"] in body, body
        assert "| fresh sandbox | `unit-tests` | `python3 -m unittest -v` | 0 |" in body, body
        assert "| agent's sandbox | `unit-tests` | `python3 -m unittest -v` | 0 |" in body, body
        assert f"{namespace}/{name}" in body, body
        uid = run["metadata"]["uid"]
        commit = gitea.api("GET", f"/repos/{full}/git/commits/{pull['headSha']}")
        message = commit["commit"]["message"]
        assert f"Orchestrator-Run: {namespace}/{name} ({uid})" in message, message
        assert f"Orchestrator-Attestation: {attestation['digest']}" in message, message
        assert [p["sha"] for p in commit["parents"]] == [gitea.seed_commit]
    finally:
        verify_pods.stop()
        kube.kubectl("delete", "-f", str(baseline), "--ignore-not-found", check=False)
        kube.delete_namespace(namespace)
