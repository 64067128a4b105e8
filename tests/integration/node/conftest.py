"""Fixtures for the real node (tests/kube/node.py): containerd, kubelet, kube-proxy and
kube-scheduler joined to the session's control plane, and a busybox image imported
into containerd. These tests carry the `node` marker, deselected by default
(pyproject.toml): `pytest -m node tests/integration/node`."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from tests.kube import ControlPlane
from tests.kube.images import busybox_image
from tests.kube.node import Node
from tests.kube.node_plugin import pytest_collection_finish, pytest_runtest_makereport

# The `node` fixture is tests/integration/conftest.py's: one node for this directory and
# tests/integration/deployed in one session (a second would wait on the machine's lock).
__all__ = ["pytest_collection_finish", "pytest_runtest_makereport"]


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
