"""The e2e tests against a cluster of the user's (`make e2e KUBECONFIG=…`), e.g. kind.

This machine kind has no Docker, so the e2e tests normally run on the control plane
and real node of `tests.kube` (controlplane.py, node.py). A user with Docker can run the
same tests against any cluster that has a RuntimeClass `gvisor` and enforces
NetworkPolicy; `hack/kind-config.yaml` makes such a kind cluster. Two small stand-ins
give those tests the same surface as the local ones:

- `ExternalCluster` is a `ControlPlane` whose kubeconfig is the user's (client
  certificates, as kind writes them); `start()` checks it and `stop()` leaves it alone;
- `KindNode` has what the tests read of a `Node`: `name`, `node_ip` (the address pods
  reach the test process at: for kind, the Docker network's gateway), `pod_cidr`,
  `kubelet_port`, and `import_image`, which loads an archive with `kind load
  image-archive` and tags it by digest on every node, as `Node.import_image` does.

Nothing here runs on this project's machines (no Docker); it is kept thin on purpose:
everything a test does goes through the same fixtures and helpers as the local run.
Environment (set by the Makefile's `e2e` target): CO_E2E_KUBECONFIG, CO_E2E_HOST_ADDRESS,
CO_E2E_KIND_CLUSTER (default `kind`), CO_E2E_POD_CIDR (default 172.16.0.0/12).
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from tests.kube.controlplane import ControlPlane, KubectlError
from tests.kube.node import ArchiveImage

ENV_KUBECONFIG = "CO_E2E_KUBECONFIG"


def requested() -> bool:
    """True when the e2e tests are to run against the user's cluster."""
    return bool(os.environ.get(ENV_KUBECONFIG))


class ExternalClusterError(RuntimeError):
    """The user's cluster cannot run the e2e tests; the message says why and what to do."""


def _kubectl_dir() -> Path:
    found = shutil.which("kubectl")
    if found is None:
        raise ExternalClusterError(
            "kubectl is not on PATH: install it to run `make e2e KUBECONFIG=…`"
        )
    return Path(found).parent


@dataclass
class ExternalCluster(ControlPlane):
    """The user's cluster, reached with their kubeconfig copied into `state_dir`."""

    bin_dir: Path = field(default_factory=_kubectl_dir)
    source: Path = field(default_factory=lambda: Path(os.environ[ENV_KUBECONFIG]))
    runtime_class: str = "gvisor"  # what the agent's pods name

    @property
    def server(self) -> str:
        return str(self._cluster()["server"])

    def start(self, timeout: float = 90.0) -> None:
        """Copy the kubeconfig and its client certificate into `state_dir`, then check the
        cluster answers and has what the tests need."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.pki.mkdir(exist_ok=True)
        if not self.source.is_file():
            raise ExternalClusterError(f"{ENV_KUBECONFIG}={self.source}: no such file")
        shutil.copyfile(self.source, self.kubeconfig)
        config = self._config()
        user = self._entry(config, "users", self._context(config)["user"])
        cluster = self._cluster()
        for field_name, target in (
            ("client-certificate-data", "admin.crt"),
            ("client-key-data", "admin.key"),
        ):
            if field_name not in user:
                raise ExternalClusterError(
                    f"{self.source}: the current user has no {field_name}; the tests' REST "
                    "client needs a client certificate (kind's kubeconfig has one)"
                )
            (self.pki / target).write_bytes(base64.b64decode(user[field_name]))
        if "certificate-authority-data" not in cluster:
            raise ExternalClusterError(
                f"{self.source}: the current cluster has no certificate-authority-data"
            )
        (self.pki / "ca.crt").write_bytes(base64.b64decode(cluster["certificate-authority-data"]))
        try:
            self.kubectl("get", "runtimeclass", self.runtime_class, timeout=timeout)
        except KubectlError as e:
            raise ExternalClusterError(
                f"{self.source}: no RuntimeClass `{self.runtime_class}` "
                f"({e.stderr.strip()}); make the cluster with hack/kind-config.yaml and "
                "apply hack/kind-runtimeclass.yaml"
            ) from e

    def stop(self, grace: float = 3.0) -> None:
        """The cluster is the user's: nothing to stop."""

    def log_tail(self, lines: int = 30) -> str:
        return f"(the cluster's logs are the user's: {self.source})"

    def env(self) -> dict[str, str]:
        return {**os.environ, "KUBECONFIG": str(self.kubeconfig)}

    def _config(self) -> dict[str, object]:
        loaded = yaml.safe_load(self.kubeconfig.read_text())
        if not isinstance(loaded, dict):
            raise ExternalClusterError(f"{self.source}: not a kubeconfig")
        return loaded

    def _context(self, config: dict[str, object]) -> dict[str, str]:
        return self._entry(config, "contexts", str(config.get("current-context", "")))

    def _cluster(self) -> dict[str, str]:
        config = self._config()
        return self._entry(config, "clusters", self._context(config)["cluster"])

    def _entry(self, config: dict[str, object], kind: str, name: str) -> dict[str, str]:
        entries = config.get(kind)
        for entry in entries if isinstance(entries, list) else []:
            if entry.get("name") == name:
                return dict(entry[kind[:-1]])
        raise ExternalClusterError(f"{self.source}: no {kind[:-1]} named {name!r}")


@dataclass
class KindNode:
    """A kind cluster's nodes, as the e2e tests see a node."""

    kube: ExternalCluster
    cluster: str = field(default_factory=lambda: os.environ.get("CO_E2E_KIND_CLUSTER", "kind"))
    node_ip: str = field(default_factory=lambda: os.environ.get("CO_E2E_HOST_ADDRESS", ""))
    pod_cidr: str = field(
        # where pods' connections to this machine come from: kind masquerades them to its
        # node's address on the Docker network (Docker's default pools are in 172.16/12)
        default_factory=lambda: os.environ.get("CO_E2E_POD_CIDR", "172.16.0.0/12")
    )
    kubelet_port: int = 10250
    network_policy: bool = True
    startup_seconds: float = 0.0
    name: str = ""

    def start(self) -> KindNode:
        if not self.node_ip:
            raise ExternalClusterError(
                "CO_E2E_HOST_ADDRESS is not set: the address pods reach this machine at "
                "(for kind: `docker network inspect kind -f '{{(index .IPAM.Config 0).Gateway}}'`)"
            )
        nodes = json.loads(self.kube.kubectl("get", "nodes", "-o", "json").stdout)["items"]
        workers = [n for n in nodes if not n["spec"].get("taints")] or nodes
        self.name = workers[0]["metadata"]["name"]
        return self

    def stop(self) -> None:
        """The cluster is the user's: nothing to stop."""

    def log_tail(self, *names: str, lines: int = 40) -> str:
        return f"(kind cluster {self.cluster}: `kind export logs --name {self.cluster}`)"

    def import_image(self, path: Path, name: str | None = None) -> str:
        """`kind load image-archive` (ctr import on every node), then the tags
        `Node.import_image` makes, on every node."""
        with contextlib.ExitStack() as stack:
            image = ArchiveImage.open(Path(path), name, stack)
            self._run("kind", "load", "image-archive", str(image.archive), "--name", self.cluster)
            nodes = self._run("kind", "get", "nodes", "--name", self.cluster).split()
            for node in nodes:
                for source, target in image.tags():
                    self._run(
                        "docker", "exec", node, "ctr", "--namespace=k8s.io", "images", "tag",
                        "--force", source, target,
                    )  # fmt: skip
        return image.by_digest

    @staticmethod
    def _run(*argv: str) -> str:
        result = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=600)
        if result.returncode != 0:
            raise ExternalClusterError(
                f"{' '.join(argv)} exited {result.returncode}: {result.stderr.strip()}"
            )
        return result.stdout
