"""The streaming relay: an upstream's server-sent events, passed to the agent as they come.

Text is written to the agent the moment it arrives. A tool call is assembled from its
deltas and held: the gateway decides it once it is complete and only then writes the
calls it allows (or a note saying they were denied), the finishing chunk and ``[DONE]``.
Every byte written to the agent is kept, so the record holds the answer exactly as the
agent saw it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import aiohttp
from aiohttp import web

Message = dict[str, Any]
Send = Callable[[bytes], Awaitable[None]]
DONE = b"data: [DONE]\n\n"


def chunk(template: Mapping[str, Any], delta: Mapping[str, Any], finish: str | None) -> bytes:
    """One ``chat.completion.chunk`` event with ``template``'s id, created and model."""
    payload = {
        "id": template.get("id"),
        "object": "chat.completion.chunk",
        "created": template.get("created"),
        "model": template.get("model"),
        "choices": [{"index": 0, "delta": dict(delta), "finish_reason": finish}],
    }
    return b"data: " + json.dumps(payload).encode() + b"\n\n"


def template(found: Mapping[str, Any] | None, model: Any) -> Mapping[str, Any]:
    """The upstream's chunk identity, or the gateway's own when none came."""
    if found is not None:
        return found
    return {"id": "chatcmpl-gateway", "created": int(time.time()), "model": model}


class Relay:
    """Reads one upstream SSE stream: text goes on at once, tool calls are assembled."""

    def __init__(self, send: Send) -> None:
        self.send = send
        self.raw = bytearray()
        self.text = ""
        self.calls: dict[int, dict[str, Any]] = {}
        self.finish: str | None = None
        self.template: dict[str, Any] | None = None
        self.tail: list[bytes] = []

    async def run(self, response: aiohttp.ClientResponse) -> None:
        async for line in response.content:
            self.raw.extend(line)
            if not line.startswith(b"data:"):
                continue
            data = line[5:].strip()
            if data == b"[DONE]":
                continue
            try:
                event = json.loads(data)
            except ValueError:
                continue
            await self._chunk(event, line)

    async def _chunk(self, event: dict[str, Any], line: bytes) -> None:
        if self.template is None:
            self.template = {key: event.get(key) for key in ("id", "created", "model")}
        choices = event.get("choices") or []
        if not choices:
            self.tail.append(b"data: " + json.dumps(event).encode() + b"\n\n")
            return
        choice = choices[0]
        delta = choice.get("delta") or {}
        finish = choice.get("finish_reason")
        calls = delta.get("tool_calls")
        if not calls and not finish:
            self.text += delta.get("content") or ""
            await self.send(line.rstrip(b"\r\n") + b"\n\n")
            return
        for part in calls or []:
            slot = self.calls.setdefault(
                int(part.get("index", 0)),
                {"id": "", "type": "function", "function": {"name": "", "arguments": ""}},
            )
            if part.get("id"):
                slot["id"] = part["id"]
            function = part.get("function") or {}
            slot["function"]["name"] += function.get("name") or ""
            slot["function"]["arguments"] += function.get("arguments") or ""
        rest = {key: value for key, value in delta.items() if key != "tool_calls"}
        if rest.get("content"):
            self.text += rest["content"]
            await self.send(chunk(event, rest, None))
        if finish:
            self.finish = finish

    def message(self) -> Message:
        """The assistant message the stream carried, tool calls complete."""
        message: Message = {"role": "assistant", "content": self.text or None}
        if self.calls:
            message["tool_calls"] = [self.calls[index] for index in sorted(self.calls)]
        return message


class AgentStream:
    """The agent's side of a streamed answer: opened on the first byte written, and every
    byte written kept for the record."""

    def __init__(self, request: web.Request) -> None:
        self.request = request
        self.response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        self.sent = bytearray()

    @property
    def prepared(self) -> bool:
        return self.response.prepared

    async def send(self, data: bytes) -> None:
        if not self.response.prepared:
            await self.response.prepare(self.request)
        self.sent.extend(data)
        await self.response.write(data)

    async def keepalive(self) -> None:
        """A comment line: the agent's connection stays open while a person decides."""
        await self.send(b": waiting for an approval\n\n")

    async def end_with_text(self, identity: Mapping[str, Any], text: str) -> None:
        """End a stream already begun with ``text`` (what went wrong) and a stop."""
        await self.send(chunk(identity, {"content": text}, None))
        await self.send(chunk(identity, {}, "stop"))
        await self.send(DONE)

    async def end(
        self,
        identity: Mapping[str, Any],
        calls: Sequence[Message],
        note: str,
        finish: str,
        tail: Sequence[bytes],
    ) -> None:
        """Write the allowed ``calls``, then ``note`` if any, the finish, the upstream's
        trailing events (usage) and ``[DONE]``; close the stream."""
        for index, call in enumerate(calls):
            function = call.get("function") or {}
            delta = {
                "tool_calls": [
                    {
                        "index": index,
                        "id": call.get("id"),
                        "type": "function",
                        "function": {
                            "name": function.get("name"),
                            "arguments": function.get("arguments"),
                        },
                    }
                ]
            }
            await self.send(chunk(identity, delta, None))
        if note:
            await self.send(chunk(identity, {"content": note}, None))
        await self.send(chunk(identity, {}, finish))
        for event in tail:
            await self.send(event)
        await self.send(DONE)
        await self.response.write_eof()
