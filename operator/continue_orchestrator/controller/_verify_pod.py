"""The fresh sandbox that verifies a publication: a pod of its own, no agent, no model.

Publication's second step (``runs.publish``) runs the run's verify commands again on a
clean checkout at the pinned commit with the run's diff applied, so "tests run" is not
only the agent's word. In a cluster that checkout is made where the agent's was: in a
new gVisor pod behind the run's own NetworkPolicy (it selects the run's uid label, so
the only peer is the gateway), which clones through the gateway's git endpoint under a
gateway id and token of its own (``runs.verify_plan``: registered with no model and no
secret) and runs ``runner --verify-only`` on the patch its Secret carries. The runner
reports to the gateway like any run; the operator reads that report from the record
store once the pod has ended, and checks that the tree the pod verified is the tree it
commits (``runner.tree_digest``).

Names and contents are fixed (``<run object>-verify``; the token is derived from the
run's), so an attempt after an operator restart finds the previous attempt's objects:
its pod is deleted and created again, its Secret adopted (the operator never deletes a
Secret). The pod is deleted when the attempt ends, whatever its result; the Secret (the
patch, and a token the gateway honours only while the attempt is registered) is owned
by the AgentRun and goes with it.
"""

from __future__ import annotations

import dataclasses
import pathlib
import time
from collections.abc import Callable
from typing import Any

from continue_orchestrator import errors, runner, runs
from continue_orchestrator.controller import (
    _agentrun,
    _gateway,
    _kube,
    _manifests,
    _names,
    _settings,
)

JSON = dict[str, Any]
POLL_SECONDS = 0.5
START_ALLOWANCE_SECONDS = 300
"""How long past the verify commands' own timeouts the pod may take (scheduling, clone)."""
PATCH_LIMIT_BYTES = 900 * 1024
"""A Secret holds at most 1 MiB; the patch shares it with the bundle and the snapshot."""


def object_name(run_object: str) -> str:
    """The verify pod's and Secret's name: the run's object name and ``-verify``."""
    return f"{run_object}-verify"


@dataclasses.dataclass(frozen=True)
class VerifyPod:
    """Runs one publication's verify commands in a fresh pod; see the module docstring."""

    kube: _kube.Kube
    gateway: _gateway.GatewayClient
    settings: _settings.Settings
    evidence: runs.EvidenceSource | None
    sleep: Callable[[float], None] = time.sleep
    clock: Callable[[], float] = time.monotonic

    def verify(
        self, plan: runs.Plan, patch: bytes, checkout: pathlib.Path
    ) -> tuple[runner.VerifyResult, ...]:
        """The verify results of ``plan``'s commands on its pinned commit with ``patch``
        applied; raises ``errors.PublicationError`` (step ``verify``) when the pod could
        not verify, or verified another tree than ``checkout``'s."""
        if self.evidence is None:
            raise errors.PublicationError(
                "the operator cannot read the verify sandbox's report",
                step="verify",
                fix="run the operator with --record-root (the gateway's record store)",
            )
        if len(patch) > PATCH_LIMIT_BYTES:
            raise errors.PublicationError(
                f"the run's patch ({len(patch)} bytes) is larger than a verify sandbox's "
                f"Secret can carry ({PATCH_LIMIT_BYTES} bytes)",
                step="verify",
                fix="split the change into smaller runs",
            )
        fresh = runs.verify_plan(plan, name=object_name(plan.name))
        expected = runner.tree_digest(checkout)
        deadline = sum(c.timeout_seconds for c in fresh.run.spec.verify) + START_ALLOWANCE_SECONDS
        self._remove_pod(fresh)  # an earlier attempt's, after a restart
        self.gateway.register(runs.registration(fresh, expires_at=time.time() + deadline))
        try:
            self._create(fresh, patch)
            pod = self._wait(fresh, deadline)
        finally:
            self.gateway.unregister(fresh.run_id)
            self._remove_pod(fresh)
        outcome = self.evidence(fresh.run_id)
        report = outcome.outcome if outcome is not None else None
        if report is None:
            raise errors.PublicationError(
                f"the verify sandbox reported nothing (pod {fresh.name}: {_pod_said(pod)})",
                step="verify",
                where=f"pod {fresh.namespace}/{fresh.name}",
            )
        if report.status not in (runner.Status.SUCCEEDED, runner.Status.VERIFY_FAILED):
            raise errors.PublicationError(
                f"the verify sandbox could not verify: {report.status.value}: {report.message}",
                step="verify",
                where=f"pod {fresh.namespace}/{fresh.name}",
            )
        if report.workspace_tree_digest != expected:
            raise errors.PublicationError(
                f"the verify sandbox verified tree {report.workspace_tree_digest}, not the "
                f"published commit's tree {expected}",
                step="verify",
                where=f"pod {fresh.namespace}/{fresh.name}",
                fix="the run's patch does not apply to its pinned commit as recorded",
            )
        return tuple(report.verify)

    def _create(self, fresh: runs.Plan, patch: bytes) -> None:
        namespace = fresh.namespace
        secret = _manifests.secret(fresh, self.settings, patch=patch)
        try:
            self.kube.create(_kube.core(namespace, "secrets"), secret)
        except _kube.ApiError as error:
            if error.status != 409:
                raise
            self._adopt(fresh, secret)
        self.kube.create(
            _kube.core(namespace, "pods"), _manifests.pod(fresh, self.settings, verify=True)
        )

    def _adopt(self, fresh: runs.Plan, secret: JSON) -> None:
        """An earlier attempt's Secret: used again when it is this run's and holds what
        this attempt would have written."""
        found = self.kube.get(_kube.core(fresh.namespace, "secrets", fresh.name))
        if found is None:
            raise errors.PublicationError(
                f"Secret {fresh.namespace}/{fresh.name} vanished while being adopted",
                step="verify",
                fix="nothing: publishing again retries",
            )
        ours = _agentrun.labels(found).get(_names.RUN_UID_LABEL) == fresh.uid
        if not ours or found.get("data") != secret["data"]:
            raise errors.PublicationError(
                f"Secret {fresh.namespace}/{fresh.name} exists and is not this run's verify "
                "sandbox's; the operator will not use or replace it",
                step="verify",
                fix="rename or delete it",
            )

    def _wait(self, fresh: runs.Plan, seconds: float) -> JSON:
        """The pod once it has ended; stopped and a PublicationError past ``seconds``."""
        path = _kube.core(fresh.namespace, "pods", fresh.name)
        until = self.clock() + seconds
        while True:
            pod = self.kube.get(path)
            if pod is None:
                raise errors.PublicationError(
                    f"the verify pod {fresh.name} was deleted before it ended",
                    step="verify",
                    where=f"namespace {fresh.namespace}",
                )
            phase = (pod.get("status") or {}).get("phase")
            if phase in ("Succeeded", "Failed"):
                return pod
            if self.clock() > until:
                raise errors.PublicationError(
                    f"the verify pod {fresh.name} did not end within {seconds:.0f} s "
                    f"(phase {phase or 'unknown'})",
                    step="verify",
                    where=f"namespace {fresh.namespace}",
                    fix="raise the verify commands' timeoutSeconds, or look at the node",
                )
            self.sleep(POLL_SECONDS)

    def _remove_pod(self, fresh: runs.Plan) -> None:
        """Delete this run's verify pod, if there; never another run's."""
        path = _kube.core(fresh.namespace, "pods", fresh.name)
        found = self.kube.get(path)
        if found is not None:
            if _agentrun.labels(found).get(_names.RUN_UID_LABEL) != fresh.uid:
                raise errors.PublicationError(
                    f"pod {fresh.namespace}/{fresh.name} exists and does not belong to this "
                    "run; the operator will not replace it",
                    step="verify",
                    fix="rename or delete it",
                )
            self.kube.delete(path, grace_seconds=0)
        deadline = self.clock() + 60
        while self.kube.get(_kube.core(fresh.namespace, "pods", fresh.name)) is not None:
            if self.clock() > deadline:
                raise errors.PublicationError(
                    f"the verify pod {fresh.name} was not deleted within 60 s",
                    step="verify",
                    where=f"namespace {fresh.namespace}",
                )
            self.sleep(POLL_SECONDS)


def _pod_said(pod: JSON) -> str:
    """The pod's phase and its container's exit code and message, in a line."""
    status = pod.get("status") or {}
    said = [f"phase {status.get('phase')}"]
    for container in status.get("containerStatuses") or []:
        ended = (container.get("state") or {}).get("terminated") or {}
        if ended:
            said.append(f"exit {ended.get('exitCode')}")
            message = str(ended.get("message") or "").strip()
            if message:
                said.append(message[-500:])
    return ", ".join(said)
