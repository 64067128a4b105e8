"""The one writer of an AgentRun's status.

Three parts of the project write a run's status, sometimes at the same moment: the
reconciler (phase, conditions, digests), the approval broker in the gateway's process
(held calls, intervention counts) and the attestor (``status.attestation``). Each write
is a compare-and-swap on ``metadata.resourceVersion`` through ``patch``, so none
overwrites what another wrote meanwhile; its retries and what a vanished run means are
decided here, once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from continue_orchestrator import errors
from continue_orchestrator.controller import _agentrun, _kube

JSON = dict[str, Any]
Change = Callable[[_agentrun.Run], JSON | None]
"""The run as last read -> the status fields to merge into it, or None to write nothing."""

ATTEMPTS = 10
"""Writes ``patch`` tries before it gives up on a status that keeps changing."""


def read(kube: _kube.Kube, ref: _agentrun.Ref) -> _agentrun.Run | None:
    """The run ``ref`` names as it is now; None if it is gone or the name is another
    run's (deleted and created again)."""
    found = kube.get(_kube.agentruns(ref.namespace, ref.name))
    if found is None or (found.get("metadata") or {}).get("uid") != ref.uid:
        return None
    return _agentrun.Run.of(found)


def patch(
    kube: _kube.Kube,
    ref: _agentrun.Ref,
    change: Change,
    *,
    in_hand: _agentrun.Run | None = None,
) -> _agentrun.Run | None:
    """Compare-and-swap ``change(run)`` into the status of the run ``ref`` names.

    ``change`` gets the run as last read and returns the status fields to write, as a
    JSON merge patch of ``status`` (a field it leaves out keeps its value; a list it
    returns replaces the stored one), or None to write nothing. It may be called again
    with a fresher run, so it decides from its argument alone. The patch carries the
    run's ``metadata.resourceVersion``, so it lands only on the status ``change`` saw.

    Returns the run as stored after the write, or None when nothing was written:

    - ``change`` returned None;
    - the run is gone (the read, or the patch, answered 404);
    - the name is another run's (its uid is not ``ref.uid``).

    409 Conflict (another writer got in between): read the run again and call
    ``change`` again, for up to ``ATTEMPTS`` writes in all; then raise
    ``errors.OrchestratorError``. Any other refusal is raised as ``_kube.ApiError``; a
    status that does not parse as ``errors.OrchestratorError``.

    ``in_hand``, a run the caller already holds (kopf's body), is the first try's
    ``run``, which saves a read; if it is stale, the API server answers 409 and the
    next try reads.
    """
    path = _kube.agentruns(ref.namespace, ref.name, status=True)
    current = in_hand if in_hand is not None and in_hand.resource_version else None
    for _ in range(ATTEMPTS):
        if current is None:
            current = read(kube, ref)
        if current is None:
            return None
        new = change(current)
        if new is None:
            return None
        body = {"metadata": {"resourceVersion": current.resource_version}, "status": new}
        try:
            stored = kube.merge_patch(path, body)
        except _kube.ApiError as error:
            if error.status == 409:
                current = None
                continue
            if error.status == 404:
                return None
            raise
        return _agentrun.Run.of(stored)
    raise errors.OrchestratorError(
        f"the status kept changing under {ATTEMPTS} compare-and-swap writes",
        where=str(ref),
        fix="nothing: other writers were busy with the run; the operator retries its "
        "step, and a tool call held for approval is denied",
    )
