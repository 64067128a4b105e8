"""One agent request and everything it causes upstream, until the agent has its answer.

The request goes upstream with the conversation rewritten where the gateway answered the
model itself (``_conversation``) and with withheld tool results replaced (``_results``),
and with the run's real key. Every tool call of the answer is decided (``_gate``); when
all of an answer's calls are denied, the model is told so and asked again, up to the
run's ``max_denied_rounds``, and the agent is handed only what was allowed. The exchange
is recorded (as the agent saw it and as it went upstream, round by round) behind the
response. ``complete`` answers a plain request, ``stream`` a streamed one (``_relay``).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import web

from continue_orchestrator import errors, records
from continue_orchestrator.gateway import (
    _conversation,
    _gate,
    _http,
    _recorder,
    _registry,
    _relay,
    _results,
    _runs,
)

Message = dict[str, Any]


@dataclass(frozen=True)
class AgentRequest:
    """A chat request as the gateway read it: the HTTP request, the run it authenticated
    as, its body and the upstream it names."""

    http: web.Request
    state: _runs.RunState
    body: dict[str, Any]
    raw: bytes
    upstream: _registry.Upstream


class Exchange:
    """One agent request; ``complete`` or ``stream`` serves it."""

    def __init__(
        self,
        gate: _gate.Gate,
        client: aiohttp.ClientSession,
        request: AgentRequest,
        results: _results.Results,
    ) -> None:
        self.gate = gate
        self.client = client
        self.request = request
        self.state = request.state
        # The history as checked: splices made on it match the next request's checked form.
        self.messages: list[Message] = results.upstream
        # Splices are matched on the checked history too, so they see what the model saw
        # whether or not a result in it was withheld.
        self.upstream_messages, self.spliced = self.state.conversation.upstream_messages(
            results.upstream
        )
        # What the record keeps of the agent's request: withheld results never in clear.
        self.stored_body = (
            request.body if results.stored is None else {**request.body, "messages": results.stored}
        )
        self.stored_raw = (
            request.raw if results.stored is None else json.dumps(self.stored_body).encode()
        )
        self.rounds: list[tuple[bytes, bytes, int]] = []  # upstream request, response, status
        self.hidden: list[Message] = []
        self.decisions: list[dict[str, Any]] = []

    async def _open(self) -> tuple[aiohttp.ClientResponse | None, bytes, web.Response | None]:
        """POST the next round upstream: the response, the bytes sent, or the refusal."""
        upstream = self.request.upstream
        sent = json.dumps(
            {**self.request.body, "messages": self.upstream_messages + self.hidden}
        ).encode()
        try:
            response = await self.client.post(
                upstream.api_base.rstrip("/") + "/chat/completions",
                data=sent,
                headers={
                    "Authorization": f"Bearer {upstream.api_key}",
                    "Content-Type": "application/json",
                },
            )
        except aiohttp.ClientError as error:
            failure = _http.error(
                502, f"upstream {upstream.host} failed: {error}", "upstream_error"
            )
            return None, b"", failure
        return response, sent, None

    def _settled(self, verdict: _gate.Verdict, full: Message) -> bool:
        """Whether ``verdict`` ends the turn; if not, the model is told of the denials and
        asked again. After ``max_denied_rounds`` denied rounds the turn ends regardless."""
        last_round = len(self.rounds) > self.state.registration.max_denied_rounds
        if verdict.allowed or not verdict.denied or last_round:
            return True
        self.decisions.extend(verdict.decisions)
        self.hidden += [full, *verdict.denial_messages()]
        return False

    def _remember(self, verdict: _gate.Verdict, full: Message, delivered: Message) -> None:
        self.decisions.extend(verdict.decisions)
        if self.hidden or verdict.denied:
            upstream_view = [*self.hidden, full, *verdict.denial_messages()]
            self.state.conversation.add(
                _conversation.Splice.at(self.messages, delivered, upstream_view)
            )

    async def _record(self, agent_response: bytes, status: int) -> None:
        registration = self.state.registration
        blobs: dict[str, bytes] = {"agentRequest": self.stored_raw, "agentResponse": agent_response}
        for number, (sent, received, _) in enumerate(self.rounds):
            blobs[f"upstreamRequest{number}"] = sent
            blobs[f"upstreamResponse{number}"] = received
        replacements = {registration.workspace: "<WORKSPACE>"} if registration.workspace else {}
        body = self.stored_body

        def request_hash() -> str:  # milliseconds for a long request: off the response path
            try:
                return records.normalised_request_hash(body, replacements=replacements)
            except errors.OrchestratorError:
                # Not canonical JSON (a lone surrogate, say): hash the bytes as sent rather
                # than let one odd request keep the exchange out of the record.
                facts["requestHashOf"] = "raw agent request"
                return records.digest_of(self.stored_raw)

        facts = {
            "model": self.request.body.get("model"),
            "provider": self.request.upstream.provider,
            "stream": bool(self.request.body.get("stream")),
            "status": status,
            "upstreamRounds": len(self.rounds),
            "splicesApplied": self.spliced,
            "decisions": self.decisions,
        }
        entries: list[_recorder.Entry] = [
            (
                "model.request",
                _recorder.ACTOR,
                {
                    "requestHash": {"exchange": "requestHash"},
                    "agentRequest": {"blob": "agentRequest"},
                    "upstreamRequest": {"blob": "upstreamRequest0"},
                },
            ),
            (
                "model.response",
                _recorder.ACTOR,
                {
                    "status": status,
                    "agentResponse": {"blob": "agentResponse"},
                    "upstreamResponse": {"blob": f"upstreamResponse{len(self.rounds) - 1}"},
                    "upstreamRounds": len(self.rounds),
                },
            ),
        ]
        recorder = self.state.recorder
        recorder.later(
            recorder.exchange(
                "model", blobs=blobs, request_hash=request_hash, facts=facts, entries=entries
            )
        )

    async def complete(self) -> web.StreamResponse:
        """Serve a request that did not ask to stream."""
        text = ""
        while True:
            response, sent, failure = await self._open()
            if failure is not None or response is None:
                return failure or _http.error(502, "upstream failed")
            async with response:
                received = await response.read()
            self.rounds.append((sent, received, response.status))
            if response.status != 200:
                await self._record(received, response.status)
                return web.Response(
                    status=response.status, body=received, content_type="application/json"
                )
            try:
                completion = json.loads(received)
                full: Message = dict(completion["choices"][0]["message"])
            except (ValueError, KeyError, IndexError, TypeError, RecursionError):
                await self._record(received, 502)
                return _http.error(
                    502, "the upstream answer is not a chat completion", "upstream_error"
                )
            if not full.get("tool_calls") and not self.hidden:
                # Nothing to decide or rewrite: hand over the provider's bytes as they are.
                await self._record(received, 200)
                return web.Response(body=received, content_type="application/json")
            text += _text(full)
            verdict = await self.gate.gate(self.state, full)
            if self._settled(verdict, full):
                break
        delivered: Message = {"role": "assistant", "content": text or None}
        if verdict.allowed:
            delivered["tool_calls"] = verdict.allowed
        elif verdict.denied:
            delivered["content"] = text + _stopped(len(self.rounds))
        self._remember(verdict, full, delivered)
        answer = copy.deepcopy(completion)
        choice = answer["choices"][0]
        choice["message"] = delivered
        choice["finish_reason"] = (
            "tool_calls"
            if verdict.allowed
            else (completion["choices"][0].get("finish_reason") or "stop")
        )
        if not verdict.allowed and choice["finish_reason"] == "tool_calls":
            choice["finish_reason"] = "stop"
        data = json.dumps(answer).encode()
        await self._record(data, 200)
        return web.Response(body=data, content_type="application/json")

    async def stream(self) -> web.StreamResponse:
        """Serve a streamed request: text as it arrives, tool calls once decided."""
        agent = _relay.AgentStream(self.request.http)
        model = self.request.body.get("model")
        while True:
            response, sent, failure = await self._open()
            if failure is not None or response is None:
                if agent.prepared:
                    await agent.end_with_text(
                        _relay.template(None, model), "\n[gateway: upstream failed]"
                    )
                    await self._record(bytes(agent.sent), 502)
                    return agent.response
                return failure or _http.error(502, "upstream failed")
            async with response:
                if response.status != 200:
                    received = await response.read()
                    self.rounds.append((sent, received, response.status))
                    await self._record(received, response.status)
                    if agent.prepared:
                        await agent.end_with_text(
                            _relay.template(None, model), "\n[gateway: upstream error]"
                        )
                        return agent.response
                    return web.Response(
                        status=response.status, body=received, content_type=response.content_type
                    )
                relay = _relay.Relay(agent.send)
                await relay.run(response)
            self.rounds.append((sent, bytes(relay.raw), 200))
            full = relay.message()
            verdict = await self.gate.gate(self.state, full, agent.keepalive)
            if self._settled(verdict, full):
                break
        delivered: Message = {"role": "assistant", "content": relay.text or None}
        note = ""
        if verdict.allowed:
            delivered["tool_calls"] = verdict.allowed
            finish = "tool_calls"
        elif verdict.denied:
            note, finish = _stopped(len(self.rounds)), "stop"
        else:
            finish = relay.finish or "stop"
        self._remember(verdict, full, delivered)
        identity = _relay.template(relay.template, model)
        await agent.end(identity, verdict.allowed, note, finish, relay.tail)
        await self._record(bytes(agent.sent), 200)
        return agent.response


def _text(message: Mapping[str, Any]) -> str:
    content = message.get("content")
    return content if isinstance(content, str) else ""


def _stopped(rounds: int) -> str:
    return (
        f"\n[gateway: the model's tool calls were denied by policy {rounds} times in a row; "
        "stopping this turn]"
    )
