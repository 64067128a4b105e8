"""Smoke tests of the real node: pods run under gVisor and runc from an imported image,
reach a Service through kube-proxy, get no service-account token when told, and their
logs come back through the API server from the kubelet."""

from __future__ import annotations

import contextlib
import os
import statistics
import tarfile
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from tests.kube import ControlPlane
from tests.kube.images import busybox_image
from tests.kube.node import Node
from tests.kube.rest import ApiError

pytestmark = [pytest.mark.node, pytest.mark.cluster]

JSON = dict[str, Any]


def pod(
    name: str,
    image: str,
    command: list[str],
    *,
    runtime: str | None = "gvisor",
    automount: bool = False,
    labels: dict[str, str] | None = None,
    restart: str = "Never",
) -> JSON:
    spec: JSON = {
        "automountServiceAccountToken": automount,
        "restartPolicy": restart,
        "terminationGracePeriodSeconds": 1,
        "enableServiceLinks": False,
        "containers": [
            {
                "name": "main",
                "image": image,
                "imagePullPolicy": "Never",
                "command": command,
            }
        ],
    }
    if runtime:
        spec["runtimeClassName"] = runtime
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": labels or {}},
        "spec": spec,
    }


def create(kube: ControlPlane, namespace: str, body: JSON) -> JSON:
    return kube.rest.request("POST", f"/api/v1/namespaces/{namespace}/pods", body)


def wait_phase(
    kube: ControlPlane,
    node: Node,
    namespace: str,
    name: str,
    phases: tuple[str, ...],
    timeout: float = 90.0,
    interval: float = 0.2,
) -> JSON:
    deadline = time.monotonic() + timeout
    last: JSON = {}
    while time.monotonic() < deadline:
        last = kube.rest.get(f"/api/v1/namespaces/{namespace}/pods/{name}")
        phase = (last.get("status") or {}).get("phase")
        if phase in phases:
            return last
        if phase in ("Succeeded", "Failed") and phase not in phases:
            break
        time.sleep(interval)
    raise AssertionError(
        f"pod {namespace}/{name} not {phases}: {last.get('status')}\n"
        + node.log_tail("kubelet", "containerd", lines=20)
    )


def logs(kube: ControlPlane, namespace: str, name: str) -> str:
    """`kubectl logs`: API server -> kubelet (its serving certificate, our client one)."""
    return kube.kubectl("logs", "-n", namespace, name).stdout


def test_gvisor_pod_runs_in_gvisor(
    kube: ControlPlane, node: Node, busybox: str, node_namespace: str
) -> None:
    create(kube, node_namespace, pod("gv", busybox, ["sh", "-c", "cat /proc/version; dmesg"]))
    wait_phase(kube, node, node_namespace, "gv", ("Succeeded",))
    out = logs(kube, node_namespace, "gv")
    # gVisor's own kernel: its dmesg is gVisor's boot story, its version a fixed 4.4.0
    assert "gVisor" in out, out
    assert os.uname().release not in out, out


def test_runc_pod_runs_on_the_host_kernel(
    kube: ControlPlane, node: Node, busybox: str, node_namespace: str
) -> None:
    create(kube, node_namespace, pod("rc", busybox, ["cat", "/proc/version"], runtime="runc"))
    wait_phase(kube, node, node_namespace, "rc", ("Succeeded",))
    assert os.uname().release in logs(kube, node_namespace, "rc")


def test_no_service_account_token_when_automount_is_off(
    kube: ControlPlane, node: Node, busybox: str, node_namespace: str
) -> None:
    probe = [
        "sh",
        "-c",
        "ls /var/run/secrets/kubernetes.io/serviceaccount/token && echo HAS-TOKEN || echo NO-TOKEN",
    ]
    create(kube, node_namespace, pod("off", busybox, probe))
    create(kube, node_namespace, pod("on", busybox, probe, automount=True))
    wait_phase(kube, node, node_namespace, "off", ("Succeeded",))
    wait_phase(kube, node, node_namespace, "on", ("Succeeded",))
    assert "NO-TOKEN" in logs(kube, node_namespace, "off")
    assert "HAS-TOKEN" in logs(kube, node_namespace, "on")  # the probe can see one


def test_pod_reaches_a_cluster_ip_service(
    kube: ControlPlane, node: Node, busybox: str, node_namespace: str
) -> None:
    ns = node_namespace
    create(
        kube,
        ns,
        pod(
            "web",
            busybox,
            [
                "sh",
                "-c",
                "mkdir -p /www && echo hello-from-web > /www/index.html && "
                "exec httpd -f -p 8080 -h /www",
            ],
            labels={"app": "web"},
        ),
    )
    svc = kube.rest.request(
        "POST",
        f"/api/v1/namespaces/{ns}/services",
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "web"},
            "spec": {
                "selector": {"app": "web"},
                "ports": [{"port": 80, "targetPort": 8080, "protocol": "TCP"}],
            },
        },
    )
    cluster_ip = svc["spec"]["clusterIP"]
    wait_phase(kube, node, ns, "web", ("Running",))
    # Retry inside the pod: kube-proxy programs the Service a moment after the endpoint.
    # (nc, not wget: Debian's busybox-static wget segfaults, on the host too.)
    fetch = (
        f"for i in $(seq 1 60); do printf 'GET / HTTP/1.0\\r\\n\\r\\n' "
        f"| nc -w 2 {cluster_ip} 80 | grep hello && exit 0; sleep 0.5; done; exit 1"
    )
    create(kube, ns, pod("client", busybox, ["sh", "-c", fetch]))
    done = wait_phase(kube, node, ns, "client", ("Succeeded", "Failed"), timeout=120)
    out = logs(kube, ns, "client")
    assert done["status"]["phase"] == "Succeeded", out
    assert "hello-from-web" in out


def test_pod_start_time_gvisor_against_runc(
    kube: ControlPlane,
    node: Node,
    busybox: str,
    node_namespace: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """create -> Running, a few runs each, alternating so load hits both alike."""
    runs = int(os.environ.get("NODE_START_RUNS", "3"))
    times: dict[str, list[float]] = {"runc": [], "gvisor": []}
    for i in range(runs):
        for runtime in ("runc", "gvisor"):
            name = f"start-{runtime}-{i}-{uuid.uuid4().hex[:4]}"
            t0 = time.monotonic()
            create(kube, node_namespace, pod(name, busybox, ["sleep", "600"], runtime=runtime))
            wait_phase(kube, node, node_namespace, name, ("Running",), interval=0.05)
            times[runtime].append(time.monotonic() - t0)
            with contextlib.suppress(ApiError):
                kube.rest.request(
                    "DELETE",
                    f"/api/v1/namespaces/{node_namespace}/pods/{name}",
                    {"apiVersion": "v1", "kind": "DeleteOptions", "gracePeriodSeconds": 0},
                )
    med = {k: statistics.median(v) for k, v in times.items()}
    with capsys.disabled():
        for runtime, values in times.items():
            print(
                f"\n[node] pod create -> Running, {runtime}: "
                + ", ".join(f"{v:.2f}s" for v in values)
                + f" (median {med[runtime]:.2f}s)"
            )
        print(f"[node] gvisor/runc start ratio: {med['gvisor'] / med['runc']:.2f}")
    assert all(times.values())


def test_busybox_image_is_reproducible(tmp_path: Path) -> None:
    a = busybox_image(tmp_path / "a.tar", "continue-orchestrator.local/busybox:same")
    b = busybox_image(tmp_path / "b.tar", "continue-orchestrator.local/busybox:same")
    assert a == b
    assert (tmp_path / "a.tar").read_bytes() == (tmp_path / "b.tar").read_bytes()


def test_import_image_from_an_oci_layout_directory(
    kube: ControlPlane, node: Node, node_namespace: str, tmp_path: Path
) -> None:
    """What buildah's `oci:DIR` gives: a directory, not a tar; the name given on import."""
    archive = tmp_path / "layout.tar"
    digest = busybox_image(archive, "continue-orchestrator.local/layout:v1")
    layout = tmp_path / "layout"
    with tarfile.open(archive) as tar:
        tar.extractall(layout, filter="tar")
    ref = node.import_image(layout, name="continue-orchestrator.local/from-dir:v1")
    assert ref == f"continue-orchestrator.local/from-dir@{digest}"
    create(kube, node_namespace, pod("dir", ref, ["echo", "from-a-directory"]))
    wait_phase(kube, node, node_namespace, "dir", ("Succeeded",))
    assert "from-a-directory" in logs(kube, node_namespace, "dir")


@pytest.mark.parametrize("runtime", ["gvisor", "runc"])
def test_kubectl_exec(
    kube: ControlPlane, node: Node, busybox: str, node_namespace: str, runtime: str
) -> None:
    """API server -> kubelet -> containerd's stream server -> `runsc|runc exec`, with the
    exit code carried back."""
    create(kube, node_namespace, pod("ex", busybox, ["sleep", "600"], runtime=runtime))
    wait_phase(kube, node, node_namespace, "ex", ("Running",))
    result = kube.kubectl(
        "exec",
        "-n",
        node_namespace,
        "ex",
        "--",
        "sh",
        "-c",
        "cat /proc/version; exit 4",
        check=False,
    )
    assert result.returncode == 4, result.stderr
    assert ("4.4.0" in result.stdout) == (runtime == "gvisor"), result.stdout
