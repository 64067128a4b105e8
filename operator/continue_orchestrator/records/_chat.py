"""The one OpenAI-compatible chat-completions server, for the models that play answers back.

Two models answer without a provider: ``local.ScriptedModel`` plays turns written in a
script (tests, benchmarks, the demo) and ``records.ReplayModel`` plays a sealed record
back. The gateway and the Continue CLI talk to both as to any provider, so both must
speak the wire the same way. This module is where that wire is written: the routes
(``/v1/chat/completions`` and ``/chat/completions``), listening and stopping, a whole
``chat.completion`` and its streamed form as real providers send it: ``data:`` events of
``chat.completion.chunk`` with the role first, text deltas, ``tool_calls`` deltas whose
arguments come in fragments, a last chunk with ``finish_reason`` (``"tool_calls"`` or
``"stop"``), the usage chunk when the request asks for it, then ``[DONE]``. It lives in
``records`` because the replay model does and ``records`` imports only ``ledger``;
``local`` may import it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web

CREATED = 1_700_000_000
"""A fixed ``created`` time, so the same answer is the same bytes in every run."""
ARGUMENT_FRAGMENT = 16
"""Tool call arguments are streamed in fragments of this many characters, as providers do."""
MAX_REQUEST = 64 * 1024 * 1024
"""The largest request body served: a long agent conversation must fit."""


@dataclass(frozen=True)
class ChatToolCall:
    """One tool call the model asks for."""

    name: str
    arguments: str
    """JSON text, as providers send it."""
    id: str


@dataclass(frozen=True)
class ChatAnswer:
    """One assistant turn: what it says, the tools it calls, and how the response names itself."""

    id: str
    model: str
    text: str = ""
    tool_calls: tuple[ChatToolCall, ...] = ()
    created: int = CREATED
    usage: Mapping[str, int] | None = None
    """Token counts to report (a usage chunk when streaming and asked for); None: none."""
    text_delta: int | None = None
    """Stream the text in deltas of this many characters; None: in one delta."""

    @property
    def finish_reason(self) -> str:
        return "tool_calls" if self.tool_calls else "stop"

    def completion(self) -> dict[str, Any]:
        """The whole ``chat.completion`` (a request without ``stream``)."""
        message: dict[str, Any] = {"role": "assistant", "content": self.text or None}
        if self.tool_calls:
            message["tool_calls"] = [
                {
                    "id": call.id,
                    "type": "function",
                    "function": {"name": call.name, "arguments": call.arguments},
                }
                for call in self.tool_calls
            ]
        document = self._head("chat.completion")
        document["choices"] = [
            {"index": 0, "message": message, "finish_reason": self.finish_reason}
        ]
        if self.usage is not None:
            document["usage"] = dict(self.usage)
        return document

    def events(self, *, include_usage: bool = False) -> Iterator[bytes]:
        """The streamed form, one server-sent event at a time, ``[DONE]`` last."""
        yield self._chunk({"role": "assistant", "content": ""})
        size = self.text_delta or len(self.text) or 1
        for start in range(0, len(self.text), size):
            yield self._chunk({"content": self.text[start : start + size]})
        for number, call in enumerate(self.tool_calls):
            head = {
                "index": number,
                "id": call.id,
                "type": "function",
                "function": {"name": call.name, "arguments": ""},
            }
            yield self._chunk({"tool_calls": [head]})
            for start in range(0, len(call.arguments), ARGUMENT_FRAGMENT):
                fragment = call.arguments[start : start + ARGUMENT_FRAGMENT]
                yield self._chunk(
                    {"tool_calls": [{"index": number, "function": {"arguments": fragment}}]}
                )
        yield self._chunk({}, self.finish_reason)
        if include_usage and self.usage is not None:
            usage = {
                **self._head("chat.completion.chunk"),
                "choices": [],
                "usage": dict(self.usage),
            }
            yield _event(usage)
        yield b"data: [DONE]\n\n"

    def _head(self, kind: str) -> dict[str, Any]:
        return {"id": self.id, "object": kind, "created": self.created, "model": self.model}

    def _chunk(self, delta: Mapping[str, Any], finish: str | None = None) -> bytes:
        chunk = self._head("chat.completion.chunk")
        chunk["choices"] = [{"index": 0, "delta": dict(delta), "finish_reason": finish}]
        return _event(chunk)


def _event(payload: Mapping[str, Any]) -> bytes:
    return b"data: " + json.dumps(payload).encode() + b"\n\n"


async def chat_response(
    request: web.Request, body: Mapping[str, Any], answer: ChatAnswer
) -> web.StreamResponse:
    """Send ``answer`` the way ``body`` asked: streamed if it says ``stream``, else whole."""
    if not body.get("stream"):
        return web.json_response(answer.completion())
    options = body.get("stream_options")
    include_usage = isinstance(options, Mapping) and bool(options.get("include_usage"))
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    for event in answer.events(include_usage=include_usage):
        await response.write(event)
    await response.write_eof()
    return response


def chat_error(status: int, message: str, kind: str) -> web.Response:
    """An OpenAI-style error body: ``{"error": {"message", "type"}}``."""
    return web.json_response({"error": {"message": message, "type": kind}}, status=status)


def message_text(message: Mapping[str, Any]) -> str:
    """The text of a chat message: its string content, or its text parts joined."""
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(str(part.get("text", "")) for part in content if isinstance(part, Mapping))
    return ""


class ChatServer:
    """Serves ``chat`` on ``/v1/chat/completions`` (also ``/chat/completions``).

    A model subclasses it and implements ``chat``; ``start`` listens and gives the
    ``apiBase`` clients use, ``stop`` closes.
    """

    port: int = 0
    _runner: web.AppRunner | None = None

    async def chat(self, request: web.Request) -> web.StreamResponse:
        raise NotImplementedError

    def app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_REQUEST)
        app.router.add_post("/v1/chat/completions", self.chat)
        app.router.add_post("/chat/completions", self.chat)
        return app

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Listen and return the base URL clients use as ``apiBase`` (ends in ``/v1``)."""
        self._runner = web.AppRunner(self.app(), access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, host, port).start()
        self.port = int(self._runner.addresses[0][1])
        return f"http://{host}:{self.port}/v1"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
