"""The one poster of Kubernetes Events on an AgentRun.

The reconciler posts one Event per transition of a run (SandboxCreated, Running, the
terminal phase); the approval broker one per ignored decision. Each Event's name is
derived from the run, the reason and, when one reason may happen several times to a
run, a key: posting the same Event again (a retried handler, a second replica) is a 409
and a no-op, so ``kubectl describe`` shows each thing once.
"""

from __future__ import annotations

import logging

from continue_orchestrator import api, digest
from continue_orchestrator.controller import _agentrun, _clock, _kube, _names

log = logging.getLogger(__name__)


def post(
    kube: _kube.Kube,
    run: _agentrun.Ref,
    reason: str,
    message: str,
    kind: str = "Normal",
    *,
    key: str | None = None,
) -> None:
    """A core/v1 Event of type ``kind`` (Normal or Warning) on ``run``, once per
    (reason, key); failures are logged, never raised (an Event is a courtesy, the
    status is the record)."""
    transition = reason if key is None else f"{reason}-{digest.Digest.of(key).hex[:12]}"
    at = _clock.now()
    event = {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {
            "name": _names.event_name(run.object_name, transition),
            "namespace": run.namespace,
            "labels": {_names.RUN_UID_LABEL: run.uid},
        },
        "involvedObject": {
            "apiVersion": api.API_VERSION,
            "kind": "AgentRun",
            "name": run.name,
            "namespace": run.namespace,
            "uid": run.uid,
        },
        "reason": reason,
        "message": message[:1024],
        "type": kind,
        "source": {"component": _names.MANAGED_BY},
        "reportingComponent": _names.MANAGED_BY,
        "reportingInstance": _names.MANAGED_BY,
        "firstTimestamp": at,
        "lastTimestamp": at,
        "count": 1,
    }
    try:
        kube.create(_kube.core(run.namespace, "events"), event)
    except _kube.ApiError as error:
        if error.status != 409:
            log.warning("could not post Event %s on %s: %s", reason, run, error)
