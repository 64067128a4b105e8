"""Export of a policy set to Continue's ``permissions.yaml``: an extra fence in the sandbox.

Continue checks ``exclude``, then ``ask``, then ``allow``; the first match wins, and in
headless mode an ``ask`` tool is hidden from the model. Continue's argument patterns
(``Tool(arg)``) look in argument names some tools do not use (``Read`` has ``filepath``,
Continue's matcher reads ``file_path``), so the export uses whole tools only: a tool
every ``tool.call`` of which the policies deny is excluded, so the model never sees it;
every other built-in tool is allowed, because the gateway decides each call. A tool
whose calls imply a further action (Write: file.write) is also excluded when that action
is denied for it whatever the path or command.
"""

from __future__ import annotations

import yaml

from continue_orchestrator import api
from continue_orchestrator.policy import _engine, _tools


def _denied_outright(
    compiled: _engine.CompiledPolicy, action: api.Action, tool: str, *, defaults: bool
) -> bool:
    for rule in compiled.candidates(action, tool):
        if not rule.selective:
            return rule.effect is api.Effect.DENY
        if rule.effect is not api.Effect.DENY:
            return False
    return defaults and compiled.default_effect is api.Effect.DENY


def _excluded(compiled: _engine.CompiledPolicy, tool: str) -> bool:
    implied = _tools.IMPLIED_ACTION.get(tool)
    if _denied_outright(compiled, api.Action.TOOL_CALL, tool, defaults=implied is None):
        return True
    if implied is api.Action.NETWORK_EGRESS and compiled.egress_closed:
        return True
    return implied is not None and _denied_outright(compiled, implied, tool, defaults=True)


def excluded_tools(policy_set: _engine.PolicySet) -> list[str]:
    """Tools (built-in, or MCP tools named without a server) no call of which is allowed."""
    names = list(_tools.BUILT_IN_TOOLS)
    for compiled in policy_set.compiled:
        for rule in compiled.rules:
            for literal in sorted(rule.tool_literals or ()):
                if "/" not in literal and literal not in names:
                    names.append(literal)
    if not policy_set.compiled:
        return names
    return [
        name
        for name in names
        if any(_excluded(compiled, name) for compiled in policy_set.compiled)
    ]


def to_permissions_yaml(policy_set: _engine.PolicySet) -> str:
    """Continue's ``permissions.yaml`` for runs under ``policy_set``."""
    exclude = excluded_tools(policy_set)
    allow = [name for name in _tools.BUILT_IN_TOOLS if name not in exclude]
    header = (
        "# Written by continue-orchestrator from policy set "
        f"{policy_set.digest}.\n"
        "# An extra fence only: the gateway decides every tool call against the policy.\n"
    )
    body = yaml.safe_dump(
        {"allow": allow, "ask": [], "exclude": exclude}, sort_keys=False, default_flow_style=False
    )
    return header + body
