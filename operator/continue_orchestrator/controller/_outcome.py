"""From what the pod did to what the AgentRun says: phases, reasons, conditions.

Pure functions, so the mapping is tested without a cluster: they read a pod as the API
server sends it and a run's status as ``api.AgentRunStatus``, and return the status
fields to write as JSON. Phases only move forward (Pending, then Running, then one
terminal phase); a status that would go backwards or change a terminal phase is not
produced, which is half of how a run reaches its terminal phase exactly once (the other
half is the compare-and-swap write, ``_status.patch``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

from continue_orchestrator import api, runs
from continue_orchestrator.controller import _clock, _names

JSON = dict[str, Any]

_RANK = {
    api.Phase.PENDING: 0,
    api.Phase.RUNNING: 1,
    api.Phase.AWAITING_APPROVAL: 1,
}


def rank(phase: api.Phase) -> int:
    return _RANK.get(phase, 2)


@dataclasses.dataclass(frozen=True, slots=True)
class Outcome:
    """What the run's phase should be, and why."""

    phase: api.Phase
    reason: str
    message: str
    started_at: str | None = None


def pod_deleted(pod_name: str) -> Outcome:
    return Outcome(
        api.Phase.FAILED,
        "PodDeleted",
        f"pod {pod_name} was deleted before the run finished; the operator does not "
        "recreate it (create a new AgentRun to run again)",
    )


def from_pod(pod: Mapping[str, Any]) -> Outcome | None:
    """The outcome the pod's current state implies; None while it says nothing new."""
    name = str(pod.get("metadata", {}).get("name", "?"))
    if pod.get("metadata", {}).get("deletionTimestamp"):
        return pod_deleted(name)
    status = pod.get("status") or {}
    phase = status.get("phase")
    started = status.get("startTime")
    runner = _runner_status(status)
    if phase == "Pending" or phase is None:
        waiting = (runner or {}).get("state", {}).get("waiting") or {}
        detail = waiting.get("message") or waiting.get("reason") or "waiting to start"
        return Outcome(api.Phase.PENDING, "PodPending", f"pod {name}: {detail}")
    if phase == "Running":
        return Outcome(api.Phase.RUNNING, "PodRunning", f"pod {name} is running", started)
    if phase == "Succeeded":
        return Outcome(api.Phase.SUCCEEDED, "Completed", f"runner in pod {name} exited 0", started)
    if phase == "Failed":
        if status.get("reason") == "Evicted":
            return Outcome(
                api.Phase.FAILED, "Evicted", f"pod {name} was evicted: {status.get('message', '')}"
            )
        return Outcome(*_failure(name, status, runner), started)
    return None


def _failure(
    name: str, status: Mapping[str, Any], runner: Mapping[str, Any] | None
) -> tuple[api.Phase, str, str]:
    """Phase, reason and message of a pod that failed (and was not evicted)."""
    terminated = (runner or {}).get("state", {}).get("terminated") or {}
    code = terminated.get("exitCode")
    if status.get("reason") == "DeadlineExceeded":
        stopped = f"pod {name} ran past spec.timeoutSeconds and was stopped"
        return api.Phase.TIMED_OUT, "DeadlineExceeded", stopped
    if terminated.get("reason") == "OOMKilled":
        limits = f"runner in pod {name} ran out of memory (raise the policy's sandbox limits)"
        return api.Phase.FAILED, "OOMKilled", limits
    if isinstance(code, int):
        phase, reason = runs.phase_of(code)
        if phase is api.Phase.SUCCEEDED:  # a failed pod whose runner says 0 lies about one
            phase, reason = api.Phase.FAILED, "RunnerFailed"
        detail = (terminated.get("message") or "").strip()
        message = f"runner in pod {name} exited {code}" + (f": {detail}" if detail else "")
        return phase, reason, message[:4096]
    why = status.get("message") or status.get("reason") or "no reason"
    return api.Phase.FAILED, "PodFailed", f"pod {name} failed: {why}"


def _runner_status(status: Mapping[str, Any]) -> JSON | None:
    for container in status.get("containerStatuses") or ():
        if container.get("name") == _names.CONTAINER:
            return dict(container)
    return None


def set_condition(
    conditions: list[JSON],
    kind: str,
    value: str,
    reason: str,
    message: str,
    *,
    at: str,
    generation: int | None,
) -> list[JSON]:
    """Conditions with ``kind`` set; lastTransitionTime moves only when the status does."""
    out: list[JSON] = []
    found = False
    for item in conditions:
        if item.get("type") != kind:
            out.append(item)
            continue
        found = True
        moved = item.get("status") != value
        out.append(
            {
                "type": kind,
                "status": value,
                "reason": reason,
                "message": message[:32768],
                "lastTransitionTime": at if moved else item.get("lastTransitionTime", at),
                **({"observedGeneration": generation} if generation is not None else {}),
            }
        )
    if not found:
        out.append(
            {
                "type": kind,
                "status": value,
                "reason": reason,
                "message": message[:32768],
                "lastTransitionTime": at,
                **({"observedGeneration": generation} if generation is not None else {}),
            }
        )
    return out


class Setting(NamedTuple):
    """One condition to set: its type, status, reason and message."""

    type: str
    status: str
    reason: str
    message: str


def set_conditions(
    conditions: Iterable[api.Condition | Mapping[str, Any]],
    *settings: Setting,
    at: str,
    generation: int | None,
) -> list[JSON]:
    """``conditions`` (as read) with each of ``settings`` set, as JSON for a status patch."""
    out = [c.wire() if isinstance(c, api.Condition) else dict(c) for c in conditions]
    for s in settings:
        out = set_condition(
            out, s.type, s.status, s.reason, s.message, at=at, generation=generation
        )
    return out


def current_phase(status: Mapping[str, Any] | None) -> api.Phase:
    try:
        return api.Phase((status or {}).get("phase") or api.Phase.PENDING)
    except ValueError:
        return api.Phase.PENDING


def advance(
    status: api.AgentRunStatus | Mapping[str, Any] | None,
    outcome: Outcome,
    *,
    generation: int | None,
    at: str | None = None,
) -> JSON | None:
    """The status fields ``outcome`` changes, or None if it would not move the run forward.

    Terminal phases never change; a phase of equal rank is left alone (AwaitingApproval is
    set and cleared by the gateway, not by pod state; the first Pending status is written
    when the pod is created). ``status`` is the run's status as read (JSON is parsed).
    """
    old = (
        status
        if isinstance(status, api.AgentRunStatus)
        else api.AgentRunStatus.model_validate(status or {})
    )
    if old.phase.terminal or rank(outcome.phase) <= rank(old.phase):
        return None
    at = at or _clock.now()
    new: JSON = {"phase": outcome.phase.value, "message": outcome.message}
    if generation is not None:
        new["observedGeneration"] = generation
    if outcome.phase is api.Phase.RUNNING:
        settings = [Setting("SandboxReady", "True", outcome.reason, outcome.message)]
        if old.start_time is None:
            new["startTime"] = outcome.started_at or at
    else:
        settings = [
            Setting("Completed", "True", outcome.reason, outcome.message),
        ]
        if any(c.type == "SandboxReady" for c in old.conditions):
            ended = f"the run ended {outcome.phase.value}"
            settings.insert(0, Setting("SandboxReady", "False", "RunFinished", ended))
        if outcome.started_at and old.start_time is None:
            new["startTime"] = outcome.started_at
        new["completionTime"] = at
    new["conditions"] = set_conditions(old.conditions, *settings, at=at, generation=generation)
    return new
