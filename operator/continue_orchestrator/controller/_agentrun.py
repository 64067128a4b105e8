"""Typed views over the AgentRun dicts that kopf and the API server hand the controller.

A run arrives as a raw Kubernetes object (kopf's body, a GET, a PATCH's answer). It is
parsed here once, where it comes in: its status with ``api.AgentRunStatus``, so the
controller reads ``run.status.phase`` and ``run.condition("SandboxReady")`` instead of
chains of ``.get(...) or {}``, and the few metadata and spec fields it acts on as
attributes. What the controller writes back is a JSON merge patch of the status (see
``_status``); these views are only read.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import pydantic

from continue_orchestrator import api, errors
from continue_orchestrator.controller import _names


@dataclasses.dataclass(frozen=True, slots=True)
class Ref:
    """Which AgentRun: its namespace and name, and its uid (a run deleted and created
    again under the same name is another run)."""

    namespace: str
    name: str
    uid: str

    @classmethod
    def of(cls, body: Mapping[str, Any]) -> Ref:
        metadata = body["metadata"]
        return cls(str(metadata["namespace"]), str(metadata["name"]), str(metadata["uid"]))

    @property
    def object_name(self) -> str:
        """The name of the run's Secret, NetworkPolicy and Pod."""
        return _names.object_name(self.name, self.uid)

    def __str__(self) -> str:
        return f"AgentRun {self.namespace}/{self.name}"


@dataclasses.dataclass(frozen=True, slots=True)
class Run:
    """An AgentRun as read, with its status parsed."""

    ref: Ref
    status: api.AgentRunStatus
    generation: int | None
    resource_version: str | None
    created_at: str | None
    """metadata.creationTimestamp."""
    deleting: bool
    """metadata.deletionTimestamp is set: the finalizer is at work."""
    cancel: bool
    """spec.cancel."""
    timeout_seconds: int
    """spec.timeoutSeconds."""
    body: Mapping[str, Any]
    """The object as it came, for the builders that take a whole manifest."""

    @classmethod
    def of(cls, body: Mapping[str, Any]) -> Run:
        """The view of ``body``; ``errors.OrchestratorError`` if its status does not parse
        (the API server checks it against the same model, so only a damaged one fails)."""
        ref = Ref.of(body)
        metadata: Mapping[str, Any] = body["metadata"]
        spec: Mapping[str, Any] = body.get("spec") or {}
        try:
            status = api.AgentRunStatus.model_validate(body.get("status") or {})
        except pydantic.ValidationError as error:
            raise errors.OrchestratorError(
                f"its status does not parse: {error}".splitlines()[0][:1024],
                where=str(ref),
                fix="the status is the operator's: check what else writes to it",
            ) from None
        generation = metadata.get("generation")
        return cls(
            ref=ref,
            status=status,
            generation=generation if isinstance(generation, int) else None,
            resource_version=metadata.get("resourceVersion") or None,
            created_at=metadata.get("creationTimestamp") or None,
            deleting=bool(metadata.get("deletionTimestamp")),
            cancel=bool(spec.get("cancel")),
            timeout_seconds=int(spec.get("timeoutSeconds", 1800)),
            body=body,
        )

    def condition(self, kind: str) -> api.Condition | None:
        """The status condition of type ``kind``, if the run has one."""
        return next((c for c in self.status.conditions if c.type == kind), None)


def owner_of(pod: Mapping[str, Any]) -> Ref | None:
    """The run a pod belongs to: the AgentRun owner whose uid the run-uid label names;
    None for a pod no run owns."""
    metadata: Mapping[str, Any] = pod["metadata"]
    uid = (metadata.get("labels") or {}).get(_names.RUN_UID_LABEL)
    for owner in metadata.get("ownerReferences") or ():
        if owner.get("kind") == "AgentRun" and owner.get("uid") == uid:
            return Ref(str(metadata["namespace"]), str(owner["name"]), str(uid))
    return None


def labels(body: Mapping[str, Any]) -> Mapping[str, str]:
    """An object's metadata.labels (none: empty)."""
    found: Mapping[str, str] = (body.get("metadata") or {}).get("labels") or {}
    return found
