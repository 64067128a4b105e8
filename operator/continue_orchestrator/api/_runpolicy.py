"""RunPolicy and ClusterRunPolicy: what an agent run may do, as data.

A namespace's RunPolicy is written by its members' admins; the ClusterRunPolicy is the
platform team's baseline. A run must satisfy both: the policy engine
(``continue_orchestrator.policy``) applies both and the stricter effect wins. This module
is only the shape and its validation; the meaning lives in ``policy`` and docs/policy.md.
"""

from __future__ import annotations

import enum
from typing import Annotated, Literal

import pydantic

from continue_orchestrator.api import _base

NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
HOST_PORT_PATTERN = r"^(\*|\*\.[A-Za-z0-9.-]+|[A-Za-z0-9.-]+|\[[0-9a-fA-F:]+\]):(\*|[0-9]{1,5})$"
SECRET_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"

HostPort = Annotated[str, pydantic.Field(pattern=HOST_PORT_PATTERN, max_length=261)]
SecretName = Annotated[str, pydantic.Field(pattern=SECRET_NAME_PATTERN, max_length=253)]


class Effect(enum.StrEnum):
    """What happens when a rule matches."""

    ALLOW = "Allow"
    DENY = "Deny"
    REQUIRE_APPROVAL = "RequireApproval"


class Action(enum.StrEnum):
    """The kinds of thing an agent run can try to do."""

    TOOL_CALL = "tool.call"
    FILE_READ = "file.read"
    FILE_WRITE = "file.write"
    SHELL_EXEC = "shell.exec"
    REPOSITORY_ACCESS = "repository.access"
    PULL_REQUEST_CREATE = "pullRequest.create"
    PULL_REQUEST_MERGE = "pullRequest.merge"
    BRANCH_PUSH = "branch.push"
    SECRET_READ = "secret.read"
    NETWORK_EGRESS = "network.egress"


class ArgumentMatcher(_base.Model):
    """Matches one named argument of a tool call."""

    cross_field_rules = (_base.exactly_one_of("glob", "regex"),)

    name: str = pydantic.Field(min_length=1, max_length=256)
    """Argument name as the tool declares it, for example file_path or command."""
    glob: str | None = pydantic.Field(default=None, max_length=4096)
    """Glob the argument's string value must match (* within a segment, ** across)."""
    regex: str | None = pydantic.Field(default=None, max_length=4096)
    """RE2-compatible regular expression the whole value must match."""


class PolicyRule(_base.Model):
    """One rule: what it matches, and the effect when it does.

    Every selector that is set must match (they are ANDed); within a list, any entry
    may match (ORed). Rules are evaluated in order; see docs/policy.md.
    """

    name: str = pydantic.Field(min_length=1, max_length=63, pattern=NAME_PATTERN)
    """Unique name of the rule within the policy; decisions and the ledger cite it."""
    description: str = pydantic.Field(default="", max_length=1024)
    """What the rule is for, for people."""
    actions: list[Action] = pydantic.Field(min_length=1, max_length=10)
    """Actions the rule applies to."""
    tools: list[str] = pydantic.Field(default_factory=list, max_length=64)
    """Tool name globs: Continue built-ins (Read, Write, Edit, MultiEdit, Bash, Fetch, List,
    Search, ...) or MCP tools as SERVER/TOOL."""
    arguments: list[ArgumentMatcher] = pydantic.Field(default_factory=list, max_length=32)
    """Matchers on named tool arguments; all must match."""
    paths: list[str] = pydantic.Field(default_factory=list, max_length=128)
    """Path globs relative to the workspace root (* within a segment, ** across segments)."""
    commands: list[str] = pydantic.Field(default_factory=list, max_length=128)
    """Shell command globs matched against each simple command of a command line,
    for example 'git push*' or 'pytest *'."""
    repositories: list[str] = pydantic.Field(default_factory=list, max_length=128)
    """Repository URL globs, for example 'https://github.com/acme/*'."""
    branches: list[str] = pydantic.Field(default_factory=list, max_length=64)
    """Branch name globs, for branch pushes and pull requests."""
    secrets: list[str] = pydantic.Field(default_factory=list, max_length=64)
    """Continue secret names (globs) for secret reads."""
    hosts: list[str] = pydantic.Field(default_factory=list, max_length=128)
    """host:port globs for network egress and Fetch URLs."""
    when: str | None = pydantic.Field(default=None, max_length=4096)
    """Optional CEL condition over the request (variable 'request'); the rule matches only
    when it is true."""
    effect: Effect
    """Allow, Deny or RequireApproval."""
    reason: str = pydantic.Field(default="", max_length=1024)
    """Why, in words shown to the agent and the person reviewing the run."""


class ToolResultRule(_base.Model):
    """One kind of tool result the model must not be given.

    Every selector that is set must match (they are ANDed); within ``tools`` and
    ``patterns``, any entry may match. See docs/policy.md.
    """

    cross_field_rules = (
        _base.CrossFieldRule(
            cel="(has(self.tools) && size(self.tools) > 0)"
            " || (has(self.patterns) && size(self.patterns) > 0) || has(self.when)",
            message="set at least one of tools, patterns or when",
            holds=lambda r: bool(r.tools or r.patterns or r.when is not None),
        ),
    )

    name: str = pydantic.Field(min_length=1, max_length=63, pattern=NAME_PATTERN)
    """Unique name within spec.toolResults.withhold; decisions and the ledger cite it."""
    description: str = pydantic.Field(default="", max_length=1024)
    """What the rule is for, for people."""
    tools: list[str] = pydantic.Field(default_factory=list, max_length=64)
    """Tool name globs the rule applies to (Read, Bash, SERVER/TOOL, ...). Empty means every
    tool; a result whose call the gateway did not deliver matches every glob."""
    patterns: list[str] = pydantic.Field(default_factory=list, max_length=64)
    """RE2 regular expressions searched for anywhere in the result's text (linear time,
    no backreferences or lookaround); any one found matches."""
    when: str | None = pydantic.Field(default=None, max_length=4096)
    """Optional CEL condition over the result (variable 'result': tool, content, bytes,
    run); the rule matches only when it is true."""
    reason: str = pydantic.Field(default="", max_length=1024)
    """Why, in words shown to the model in place of the result and to reviewers."""


class ToolResults(_base.Model):
    """Which tool results are withheld from the model (checked by the gateway)."""

    max_bytes: int | None = pydantic.Field(default=None, ge=1, le=64 * 1024 * 1024)
    """Results larger than this many bytes (UTF-8 text) are withheld whole. Unset: no limit
    beyond the gateway's request size."""
    withhold: list[ToolResultRule] = pydantic.Field(
        default_factory=list,
        max_length=256,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )
    """Rules; a result any of them matches is replaced, for the model, by a notice naming
    the rule and its reason."""


class Approvers(_base.Model):
    """Who may approve or deny held actions."""

    users: list[str] = pydantic.Field(default_factory=list, max_length=256)
    """Kubernetes user names."""
    groups: list[str] = pydantic.Field(default_factory=list, max_length=256)
    """Kubernetes group names."""


Quantity = int | str


class Resources(_base.Model):
    """Compute resources of the sandbox pod (Kubernetes quantities)."""

    requests: dict[str, Quantity] = pydantic.Field(default_factory=dict)
    """Minimum resources, for example cpu: 500m, memory: 1Gi."""
    limits: dict[str, Quantity] = pydantic.Field(default_factory=dict)
    """Maximum resources, for example cpu: '2', memory: 4Gi."""


class Sandbox(_base.Model):
    """How the run's pod is sandboxed."""

    runtime_class_name: str = pydantic.Field(default="gvisor", max_length=253)
    """RuntimeClass of the sandbox pod; gvisor unless an admin deliberately names another."""
    resources: Resources | None = None
    """Resources of the sandbox pod."""
    max_timeout_seconds: int = pydantic.Field(default=7200, ge=60, le=86400)
    """Upper bound on spec.timeoutSeconds of runs under this policy."""


class RunPolicySpec(_base.Model):
    """The rules and limits that gate an agent run."""

    cross_field_rules = (
        _base.CrossFieldRule(
            cel="!has(self.rules) || !self.rules.exists(r, r.effect == 'RequireApproval')"
            " || (has(self.approvers) && (size(self.approvers.users) > 0"
            " || size(self.approvers.groups) > 0))",
            message="rules with effect RequireApproval need spec.approvers with at least "
            "one user or group",
            holds=lambda s: not any(r.effect is Effect.REQUIRE_APPROVAL for r in s.rules)
            or (s.approvers is not None and bool(s.approvers.users or s.approvers.groups)),
        ),
    )

    rules: list[PolicyRule] = pydantic.Field(
        default_factory=list,
        max_length=1000,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )
    """Rules, evaluated in order; names are unique."""
    default_effect: Effect = Effect.DENY
    """Effect when no rule matches. Deny unless set."""
    allowed_secrets: list[SecretName] = pydantic.Field(
        default_factory=list,
        max_length=256,
        json_schema_extra={"x-kubernetes-list-type": "set"},
    )
    """Continue secret names a run may be given. Anything else is never mounted."""
    allowed_egress: list[HostPort] = pydantic.Field(
        default_factory=list,
        max_length=256,
        json_schema_extra={"x-kubernetes-list-type": "set"},
    )
    """host:port pairs the run may reach beyond the gateway (model upstreams, package
    registries). Empty means nothing."""
    sandbox: Sandbox = pydantic.Field(default_factory=Sandbox)
    """Sandbox settings."""
    approvers: Approvers | None = None
    """Who may decide RequireApproval actions."""
    approval_timeout_seconds: int = pydantic.Field(default=900, ge=10, le=86400)
    """How long a held action waits for a decision before it is denied."""
    tool_results: ToolResults | None = None
    """Tool results the gateway withholds from the model (private keys, credentials, ...)."""


class RunPolicy(_base.Model):
    """A namespace's policy for agent runs."""

    api_version: Literal["orchestrator.continue.dev/v1alpha1"]
    kind: Literal["RunPolicy"]
    metadata: _base.ObjectMeta
    spec: RunPolicySpec


class ClusterRunPolicy(_base.Model):
    """The cluster-wide baseline every run must also satisfy. Admins own it."""

    api_version: Literal["orchestrator.continue.dev/v1alpha1"]
    kind: Literal["ClusterRunPolicy"]
    metadata: _base.ObjectMeta
    spec: RunPolicySpec
