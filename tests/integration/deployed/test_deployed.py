"""The deployed path on a real node: `helm install` of the chart with the images
hack/build-images.sh builds, imported into the node's containerd and pinned by digest;
the operator and the gateway run as real pods (docs/testing.md, "The deployed path on a
real node")."""

from __future__ import annotations

import pytest
from tests.integration.deployed.deployed_support import Release

pytestmark = [pytest.mark.node, pytest.mark.cluster]


def test_operator_and_gateway_run_as_real_pods_from_the_imported_images(release: Release) -> None:
    for component, image in (("gateway", "operator"), ("operator", "operator")):
        pod = release.ready_pod(component)
        assert pod is not None
        [status] = pod["status"]["containerStatuses"]
        assert status["ready"] and "running" in status["state"], status
        digest = release.images[image].split("@", 1)[1]
        assert status["imageID"].endswith(digest), status
        assert pod["spec"]["nodeName"] == release.node.name
