"""How a run ends: the runner's exit code as a phase, and the ``run.finished`` payload,
one home for the operator and local mode (``runs.phase_of``, ``runs.Finish``)."""

from __future__ import annotations

from datetime import UTC, datetime

from continue_orchestrator import api, runner, runs


def test_every_runner_exit_code_has_a_phase() -> None:
    for code in runner.ExitCode:
        assert code in runs.RUNNER_EXIT_CODES


def test_an_unknown_or_missing_exit_code_is_a_runner_failure() -> None:
    assert runs.phase_of(runner.ExitCode.POLICY_STOPPED) == (api.Phase.DENIED, "PolicyStopped")
    assert runs.phase_of(137) == (api.Phase.FAILED, "RunnerFailed")
    assert runs.phase_of(None) == (api.Phase.FAILED, "RunnerFailed")


def test_the_finished_payload_leaves_out_what_is_not_known() -> None:
    finish = runs.Finish(
        phase=api.Phase.CANCELLED,
        reason="ManualStop",
        message="stopped",
        started_at=datetime(2026, 1, 1, 10, 0, 0, 250000, tzinfo=UTC),
        finished_at=datetime(2026, 1, 1, 10, 5, tzinfo=UTC),
        policy_digest="sha256:" + "4" * 64,
    )
    assert finish.payload(name="fix", namespace="team-a") == {
        "name": "fix",
        "namespace": "team-a",
        "phase": "Cancelled",
        "reason": "ManualStop",
        "message": "stopped",
        "startTime": "2026-01-01T10:00:00Z",
        "completionTime": "2026-01-01T10:05:00Z",
        "policyDigest": "sha256:" + "4" * 64,
    }


def test_a_status_gives_the_finish_it_records() -> None:
    status = api.AgentRunStatus.model_validate(
        {
            "phase": "Failed",
            "message": "runner in pod x exited 20",
            "startTime": "2026-01-01T10:00:00Z",
            "completionTime": "2026-01-01T10:05:00Z",
            "inputsDigest": "sha256:" + "3" * 64,
            "policyDigest": "sha256:" + "4" * 64,
            "record": {"digest": "sha256:" + "5" * 64, "location": "records/x"},
            "conditions": [
                {
                    "type": "Completed",
                    "status": "True",
                    "reason": "AgentFailed",
                    "message": "runner in pod x exited 20",
                    "lastTransitionTime": "2026-01-01T10:05:00Z",
                }
            ],
        }
    )
    finish = runs.from_status(status)
    assert (finish.phase, finish.reason) == (api.Phase.FAILED, "AgentFailed")
    assert finish.record_digest == "sha256:" + "5" * 64
    payload = finish.payload(name="x", namespace="team-a")
    assert payload["startTime"] == status.start_time
    assert payload["completionTime"] == status.completion_time
