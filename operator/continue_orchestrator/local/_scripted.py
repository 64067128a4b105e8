"""A deterministic OpenAI-compatible model that plays a YAML script of assistant turns.

Tests, the benchmark and the local demo need a model that answers the same way every
time, including tool calls streamed as ``tool_calls`` deltas with ``finish_reason:
"tool_calls"`` the way real providers send them. Each request to ``/v1/chat/completions``
consumes the next turn. A turn may state what it expects of the request (the last
message's role, text it must contain); a request that does not meet it is answered with
HTTP 409 and kept in ``failures`` so a test can tell which turn went wrong and why. The
wire (routes, the streamed chunks) is ``records.ChatServer``'s, which the replay model
speaks too.

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

from continue_orchestrator import errors, records

_TEXT_DELTA = 32  # text streamed in pieces, like providers do
_USAGE = {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}

ToolCall = records.ChatToolCall


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
class ScriptedModel(records.ChatServer):
    """Serves ``script`` on ``/v1/chat/completions`` (also ``/chat/completions``)."""

    script: Script
    requests: list[dict[str, Any]] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    authorizations: list[str] = field(default_factory=list)
    _next: int = 0

    @property
    def exhausted(self) -> bool:
        return not self.script.loop and self._next >= len(self.script.turns)

    def app(self) -> web.Application:
        app = super().app()
        app.router.add_get("/v1/models", self._models)
        return app

    async def _models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "scripted"}]})

    async def chat(self, request: web.Request) -> web.StreamResponse:
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
        answer = records.ChatAnswer(
            id=f"chatcmpl-scripted-{index}",
            model=str(body.get("model") or "scripted"),
            text=turn.text,
            tool_calls=turn.tool_calls,
            usage=_USAGE,
            text_delta=_TEXT_DELTA,
        )
        return await records.chat_response(request, body, answer)

    def _fail(self, turn: int, what: str) -> web.Response:
        self.failures.append(Failure(turn, what))
        return records.chat_error(409, f"scripted model, turn {turn}: {what}", "script")


def _unmet(turn: Turn, messages: Sequence[Mapping[str, Any]]) -> str | None:
    last = messages[-1] if messages else {}
    text = records.message_text(last)
    if turn.expect_last_role and last.get("role") != turn.expect_last_role:
        return f"expected the last message from {turn.expect_last_role!r}, got {last.get('role')!r}"
    if turn.expect_last_contains and turn.expect_last_contains not in text:
        return (
            f"expected the last message to contain {turn.expect_last_contains!r}, "
            f"got {text[:200]!r}"
        )
    return None
