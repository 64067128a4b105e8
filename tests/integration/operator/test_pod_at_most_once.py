"""A run's pod never acts twice, whatever stops the operator half-way.

An agent has side effects (pushes, pull requests), so a pod that may have acted is never
created again; one that provably did not (the gateway, which commits every tool call to
the ledger before the agent sees it, has nothing from it but its clone's fetches) is. The real
``controller.Reconciler`` runs against the real kube-apiserver (no kubelet: the pods
stay Pending); a ``Kube`` that stops at a chosen point stands in for the operator being
killed there, and a fresh reconciler plays the restarted one.
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


class _Killed(BaseException):
    """The operator process dying: nothing after this point runs."""


class _StoppingKube(controller.Kube):
    """Stops before or after the pod create request, or has it refused once."""

    def __init__(self, client: Any, when: str) -> None:
        super().__init__(client)
        self.when = when

    def create(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        if not path.endswith("/pods"):
            return super().create(path, body)
        if self.when == "before":
            raise _Killed
        if self.when == "refused":
            self.when = ""
            raise controller.ApiError(403, "Forbidden", "exceeded quota: pods=0", path)
        created = super().create(path, body)
        if self.when == "after":
            raise _Killed
        return created


@pytest.fixture
def bare_namespace(kube: ControlPlane) -> Iterator[str]:
    name = kube.create_namespace(f"t-{uuid.uuid4().hex[:8]}")
    yield name
    kube.delete_namespace(name)


def _reconciler(kube: ControlPlane, book: ledger.Ledger, when: str = "") -> controller.Reconciler:
    settings = controller.Settings(
        runner_image=harness.IMAGE,
        ledger_url=book.url,
        operator_namespace="orchestrator-system",
    ).validate()
    return controller.Reconciler(
        _StoppingKube(kube.api_client(), when), book, controller.InMemoryGateway(), settings
    )


def _start_run(
    kube: ControlPlane, namespace: str, name: str
) -> tuple[harness.Cluster, dict[str, Any]]:
    harness.setup_cluster(kube)
    cluster = harness.Cluster(kube)
    cluster.create(harness.run_policy(namespace))
    return cluster, cluster.create(harness.agent_run(namespace, name))


def _kill_after_create_then_delete_the_pod(
    kube: ControlPlane, cluster: harness.Cluster, book: ledger.Ledger, run: dict[str, Any]
) -> str:
    namespace, uid = run["metadata"]["namespace"], run["metadata"]["uid"]
    with pytest.raises(_Killed):
        _reconciler(kube, book, "after").start(run)
    (pod,) = cluster.pods(namespace, uid)  # created; the status never said so
    stopped = cluster.run(namespace, run["metadata"]["name"]) or {}
    assert "SandboxReady" not in harness.conditions(stopped)
    assert harness.conditions(stopped)["SandboxRequested"]["status"] == "True"
    kube.rest.request("DELETE", f"/api/v1/namespaces/{namespace}/pods/{pod['metadata']['name']}")
    cluster.wait("the pod gone", lambda: cluster.pods(namespace, uid) == [])
    return str(pod["metadata"]["uid"])


def test_a_pod_that_ran_and_was_deleted_while_the_operator_was_down_is_not_created_again(
    kube: ControlPlane, bare_namespace: str, tmp_path: pathlib.Path
) -> None:
    namespace = bare_namespace
    cluster, run = _start_run(kube, namespace, "ran-then-deleted")
    uid = run["metadata"]["uid"]
    with ledger.open(f"sqlite:///{tmp_path / 'ledger.db'}") as book:
        _kill_after_create_then_delete_the_pod(kube, cluster, book, run)
        # The pod ran before it went: its agent asked the model; the gateway recorded it.
        book.append(uid, ledger.Kind.MODEL_REQUEST, "system:gateway", {"step": 0})

        restarted = _reconciler(kube, book)
        restarted.start(run)
        restarted.start(run)  # and again: still no pod
        current = cluster.run(namespace, "ran-then-deleted")
        assert current is not None and current["status"]["phase"] == "Failed", current
        completed = harness.conditions(current)["Completed"]
        assert completed["reason"] == "PodDeleted"
        assert "the ledger shows it ran (model.request" in completed["message"]
        assert cluster.pods(namespace, uid) == []
        kinds = [e.kind.value for e in book.entries(run_uid=uid)]
        assert kinds.count("run.created") == 1 and kinds.count("run.finished") == 1, kinds


def test_a_pod_that_never_reached_the_gateway_is_created_again(
    kube: ControlPlane, bare_namespace: str, tmp_path: pathlib.Path
) -> None:
    namespace = bare_namespace
    cluster, run = _start_run(kube, namespace, "never-ran")
    uid = run["metadata"]["uid"]
    with ledger.open(f"sqlite:///{tmp_path / 'ledger.db'}") as book:
        first = _kill_after_create_then_delete_the_pod(kube, cluster, book, run)
        _reconciler(kube, book).start(run)
        (pod,) = cluster.pods(namespace, uid)
        assert pod["metadata"]["uid"] != first
        current = cluster.run(namespace, "never-ran") or {}
        assert harness.conditions(current)["SandboxReady"]["reason"] == "PodCreated"


def test_a_pod_that_only_cloned_through_the_gateway_is_created_again(
    kube: ControlPlane, bare_namespace: str, tmp_path: pathlib.Path
) -> None:
    namespace = bare_namespace
    cluster, run = _start_run(kube, namespace, "only-cloned")
    uid = run["metadata"]["uid"]
    with ledger.open(f"sqlite:///{tmp_path / 'ledger.db'}") as book:
        first = _kill_after_create_then_delete_the_pod(kube, cluster, book, run)
        # Its runner fetched the repository through the gateway, and did nothing else.
        book.append(uid, ledger.Kind.REPOSITORY_FETCH, "gateway", {"wants": ["a" * 40]})
        _reconciler(kube, book).start(run)
        (pod,) = cluster.pods(namespace, uid)
        assert pod["metadata"]["uid"] != first
        current = cluster.run(namespace, "only-cloned") or {}
        assert harness.conditions(current)["SandboxReady"]["reason"] == "PodCreated"


def test_killed_before_the_api_server_answered_the_pod_is_created_once(
    kube: ControlPlane, bare_namespace: str, tmp_path: pathlib.Path
) -> None:
    namespace = bare_namespace
    cluster, run = _start_run(kube, namespace, "killed-before-create")
    uid = run["metadata"]["uid"]
    with ledger.open(f"sqlite:///{tmp_path / 'ledger.db'}") as book:
        with pytest.raises(_Killed):
            _reconciler(kube, book, "before").start(run)
        assert cluster.pods(namespace, uid) == []
        restarted = _reconciler(kube, book)
        restarted.start(run)
        restarted.start(run)
        assert len(cluster.pods(namespace, uid)) == 1


def test_a_refused_create_is_retried_and_a_restart_adopts_the_pod(
    kube: ControlPlane, bare_namespace: str, tmp_path: pathlib.Path
) -> None:
    namespace = bare_namespace
    cluster, run = _start_run(kube, namespace, "refused-once")
    uid = run["metadata"]["uid"]
    with ledger.open(f"sqlite:///{tmp_path / 'ledger.db'}") as book:
        reconciler = _reconciler(kube, book, "refused")
        with pytest.raises(controller.ApiError):
            reconciler.start(run)
        refused = harness.conditions(cluster.run(namespace, "refused-once") or {})
        assert refused["SandboxRequested"]["status"] == "False"
        assert refused["SandboxRequested"]["reason"] == "PodRefused"
        assert cluster.pods(namespace, uid) == []

        reconciler.start(run)  # kopf's retry: the API server refused, so nothing ran
        current = cluster.run(namespace, "refused-once")
        assert current is not None and current["status"]["phase"] == "Pending"
        conditions = harness.conditions(current)
        assert conditions["SandboxRequested"]["status"] == "True"
        assert conditions["SandboxReady"]["reason"] == "PodCreated"
        assert len(cluster.pods(namespace, uid)) == 1

        _reconciler(kube, book).start(current)  # a restart with the pod there adopts it
        assert len(cluster.pods(namespace, uid)) == 1
        assert (cluster.run(namespace, "refused-once") or {})["status"]["phase"] == "Pending"
