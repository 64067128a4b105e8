"""The gateway: policy-gated, recorded model traffic for agents in sandboxes.

Runs outside the sandbox. Each run is registered with its token, policy, upstream models
(with the real keys the sandbox never holds) and allowed egress; the agent's config
points at ``Gateway.api_base(run)``. See docs/gateway.md.
"""

from continue_orchestrator.gateway._approvals import (
    Approval,
    ApprovalBroker,
    ApprovalOutcome,
    LocalApprovalBroker,
)
from continue_orchestrator.gateway._recorder import LedgerSink, Redactor
from continue_orchestrator.gateway._registry import RunRegistration, Upstream, new_token
from continue_orchestrator.gateway._server import Decision, Gateway, ToolDecider, policy_decider

__all__ = [
    "Approval",
    "ApprovalBroker",
    "ApprovalOutcome",
    "Decision",
    "Gateway",
    "LedgerSink",
    "LocalApprovalBroker",
    "Redactor",
    "RunRegistration",
    "ToolDecider",
    "Upstream",
    "new_token",
    "policy_decider",
]
