"""What the engine is asked and what it answers: ``Request``, ``RunContext``, ``Decision``.

Plain frozen dataclasses: they are built on the gateway's hot path for every tool call,
so they cost a few hundred nanoseconds, not a validation pass.
"""

from __future__ import annotations

import dataclasses
import types
from collections.abc import Mapping
from typing import Any

from continue_orchestrator import api

_EMPTY: Mapping[str, Any] = types.MappingProxyType({})


@dataclasses.dataclass(frozen=True, slots=True)
class RunContext:
    """The run a request belongs to."""

    namespace: str = ""
    name: str = ""
    uid: str = ""
    branch: str = ""
    """The branch the run works on; a bare ``git push`` pushes to it. Empty if unknown."""
    workspace_root: str = "/workspace"
    """The workspace root as the agent sees it; absolute paths under it are made relative."""
    labels: Mapping[str, str] = dataclasses.field(default_factory=lambda: _EMPTY)

    def as_cel(self) -> dict[str, Any]:
        return {
            "namespace": self.namespace,
            "name": self.name,
            "uid": self.uid,
            "branch": self.branch,
            "workspaceRoot": self.workspace_root,
            "labels": dict(self.labels),
        }


@dataclasses.dataclass(frozen=True, slots=True)
class Request:
    """One thing an agent run tries to do.

    Only the fields the action needs are set; selectors of a rule that name a field the
    request lacks do not match. ``path`` is as the agent sent it (``decide`` normalises
    it); ``command`` is one simple command (``decide_tool_call`` splits command lines).
    """

    action: api.Action
    tool: str | None = None
    mcp_server: str | None = None
    """For MCP tools, the server offering ``tool``, when the caller knows it."""
    arguments: Mapping[str, Any] = dataclasses.field(default_factory=lambda: _EMPTY)
    path: str | None = None
    path_argument: str | None = None
    """The argument ``path`` came from; argument matchers on it see the normalised path."""
    command: str | None = None
    argv: tuple[str, ...] = ()
    repository: str | None = None
    branch: str | None = None
    branch_unknown: bool = False
    """True when the request pushes to a branch that cannot be known in advance."""
    secret: str | None = None
    host: str | None = None
    port: int | None = None
    run: RunContext = dataclasses.field(default_factory=RunContext)

    @property
    def tool_key(self) -> str | None:
        """The name tool globs match: ``SERVER/TOOL`` for MCP tools with a known server."""
        if self.tool is None:
            return None
        if self.mcp_server:
            return f"{self.mcp_server}/{self.tool}"
        # A bare name with a slash must not pose as SERVER/TOOL.
        return f"/{self.tool}" if "/" in self.tool else self.tool

    def describe(self) -> str:
        """A short human form, for reasons and tables."""
        parts = [self.action.value]
        if self.tool is not None:
            parts.append(self.tool_key or "")
        for label, value in (
            ("path", self.path),
            ("command", self.command),
            ("repository", self.repository),
            ("branch", self.branch),
            ("secret", self.secret),
        ):
            if value is not None:
                parts.append(f"{label}={value!r}")
        if self.branch_unknown:
            parts.append("branch=(unknown)")
        if self.host is not None:
            parts.append(f"host={self.host}:{self.port}")
        return " ".join(parts)


@dataclasses.dataclass(frozen=True, slots=True)
class ToolResult:
    """A tool's result on its way to the model, as ``decide_tool_result`` sees it."""

    tool: str | None
    """The tool whose call produced it; None when unknown (a call the gateway did not
    deliver), which every ``tools`` glob matches."""
    size: int
    """Bytes of the result's text (UTF-8)."""
    run: RunContext = dataclasses.field(default_factory=RunContext)

    def describe(self) -> str:
        """A short human form, for reasons and tables."""
        return f"tool.result {self.tool or '(unknown tool)'} ({self.size} bytes)"


@dataclasses.dataclass(frozen=True, slots=True)
class Decision:
    """The engine's answer."""

    effect: api.Effect
    rule: str | None
    """``policyName/ruleName`` of the deciding rule; None when a default or fence decided."""
    reason: str
    policy_digest: str
    """``PolicySet.digest`` of the policies that decided: the snapshot to record."""
    policy: str
    """Which policy decided, as ``Kind namespace/name`` (empty if nothing applied)."""
    request: Request | ToolResult
    """The request that decided (for a tool call, the strictest of those it implies; for
    a tool result, the result without its content)."""

    @property
    def allowed(self) -> bool:
        return self.effect is api.Effect.ALLOW


STRICTNESS: Mapping[api.Effect, int] = types.MappingProxyType(
    {api.Effect.ALLOW: 0, api.Effect.REQUIRE_APPROVAL: 1, api.Effect.DENY: 2}
)
"""Deny > RequireApproval > Allow."""


def strictest(decisions: list[Decision]) -> Decision:
    """The strictest decision; of equally strict ones, the first a rule made, else the first."""
    best = decisions[0]
    for decision in decisions[1:]:
        if STRICTNESS[decision.effect] > STRICTNESS[best.effect] or (
            decision.effect is best.effect and best.rule is None and decision.rule is not None
        ):
            best = decision
    return best
