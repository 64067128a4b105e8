"""Holding a tool call until a person decides, and who that person was.

The gateway asks an ``ApprovalBroker`` and waits; it treats no answer before the run's
approval timeout as a denial. The broker records who decided: a decision without a name
is not accepted. ``LocalApprovalBroker`` keeps pending approvals in memory and is
decided through the gateway's admin endpoint (``orchestrator approve|deny``); the
Kubernetes flavour decides through RunApproval objects, where the API server vouches for
the decider.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from continue_orchestrator import errors


@dataclass(frozen=True)
class Approval:
    """One held tool call. ``id`` is the model's tool call id, unique within the run."""

    id: str
    run: str
    tool: str
    arguments: Mapping[str, Any]
    rule: str
    reason: str
    approvers: Sequence[str] = ()
    requested_at: float = field(default_factory=time.time)
    timeout: float = 900.0
    action: str = "tool.call"
    """What is held: a tool call, or a publication step (``branch.push``,
    ``pullRequest.create``) of a run that has ended."""

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "run": self.run,
            "tool": self.tool,
            "arguments": dict(self.arguments),
            "rule": self.rule,
            "reason": self.reason,
            "approvers": list(self.approvers),
            "requestedAt": self.requested_at,
            "timeout": self.timeout,
        }


@dataclass(frozen=True)
class ApprovalOutcome:
    approved: bool
    decided_by: str
    reason: str = ""
    groups: tuple[str, ...] | None = None
    """The decider's groups as an authenticator vouched for them; None when no one did."""


@runtime_checkable
class ApprovalBroker(Protocol):
    async def request(self, run: str, approval: Approval) -> ApprovalOutcome:
        """Wait until someone decides ``approval`` (the caller enforces the timeout)."""
        ...


class LocalApprovalBroker:
    """In-memory approvals, decided through ``decide`` (the gateway's admin endpoint)."""

    def __init__(self) -> None:
        self._pending: dict[tuple[str, str], tuple[Approval, asyncio.Future[ApprovalOutcome]]] = {}

    async def request(self, run: str, approval: Approval) -> ApprovalOutcome:
        future: asyncio.Future[ApprovalOutcome] = asyncio.get_running_loop().create_future()
        key = (run, approval.id)
        self._pending[key] = (approval, future)
        try:
            return await future
        finally:
            self._pending.pop(key, None)

    def pending(self, run: str) -> list[Approval]:
        return [approval for (owner, _), (approval, _) in self._pending.items() if owner == run]

    def decide(self, run: str, call: str, *, approved: bool, by: str, reason: str = "") -> Approval:
        """Settle a pending approval; raises if there is none or ``by`` may not decide."""
        where = f"run {run}, tool call {call}"
        if not by.strip():
            raise errors.GatewayError(
                "a decision must name who made it", where=where, fix="pass --by NAME"
            )
        entry = self._pending.get((run, call))
        if entry is None or entry[1].done():
            raise errors.GatewayError(
                "no approval is pending for this tool call",
                where=where,
                fix="list pending approvals with GET /admin/runs/RUN/approvals; "
                "it may have timed out (a timeout denies)",
            )
        approval, future = entry
        if approval.approvers and by not in approval.approvers:
            raise errors.GatewayError(
                f"{by!r} is not an approver for this action",
                where=where,
                fix=f"ask one of {', '.join(approval.approvers)} (from the policy's approvers)",
            )
        future.set_result(ApprovalOutcome(approved, by, reason))
        return approval


def pending(broker: ApprovalBroker, run: str) -> list[Approval]:
    """The approvals of ``run`` waiting for a person, if ``broker`` can list them."""
    listed = getattr(broker, "pending", None)
    return list(listed(run)) if listed else []
