"""Fixtures of the operator's integration tests: the cluster set up and one operator."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from tests.integration.operator import harness
from tests.kube import ControlPlane, PodExecutor


@pytest.fixture(scope="session")
def cluster(kube: ControlPlane, pod_executor: PodExecutor) -> harness.Cluster:
    harness.setup_cluster(kube)
    return harness.Cluster(kube)


@pytest.fixture(scope="module")
def operator(
    kube: ControlPlane, cluster: harness.Cluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[harness.Operator]:
    op = harness.Operator(kube, tmp_path_factory.mktemp("operator")).start()
    try:
        yield op
    finally:
        op.stop()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    op = getattr(item, "funcargs", {}).get("operator")
    if report.failed and isinstance(op, harness.Operator):
        report.sections.append(("operator log", op.log_tail(80)))
