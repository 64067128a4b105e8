"""Fuzzing the gateway's reading of a streamed model answer (``gateway._relay.Relay``).

An upstream's server-sent events arrive split at any byte; whatever the split, the relay
assembles the same text and tool calls. Events of any other shape (wrong JSON types,
garbage, huge lines) never raise: they are skipped, and a tool call with a part that
cannot be read is spoiled so the gate denies it (``test_fuzz_gate``). Derandomized, so a
run is reproducible; deadlines catch a hang.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any
from unittest import mock

from aiohttp import streams
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from continue_orchestrator import records
from continue_orchestrator.gateway import _relay

FUZZ = settings(
    max_examples=100,
    deadline=2000,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


class _Response:
    def __init__(self, content: streams.StreamReader) -> None:
        self.content = content


def relay(data: bytes, cuts: list[int]) -> tuple[_relay.Relay, list[bytes]]:
    """Run a ``Relay`` over ``data`` arriving in pieces cut at ``cuts``."""

    async def main() -> tuple[_relay.Relay, list[bytes]]:
        reader = streams.StreamReader(
            mock.Mock(_reading_paused=False), 2**16, loop=asyncio.get_running_loop()
        )
        previous = 0
        for cut in [*sorted(c % (len(data) + 1) for c in cuts), len(data)]:
            reader.feed_data(data[previous:cut])
            previous = max(previous, cut)
        reader.feed_eof()
        sent: list[bytes] = []

        async def send(event: bytes) -> None:
            sent.append(event)

        found = _relay.Relay(send)
        await found.run(_Response(reader))  # type: ignore[arg-type]
        return found, sent

    return asyncio.run(main())


names = st.sampled_from(["Bash", "Read", "Write", "github/create_issue"])
arguments = st.dictionaries(
    st.text(max_size=8), st.text() | st.integers() | st.booleans(), max_size=4
).map(json.dumps)
answers = st.builds(
    records.ChatAnswer,
    id=st.just("chatcmpl-1"),
    model=st.just("m"),
    text=st.text(max_size=200),
    tool_calls=st.lists(
        st.builds(records.ChatToolCall, name=names, arguments=arguments, id=st.just("call")),
        max_size=3,
    ).map(
        lambda calls: tuple(
            records.ChatToolCall(c.name, c.arguments, f"call-{i}") for i, c in enumerate(calls)
        )
    ),
    text_delta=st.none() | st.integers(1, 7),
)


@FUZZ
@given(answer=answers, cuts=st.lists(st.integers(0, 10**6), max_size=40), crlf=st.booleans())
def test_any_split_assembles_the_same_answer(
    answer: records.ChatAnswer, cuts: list[int], crlf: bool
) -> None:
    data = b"".join(answer.events())
    if crlf:
        data = data.replace(b"\n", b"\r\n")
    found, _ = relay(data, cuts)
    message = found.message()
    assert (message["content"] or "") == answer.text
    calls = [
        (call["id"], call["function"]["name"], call["function"]["arguments"])
        for call in message.get("tool_calls", [])
    ]
    assert calls == [(c.id, c.name, c.arguments) for c in answer.tool_calls]
    assert found.finish == answer.finish_reason
    assert bytes(found.raw) == data


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=10),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=12,
)
shaped = st.fixed_dictionaries(
    {
        "choices": st.lists(
            st.fixed_dictionaries(
                {
                    "delta": st.fixed_dictionaries(
                        {},
                        optional={
                            "content": json_values,
                            "tool_calls": json_values
                            | st.lists(
                                st.fixed_dictionaries(
                                    {},
                                    optional={
                                        "index": json_values | st.integers(0, 2),
                                        "id": json_values,
                                        "function": json_values
                                        | st.fixed_dictionaries(
                                            {},
                                            optional={
                                                "name": json_values,
                                                "arguments": json_values,
                                            },
                                        ),
                                    },
                                ),
                                max_size=2,
                            ),
                        },
                    )
                    | json_values
                },
                optional={"finish_reason": json_values},
            )
            | json_values,
            max_size=2,
        )
        | json_values
    },
)
events = st.lists(
    st.one_of(
        shaped.map(lambda e: b"data: " + json.dumps(e).encode() + b"\n\n"),
        json_values.map(lambda v: b"data: " + json.dumps(v).encode() + b"\n\n"),
        st.binary(max_size=40),
    ),
    max_size=8,
)


@FUZZ
@given(parts=events, cuts=st.lists(st.integers(0, 10**6), max_size=10))
def test_malformed_events_never_raise(parts: list[bytes], cuts: list[int]) -> None:
    data = b"".join(parts)
    found, _ = relay(data, cuts)
    message = found.message()
    assert message["content"] is None or isinstance(message["content"], str)
    for call in message.get("tool_calls", []):
        assert isinstance(call["id"], str) and isinstance(call["function"]["name"], str)
        assert isinstance(call["function"]["arguments"], str)


def test_a_line_over_aiohttps_limit_is_read_whole() -> None:
    """A provider may send a large Write's arguments in one event: 300 KB here, beyond the
    128 KiB aiohttp's readline allows (it raised LineTooLong, failing the exchange)."""
    content = "x" * 300_000
    call = {
        "index": 0,
        "id": "c1",
        "type": "function",
        "function": {"name": "Write", "arguments": json.dumps({"content": content})},
    }
    event = {"choices": [{"index": 0, "delta": {"tool_calls": [call]}, "finish_reason": None}]}
    data = b"data: " + json.dumps(event).encode() + b"\n\ndata: [DONE]\n\n"
    found, _ = relay(data, [100, 70_000, 200_000])
    [assembled] = found.message()["tool_calls"]
    assert json.loads(assembled["function"]["arguments"]) == {"content": content}


def test_deeply_nested_event_is_skipped() -> None:
    """``data: [[[[…`` 100,000 deep made json.loads raise RecursionError, not ValueError."""
    found, _ = relay(b"data: " + b"[" * 100_000 + b"\n\n", [])
    assert found.message() == {"role": "assistant", "content": None}


def _event(delta: Any) -> bytes:
    return b"data: " + json.dumps({"choices": [{"delta": delta}]}).encode() + b"\n\n"


def test_wrong_types_are_skipped_or_spoil_the_call() -> None:
    """Each of these raised (AttributeError, TypeError, ValueError) and failed the exchange."""
    for data in (
        b"data: []\n\n",
        b'data: {"choices": 5}\n\n',
        b'data: {"choices": [5]}\n\n',
        _event({"content": 5}),
        _event([]),
    ):
        assert relay(data, [])[0].message() == {"role": "assistant", "content": None}
    head = _event({"tool_calls": [{"index": 0, "id": "c", "function": {"name": "Bash"}}]})
    for garbled in (
        {"tool_calls": [{"index": 0, "function": {"arguments": {"command": "rm -rf /"}}}]},
        {"tool_calls": [{"index": 0, "function": {"name": 1}}]},
        {"tool_calls": [{"index": "0", "function": {"arguments": "{}"}}]},
        {"tool_calls": 5},
        {"tool_calls": [5]},
    ):
        [call] = relay(head + _event(garbled), [])[0].message()["tool_calls"]
        assert call["function"]["arguments"].startswith(_relay.SPOILED), garbled
