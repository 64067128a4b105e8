"""How a run ends: its runner's exit code as a phase, and its ``run.finished`` entry.

The runner says how it ended in one number (``runner.ExitCode``); the operator reads it
from the pod, local mode from the sandboxed process. Both turn it into the run's phase
and reason with ``phase_of``, and both write the run's ``run.finished`` ledger entry
from one ``Finish``, so the ledger tells a cluster run's end and a local run's end in
the same words. The attestation's facts are built from the same ``Finish``.
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Mapping
from typing import Any

from continue_orchestrator import api, runner

JSON = dict[str, Any]

_CODE = runner.ExitCode
RUNNER_EXIT_CODES: Mapping[int, tuple[api.Phase, str]] = {
    _CODE.SUCCEEDED: (api.Phase.SUCCEEDED, "Completed"),
    _CODE.AGENT_FAILED: (api.Phase.FAILED, "AgentFailed"),
    _CODE.VERIFY_FAILED: (api.Phase.FAILED, "VerifyFailed"),
    _CODE.POLICY_STOPPED: (api.Phase.DENIED, "PolicyStopped"),
    _CODE.CONFIG_ERROR: (api.Phase.FAILED, "ConfigError"),
    _CODE.TIMED_OUT: (api.Phase.TIMED_OUT, "AgentTimedOut"),
    _CODE.WORKSPACE_ERROR: (api.Phase.FAILED, "WorkspaceError"),
    _CODE.REPORT_FAILED: (api.Phase.FAILED, "ReportFailed"),
    1: (api.Phase.FAILED, "RunnerCrashed"),
}
"""The runner's exit codes (``runner.ExitCode``) as phases and reasons."""


def phase_of(exit_code: int | None) -> tuple[api.Phase, str]:
    """The phase and reason a runner's exit code means; any other code (or none) is
    Failed, ``RunnerFailed``."""
    if exit_code is None:
        return api.Phase.FAILED, "RunnerFailed"
    return RUNNER_EXIT_CODES.get(exit_code, (api.Phase.FAILED, "RunnerFailed"))


def timestamp(at: datetime.datetime) -> str:
    """RFC 3339 UTC to the second, as Kubernetes writes status times."""
    return at.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: object) -> datetime.datetime | None:
    """An RFC 3339 time (a naive one is UTC); None for nothing or a malformed one."""
    if not isinstance(text, str) or not text:
        return None
    try:
        value = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return value if value.tzinfo else value.replace(tzinfo=datetime.UTC)


@dataclasses.dataclass(frozen=True, slots=True)
class Finish:
    """How one run ended, as its ``run.finished`` entry and its attestation say."""

    phase: api.Phase
    reason: str
    message: str = ""
    started_at: datetime.datetime | None = None
    finished_at: datetime.datetime | None = None
    inputs_digest: str | None = None
    policy_digest: str | None = None
    record_digest: str | None = None
    """The sealed record's ``sha256:`` digest, when the gateway kept one."""

    def payload(self, *, name: str, namespace: str) -> JSON:
        """The ``run.finished`` ledger entry's payload; what is not known is left out."""
        values: dict[str, Any] = {
            "phase": self.phase.value,
            "reason": self.reason,
            "message": self.message,
            "startTime": timestamp(self.started_at) if self.started_at else None,
            "completionTime": timestamp(self.finished_at) if self.finished_at else None,
            "inputsDigest": self.inputs_digest,
            "policyDigest": self.policy_digest,
            "recordDigest": self.record_digest,
        }
        return {
            "name": name,
            "namespace": namespace,
            **{key: value for key, value in values.items() if value is not None},
        }


def from_status(status: api.AgentRunStatus) -> Finish:
    """The finish a terminal AgentRun's status records (its ``Completed`` condition's
    reason and message, its times and digests)."""
    completed = next((c for c in status.conditions if c.type == "Completed"), None)
    return Finish(
        phase=status.phase,
        reason=completed.reason if completed is not None else status.phase.value,
        message=completed.message if completed is not None else "",
        started_at=parse_time(status.start_time),
        finished_at=parse_time(status.completion_time),
        inputs_digest=status.inputs_digest,
        policy_digest=status.policy_digest,
        record_digest=status.record.digest if status.record is not None else None,
    )
