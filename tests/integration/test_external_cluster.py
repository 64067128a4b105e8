"""`make e2e KUBECONFIG=…` (tests.kube.external) on what can run here: the stand-in for a
user's cluster is pointed at this session's real control plane through its kubeconfig,
as it would be at kind's, and must reach it, refuse it while it lacks the RuntimeClass
`gvisor`, and say what is wrong with a kubeconfig it cannot use. (KindNode needs Docker
and kind: not run here.)"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
import yaml
from tests.kube import ControlPlane, external
from tests.kube.node import RUNTIME_CLASSES

pytestmark = pytest.mark.cluster
REPO = Path(__file__).resolve().parents[2]


def _cluster(
    kube: ControlPlane, tmp_path: Path, kubeconfig: Path, runtime_class: str = "gvisor"
) -> external.ExternalCluster:
    return external.ExternalCluster(
        tmp_path / "ext", bin_dir=kube.bin_dir, source=kubeconfig, runtime_class=runtime_class
    )


def test_a_cluster_without_the_gvisor_runtime_class_is_refused_then_used(
    kube: ControlPlane, tmp_path: Path
) -> None:
    # A name of its own: other tests of the session make the RuntimeClass `gvisor`.
    name = f"gvisor-{uuid.uuid4().hex[:6]}"
    cluster = _cluster(kube, tmp_path, kube.kubeconfig, runtime_class=name)
    with pytest.raises(external.ExternalClusterError, match=f"no RuntimeClass `{name}`"):
        cluster.start()

    runtime_class = {"apiVersion": "node.k8s.io/v1", "kind": "RuntimeClass",
                     "metadata": {"name": name}, "handler": "runsc"}  # fmt: skip
    kube.rest.request("POST", "/apis/node.k8s.io/v1/runtimeclasses", runtime_class)
    try:
        cluster.start()
        assert cluster.server == kube.server
        namespace = cluster.create_namespace(f"ext-{uuid.uuid4().hex[:6]}")
        got = kube.rest.get(f"/api/v1/namespaces/{namespace}")
        assert got["metadata"]["name"] == namespace
        listed = cluster.kubectl("get", "namespace", namespace, "-o", "name").stdout.strip()
        assert listed == f"namespace/{namespace}"
        assert cluster.env()["KUBECONFIG"] == str(cluster.kubeconfig)
        cluster.stop()  # the user's: left running
        assert kube.rest.get(f"/api/v1/namespaces/{namespace}")["metadata"]["uid"]
        cluster.delete_namespace(namespace)
    finally:
        kube.rest.request("DELETE", f"/apis/node.k8s.io/v1/runtimeclasses/{name}")


def test_a_kubeconfig_without_a_client_certificate_is_refused_with_the_reason(
    kube: ControlPlane, tmp_path: Path
) -> None:
    config = yaml.safe_load(kube.kubeconfig.read_text())
    for user in config["users"]:
        user["user"] = {"token": "not-a-certificate"}
    path = tmp_path / "token.kubeconfig"
    path.write_text(yaml.safe_dump(config))
    with pytest.raises(external.ExternalClusterError, match="client-certificate-data"):
        _cluster(kube, tmp_path, path).start()
    with pytest.raises(external.ExternalClusterError, match="no such file"):
        _cluster(kube, tmp_path, tmp_path / "missing").start()


def test_the_kind_runtime_classes_are_the_local_nodes() -> None:
    """hack/kind-runtimeclass.yaml names the same RuntimeClasses and handlers as the local
    node makes, so the same tests run on both."""
    documents = list(yaml.safe_load_all((REPO / "hack" / "kind-runtimeclass.yaml").read_text()))
    assert {d["metadata"]["name"]: d["handler"] for d in documents} == RUNTIME_CLASSES
