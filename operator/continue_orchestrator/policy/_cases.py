"""Requests and test cases as YAML, for ``orchestrator policy test`` and ``explain``.

A subject is either a ``request`` (one action, decided by ``decide``) or a ``toolCall``
(a Continue tool call, decided by ``decide_tool_call``); a case may also be a
``toolResult`` (a tool's output on its way to the model, decided by
``decide_tool_result``: Deny means withheld). Fields are camelCase like the
rest of the API; unknown fields are errors, so a typo cannot silently test nothing.
"""

from __future__ import annotations

import dataclasses
import pathlib
from typing import Any

import pydantic
import yaml
from pydantic import alias_generators

from continue_orchestrator import api, errors
from continue_orchestrator.policy import _engine, _request, _results, _tools


class _Model(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(
        alias_generator=alias_generators.to_camel, populate_by_name=True, extra="forbid"
    )


class _Run(_Model):
    namespace: str = ""
    name: str = ""
    uid: str = ""
    branch: str = ""
    workspace_root: str = "/workspace"
    labels: dict[str, str] = pydantic.Field(default_factory=dict)


class _Request(_Model):
    action: api.Action
    tool: str | None = None
    mcp_server: str | None = None
    arguments: dict[str, Any] = pydantic.Field(default_factory=dict)
    path: str | None = None
    command: str | None = None
    repository: str | None = None
    branch: str | None = None
    secret: str | None = None
    host: str | None = None
    port: int | None = pydantic.Field(default=None, ge=0, le=65535)
    run: _Run | None = None


class _ToolCall(_Model):
    name: str = pydantic.Field(min_length=1)
    arguments: dict[str, Any] = pydantic.Field(default_factory=dict)
    mcp_server: str | None = None
    run: _Run | None = None


class _ToolResult(_Model):
    tool: str | None = None
    """None: a result whose call the gateway did not deliver."""
    content: Any = ""
    run: _Run | None = None


class _Subject(_Model):
    """Exactly one of a request, a tool call or a tool result."""

    request: _Request | None = None
    tool_call: _ToolCall | None = None
    tool_result: _ToolResult | None = None

    @pydantic.model_validator(mode="after")
    def _one(self) -> _Subject:
        if sum(s is not None for s in (self.request, self.tool_call, self.tool_result)) != 1:
            raise ValueError("set exactly one of request, toolCall or toolResult")
        return self


class _Case(_Subject):
    """A subject and the effect (and, if given, the rule) it must get."""

    name: str = pydantic.Field(min_length=1)
    expect: api.Effect
    expect_rule: str | None = None


class _CasesFile(_Model):
    run: _Run = pydantic.Field(default_factory=_Run)
    cases: list[_Case] = pydantic.Field(min_length=1)


@dataclasses.dataclass(frozen=True, slots=True)
class ToolCall:
    """A Continue tool call as the model asked for it."""

    name: str
    arguments: dict[str, Any]
    run: _request.RunContext
    mcp_server: str | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class ToolResultCase:
    """A tool's result on its way to the model."""

    tool: str | None
    content: Any
    run: _request.RunContext


Subject = _request.Request | ToolCall
CaseSubject = Subject | ToolResultCase


@dataclasses.dataclass(frozen=True, slots=True)
class Case:
    """One expectation: this subject gets this effect (and, if given, from this rule)."""

    name: str
    subject: CaseSubject
    expect: api.Effect
    expect_rule: str | None


def _run(model: _Run | None, default: _request.RunContext) -> _request.RunContext:
    if model is None:
        return default
    return _request.RunContext(
        namespace=model.namespace,
        name=model.name,
        uid=model.uid,
        branch=model.branch,
        workspace_root=model.workspace_root,
        labels=dict(model.labels),
    )


def _subject(model: _Subject, default: _request.RunContext) -> CaseSubject:
    if model.tool_result is not None:
        result = model.tool_result
        return ToolResultCase(result.tool, result.content, _run(result.run, default))
    if model.tool_call is not None:
        call = model.tool_call
        return ToolCall(call.name, dict(call.arguments), _run(call.run, default), call.mcp_server)
    assert model.request is not None
    r = model.request
    return _request.Request(
        action=r.action,
        tool=r.tool,
        mcp_server=r.mcp_server,
        arguments=dict(r.arguments),
        path=r.path,
        command=r.command,
        argv=(),
        repository=r.repository,
        branch=r.branch,
        secret=r.secret,
        host=r.host,
        port=r.port,
        run=_run(r.run, default),
    )


def _load_yaml(path: pathlib.Path) -> Any:
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise errors.PolicyError(f"cannot read: {error.strerror}", where=str(path)) from None
    except UnicodeDecodeError as error:
        raise errors.PolicyError(f"not UTF-8 text (byte {error.start})", where=str(path)) from None
    except yaml.YAMLError as error:
        raise errors.PolicyError(f"not valid YAML: {error}", where=str(path)) from None
    except RecursionError:
        raise errors.PolicyError("nested too deeply to read", where=str(path)) from None


def _problems(error: pydantic.ValidationError) -> str:
    return "; ".join(f"{api.field_path(e['loc'])}: {e['msg']}" for e in error.errors())


def load_cases(path: pathlib.Path) -> list[Case]:
    """The cases of a cases file; raises ``errors.PolicyError`` naming the bad field."""
    try:
        parsed = _CasesFile.model_validate(_load_yaml(path))
    except pydantic.ValidationError as error:
        raise errors.PolicyError(_problems(error), where=str(path)) from None
    default = _run(parsed.run, _request.RunContext())
    return [Case(c.name, _subject(c, default), c.expect, c.expect_rule) for c in parsed.cases]


def load_subject(path: pathlib.Path) -> CaseSubject:
    """A request file: ``request: {...}``, ``toolCall: {...}`` or ``toolResult: {...}``,
    with an optional ``run``."""
    data = _load_yaml(path)
    run: Any = None
    if isinstance(data, dict) and "run" in data:
        data = dict(data)
        run = data.pop("run")
    try:
        default = _run(_Run.model_validate(run) if run is not None else None, _request.RunContext())
        return _subject(_Subject.model_validate(data), default)
    except pydantic.ValidationError as error:
        raise errors.PolicyError(_problems(error), where=str(path)) from None


def load_policies(path: pathlib.Path) -> _engine.PolicySet:
    """Every RunPolicy and ClusterRunPolicy of a (multi-document) file, compiled."""
    try:
        resources = list(api.load_file(path))
    except errors.ManifestError as error:
        raise errors.PolicyError(error.what, where=error.where, fix=error.fix) from None
    policies: list[_engine.Policy] = []
    for index, resource in enumerate(resources, start=1):
        if not isinstance(resource, api.RunPolicy | api.ClusterRunPolicy):
            raise errors.PolicyError(
                f"document {index} is a {resource.kind}, not a RunPolicy or ClusterRunPolicy",
                where=str(path),
            )
        policies.append(resource)
    if not policies:
        raise errors.PolicyError("no RunPolicy or ClusterRunPolicy in the file", where=str(path))
    return _engine.compile_policies(policies)


def decide_subject(
    policy_set: _engine.PolicySet, subject: CaseSubject, *, workspace: pathlib.Path | None = None
) -> _request.Decision:
    """Decide a request, a tool call or a tool result."""
    if isinstance(subject, ToolResultCase):
        return _results.decide_tool_result(
            policy_set, subject.tool, subject.content, run=subject.run
        )
    if isinstance(subject, ToolCall):
        return _tools.decide_tool_call(
            policy_set,
            subject.name,
            subject.arguments,
            run=subject.run,
            workspace=workspace,
            mcp_server=subject.mcp_server,
        )
    return _engine.decide(policy_set, subject, workspace=workspace)
