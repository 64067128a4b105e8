"""An attacker in the agent's pod on the deployed path: while the demo's run is held for
an approval, the test execs into the runner pod (gVisor, the run's NetworkPolicy in
force) and tries to reach what it must not. Each target has a canary where one can be
had: a listener on the host that must accept nothing. The gateway, the one peer a
sandbox has, answers from the same pod. The namespace enforces the `restricted` Pod
Security Standard: privileged and hostNetwork pods are refused."""

from __future__ import annotations

import json
import socket
import subprocess
import threading
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests.integration import cluster_support as support
from tests.integration.deployed.conftest import Canary, ModelThread
from tests.integration.deployed.deployed_support import Release, eventually
from tests.integration.deployed.test_demo_deployed import DEMO, KEY, demo_objects
from tests.kube import ControlPlane, KubectlError
from tests.kube.node import Node

pytestmark = [pytest.mark.node, pytest.mark.cluster]

JSON = dict[str, Any]
# Runs in the agent's pod (the runner image's python3): each probe's outcome as JSON.
PROBE = r"""
import json, socket, sys, urllib.request
out = {}
for name, host, port in json.loads(sys.argv[1]):
    try:
        socket.create_connection((host, port), timeout=3).close()
        out[name] = "connected"
    except OSError as e:
        out[name] = f"{type(e).__name__}: {e}"
for name, host in json.loads(sys.argv[2]):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(3)
    try:
        # A DNS query for example.com, type A.
        s.sendto(bytes.fromhex("abcd01000001000000000000076578616d706c6503636f6d0000010001"),
                 (host, 53))
        s.recv(512)
        out[name] = "answered"
    except OSError as e:
        out[name] = f"{type(e).__name__}: {e}"
try:
    out["gateway"] = urllib.request.urlopen(sys.argv[3], timeout=5).status
except Exception as e:
    out["gateway"] = f"{type(e).__name__}: {e}"
import os
out["token"] = os.path.exists("/var/run/secrets/kubernetes.io/serviceaccount/token")
print(json.dumps(out))
"""


def outward_address() -> str:
    """The machine's own address on its outward interface."""
    route = subprocess.run(
        ["ip", "-4", "route", "get", "1.1.1.1"], capture_output=True, text=True, check=True
    ).stdout.split()
    return route[route.index("src") + 1]


class UdpCanary:
    def __init__(self, host: str) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((host, 53))
        self.received: list[bytes] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        while True:
            try:
                data, _ = self.sock.recvfrom(512)
            except OSError:
                return
            self.received.append(data)

    def close(self) -> None:
        self.sock.close()


def test_the_agents_pod_reaches_only_the_gateway(
    kube: ControlPlane,
    node: Node,
    release: Release,
    forge_for_pods: tuple[Any, str],
    scripted_model: ModelThread,
    tmp_path: Path,
) -> None:
    gitea, forge_base = forge_for_pods
    namespace = kube.create_namespace(
        f"attack-{uuid.uuid4().hex[:6]}",
        labels={"pod-security.kubernetes.io/enforce": "restricted"},
    )
    other = kube.create_namespace(f"other-{uuid.uuid4().hex[:6]}")
    baseline_doc = yaml.safe_load((DEMO / "clusterrunpolicy.yaml").read_text())
    baseline_doc["spec"]["allowedEgress"] = [scripted_model.hostport]
    baseline = tmp_path / "clusterrunpolicy.yaml"
    baseline.write_text(yaml.safe_dump(baseline_doc))
    kube.kubectl("apply", "-f", str(baseline))
    canaries = [Canary(node.node_ip), Canary(outward_address())]
    udp = UdpCanary(node.node_ip)
    try:
        kube.kubectl("create", "secret", "generic", "demo-openai", "-n", namespace,
                     f"--from-literal=api-key={KEY}")  # fmt: skip
        kube.kubectl("create", "secret", "generic", "forge", "-n", namespace,
                     f"--from-literal=token={gitea.token}")  # fmt: skip
        # Another pod, in another namespace, listening: the agent must not reach it.
        image = release.images["operator"]
        victim = kube.kubectl("run", "victim", "-n", other, "--restart=Never", f"--image={image}",
                              "--image-pull-policy=Never", "--command", "--",
                              "python3", "-m", "http.server", "9999")  # fmt: skip
        assert victim.returncode == 0
        victim_ip = eventually(
            "the victim pod Running",
            lambda: (p := json.loads(kube.kubectl("get", "pod", "victim", "-n", other,
                                                  "-o", "json").stdout))["status"].get("phase")
            == "Running" and p["status"].get("podIP"),
            timeout=120,
        )  # fmt: skip
        repo_url = f"{forge_base}/{gitea.full_name('demo')}.git"
        objects = demo_objects(namespace, repo_url, gitea.seed_commit, scripted_model)
        name = objects[-1]["metadata"]["name"]
        kube.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(objects))
        # The demo's test change is held for approval: the agent's pod waits, alive.
        eventually(
            "the run held for approval",
            lambda: (support.get_run(kube, namespace, name).get("status") or {}).get(
                "pendingApprovals"
            ),
            timeout=300,
        )
        pods = json.loads(kube.kubectl("get", "pods", "-n", namespace, "-o", "json").stdout)
        [pod] = [p for p in pods["items"] if p["status"].get("phase") == "Running"]
        assert pod["spec"]["runtimeClassName"] == "gvisor"
        api_port = int(kube.server.rsplit(":", 1)[1])
        tcp = [
            ["node", node.node_ip, canaries[0].port],
            ["outward interface", canaries[1].host, canaries[1].port],
            ["kubelet", node.node_ip, node.kubelet_port],
            ["api server (Service)", "10.96.0.1", 443],
            ["api server (node)", node.node_ip, api_port],
            ["another pod", victim_ip, 9999],
            ["gateway admin port", release.gateway_ip, 8081],
            ["metadata", "169.254.169.254", 80],
            ["model, directly (allowedEgress ipBlock)", *scripted_model.hostport.split(":")],
        ]
        tcp = [[n, h, int(p)] for n, h, p in tcp]
        dns = [["dns (node)", node.node_ip], ["dns (outside)", "8.8.8.8"]]
        gateway = f"http://{release.gateway_ip}:8080/healthz"
        exec_ = kube.kubectl(
            "exec", "-n", namespace, pod["metadata"]["name"], "--",
            "python3", "-c", PROBE, json.dumps(tcp), json.dumps(dns), gateway,
            check=False, timeout=180,
        )  # fmt: skip
        assert exec_.returncode == 0, exec_.stderr
        seen = json.loads(exec_.stdout.strip().splitlines()[-1])
        print(f"\n[attacker] {json.dumps(seen, indent=1)}")
        assert seen.pop("gateway") == 200
        assert seen.pop("token") is False, "no service-account token in the agent's pod"
        # The model's ip:port is in the policy's allowedEgress, and for an address (not a
        # name) the operator's NetworkPolicy opens an ipBlock to it
        # (controller/_manifests.py): the pod reaches it without the gateway. Noted in
        # docs/testing.md; not asserted either way here.
        seen.pop("model, directly (allowedEgress ipBlock)")
        assert not [k for k, v in seen.items() if v in ("connected", "answered")], seen
        assert [c.accepted for c in canaries] == [[], []]
        assert udp.received == []
        dmesg = kube.kubectl("exec", "-n", namespace, pod["metadata"]["name"], "--", "dmesg",
                             check=False)  # fmt: skip
        assert "gVisor" in dmesg.stdout, dmesg.stdout + dmesg.stderr

        # The restricted namespace refuses privileged and hostNetwork pods.
        for patch in ({"securityContext": {"privileged": True}}, {"hostNetwork": True}):
            body: JSON = {
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": f"bad-{uuid.uuid4().hex[:4]}", "namespace": namespace},
                "spec": {"containers": [{"name": "c", "image": release.images["runner"]}]},
            }  # fmt: skip
            if "hostNetwork" in patch:
                body["spec"]["hostNetwork"] = True
            else:
                body["spec"]["containers"][0].update(patch)
            with pytest.raises(KubectlError) as refused:
                kube.kubectl("create", "-f", "-", input=json.dumps(body))
            assert "violates PodSecurity" in refused.value.stderr, refused.value.stderr
    finally:
        for c in canaries:
            c.close()
        udp.close()
        kube.kubectl("delete", "-f", str(baseline), "--ignore-not-found", check=False)
        kube.delete_namespace(namespace)
        kube.delete_namespace(other)
