"""The operator on a real kube-apiserver, with the pod executor as its kubelet.

Each test applies AgentRuns the way a user would and checks what the cluster, the
ledger and the sandbox process then show, including what an agent inside the pod could
see. Runs are driven by a stand-in runner whose sleep and exit code each test sets.
"""

from __future__ import annotations

import base64
import json
import time

import pytest
from tests.integration.operator import harness
from tests.integration.operator.harness import Cluster, Operator
from tests.kube import PodExecutor

from continue_orchestrator import api

pytestmark = pytest.mark.cluster

SECRET_VALUE = "granted-value-4e1f"
UNGRANTED_VALUE = "ungranted-value-9c2d"


def _setup(cluster: Cluster, namespace: str, **policy: object) -> None:
    cluster.create(harness.run_policy(namespace, **policy))
    cluster.create(harness.secret(namespace, "creds", {"token": SECRET_VALUE}))
    cluster.create(harness.secret(namespace, "other", {"token": UNGRANTED_VALUE}))


def test_happy_path(
    cluster: Cluster, operator: Operator, namespace: str, pod_executor: PodExecutor
) -> None:
    _setup(cluster, namespace)
    operator.behave("happy", sleep=2)
    created = cluster.create(
        harness.agent_run(
            namespace,
            "happy",
            secrets=[{"name": "API_TOKEN", "secretKeyRef": {"name": "creds", "key": "token"}}],
        )
    )
    uid = created["metadata"]["uid"]
    run = cluster.wait_phase(namespace, "happy", explain=operator.log_tail)
    status = run["status"]
    assert status["phase"] == "Succeeded", status
    conditions = harness.conditions(run)
    assert conditions["PolicyValid"]["status"] == "True"
    assert conditions["Completed"]["status"] == "True"
    assert conditions["Completed"]["reason"] == "Completed"
    assert status["startTime"] and status["completionTime"]
    assert status["runnerImage"] == harness.IMAGE

    (pod,) = cluster.pods(namespace, uid)
    spec = pod["spec"]
    assert spec["runtimeClassName"] == "gvisor"
    assert spec["automountServiceAccountToken"] is False
    assert spec["activeDeadlineSeconds"] == 600
    container = spec["containers"][0]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert pod["metadata"]["ownerReferences"][0]["uid"] == uid
    annotations = pod["metadata"]["annotations"]
    assert annotations[f"{api.GROUP}/inputs-digest"] == status["inputsDigest"]
    assert annotations[f"{api.GROUP}/policy-digest"] == status["policyDigest"]

    name = pod["metadata"]["name"]
    netpol = cluster.rest.get(
        f"/apis/networking.k8s.io/v1/namespaces/{namespace}/networkpolicies/{name}"
    )
    assert not netpol["spec"].get("ingress")
    assert netpol["spec"]["policyTypes"] == ["Ingress", "Egress"]
    assert len(netpol["spec"]["egress"]) == 1
    run_secret = cluster.rest.get(f"/api/v1/namespaces/{namespace}/secrets/{name}")
    values = {k: base64.b64decode(v).decode() for k, v in run_secret["data"].items()}
    assert values["secret.API_TOKEN"] == SECRET_VALUE
    assert UNGRANTED_VALUE not in json.dumps(values)

    # What the process in the sandbox was handed.
    report = harness.report(pod_executor, namespace, name)
    assert report["uid"] != 0
    env_text = json.dumps(report["env"])
    assert SECRET_VALUE not in env_text and UNGRANTED_VALUE not in env_text
    assert values["token"] not in env_text
    assert "KUBERNETES_SERVICE_ACCOUNT" not in env_text

    entries = operator.entries(uid, until="run.finished")
    kinds = harness.kinds(entries)
    assert kinds.count("run.created") == 1 and kinds.count("run.finished") == 1
    assert kinds.index("run.created") < kinds.index("run.finished")
    assert "secret.read" in kinds
    assert SECRET_VALUE not in json.dumps([e.payload for e in entries])
    finished = next(e for e in entries if e.kind.value == "run.finished")
    assert finished.payload is not None and finished.payload["phase"] == "Succeeded"
    harness.exactly_once(cluster, operator, namespace, ["happy"])

    # The start handler posts SandboxCreated and is timed when it returns, while the pod's
    # handler may already have finished the run: wait for its end rather than assume it.
    def start_timed() -> str | None:
        text = operator.metrics()
        timed = 'orchestrator_reconcile_duration_seconds_count{handler="start"}' in text
        return text if timed else None

    metrics = cluster.wait("the start handler's end", start_timed, 15, operator.log_tail)
    assert 'orchestrator_agentruns_finished_total{phase="Succeeded",reason="Completed"}' in metrics
    assert 'orchestrator_agentruns{phase="Succeeded"}' in metrics
    reasons = [e["reason"] for e in cluster.events(namespace, uid)]
    assert "SandboxCreated" in reasons and reasons.count("Succeeded") == 1


def _assert_rejected(
    cluster: Cluster,
    operator: Operator,
    namespace: str,
    name: str,
    phase: str,
    reason: str,
    field: str,
) -> dict[str, object]:
    run = cluster.wait_phase(namespace, name, explain=operator.log_tail)
    status = run["status"]
    assert status["phase"] == phase, status
    completed = harness.conditions(run)["Completed"]
    assert completed["reason"] == reason
    assert field in completed["message"], completed["message"]
    assert cluster.pods(namespace, run["metadata"]["uid"]) == []
    assert not [
        s
        for s in cluster.list(f"/api/v1/namespaces/{namespace}/secrets")
        if s["metadata"].get("labels", {}).get(f"{api.GROUP}/run-uid")
    ]
    kinds = harness.kinds(operator.entries(run["metadata"]["uid"], until="run.finished"))
    assert kinds.count("run.finished") == 1
    return dict(run)


def test_repository_denied_by_policy(cluster: Cluster, operator: Operator, namespace: str) -> None:
    _setup(cluster, namespace)
    cluster.create(
        harness.agent_run(
            namespace, "elsewhere", repository={"url": "https://github.com/evil/exfiltrate"}
        )
    )
    run = _assert_rejected(
        cluster,
        operator,
        namespace,
        "elsewhere",
        "Denied",
        "RepositoryDenied",
        "spec.repository.url",
    )
    policy_valid = harness.conditions(run)["PolicyValid"]  # type: ignore[arg-type]
    assert policy_valid["status"] == "False" and policy_valid["reason"] == "RepositoryDenied"


def test_missing_secret_fails(cluster: Cluster, operator: Operator, namespace: str) -> None:
    _setup(cluster, namespace)
    cluster.create(
        harness.agent_run(
            namespace,
            "no-secret",
            secrets=[{"name": "API_TOKEN", "secretKeyRef": {"name": "absent", "key": "token"}}],
        )
    )
    _assert_rejected(
        cluster,
        operator,
        namespace,
        "no-secret",
        "Failed",
        "SecretNotFound",
        "spec.secrets[0].secretKeyRef",
    )


def test_secret_not_granted_is_denied_and_never_copied(
    cluster: Cluster, operator: Operator, namespace: str
) -> None:
    _setup(cluster, namespace)
    cluster.create(
        harness.agent_run(
            namespace,
            "greedy",
            secrets=[
                {"name": "API_TOKEN", "secretKeyRef": {"name": "creds", "key": "token"}},
                {"name": "OTHER_TOKEN", "secretKeyRef": {"name": "other", "key": "token"}},
            ],
        )
    )
    _assert_rejected(
        cluster, operator, namespace, "greedy", "Denied", "SecretNotAllowed", "spec.secrets[1].name"
    )
    every_secret = json.dumps(cluster.list(f"/api/v1/namespaces/{namespace}/secrets"))
    assert every_secret.count(base64.b64encode(UNGRANTED_VALUE.encode()).decode()) == 1


def test_missing_policy_and_bad_runtime_class_fail_without_crash_loop(
    cluster: Cluster, operator: Operator, namespace: str
) -> None:
    _setup(cluster, namespace)
    cluster.create(harness.run_policy(namespace, "kata", sandbox={"runtimeClassName": "kata"}))
    cluster.create(harness.agent_run(namespace, "no-policy", policyRef={"name": "nope"}))
    cluster.create(harness.agent_run(namespace, "no-runtime", policyRef={"name": "kata"}))
    _assert_rejected(
        cluster,
        operator,
        namespace,
        "no-policy",
        "Failed",
        "PolicyNotFound",
        "spec.policyRef.name",
    )
    _assert_rejected(
        cluster,
        operator,
        namespace,
        "no-runtime",
        "Failed",
        "RuntimeClassNotFound",
        "runtimeClassName",
    )
    operator.behave("after-bad-input")
    cluster.create(harness.agent_run(namespace, "after-bad-input"))
    assert cluster.wait_phase(namespace, "after-bad-input")["status"]["phase"] == "Succeeded"


def test_runner_exit_codes_map_to_phases(
    cluster: Cluster, operator: Operator, namespace: str
) -> None:
    _setup(cluster, namespace)
    expected = {
        "agent-fails": (20, "Failed", "AgentFailed"),
        "policy-stop": (22, "Denied", "PolicyStopped"),
    }
    for name, (code, _, _) in expected.items():
        operator.behave(name, sleep=0.5, exit=code)
        cluster.create(harness.agent_run(namespace, name))
    for name, (_, phase, reason) in expected.items():
        run = cluster.wait_phase(namespace, name, explain=operator.log_tail)
        assert run["status"]["phase"] == phase
        assert harness.conditions(run)["Completed"]["reason"] == reason


def test_timeout(cluster: Cluster, operator: Operator, namespace: str) -> None:
    _setup(cluster, namespace)
    operator.behave("slow", sleep=600)
    cluster.create(harness.agent_run(namespace, "slow", timeoutSeconds=60))
    run = cluster.wait_phase(namespace, "slow", timeout=120, explain=operator.log_tail)
    assert run["status"]["phase"] == "TimedOut", run["status"]
    assert harness.conditions(run)["Completed"]["reason"] == "DeadlineExceeded"
    kinds = harness.kinds(operator.entries(run["metadata"]["uid"], until="run.finished"))
    assert kinds.count("run.finished") == 1


def test_cancel_stops_the_pod_and_counts_an_intervention(
    cluster: Cluster, operator: Operator, namespace: str
) -> None:
    _setup(cluster, namespace)
    operator.behave("stop-me", sleep=600)
    uid = cluster.create(harness.agent_run(namespace, "stop-me"))["metadata"]["uid"]
    cluster.wait_phase(namespace, "stop-me", {"Running"}, explain=operator.log_tail)
    cluster.patch_run(namespace, "stop-me", {"spec": {"cancel": True}})
    run = cluster.wait_phase(namespace, "stop-me", explain=operator.log_tail)
    assert run["status"]["phase"] == "Cancelled"
    assert run["status"]["interventions"]["manualStops"] == 1
    cluster.wait("the cancelled run's pod to go", lambda: not cluster.pods(namespace, uid))
    time.sleep(3)  # two resyncs: the pod stays gone and the phase stays Cancelled
    assert not cluster.pods(namespace, uid)
    again = cluster.run(namespace, "stop-me")
    assert again is not None and again["status"]["phase"] == "Cancelled"
    assert again["status"]["interventions"]["manualStops"] == 1
    assert "manual_stop" in operator.metrics()


def test_pod_deleted_behind_the_operators_back_fails_the_run(
    cluster: Cluster, operator: Operator, namespace: str
) -> None:
    _setup(cluster, namespace)
    operator.behave("orphaned", sleep=600)
    uid = cluster.create(harness.agent_run(namespace, "orphaned"))["metadata"]["uid"]
    cluster.wait_phase(namespace, "orphaned", {"Running"}, explain=operator.log_tail)
    (pod,) = cluster.pods(namespace, uid)
    cluster.rest.request("DELETE", f"/api/v1/namespaces/{namespace}/pods/{pod['metadata']['name']}")
    run = cluster.wait_phase(namespace, "orphaned", explain=operator.log_tail)
    assert run["status"]["phase"] == "Failed"
    assert harness.conditions(run)["Completed"]["reason"] == "PodDeleted"
    cluster.wait("the deleted pod to be gone", lambda: not cluster.pods(namespace, uid))
    time.sleep(5)  # resyncs run every 2s: none of them may recreate it
    assert not cluster.pods(namespace, uid)


def test_delete_writes_the_tombstone(cluster: Cluster, operator: Operator, namespace: str) -> None:
    _setup(cluster, namespace)
    operator.behave("forget-me", sleep=0.5)
    uid = cluster.create(harness.agent_run(namespace, "forget-me"))["metadata"]["uid"]
    cluster.wait_phase(namespace, "forget-me", explain=operator.log_tail)
    run = cluster.run(namespace, "forget-me")
    assert (
        run is not None
        and "orchestrator.continue.dev/ledger-tombstone" in run["metadata"]["finalizers"]
    )
    cluster.rest.request(
        "DELETE", f"{harness.GROUP_PATH}/namespaces/{namespace}/agentruns/forget-me"
    )
    cluster.wait("the AgentRun to be gone", lambda: cluster.run(namespace, "forget-me") is None)
    # The handler that finished the run may still be writing (the delete came right after
    # the phase): its terminal Event is its last word. Nothing may follow the tombstone.
    cluster.wait(
        "the terminal Event",
        lambda: any(e["reason"] in harness.TERMINAL for e in cluster.events(namespace, uid)),
        timeout=30,
        explain=operator.log_tail,
    )
    entries = operator.entries(uid)
    kinds = harness.kinds(entries)
    assert kinds.count("tombstone") == 1 and kinds[-1] == "tombstone", kinds
    assert kinds.count("run.finished") == 1, kinds
    assert all(e.redacted for e in entries if e.kind.value != "tombstone")


def test_policy_is_snapshotted_at_start(
    cluster: Cluster, operator: Operator, namespace: str
) -> None:
    _setup(cluster, namespace)
    # Long enough that a loaded machine still sees it Running and edits the policy then.
    operator.behave("pinned", sleep=10)
    cluster.create(harness.agent_run(namespace, "pinned"))
    running = cluster.wait_phase(namespace, "pinned", {"Running"}, explain=operator.log_tail)
    digest = running["status"]["policyDigest"]
    # The namespace admin now forbids everything; the running run keeps its snapshot.
    cluster.rest.request(
        "PATCH",
        f"{harness.GROUP_PATH}/namespaces/{namespace}/runpolicies/default",
        {"spec": {"rules": [], "allowedSecrets": []}},
        content_type="application/merge-patch+json",
    )
    run = cluster.wait_phase(namespace, "pinned", explain=operator.log_tail)
    assert run["status"]["phase"] == "Succeeded"
    assert run["status"]["policyDigest"] == digest
    cluster.create(harness.agent_run(namespace, "after-edit"))
    denied = cluster.wait_phase(namespace, "after-edit")
    assert denied["status"]["phase"] == "Denied"


def test_50_concurrent_runs_reach_a_terminal_phase_exactly_once(
    cluster: Cluster, operator: Operator, namespace: str
) -> None:
    cluster.create(harness.run_policy(namespace))
    names = [f"many-{i:02d}" for i in range(50)]
    for index, name in enumerate(names):
        operator.behave(name, sleep=1, exit=20 if index % 10 == 0 else 0)
    for name in names:
        cluster.create(harness.agent_run(namespace, name))
    for name in names:
        cluster.wait_phase(namespace, name, timeout=180, explain=operator.log_tail)
    harness.exactly_once(cluster, operator, namespace, names)
    phases = [cluster.run(namespace, n)["status"]["phase"] for n in names]  # type: ignore[index]
    assert phases.count("Failed") == 5 and phases.count("Succeeded") == 45
