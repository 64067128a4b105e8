"""Helpers for the approval and attestation tests on the local control plane.

People are real API-server users: client certificates issued by the test cluster's CA
(CN = user name, O = groups), each with its own kubeconfig, so the API server — not the
test — says who they are. AgentRuns are created and their status written as the
operator would, without running one.
"""

from __future__ import annotations

import datetime
import time
import uuid
from pathlib import Path
from typing import Any

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from tests.kube import ControlPlane
from tests.kube.rest import MERGE_PATCH, ApiError

from continue_orchestrator import api

ROOT = Path(__file__).resolve().parents[2]
VAP = ROOT / "deploy" / "admission" / "runapproval-identity.yaml"
GROUP_PATH = f"/apis/{api.GROUP}/{api.VERSION}"
PINNED_IMAGE = "registry.example/continue-orchestrator/runner@sha256:" + "2" * 64
CONFIG = "name: test-agent\nversion: 0.0.1\nschema: v1\nmodels: []\n"
JSON = dict[str, Any]


def install(kube: ControlPlane) -> None:
    """Our CRDs and the RunApproval identity admission policy (idempotent)."""
    kube.apply(*sorted((ROOT / "crds").glob("orchestrator.continue.dev_*.yaml")))
    kube.wait_established(
        ["agentruns.orchestrator.continue.dev", "runapprovals.orchestrator.continue.dev"]
    )
    kube.apply(VAP)
    _wait_until_enforced(kube)


def _wait_until_enforced(kube: ControlPlane, timeout: float = 30.0) -> None:
    """Admission policies take effect a moment after they are created: probe until a
    RunApproval in someone else's name is refused."""
    probe = run_approval("default", "probe", "probe", "Deny", "someone-else", [])
    path = f"{GROUP_PATH}/namespaces/default/runapprovals"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            created = kube.rest.request("POST", path, probe)
        except ApiError as error:
            if "runapproval-identity" in error.message:
                return
            raise
        kube.rest.request("DELETE", f"{path}/{created['metadata']['name']}")
        time.sleep(0.2)
    raise AssertionError(f"{VAP.name} was not enforced within {timeout:g} s")


def new_namespace(kube: ControlPlane, prefix: str) -> str:
    return kube.create_namespace(f"{prefix}-{uuid.uuid4().hex[:6]}")


def user_kubeconfig(
    kube: ControlPlane, directory: Path, user: str, groups: tuple[str, ...]
) -> Path:
    """A kubeconfig authenticating as ``user`` in ``groups`` with a client certificate."""
    ca_cert = x509.load_pem_x509_certificate((kube.pki / "ca.crt").read_bytes())
    ca_key = serialization.load_pem_private_key((kube.pki / "ca.key").read_bytes(), None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    subject = x509.Name(
        [x509.NameAttribute(NameOID.ORGANIZATION_NAME, g) for g in groups]
        + [x509.NameAttribute(NameOID.COMMON_NAME, user)]
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = directory / f"{user}.crt", directory / f"{user}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "local",
                "cluster": {
                    "server": kube.server,
                    "certificate-authority": str(kube.pki / "ca.crt"),
                },
            }
        ],
        "users": [
            {
                "name": user,
                "user": {"client-certificate": str(cert_path), "client-key": str(key_path)},
            }
        ],
        "contexts": [{"name": user, "context": {"cluster": "local", "user": user}}],
        "current-context": user,
    }
    path = directory / f"{user}.kubeconfig"
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    return path


def grant(
    kube: ControlPlane, namespace: str, name: str, rules: list[JSON], subjects: list[JSON]
) -> None:
    """A Role with ``rules`` bound to ``subjects`` in ``namespace``."""
    rbac = "/apis/rbac.authorization.k8s.io/v1"
    kube.rest.request(
        "POST",
        f"{rbac}/namespaces/{namespace}/roles",
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
         "metadata": {"name": name}, "rules": rules},
    )  # fmt: skip
    kube.rest.request(
        "POST",
        f"{rbac}/namespaces/{namespace}/rolebindings",
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": name},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
            "subjects": subjects,
        },
    )


def user(name: str) -> JSON:
    return {"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": name}


def group(name: str) -> JSON:
    return {"kind": "Group", "apiGroup": "rbac.authorization.k8s.io", "name": name}


APPROVER_ROLE = ROOT / "deploy" / "rbac" / "runapproval-approver.yaml"
# The rules we ship for approvers: the tests prove they are enough.
APPROVER_RULES: list[JSON] = next(
    doc for doc in yaml.safe_load_all(APPROVER_ROLE.read_text()) if doc["kind"] == "ClusterRole"
)["rules"]


def create_run(kube: ControlPlane, namespace: str, name: str, **spec: Any) -> JSON:
    body: JSON = {
        "apiVersion": api.API_VERSION,
        "kind": "AgentRun",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "agent": {"config": CONFIG},
            "prompt": "release the payments service",
            "repository": {"url": "https://github.com/acme/payments", "commit": "a" * 40},
            "policyRef": {"name": "default"},
            **spec,
        },
    }
    return kube.rest.request("POST", f"{GROUP_PATH}/namespaces/{namespace}/agentruns", body)


def set_status(kube: ControlPlane, namespace: str, name: str, status: JSON) -> JSON:
    """Merge ``status`` into the run's status, as the operator would."""
    return kube.rest.request(
        "PATCH",
        f"{GROUP_PATH}/namespaces/{namespace}/agentruns/{name}/status",
        {"status": status},
        content_type=MERGE_PATCH,
    )


def get_run(kube: ControlPlane, namespace: str, name: str) -> JSON:
    return kube.rest.get(f"{GROUP_PATH}/namespaces/{namespace}/agentruns/{name}")


def run_approval(
    namespace: str, run: str, call: str, decision: str, username: str, groups: list[str]
) -> JSON:
    return {
        "apiVersion": api.API_VERSION,
        "kind": "RunApproval",
        "metadata": {"generateName": f"{run}-", "namespace": namespace},
        "spec": {
            "runName": run,
            "callId": call,
            "decision": decision,
            "reason": "test",
            "decidedBy": {"username": username, "groups": groups},
        },
    }


def events(kube: ControlPlane, namespace: str, reason: str) -> list[JSON]:
    try:
        items = kube.rest.get(f"/api/v1/namespaces/{namespace}/events")["items"]
    except ApiError:
        return []
    return [e for e in items if e.get("reason") == reason]
