"""The deployed path on a real node: `helm install` of the chart with the images
hack/build-images.sh builds, imported into the node's containerd and pinned by digest;
the operator and the gateway run as real pods (docs/testing.md, "The deployed path on a
real node")."""

from __future__ import annotations

import sys
from collections.abc import Iterator

import pytest
from tests.integration.deployed.deployed_support import Release
from tests.kube import ControlPlane
from tests.kube.node import Node

pytestmark = [pytest.mark.node, pytest.mark.cluster]


@pytest.fixture(scope="module")
def release(
    kube: ControlPlane,
    node: Node,
    images: dict[str, str],
    ledger_url: str,
    apiserver_for_pods: object,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Release]:
    namespace = kube.create_namespace("co-system")
    it = Release(kube, node, namespace, images, ledger_url, tmp_path_factory.mktemp("release"))
    try:
        it.install()
        print(f"\n[deployed] timings: {it.timings}", file=sys.stderr)
        yield it
    finally:
        it.uninstall()
        kube.delete_namespace(namespace)


def test_operator_and_gateway_run_as_real_pods_from_the_imported_images(release: Release) -> None:
    for component, image in (("gateway", "operator"), ("operator", "operator")):
        pod = release.ready_pod(component)
        assert pod is not None
        [status] = pod["status"]["containerStatuses"]
        assert status["ready"] and "running" in status["state"], status
        digest = release.images[image].split("@", 1)[1]
        assert status["imageID"].endswith(digest), status
        assert pod["spec"]["nodeName"] == release.node.name
