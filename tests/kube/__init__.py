"""Test infrastructure: a real local Kubernetes control plane and a pod executor.

There is no Docker, kind or kubelet on the project's machines, so the tests run
etcd, kube-apiserver and kube-controller-manager built from Go modules
(`hack/build-k8s.sh`) as local processes (`controlplane`), and a small stand-in
for the kubelet that runs pods' commands as local processes (`podexec`); `node`
joins a real node (containerd, kubelet, kube-proxy, gVisor) to the control plane.
Nothing here ships with the operator.
"""

from tests.kube.controlplane import ControlPlane, KubectlError, ensure_binaries
from tests.kube.node import Node, ensure_node_binaries
from tests.kube.podexec import PodExecutor

__all__ = [
    "ControlPlane", "KubectlError", "Node", "PodExecutor", "ensure_binaries",
    "ensure_node_binaries",
]
