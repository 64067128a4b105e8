"""The runner: the sandbox image's entrypoint, one AgentRun from clone to outcome.

``run(bundle)`` prepares the workspace at the pinned commit, rewrites config.yaml so
every model goes through the gateway with the run token, refuses ungranted secrets
before the agent starts, runs the pinned Continue CLI headless, takes the diff, runs
the verify commands and reports an ``Outcome`` to the gateway. ``verify_only(bundle,
patch)`` is publication's fresh verification: the same clone and verify commands on the
pinned commit with the run's patch applied, and no agent. ``ExitCode`` tells the
results apart; ``python -m continue_orchestrator.runner`` is the command.
"""

from continue_orchestrator.runner._bundle import (
    BUNDLE_ENV,
    BUNDLE_FILE_ENV,
    SECRET_ENV_PREFIX,
    TOKEN_ENV,
    Credentials,
    Paths,
    RepositoryPin,
    RunBundle,
    load_bundle,
)
from continue_orchestrator.runner._config import (
    GATEWAY_PROVIDERS,
    LiteralKeys,
    RewrittenConfig,
    SecretReference,
    broker_literal_keys,
    brokered_secrets,
    is_literal_key_name,
    rewrite_config,
    secret_references,
)
from continue_orchestrator.runner._main import main, prepare_workspace
from continue_orchestrator.runner._outcome import (
    AgentResult,
    ChangedFile,
    DiffReport,
    ExitCode,
    Outcome,
    ProcessResult,
    Receipt,
    Status,
    VerifyResult,
    redact,
)
from continue_orchestrator.runner._run import agent_environment, cli_version, run
from continue_orchestrator.runner._verify import verify_only
from continue_orchestrator.runner._workspace import APPLY as GIT_APPLY
from continue_orchestrator.runner._workspace import (
    TREE_MAX_DEPTH,
    Diff,
    diff,
    split_credentials,
    tree_digest,
)

__all__ = [
    "BUNDLE_ENV",
    "BUNDLE_FILE_ENV",
    "GATEWAY_PROVIDERS",
    "GIT_APPLY",
    "SECRET_ENV_PREFIX",
    "TOKEN_ENV",
    "TREE_MAX_DEPTH",
    "AgentResult",
    "ChangedFile",
    "Credentials",
    "Diff",
    "DiffReport",
    "ExitCode",
    "LiteralKeys",
    "Outcome",
    "Paths",
    "ProcessResult",
    "Receipt",
    "RepositoryPin",
    "RewrittenConfig",
    "RunBundle",
    "SecretReference",
    "Status",
    "VerifyResult",
    "agent_environment",
    "broker_literal_keys",
    "brokered_secrets",
    "cli_version",
    "diff",
    "is_literal_key_name",
    "load_bundle",
    "main",
    "prepare_workspace",
    "redact",
    "rewrite_config",
    "run",
    "secret_references",
    "split_credentials",
    "tree_digest",
    "verify_only",
]
