"""Fuzzing how the gateway's gate reads a tool call's arguments, and deciding odd calls.

The property that matters: no Allow from a parse error. The gate is given a decider that
allows everything, so any call it lets through with arguments that are not a JSON object
in JSON text would be the gate's own fault. Calls of the path tools with arguments of any
JSON shape, and very large arguments, are decided by the baseline without raising and
within a deadline. (Shell command lines are fuzzed with the shell parser's own tests.)
"""

from __future__ import annotations

import asyncio
import json
import pathlib
import tempfile
import time
from collections.abc import Mapping
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from continue_orchestrator import api, gateway, policy, records
from continue_orchestrator.gateway import _gate, _relay, _runs

ROOT = pathlib.Path(__file__).resolve().parents[3]
FUZZ = settings(
    max_examples=150,
    deadline=2000,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
BASELINE = policy.load_policies(ROOT / "policies" / "baseline.yaml")
ALLOW_ALL = policy.compile(
    [
        api.parse(
            {
                "apiVersion": "orchestrator.continue.dev/v1alpha1",
                "kind": "ClusterRunPolicy",
                "metadata": {"name": "allow-all"},
                "spec": {"defaultEffect": "Allow"},
            }
        )
    ]
)
RUN = policy.RunContext(namespace="team-a", name="run-1", uid="u-1", branch="agent/run-1")


class _Allow:
    effect = "Allow"
    rule = "test/allow-everything"
    reason = ""


def _allow_everything(_registration: Any, _tool: str, _arguments: Mapping[str, Any]) -> Any:
    return _Allow()


def _decide(raw: Any) -> tuple[str, Any]:
    gate = _gate.Gate(_allow_everything, broker=None)  # type: ignore[arg-type]
    decision, arguments = gate._decide(None, "Bash", raw)  # type: ignore[arg-type]
    return str(decision.effect), arguments


def _is_object_text(raw: Any) -> bool:
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return True  # no arguments at all: decided as {}
    if not isinstance(raw, str):
        return False
    try:
        return isinstance(json.loads(raw), dict)
    except (ValueError, RecursionError):
        return False


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=10,
)
raw_arguments = st.one_of(
    json_values,  # not text at all
    json_values.map(json.dumps),  # JSON text of any value
    json_values.map(json.dumps).flatmap(  # JSON text cut short or with bytes spliced in
        lambda text: st.tuples(st.integers(0, len(text)), st.text(max_size=4)).map(
            lambda cut: text[: cut[0]] + cut[1]
        )
    ),
    st.text(max_size=40),
    st.just(_relay.SPOILED + "{}"),
)


@FUZZ
@given(raw=raw_arguments)
def test_no_allow_from_a_parse_error(raw: Any) -> None:
    effect, arguments = _decide(raw)
    if _is_object_text(raw):
        assert effect == "Allow" and isinstance(arguments, dict)
    else:
        assert effect == "Deny", raw


def test_arguments_that_are_not_text_are_denied() -> None:
    """``{"command": "rm -rf /"}`` as an object (not JSON text) was decided as ``{}``, and
    a tool with no required argument was allowed with arguments no policy saw."""
    for raw in ({"command": "rm -rf /"}, ["ls"], 5, True):
        assert _decide(raw) == ("Deny", raw)
    assert _decide(None) == ("Allow", {})
    assert _decide("  ") == ("Allow", {})


def test_nested_too_deep_is_denied_not_raised() -> None:
    """``[`` 100,000 deep made json.loads raise RecursionError out of the gate."""
    assert _decide("[" * 100_000)[0] == "Deny"
    assert _decide('{"a":' * 100_000)[0] == "Deny"


def test_a_spoiled_stream_call_is_denied() -> None:
    assert _decide(_relay.SPOILED + '{"command": "ls"}')[0] == "Deny"


def _gate_answer(message: Any) -> _gate.Verdict:
    with tempfile.TemporaryDirectory() as blobs:
        runs = _runs.Runs(records.BlobStore(blobs), None)
        registration = gateway.RunRegistration(
            uid="u-1",
            token=gateway.new_token(),
            expires_at=time.time() + 60,
            policy_set=ALLOW_ALL,
            models={},
            allowed_egress=(),
        )
        gate = _gate.Gate(_gate.policy_decider, gateway.LocalApprovalBroker())
        return asyncio.run(gate.gate(runs.add(registration), message))


calls = st.fixed_dictionaries(
    {},
    optional={
        "id": json_values,
        "type": json_values,
        "function": json_values
        | st.fixed_dictionaries(
            {},
            optional={
                "name": json_values | st.sampled_from(["Read", "Bash", ""]),
                "arguments": raw_arguments,
            },
        ),
    },
)


@FUZZ
@given(tool_calls=json_values | st.lists(calls | json_values, max_size=3))
def test_answers_of_any_shape_are_gated_without_raising(tool_calls: Any) -> None:
    """The non-streamed path hands the gate the provider's message as parsed: every call
    the gate lets through has a name and arguments that are JSON text of an object."""
    verdict = _gate_answer({"role": "assistant", "tool_calls": tool_calls})
    for call in verdict.allowed:
        function = call["function"]
        assert isinstance(function["name"], str) and function["name"]
        assert _is_object_text(function.get("arguments"))


def test_calls_not_of_the_apis_shape_are_denied() -> None:
    """Each of these raised AttributeError or TypeError out of the gate (the exchange
    failed); a name that was an object was decided as its Python repr, and a call with
    no name was decided as the tool ``""``."""
    for tool_calls in (
        {"a": 1},
        5,
        [5],
        [{"function": "Bash"}],
        [{"function": {"name": {"x": 1}, "arguments": "{}"}}],
        [{"function": {"arguments": "{}"}}],
    ):
        verdict = _gate_answer({"role": "assistant", "tool_calls": tool_calls})
        assert not verdict.allowed and len(verdict.denied) == 1, tool_calls
        assert verdict.decisions[0]["rule"] == "gateway.call"


path_tools = st.sampled_from(sorted(set(policy.BUILT_IN_TOOLS) - {"Bash"}))


@FUZZ
@given(
    tool=path_tools,
    arguments=st.dictionaries(
        st.sampled_from(
            [
                "filepath",
                "file_path",
                "dirpath",
                "path",
                "filePath",
                "url",
                "content",
                "old_string",
                "pattern",
                "edits",
            ]
        )
        | st.text(max_size=6),
        json_values,
        max_size=4,
    ),
)
def test_path_tools_with_any_arguments_decide(tool: str, arguments: dict[str, Any]) -> None:
    decision = policy.decide_tool_call(BASELINE, tool, arguments, run=RUN)
    assert isinstance(decision.effect, api.Effect)


def test_very_large_arguments_are_decided_quickly() -> None:
    big = "x" * (8 * 1024 * 1024)
    for tool, arguments in (
        ("Write", {"filepath": "src/a.py", "content": big}),
        ("Edit", {"filepath": "src/a.py", "old_string": big, "new_string": big}),
        ("Read", {"filepath": "src/" + "a/" * 100_000 + "b.py"}),
        ("Write", {"filepath": big}),
        ("Fetch", {"url": "https://example.com/" + big}),
    ):
        decision = policy.decide_tool_call(BASELINE, tool, arguments, run=RUN)
        assert isinstance(decision.effect, api.Effect)
