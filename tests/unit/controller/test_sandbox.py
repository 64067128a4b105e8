"""What a run's pod says about the run: gone, someone else's, past its deadline."""

from __future__ import annotations

import time
from typing import Any

from tests.unit.controller._fake_kube import NAME, NAMESPACE, UID, FakeKube

from continue_orchestrator import api, controller, ledger
from continue_orchestrator.controller import _agentrun, _clock, _sandbox

POD = f"/api/v1/namespaces/{NAMESPACE}/pods/{_agentrun.Ref(NAMESPACE, NAME, UID).object_name}"


def _sandbox_for(kube: FakeKube, settings: controller.Settings) -> _sandbox.Sandbox:
    book = ledger.open("sqlite:///:memory:")
    return _sandbox.Sandbox(kube, book, controller.InMemoryGateway(), settings)


def _pod(uid: str, started: float, phase: str = "Running") -> dict[str, Any]:
    return {
        "metadata": {
            "name": POD.rsplit("/", 1)[1],
            "labels": {controller.RUN_UID_LABEL: uid},
            "creationTimestamp": _clock.rfc3339(started),
        },
        "status": {"phase": phase, "startTime": _clock.rfc3339(started)},
    }


def test_a_missing_pod_or_another_runs_pod_is_a_deleted_pod(settings: controller.Settings) -> None:
    kube = FakeKube()
    run = _agentrun.Run.of(kube.add_run({"phase": "Running"}))
    sandbox = _sandbox_for(kube, settings)
    missing = sandbox.outcome(run)
    assert missing is not None and missing.reason == "PodDeleted"
    kube.objects[POD] = _pod("another-uid", time.time())
    foreign = sandbox.outcome(run)
    assert foreign is not None and foreign.reason == "PodDeleted"


def test_a_pod_past_its_deadline_is_stopped(settings: controller.Settings) -> None:
    kube = FakeKube()
    body = kube.add_run({"phase": "Running"})
    body["spec"]["timeoutSeconds"] = 60
    run = _agentrun.Run.of(body)
    sandbox = _sandbox_for(kube, settings)
    kube.objects[POD] = _pod(UID, time.time() - 10)
    running = sandbox.outcome(run)
    assert running is not None and running.phase is api.Phase.RUNNING
    kube.objects[POD] = _pod(UID, time.time() - 60 - settings.timeout_grace_seconds - 5)
    late = sandbox.outcome(run)
    assert late is not None and (late.phase, late.reason) == (
        api.Phase.TIMED_OUT,
        "DeadlineExceeded",
    )
    assert POD not in kube.objects
