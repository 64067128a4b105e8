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
    """The ``run.created`` payload of the AgentRun ``body``: ``runs.created`` when it has
    a ``plan``; else what was asked, read as it came (a refused run's spec may not even
    parse)."""
    if plan is not None:
        return runs.created(
            plan,
            runner_image=settings.runner_image,
            replay_inputs=_replay.input_digests(plan, settings),
        )
    metadata = body.get("metadata") or {}
    spec = body.get("spec") or {}
    return {
        "name": metadata.get("name"),
        "namespace": metadata.get("namespace"),
        "repository": runs.shown_url(str((spec.get("repository") or {}).get("url") or "")),
        "policyRef": (spec.get("policyRef") or {}).get("name"),
    }


def record_created(book: ledger.Ledger, plan: runs.Plan, settings: _settings.Settings) -> None:
    """Append ``run.created`` and a ``secret.read`` per secret of the run
    (``runs.start_entries``), in one go, unless the run has its ``run.created`` already
    (a retried start)."""
    if any(entry.kind is ledger.Kind.RUN_CREATED for entry in book.entries(run_uid=plan.uid)):
        return
    book.append_many(
        runs.start_entries(
            plan,
            settings.actor,
            runner_image=settings.runner_image,
            replay_inputs=_replay.input_digests(plan, settings),
        )
    )
