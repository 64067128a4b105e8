"""The operator's entries at the start of a run's ledger: ``run.created`` and ``secret.read``.

``run.created`` says what the run was asked to do and, once its plan is known, with
what: the inputs and policy digests, the policies, the runner image and runtime class,
the names of the secrets it was given, and the input digests a replay compares. Each
secret the run reads gets a ``secret.read`` entry (its name, key and purpose, never its
value). A run refused before it had a plan still gets a ``run.created`` of what was
asked, so its ``run.finished`` follows something.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from continue_orchestrator import ledger, runs
from continue_orchestrator.controller import _replay, _settings

JSON = dict[str, Any]


def created(body: Mapping[str, Any], plan: runs.Plan | None, settings: _settings.Settings) -> JSON:
    """The ``run.created`` payload of the AgentRun ``body`` (read as it came: a refused
    run's spec may not even parse), with what ``plan`` adds when there is one."""
    metadata = body.get("metadata") or {}
    spec = body.get("spec") or {}
    payload: JSON = {
        "name": metadata.get("name"),
        "namespace": metadata.get("namespace"),
        "repository": runs.shown_url(str((spec.get("repository") or {}).get("url") or "")),
        "policyRef": (spec.get("policyRef") or {}).get("name"),
    }
    if plan is not None:
        payload.update(
            inputsDigest=plan.inputs_digest,
            policyDigest=plan.snapshot.digest,
            policies=list(plan.snapshot.sources),
            runnerImage=settings.runner_image,
            runtimeClassName=plan.snapshot.runtime_class,
            secrets=sorted({*plan.secret_values, *plan.brokered_values}),
            replayInputs=_replay.input_digests(plan, settings),
        )
    return payload


def record_created(book: ledger.Ledger, plan: runs.Plan, settings: _settings.Settings) -> None:
    """Append ``run.created`` and a ``secret.read`` per secret of the run, in one go,
    unless the run has its ``run.created`` already (a retried start)."""
    if any(entry.kind is ledger.Kind.RUN_CREATED for entry in book.entries(run_uid=plan.uid)):
        return
    payload = created(plan.run.model_dump(by_alias=True), plan, settings)
    items = [ledger.Append(plan.uid, ledger.Kind.RUN_CREATED, settings.actor, payload)]
    for index, mapping in enumerate(plan.run.spec.secrets):
        read = {
            "name": mapping.secret_key_ref.name,
            "namespace": plan.namespace,
            "key": mapping.secret_key_ref.key,
            "purpose": runs.secret_purpose(index, mapping.name, plan.brokered_values),
        }
        items.append(ledger.Append(plan.uid, ledger.Kind.SECRET_READ, settings.actor, read))
    book.append_many(items)
