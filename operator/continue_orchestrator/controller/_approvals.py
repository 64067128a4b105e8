"""Approvals in a cluster: held tool calls on the AgentRun, decisions as RunApprovals.

The gateway's ``ApprovalBroker`` for Kubernetes. A held call becomes an entry of the
run's ``status.pendingApprovals`` (and phase AwaitingApproval while any is pending),
under an id of its own (the tool call id and a random suffix, so a decision never
carries over to a repeated call id); a person decides by creating a RunApproval for
that id, whose ``spec.decidedBy`` the API server has
already checked against the requesting user (deploy/admission/runapproval-identity.yaml).
The broker still counts a decision only if that user, or one of their groups, is an
approver of the policy snapshot the run started with; any other decision is ignored
and reported as a Warning Event on the run. Every status write goes through
``_status.patch`` (a compare-and-swap), so it never overwrites what the operator writes
meanwhile.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import prometheus_client
import pydantic

from continue_orchestrator import api, errors, gateway, policy, records
from continue_orchestrator.controller import _agentrun, _clock, _events, _kube, _metrics, _status

log = logging.getLogger(__name__)
JSON = dict[str, Any]
_SUMMARY_LIMIT = 4096


@dataclasses.dataclass(frozen=True, slots=True)
class RunScope:
    """Where a run's approvals live, and the policy snapshot that names its approvers."""

    namespace: str
    name: str
    policy_set: policy.PolicySet | None
    redact: Callable[[str], str] = lambda text: text
    """Removes secret values from what goes into the status (anyone who may read the
    AgentRun reads it)."""

    def ref(self, uid: str) -> _agentrun.Ref:
        """The AgentRun of gateway run ``uid``."""
        return _agentrun.Ref(self.namespace, self.name, uid)


@dataclasses.dataclass(frozen=True, slots=True)
class Approvers:
    users: frozenset[str]
    groups: frozenset[str]

    def admit(self, username: str, groups: Iterable[str]) -> bool:
        return username in self.users or not self.groups.isdisjoint(groups)

    def describe(self) -> str:
        parts = [f"user {u}" for u in sorted(self.users)]
        parts += [f"group {g}" for g in sorted(self.groups)]
        return ", ".join(parts) or "nobody (the policy names no approvers)"


def approvers_for(policy_set: policy.PolicySet | None, rule: str) -> Approvers:
    """Who may decide a call held by ``rule`` (``policyName/ruleName``).

    The approvers of the policies that hold a RequireApproval rule of that name; when the
    rule names none of them (a default effect decided), the approvers of every policy of
    the snapshot. No snapshot, no approvers: nobody's decision counts.
    """
    if policy_set is None:
        return Approvers(frozenset(), frozenset())
    policies = list(policy_set.policies)
    policy_name, _, rule_name = rule.partition("/")
    holding = [
        p
        for p in policies
        if (p.metadata.name or "") == policy_name
        and any(
            r.name == rule_name and r.effect is api.Effect.REQUIRE_APPROVAL for r in p.spec.rules
        )
    ]
    users: set[str] = set()
    groups: set[str] = set()
    for p in holding or policies:
        if p.spec.approvers is not None:
            users.update(p.spec.approvers.users)
            groups.update(p.spec.approvers.groups)
    return Approvers(frozenset(users), frozenset(groups))


def run_approvals_path(namespace: str, name: str | None = None) -> str:
    path = f"/apis/{api.GROUP}/{api.VERSION}/namespaces/{namespace}/runapprovals"
    return f"{path}/{name}" if name else path


def _summary(approval: gateway.Approval) -> str:
    arguments = ", ".join(f"{k}={v!r}" for k, v in sorted(approval.arguments.items()))
    text = f"{approval.tool}({arguments})"
    if approval.reason:
        text += f": {approval.reason}"
    return text


@dataclasses.dataclass(frozen=True, slots=True)
class _Verdict:
    approved: bool
    username: str
    groups: tuple[str, ...]
    reason: str
    approval_name: str


class KubeApprovalBroker:
    """``gateway.ApprovalBroker`` over AgentRun status and RunApproval objects.

    ``scopes(run_uid)`` says which AgentRun a gateway run is (``for_gateway`` reads the
    gateway's own registrations). Blocking API calls run in worker threads; a watch is
    renewed every ``watch_seconds`` so a cancelled wait frees its thread quickly.
    """

    def __init__(
        self,
        kube: _kube.Kube,
        scopes: Callable[[str], RunScope | None],
        *,
        watch_seconds: int = 5,
        grace_seconds: float = 2.0,
    ) -> None:
        self.kube = kube
        self.scopes = scopes
        self.watch_seconds = watch_seconds
        self.grace_seconds = grace_seconds
        self._pending: dict[tuple[str, str], gateway.Approval] = {}
        self._lock = threading.Lock()

    @classmethod
    def for_gateway(cls, kube: _kube.Kube, served: gateway.Gateway) -> KubeApprovalBroker:
        """A broker resolving runs through ``served``'s registrations; also installs it."""

        def scope(uid: str) -> RunScope | None:
            registration = served.registry.get(uid)
            if registration is None or not registration.namespace or not registration.name:
                return None
            policy_set = registration.policy_set
            redactor = records.Redactor(registration.redactions())
            return RunScope(
                registration.namespace,
                registration.name,
                policy_set if isinstance(policy_set, policy.PolicySet) else None,
                lambda text: redactor(text.encode()).decode("utf-8", "replace"),
            )

        broker = cls(kube, scope)
        served.broker = broker
        _serve_interventions_with(gateway.METRICS_REGISTRY)
        return broker

    def pending(self, run: str) -> list[gateway.Approval]:
        with self._lock:
            return [a for (owner, _), a in self._pending.items() if owner == run]

    async def request(self, run: str, approval: gateway.Approval) -> gateway.ApprovalOutcome:
        scope = self.scopes(run)
        if scope is None:
            raise errors.GatewayError(
                "the run has no AgentRun to hold the approval on",
                where=f"run {run}, tool call {approval.id}",
                fix="register the run with its namespace and name",
            )
        approvers = approvers_for(scope.policy_set, approval.rule)
        key = (run, approval.id)
        with self._lock:
            self._pending[key] = approval
        # Each hold gets its own id: a model may send a tool call id again, and a decision
        # on the earlier call (or on a deleted run of the same name) must not decide this one.
        held = dataclasses.replace(approval, id=f"{approval.id[:110]}-{secrets.token_hex(4)}")
        stop = threading.Event()
        verdict: _Verdict | None = None
        try:
            await asyncio.to_thread(self._hold, scope, run, held)
            verdict = await asyncio.to_thread(self._wait, scope, run, held, approvers, stop)
        finally:
            stop.set()
            with self._lock:
                self._pending.pop(key, None)
            # Runs even when the gateway cancelled the wait (its timeout): a timeout is a
            # rejection, and the entry must leave the status either way.
            await asyncio.shield(asyncio.to_thread(self._settle, scope, run, held, verdict))
        if verdict is None:
            raise errors.GatewayError(
                f"no decision within {approval.timeout:g} s",
                where=f"AgentRun {scope.namespace}/{scope.name}, tool call {approval.id}",
                fix="a held call is denied when nobody decides in time",
            )
        return gateway.ApprovalOutcome(
            verdict.approved, verdict.username, verdict.reason, groups=verdict.groups
        )

    # -- status ------------------------------------------------------------------------

    def _hold(self, scope: RunScope, run: str, approval: gateway.Approval) -> None:
        entry = {
            "id": approval.id,
            "action": approval.action,
            "tool": approval.tool[:256],
            "summary": scope.redact(_summary(approval))[:_SUMMARY_LIMIT],
            "rule": approval.rule[:128] or None,
            "requestedAt": _clock.rfc3339(approval.requested_at),
            "expiresAt": _clock.rfc3339(approval.requested_at + approval.timeout),
        }
        entry = {k: v for k, v in entry.items() if v is not None}

        call = approval.id

        def hold(current: _agentrun.Run) -> JSON | None:
            status = current.status
            if status.phase.terminal and approval.action == "tool.call":
                return None  # a publication step is held after the run's end; a call is not
            pending = [p.wire() for p in status.pending_approvals if p.id != call]
            new: JSON = {"pendingApprovals": [*pending, entry]}
            if status.phase in (api.Phase.RUNNING, api.Phase.AWAITING_APPROVAL):
                new["phase"] = api.Phase.AWAITING_APPROVAL.value
                new["message"] = (
                    f"{approval.tool} call {approval.id} waits for an approver until "
                    f"{entry['expiresAt']} (orchestrator approve|deny {scope.name} {approval.id})"
                )
            return new

        if _status.patch(self.kube, scope.ref(run), hold) is None:
            raise errors.GatewayError(
                "the AgentRun is gone or finished; nobody can approve this call",
                where=f"AgentRun {scope.namespace}/{scope.name}, tool call {approval.id}",
            )

    def _settle(
        self, scope: RunScope, run: str, approval: gateway.Approval, verdict: _Verdict | None
    ) -> None:
        call = approval.id
        counter = "approvals" if verdict is not None and verdict.approved else "rejections"

        def settle(current: _agentrun.Run) -> JSON | None:
            status = current.status
            pending = [p.wire() for p in status.pending_approvals if p.id != call]
            if len(pending) == len(status.pending_approvals):
                return None  # never held (the run had finished): nothing to count
            counts = status.interventions or api.Interventions()
            counted = counts.model_copy(
                update={counter: getattr(counts, counter) + 1, "total": counts.total + 1}
            )
            new: JSON = {"pendingApprovals": pending, "interventions": counted.wire()}
            if not pending and status.phase is api.Phase.AWAITING_APPROVAL:
                new["phase"] = api.Phase.RUNNING.value
                decided = (
                    "timed out"
                    if verdict is None
                    else f"{'approved' if verdict.approved else 'denied'} by {verdict.username}"
                )
                new["message"] = f"{approval.tool} call {approval.id} {decided}; running"
            return new

        try:
            settled = _status.patch(self.kube, scope.ref(run), settle)
        except Exception:  # the decision stands; a stale entry is only cosmetic
            log.exception("could not clear pending approval %s of %s", approval.id, run)
            return
        if settled is not None:
            _metrics.INTERVENTIONS.labels(counter.removesuffix("s")).inc()

    # -- decisions ---------------------------------------------------------------------

    def _wait(
        self,
        scope: RunScope,
        run: str,
        approval: gateway.Approval,
        approvers: Approvers,
        stop: threading.Event,
    ) -> _Verdict | None:
        """The first counted decision, or None at the deadline (or when stopped)."""
        deadline = approval.requested_at + approval.timeout + self.grace_seconds
        collection = run_approvals_path(scope.namespace)
        seen: set[str] = set()
        resource_version: str | None = None
        while not stop.is_set() and time.time() < deadline:
            try:
                if resource_version is None:
                    listed = self.kube.request("GET", collection)
                    resource_version = str(listed["metadata"]["resourceVersion"])
                    objects: Sequence[JSON] = listed.get("items") or []
                    found = self._first_counted(scope, run, approval, approvers, objects, seen)
                    if found is not None:
                        return found
                seconds = max(1, min(self.watch_seconds, int(deadline - time.time()) + 1))
                for event in self.kube.watch(
                    collection,
                    resource_version=resource_version,
                    timeout_seconds=seconds,
                    allowWatchBookmarks="true",
                ):
                    obj = event.get("object") or {}
                    resource_version = str(
                        (obj.get("metadata") or {}).get("resourceVersion") or resource_version
                    )
                    if event.get("type") != "ADDED":
                        continue
                    found = self._first_counted(scope, run, approval, approvers, [obj], seen)
                    if found is not None:
                        return found
                    if stop.is_set():
                        return None
            except _kube.ApiError as error:
                if error.status != 410:
                    log.warning("watching RunApprovals in %s: %s", scope.namespace, error)
                    stop.wait(1.0)
                resource_version = None  # list again: nothing is missed
        return None

    def _first_counted(
        self,
        scope: RunScope,
        run: str,
        approval: gateway.Approval,
        approvers: Approvers,
        objects: Iterable[JSON],
        seen: set[str],
    ) -> _Verdict | None:
        for obj in sorted(objects, key=lambda o: str(o["metadata"].get("creationTimestamp"))):
            name = str(obj["metadata"]["name"])
            try:
                spec = api.RunApprovalSpec.model_validate(obj.get("spec") or {})
            except pydantic.ValidationError as error:  # the API server checks the same model
                log.warning("RunApproval %s/%s is malformed: %s", scope.namespace, name, error)
                continue
            if spec.run_name != scope.name or spec.call_id != approval.id:
                continue
            if name in seen:
                continue
            seen.add(name)
            username, groups = spec.decided_by.username, tuple(spec.decided_by.groups)
            if not approvers.admit(username, groups):
                self._ignored(scope, run, approval, name, username, approvers)
                continue
            return _Verdict(
                approved=spec.decision is api.Decision.APPROVE,
                username=username,
                groups=groups,
                reason=spec.reason,
                approval_name=name,
            )
        return None

    def _ignored(
        self,
        scope: RunScope,
        run: str,
        approval: gateway.Approval,
        approval_name: str,
        username: str,
        approvers: Approvers,
    ) -> None:
        message = (
            f"RunApproval {approval_name} by {username or '(nobody)'} was ignored: they are not "
            f"an approver of tool call {approval.id} under the run's policy snapshot "
            f"(approvers: {approvers.describe()})"
        )
        log.warning("AgentRun %s/%s: %s", scope.namespace, scope.name, message)
        _events.post(
            self.kube, scope.ref(run), "ApprovalIgnored", message, "Warning", key=approval_name
        )


_REGISTRIES_SERVING_INTERVENTIONS: set[int] = set()


def _serve_interventions_with(registry: prometheus_client.CollectorRegistry) -> None:
    """The broker decides in the gateway's process: count its approvals and rejections
    where that process serves /metrics, so the intervention rate sees them."""
    if id(registry) in _REGISTRIES_SERVING_INTERVENTIONS:
        return
    registry.register(_metrics.INTERVENTIONS)
    _REGISTRIES_SERVING_INTERVENTIONS.add(id(registry))
    for kind in ("approval", "rejection"):
        _metrics.INTERVENTIONS.labels(kind)  # a zero to take rates from
