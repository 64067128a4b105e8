"""The pytest side of the real node: the session fixture `node`, its build hook and its
logs in failure reports, shared by tests/integration/node and tests/integration/deployed.

A conftest that wants them imports them whole (pytest finds fixtures and hooks by name in
a conftest's namespace):
`from tests.kube.node_plugin import node, pytest_collection_finish, pytest_runtest_makereport`

A missing node is built before the first test starts (hack/build-node.sh, outside the
per-test timeout), never skipped. With `make e2e KUBECONFIG=…` (tests.kube.external) the
node is the user's kind cluster instead and nothing is built.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator

import pytest
from tests.kube import ControlPlane, external
from tests.kube.node import Node, ensure_node_binaries


def pytest_collection_finish(session: pytest.Session) -> None:
    """Build or install what the node lacks before any test starts (outside the timeouts)."""
    if (
        not session.config.option.collectonly
        and not external.requested()
        and any("node" in getattr(item, "fixturenames", ()) for item in session.items)
    ):
        ensure_node_binaries()


@pytest.fixture(scope="session")
def node(kube: ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    """One real node, Ready, with the RuntimeClasses `gvisor` and `runc`."""
    if external.requested():
        assert isinstance(kube, external.ExternalCluster)
        kind = external.KindNode(kube).start()
        print(f"\n[node] the user's cluster, node {kind.name}", file=sys.stderr)
        yield kind  # type: ignore[misc]  # a Node as the tests read one
        return
    n = Node(kube, tmp_path_factory.mktemp("node")).start()
    print(
        f"\n[node] {n.name} Ready in {n.startup_seconds:.1f}s; logs in {n.log_dir}", file=sys.stderr
    )
    try:
        yield n
    finally:
        n.stop()


def local_only(reason: str) -> pytest.MarkDecorator:
    """For a test of this machine's node itself (its processes, files, kernel tables),
    which a user's cluster does not have: skipped, saying so, under `make e2e KUBECONFIG=…`."""
    return pytest.mark.skipif(external.requested(), reason=f"local node only: {reason}")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    n = getattr(item, "funcargs", {}).get("node")
    if report.failed and isinstance(n, Node):
        report.sections.append(("node logs", n.log_tail(lines=30)))
