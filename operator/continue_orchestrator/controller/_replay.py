"""``spec.replayOf`` in the cluster: which recorded run, and whether its inputs still hold.

Before anything is created for a replay, the recorded run is found (``replayOf.run``:
an AgentRun in the namespace, by its ``status.record.digest``; ``replayOf.record``: the
run whose ``run.finished`` ledger entry names that record) and its input digests, noted
in its ``run.created`` entry, are compared with the new run's. Any difference is input
drift: the run ends and nothing starts. Otherwise the gateway is told to serve the
recorded answers (``runs.Registration.replay_of``) and, when the run is unregistered, answers
with the replay report, from which the ``Replayed`` condition is set. See docs/replay.md.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from continue_orchestrator import api, ledger, records, runs
from continue_orchestrator.controller import _kube, _settings, _validate

REASONS = frozenset(
    {"InputDrift", "ReplaySourceNotFound", "ReplaySourceNotRecorded", "ReplaySourceNotReplayable"}
)
"""Rejection reasons that are about ``spec.replayOf``; they set ``Replayed`` False too."""


def input_digests(plan: runs.Plan, settings: _settings.Settings) -> dict[str, str | None]:
    """The run's input digests, as ``orchestrator run`` notes them (the image pins the CLI)."""
    return records.input_digests(
        plan.run.spec.wire(),
        config=plan.config,
        policy_digest=plan.snapshot.digest,
        runner_image=settings.runner_image,
        cli=None,
    )


def _failed(reason: str, message: str) -> _validate.Rejection:
    return _validate.Rejection(api.Phase.FAILED, reason, message)


def _source(
    kube: _kube.Kube, book: ledger.Ledger, replay_of: api.ReplayOf, namespace: str
) -> tuple[str, str]:
    """(record digest, recorded run uid) that ``replay_of`` names."""
    if replay_of.run is not None:
        found = kube.get(_kube.agentruns(namespace, replay_of.run))
        if found is None:
            raise _failed(
                "ReplaySourceNotFound",
                f"spec.replayOf.run: AgentRun {namespace}/{replay_of.run} does not exist",
            )
        digest = ((found.get("status") or {}).get("record") or {}).get("digest")
        if not digest:
            raise _failed(
                "ReplaySourceNotRecorded",
                f"spec.replayOf.run: AgentRun {namespace}/{replay_of.run} has no sealed record "
                "(status.record.digest is empty): replay it once it has finished, or name its "
                "record in spec.replayOf.record",
            )
        return str(digest), str(found["metadata"]["uid"])
    digest = str(replay_of.record)
    for entry in book.entries():
        payload = entry.payload or {}
        if entry.kind is ledger.Kind.RUN_FINISHED and payload.get("recordDigest") == digest:
            return digest, entry.run_uid
    raise _failed(
        "ReplaySourceNotFound",
        f"spec.replayOf.record: no run in the ledger finished with record {digest}",
    )


def started(book: ledger.Ledger, uid: str) -> Mapping[str, Any] | None:
    """This run's ``replay.started`` payload, if it is a replay that got that far."""
    for entry in book.entries(run_uid=uid):
        if entry.kind is ledger.Kind.REPLAY_STARTED and entry.payload is not None:
            return entry.payload
    return None


def check(
    kube: _kube.Kube, book: ledger.Ledger, plan: runs.Plan, settings: _settings.Settings
) -> None:
    """For a run with ``spec.replayOf``: note ``replay.started``; raise a Rejection
    (after noting ``replay.finished``) if the source is missing or the inputs drifted.
    Call after ``run.created`` is in the ledger and before anything is created."""
    replay_of = plan.run.spec.replay_of
    if replay_of is None or started(book, plan.uid) is not None:
        return
    digest, original_uid = _source(kube, book, replay_of, plan.namespace)
    created: Mapping[str, Any] | None = None
    for entry in book.entries(run_uid=original_uid):
        if entry.kind is ledger.Kind.RUN_CREATED:
            created = entry.payload or {}
            break
    recorded = (created or {}).get("replayInputs")
    if not isinstance(recorded, Mapping):
        raise _failed(
            "ReplaySourceNotReplayable",
            f"spec.replayOf: the recorded run {original_uid} noted no input digests "
            "(replayInputs in its run.created entry), so its inputs cannot be compared",
        )
    current = input_digests(plan, settings)
    drift = records.input_drift(recorded, current)
    original = {
        "namespace": str((created or {}).get("namespace") or plan.namespace),
        "name": str((created or {}).get("name") or ""),
        "uid": original_uid,
    }
    items = [
        ledger.Append(
            plan.uid,
            ledger.Kind.REPLAY_STARTED,
            settings.actor,
            {
                "replayOf": original,
                "record": digest,
                "normalisationVersion": records.NORMALISATION_VERSION,
                "inputs": current,
                "inputDrift": [d.to_json() for d in drift],
            },
        )
    ]
    if drift:
        what = "; ".join(f"{d.name}: {d.recorded} -> {d.replayed}" for d in drift)
        items.append(
            ledger.Append(
                plan.uid,
                ledger.Kind.REPLAY_FINISHED,
                settings.actor,
                {
                    "replayOf": original_uid,
                    "record": digest,
                    "replayRecord": None,
                    "identical": False,
                    "cause": "input-drift",
                    "ran": False,
                    "step": None,
                    "what": f"input drift: {what}",
                    "inputDrift": [d.to_json() for d in drift],
                    "normalisationVersion": records.NORMALISATION_VERSION,
                },
            )
        )
    book.append_many(items)
    if drift:
        names = ", ".join(d.name for d in drift)
        raise _failed(
            "InputDrift",
            f"spec.replayOf: the inputs differ from recorded run {original_uid}'s ({names}): "
            f"{what}; nothing was started",
        )


def condition(report: Mapping[str, Any]) -> tuple[str, str, str]:
    """(status, reason, message) of the ``Replayed`` condition for a gateway's report."""
    if report.get("identical"):
        return (
            "True",
            "Identical",
            f"replay of run {report.get('replayOf')} (record {report.get('record')}) made the "
            "same model requests, tool calls and diff",
        )
    step = report.get("step")
    at = f"at step {step}: " if step is not None else ""
    return (
        "False",
        "Diverged",
        f"{at}{report.get('cause')}: {report.get('what')} (replay of run "
        f"{report.get('replayOf')}, record {report.get('record')})",
    )
