"""Fixtures for integration tests against a real local Kubernetes control plane.

`kube` (session): etcd + kube-apiserver + kube-controller-manager on loopback,
built by hack/build-k8s.sh when missing (never skipped). `pod_executor`
(session): the test stand-in for the kubelet (tests/kube/podexec.py).
`namespace` (function): a fresh namespace that the pod executor runs pods in.
When a test that uses `kube` fails, the tail of each component's log is added
to its report; the full logs stay under pytest's basetemp (`kube0/logs`).
"""

from __future__ import annotations

import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.kube import ControlPlane, PodExecutor, ensure_binaries, external
from tests.kube.node_plugin import node

# One real node per session for every directory that asks (node/, deployed/): a fixture
# defined in each directory's conftest would be two session fixtures, two nodes.
__all__ = ["node"]

CHECKOUT = Path(__file__).resolve().parents[2]


def pytest_collection_finish(session: pytest.Session) -> None:
    """Build missing binaries before any test starts, outside per-test timeouts."""
    if (
        not session.config.option.collectonly
        and not external.requested()
        and any("kube" in getattr(item, "fixturenames", ()) for item in session.items)
    ):
        ensure_binaries()


@pytest.fixture(scope="session")
def kube(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    """The running control plane: `.kubeconfig`, `.kubectl(...)`, `.api_client()`,
    `.rest`, `.create_namespace(name)`, `.apply(path)`, `.wait_established(names)`,
    `.env()` (for subprocesses: KUBECONFIG and the built binaries on PATH)."""
    if external.requested():  # `make e2e KUBECONFIG=…`: the user's cluster (tests.kube.external)
        cp: ControlPlane = external.ExternalCluster(tmp_path_factory.mktemp("kube"))
    else:
        cp = ControlPlane(tmp_path_factory.mktemp("kube"))
    cp.start()
    print(
        f"\n[kube] control plane up in {cp.startup_seconds:.1f}s at {cp.server}; "
        f"KUBECONFIG={cp.kubeconfig}",
        file=sys.stderr,
    )
    try:
        yield cp
    finally:
        cp.stop()


@pytest.fixture(scope="session")
def pod_executor(
    kube: ControlPlane, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PodExecutor]:
    """Runs the pods of namespaces passed to `.watch_namespace(ns)` (the `namespace`
    fixture does it); `.wait_for_phase(ns, name)`, `.logs(ns, name)`, `.runtime`.
    Pods see the checkout and the Python environment at their own paths, wherever they are
    (a clone under /tmp too, which the runner pod's own /tmp would otherwise hide)."""
    executor = PodExecutor(
        kube.new_rest(),
        tmp_path_factory.mktemp("podexec"),
        host_paths=(CHECKOUT, Path(sys.prefix)),
    ).start()
    try:
        yield executor
    finally:
        executor.stop()


@pytest.fixture
def namespace(kube: ControlPlane, pod_executor: PodExecutor) -> Iterator[str]:
    """A new namespace whose pods the pod executor runs; deleted afterwards."""
    name = kube.create_namespace(f"t-{uuid.uuid4().hex[:8]}")
    pod_executor.watch_namespace(name)
    yield name
    kube.delete_namespace(name)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    cp = getattr(item, "funcargs", {}).get("kube")
    if report.failed and isinstance(cp, ControlPlane):
        report.sections.append(("control plane logs", cp.log_tail(40)))
