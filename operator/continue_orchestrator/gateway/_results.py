"""Tool results on their way to the model: checked against the run's policy, and those it
withholds replaced by a notice before anything goes upstream.

The agent's history keeps the real result (the agent ran the tool), so every request
carries it again; each one is checked again too, the decision found by the result's
call id and digest, so a result is decided (and its decision written to the ledger) once
however often the agent resends it. A withheld result is never stored in clear: the
model's copy holds the notice, the record's copy a placeholder with its digest and size.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from continue_orchestrator import digest, policy
from continue_orchestrator.gateway import _registry

Message = dict[str, Any]
ROLES = ("tool", "function")
"""Roles whose content is a tool's output (``function`` is the API's older spelling)."""
_CACHE_LIMIT = 65536
_THREAD_BYTES = 256 * 1024


@dataclass(frozen=True)
class Checked:
    """The policy's decision on one tool message."""

    call_id: str
    tool: str | None
    effect: str
    rule: str
    reason: str
    policy_digest: str
    digest: str
    """``sha256:`` of the content (its UTF-8 when a string, else its JSON)."""
    size: int
    """Bytes the digest was computed over."""

    @property
    def withheld(self) -> bool:
        return self.effect != "Allow"

    def notice(self) -> str:
        """What the model is given in the result's place."""
        return (
            f"[gateway: the result of this {self.tool or 'tool'} call ({self.size} bytes) was "
            f"withheld by policy (rule {self.rule}: {self.reason}). Its content did not reach "
            "you; do not try to obtain it another way. Continue without it, or say why it "
            "is needed.]"
        )

    def placeholder(self) -> str:
        """What the record stores in the result's place."""
        return f"[withheld by policy rule {self.rule}: {self.digest}, {self.size} bytes]"

    def content(self) -> dict[str, Any]:
        """What the record and the ledger keep of a withheld result: digest and size."""
        return {"contentDigest": self.digest, "contentBytes": self.size}

    def facts(self) -> dict[str, Any]:
        return {"rule": self.rule, "reason": self.reason, **self.content()}

    def decision_payload(self) -> dict[str, Any]:
        """The ``policy.decision`` ledger payload."""
        payload: dict[str, Any] = {
            "action": "tool.result",
            "toolCallId": self.call_id,
            "tool": self.tool,
            "effect": self.effect,
            "rule": self.rule,
            "reason": self.reason,
            "policyDigest": self.policy_digest,
        }
        if self.withheld:
            payload.update(self.content())
        return payload


@dataclass
class Results:
    """One request's messages after the check."""

    upstream: list[Message]
    """The agent's messages, each withheld result's content replaced by its notice."""
    stored: list[Message] | None = None
    """The same with placeholders instead of notices: what the record keeps. None when
    nothing was withheld (the agent's request is stored as sent)."""
    checked: dict[int, Checked] = field(default_factory=dict)
    """Decisions by message index."""
    new: list[Checked] = field(default_factory=list)
    """Decisions this request made (the others were made for an earlier request)."""


def content_bytes(content: Any) -> bytes:
    """The bytes a result's digest and size are of."""
    if isinstance(content, str):
        return content.encode("utf-8", "surrogatepass")
    text = json.dumps(content, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return text.encode("utf-8", "surrogatepass")


def checks_results(registration: _registry.RunRegistration) -> bool:
    """Whether the run's policy checks tool results at all."""
    return bool(registration.policy_set.tool_results)


class Checker:
    """The tool-result decisions of one run, by (call id, content digest)."""

    def __init__(self) -> None:
        self._decided: dict[tuple[str, str], Checked] = {}

    async def check(
        self,
        registration: _registry.RunRegistration,
        delivered: Mapping[str, str],
        messages: Sequence[Message],
    ) -> Results:
        """Decide every tool message of ``messages``; ``delivered`` maps the call ids the
        gateway handed the agent to their tools (any other call's tool is unknown)."""
        results = Results(upstream=list(messages))
        if not checks_results(registration):
            return results
        todo: list[tuple[int, str, str | None, Any, str, int]] = []
        for index, message in enumerate(messages):
            if not isinstance(message, dict) or message.get("role") not in ROLES:
                continue
            call = message.get("tool_call_id")
            call_id = call if isinstance(call, str) else ""
            content = message.get("content")
            data = content_bytes(content)
            content_digest = digest.text(data)
            found = self._decided.get((call_id, content_digest))
            if found is not None:
                results.checked[index] = found
            else:
                todo.append(
                    (index, call_id, delivered.get(call_id), content, content_digest, len(data))
                )
        if todo:
            if sum(item[5] for item in todo) > _THREAD_BYTES:
                decided = await asyncio.to_thread(_decide_all, registration, todo)
            else:
                decided = _decide_all(registration, todo)
            for (index, *_), checked in zip(todo, decided, strict=True):
                results.checked[index] = checked
                results.new.append(checked)
                if len(self._decided) >= _CACHE_LIMIT:
                    self._decided.pop(next(iter(self._decided)))
                self._decided[(checked.call_id, checked.digest)] = checked
        withheld = {i: c for i, c in results.checked.items() if c.withheld}
        if withheld:
            results.stored = list(messages)
            for index, checked in withheld.items():
                results.upstream[index] = {**messages[index], "content": checked.notice()}
                results.stored[index] = {**messages[index], "content": checked.placeholder()}
        return results


def _decide_all(
    registration: _registry.RunRegistration,
    todo: Sequence[tuple[int, str, str | None, Any, str, int]],
) -> list[Checked]:
    run = policy.RunContext(
        namespace=registration.namespace,
        name=registration.name,
        uid=registration.uid,
        workspace_root=registration.workspace or "/workspace",
    )
    decided = []
    for _, call_id, tool, content, content_digest, size in todo:
        try:
            decision = policy.decide_tool_result(registration.policy_set, tool, content, run=run)
            effect, rule = str(decision.effect), str(decision.rule or "")
            reason, policy_digest = decision.reason, decision.policy_digest
        except Exception as error:  # fail closed: a broken policy withholds
            effect, rule = "Deny", "gateway.policy-error"
            reason, policy_digest = f"the policy failed: {error}", ""
        decided.append(
            Checked(call_id, tool, effect, rule, reason, policy_digest, content_digest, size)
        )
    return decided
