"""The agents' endpoints: chat completions, and the runner's report of the run's outcome.

``POST /runs/RUN/v1/chat/completions`` authenticates the run token, refuses a model the
run was not registered with or whose host its policy does not let the gateway reach,
checks the tool results the request carries (``_results``) and records them, then hands
the request to an ``_exchange.Exchange``. ``POST /runs/RUN/outcome`` records the runner's
report once everything before it is written.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from aiohttp import web

from continue_orchestrator.gateway import (
    _exchange,
    _gate,
    _http,
    _metrics,
    _recorder,
    _results,
    _runs,
)

Message = dict[str, Any]


def _unauthenticated() -> web.Response:
    return _http.error(401, "invalid or expired run token", "authentication_error")


async def _read_json(request: web.Request, what: str) -> tuple[bytes, Any] | web.Response:
    """The body's bytes and its JSON, or the 400 saying ``what`` is not JSON."""
    raw = await request.read()
    try:
        return raw, json.loads(raw)
    except (ValueError, RecursionError):  # RecursionError: nested too deep to parse
        return _http.error(400, f"{what} is not JSON")


class ModelAPI:
    """The handlers agents call; holds the HTTP client the upstream calls share."""

    def __init__(self, runs: _runs.Runs, gate: _gate.Gate) -> None:
        self.runs = runs
        self.gate = gate
        self._upstream = _http.Upstream(decompress=True)

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post("/runs/{run}/v1/chat/completions", self.chat)
        app.router.add_post("/runs/{run}/chat/completions", self.chat)
        app.router.add_post("/runs/{run}/outcome", self.outcome)
        self._upstream.attach(app)

    def _authenticate(self, request: web.Request) -> _runs.RunState | None:
        return self.runs.authenticate(
            request.match_info["run"], request.headers.get("Authorization")
        )

    async def chat(self, request: web.Request) -> web.StreamResponse:
        _metrics.IN_FLIGHT.inc()
        try:
            response = await self._serve_chat(request)
        finally:
            _metrics.IN_FLIGHT.dec()
        _metrics.MODEL_CALLS.labels(
            "true" if response.content_type == "text/event-stream" else "false",
            str(response.status),
        ).inc()
        return response

    async def _serve_chat(self, request: web.Request) -> web.StreamResponse:
        state = self._authenticate(request)
        if state is None:
            _metrics.REFUSED.labels("authentication").inc()
            return _unauthenticated()
        read = await _read_json(request, "the request body")
        if isinstance(read, web.Response):
            return read
        raw, body = read
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
            return _http.error(400, "the request needs a `messages` list")
        registration = state.registration
        model = body.get("model")
        upstream = registration.models.get(model) if isinstance(model, str) else None
        if upstream is None:
            return _http.error(
                400,
                f"model {model!r} is not registered for run {registration.uid}; "
                f"known: {sorted(registration.models)}",
            )
        if not registration.egress_allowed(upstream):
            _metrics.REFUSED.labels("egress").inc()
            await state.recorder.ledger_entries(
                [
                    (
                        "policy.decision",
                        _recorder.ACTOR,
                        {
                            "action": "network.egress",
                            "host": upstream.host,
                            "port": upstream.port,
                            "effect": "Deny",
                            "reason": "host not in the run's allowed egress",
                        },
                    )
                ]
            )
            return _http.error(
                403,
                f"the run's policy does not allow egress to {upstream.host}:{upstream.port}",
                "permission_error",
            )
        messages: list[Message] = body["messages"]
        # Transcript blobs are written behind the response; bound how far they may lag.
        await state.recorder.backpressure()
        results = await state.results.check(registration, state.delivered, messages)
        await _record_tool_results(state, messages, results)
        exchange = _exchange.Exchange(
            self.gate,
            self._upstream.session,
            _exchange.AgentRequest(request, state, body, raw, upstream),
            results,
        )
        if body.get("stream"):
            return await exchange.stream()
        return await exchange.complete()

    async def outcome(self, request: web.Request) -> web.Response:
        state = self._authenticate(request)
        if state is None:
            return _unauthenticated()
        read = await _read_json(request, "the outcome")
        if isinstance(read, web.Response):
            return read
        raw, outcome = read
        if not isinstance(outcome, dict):
            return _http.error(400, "the outcome must be a JSON object")
        await state.recorder.drain()
        exchange = await state.recorder.exchange(
            "run.outcome",
            blobs={"outcome": raw},
            facts={
                "exitCode": outcome.get("exitCode"),
                "status": outcome.get("status"),
                "workspaceTreeDigest": outcome.get("workspaceTreeDigest"),
                "cliVersion": outcome.get("cliVersion"),
            },
            entries=[
                (
                    "run.finished",
                    "runner",
                    {
                        "source": "runner",
                        "status": outcome.get("status"),
                        "outcome": {"blob": "outcome"},
                    },
                )
            ],
        )
        state.outcome = outcome
        return web.json_response({"accepted": True, "policyStop": None, "step": exchange.step})


async def _record_tool_results(
    state: _runs.RunState, messages: Sequence[Message], results: _results.Results
) -> None:
    """Record each tool result the first time it comes, with the decision on it; a
    decision on a result already recorded (resent, or changed) goes to the ledger alone."""
    decided = {id(checked) for checked in results.new}
    loose: list[_recorder.Entry] = []
    for new in results.new:
        _metrics.TOOL_RESULTS.labels(new.effect).inc()
    for index, message in enumerate(messages):
        checked = results.checked.get(index)
        decision: list[_recorder.Entry] = []
        if checked is not None and id(checked) in decided:
            decided.discard(id(checked))
            decision = [("policy.decision", _recorder.ACTOR, checked.decision_payload())]
        call = message.get("tool_call_id")
        if message.get("role") != "tool" or not isinstance(call, str):
            loose += decision
            continue
        if call in state.results_seen:
            loose += decision
            continue
        state.results_seen.add(call)
        tool = state.delivered.get(call)
        facts: dict[str, Any] = {
            "toolCallId": call,
            "tool": tool,
            "deliveredByGateway": tool is not None,
        }
        if checked is not None and checked.withheld:
            facts["withheld"] = checked.facts()
        stored = results.stored[index] if results.stored is not None else message
        await state.recorder.exchange(
            "tool.result",
            blobs={"result": json.dumps(stored, sort_keys=True).encode()},
            facts=facts,
            entries=[
                *decision,
                ("tool.result", _recorder.ACTOR, {**facts, "result": {"blob": "result"}}),
            ],
        )
    await state.recorder.ledger_entries(loose)
