"""Deciding the tool calls of a model's answer before the agent sees any of them.

Each call is decided by the run's policy (``policy_decider``, or the decider the gateway
was given); a call the policy holds for approval waits for a person through the
``ApprovalBroker`` until the run's approval timeout, which denies. A call whose
arguments are not a JSON object, or whose decision raised, is denied: the gate fails
closed. Every decision, and every call handed over, is in the ledger before the answer
that carries it leaves the gateway.
"""

from __future__ import annotations

import asyncio
import json
import pathlib
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from continue_orchestrator import policy
from continue_orchestrator.gateway import _approvals, _metrics, _recorder, _registry, _runs

Message = dict[str, Any]
Keepalive = Callable[[], Awaitable[None]]
_KEEPALIVE_SECONDS = 10.0


class Decision(Protocol):
    """What the gateway reads of a policy decision."""

    @property
    def effect(self) -> Any: ...

    @property
    def rule(self) -> Any: ...

    @property
    def reason(self) -> Any: ...


ToolDecider = Callable[[_registry.RunRegistration, str, Mapping[str, Any]], Decision]


@dataclass(frozen=True)
class _Denial:
    effect: str
    rule: str
    reason: str
    policy_digest: str = ""


_MISSHAPEN = _Denial(
    "Deny", "gateway.call", "the tool call is not of the API's shape (a function with a name)"
)


def _calls(message: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The tool calls of an answer; anything not of the API's shape (``tool_calls`` not a
    list, a call that is not an object) is kept, as a call with no function, to be denied."""
    found = message.get("tool_calls") or []
    return [
        call if isinstance(call, dict) else {"function": call}
        for call in (found if isinstance(found, list) else [found])
    ]


def policy_decider(
    registration: _registry.RunRegistration, tool: str, arguments: Mapping[str, Any]
) -> Decision:
    """Decide with ``policy.decide_tool_call`` and the run's ``policy.PolicySet``."""
    workspace = registration.workspace
    run = policy.RunContext(
        namespace=registration.namespace,
        name=registration.name,
        uid=registration.uid,
        workspace_root=workspace or "/workspace",
    )
    return policy.decide_tool_call(
        registration.policy_set,
        tool,
        arguments,
        run=run,
        # Symlinks are resolved only in a tree the gateway itself can see (local mode).
        workspace=pathlib.Path(workspace) if workspace and registration.workspace_visible else None,
    )


@dataclass
class Verdict:
    """The tool calls of one answer, sorted: handed over, or denied with the reason told."""

    allowed: list[Message] = field(default_factory=list)
    denied: list[tuple[Message, str]] = field(default_factory=list)
    decisions: list[dict[str, Any]] = field(default_factory=list)

    def denial_messages(self) -> list[Message]:
        """The ``role: tool`` answers the gateway gives the model for the denied calls."""
        return [
            {"role": "tool", "tool_call_id": call.get("id"), "content": text}
            for call, text in self.denied
        ]


def denial_text(tool: str, rule: str, reason: str) -> str:
    return (
        f"Denied by policy: the {tool} call was not run (rule {rule or 'unnamed'}: "
        f"{reason or 'no reason given'}). Do not retry it; do the task another way "
        "or say why it is needed."
    )


class Gate:
    """Decides tool calls with ``decide``; asks ``broker`` for the ones held for approval."""

    def __init__(self, decide: ToolDecider, broker: _approvals.ApprovalBroker) -> None:
        self.decide = decide
        self.broker = broker

    async def gate(
        self, state: _runs.RunState, message: Mapping[str, Any], keepalive: Keepalive | None = None
    ) -> Verdict:
        """Decide every tool call of ``message``; ledger entries are written before return.

        While a call waits for approval, ``keepalive`` is called every few seconds (a
        streamed answer sends a comment so the agent's connection stays open)."""
        verdict = Verdict()
        entries: list[_recorder.Entry] = []
        registration = state.registration
        for call in _calls(message):
            function = call.get("function") or {}
            # A call without a name as text cannot be the call the policy decides.
            shaped = isinstance(function, dict) and isinstance(function.get("name"), str)
            shaped = shaped and bool(function["name"])
            function = function if shaped else {}
            tool = str(function.get("name") or "")
            call_id = str(call.get("id") or "")
            decision, arguments = (
                self._decide(registration, tool, function.get("arguments"))
                if shaped
                else (_MISSHAPEN, call.get("function"))
            )
            effect = str(decision.effect)
            rule, reason = str(decision.rule or ""), str(decision.reason or "")
            record: dict[str, Any] = {
                "callId": call_id,
                "tool": tool,
                "arguments": arguments,
                "effect": effect,
                "rule": rule,
                "reason": reason,
                "policyDigest": str(getattr(decision, "policy_digest", "") or ""),
            }
            entries.append(("policy.decision", _recorder.ACTOR, dict(record)))
            if effect == "RequireApproval":
                await state.recorder.ledger_entries(entries)
                entries = []
                effect, reason, approval_entries = await self._approve(
                    state, call_id, tool, arguments, decision, keepalive
                )
                record["approval"] = approval_entries[-1][2]
                entries.extend(approval_entries)
            verdict.decisions.append(record)
            _metrics.DECISIONS.labels(effect).inc()
            if effect == "Allow":
                verdict.allowed.append(dict(call))
                state.delivered[call_id] = tool
                entries.append(
                    (
                        "tool.call",
                        _recorder.ACTOR,
                        {"callId": call_id, "tool": tool, "arguments": arguments},
                    )
                )
            else:
                verdict.denied.append((dict(call), denial_text(tool, rule, reason)))
        await state.recorder.ledger_entries(entries)
        return verdict

    def _decide(
        self, registration: _registry.RunRegistration, tool: str, raw: Any
    ) -> tuple[Decision, Any]:
        if raw is not None and not isinstance(raw, str):
            # The API sends arguments as JSON text. Deciding anything else as ``{}`` would
            # let the agent run a call with arguments no policy saw.
            return _Denial("Deny", "gateway.arguments", "the arguments are not JSON text"), raw
        try:
            arguments = json.loads(raw) if raw and raw.strip() else {}
        except (ValueError, RecursionError):  # RecursionError: nested too deep to parse
            return _Denial("Deny", "gateway.arguments", "the arguments are not valid JSON"), raw
        if not isinstance(arguments, dict):
            return _Denial("Deny", "gateway.arguments", "the arguments are not an object"), raw
        try:
            return self.decide(registration, tool, arguments), arguments
        except Exception as error:  # fail closed: a broken policy denies
            return _Denial("Deny", "gateway.policy-error", f"the policy failed: {error}"), arguments

    async def _approve(
        self,
        state: _runs.RunState,
        call_id: str,
        tool: str,
        arguments: Any,
        decision: Decision,
        keepalive: Keepalive | None,
    ) -> tuple[str, str, list[_recorder.Entry]]:
        registration = state.registration
        approval = _approvals.Approval(
            id=call_id,
            run=registration.uid,
            tool=tool,
            arguments=arguments if isinstance(arguments, dict) else {"raw": arguments},
            rule=str(decision.rule or ""),
            reason=str(decision.reason or ""),
            approvers=tuple(getattr(decision, "approvers", ()) or ()),
            timeout=registration.approval_timeout,
        )
        await state.recorder.ledger_entries(
            [("approval.requested", _recorder.ACTOR, approval.to_json())]
        )
        waiting = asyncio.ensure_future(self.broker.request(registration.uid, approval))
        deadline = time.monotonic() + registration.approval_timeout
        try:
            while not waiting.done():
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                await asyncio.wait({waiting}, timeout=min(left, _KEEPALIVE_SECONDS))
                if not waiting.done() and keepalive is not None:
                    await keepalive()
        finally:
            if not waiting.done():
                waiting.cancel()
        if waiting.done() and not waiting.cancelled() and waiting.exception() is None:
            outcome = waiting.result()
            payload: dict[str, Any] = {
                "callId": call_id,
                "tool": tool,
                "by": outcome.decided_by,
                "reason": outcome.reason,
            }
            if outcome.groups is not None:
                payload["groups"] = list(outcome.groups)
            if outcome.approved:
                return "Allow", approval.reason, [("approval.granted", outcome.decided_by, payload)]
            why = f"a person ({outcome.decided_by}) denied it" + (
                f": {outcome.reason}" if outcome.reason else ""
            )
            return "Deny", why, [("approval.denied", outcome.decided_by, payload)]
        why = f"no approval within {registration.approval_timeout:g} s"
        payload = {"callId": call_id, "tool": tool, "by": "timeout", "reason": why}
        return "Deny", why, [("approval.denied", _recorder.ACTOR, payload)]
