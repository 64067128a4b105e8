"""The end of a run in a ledger the operator shares with the gateway and the runner.

The runner reports its own ``run.finished`` through the gateway; it is not the
operator's account of the run, which must still be written (on delete, or after a
restart). Once the finalizer's tombstone is in, nothing more is appended for the run,
whoever tries. The real ``controller.Reconciler`` against the real kube-apiserver (no
kubelet: pods stay Pending).
"""

from __future__ import annotations

import pathlib
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from tests.integration.operator import harness
from tests.kube import ControlPlane

from continue_orchestrator import controller, ledger

pytestmark = pytest.mark.cluster

OPERATOR = controller.DEFAULT_ACTOR


@pytest.fixture
def bare_namespace(kube: ControlPlane) -> Iterator[str]:
    name = kube.create_namespace(f"t-{uuid.uuid4().hex[:8]}")
    yield name
    kube.delete_namespace(name)


def _started(
    kube: ControlPlane, namespace: str, name: str, book: ledger.Ledger
) -> tuple[harness.Cluster, controller.Reconciler, dict[str, Any]]:
    harness.setup_cluster(kube)
    cluster = harness.Cluster(kube)
    cluster.create(harness.run_policy(namespace))
    run = cluster.create(harness.agent_run(namespace, name))
    settings = controller.Settings(
        runner_image=harness.IMAGE, ledger_url=book.url, operator_namespace="orchestrator-system"
    ).validate()
    reconciler = controller.Reconciler(
        controller.Kube(kube.api_client()), book, controller.InMemoryGateway(), settings
    )
    reconciler.start(run)
    # The runner reported, through the gateway, into the shared ledger.
    book.append(run["metadata"]["uid"], ledger.Kind.RUN_FINISHED, "runner",
                {"source": "runner", "status": "Succeeded"})  # fmt: skip
    current = cluster.run(namespace, name)
    assert current is not None
    return cluster, reconciler, current


def _ends(book: ledger.Ledger, uid: str) -> list[tuple[str, str]]:
    return [(e.kind.value, e.actor) for e in book.entries(run_uid=uid)][-3:]


def test_deleting_a_live_run_the_runner_reported_on_writes_the_operators_account(
    kube: ControlPlane, bare_namespace: str, tmp_path: pathlib.Path
) -> None:
    with ledger.open(f"sqlite:///{tmp_path / 'ledger.db'}") as book:
        cluster, reconciler, run = _started(kube, bare_namespace, "deleted-live", book)
        uid = run["metadata"]["uid"]
        reconciler.delete(run)
        assert _ends(book, uid) == [
            ("run.finished", "runner"), ("run.finished", OPERATOR), ("tombstone", OPERATOR)
        ]
        ours = [e for e in book.entries(run_uid=uid) if e.actor == OPERATOR][-2]
        assert ours.redacted  # the tombstone redacted the operator's account too

        # Then the run's handlers finish it (the cancel the deletion implies, the
        # attestor): none of them appends after the tombstone.
        reconciler.cancel(cluster.run(bare_namespace, "deleted-live") or run)
        cancelled = cluster.run(bare_namespace, "deleted-live") or {}
        assert cancelled["status"]["phase"] == "Cancelled"
        assert _ends(book, uid)[-1] == ("tombstone", OPERATOR)


def test_a_restart_completes_the_operators_account_the_runners_report_does_not_stand_for(
    kube: ControlPlane, bare_namespace: str, tmp_path: pathlib.Path
) -> None:
    with ledger.open(f"sqlite:///{tmp_path / 'ledger.db'}") as book:
        cluster, reconciler, run = _started(kube, bare_namespace, "crashed-at-the-end", book)
        uid = run["metadata"]["uid"]
        # The operator wrote the terminal phase and died before its ledger append.
        status = dict(run["status"])
        status["phase"] = "Succeeded"
        status["conditions"] = [
            *status.get("conditions", []),
            {"type": "Completed", "status": "True", "reason": "Completed",
             "message": "the runner succeeded", "lastTransitionTime": "2026-11-24T00:00:00Z"},
        ]  # fmt: skip
        kube.rest.request(
            "PATCH",
            f"{harness.GROUP_PATH}/namespaces/{bare_namespace}/agentruns/crashed-at-the-end/status",
            {"status": status},
            content_type="application/merge-patch+json",
        )
        terminal = cluster.run(bare_namespace, "crashed-at-the-end")
        assert terminal is not None and terminal["status"]["phase"] == "Succeeded"
        reconciler.start(terminal)  # kopf's resume after the restart
        finished = [e for e in book.entries(run_uid=uid) if e.kind is ledger.Kind.RUN_FINISHED]
        assert [e.actor for e in finished] == ["runner", OPERATOR]
        assert finished[-1].payload is not None and finished[-1].payload["phase"] == "Succeeded"
        reconciler.start(terminal)  # and only once
        assert len([e for e in book.entries(run_uid=uid) if e.actor == OPERATOR
                    and e.kind is ledger.Kind.RUN_FINISHED]) == 1  # fmt: skip
