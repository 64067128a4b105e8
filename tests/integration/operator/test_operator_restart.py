"""The operator killed in the middle of live runs, and two replicas under peering.

Exactly once is checked in the ledger (one run.created and one run.finished per run),
in the cluster (one pod per run) and in the Events (one terminal Event per run).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.integration.operator import harness
from tests.integration.operator.harness import Cluster, Operator
from tests.kube import ControlPlane

pytestmark = pytest.mark.cluster


@pytest.fixture
def own_operator(kube: ControlPlane, cluster: Cluster, tmp_path: Path) -> Iterator[Operator]:
    op = Operator(kube, tmp_path, peering="restart-test", priority=10)
    yield op
    op.stop()


def test_operator_killed_and_restarted_during_20_live_runs(
    cluster: Cluster, own_operator: Operator, namespace: str
) -> None:
    operator = own_operator
    cluster.create(harness.run_policy(namespace))
    names = [f"live-{i:02d}" for i in range(20)]
    for index, name in enumerate(names):
        operator.behave(name, sleep=4 + (index % 4))
    operator.start()
    for name in names:
        cluster.create(harness.agent_run(namespace, name))
    cluster.wait(
        "at least 8 pods before the crash",
        lambda: len(cluster.pods(namespace)) >= 8,
        explain=operator.log_tail,
    )
    operator.kill()
    time.sleep(4)  # pods finish while nobody watches; others are still unstarted
    operator.start()
    for name in names:
        cluster.wait_phase(namespace, name, timeout=120, explain=operator.log_tail)
    harness.exactly_once(cluster, operator, namespace, names)
    for name in names:
        run = cluster.run(namespace, name)
        assert run is not None and run["status"]["phase"] == "Succeeded", (name, run["status"])
        assert len(cluster.pods(namespace, run["metadata"]["uid"])) == 1


def test_two_replicas_with_peering_never_both_act(
    kube: ControlPlane, cluster: Cluster, tmp_path: Path, namespace: str
) -> None:
    (tmp_path / "high").mkdir()
    (tmp_path / "low").mkdir()
    high = Operator(kube, tmp_path / "high", peering="replicas-test", priority=200)
    low = Operator(kube, tmp_path / "low", peering="replicas-test", priority=100)
    low.ledger_path = high.ledger_path
    low.control = high.control
    try:
        high.start()
        low.start()
        cluster.create(harness.run_policy(namespace))
        first = [f"replica-{i}" for i in range(4)]
        for name in first:
            high.behave(name, sleep=0.5)
            cluster.create(harness.agent_run(namespace, name))
        for name in first:
            run = cluster.wait_phase(namespace, name, explain=high.log_tail)
            assert run["status"]["phase"] == "Succeeded"
        # kopf logs a handler's success after it returns, which may be after the pod's
        # handler finished the run.
        cluster.wait("high's start handlers", lambda: _started(high), 15, high.log_tail)
        assert "Handler 'start'" not in low.log_tail(1000), low.log_tail(1000)
        # The active replica goes away: the paused one takes over.
        high.stop()
        second = [f"failover-{i}" for i in range(2)]
        for name in second:
            high.behave(name, sleep=0.5)
            cluster.create(harness.agent_run(namespace, name))
        for name in second:
            run = cluster.wait_phase(namespace, name, timeout=90, explain=low.log_tail)
            assert run["status"]["phase"] == "Succeeded"
        cluster.wait("low's start handlers", lambda: _started(low), 15, low.log_tail)
        harness.exactly_once(cluster, high, namespace, first + second)
    finally:
        low.stop()
        high.stop()


def _started(operator: Operator) -> bool:
    return "Handler 'start' succeeded" in operator.log_tail(1000)
