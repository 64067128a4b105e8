"""The chart installed on the real node: helm, values, waiting for real pods."""

from __future__ import annotations

import functools
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from tests.integration.chart import chart_support as chart
from tests.kube import ControlPlane, external
from tests.kube.node import Node

JSON = dict[str, Any]
RELEASE = "continue-orchestrator"
SIGNING_SECRET = "attestation-key"
CA_CONFIGMAP = "trusted-ca"
RECORDS_CLAIM = "records"
# The chart's pods run as this user (charts/continue-orchestrator/templates/_helpers.tpl);
# a hostPath volume ignores fsGroup, so the directory is theirs.
CHART_UID = 65532


def eventually(
    what: str, probe: Callable[[], Any], timeout: float = 120.0, interval: float = 0.5
) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} within {timeout:g} s")
        time.sleep(interval)


@dataclass
class Release:
    kube: ControlPlane
    node: Node
    namespace: str
    images: dict[str, str]
    ledger_url: str
    workdir: Path
    gateway_ip: str = ""
    records_dir: Path | None = None
    timings: dict[str, float] = field(default_factory=dict)
    # A PEM bundle the operator and the gateway trust (chart value trust.caBundle)
    ca_bundle: Path | None = None
    private_key: ec.EllipticCurvePrivateKey = field(
        default_factory=lambda: ec.generate_private_key(ec.SECP256R1())
    )

    @property
    def public_key_path(self) -> Path:
        path = self.workdir / "attestation.pub"
        path.write_bytes(
            self.private_key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
        return path

    def helm(self, *args: str, check: bool = True) -> str:
        return chart.run(*args, env=self.kube.env(), check=check).stdout

    def values(self) -> Path:
        repository, digest = self.images["operator"].split("@", 1)
        values: JSON = {
            "image": {"repository": repository, "digest": digest, "pullPolicy": "Never"},
            "runner": {"image": self.images["runner"]},
            "ledger": {"url": self.ledger_url},
            "operator": {"replicas": 1, "standalone": True,
                         "podDisruptionBudget": {"enabled": False}},
            "attestation": {"mode": "key", "key": {"existingSecret": SIGNING_SECRET}},
        }  # fmt: skip
        if self.ca_bundle is not None:
            values["trust"] = {"caBundle": {"configMap": CA_CONFIGMAP, "key": "ca.crt"}}
        if self.records_dir is not None:
            # The operator reads the gateway's records (publication needs them:
            # docs/publishing.md, "In a cluster"; attestations carry their digests).
            values["recordStore"] = {"existingClaim": RECORDS_CLAIM}
        path = self.workdir / "values.yaml"
        path.write_text(yaml.safe_dump(values))
        return path

    def signing_secret(self) -> None:
        pem = self.private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        path = self.workdir / "key.pem"
        path.write_bytes(pem)
        self.kube.kubectl(
            "create", "secret", "generic", SIGNING_SECRET, "-n", self.namespace,
            f"--from-file=key.pem={path}",
        )  # fmt: skip

    def record_store(self) -> None:
        """The ReadWriteMany claim `recordStore.existingClaim` names: a hostPath
        PersistentVolume on the node (one node: every pod sees the same directory),
        bound by kube-controller-manager's binder. Not under pytest's basetemp (0700)."""
        self.records_dir = Path(tempfile.mkdtemp(prefix="co-e2e-records-"))
        os.chown(self.records_dir, CHART_UID, CHART_UID)
        self.records_dir.chmod(0o770)
        volume = f"{self.namespace}-records"
        documents: list[JSON] = [
            {"apiVersion": "v1", "kind": "PersistentVolume",
             "metadata": {"name": volume},
             "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteMany"],
                      "persistentVolumeReclaimPolicy": "Retain", "storageClassName": "",
                      "hostPath": {"path": str(self.records_dir), "type": "Directory"},
                      "claimRef": {"namespace": self.namespace, "name": RECORDS_CLAIM}}},
            {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
             "metadata": {"name": RECORDS_CLAIM, "namespace": self.namespace},
             "spec": {"accessModes": ["ReadWriteMany"], "storageClassName": "",
                      "volumeName": volume, "resources": {"requests": {"storage": "1Gi"}}}},
        ]  # fmt: skip
        self.kube.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(documents))

        def bound() -> bool:
            phase = self.kube.kubectl(
                "get", "pvc", RECORDS_CLAIM, "-n", self.namespace,
                "-o", "jsonpath={.status.phase}", check=False,
            ).stdout  # fmt: skip
            return phase == "Bound"

        eventually(f"PersistentVolumeClaim {RECORDS_CLAIM} Bound", bound, timeout=60)

    def install(self) -> None:
        """helm install; then point the operator at the gateway Service by its ClusterIP
        (no cluster DNS on this node)."""
        self.signing_secret()
        if self.ca_bundle is not None:
            self.kube.kubectl(
                "create", "configmap", CA_CONFIGMAP, "-n", self.namespace,
                f"--from-file=ca.crt={self.ca_bundle}",
            )  # fmt: skip
        if not external.requested():  # a user's cluster: its nodes' disks are not ours
            self.record_store()
        start = time.monotonic()
        self.helm("install", RELEASE, str(chart.CHART), "-n", self.namespace,
                  "-f", str(self.values()))  # fmt: skip
        ip = self.kube.kubectl(
            "get", "service", f"{RELEASE}-gateway", "-n", self.namespace,
            "-o", "jsonpath={.spec.clusterIP}",
        ).stdout.strip()  # fmt: skip
        self.gateway_ip = ip
        # Helm's server-side apply refuses a second entry of the same name through
        # operator.extraEnv, so the Deployment's own entries are set (a new rollout).
        self.kube.kubectl(
            "set", "env", f"deployment/{RELEASE}-operator", "-n", self.namespace,
            f"ORCHESTRATOR_GATEWAY_URL=http://{ip}:8080",
            f"ORCHESTRATOR_GATEWAY_ADMIN_URL=http://{ip}:8081",
        )  # fmt: skip
        self.wait_ready(start)

    def selector(self, component: str) -> str:
        return f"app.kubernetes.io/instance={RELEASE},app.kubernetes.io/component={component}"

    def pods(self, component: str) -> list[JSON]:
        out = self.kube.kubectl(
            "get", "pods", "-n", self.namespace, "-o", "json",
            "-l", self.selector(component),
        ).stdout  # fmt: skip
        return list(json.loads(out)["items"])

    def ready_pod(self, component: str) -> JSON | None:
        for pod in self.pods(component):
            if pod["metadata"].get("deletionTimestamp"):
                continue
            conditions = {c["type"]: c["status"] for c in pod["status"].get("conditions", [])}
            env = {e["name"]: e.get("value") for e in pod["spec"]["containers"][0].get("env", [])}
            # The pod of the upgrade (the last definition of a name wins).
            if component == "operator" and self.gateway_ip not in str(
                env.get("ORCHESTRATOR_GATEWAY_ADMIN_URL")
            ):
                continue
            if conditions.get("Ready") == "True":
                return pod
        return None

    def wait_ready(self, start: float, timeout: float = 300.0) -> None:
        for component in ("gateway", "operator"):
            try:
                eventually(f"a Ready {component} pod", functools.partial(self.ready_pod, component),
                           timeout=timeout)  # fmt: skip
            except AssertionError as error:
                raise AssertionError(f"{error}\n{self.describe(component)}") from None
            self.timings[f"helm install -> {component} Ready"] = time.monotonic() - start

    def describe(self, component: str) -> str:
        out = self.kube.kubectl(
            "describe", "pods", "-n", self.namespace,
            "-l", self.selector(component), check=False,
        )  # fmt: skip
        logs = self.kube.kubectl(
            "logs", "-n", self.namespace, "--tail=40", "--all-containers",
            "-l", self.selector(component), check=False,
        )  # fmt: skip
        return out.stdout[-4000:] + "\n--- logs ---\n" + logs.stdout + logs.stderr

    def uninstall(self) -> None:
        self.helm("uninstall", RELEASE, "-n", self.namespace, "--wait", check=False)
        if self.records_dir is not None:
            self.kube.kubectl("delete", "pv", f"{self.namespace}-records", "--wait=false",
                              "--ignore-not-found", check=False)  # fmt: skip
            shutil.rmtree(self.records_dir, ignore_errors=True)
