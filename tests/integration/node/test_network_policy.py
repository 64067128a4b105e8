"""NetworkPolicy on the real node, enforced by kube-router's firewall (iptables + ipset).

Two gVisor client pods knock on a server pod every half second and print what happened.
Before any policy both get through; after a policy that denies one of them all egress
(and allows the other egress to the server's port only), the denied one's knocks fail,
also on the node's own kubelet port, and the allowed one's still succeed."""

from __future__ import annotations

import time

import pytest
from tests.integration.node.test_node import create, pod, wait_phase
from tests.kube import ControlPlane
from tests.kube.node import Node

pytestmark = [pytest.mark.node, pytest.mark.cluster]

NETPOL = "/apis/networking.k8s.io/v1/namespaces/{ns}/networkpolicies"


def knocker(ip: str) -> list[str]:
    """Print OK or FAIL with a sequence number for each attempt, forever."""
    return [
        "sh",
        "-c",
        f"i=0; while :; do i=$((i+1)); if printf 'GET / HTTP/1.0\\r\\n\\r\\n' "
        f'| nc -w 1 {ip} 8080 | grep -q hello; then echo "$i OK"; '
        'else echo "$i FAIL"; fi; sleep 0.5; done',
    ]


def results(kube: ControlPlane, ns: str, name: str) -> list[tuple[int, str]]:
    out = kube.kubectl("logs", "-n", ns, name).stdout.split("\n")
    pairs = [line.split() for line in out if line.strip()]
    return [(int(p[0]), p[1]) for p in pairs if len(p) == 2 and p[0].isdigit()]


def wait_for(what: str, probe: object, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if probe():  # type: ignore[operator]
            return
        time.sleep(0.5)
    raise AssertionError(f"{what} within {timeout:.0f}s")


def test_network_policy_denies_egress_and_allows_what_it_names(
    kube: ControlPlane, node: Node, busybox: str, node_namespace: str
) -> None:
    if not node.network_policy:
        pytest.fail("the node runs no NetworkPolicy enforcer (kube-router)")
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
                "mkdir -p /www && echo hello > /www/index.html && exec httpd -f -p 8080 -h /www",
            ],
            labels={"app": "web"},
        ),
    )
    web = wait_phase(kube, node, ns, "web", ("Running",))
    ip = web["status"]["podIP"]
    for name, role in (("allowed", "allowed"), ("denied", "denied")):
        create(kube, ns, pod(name, busybox, knocker(ip), labels={"role": role}))
    for name in ("allowed", "denied"):
        wait_phase(kube, node, ns, name, ("Running",))
    # No policy yet: both get through, to the server and to the node (its kubelet port).
    knock_node = ["sh", "-c", f"nc -w 2 {node.node_ip} {node.kubelet_port} </dev/null"]
    before = kube.kubectl("exec", "-n", ns, "denied", "--", *knock_node, check=False)
    assert before.returncode == 0, before.stderr
    for name in ("allowed", "denied"):
        wait_for(
            f"{name} reaches web before any policy",
            lambda name=name: any(r == "OK" for _, r in results(kube, ns, name)),
        )

    path = NETPOL.format(ns=ns)
    kube.rest.request(
        "POST",
        path,
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {"name": "deny-egress"},
            "spec": {
                "podSelector": {"matchLabels": {"role": "denied"}},
                "policyTypes": ["Egress"],
                "egress": [],
            },
        },
    )
    kube.rest.request(
        "POST",
        path,
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {"name": "allow-web"},
            "spec": {
                "podSelector": {"matchLabels": {"role": "allowed"}},
                "policyTypes": ["Egress"],
                "egress": [
                    {
                        "to": [{"podSelector": {"matchLabels": {"app": "web"}}}],
                        "ports": [{"protocol": "TCP", "port": 8080}],
                    }
                ],
            },
        },
    )
    marks = {name: max(i for i, _ in results(kube, ns, name)) for name in ("allowed", "denied")}

    def settled(name: str, want: str) -> bool:
        """The last 4 attempts after the policy went in all came out `want`."""
        after = [r for i, r in results(kube, ns, name) if i > marks[name]]
        return len(after) >= 4 and all(r == want for r in after[-4:])

    wait_for("the denied pod's egress fails", lambda: settled("denied", "FAIL"))
    wait_for("the allowed pod still reaches web", lambda: settled("allowed", "OK"))
    # The denial covers the node itself too (kube-router filters INPUT as well as FORWARD).
    after = kube.kubectl("exec", "-n", ns, "denied", "--", *knock_node, check=False)
    assert after.returncode != 0, after.stdout
