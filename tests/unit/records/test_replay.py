"""Replay: normalisation rules, request comparison, the replay model and the report."""

from __future__ import annotations

import asyncio
import json
import pathlib
from typing import Any

import aiohttp
import pytest

from continue_orchestrator import errors, records

SYSTEM = (
    "You are an agent in the Continue CLI.\n<env>\nWorking directory: {cwd}\n"
    "Is directory a git repo: true\nPlatform: linux\nToday's date: {date}\n</env>\n"
)


def request(
    cwd: str = "/tmp/a/ws",
    date: str = "2026-11-23",
    result: str = "hello readme\n",
    call_id: str = "call_1",
    assistant: str = "",
) -> dict[str, Any]:
    return {
        "model": "scripted",
        "stream": True,
        "stream_options": {"include_usage": True},
        "user": "session-1234",
        "tools": [
            {"type": "function", "function": {"name": "Bash", "description": f"runs in {cwd}"}}
        ],
        "messages": [
            {"role": "system", "content": SYSTEM.format(cwd=cwd, date=date)},
            {"role": "user", "content": "do the task"},
            {
                "role": "assistant",
                "content": assistant,
                "tool_calls": [
                    {
                        "id": call_id,
                        "type": "function",
                        "function": {"name": "Read", "arguments": '{"filepath":"README.md"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": call_id, "content": f"Content:\n{result}"},
        ],
    }


def test_known_variation_normalises_away() -> None:
    first = request(cwd="/tmp/a/ws", date="2026-11-23", call_id="call_abc")
    second = request(cwd="/srv/other/ws", date="2027-01-02", call_id="call_xyz")
    second["user"] = "session-9999"
    assert records.request_digest(first) == records.request_digest(second)
    normal = records.normalise(first)
    assert "user" not in normal
    assert "<WORKSPACE>" in normal["tools"][0]["function"]["description"]
    assert "Today's date: <DATE>" in normal["messages"][0]["content"]
    assert normal["messages"][3]["tool_call_id"] == "<CALL_1>"
    assert normal["messages"][2]["tool_calls"][0]["id"] == "<CALL_1>"


def test_everything_else_must_match_exactly() -> None:
    base = records.request_digest(request())
    assert records.request_digest(request(result="hello readme!\n")) != base
    assert records.request_digest(request(assistant="x")) != base
    changed = request()
    changed["stream"] = False
    assert records.request_digest(changed) != base
    # A date in a tool result is what the tool said, not the CLI's prompt: it counts.
    dated = records.request_digest(request(result="2026-11-23\n"))
    assert dated != records.request_digest(request(result="2026-11-24\n"))


def test_call_ids_are_compared_by_structure_not_name() -> None:
    crossed = request()
    crossed["messages"][3]["tool_call_id"] = "call_other"
    assert records.request_digest(crossed) != records.request_digest(request())


def test_tool_result_difference_is_environment_with_step_and_diff() -> None:
    divergence = records.compare(
        request(result="a\nb\nc\n"), request(result="a\nB\nc\n"), turn=1, step=3
    )
    assert divergence is not None
    assert divergence.cause == "environment"
    assert (divergence.step, divergence.turn, divergence.message_index) == (3, 1, 3)
    assert divergence.tool_call is not None
    assert divergence.tool_call["function"]["name"] == "Read"
    assert "-b" in divergence.diff.splitlines() and "+B" in divergence.diff.splitlines()
    assert divergence.diff.startswith("--- recorded step 3 message 3")


def test_other_differences_are_agent_drift() -> None:
    divergence = records.compare(request(), request(assistant="thinking"), turn=0, step=1)
    assert divergence is not None and divergence.cause == "agent-drift"
    assert divergence.message_index == 2
    longer = request()
    longer["messages"].append({"role": "user", "content": "more"})
    divergence = records.compare(request(), longer, turn=0, step=1)
    assert divergence is not None and divergence.cause == "agent-drift"
    assert "extra message 4" in divergence.what
    tools = request()
    tools["tools"] = []
    divergence = records.compare(request(), tools, turn=0, step=1)
    assert divergence is not None and divergence.cause == "agent-drift"
    assert "tools" in divergence.what and divergence.diff


def _record(tmp_path: pathlib.Path, bodies: list[dict[str, Any]]) -> records.RunRecord:
    store = records.BlobStore(tmp_path / "store", fsync=False)
    record = records.RunRecord(store, "run-1")
    for number, body in enumerate(bodies):
        answer = (
            b'data: {"choices":[{"index":0,"delta":{"content":"turn %d"},"finish_reason":"stop"}]}'
            b"\n\ndata: [DONE]\n\n" % number
        )
        record.append(
            "model",
            blobs={
                "upstreamRequest0": store.put(json.dumps(body).encode()),
                "upstreamResponse0": store.put(answer),
            },
            facts={"stream": True, "status": 200, "upstreamRounds": 1, "decisions": []},
        )
        record.append("tool.result", blobs={"result": store.put(b"{}")})
    return record


def test_recorded_turns_and_sealed_lookup(tmp_path: pathlib.Path) -> None:
    record = _record(tmp_path, [request(), request(result="second")])
    turns = records.recorded_turns(record)
    assert [(t.index, t.step, t.round, t.stream) for t in turns] == [
        (0, 1, 0, True),
        (1, 3, 0, True),
    ]
    digest = record.seal()
    assert records.record_by_digest(record.store, digest).run == "run-1"
    with pytest.raises(errors.RecordError, match="not a run record manifest"):
        records.record_by_digest(record.store, record.store.put(b"[]"))


def test_record_edited_after_sealing_is_refused(tmp_path: pathlib.Path) -> None:
    record = _record(tmp_path, [request()])
    digest = record.seal()
    path = record.directory / "record.jsonl"
    lines = path.read_text().splitlines()
    first = json.loads(lines[0])
    first["facts"]["status"] = 500
    path.write_text("\n".join([json.dumps(first), *lines[1:]]) + "\n")
    with pytest.raises(errors.RecordError, match="no longer matches its sealed manifest"):
        records.record_by_digest(record.store, digest)


def test_tampered_response_blob_is_never_served(tmp_path: pathlib.Path) -> None:
    record = _record(tmp_path, [request()])
    digest = record.exchanges[0].blobs["upstreamResponse0"]
    record.store.path(digest).write_bytes(b"data: evil\n\n")
    with pytest.raises(errors.RecordError, match="altered"):
        records.ReplayModel.from_record(record)


async def _post(base: str, body: dict[str, Any]) -> tuple[int, bytes]:
    async with (
        aiohttp.ClientSession() as session,
        session.post(base + "/chat/completions", json=body) as response,
    ):
        return response.status, await response.read()


def test_replay_model_serves_matches_and_stops_at_the_first_divergence(
    tmp_path: pathlib.Path,
) -> None:
    record = _record(tmp_path, [request(), request(result="second"), request(result="third")])
    model = records.ReplayModel.from_record(record)

    async def scenario() -> list[tuple[int, bytes]]:
        base = await model.start()
        try:
            return [
                await _post(base, request(cwd="/elsewhere", call_id="call_new")),
                await _post(base, request(result="SECOND")),
                await _post(base, request(result="third")),
            ]
        finally:
            await model.stop()

    first, second, third = asyncio.run(scenario())
    assert first == (200, record.store.get(record.exchanges[0].blobs["upstreamResponse0"]))
    assert second[0] == 200 and b"diverged from the recorded run at step 3" in second[1]
    assert b'"finish_reason": "stop"' in second[1] and b"tool_calls" not in second[1]
    assert b"at step 3" in third[1], "after a divergence nothing recorded is served"
    assert model.served == 1 and model.requests == 3
    divergence = model.finish()
    assert divergence is not None and divergence.cause == "environment"
    assert divergence.step == 3 and divergence.turn == 1


def test_replay_model_redacts_before_comparing(tmp_path: pathlib.Path) -> None:
    record = _record(tmp_path, [request(result="key [REDACTED:API_TOKEN]")])
    model = records.ReplayModel.from_record(
        record, redact=lambda data: data.replace(b"hunter2", b"[REDACTED:API_TOKEN]")
    )

    async def scenario() -> tuple[int, bytes]:
        base = await model.start()
        try:
            return await _post(base, request(result="key hunter2"))
        finally:
            await model.stop()

    assert asyncio.run(scenario())[0] == 200
    assert model.finish() is None


def test_a_run_that_stops_early_or_asks_for_more_diverges(tmp_path: pathlib.Path) -> None:
    model = records.ReplayModel.from_record(_record(tmp_path, [request(), request(result="2")]))
    divergence = model.finish()
    assert divergence is not None and divergence.cause == "agent-drift"
    assert "stopped after 0 of 2" in divergence.what and divergence.step == 1

    extra = records.ReplayModel.from_record(_record(tmp_path / "b", [request()]))

    async def scenario() -> None:
        base = await extra.start()
        try:
            await _post(base, request())
            await _post(base, request(result="more"))
        finally:
            await extra.stop()

    asyncio.run(scenario())
    divergence = extra.finish()
    assert divergence is not None and "ended after 1" in divergence.what


def test_input_drift_compares_only_what_both_sides_know() -> None:
    recorded = {"policy": "sha256:a", "image": "img@1", "commit": None, "config": "sha256:c"}
    replayed = {"policy": "sha256:b", "image": "img@1", "commit": "abc", "config": "sha256:c"}
    drift = records.input_drift(recorded, replayed)
    assert [(d.name, d.recorded, d.replayed) for d in drift] == [("policy", "sha256:a", "sha256:b")]


def _outcome(record: records.RunRecord, commit: str, diff: str) -> None:
    outcome = {"status": "Succeeded", "baseCommit": commit, "diff": {"digest": diff}}
    record.append("run.outcome", blobs={"outcome": record.store.put(json.dumps(outcome).encode())})


def test_report_blames_a_moved_commit_for_a_changed_tool_result(tmp_path: pathlib.Path) -> None:
    original = _record(tmp_path / "a", [request()])
    _outcome(original, "1" * 40, "sha256:d1")
    replay = records.RunRecord(original.store, "run-2")
    _outcome(replay, "2" * 40, "sha256:d2")
    model = records.ReplayModel.from_record(original)
    model.divergence = records.compare(request(), request(result="changed"), turn=0, step=1)
    report = records.build_replay_report(
        original=original, original_digest="sha256:x", replay=replay,
        replay_digest="sha256:y", model=model,
    )  # fmt: skip
    assert not report.identical and report.cause == "input-drift"
    assert report.divergence is not None and report.divergence.step == 1
    assert "another commit" in report.divergence.what
    assert [d.name for d in report.input_drift] == ["commit"]
    assert "DIVERGED (input-drift)" in report.render()


def test_report_is_identical_only_when_everything_matched(tmp_path: pathlib.Path) -> None:
    original = _record(tmp_path / "a", [request()])
    _outcome(original, "1" * 40, "sha256:d1")
    same = records.RunRecord(original.store, "run-2")
    _outcome(same, "1" * 40, "sha256:d1")
    model = records.ReplayModel.from_record(original)
    model.served = model.requests = 1
    report = records.build_replay_report(
        original=original, original_digest="sha256:x", replay=same,
        replay_digest="sha256:y", model=model,
    )  # fmt: skip
    assert report.identical and "IDENTICAL" in report.render()
    other = records.RunRecord(original.store, "run-3")
    _outcome(other, "1" * 40, "sha256:d9")
    model.divergence = None
    report = records.build_replay_report(
        original=original, original_digest="sha256:x", replay=other,
        replay_digest="sha256:z", model=model,
    )  # fmt: skip
    assert not report.identical and report.cause == "environment"
    assert "workspace diff differs" in report.to_json()["divergence"]["what"]


def test_replay_model_for_a_digest_redacts_escaped_secrets_like_the_gateway(
    tmp_path: pathlib.Path,
) -> None:
    record = _record(tmp_path, [request(result="key [REDACTED:API_TOKEN]")])
    model = records.replay_model(
        record.store, record.seal(), secrets={"API_TOKEN": 'hun"ter2\n', "EMPTY": ""}
    )

    async def scenario() -> tuple[int, bytes]:
        base = await model.start()
        try:
            return await _post(base, request(result='key hun"ter2\n'))
        finally:
            await model.stop()

    assert asyncio.run(scenario())[0] == 200
    assert model.finish() is None
