"""Replay: serve a recorded run's model answers and find where a new run departs from it.

A replay needs no special path through the gateway. ``ReplayModel`` is an
OpenAI-compatible upstream like any other: the gateway forwards the agent's requests to
it and gates the answers with the run's policy as usual, while tools run for real in a
fresh sandbox. Each upstream request is matched to the recorded one at the same
position by the digest of its normalised form (``normalise``, rules versioned by
``NORMALISATION_VERSION`` and documented in docs/replay.md). On a match the recorded
answer is served byte for byte; on the first mismatch the model stops the agent with a
final text turn and keeps a ``Divergence``: the step, the message that differs, a
unified diff and the cause.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import rfc8785
from aiohttp import web

from continue_orchestrator import errors
from continue_orchestrator.records import _blobs, _chat, _record, _redact

NORMALISATION_VERSION = 1
"""Bump whenever a rule below changes: reports name the version they compared with."""

Cause = Literal["input-drift", "environment", "agent-drift"]
Message = dict[str, Any]

# Rule 1: fields that carry per-call identifiers, not what the model is asked.
_DROPPED_FIELDS = frozenset({"user", "metadata"})
# Rule 2: the working directory the CLI states in its system prompt.
_WORKING_DIRECTORY = re.compile(r"^Working directory: (.+)$", re.MULTILINE)
# Rule 3: today's date and timestamps, in system messages only.
_TIMESTAMP = re.compile(r"\b\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})?")
_DATE = re.compile(r"\b\d{4}-\d{2}-\d{2}\b")
_STOP_TEXT = "[replay: this run diverged from the recorded run at step {step}; stopping the agent]"


def working_directory(body: Mapping[str, Any]) -> str | None:
    """The working directory the Continue CLI states in the request's system prompt."""
    for message in body.get("messages") or []:
        if isinstance(message, Mapping) and message.get("role") == "system":
            found = _WORKING_DIRECTORY.search(_chat.message_text(message))
            if found:
                return found.group(1).strip()
    return None


def normalise(body: Mapping[str, Any], *, workspace: str | None = None) -> dict[str, Any]:
    """The request with what is known to vary between identical runs replaced.

    Rules (version 1): ``user`` and ``metadata`` are dropped; the working directory
    (``workspace``, else the one the system prompt states) becomes ``<WORKSPACE>``
    in every string; in system messages ISO timestamps become ``<TIMESTAMP>`` and ISO
    dates ``<DATE>``; tool call ids become ``<CALL_n>`` in order of first appearance.
    Everything else is kept and compared exactly.
    """
    directory = workspace or working_directory(body)
    ids: dict[str, str] = {}

    def call_id(value: Any) -> Any:
        if not isinstance(value, str):
            return value
        return ids.setdefault(value, f"<CALL_{len(ids) + 1}>")

    def strings(value: Any, system: bool) -> Any:
        if isinstance(value, str):
            if directory and len(directory) > 1:
                value = value.replace(directory, "<WORKSPACE>")
            if system:
                value = _DATE.sub("<DATE>", _TIMESTAMP.sub("<TIMESTAMP>", value))
            return value
        if isinstance(value, list):
            return [strings(item, system) for item in value]
        if isinstance(value, dict):
            return {key: strings(item, system) for key, item in value.items()}
        return value

    result: dict[str, Any] = {}
    for key, value in body.items():
        if key in _DROPPED_FIELDS:
            continue
        if key != "messages" or not isinstance(value, list):
            result[key] = strings(value, False)
            continue
        messages = []
        for message in value:
            if not isinstance(message, dict):
                messages.append(strings(message, False))
                continue
            copy = strings(message, message.get("role") == "system")
            if "tool_call_id" in copy:
                copy["tool_call_id"] = call_id(copy["tool_call_id"])
            for call in copy.get("tool_calls") or []:
                if isinstance(call, dict) and "id" in call:
                    call["id"] = call_id(call["id"])
            messages.append(copy)
        result[key] = messages
    return result


def request_digest(body: Mapping[str, Any], *, workspace: str | None = None) -> str:
    """SHA-256 of the canonical JSON (RFC 8785) of ``normalise(body)``."""
    return _blobs.digest_of(rfc8785.dumps(normalise(body, workspace=workspace)))


@dataclass(frozen=True)
class RecordedTurn:
    """One upstream round of a recorded run: what went to the model and what came back."""

    index: int
    """Position among the run's upstream requests, from 0."""
    step: int
    """The record step (a ``model`` exchange) the round belongs to."""
    round: int
    request: bytes
    response: bytes
    status: int
    stream: bool

    def body(self) -> dict[str, Any]:
        data = json.loads(self.request)
        if not isinstance(data, dict):
            raise errors.RecordError(
                f"step {self.step} round {self.round}: the upstream request is not a JSON object",
                where="run record",
                fix="the record is damaged; it cannot be replayed",
            )
        return data


def recorded_turns(record: _record.RunRecord) -> list[RecordedTurn]:
    """Every upstream round of ``record``, in the order they were sent."""
    turns: list[RecordedTurn] = []
    for exchange in record.exchanges:
        if exchange.kind != "model":
            continue
        rounds = int(exchange.facts.get("upstreamRounds") or 0)
        final_status = int(exchange.facts.get("status") or 200)
        for number in range(rounds):
            request = exchange.blobs.get(f"upstreamRequest{number}")
            response = exchange.blobs.get(f"upstreamResponse{number}")
            if request is None or response is None:
                raise errors.RecordError(
                    f"step {exchange.step} names {rounds} upstream rounds but lacks round {number}",
                    where=str(record.directory),
                    fix="the record is incomplete; it cannot be replayed",
                )
            last = number == rounds - 1
            # 502 is the gateway's own verdict on a 200 it could not read; serve it as sent.
            status = final_status if last and final_status != 502 else 200
            turns.append(
                RecordedTurn(
                    index=len(turns),
                    step=exchange.step,
                    round=number,
                    request=record.store.get(request),
                    response=record.store.get(response),
                    status=status,
                    stream=bool(exchange.facts.get("stream")),
                )
            )
    return turns


def record_by_digest(store: _blobs.BlobStore, digest: str) -> _record.RunRecord:
    """The run record sealed as ``digest`` (a manifest digest), checked against it."""
    try:
        manifest = json.loads(store.get(digest))
        run = manifest["run"]
        exchanges = manifest["exchanges"]
    except (ValueError, KeyError, TypeError) as error:
        raise errors.RecordError(
            f"{digest} is not a run record manifest",
            where=str(store.root),
            fix="pass the record digest a run's report names (recordDigest)",
        ) from error
    if not isinstance(run, str):
        raise errors.RecordError(f"{digest} names no run", where=str(store.root))
    record = _record.load(store, run)
    if [exchange.to_json() for exchange in record.exchanges[: len(exchanges)]] != exchanges:
        raise errors.RecordError(
            f"the record of run {run} no longer matches its sealed manifest {digest}",
            where=str(record.directory),
            fix="the record was edited after it was sealed; do not trust it",
        )
    return record


@dataclass(frozen=True)
class Divergence:
    """The first place a replay departs from its recording."""

    cause: Cause
    what: str
    turn: int | None = None
    """Position among upstream requests (None: found before anything ran)."""
    step: int | None = None
    """The recorded run's record step of that request."""
    message_index: int | None = None
    role: str | None = None
    recorded: Any = None
    replayed: Any = None
    tool_call: Mapping[str, Any] | None = None
    """For a differing tool result: the recorded call that produced it."""
    tool_result_step: int | None = None
    """For a differing tool result: the record step where the recording got it."""
    diff: str = ""
    recorded_digest: str | None = None
    replayed_digest: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "cause": self.cause,
            "what": self.what,
            "turn": self.turn,
            "step": self.step,
            "messageIndex": self.message_index,
            "role": self.role,
            "recorded": self.recorded,
            "replayed": self.replayed,
            "toolCall": dict(self.tool_call) if self.tool_call is not None else None,
            "toolResultStep": self.tool_result_step,
            "diff": self.diff,
            "recordedDigest": self.recorded_digest,
            "replayedDigest": self.replayed_digest,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Divergence:
        return cls(
            cause=data["cause"],
            what=str(data["what"]),
            turn=data.get("turn"),
            step=data.get("step"),
            message_index=data.get("messageIndex"),
            role=data.get("role"),
            recorded=data.get("recorded"),
            replayed=data.get("replayed"),
            tool_call=data.get("toolCall"),
            tool_result_step=data.get("toolResultStep"),
            diff=str(data.get("diff") or ""),
            recorded_digest=data.get("recordedDigest"),
            replayed_digest=data.get("replayedDigest"),
        )


def compare(
    recorded: Mapping[str, Any],
    replayed: Mapping[str, Any],
    *,
    turn: int,
    step: int,
    recorded_workspace: str | None = None,
    replayed_workspace: str | None = None,
) -> Divergence | None:
    """None if the two requests normalise to the same JSON, else how they differ."""
    left = normalise(recorded, workspace=recorded_workspace)
    right = normalise(replayed, workspace=replayed_workspace)
    left_digest = _blobs.digest_of(rfc8785.dumps(left))
    right_digest = _blobs.digest_of(rfc8785.dumps(right))
    if left_digest == right_digest:
        return None
    common_digests: dict[str, Any] = {
        "turn": turn,
        "step": step,
        "recorded_digest": left_digest,
        "replayed_digest": right_digest,
    }
    old_messages = left.get("messages") or []
    new_messages = right.get("messages") or []
    for index in range(max(len(old_messages), len(new_messages))):
        old = old_messages[index] if index < len(old_messages) else None
        new = new_messages[index] if index < len(new_messages) else None
        if old == new:
            continue
        role = str((old or new or {}).get("role"))
        cause: Cause = "agent-drift"
        call = None
        if old is not None and new is not None and old.get("role") == new.get("role") == "tool":
            cause = "environment"
            call = _call_for(recorded.get("messages") or [], index)
            name = (call or {}).get("function", {}).get("name") or "a tool"
            what = f"the result of {name} (message {index}) differs from the recording"
        elif old is None:
            what = f"the agent sent an extra message {index} ({role})"
        elif new is None:
            what = f"the agent left out message {index} ({role})"
        else:
            what = f"message {index} ({role}) differs from the recording"
        return Divergence(
            cause=cause,
            what=what,
            message_index=index,
            role=role,
            recorded=old,
            replayed=new,
            tool_call=call,
            diff=_diff(_message_lines(old), _message_lines(new), step, index),
            **common_digests,
        )
    keys = sorted(key for key in set(left) | set(right) if left.get(key) != right.get(key))
    diff = _diff(_pretty({k: left.get(k) for k in keys}), _pretty({k: right.get(k) for k in keys}),
                 step, None)  # fmt: skip
    return Divergence(
        cause="agent-drift",
        what=f"the request's {', '.join(keys)} differ from the recording",
        diff=diff,
        recorded={k: left.get(k) for k in keys},
        replayed={k: right.get(k) for k in keys},
        **common_digests,
    )


def _call_for(messages: Sequence[Any], index: int) -> dict[str, Any] | None:
    """The assistant tool call whose result is the (raw) message at ``index``."""
    if index >= len(messages) or not isinstance(messages[index], Mapping):
        return None
    wanted = messages[index].get("tool_call_id")
    for message in reversed(messages[:index]):
        if not isinstance(message, Mapping):
            continue
        for call in message.get("tool_calls") or []:
            if isinstance(call, Mapping) and call.get("id") == wanted:
                return dict(call)
    return None


def _message_lines(message: Any) -> list[str]:
    """A message for a diff: its other fields on one line, then its text line by line."""
    if message is None:
        return []
    if not isinstance(message, Mapping):
        return _pretty(message)
    rest = {key: value for key, value in message.items() if key != "content"}
    content = message.get("content")
    text = content if isinstance(content, str) else json.dumps(content, sort_keys=True)
    return [json.dumps(rest, sort_keys=True), *text.splitlines()]


def _pretty(value: Any) -> list[str]:
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False).splitlines()


def _diff(old: list[str], new: list[str], step: int, index: int | None) -> str:
    where = f"step {step}" + (f" message {index}" if index is not None else "")
    return "\n".join(
        difflib.unified_diff(
            old, new, fromfile=f"recorded {where}", tofile=f"replay {where}", lineterm=""
        )
    )


@dataclass
class ReplayModel(_chat.ChatServer):
    """An OpenAI-compatible upstream that plays back one recorded run.

    ``redact`` must be the redaction the recording used (the gateway stored redacted
    requests), so secrets the agent saw compare equal to their placeholders.
    """

    turns: Sequence[RecordedTurn]
    redact: Callable[[bytes], bytes] = field(default=lambda data: data)
    divergence: Divergence | None = None
    served: int = 0
    requests: int = 0

    @classmethod
    def from_record(
        cls, record: _record.RunRecord, *, redact: Callable[[bytes], bytes] | None = None
    ) -> ReplayModel:
        turns = recorded_turns(record)
        if not turns:
            raise errors.RecordError(
                f"run {record.run} made no model request; there is nothing to replay",
                where=str(record.directory),
                fix="replay a run whose agent reached the model",
            )
        return cls(turns, redact=redact or (lambda data: data))

    def finish(self) -> Divergence | None:
        """The divergence, counting a run that stopped before the recording did."""
        if self.divergence is None and self.served < len(self.turns):
            missing = self.turns[self.served]
            self.divergence = Divergence(
                cause="agent-drift",
                what=(
                    f"the agent stopped after {self.served} of {len(self.turns)} recorded "
                    "model requests"
                ),
                turn=missing.index,
                step=missing.step,
            )
        return self.divergence

    async def chat(self, request: web.Request) -> web.StreamResponse:
        self.requests += 1
        raw = self.redact(await request.read())
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        if not isinstance(body, dict):
            return _chat.chat_error(400, "the request body is not a JSON object", "replay")
        if self.divergence is None:
            self.divergence = self._match(body)
            if self.divergence is None:
                turn = self.turns[self.served]
                self.served += 1
                content_type = "text/event-stream" if turn.stream else "application/json"
                return web.Response(
                    body=turn.response, status=turn.status, content_type=content_type
                )
        step = self.divergence.step if self.divergence.step is not None else self.served
        # A final text turn with no tool call: the agent's loop ends.
        stop = _chat.ChatAnswer(
            id="chatcmpl-replay-stop",
            model=str(body.get("model") or "replay"),
            text=_STOP_TEXT.format(step=step),
            created=0,
        )
        return await _chat.chat_response(request, body, stop)

    def _match(self, body: Mapping[str, Any]) -> Divergence | None:
        if self.served >= len(self.turns):
            last = self.turns[-1]
            return Divergence(
                cause="agent-drift",
                what=(
                    f"the agent made model request {self.served + 1}; the recorded run "
                    f"ended after {len(self.turns)}"
                ),
                turn=self.served,
                step=last.step,
                replayed=normalise(body),
                diff=_diff([], _pretty(normalise(body).get("messages")), last.step, None),
            )
        turn = self.turns[self.served]
        return compare(turn.body(), body, turn=turn.index, step=turn.step)


def replay_model(
    store: _blobs.BlobStore, record_digest: str, *, secrets: Mapping[str, str] | None = None
) -> ReplayModel:
    """The upstream for a run with ``spec.replayOf``: the sealed record ``record_digest``
    played back, redacting ``secrets`` (Continue name -> value) as the gateway did.

    Start it (``await model.start()`` gives the ``apiBase``), register that as the run's
    upstream for every model of its config, let the run go; then ``model.finish()`` and
    ``build_replay_report`` say whether it matched. See docs/replay.md.
    """
    record = record_by_digest(store, record_digest)
    redactor = _redact.Redactor({value: name for name, value in (secrets or {}).items() if value})
    return ReplayModel.from_record(record, redact=redactor)
