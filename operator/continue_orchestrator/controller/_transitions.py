"""Each change the reconciler makes to a run's status, as a pure function.

Every function takes the run as the status writer last read it and returns the status
fields to merge (or None: nothing to change, for instance because the run has moved on
meanwhile), which is what ``_status.patch`` wants of a change: it may call one again
after a conflict. None of them moves a run backwards or out of a terminal phase
(``_outcome.advance`` decides phases).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from continue_orchestrator import api
from continue_orchestrator.controller import _agentrun, _clock, _outcome, _replay

JSON = dict[str, Any]
Setting = _outcome.Setting

POLICY_REASONS = frozenset(
    {
        "PolicyNotFound",
        "PolicyInvalid",
        "TimeoutExceedsPolicy",
        "RepositoryDenied",
        "SecretNotAllowed",
        "InvalidSpec",
    }
)
"""Rejection reasons that are the policy's verdict: they set ``PolicyValid`` False."""


def _setting(run: _agentrun.Run, *settings: Setting, at: str | None = None) -> list[JSON]:
    """The run's conditions with ``settings`` set, for a patch."""
    return _outcome.set_conditions(
        run.status.conditions, *settings, at=at or _clock.now(), generation=run.generation
    )


def sandbox_requested(run: _agentrun.Run, setting: Setting) -> JSON | None:
    """``SandboxRequested`` (the pod create is about to be sent, or was refused); None
    once the run has ended or is being cancelled."""
    if run.status.phase.terminal or run.cancel:
        return None
    return {"phase": run.status.phase.value, "conditions": _setting(run, setting)}


def sandbox_created(
    run: _agentrun.Run,
    *,
    pod: str,
    inputs_digest: str,
    policy_digest: str,
    runtime_class: str,
    runner_image: str,
) -> JSON | None:
    """The run's pod exists: its digests, ``PolicyValid`` and ``SandboxReady`` False
    (the pod has not started yet); None if that is written already."""
    if run.status.phase.terminal:
        return None
    ready = run.condition("SandboxReady")
    if ready is not None and run.status.inputs_digest:
        return None
    settings = [
        Setting(
            "PolicyValid",
            "True",
            "PolicyAllowed",
            f"policy snapshot {policy_digest} allows the run",
        )
    ]
    if ready is None:
        settings.append(
            Setting(
                "SandboxReady",
                "False",
                "PodCreated",
                f"pod {pod} created with runtimeClassName {runtime_class}",
            )
        )
    new: JSON = {
        "phase": run.status.phase.value,
        "inputsDigest": inputs_digest,
        "policyDigest": policy_digest,
        "runnerImage": runner_image,
        "conditions": _setting(run, *settings),
    }
    if run.status.message is None:
        new["message"] = f"pod {pod} created"
    if run.generation is not None:
        new["observedGeneration"] = run.generation
    return new


def advanced(run: _agentrun.Run, outcome: _outcome.Outcome) -> JSON | None:
    """The run moved to ``outcome``'s phase (see ``_outcome.advance``)."""
    return _outcome.advance(run.status, outcome, generation=run.generation)


def cancelled(run: _agentrun.Run, outcome: _outcome.Outcome) -> JSON | None:
    """``spec.cancel``: the run ends ``outcome`` (Cancelled), counted as a manual stop."""
    new = advanced(run, outcome)
    if new is None:
        return None
    counts = run.status.interventions or api.Interventions()
    new["interventions"] = counts.model_copy(
        update={"manual_stops": counts.manual_stops + 1, "total": counts.total + 1}
    ).wire()
    return new


def rejected(run: _agentrun.Run, outcome: _outcome.Outcome) -> JSON | None:
    """The run cannot start: it ends ``outcome``, with ``PolicyValid`` saying whether the
    policy refused it, and ``Replayed`` False when its replay source is the problem."""
    new = advanced(run, outcome)
    if new is None:
        return None
    settings = [
        Setting("PolicyValid", "False", outcome.reason, outcome.message)
        if outcome.reason in POLICY_REASONS
        else Setting("PolicyValid", "True", "PolicyAllowed", "the policy allows the run")
    ]
    if outcome.reason in _replay.REASONS:
        settings.append(Setting("Replayed", "False", outcome.reason, outcome.message))
    new["conditions"] = _outcome.set_conditions(
        new["conditions"],
        *settings,
        at=new.get("completionTime") or _clock.now(),
        generation=run.generation,
    )
    return new


def recorded(
    run: _agentrun.Run, *, digest: str, location: str, replay: Mapping[str, Any] | None
) -> JSON:
    """The gateway sealed the run's record; for a replay, its report sets ``Replayed``."""
    new: JSON = {"record": {"digest": digest, "location": location}}
    if replay is not None:
        new["conditions"] = _setting(run, Setting("Replayed", *_replay.condition(replay)))
    return new
