"""The decision function: compiled policies in, one ``Decision`` out.

``compile`` does everything that can be done once (globs to regular expressions, CEL to
programs, rules indexed by action and tool, the digest); ``decide`` is then a pure
function of the compiled set and the request. Each policy decides alone (first matching
rule, else its default effect); across policies the stricter effect wins.
"""

from __future__ import annotations

import json
import pathlib
import re
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import regex

from continue_orchestrator import api, errors
from continue_orchestrator.policy import _cel, _glob, _paths, _request, _results, _snapshot

Policy = api.RunPolicy | api.ClusterRunPolicy

_CACHE_LIMIT = 4096
_ALLOW = api.Effect.ALLOW
_DENY = api.Effect.DENY
_STRICTNESS = _request.STRICTNESS


class _Rule:
    """One compiled rule. Selectors left unset are None."""

    __slots__ = (
        "arguments",
        "branches",
        "commands",
        "effect",
        "hosts",
        "index",
        "name",
        "only",
        "paths",
        "qualified",
        "reason",
        "repositories",
        "secrets",
        "selective",
        "tool_literals",
        "tools",
        "when",
        "when_keys",
        "when_source",
    )

    def __init__(self, policy_name: str, index: int, rule: api.PolicyRule, where: str) -> None:
        self.index = index
        self.name = rule.name
        self.qualified = f"{policy_name}/{rule.name}"
        self.effect = rule.effect
        self.reason = rule.reason

        def globs(field: str, patterns: list[str], *, segments: bool) -> re.Pattern[str] | None:
            return _glob.compile_checked(patterns, segments=segments, field=field, where=where)

        for position, pattern in enumerate(rule.paths):
            if pattern.startswith("/") or ".." in pattern.split("/") or "\\" in pattern:
                raise errors.PolicyError(
                    f"paths[{position}] {pattern!r} must be relative to the workspace root, "
                    "without '..' or backslashes",
                    where=f"{where}.paths",
                    fix="write it as the workspace-relative glob, for example 'src/**'",
                )
        self.tools = globs("tools", rule.tools, segments=True)
        self.tool_literals = (
            frozenset(rule.tools)
            if rule.tools and not any(c in t for t in rule.tools for c in "*?[")
            else None
        )
        self.paths = globs("paths", rule.paths, segments=True)
        self.commands = globs("commands", rule.commands, segments=False)
        self.repositories = globs(
            "repositories", [_repository(r) for r in rule.repositories], segments=True
        )
        self.branches = globs("branches", rule.branches, segments=True)
        self.secrets = globs("secrets", rule.secrets, segments=True)
        self.hosts = _host_matcher(rule.hosts, where=f"{where}.hosts")
        arguments: list[tuple[str, re.Pattern[str] | _BoundedRegex]] = []
        for position, matcher in enumerate(rule.arguments):
            field = f"arguments[{position}]"
            compiled: re.Pattern[str] | _BoundedRegex | None
            if matcher.glob is not None:
                compiled = globs(f"{field}.glob", [matcher.glob], segments=True)
                assert compiled is not None
            else:
                try:
                    compiled = _BoundedRegex(matcher.regex or "", f"{where}.{field}.regex")
                except regex.error as error:
                    raise errors.PolicyError(
                        f"{field}.regex {matcher.regex!r} does not compile: {error}",
                        where=f"{where}.{field}.regex",
                    ) from None
            arguments.append((matcher.name, compiled))
        self.arguments = tuple(arguments)
        self.when_source = rule.when
        self.when_keys = _cel.referenced_keys(rule.when or "", CEL_KEYS)
        self.when: Any = None
        if rule.when is not None:
            self.when = _cel.compile_when(rule.when, CEL_KEYS, where=where)
        single = [f for f in ("paths", "commands", "hosts") if getattr(self, f) is not None]
        others = bool(
            self.arguments or self.repositories or self.branches or self.secrets
        ) or self.when is not None
        self.only: str | None = single[0] if len(single) == 1 and not others else None
        self.selective = bool(
            self.arguments
            or self.paths
            or self.commands
            or self.repositories
            or self.branches
            or self.secrets
            or self.hosts
            or self.when is not None
        )

    def matches(self, request: _request.Request, path: str | None, bound: _Bound) -> bool:
        """Whether every selector set on this rule matches (tools are matched by the index)."""
        if self.paths is not None and (path is None or not self.paths.fullmatch(path)):
            return False
        if self.commands is not None and (
            request.command is None or not self.commands.fullmatch(request.command)
        ):
            return False
        if self.branches is not None:
            if request.branch_unknown:
                if self.effect is _ALLOW:
                    return False
            elif request.branch is None or not self.branches.fullmatch(request.branch):
                return False
        if self.repositories is not None and (
            request.repository is None
            or not self.repositories.fullmatch(_repository(request.repository))
        ):
            return False
        if self.secrets is not None and (
            request.secret is None or not self.secrets.fullmatch(request.secret)
        ):
            return False
        if self.hosts is not None and (
            request.host is None or not self.hosts.fullmatch(_host_port(request))
        ):
            return False
        for name, pattern in self.arguments:
            if name == request.path_argument:
                value = path  # normalised: 'src/../.git/x' must not pass as 'src/**'
            else:
                value = _argument_text(request.arguments.get(name))
            if value is None or not pattern.fullmatch(value):
                return False
        if self.when is not None:
            return _cel.evaluate(self.when, bound.get(request, path, self.when_keys))
        return True


def _repository(url: str) -> str:
    return url.rstrip("/").removesuffix(".git")


def _argument_text(value: object) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, bool | int | float):
        return json.dumps(value)
    return None


def _host_port(request: _request.Request) -> str:
    host = (request.host or "").lower().rstrip(".")
    return f"{host}:{request.port if request.port is not None else ''}"


def _host_matcher(patterns: Sequence[str], *, where: str) -> re.Pattern[str] | None:
    if not patterns:
        return None
    pieces = []
    for position, pattern in enumerate(patterns):
        host, separator, port = pattern.rpartition(":")
        if not separator or not host or not (port == "*" or port.isdigit()):
            raise errors.PolicyError(
                f"[{position}] {pattern!r} is not host:port (port a number or *)", where=where
            )
        port_regex = r"[0-9]+" if port == "*" else re.escape(str(int(port)))
        pieces.append(f"(?:{_glob.translate_text(host.lower().rstrip('.'))}:{port_regex})")
    return re.compile("|".join(pieces), re.DOTALL)


class RegexTimeoutError(_cel.EvaluationError):
    """An argument regex ran out of time on what the agent sent."""


class _BoundedRegex:
    """A policy author's regular expression, run with a time limit.

    It matches text the model wrote, and a backtracking pattern (``(a+)+b``) can take
    exponential time on a crafted argument: with ``re`` one tool call could stall the
    gateway for every run it serves. ``regex`` stops after ``SECONDS``, and the rule then
    denies, as a condition that fails does.
    """

    SECONDS = 0.05
    __slots__ = ("pattern", "where")

    def __init__(self, source: str, where: str) -> None:
        self.pattern = regex.compile(source, regex.DOTALL | regex.VERSION0)
        self.where = where

    def fullmatch(self, text: str) -> bool:
        try:
            return self.pattern.fullmatch(text, timeout=self.SECONDS) is not None
        except TimeoutError:
            raise RegexTimeoutError(
                f"{self.where} ran over {self.SECONDS * 1000:.0f} ms on a {len(text)}-character "
                "argument"
            ) from None


class _Bound:
    """The CEL activations of one decision, built when a condition first needs one.

    Each condition gets a ``request`` map holding only the keys it reads: handing CEL
    a smaller map is most of the cost of evaluating it.
    """

    __slots__ = ("_activations", "_path")

    def __init__(self) -> None:
        self._activations: dict[frozenset[str] | None, Any] = {}
        self._path: str | None = None

    def get(
        self, request: _request.Request, path: str | None, keys: frozenset[str] | None
    ) -> Any:
        if path != self._path:
            self._activations.clear()
            self._path = path
        found = self._activations.get(keys)
        if found is None:
            found = self._activations[keys] = _cel.activation(cel_data(request, path, keys))
        return found


# What the agent sent is made ``_cel.holdable``: a NUL must not hide text from a condition.
_FIELDS: dict[str, Callable[[_request.Request, str | None], Any]] = {
    "action": lambda r, p: r.action.value,
    "tool": lambda r, p: _cel.holdable(r.tool or ""),
    "mcpServer": lambda r, p: _cel.holdable(r.mcp_server or ""),
    "arguments": lambda r, p: _cel.holdable_data(dict(r.arguments)),
    "path": lambda r, p: p or "",  # normalised: a path with NUL is refused before
    "command": lambda r, p: _cel.holdable(r.command or ""),
    "argv": lambda r, p: _cel.holdable_data(list(r.argv)),
    "repository": lambda r, p: _cel.holdable(r.repository or ""),
    "branch": lambda r, p: _cel.holdable(r.branch or ""),
    "secret": lambda r, p: _cel.holdable(r.secret or ""),
    "host": lambda r, p: _cel.holdable(r.host or ""),
    "port": lambda r, p: r.port or 0,
    "run": lambda r, p: r.run.as_cel(),
}
CEL_KEYS = frozenset(_FIELDS)
"""Every key of the CEL variable ``request``."""


def cel_data(
    request: _request.Request, path: str | None, keys: frozenset[str] | None = None
) -> dict[str, Any]:
    """The value of the CEL variable ``request`` (only ``keys``, when given)."""
    return {key: _FIELDS[key](request, path) for key in (CEL_KEYS if keys is None else keys)}


class _Group:
    """Consecutive rules that select on one field only (paths, commands or hosts), as one
    regex.

    Each rule's globs form one capturing alternative, in rule order; ``fullmatch``
    backtracks through alternatives left to right, so the first group that matched is
    the first rule that matches, exactly as if the rules were tried one by one.
    """

    __slots__ = ("field", "pattern", "rules")

    def __init__(self, rules: list[_Rule]) -> None:
        self.rules = tuple(rules)
        self.field = rules[0].only
        alternatives = [f"({getattr(rule, self.field or '').pattern})" for rule in rules]
        self.pattern = re.compile("|".join(alternatives), re.DOTALL)

    def value(self, request: _request.Request, path: str | None) -> str | None:
        if self.field == "paths":
            return path
        if self.field == "commands":
            return request.command
        return None if request.host is None else _host_port(request)


_Step = _Rule | _Group


def _steps(rules: tuple[_Rule, ...]) -> tuple[_Step, ...]:
    steps: list[_Step] = []
    run: list[_Rule] = []
    for rule in (*rules, None):
        if rule is not None and rule.only is not None and (not run or run[0].only == rule.only):
            run.append(rule)
            continue
        if len(run) > 1:
            steps.append(_Group(run))
        else:
            steps.extend(run)
        run = []
        if rule is not None:
            if rule.only is not None:
                run.append(rule)
            else:
                steps.append(rule)
    return tuple(steps)


class Outcome(NamedTuple):
    """What one policy alone decided."""

    policy: str
    effect: api.Effect
    rule: str | None
    reason: str
    considered: int
    """How many rules the index handed to this policy for the request."""
    by_default: bool = False
    """True when no rule matched and the policy's default effect decided."""


class CompiledPolicy:
    """One policy, compiled, with its rules indexed by (action, tool)."""

    def __init__(self, resource: Policy, position: int) -> None:
        meta = resource.metadata
        name = meta.name or f"policy-{position}"
        self.kind = resource.kind
        self.name = name
        qualified = f"{meta.namespace}/{name}" if meta.namespace else name
        self.label = f"{resource.kind} {qualified}"
        self.resource = resource
        spec = resource.spec
        self.default_effect = spec.default_effect
        places = _results.rule_places(spec.rules, "spec.rules", self.label)
        self.rules = tuple(
            _Rule(name, index, rule, where)
            for index, (rule, where) in enumerate(zip(spec.rules, places, strict=True))
        )
        self.tool_results = _results.compile_results(
            spec.tool_results, policy_name=name, label=self.label
        )
        namespaced = resource.kind == "RunPolicy"
        self.allowed_secrets: frozenset[str] | None = (
            frozenset(spec.allowed_secrets) if namespaced or spec.allowed_secrets else None
        )
        self.allowed_egress: re.Pattern[str] | None = None
        self.egress_closed = namespaced and not spec.allowed_egress
        if namespaced or spec.allowed_egress:
            self.allowed_egress = _host_matcher(
                spec.allowed_egress, where=f"{self.label}: spec.allowedEgress"
            ) or re.compile(r"(?!)")
        self._by_action: dict[api.Action, tuple[_Rule, ...]] = {
            action: tuple(r for r, source in zip(self.rules, spec.rules, strict=True)
                          if action in source.actions)
            for action in api.Action
        }
        self.strict_paths: dict[api.Action, tuple[str, ...]] = {
            action: tuple(dict.fromkeys(
                glob for rule in spec.rules if action in rule.actions
                and rule.effect is not _ALLOW for glob in rule.paths
            ))
            for action in (api.Action.FILE_READ, api.Action.FILE_WRITE)
        }
        """``paths`` globs of the Deny and RequireApproval rules on reading and writing: a
        shell glob is decided also as a file of each it could name (``policy._tools``)."""
        self._cache: dict[tuple[api.Action, str | None], tuple[_Rule, ...]] = {}
        self._steps: dict[tuple[api.Action, str | None], tuple[tuple[_Step, ...], int]] = {}

    def candidates(self, action: api.Action, tool_key: str | None) -> tuple[_Rule, ...]:
        """Rules, in order, that apply to ``action`` and whose tool globs match ``tool_key``."""
        key = (action, tool_key)
        found = self._cache.get(key)
        if found is None:
            found = tuple(
                rule
                for rule in self._by_action[action]
                if rule.tools is None
                or (
                    tool_key is not None
                    and (
                        tool_key in rule.tool_literals
                        if rule.tool_literals is not None
                        else rule.tools.fullmatch(tool_key) is not None
                    )
                )
            )
            if len(self._cache) < _CACHE_LIMIT:
                self._cache[key] = found
        return found

    def steps(self, action: api.Action, tool_key: str | None) -> tuple[tuple[_Step, ...], int]:
        """``candidates`` with runs of single-selector rules grouped, and their count."""
        key = (action, tool_key)
        found = self._steps.get(key)
        if found is None:
            rules = self.candidates(action, tool_key)
            found = (_steps(rules), len(rules))
            if len(self._steps) < _CACHE_LIMIT:
                self._steps[key] = found
        return found

    def decide(self, request: _request.Request, path: str | None, bound: _Bound) -> Outcome:
        action = request.action
        if action is api.Action.SECRET_READ and self.allowed_secrets is not None and (
            request.secret not in self.allowed_secrets
        ):
            return Outcome(
                self.label, _DENY, None,
                f"secret {request.secret!r} is not in spec.allowedSecrets of {self.label}", 0,
            )
        if action is api.Action.NETWORK_EGRESS and self.allowed_egress is not None and (
            request.host is None or not self.allowed_egress.fullmatch(_host_port(request))
        ):
            return Outcome(
                self.label, _DENY, None,
                f"{_host_port(request)} is not in spec.allowedEgress of {self.label}", 0,
            )
        steps, considered = self.steps(action, request.tool_key)
        for step in steps:
            if step.__class__ is _Group:
                assert isinstance(step, _Group)
                value = step.value(request, path)
                found = None if value is None else step.pattern.fullmatch(value)
                if found is None:
                    continue
                rule = step.rules[(found.lastindex or 1) - 1]
            else:
                assert isinstance(step, _Rule)
                rule = step
                try:
                    if not rule.matches(request, path, bound):
                        continue
                except _cel.EvaluationError as error:
                    failed = (
                        "an argument regex ran out of time"
                        if isinstance(error, RegexTimeoutError)
                        else "when condition failed"
                    )
                    return Outcome(
                        self.label, _DENY, rule.qualified,
                        f"rule {rule.qualified}: {failed}, so the request is denied: {error}",
                        considered,
                    )
            reason = rule.reason or f"rule {rule.qualified} matched"
            return Outcome(self.label, rule.effect, rule.qualified, reason, considered)
        return Outcome(
            self.label, self.default_effect, None,
            f"no rule of {self.label} matched; its default effect is {self.default_effect.value}",
            considered,
            by_default=True,
        )


class PolicySet:
    """Compiled policies, ready for ``decide``. Immutable once built."""

    def __init__(self, policies: Sequence[Policy]) -> None:
        self.policies: tuple[Policy, ...] = tuple(policies)
        self.compiled = tuple(CompiledPolicy(p, i) for i, p in enumerate(self.policies))
        self.tool_results: tuple[tuple[str, _results.CompiledResults], ...] = tuple(
            (c.label, c.tool_results) for c in self.compiled if c.tool_results is not None
        )
        """The policies that check tool results; empty when none does."""
        self.digest: str = _snapshot.digest_of(self.policies)
        """``sha256:…`` of the set's snapshot (``policy.snapshot_content``)."""

    def find(self, label: str) -> Policy | None:
        """The policy a ``Decision.policy`` label names (for its approvers and timeout)."""
        return next((c.resource for c in self.compiled if c.label == label), None)

    def __repr__(self) -> str:
        return f"PolicySet({', '.join(c.label for c in self.compiled)}, {self.digest})"


def compile_policies(policies: Sequence[Policy]) -> PolicySet:
    """Compile policies once; raises ``errors.PolicyError`` naming policy, rule and field."""
    for position, resource in enumerate(policies):
        if not isinstance(resource, api.RunPolicy | api.ClusterRunPolicy):
            raise errors.PolicyError(
                f"item {position} is a {type(resource).__name__}, not a RunPolicy or "
                "ClusterRunPolicy",
                where="policy.compile",
            )
    return PolicySet(policies)


def compile_snapshot(snapshot: bytes, *, where: str = "policy snapshot") -> PolicySet:
    """Compile the set a snapshot's canonical bytes hold; its digest is theirs."""
    return compile_policies(_snapshot.sources_of(snapshot, where=where))


def _paths_of(
    request: _request.Request, workspace: pathlib.Path | None
) -> list[str | None] | str:
    """Normalised forms of the request's path to decide, or why the path is refused."""
    if request.path is None:
        return [None]
    try:
        relative = _paths.normalise(request.path, root=request.run.workspace_root)
        if workspace is None:
            return [relative]
        resolved = _paths.resolve_symlinks(relative, workspace=workspace)
    except _paths.PathRejectedError as error:
        return str(error)
    return [relative] if resolved == relative else [relative, resolved]


def outcomes(
    policy_set: PolicySet, request: _request.Request, *, workspace: pathlib.Path | None = None
) -> tuple[list[str | None] | str, list[Outcome]]:
    """Every policy's own outcome for every normalised form of the request's path."""
    paths = _paths_of(request, workspace)
    if isinstance(paths, str):
        return paths, []
    bound = _Bound()
    return paths, [c.decide(request, path, bound) for path in paths for c in policy_set.compiled]


def decide(
    policy_set: PolicySet, request: _request.Request, *, workspace: pathlib.Path | None = None
) -> _request.Decision:
    """Decide ``request``: the strictest effect of all policies; see docs/policy.md."""
    decision = decide_or_abstain(policy_set, request, workspace=workspace, defaults=True)
    assert decision is not None
    return decision


def decide_or_abstain(
    policy_set: PolicySet,
    request: _request.Request,
    *,
    workspace: pathlib.Path | None,
    defaults: bool,
) -> _request.Decision | None:
    """``decide``; with ``defaults=False`` a policy where no rule matched has no say, and
    None means no policy had one."""
    paths = [None] if request.path is None else _paths_of(request, workspace)
    if isinstance(paths, str):
        return _request.Decision(
            _DENY, None, f"{request.describe()}: {paths}", policy_set.digest, "", request
        )
    if not policy_set.compiled:
        return _request.Decision(
            _DENY, None, "no policy applies, so everything is denied", policy_set.digest, "",
            request,
        )
    bound = _Bound()
    best: Outcome | None = None
    for path in paths:
        for compiled in policy_set.compiled:
            outcome = compiled.decide(request, path, bound)
            if outcome.by_default and not defaults:
                continue
            if best is None or _STRICTNESS[outcome.effect] > _STRICTNESS[best.effect] or (
                outcome.effect is best.effect and best.rule is None and outcome.rule is not None
            ):
                best = outcome
    if best is None:
        return None
    return _request.Decision(
        best.effect, best.rule, best.reason, policy_set.digest, best.policy, request
    )


def deny(policy_set: PolicySet, request: _request.Request, reason: str) -> _request.Decision:
    """A deny that no rule made (a request that cannot be checked)."""
    return _request.Decision(_DENY, None, reason, policy_set.digest, "", request)
