"""Pod state to AgentRun phase: the mapping, and that phases only ever move forward."""

from __future__ import annotations

from typing import Any

import pytest

from continue_orchestrator import api, controller, runner


def pod(phase: str | None, *, exit_code: int | None = None, **status: Any) -> dict[str, Any]:
    containers = []
    if exit_code is not None:
        containers.append(
            {
                "name": "runner",
                "state": {"terminated": {"exitCode": exit_code, **status.pop("terminated", {})}},
            }
        )
    return {
        "metadata": {"name": "run-1234"},
        "status": {"phase": phase, "containerStatuses": containers, **status},
    }


@pytest.mark.parametrize(
    ("given", "phase", "reason"),
    [
        (pod("Pending"), api.Phase.PENDING, "PodPending"),
        (pod("Running", startTime="2026-01-01T00:00:00Z"), api.Phase.RUNNING, "PodRunning"),
        (pod("Succeeded", exit_code=0), api.Phase.SUCCEEDED, "Completed"),
        (pod("Failed", reason="DeadlineExceeded"), api.Phase.TIMED_OUT, "DeadlineExceeded"),
        (
            pod("Failed", exit_code=runner.ExitCode.POLICY_STOPPED),
            api.Phase.DENIED,
            "PolicyStopped",
        ),
        (pod("Failed", exit_code=runner.ExitCode.TIMED_OUT), api.Phase.TIMED_OUT, "AgentTimedOut"),
        (pod("Failed", exit_code=runner.ExitCode.AGENT_FAILED), api.Phase.FAILED, "AgentFailed"),
        (pod("Failed", exit_code=137), api.Phase.FAILED, "RunnerFailed"),
        (pod("Failed", exit_code=0), api.Phase.FAILED, "RunnerFailed"),
        (
            pod("Failed", exit_code=137, terminated={"reason": "OOMKilled"}),
            api.Phase.FAILED,
            "OOMKilled",
        ),
        (pod("Failed", reason="Evicted"), api.Phase.FAILED, "Evicted"),
    ],
)
def test_pod_state_maps_to_phase(given: dict[str, Any], phase: api.Phase, reason: str) -> None:
    outcome = controller.from_pod(given)
    assert outcome is not None
    assert (outcome.phase, outcome.reason) == (phase, reason)
    assert "run-1234" in outcome.message


def test_a_pod_being_deleted_is_a_failure_not_a_success() -> None:
    deleting = pod("Succeeded", exit_code=0)
    deleting["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    outcome = controller.from_pod(deleting)
    assert outcome is not None and (outcome.phase, outcome.reason) == (
        api.Phase.FAILED,
        "PodDeleted",
    )


def test_runner_failure_message_is_kept() -> None:
    outcome = controller.from_pod(
        pod("Failed", exit_code=23, terminated={"message": "config.yaml: models[0] unknown"})
    )
    assert outcome is not None and "config.yaml: models[0] unknown" in outcome.message


def status(phase: str, **extra: Any) -> dict[str, Any]:
    return {"phase": phase, "conditions": [], **extra}


def test_running_sets_start_time_and_sandbox_ready() -> None:
    outcome = controller.Outcome(api.Phase.RUNNING, "PodRunning", "running", "2026-01-01T00:00:00Z")
    new = controller.advance(status("Pending"), outcome, generation=1, at="2026-01-01T00:00:05Z")
    assert new is not None
    assert new["phase"] == "Running" and new["startTime"] == "2026-01-01T00:00:00Z"
    (ready,) = new["conditions"]
    assert (ready["type"], ready["status"], ready["reason"]) == (
        "SandboxReady",
        "True",
        "PodRunning",
    )


def test_terminal_sets_completed_and_never_changes_again() -> None:
    running = controller.advance(
        status("Pending"),
        controller.Outcome(api.Phase.RUNNING, "PodRunning", "running"),
        generation=1,
        at="2026-01-01T00:00:00Z",
    )
    done = controller.advance(
        running,
        controller.Outcome(api.Phase.SUCCEEDED, "Completed", "exited 0"),
        generation=1,
        at="2026-01-01T00:01:00Z",
    )
    assert done is not None and done["completionTime"] == "2026-01-01T00:01:00Z"
    conditions = {c["type"]: c for c in done["conditions"]}
    assert conditions["Completed"]["status"] == "True"
    assert conditions["SandboxReady"]["status"] == "False"
    for later in (
        controller.Outcome(api.Phase.FAILED, "PodDeleted", "gone"),
        controller.Outcome(api.Phase.CANCELLED, "Cancelled", "stop"),
        controller.Outcome(api.Phase.SUCCEEDED, "Completed", "again"),
        controller.Outcome(api.Phase.RUNNING, "PodRunning", "back"),
    ):
        assert controller.advance(done, later, generation=1) is None


def test_phases_never_go_backwards() -> None:
    running = status("Running")
    assert (
        controller.advance(
            running, controller.Outcome(api.Phase.PENDING, "PodPending", "x"), generation=1
        )
        is None
    )
    assert (
        controller.advance(
            running, controller.Outcome(api.Phase.RUNNING, "PodRunning", "x"), generation=1
        )
        is None
    )
    waiting = status("AwaitingApproval")
    assert (
        controller.advance(
            waiting, controller.Outcome(api.Phase.RUNNING, "PodRunning", "x"), generation=1
        )
        is None
    )


def test_condition_transition_time_moves_only_with_its_status() -> None:
    first = controller.advance(
        status("Pending"),
        controller.Outcome(api.Phase.RUNNING, "PodRunning", "x"),
        generation=1,
        at="2026-01-01T00:00:00Z",
    )
    assert first is not None
    from continue_orchestrator.controller import _outcome

    same = _outcome.set_condition(
        first["conditions"],
        "SandboxReady",
        "True",
        "PodRunning",
        "still",
        at="2027-01-01T00:00:00Z",
        generation=1,
    )
    assert same[0]["lastTransitionTime"] == "2026-01-01T00:00:00Z"
    moved = _outcome.set_condition(
        first["conditions"],
        "SandboxReady",
        "False",
        "RunFinished",
        "done",
        at="2027-01-01T00:00:00Z",
        generation=1,
    )
    assert moved[0]["lastTransitionTime"] == "2027-01-01T00:00:00Z"


def test_status_validates_against_the_api_model() -> None:
    new = controller.advance(
        status("Pending"),
        controller.Outcome(api.Phase.TIMED_OUT, "DeadlineExceeded", "too slow"),
        generation=3,
    )
    assert new is not None
    parsed = api.AgentRunStatus.model_validate(new)
    assert parsed.phase is api.Phase.TIMED_OUT and parsed.completion_time
