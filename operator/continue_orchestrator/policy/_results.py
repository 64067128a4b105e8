"""Tool results against ``spec.toolResults``: which ones the model must not be given.

A tool result is text the agent's tools produced (a file, a command's output, a web
page), so it can hold what no model should see: a private key a ``cat`` printed, a cloud
credential in a config file. ``decide_tool_result`` says whether a result is withheld
and by which rule; the gateway then hands the model a notice in its place. Patterns are
RE2 (CEL's ``matches``): linear in the result's length whatever the pattern, so neither
a hostile result nor a careless pattern can make the check backtrack.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

from continue_orchestrator import api, errors
from continue_orchestrator.policy import _cel, _glob, _prefilter, _request

if TYPE_CHECKING:
    from continue_orchestrator.policy import _engine

RESULT_KEYS = frozenset({"tool", "content", "bytes", "run"})
"""Every key of the CEL variable ``result``."""
MAX_BYTES_RULE = "maxBytes"
"""The rule name a decision cites when ``spec.toolResults.maxBytes`` withheld a result."""


def result_text(content: Any) -> str:
    """The text of a tool message's ``content``, as patterns and conditions see it.

    A string is itself. A list of content parts (as the OpenAI API allows) is each part's
    ``text`` and, for anything else in a part (an image's data URL, an unknown field),
    that part's JSON, one per line: whatever reaches the provider is checked. Any other
    value is its JSON.
    """
    if isinstance(content, str):
        return content
    if content is None:
        return ""
    if isinstance(content, list):
        pieces: list[str] = []
        for part in content:
            if isinstance(part, str):
                pieces.append(part)
                continue
            if isinstance(part, dict) and isinstance(part.get("text"), str):
                pieces.append(part["text"])
                rest = {k: v for k, v in part.items() if k not in ("type", "text")}
                if rest:
                    pieces.append(_json(rest))
                continue
            pieces.append(_json(part))
        return "\n".join(pieces)
    return _json(content)


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=True, default=repr)


def utf8_size(text: str) -> int:
    """Bytes of ``text`` as UTF-8 (a lone surrogate counts as the 3 bytes JSON carries)."""
    if text.isascii():
        return len(text)
    return len(text.encode("utf-8", "surrogatepass"))


class _Rule:
    """One compiled ``spec.toolResults.withhold`` entry."""

    __slots__ = (
        "filtered", "has_patterns", "name", "qualified", "reason", "tools", "unfiltered", "when"
    )

    def __init__(self, policy_name: str, rule: api.ToolResultRule, where: str) -> None:
        self.name = rule.name
        self.qualified = f"{policy_name}/{rule.name}"
        self.reason = rule.reason
        self.tools = _glob.compile_checked(rule.tools, segments=True, field="tools", where=where)
        for position, pattern in enumerate(rule.patterns):
            _check_pattern(pattern, where=f"{where}.patterns[{position}]")
        # Patterns with a literal prefilter are asked one by one, and only when the text
        # holds one of their literals; the rest are one alternation, asked every time.
        self.filtered: tuple[tuple[_prefilter.Prefilter, Any], ...] = ()
        self.unfiltered: Any = None
        self.has_patterns = bool(rule.patterns)
        rest: list[str] = []
        for pattern in rule.patterns:
            found = _prefilter.prefilter(pattern)
            if found is None:
                rest.append(pattern)
                continue
            program = _cel.compile_condition(_matches(pattern), _cel.RESULT_ENV)
            self.filtered += ((found, program),)
        if rest:
            either = "|".join(f"(?:{pattern})" for pattern in rest)
            self.unfiltered = _cel.compile_condition(_matches(either), _cel.RESULT_ENV)
        self.when: Any = None
        if rule.when is not None:
            self.when = _cel.compile_when(rule.when, RESULT_KEYS, where=where, variable="result")

    def applies_to(self, tool: str | None) -> bool:
        return self.tools is None or tool is None or self.tools.fullmatch(tool) is not None

    def patterns_match(self, bound: _Bound) -> bool:
        """Whether any pattern is found in the result (True when the rule sets none);
        raises ``_cel.EvaluationError``."""
        if not self.has_patterns:
            return True
        for found, program in self.filtered:
            if found.may_match(bound.text, bound.folded() if found.fold else "") and (
                _cel.evaluate(program, bound.get())
            ):
                return True
        return self.unfiltered is not None and _cel.evaluate(self.unfiltered, bound.get())


def _matches(pattern: str) -> str:
    # A JSON string is a CEL string literal once no character needs an escape CEL lacks:
    # ensure_ascii=False leaves only \" \\ \n \r \t \b \f and \u00XX, all of them CEL's.
    return f"result.content.matches({json.dumps(pattern, ensure_ascii=False)})"


def _check_pattern(pattern: str, *, where: str) -> None:
    if not pattern:
        raise errors.PolicyError("the pattern is empty; it would match every result", where=where)
    try:
        program = _cel.compile_condition(_matches(pattern), _cel.RESULT_ENV)
        _cel.evaluate(program, _cel.activation({"content": ""}, _cel.RESULT_ENV, "result"))
    except (_cel.CompileError, _cel.EvaluationError) as error:
        raise errors.PolicyError(
            f"{pattern!r} is not an RE2 regular expression: {error}",
            where=where,
            fix="RE2 has no backreferences or lookaround; see "
            "https://github.com/google/re2/wiki/Syntax",
        ) from None


class _Named(Protocol):
    @property
    def name(self) -> str: ...


def rule_places(rules: Sequence[_Named], field: str, label: str) -> list[str]:
    """Where each of a policy's ``rules`` (its ``field``) stands, for messages; raises
    ``errors.PolicyError`` at the second rule of a name, since a decision cites a rule by
    name. ``policy.compile`` checks ``spec.rules`` and ``spec.toolResults.withhold``."""
    seen: set[str] = set()
    places: list[str] = []
    for index, rule in enumerate(rules):
        where = f"{label}: {field}[{index}] ({rule.name})"
        if rule.name in seen:
            raise errors.PolicyError(
                f"rule name {rule.name!r} is used twice", where=where, fix="rename one"
            )
        seen.add(rule.name)
        places.append(where)
    return places


class CompiledResults:
    """One policy's ``spec.toolResults``, compiled."""

    __slots__ = ("label", "max_bytes", "max_bytes_rule", "rules")

    def __init__(self, spec: api.ToolResults, *, policy_name: str, label: str) -> None:
        self.label = label
        self.max_bytes = spec.max_bytes
        self.max_bytes_rule = f"{policy_name}/{MAX_BYTES_RULE}"
        places = rule_places(spec.withhold, "spec.toolResults.withhold", label)
        self.rules = tuple(
            _Rule(policy_name, rule, where)
            for rule, where in zip(spec.withhold, places, strict=True)
        )

    def decide(
        self, result: _request.ToolResult, bound: _Bound
    ) -> tuple[str, str] | None:
        """(rule, reason) of the first rule that withholds ``result``, else None."""
        if self.max_bytes is not None and result.size > self.max_bytes:
            return self.max_bytes_rule, (
                f"the result is {result.size} bytes, over spec.toolResults.maxBytes "
                f"({self.max_bytes}) of {self.label}"
            )
        for rule in self.rules:
            if not rule.applies_to(result.tool):
                continue
            try:
                if rule.patterns_match(bound) and (
                    rule.when is None or _cel.evaluate(rule.when, bound.get())
                ):
                    return rule.qualified, rule.reason or f"rule {rule.qualified} matched"
            except _cel.EvaluationError as error:
                return rule.qualified, (
                    f"rule {rule.qualified}: its condition failed, so the result is "
                    f"withheld: {error}"
                )
        return None


class _Bound:
    """The CEL activation of one decision, built when a condition first needs it; the
    text as CEL holds it (``text``) and case-folded, for the prefilters."""

    __slots__ = ("_activation", "_data", "_folded", "text")

    def __init__(self, data: dict[str, Any]) -> None:
        self.text = data["content"] = _cel.holdable(data["content"])
        self._data = data
        self._activation: Any = None
        self._folded: str | None = None

    def folded(self) -> str:
        if self._folded is None:
            self._folded = _prefilter.fold(self.text)
        return self._folded

    def get(self) -> Any:
        if self._activation is None:
            self._activation = _cel.activation(self._data, _cel.RESULT_ENV, "result")
        return self._activation


def compile_results(
    spec: api.ToolResults | None, *, policy_name: str, label: str
) -> CompiledResults | None:
    """``spec.toolResults`` compiled; raises ``errors.PolicyError`` naming rule and field."""
    if spec is None or (spec.max_bytes is None and not spec.withhold):
        return None
    return CompiledResults(spec, policy_name=policy_name, label=label)


def decide_tool_result(
    policy_set: _engine.PolicySet,
    tool: str | None,
    content: Any,
    *,
    run: _request.RunContext | None = None,
) -> _request.Decision:
    """Whether a tool's result may reach the model: Allow, or Deny (withhold it) citing the
    rule and its reason. ``tool`` is None when the caller cannot vouch for which tool
    produced it; ``content`` is the tool message's ``content`` (a string, a list of
    content parts, anything). Pure: no state, no I/O; cost linear in the result."""
    text = result_text(content)
    result = _request.ToolResult(tool, utf8_size(text), run or _request.RunContext())
    checks: Sequence[tuple[str, CompiledResults]] = policy_set.tool_results
    if checks:
        bound = _Bound(
            {"tool": tool or "", "content": text, "bytes": result.size, "run": result.run.as_cel()}
        )
        for label, compiled in checks:
            withheld = compiled.decide(result, bound)
            if withheld is not None:
                rule, reason = withheld
                return _request.Decision(
                    api.Effect.DENY, rule, reason, policy_set.digest, label, result
                )
    return _request.Decision(
        api.Effect.ALLOW,
        None,
        "no spec.toolResults rule withholds it",
        policy_set.digest,
        "",
        result,
    )
