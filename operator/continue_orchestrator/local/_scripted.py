"""A deterministic OpenAI-compatible model that plays a YAML script of assistant turns.

Tests, the benchmark and the local demo need a model that answers the same way every
time, including tool calls streamed as ``tool_calls`` deltas with ``finish_reason:
"tool_calls"`` the way real providers send them. Each request to ``/v1/chat/completions``
consumes the next turn. A turn may state what it expects of the request (the last
message's role, text it must contain); a request that does not meet it is answered with
HTTP 409 and kept in ``failures`` so a test can tell which turn went wrong and why.

Script format::

    loop: false            # true: start over after the last turn (benchmarks)
    turns:
      - text: "Let me read it."
        tool_calls:
          - name: Read
            arguments: {filepath: README.md}
            id: call_read      # optional; default call_<turn>_<index>
        delay_ms: 0            # optional, before the first byte
        expect:
          last_role: user      # optional
          last_contains: "README"  # optional, in the last message's text
"""

from __future__ import annotations

import asyncio
import json
import pathlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml
from aiohttp import web

from continue_orchestrator import errors

_CREATED = 1_700_000_000  # fixed so responses are byte-identical between runs
_ARGUMENT_CHUNK = 16  # streamed argument fragments, like providers do


@dataclass(frozen=True)
class ToolCall:
    name: str
    arguments: str  # JSON text, as providers send it
    id: str


@dataclass(frozen=True)
class Turn:
    text: str = ""
    tool_calls: tuple[ToolCall, ...] = ()
    delay_ms: float = 0.0
    expect_last_role: str | None = None
    expect_last_contains: str | None = None


@dataclass(frozen=True)
class Script:
    turns: tuple[Turn, ...]
    loop: bool = False

    @classmethod
    def from_yaml(cls, text: str, *, where: str = "script") -> Script:
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as error:
            raise errors.ManifestError(
                f"not valid YAML: {error}", where=where, fix="fix the script's syntax"
            ) from error
        return cls.from_data(data, where=where)

    @classmethod
    def from_file(cls, path: str | pathlib.Path) -> Script:
        path = pathlib.Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as error:
            raise errors.ManifestError(
                f"cannot read the script: {error.strerror}",
                where=str(path),
                fix="check the path",
            ) from error
        return cls.from_yaml(text, where=str(path))

    @classmethod
    def from_data(cls, data: Any, *, where: str = "script") -> Script:
        if not isinstance(data, Mapping) or not isinstance(data.get("turns"), list):
            raise errors.ManifestError(
                "a script is a mapping with a list of `turns`",
                where=where,
                fix="see continue_orchestrator.local.ScriptedModel's docstring",
            )
        turns = tuple(
            _turn(raw, index, where=f"{where}: turns[{index}]")
            for index, raw in enumerate(data["turns"])
        )
        if not turns:
            raise errors.ManifestError(
                "the script has no turns", where=where, fix="add at least one turn"
            )
        return cls(turns=turns, loop=bool(data.get("loop", False)))


def _turn(raw: Any, index: int, *, where: str) -> Turn:
    if not isinstance(raw, Mapping):
        raise errors.ManifestError("a turn is a mapping", where=where, fix="use text/tool_calls")
    unknown = set(raw) - {"text", "tool_calls", "delay_ms", "expect"}
    if unknown:
        raise errors.ManifestError(
            f"unknown turn fields {sorted(unknown)}",
            where=where,
            fix="a turn has text, tool_calls, delay_ms and expect",
        )
    calls = []
    for number, call in enumerate(raw.get("tool_calls") or []):
        if not isinstance(call, Mapping) or not isinstance(call.get("name"), str):
            raise errors.ManifestError(
                "a tool call needs a `name`",
                where=f"{where}.tool_calls[{number}]",
                fix="give name and arguments",
            )
        arguments = call.get("arguments", {})
        text = arguments if isinstance(arguments, str) else json.dumps(arguments)
        calls.append(ToolCall(call["name"], text, str(call.get("id") or f"call_{index}_{number}")))
    expect = raw.get("expect") or {}
    if not isinstance(expect, Mapping) or set(expect) - {"last_role", "last_contains"}:
        raise errors.ManifestError(
            "`expect` takes last_role and last_contains",
            where=f"{where}.expect",
            fix="remove other keys",
        )
    return Turn(
        text=str(raw.get("text") or ""),
        tool_calls=tuple(calls),
        delay_ms=float(raw.get("delay_ms", 0)),
        expect_last_role=expect.get("last_role"),
        expect_last_contains=expect.get("last_contains"),
    )


@dataclass
class Failure:
    turn: int
    what: str


@dataclass
class ScriptedModel:
    """Serves ``script`` on ``/v1/chat/completions`` (also ``/chat/completions``)."""

    script: Script
    requests: list[dict[str, Any]] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    authorizations: list[str] = field(default_factory=list)
    _next: int = 0
    _runner: web.AppRunner | None = None
    port: int = 0

    @property
    def exhausted(self) -> bool:
        return not self.script.loop and self._next >= len(self.script.turns)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._handle)
        app.router.add_post("/chat/completions", self._handle)
        app.router.add_get("/v1/models", self._models)
        return app

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Listen and return the base URL clients use as ``apiBase`` (ends in ``/v1``)."""
        self._runner = web.AppRunner(self.app(), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        self.port = int(self._runner.addresses[0][1])
        return f"http://{host}:{self.port}/v1"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "scripted"}]})

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.requests.append(body)
        self.authorizations.append(request.headers.get("Authorization", ""))
        if self.exhausted:
            return self._fail(self._next, "the script has no turn left for this request")
        index = self._next % len(self.script.turns)
        self._next += 1
        turn = self.script.turns[index]
        problem = _unmet(turn, body.get("messages") or [])
        if problem:
            return self._fail(index, problem)
        if turn.delay_ms:
            await asyncio.sleep(turn.delay_ms / 1000)
        model = str(body.get("model") or "scripted")
        if body.get("stream"):
            return await _stream(request, turn, index, model, body)
        return web.json_response(_completion(turn, index, model))

    def _fail(self, turn: int, what: str) -> web.Response:
        self.failures.append(Failure(turn, what))
        return web.json_response(
            {"error": {"message": f"scripted model, turn {turn}: {what}", "type": "script"}},
            status=409,
        )


def _text_of(message: Mapping[str, Any]) -> str:
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(str(part.get("text", "")) for part in content if isinstance(part, Mapping))
    return ""


def _unmet(turn: Turn, messages: Sequence[Mapping[str, Any]]) -> str | None:
    last = messages[-1] if messages else {}
    if turn.expect_last_role and last.get("role") != turn.expect_last_role:
        return f"expected the last message from {turn.expect_last_role!r}, got {last.get('role')!r}"
    if turn.expect_last_contains and turn.expect_last_contains not in _text_of(last):
        return (
            f"expected the last message to contain {turn.expect_last_contains!r}, "
            f"got {_text_of(last)[:200]!r}"
        )
    return None


def _completion(turn: Turn, index: int, model: str) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": turn.text or None}
    if turn.tool_calls:
        message["tool_calls"] = [
            {
                "id": call.id,
                "type": "function",
                "function": {"name": call.name, "arguments": call.arguments},
            }
            for call in turn.tool_calls
        ]
    return {
        "id": f"chatcmpl-scripted-{index}",
        "object": "chat.completion",
        "created": _CREATED,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "finish_reason": "tool_calls" if turn.tool_calls else "stop",
            }
        ],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    }


async def _stream(
    request: web.Request, turn: Turn, index: int, model: str, body: Mapping[str, Any]
) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)

    def chunk(delta: Mapping[str, Any], finish: str | None = None) -> bytes:
        payload = {
            "id": f"chatcmpl-scripted-{index}",
            "object": "chat.completion.chunk",
            "created": _CREATED,
            "model": model,
            "choices": [{"index": 0, "delta": dict(delta), "finish_reason": finish}],
        }
        return b"data: " + json.dumps(payload).encode() + b"\n\n"

    await response.write(chunk({"role": "assistant", "content": ""}))
    for start in range(0, len(turn.text), _ARGUMENT_CHUNK * 2):
        await response.write(chunk({"content": turn.text[start : start + _ARGUMENT_CHUNK * 2]}))
    for number, call in enumerate(turn.tool_calls):
        head = {
            "index": number,
            "id": call.id,
            "type": "function",
            "function": {"name": call.name, "arguments": ""},
        }
        await response.write(chunk({"tool_calls": [head]}))
        for start in range(0, len(call.arguments), _ARGUMENT_CHUNK):
            fragment = call.arguments[start : start + _ARGUMENT_CHUNK]
            await response.write(
                chunk({"tool_calls": [{"index": number, "function": {"arguments": fragment}}]})
            )
    await response.write(chunk({}, "tool_calls" if turn.tool_calls else "stop"))
    options = body.get("stream_options")
    if isinstance(options, Mapping) and options.get("include_usage"):
        usage = {
            "id": f"chatcmpl-scripted-{index}",
            "object": "chat.completion.chunk",
            "created": _CREATED,
            "model": model,
            "choices": [],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
        }
        await response.write(b"data: " + json.dumps(usage).encode() + b"\n\n")
    await response.write(b"data: [DONE]\n\n")
    await response.write_eof()
    return response
