"""The one status writer's contract: compare-and-swap, 409 retried, 404 and another uid
write nothing; and the one Event poster: one Event per (reason, key), one time format."""

from __future__ import annotations

import re
from typing import Any

import pytest
from tests.unit.controller import _fake_kube
from tests.unit.controller._fake_kube import PATH, UID, FakeKube

from continue_orchestrator import api, errors
from continue_orchestrator.controller import _agentrun, _clock, _events, _status

REF = _agentrun.Ref(_fake_kube.NAMESPACE, _fake_kube.NAME, UID)
Run = _agentrun.Run


def _message(text: str) -> _status.Change:
    return lambda run: {"message": text}


def test_a_write_merges_the_change_and_returns_the_run_as_stored() -> None:
    kube = FakeKube()
    kube.add_run({"phase": "Running", "message": "running", "runnerImage": "img"})
    written = _status.patch(kube, REF, _message("still running"))
    assert written is not None
    assert written.status.message == "still running"
    assert written.status.runner_image == "img"  # a field the change left out keeps its value
    assert written.resource_version == kube.objects[PATH]["metadata"]["resourceVersion"]
    (sent,) = kube.patches
    assert sent["metadata"]["resourceVersion"] == "1"


def test_a_conflict_reads_again_and_asks_the_change_again() -> None:
    kube = FakeKube()
    kube.add_run({"phase": "Running"})
    seen: list[str | None] = []

    def other_writer(fake: FakeKube) -> None:
        if not fake.patches:  # once: between our read and our first write
            fake.write_status({"runnerImage": "theirs"})

    kube.before_patch = other_writer

    def change(run: Run) -> dict[str, Any]:
        seen.append(run.status.runner_image)
        return {"message": "ours"}

    written = _status.patch(kube, REF, change)
    assert written is not None
    assert seen == [None, "theirs"]  # the second call saw the other writer's status
    assert (written.status.runner_image, written.status.message) == ("theirs", "ours")
    assert len(kube.patches) == 2


def test_a_change_with_nothing_to_write_writes_nothing() -> None:
    kube = FakeKube()
    kube.add_run()
    assert _status.patch(kube, REF, lambda run: None) is None
    assert kube.patches == []


def test_a_vanished_run_writes_nothing() -> None:
    kube = FakeKube()
    assert _status.patch(kube, REF, _message("x")) is None  # 404 on the read
    kube.add_run()

    def deleted(fake: FakeKube) -> None:
        fake.objects.pop(PATH)

    kube.before_patch = deleted
    assert _status.patch(kube, REF, _message("x")) is None  # 404 on the patch


def test_a_run_of_the_same_name_but_another_uid_is_left_alone() -> None:
    kube = FakeKube()
    kube.add_run(uid="another-run")
    assert _status.patch(kube, REF, _message("x")) is None
    assert _status.read(kube, REF) is None
    assert kube.patches == []


def test_a_status_that_keeps_changing_raises_after_the_stated_attempts() -> None:
    kube = FakeKube()
    kube.add_run()
    kube.before_patch = lambda fake: fake.write_status({"message": "someone else"})
    with pytest.raises(errors.OrchestratorError) as raised:
        _status.patch(kube, REF, _message("mine"))
    assert len(kube.patches) == _status.ATTEMPTS
    assert f"AgentRun {_fake_kube.NAMESPACE}/{_fake_kube.NAME}" in str(raised.value)


def test_the_run_in_hand_saves_the_first_read_and_a_stale_one_costs_a_conflict() -> None:
    kube = FakeKube()
    in_hand = Run.of(kube.add_run())
    assert _status.patch(kube, REF, _message("a"), in_hand=in_hand) is not None
    assert kube.reads == 0
    stale = in_hand  # its resourceVersion is now behind
    written = _status.patch(kube, REF, _message("b"), in_hand=stale)
    assert written is not None and written.status.message == "b"
    assert kube.reads == 1 and len(kube.patches) == 3


def test_the_view_parses_the_status_and_refuses_a_damaged_one() -> None:
    kube = FakeKube()
    run = Run.of(kube.add_run({"phase": "Running", "conditions": []}))
    assert run.status.phase is api.Phase.RUNNING and run.generation == 1
    assert run.condition("SandboxReady") is None
    kube.write_status({"phase": "Exploded"})
    with pytest.raises(errors.OrchestratorError, match="status does not parse"):
        _status.read(kube, REF)


def test_one_event_per_reason_and_key_with_one_time_format() -> None:
    kube = FakeKube()
    _events.post(kube, REF, "Running", "pod is running")
    _events.post(kube, REF, "Running", "pod is running")  # a retried handler
    _events.post(kube, REF, "ApprovalIgnored", "not an approver", "Warning", key="approval-1")
    _events.post(kube, REF, "ApprovalIgnored", "not an approver", "Warning", key="approval-2")
    events = kube.events()
    assert sorted(e["reason"] for e in events) == ["ApprovalIgnored", "ApprovalIgnored", "Running"]
    for event in events:
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", event["firstTimestamp"])
        assert event["firstTimestamp"] == event["lastTimestamp"]
        assert event["involvedObject"]["uid"] == UID
    assert _clock.parse(events[0]["firstTimestamp"]) is not None
