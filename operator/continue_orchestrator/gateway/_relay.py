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
SPOILED = "\x00"
"""Put before the arguments of a call the stream garbled: no JSON text starts with it."""


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
        self.spoiled: set[int] = set()
        """Calls with a part that could not be read (a name or arguments not text)."""
        self.spoiled_all = False
        """A tool call part with no readable index: every call is spoiled."""

    async def run(self, response: aiohttp.ClientResponse) -> None:
        # Lines are split here rather than by ``async for line in response.content``:
        # aiohttp refuses a line over 128 KiB (LineTooLong), and a provider may send a
        # large tool call's arguments in one event.
        buffer = bytearray()
        scanned = 0
        async for data in response.content.iter_any():
            buffer += data
            start = 0
            while (end := buffer.find(b"\n", max(start, scanned))) >= 0:
                await self._line(bytes(buffer[start : end + 1]))
                start = end + 1
            del buffer[:start]
            scanned = len(buffer)
        if buffer:
            await self._line(bytes(buffer))

    async def _line(self, line: bytes) -> None:
        self.raw.extend(line)
        if not line.startswith(b"data:"):
            return
        data = line[5:].strip()
        if data == b"[DONE]":
            return
        try:
            event = json.loads(data)
        except (ValueError, RecursionError):
            return
        if isinstance(event, dict):
            await self._chunk(event, line)

    async def _chunk(self, event: dict[str, Any], line: bytes) -> None:
        """One event. Whatever is not of the shape the API defines is skipped, except in a
        tool call: a call with a part that cannot be read is spoiled (``_spoil``), so the
        gate denies it rather than decide a call other than the one the model sent."""
        if self.template is None:
            self.template = {key: event.get(key) for key in ("id", "created", "model")}
        choices = event.get("choices") or []
        if not isinstance(choices, list) or not choices:
            self.tail.append(b"data: " + json.dumps(event).encode() + b"\n\n")
            return
        choice = choices[0]
        if not isinstance(choice, dict):
            return
        delta = choice.get("delta") or {}
        finish = choice.get("finish_reason")
        if not isinstance(delta, dict):
            delta = {}
        calls = delta.get("tool_calls")
        content = delta.get("content")
        if not calls and not finish:
            if isinstance(content, str):
                self.text += content
            await self.send(line.rstrip(b"\r\n") + b"\n\n")
            return
        for part in calls if isinstance(calls, list) else [calls] if calls else []:
            self._part(part)
        rest = {key: value for key, value in delta.items() if key != "tool_calls"}
        if isinstance(content, str) and content:
            self.text += content
            await self.send(chunk(event, rest, None))
        if finish:
            self.finish = str(finish)

    def _part(self, part: Any) -> None:
        """Add one ``tool_calls`` delta to the call it continues."""
        index = part.get("index", 0) if isinstance(part, dict) else None
        if not isinstance(index, int):
            self.spoiled_all = True  # which call it belongs to is unknown: spoil them all
            return
        slot = self.calls.setdefault(
            index, {"id": "", "type": "function", "function": {"name": "", "arguments": ""}}
        )
        function = part.get("function") or {}
        call_id = part.get("id")
        if call_id and isinstance(call_id, str):
            slot["id"] = call_id
        elif call_id or not isinstance(function, dict):
            self.spoiled.add(index)
            return
        name, arguments = function.get("name") or "", function.get("arguments") or ""
        if not isinstance(name, str) or not isinstance(arguments, str):
            self.spoiled.add(index)
            return
        slot["function"]["name"] += name
        slot["function"]["arguments"] += arguments

    def message(self) -> Message:
        """The assistant message the stream carried, tool calls complete; a spoiled call's
        arguments begin with a NUL, so they are never JSON and the gate denies the call."""
        message: Message = {"role": "assistant", "content": self.text or None}
        if self.calls:
            calls = []
            for index in sorted(self.calls):
                call = self.calls[index]
                if self.spoiled_all or index in self.spoiled:
                    function = call["function"]
                    call = {
                        **call,
                        "function": {**function, "arguments": SPOILED + function["arguments"]},
                    }
                calls.append(call)
            message["tool_calls"] = calls
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
