"""Fixtures for the real node (tests/kube/node.py): containerd, kubelet, kube-proxy and
kube-scheduler joined to the session's control plane, and a busybox image imported
into containerd. These tests carry the `node` marker, deselected by default
(pyproject.toml): `pytest -m node tests/integration/node`."""

from __future__ import annotations

import sys
import uuid
from collections.abc import Iterator

import pytest
from tests.kube import ControlPlane
from tests.kube.images import busybox_image
from tests.kube.node import Node, ensure_node_binaries


def pytest_collection_finish(session: pytest.Session) -> None:
    """Build or install what the node lacks before any test starts (outside the timeouts)."""
    if not session.config.option.collectonly and any(
        "node" in getattr(item, "fixturenames", ()) for item in session.items
    ):
        ensure_node_binaries()


@pytest.fixture(scope="session")
def node(kube: ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    """One real node, Ready, with the RuntimeClasses `gvisor` and `runc`."""
    n = Node(kube, tmp_path_factory.mktemp("node")).start()
    print(
        f"\n[node] {n.name} Ready in {n.startup_seconds:.1f}s; logs in {n.log_dir}", file=sys.stderr
    )
    try:
        yield n
    finally:
        n.stop()


@pytest.fixture(scope="session")
def busybox(node: Node, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A by-digest reference to a busybox image imported into the node's containerd."""
    archive = tmp_path_factory.mktemp("images") / "busybox.tar"
    busybox_image(archive, "continue-orchestrator.local/busybox:test")
    return node.import_image(archive)


@pytest.fixture
def node_namespace(kube: ControlPlane, node: Node) -> Iterator[str]:
    name = kube.create_namespace(f"n-{uuid.uuid4().hex[:8]}")
    yield name
    kube.delete_namespace(name)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    n = getattr(item, "funcargs", {}).get("node")
    if report.failed and isinstance(n, Node):
        report.sections.append(("node logs", n.log_tail(lines=30)))
