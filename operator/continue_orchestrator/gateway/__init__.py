"""The gateway: policy-gated, recorded model traffic for agents in sandboxes.

Runs outside the sandbox. Each run is registered with its token, policy, upstream models
(with the real keys the sandbox never holds), allowed egress and repository (with the
forge credential, which the sandbox never holds either; or the gateway mints a GitHub
App installation token for it, ``AppTokens``), in process
(``Gateway.register_run``) or over the admin API (``Client``, ``BlockingClient``); the
agent's config points at ``Gateway.api_base(run)``, and the runner clones from the run's
git endpoint (fetch only). See docs/gateway.md.
"""

from continue_orchestrator.gateway._admin import policy_set
from continue_orchestrator.gateway._admin import registration as parse_registration
from continue_orchestrator.gateway._approvals import (
    Approval,
    ApprovalBroker,
    ApprovalOutcome,
    LocalApprovalBroker,
)
from continue_orchestrator.gateway._client import (
    BlockingClient,
    Client,
    RepositorySource,
    RunSource,
    registration_body,
    upstreams_from_config,
)
from continue_orchestrator.gateway._forge_tokens import GITHUB_API, AppTokens
from continue_orchestrator.gateway._gate import Decision, ToolDecider, policy_decider
from continue_orchestrator.gateway._metrics import REGISTRY as METRICS_REGISTRY
from continue_orchestrator.gateway._recorder import LedgerSink
from continue_orchestrator.gateway._registry import (
    GitOrigin,
    RunRegistration,
    Upstream,
    new_token,
    token_digest,
)
from continue_orchestrator.gateway._server import Gateway

__all__ = [
    "GITHUB_API",
    "METRICS_REGISTRY",
    "AppTokens",
    "Approval",
    "ApprovalBroker",
    "ApprovalOutcome",
    "BlockingClient",
    "Client",
    "Decision",
    "Gateway",
    "GitOrigin",
    "LedgerSink",
    "LocalApprovalBroker",
    "RepositorySource",
    "RunRegistration",
    "RunSource",
    "ToolDecider",
    "Upstream",
    "new_token",
    "parse_registration",
    "policy_decider",
    "policy_set",
    "registration_body",
    "token_digest",
    "upstreams_from_config",
]
