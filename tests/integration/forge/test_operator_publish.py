"""The operator publishes the demo's fix as a pull request on a real Gitea.

The demo's AgentRun, pointed at a copy of the demo repository on the test forge and
asking for a pull request, runs through the real ``controller.Reconciler`` on the local
control plane: the pod (the real Continue CLI in gVisor, the scripted model) clones
through the real gateway, which fetches from Gitea with the token the AgentRun's
``credentialsSecretRef`` names; the sandbox never gets it. After the run Succeeded and
was attested, publication is held: the demo policy's ``tests-need-approval`` rule covers
the diff's test change, so ``Published`` says ``AwaitingApproval``, the step is in
``status.pendingApprovals`` and nothing is pushed, until an approver of the policy
(alice, of ``shop-maintainers``) runs ``orchestrator approve`` as herself. Then the
verify command runs again in a fresh verify pod, the branch is pushed and the pull
request opens with the evidence; ``status.pullRequest`` names it. Publishing again, as a
restarted operator does after a crash mid-publication, asks nobody again, pushes
nothing and opens no second pull request. A second run whose agent leaves a file the
policy denies for ``file.write`` ends ``Published=False`` naming the rule, with no
branch in Gitea.
"""

from __future__ import annotations

import base64
import json
import os
import pathlib
import textwrap
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import yaml
from cryptography.hazmat.primitives.asymmetric import ec
from tests.forge import ForgeError, Gitea
from tests.forge import gitea as forge_fixture
from tests.integration import cluster_support as support
from tests.integration import demo_cluster
from tests.integration.operator import harness
from tests.kube import ControlPlane, PodExecutor

from continue_orchestrator import attest, cli, controller, ledger, local, runs

pytestmark = [
    pytest.mark.cluster,
    pytest.mark.sandbox,
    pytest.mark.cli,
    pytest.mark.forge,
    pytest.mark.skipif(os.geteuid() != 0, reason="gVisor pods need root"),
]

DEMO = demo_cluster.DEMO
BRANCH = "agent/fix-rounding"
JSON = dict[str, Any]
PUBLISH_RULES = [
    {"name": "push-agent-branches", "actions": ["branch.push"], "branches": ["agent/*"],
     "effect": "Allow"},
    {"name": "open-pull-requests", "actions": ["pullRequest.create"], "effect": "Allow"},
]  # fmt: skip
NO_NOTES = {"name": "no-notes", "actions": ["file.write"], "paths": ["NOTES.md"],
            "effect": "Deny", "reason": "notes stay out of the repository"}  # fmt: skip
NOTES_WRITER = textwrap.dedent('''\
    """Prices in cents."""
    import pathlib

    pathlib.Path(__file__).resolve().parents[2].joinpath("NOTES.md").write_text("notes\\n")


    def apply_discount(cents: int, percent: int) -> int:
        """The price after a discount of ``percent``, rounded half up to a whole cent."""
        return (cents * (100 - percent) + 50) // 100
''')


@pytest.fixture(scope="module")
def host_ready() -> str:
    return demo_cluster.prepare_host()


@pytest.fixture
def demo_baseline(kube: ControlPlane) -> Iterator[None]:
    support.install(kube)  # RunApprovals, and the admission policy that vouches for them
    with demo_cluster.demo_baseline(kube):
        yield


def _repository(gitea: Gitea) -> str:
    name = f"operator-{uuid.uuid4().hex[:8]}"
    gitea.api("POST", "/user/repos", {"name": name, "default_branch": "main"})
    seed = gitea.state_dir / "seed" / f"{forge_fixture.SEED_REPO}.git"
    gitea.git("push", "--quiet", gitea.clone_url(name), "main", cwd=seed)
    gitea.wait_for_branch("main", gitea.seed_commit, repo=name)
    return name


class Demo:
    """The demo's objects in the test's namespace, and the reconciler that runs them."""

    def __init__(
        self,
        kube: ControlPlane,
        namespace: str,
        gitea: Gitea,
        repository: str,
        gateway: demo_cluster.GatewayThread,
    ) -> None:
        self.kube, self.namespace, self.gateway = kube, namespace, gateway
        self.cluster = harness.Cluster(kube)
        url = gitea.clone_url(repository)
        policy = yaml.safe_load((DEMO / "runpolicy.yaml").read_text())
        policy["metadata"]["namespace"] = namespace
        for rule in policy["spec"]["rules"]:
            if rule["name"] == "demo-repository":
                rule["repositories"] = [url.removesuffix(".git")]
        policy["spec"]["rules"] += [
            {**rule, "repositories": [url.removesuffix(".git")]} for rule in PUBLISH_RULES
        ] + [NO_NOTES]
        self.cluster.create(policy)
        self.cluster.create({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "demo-agent", "namespace": namespace},
            "data": {"config.yaml": (DEMO / "continue" / "config.yaml").read_text()},
        })  # fmt: skip
        self.cluster.create(harness.secret(namespace, "demo-openai", {"api-key": demo_cluster.KEY}))
        self.cluster.create(harness.secret(namespace, "forge", {"token": gitea.token}))
        run = yaml.safe_load((DEMO / "agentrun.yaml").read_text())
        run["metadata"]["namespace"] = namespace
        run["spec"]["repository"] = {
            "url": url, "ref": "main", "commit": gitea.seed_commit,
            "credentialsSecretRef": {"name": "forge", "key": "token"},
        }  # fmt: skip
        run["spec"]["output"] = {"pullRequest": {"enabled": True}}
        self.manifest: JSON = run
        settings = controller.Settings(
            runner_image=harness.IMAGE, ledger_url=gateway.ledger_url,
            runner_command=demo_cluster.RUNNER_COMMAND, gateway_url=gateway.url,
            operator_namespace="orchestrator-system", publication_approval_seconds=240,
        ).validate()  # fmt: skip
        self.client = controller.Kube(kube.api_client())
        self.signer = attest.KeySigner(ec.generate_private_key(ec.SECP256R1()))
        self.reconciler = self.new_reconciler(settings)

    def new_reconciler(self, settings: controller.Settings) -> controller.Reconciler:
        """A reconciler as a (re)started operator process has one."""
        attestor = controller.Attestor(
            self.client, self.gateway.book, self.signer,
            builder_id="https://example.test/operator-publish",
            evidence=runs.evidence_from_records(self.gateway.records),
        )  # fmt: skip
        return controller.Reconciler(
            self.client, self.gateway.book, self.gateway, settings, attestor,
            controller.PublishingOptions(records_root=self.gateway.records, workers=1),
        )  # fmt: skip

    def run_to_the_end(self) -> JSON:
        """Create the AgentRun and drive it until it is terminal (approving the agent's
        held tool calls, as in the demo); its body."""
        created = self.cluster.create(self.manifest)
        self.reconciler.start(created)
        name, uid = created["metadata"]["name"], created["metadata"]["uid"]
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            self.gateway.approve_pending(uid)
            current = self.cluster.run(self.namespace, name)
            assert current is not None
            self.reconciler.resync(current)
            if (current.get("status") or {}).get("phase") in harness.TERMINAL:
                return current
            time.sleep(1)
        raise AssertionError(f"the run did not end: {current.get('status')}")

    def status(self) -> JSON:
        run = self.cluster.run(self.namespace, str(self.manifest["metadata"]["name"]))
        assert run is not None
        return dict(run.get("status") or {})

    def wait_published(self, reason: str, timeout: float = 240) -> JSON:
        """The status once its ``Published`` condition has ``reason``."""
        return wait_for(
            f"Published={reason}",
            lambda: (
                (s := self.status())
                and harness.conditions({"status": s}).get("Published", {}).get("reason") == reason
                and s
            ),
            timeout,
        )


def wait_for(what: str, probe: Callable[[], Any], timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def _kinds_after_finish(entries: list[ledger.Entry]) -> list[ledger.Kind]:
    kinds = [e.kind for e in entries]
    return kinds[kinds.index(ledger.Kind.RUN_FINISHED) :]


def test_the_operator_publishes_once_an_approver_approves(
    kube: ControlPlane,
    pod_executor: PodExecutor,
    namespace: str,
    host_ready: str,
    demo_baseline: None,
    gitea: Gitea,
    tmp_path: pathlib.Path,
) -> None:
    repository = _repository(gitea)
    gateway = demo_cluster.GatewayThread(tmp_path)
    try:
        demo = Demo(kube, namespace, gitea, repository, gateway)
        support.grant(kube, namespace, "approvers", support.APPROVER_RULES,
                      [support.user("alice")])  # fmt: skip
        alice = support.user_kubeconfig(kube, tmp_path, "alice", ("shop-maintainers",))
        ended = demo.run_to_the_end()
        uid = ended["metadata"]["uid"]
        assert ended["status"]["phase"] == "Succeeded", ended["status"]

        # Held: the diff changes tests/, which the policy gives to a person.
        held = demo.wait_published("AwaitingApproval")
        (pending,) = held["pendingApprovals"]
        assert pending["action"] == "file.write" and pending["tool"] == "publication"
        assert pending["rule"] == "demo-fixer/tests-need-approval"
        assert "tests/test_pricing.py" in pending["summary"]
        assert held["phase"] == "Succeeded"  # the run's own phase is what the agent earned
        with pytest.raises(ForgeError) as missing:
            gitea.api("GET", f"/repos/{gitea.full_name(repository)}/branches/agent%2Ffix-rounding")
        assert missing.value.status == 404  # nothing pushed while held

        name = ended["metadata"]["name"]
        argv = ["approve", name, pending["id"], "-n", namespace, "--kubeconfig", str(alice)]
        assert cli.main(argv) == 0
        status = demo.wait_published("Opened")
        assert status["pendingApprovals"] == []
        pull = status["pullRequest"]
        assert pull["branch"] == BRANCH and pull["state"] == "open"
        (opened,) = gitea.pulls(repository)
        assert (opened.number, opened.state) == (pull["number"], "open")
        full = gitea.full_name(repository)
        detail: JSON = gitea.api("GET", f"/repos/{full}/pulls/{pull['number']}")
        assert detail["head"]["sha"] == pull["headSha"] and detail["head"]["ref"] == BRANCH
        body = str(detail["body"])
        assert "| fresh sandbox | `unit-tests` | `python3 -m unittest -v` | 0 |" in body
        assert "| agent's sandbox | `unit-tests` | `python3 -m unittest -v` | 0 |" in body
        assert status["attestation"]["digest"] in body
        commit = gitea.api("GET", f"/repos/{full}/git/commits/{pull['headSha']}")
        message = commit["commit"]["message"]
        assert f"Orchestrator-Run: {namespace}/{name} ({uid})" in message
        assert f"Orchestrator-Attestation: {status['attestation']['digest']}" in message
        assert [p["sha"] for p in commit["parents"]] == [gitea.seed_commit]

        entries = list(gateway.book.entries(run_uid=uid))
        assert _kinds_after_finish(entries)[-7:] == [
            ledger.Kind.APPROVAL_REQUESTED, ledger.Kind.APPROVAL_GRANTED,
            ledger.Kind.PUBLICATION_CHECKED, ledger.Kind.PUBLICATION_VERIFIED,
            ledger.Kind.PUBLICATION_PUSHED, ledger.Kind.PULL_REQUEST_OPENED,
            ledger.Kind.PUBLICATION_SUMMARY,
        ]  # fmt: skip
        (granted,) = [e.payload or {} for e in entries if e.kind is ledger.Kind.APPROVAL_GRANTED
                      and (e.payload or {}).get("for") == "publication"]  # fmt: skip
        assert (granted["by"], granted["rule"]) == ("alice", "demo-fixer/tests-need-approval")
        verified = next(e for e in entries if e.kind is ledger.Kind.PUBLICATION_VERIFIED)
        assert (verified.payload or {})["results"] == [
            {"name": "unit-tests", "exitCode": 0, "passed": True}
        ]
        # The verify pod is gone; its Secret stays with the run, without the forge token.
        pods = [p["metadata"]["name"] for p in demo.cluster.pods(namespace, uid)]
        assert not [p for p in pods if p.endswith("-verify")], pods
        (verify,) = [s for s in demo.cluster.list(f"/api/v1/namespaces/{namespace}/secrets")
                     if s["metadata"]["name"].endswith("-verify")]  # fmt: skip
        assert verify["metadata"]["ownerReferences"][0]["uid"] == uid
        assert gitea.token not in json.dumps(verify)
        assert base64.b64encode(gitea.token.encode()).decode() not in json.dumps(verify)

        # A restarted operator finds the run mid-publication (as a crash left it): it
        # publishes again, asks nobody again, pushes nothing and opens no second PR.
        support.set_status(kube, namespace, name, {"conditions": [
            c if c["type"] != "Published" else {**c, "status": "Unknown", "reason": "Publishing"}
            for c in status["conditions"]]})  # fmt: skip
        restarted = demo.new_reconciler(demo.reconciler.settings)
        again = restarted.publisher.publish(ended)
        assert again is not None and again.state == "opened", again
        assert not again.pushed and again.head_sha == pull["headSha"]
        assert again.pull_request is not None and again.pull_request.number == pull["number"]
        assert len(gitea.pulls(repository)) == 1
        after = list(gateway.book.entries(run_uid=uid))
        assert [e.kind for e in after].count(ledger.Kind.APPROVAL_REQUESTED) == len(
            [e for e in entries if e.kind is ledger.Kind.APPROVAL_REQUESTED]
        )
        assert demo.wait_published("Opened")["pullRequest"]["number"] == pull["number"]
        # The forge token is in nothing the pods or the record store saw.
        for path in gateway.records.rglob("*"):
            assert not path.is_file() or gitea.token.encode() not in path.read_bytes(), path
    finally:
        gateway.stop()


def test_a_path_the_policy_denies_blocks_the_operators_publication(
    kube: ControlPlane,
    pod_executor: PodExecutor,
    namespace: str,
    host_ready: str,
    demo_baseline: None,
    gitea: Gitea,
    tmp_path: pathlib.Path,
) -> None:
    repository = _repository(gitea)
    script = local.Script.from_data(
        {
            "turns": [
                {"tool_calls": [{"id": "call_fix", "name": "Write",
                                 "arguments": {"filepath": "src/shop/pricing.py",
                                               "content": NOTES_WRITER}}]},
                {"tool_calls": [{"id": "call_test", "name": "Bash",
                                 "arguments": {"command": "python3 -m unittest"}}],
                 "expect": {"last_role": "tool"}},
                {"text": "Fixed.", "expect": {"last_role": "tool"}},
            ]
        }
    )  # fmt: skip
    gateway = demo_cluster.GatewayThread(tmp_path, script)
    try:
        demo = Demo(kube, namespace, gitea, repository, gateway)
        ended = demo.run_to_the_end()
        assert ended["status"]["phase"] == "Succeeded", ended["status"]
        status = demo.wait_published("Failed")
        published = harness.conditions({"status": status})["Published"]
        assert published["status"] == "False"
        assert "NOTES.md" in published["message"] and "no-notes" in published["message"]
        assert "pullRequest" not in status
        uid = ended["metadata"]["uid"]
        failed = [e.payload or {} for e in gateway.book.entries(run_uid=uid)
                  if e.kind is ledger.Kind.PUBLICATION_FAILED]  # fmt: skip
        assert [(f["step"], f["rule"]) for f in failed] == [("policy", "demo-fixer/no-notes")]
        with pytest.raises(ForgeError) as missing:
            gitea.api("GET", f"/repos/{gitea.full_name(repository)}/branches/agent%2Ffix-rounding")
        assert missing.value.status == 404
        assert gitea.pulls(repository) == []
    finally:
        gateway.stop()
