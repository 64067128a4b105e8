"""The reconciler's status changes and the approval broker's, through the one writer."""

from __future__ import annotations

import time
from typing import Any

import pytest
from tests.unit.controller._fake_kube import NAME, NAMESPACE, UID, FakeKube

from continue_orchestrator import api, controller, errors, gateway
from continue_orchestrator.controller import _agentrun, _outcome, _status, _transitions

REF = _agentrun.Ref(NAMESPACE, NAME, UID)
DIGEST = "sha256:" + "b" * 64


def _run(status: dict[str, Any] | None = None, **spec: Any) -> _agentrun.Run:
    kube = FakeKube()
    body = kube.add_run(status)
    body["spec"].update(spec)
    return _agentrun.Run.of(body)


def _conditions(patch: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in patch["conditions"]}


def _created(run: _agentrun.Run) -> dict[str, Any] | None:
    return _transitions.sandbox_created(
        run,
        pod="fix-it-0b6f3f7e",
        inputs_digest=DIGEST,
        policy_digest=DIGEST,
        runtime_class="gvisor",
        runner_image="img@" + DIGEST,
    )


def test_sandbox_created_is_written_once() -> None:
    kube = FakeKube()
    kube.add_run({"phase": "Pending"})
    written = _status.patch(kube, REF, _created)
    assert written is not None
    assert written.status.inputs_digest == DIGEST
    assert written.status.message == "pod fix-it-0b6f3f7e created"
    ready, valid = written.condition("SandboxReady"), written.condition("PolicyValid")
    assert ready is not None and (ready.status, ready.reason) == ("False", "PodCreated")
    assert valid is not None and valid.status == "True"
    assert _status.patch(kube, REF, _created) is None


def test_no_sandbox_is_requested_for_a_run_being_cancelled_or_ended() -> None:
    setting = _outcome.Setting("SandboxRequested", "True", "PodRequested", "requested")
    assert _transitions.sandbox_requested(_run(cancel=True), setting) is None
    assert _transitions.sandbox_requested(_run({"phase": "Failed"}), setting) is None
    patch = _transitions.sandbox_requested(_run(), setting)
    assert patch is not None and _conditions(patch)["SandboxRequested"]["status"] == "True"


def test_a_cancel_counts_one_manual_stop_and_only_once() -> None:
    outcome = _outcome.Outcome(api.Phase.CANCELLED, "Cancelled", "stopped")
    patch = _transitions.cancelled(_run({"phase": "Running"}), outcome)
    assert patch is not None and patch["phase"] == "Cancelled"
    assert patch["interventions"]["manualStops"] == 1 and patch["interventions"]["total"] == 1
    assert _transitions.cancelled(_run({"phase": "Cancelled"}), outcome) is None


@pytest.mark.parametrize(
    ("reason", "policy_valid", "replayed"),
    [("RepositoryDenied", "False", None), ("InputDrift", "True", "False"), ("Oops", "True", None)],
)
def test_a_rejection_says_whether_policy_or_the_replay_source_refused(
    reason: str, policy_valid: str, replayed: str | None
) -> None:
    outcome = _outcome.Outcome(api.Phase.DENIED, reason, "no")
    patch = _transitions.rejected(_run(), outcome)
    assert patch is not None
    conditions = _conditions(patch)
    assert conditions["PolicyValid"]["status"] == policy_valid
    assert conditions["Completed"]["reason"] == reason
    assert conditions.get("Replayed", {}).get("status") == replayed
    api.AgentRunStatus.model_validate(patch)


def test_a_record_and_a_replay_report() -> None:
    patch = _transitions.recorded(_run(), digest=DIGEST, location="here", replay=None)
    assert patch == {"record": {"digest": DIGEST, "location": "here"}}
    report = {"identical": True, "replayOf": "u", "record": DIGEST}
    patch = _transitions.recorded(_run(), digest=DIGEST, location="here", replay=report)
    assert _conditions(patch)["Replayed"]["reason"] == "Identical"


def _broker(kube: FakeKube) -> controller.KubeApprovalBroker:
    scope = controller.RunScope(NAMESPACE, NAME, None)
    return controller.KubeApprovalBroker(kube, lambda run: scope if run == UID else None)


def _approval() -> gateway.Approval:
    return gateway.Approval(
        id="call_1-abcd",
        run=UID,
        tool="Bash",
        arguments={"command": "make release"},
        rule="default/release",
        reason="releases need a lead",
        timeout=60,
        requested_at=time.time(),
    )


def test_a_held_call_waits_in_the_status_and_its_settlement_is_counted() -> None:
    kube = FakeKube()
    kube.add_run({"phase": "Running"})
    broker = _broker(kube)
    scope = controller.RunScope(NAMESPACE, NAME, None)
    broker._hold(scope, UID, _approval())
    held = _status.read(kube, REF)
    assert held is not None and held.status.phase is api.Phase.AWAITING_APPROVAL
    assert [p.id for p in held.status.pending_approvals] == ["call_1-abcd"]
    broker._settle(scope, UID, _approval(), None)  # timed out: a rejection
    settled = _status.read(kube, REF)
    assert settled is not None and settled.status.phase is api.Phase.RUNNING
    assert settled.status.pending_approvals == []
    assert settled.status.interventions == api.Interventions(rejections=1, total=1)
    writes = len(kube.patches)
    broker._settle(scope, UID, _approval(), None)  # settled already: nothing to count
    assert len(kube.patches) == writes


def test_a_finished_run_holds_no_call() -> None:
    kube = FakeKube()
    kube.add_run({"phase": "Succeeded"})
    scope = controller.RunScope(NAMESPACE, NAME, None)
    with pytest.raises(errors.GatewayError, match="gone or finished"):
        _broker(kube)._hold(scope, UID, _approval())
    assert kube.patches == []
