"""Approvals on a real API server: who may decide, and what the run's status says.

The ValidatingAdmissionPolicy is exercised the way an attacker would try it: a user
creating a RunApproval in someone else's name, or claiming a group they are not in.
The broker is driven as the gateway drives it (a held call, then wait), and people
decide with ``orchestrator approve|deny`` under their own client certificates.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from tests import continue_config
from tests.integration import cluster_support as support
from tests.kube import ControlPlane

from continue_orchestrator import (
    api,
    cli,
    controller,
    errors,
    gateway,
    ledger,
    local,
    policy,
    runs,
)

pytestmark = pytest.mark.cluster
RULE = "default/release"


@pytest.fixture(scope="module")
def cluster(
    kube: ControlPlane, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    support.install(kube)
    namespace = support.new_namespace(kube, "approvals")
    support.grant(
        kube,
        namespace,
        "approvers",
        support.APPROVER_RULES,
        [support.group("payments-leads"), support.user("mallory"), support.user("alice")],
    )
    people = tmp_path_factory.mktemp("people")
    configs = {
        "alice": support.user_kubeconfig(kube, people, "alice", ("payments-leads",)),
        "bob": support.user_kubeconfig(kube, people, "bob", ("payments-leads",)),
        "mallory": support.user_kubeconfig(kube, people, "mallory", ("interns",)),
    }
    yield {"namespace": namespace, "configs": configs}
    kube.delete_namespace(namespace)


def _policy_set(namespace: str) -> policy.PolicySet:
    resource = api.RunPolicy.model_validate(
        {
            "apiVersion": api.API_VERSION,
            "kind": "RunPolicy",
            "metadata": {"name": "default", "namespace": namespace},
            "spec": {
                "defaultEffect": "Deny",
                "approvers": {"users": ["alice"], "groups": ["payments-leads"]},
                "rules": [
                    {
                        "name": "release",
                        "actions": ["shell.exec"],
                        "commands": ["make release*"],
                        "effect": "RequireApproval",
                        "reason": "releases need a lead",
                    }
                ],
            },
        }
    )
    return policy.compile([resource])


def _running_run(kube: ControlPlane, namespace: str, name: str) -> str:
    created = support.create_run(kube, namespace, name)
    support.set_status(kube, namespace, name, {"phase": "Running", "message": "pod is running"})
    return str(created["metadata"]["uid"])


def _wait_for(what: str, probe: Callable[[], Any], timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _cli(config: Path, *argv: str) -> int:
    return cli.main([*argv, "--kubeconfig", str(config)])


class _Held:
    """One held call through the broker, on a background event loop."""

    def __init__(self, kube: ControlPlane, namespace: str, name: str, uid: str, timeout: float):
        self.broker = controller.KubeApprovalBroker(
            controller.Kube(kube.api_client()),
            lambda run: (
                controller.RunScope(namespace, name, _policy_set(namespace)) if run == uid else None
            ),
            watch_seconds=2,
        )
        self.approval = gateway.Approval(
            id="call_release",
            run=uid,
            tool="Bash",
            arguments={"command": "make release"},
            rule=RULE,
            reason="releases need a lead",
            timeout=timeout,
        )
        self.loop = asyncio.new_event_loop()
        self.future = asyncio.run_coroutine_threadsafe(
            self.broker.request(uid, self.approval), self.loop
        )
        threading.Thread(target=self.loop.run_forever, daemon=True).start()

    def result(self, timeout: float) -> gateway.ApprovalOutcome:
        try:
            return self.future.result(timeout)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)


def _pending(kube: ControlPlane, namespace: str, name: str) -> list[dict[str, Any]]:
    return list(
        (support.get_run(kube, namespace, name).get("status") or {}).get("pendingApprovals") or []
    )


def test_an_approver_approves_with_the_cli(
    kube: ControlPlane, cluster: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    namespace, configs = cluster["namespace"], cluster["configs"]
    uid = _running_run(kube, namespace, "release-approved")
    held = _Held(kube, namespace, "release-approved", uid, timeout=60)
    [entry] = _wait_for(
        "the held call in status", lambda: _pending(kube, namespace, "release-approved")
    )
    call = entry["id"]
    assert call.startswith("call_release-") and entry["tool"] == "Bash" and entry["rule"] == RULE
    assert "make release" in entry["summary"]
    run = support.get_run(kube, namespace, "release-approved")
    assert run["status"]["phase"] == "AwaitingApproval"
    assert f"orchestrator approve|deny release-approved {call}" in run["status"]["message"]

    assert _cli(configs["mallory"], "approvals", "release-approved", "-n", namespace) == 0
    assert f"{call}\tBash" in capsys.readouterr().out

    # mallory may create RunApprovals (RBAC) in her own name, but is no approver: ignored.
    assert (
        _cli(configs["mallory"], "approve", "release-approved", call, "-n", namespace)
        == 0
    )
    assert "as mallory (groups: interns, system:authenticated)" in capsys.readouterr().out
    [ignored] = _wait_for(
        "the ApprovalIgnored event", lambda: support.events(kube, namespace, "ApprovalIgnored")
    )
    assert "mallory" in ignored["message"] and "not an approver" in ignored["message"]
    assert ignored["type"] == "Warning"
    assert not held.future.done()
    assert _pending(kube, namespace, "release-approved")

    assert _cli(
        configs["alice"], "approve", "release-approved", call, "-n", namespace,
        "--reason", "release window is open",
    ) == 0  # fmt: skip
    outcome = held.result(30)
    # The groups are the ones the API server vouched for on the RunApproval.
    assert outcome == gateway.ApprovalOutcome(
        True, "alice", "release window is open", groups=("payments-leads", "system:authenticated")
    )
    status = support.get_run(kube, namespace, "release-approved")["status"]
    assert status["pendingApprovals"] == []
    assert status["phase"] == "Running"
    assert status["interventions"]["approvals"] == 1
    assert status["interventions"]["total"] == 1


def test_a_group_approver_denies(kube: ControlPlane, cluster: dict[str, Any]) -> None:
    namespace, configs = cluster["namespace"], cluster["configs"]
    uid = _running_run(kube, namespace, "release-denied")
    held = _Held(kube, namespace, "release-denied", uid, timeout=60)
    [entry] = _wait_for(
        "the held call in status", lambda: _pending(kube, namespace, "release-denied")
    )
    # bob is an approver only through his group payments-leads.
    assert _cli(
        configs["bob"], "deny", "release-denied", entry["id"], "-n", namespace,
        "--reason", "not during the freeze",
    ) == 0  # fmt: skip
    outcome = held.result(30)
    # The group that made bob an approver is the one that reaches the ledger entry.
    assert outcome == gateway.ApprovalOutcome(
        False, "bob", "not during the freeze", groups=("payments-leads", "system:authenticated")
    )
    status = support.get_run(kube, namespace, "release-denied")["status"]
    assert status["pendingApprovals"] == []
    assert status["interventions"]["rejections"] == 1
    assert status["phase"] == "Running"


def test_only_a_non_approver_decides_so_the_call_times_out(
    kube: ControlPlane, cluster: dict[str, Any]
) -> None:
    namespace = cluster["namespace"]
    uid = _running_run(kube, namespace, "release-expired")
    held = _Held(kube, namespace, "release-expired", uid, timeout=4)
    [entry] = _wait_for(
        "the held call in status", lambda: _pending(kube, namespace, "release-expired")
    )
    kube.kubectl(
        "create", "-f", "-",
        input=json.dumps(support.run_approval(
            namespace, "release-expired", entry["id"], "Approve", "mallory",
            ["interns", "system:authenticated"],
        )),
        as_user="mallory", as_groups=["interns"],
    )  # fmt: skip
    with pytest.raises(errors.GatewayError, match="no decision within 4 s"):
        held.result(30)
    status = support.get_run(kube, namespace, "release-expired")["status"]
    assert status["pendingApprovals"] == []
    assert status["interventions"]["rejections"] == 1
    assert status["interventions"].get("approvals", 0) == 0
    assert status["phase"] == "Running"


def test_an_earlier_decision_does_not_decide_a_repeated_call_id(
    kube: ControlPlane, cluster: dict[str, Any]
) -> None:
    """A model may send a tool call id again, with other arguments: the approval of the
    first call, or one naming the bare call id, must not let the second one through."""
    namespace, configs = cluster["namespace"], cluster["configs"]
    uid = _running_run(kube, namespace, "release-repeated")
    first = _Held(kube, namespace, "release-repeated", uid, timeout=60)
    [entry] = _wait_for("the first hold", lambda: _pending(kube, namespace, "release-repeated"))
    assert _cli(configs["alice"], "approve", "release-repeated", entry["id"], "-n", namespace) == 0
    assert first.result(30).approved
    kube.kubectl(
        "create", "-f", "-",
        input=json.dumps(support.run_approval(
            namespace, "release-repeated", "call_release", "Approve", "alice",
            ["payments-leads", "system:authenticated"],
        )),
        as_user="alice", as_groups=["payments-leads"],
    )  # fmt: skip
    second = _Held(kube, namespace, "release-repeated", uid, timeout=4)
    [again] = _wait_for("the second hold", lambda: _pending(kube, namespace, "release-repeated"))
    assert again["id"] != entry["id"]
    with pytest.raises(errors.GatewayError, match="no decision within 4 s"):
        second.result(30)
    status = support.get_run(kube, namespace, "release-repeated")["status"]
    assert status["interventions"]["approvals"] == 1
    assert status["interventions"]["rejections"] == 1


def test_a_finished_run_cannot_be_held(kube: ControlPlane, cluster: dict[str, Any]) -> None:
    namespace = cluster["namespace"]
    created = support.create_run(kube, namespace, "release-finished")
    support.set_status(kube, namespace, "release-finished", {"phase": "Succeeded"})
    held = _Held(kube, namespace, "release-finished", str(created["metadata"]["uid"]), timeout=30)
    with pytest.raises(errors.GatewayError, match="gone or finished"):
        held.result(15)
    assert _pending(kube, namespace, "release-finished") == []


def test_approving_a_call_that_is_not_held_says_so(
    kube: ControlPlane, cluster: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    namespace, configs = cluster["namespace"], cluster["configs"]
    _running_run(kube, namespace, "nothing-held")
    code = _cli(configs["alice"], "approve", "nothing-held", "call_nope", "-n", namespace)
    assert code == 1
    assert "no approval is pending for this tool call (pending: none" in capsys.readouterr().err
    runapprovals = kube.rest.get(f"{support.GROUP_PATH}/namespaces/{namespace}/runapprovals")
    assert not [a for a in runapprovals["items"] if a["spec"]["runName"] == "nothing-held"]


# -- admission: the API server vouches for decidedBy ------------------------------------


def _create_as(kube: ControlPlane, body: dict[str, Any], username: str, groups: list[str]) -> Any:
    return kube.kubectl(
        "create", "-f", "-", "-o", "json", input=json.dumps(body),
        as_user=username, as_groups=groups, check=False,
    )  # fmt: skip


def test_admission_rejects_a_decision_in_someone_elses_name(
    kube: ControlPlane, cluster: dict[str, Any]
) -> None:
    namespace = cluster["namespace"]
    forged = support.run_approval(
        namespace, "any-run", "call_1", "Approve", "bob", ["payments-leads", "system:authenticated"]
    )
    result = _create_as(kube, forged, "alice", ["payments-leads"])
    assert result.returncode != 0
    assert (
        "ValidatingAdmissionPolicy 'runapproval-identity.orchestrator.continue.dev'"
        in result.stderr
    )
    assert (
        "spec.decidedBy.username must be the requesting user: you are alice, "
        "the RunApproval claims bob"
    ) in result.stderr


def test_admission_rejects_claimed_groups(kube: ControlPlane, cluster: dict[str, Any]) -> None:
    namespace = cluster["namespace"]
    # mallory claims the approvers' group she is not in.
    forged = support.run_approval(
        namespace, "any-run", "call_1", "Approve", "mallory",
        ["interns", "payments-leads", "system:authenticated"],
    )  # fmt: skip
    result = _create_as(kube, forged, "mallory", ["interns"])
    assert result.returncode != 0
    assert "spec.decidedBy.groups must be exactly the requesting user's groups" in result.stderr
    # Leaving a group out is refused too: decidedBy is all of who you are.
    partial = support.run_approval(
        namespace, "any-run", "call_1", "Deny", "alice", ["payments-leads"]
    )
    result = _create_as(kube, partial, "alice", ["payments-leads"])
    assert result.returncode != 0
    assert "must be exactly the requesting user's groups" in result.stderr


def test_admission_admits_a_decision_in_ones_own_name(
    kube: ControlPlane, cluster: dict[str, Any]
) -> None:
    namespace = cluster["namespace"]
    own = support.run_approval(
        namespace, "any-run", "call_1", "Approve", "alice",
        ["system:authenticated", "payments-leads"],
    )  # fmt: skip
    result = _create_as(kube, own, "alice", ["payments-leads"])
    assert result.returncode == 0, result.stderr
    created = json.loads(result.stdout)
    assert created["spec"]["decidedBy"]["username"] == "alice"
    # Immutable once admitted: not even its author can change the decision afterwards.
    patched = kube.kubectl(
        "patch", "runapprovals", created["metadata"]["name"], "-n", namespace, "--type=merge",
        "-p", json.dumps({"spec": {"decision": "Deny"}}), check=False,
    )  # fmt: skip
    assert patched.returncode != 0
    assert "a RunApproval is immutable" in patched.stderr


# -- through the gateway: the agent's model call waits for the person --------------------


def _through_gateway(
    kube: ControlPlane,
    namespace: str,
    name: str,
    decide: Callable[[], None],
    tmp_path: Path,
    timeout: float,
) -> tuple[dict[str, Any], list[ledger.Entry]]:
    """One non-streaming chat call whose tool call policy holds; ``decide`` acts as the
    person (in a thread) once the call is held. The agent's answer and the ledger."""
    uid = _running_run(kube, namespace, name)
    book = ledger.open(f"sqlite:///{tmp_path / 'ledger.db'}")
    turns = [
        {"tool_calls": [{"name": "Bash", "id": "call_release",
                         "arguments": {"command": f"make release TOKEN={DEPLOY_TOKEN}"}}]},
        {"text": "I will not release then."},
    ]  # fmt: skip

    async def main() -> dict[str, Any]:
        model = local.ScriptedModel(local.Script.from_data({"turns": turns}))
        base = await model.start()
        server = gateway.Gateway(record_root=str(tmp_path / "records"), ledger=book)
        controller.KubeApprovalBroker.for_gateway(controller.Kube(kube.api_client()), server)
        await server.start()
        server.register_run(
            gateway.RunRegistration(
                uid=uid, token=TOKEN, expires_at=time.time() + 600,
                policy_set=_policy_set(namespace),
                models={"m": gateway.Upstream(base, "sk-real-upstream-key")},
                allowed_egress=frozenset({"127.0.0.1"}),
                name=name, namespace=namespace, approval_timeout=timeout,
                secrets={"DEPLOY_TOKEN": DEPLOY_TOKEN},
            )
        )  # fmt: skip
        person = asyncio.ensure_future(asyncio.to_thread(decide))
        try:
            async with (
                aiohttp.ClientSession() as session,
                session.post(
                    f"{server.api_base(uid)}/chat/completions",
                    json={"model": "m", "messages": [{"role": "user", "content": "release"}]},
                    headers={"Authorization": f"Bearer {TOKEN}"},
                ) as response,
            ):
                answer: dict[str, Any] = await response.json()
            await person
            return answer
        finally:
            await server.unregister_run(uid)
            await server.stop()
            await model.stop()

    try:
        answer = asyncio.run(main())
        return answer, list(book.entries(run_uid=uid))
    finally:
        book.close()


TOKEN = "run-token-for-cluster-approval-tests-0123"
DEPLOY_TOKEN = "deploy-token-7f3a9c"  # a granted secret the agent put in a command


def test_the_agent_gets_the_call_only_after_an_approver_approves(
    kube: ControlPlane, cluster: dict[str, Any], tmp_path: Path
) -> None:
    namespace, configs = cluster["namespace"], cluster["configs"]

    def alice() -> None:
        [held] = _wait_for("the held call", lambda: _pending(kube, namespace, "gw-approved"))
        # Whoever may read the AgentRun reads the summary: no secret value in it.
        assert DEPLOY_TOKEN not in json.dumps(support.get_run(kube, namespace, "gw-approved"))
        assert "TOKEN=[REDACTED:DEPLOY_TOKEN]" in held["summary"]
        assert _cli(configs["alice"], "approve", "gw-approved", held["id"], "-n",
                    namespace, "--reason", "window open") == 0  # fmt: skip

    answer, entries = _through_gateway(kube, namespace, "gw-approved", alice, tmp_path, 60)
    [call] = answer["choices"][0]["message"]["tool_calls"]
    assert call["function"]["name"] == "Bash"
    kinds = [e.kind for e in entries]
    assert kinds.index(ledger.Kind.APPROVAL_REQUESTED) < kinds.index(ledger.Kind.APPROVAL_GRANTED)
    [granted] = [e for e in entries if e.kind is ledger.Kind.APPROVAL_GRANTED]
    assert granted.actor == "alice" and granted.payload is not None
    assert granted.payload["by"] == "alice" and granted.payload["reason"] == "window open"
    assert granted.payload["groups"] == ["payments-leads", "system:authenticated"]
    assert any(e.kind is ledger.Kind.TOOL_CALL for e in entries)
    status = support.get_run(kube, namespace, "gw-approved")["status"]
    assert status["pendingApprovals"] == [] and status["interventions"]["approvals"] == 1


def test_a_non_approvers_decision_leaves_the_call_denied_at_the_timeout(
    kube: ControlPlane, cluster: dict[str, Any], tmp_path: Path
) -> None:
    namespace, configs = cluster["namespace"], cluster["configs"]

    def mallory() -> None:
        [held] = _wait_for("the held call", lambda: _pending(kube, namespace, "gw-expired"))
        assert _cli(configs["mallory"], "approve", "gw-expired", held["id"], "-n",
                    namespace) == 0  # fmt: skip

    # mallory must decide before the timeout for her decision to be ignored (not merely
    # late): 10 s leaves a loaded machine room for the hold, the CLI and the watch.
    answer, entries = _through_gateway(kube, namespace, "gw-expired", mallory, tmp_path, 10)
    message = answer["choices"][0]["message"]
    assert not message.get("tool_calls")
    assert message["content"] == "I will not release then."
    [denied] = [e for e in entries if e.kind is ledger.Kind.APPROVAL_DENIED]
    assert denied.payload is not None and denied.payload["by"] == "timeout"
    assert not any(e.kind is ledger.Kind.APPROVAL_GRANTED for e in entries)
    assert not any(e.kind is ledger.Kind.TOOL_CALL for e in entries)
    # Earlier tests' runs in this namespace have ignored decisions of their own.
    ignored = support.events(kube, namespace, "ApprovalIgnored")
    assert [e for e in ignored if e["involvedObject"]["name"] == "gw-expired"], ignored
    status = support.get_run(kube, namespace, "gw-expired")["status"]
    assert status["pendingApprovals"] == [] and status["interventions"]["rejections"] == 1


# -- the deployed gateway: `orchestrator gateway --approvals kubernetes` --------------------


ADMIN_TOKEN = "cluster-approvals-admin-token-0123456789"


def _policy_resource(namespace: str) -> api.RunPolicy:
    [resource] = _policy_set(namespace).policies
    assert isinstance(resource, api.RunPolicy)
    return resource


def test_the_standalone_gateway_holds_calls_on_the_agentrun(
    kube: ControlPlane, cluster: dict[str, Any], tmp_path: Path
) -> None:
    """The gateway as its Deployment runs it: the held call shows in the AgentRun's
    status, and an approver's RunApproval (made with the CLI) releases it to the agent."""
    namespace, configs, name = cluster["namespace"], cluster["configs"], "gw-standalone"
    uid = _running_run(kube, namespace, name)
    (tmp_path / "admin-token").write_text(ADMIN_TOKEN + "\n")
    turns = [
        {"tool_calls": [{"name": "Bash", "id": "call_release",
                         "arguments": {"command": "make release"}}]},
    ]  # fmt: skip
    model = local.ScriptedModel(local.Script.from_data({"turns": turns}))
    loop = asyncio.new_event_loop()
    threading.Thread(target=loop.run_forever, daemon=True).start()
    model_base = asyncio.run_coroutine_threadsafe(model.start(), loop).result(30)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        metrics_port = probe.getsockname()[1]
    process = subprocess.Popen(
        [
            sys.executable, "-m", "continue_orchestrator", "gateway", "--approvals", "kubernetes",
            "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0",
            "--record-root", str(tmp_path / "records"),
            "--ledger", f"sqlite:///{tmp_path / 'ledger.db'}",
            "--admin-token-file", str(tmp_path / "admin-token"),
            "--metrics-port", str(metrics_port),
        ],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env={**{k: v for k, v in os.environ.items() if not k.startswith("ORCHESTRATOR_")},
             "KUBECONFIG": str(kube.kubeconfig)},
    )  # fmt: skip
    try:
        assert process.stdout is not None
        line = process.stdout.readline().decode()
        assert line.startswith("gateway serving agents at "), line
        agents, admin = line.removeprefix("gateway serving agents at ").strip().split(", admin at ")
        resource = _policy_resource(namespace)
        client = gateway.BlockingClient(admin, ADMIN_TOKEN)
        client.register(
            runs.Registration(
                uid=uid, name=name, namespace=namespace, token=TOKEN,
                expires_at=time.time() + 600,
                policy=json.dumps(policy.snapshot_document([resource])).encode(),
                policy_digest=policy.compile([resource]).digest,
                allowed_egress=("127.0.0.1",),
                config=continue_config.text(name="a", model_name="m", model="m",
                                            api_base=model_base,
                                            api_key="${{ secrets.KEY }}", roles=None),
                secrets={"KEY": "sk-upstream-for-standalone-approvals"},
            )
        )  # fmt: skip

        def alice() -> None:
            [held] = _wait_for("the held call", lambda: _pending(kube, namespace, name), 60)
            assert support.get_run(kube, namespace, name)["status"]["phase"] == "AwaitingApproval"
            assert _cli(configs["alice"], "approve", name, held["id"], "-n", namespace) == 0

        person = threading.Thread(target=alice)
        person.start()
        request = urllib.request.Request(
            f"{agents}/runs/{uid}/v1/chat/completions",
            data=json.dumps(
                {"model": "m", "messages": [{"role": "user", "content": "release"}]}
            ).encode(),
            headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=120) as response:
            answer = json.loads(response.read())
        person.join(30)
        [call] = answer["choices"][0]["message"]["tool_calls"]
        assert json.loads(call["function"]["arguments"]) == {"command": "make release"}
        status = support.get_run(kube, namespace, name)["status"]
        assert status["pendingApprovals"] == [] and status["interventions"]["approvals"] == 1
        assert status["phase"] == "Running"
        # The approval counts as an intervention where this process serves its metrics.
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics") as scrape:
            served = scrape.read().decode()
        assert 'orchestrator_interventions_total{kind="approval"} 1.0' in served, served
        assert 'orchestrator_interventions_total{kind="rejection"} 0.0' in served
        client.close()
    finally:
        process.terminate()
        process.wait(30)
        asyncio.run_coroutine_threadsafe(model.stop(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
