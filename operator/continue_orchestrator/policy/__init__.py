"""The policy engine: may this happen?

Every other part asks here: the gateway for each tool call the model requests, the
operator for secrets, egress and pull requests, the runner for ``permissions.yaml``.
``compile`` turns RunPolicy / ClusterRunPolicy resources into a ``PolicySet`` once;
``decide``, ``decide_tool_call`` and ``decide_tool_result`` are then pure, deterministic
functions of that set and a request. The semantics are in docs/policy.md.
"""

from continue_orchestrator.policy._cases import (
    Case,
    Subject,
    ToolCall,
    decide_subject,
    load_cases,
    load_policies,
    load_subject,
)
from continue_orchestrator.policy._engine import (
    CompiledPolicy,
    Outcome,
    Policy,
    PolicySet,
    cel_data,
    compile_snapshot,
    decide,
    outcomes,
)
from continue_orchestrator.policy._engine import compile_policies as compile
from continue_orchestrator.policy._paths import PathRejectedError, normalise, resolve_symlinks
from continue_orchestrator.policy._permissions import excluded_tools, to_permissions_yaml
from continue_orchestrator.policy._request import (
    STRICTNESS,
    Decision,
    Request,
    RunContext,
    ToolResult,
    strictest,
)
from continue_orchestrator.policy._results import (
    RESULT_KEYS,
    decide_tool_result,
    result_text,
)
from continue_orchestrator.policy._shell import CommandLine, ShellRejectedError, SimpleCommand
from continue_orchestrator.policy._shell import split as split_command
from continue_orchestrator.policy._snapshot import canonical as canonical_json
from continue_orchestrator.policy._snapshot import content as snapshot_content
from continue_orchestrator.policy._snapshot import digest_of as snapshot_digest
from continue_orchestrator.policy._snapshot import document as snapshot_document
from continue_orchestrator.policy._snapshot import source_digests as snapshot_source_digests
from continue_orchestrator.policy._snapshot import sources_from as snapshot_sources_from
from continue_orchestrator.policy._snapshot import sources_of as snapshot_sources
from continue_orchestrator.policy._tools import (
    BUILT_IN_TOOLS,
    UnmappableError,
    decide_tool_call,
    requests_for,
)

__all__ = [
    "BUILT_IN_TOOLS",
    "RESULT_KEYS",
    "STRICTNESS",
    "Case",
    "CommandLine",
    "CompiledPolicy",
    "Decision",
    "Outcome",
    "PathRejectedError",
    "Policy",
    "PolicySet",
    "Request",
    "RunContext",
    "ShellRejectedError",
    "SimpleCommand",
    "Subject",
    "ToolCall",
    "ToolResult",
    "UnmappableError",
    "canonical_json",
    "cel_data",
    "compile",
    "compile_snapshot",
    "decide",
    "decide_subject",
    "decide_tool_call",
    "decide_tool_result",
    "excluded_tools",
    "load_cases",
    "load_policies",
    "load_subject",
    "normalise",
    "outcomes",
    "requests_for",
    "resolve_symlinks",
    "result_text",
    "snapshot_content",
    "snapshot_digest",
    "snapshot_document",
    "snapshot_source_digests",
    "snapshot_sources",
    "snapshot_sources_from",
    "split_command",
    "strictest",
    "to_permissions_yaml",
]
