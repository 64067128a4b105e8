"""The objects a run owns, built as plain manifests from the run's plan.

Pure functions: the same plan always gives the same manifests, which is what lets a
restarted operator compare what it finds with what it would have created. The pod is
as locked down as Kubernetes allows (gVisor, non-root, read-only root, no capabilities,
no service-account token, no service links); its only network peer is the gateway,
which it also clones the repository through: no forge credential is in any of them.
"""

from __future__ import annotations

import base64
import ipaddress
from collections.abc import Mapping
from typing import Any

from continue_orchestrator import policy, runner, runs
from continue_orchestrator.controller import _names, _settings

JSON = dict[str, Any]


def _meta(plan: runs.Plan, *, annotations: Mapping[str, str] | None = None) -> JSON:
    return {
        "name": plan.name,
        "namespace": plan.namespace,
        "labels": _names.labels(plan.uid),
        "annotations": {
            _names.RUN_NAME_ANNOTATION: str(plan.run.metadata.name),
            _names.INPUTS_DIGEST_ANNOTATION: plan.inputs_digest,
            _names.POLICY_DIGEST_ANNOTATION: plan.snapshot.digest,
            **(annotations or {}),
        },
        "ownerReferences": [plan.owner],
    }


def secret_key(continue_name: str) -> str:
    return f"secret.{continue_name}"


PATCH_KEY = "patch"
"""The verify sandbox's Secret key holding the run's patch (``--patch``)."""
VERIFY_ARGS = ("--verify-only", "--patch", f"{runs.RUN_DIR}/{PATCH_KEY}")
"""The runner's arguments in the fresh sandbox that verifies a publication."""


def secret(plan: runs.Plan, settings: _settings.Settings, *, patch: bytes | None = None) -> JSON:
    """The run's Secret: token, policy snapshot, runner bundle, and delivered values only
    (brokered model credentials and the forge credential go to the gateway and are never
    written here). A verify sandbox's Secret also holds the run's ``patch``."""
    data: dict[str, bytes] = {
        "token": plan.token.encode("ascii"),
        "policy.json": plan.snapshot.content,
        "bundle.json": policy.canonical_json(
            runs.bundle(plan, gateway_url=settings.effective_gateway_url).model_dump(
                by_alias=True, mode="json"
            )
        ),
    }
    for name, value in sorted(plan.secret_values.items()):
        data[secret_key(name)] = value
    if patch is not None:
        data[PATCH_KEY] = patch
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": _meta(plan),
        "type": "Opaque",
        "immutable": True,
        "data": {key: base64.b64encode(value).decode("ascii") for key, value in data.items()},
    }


def _host_port(entry: str) -> tuple[str, str]:
    host, _, port = entry.rpartition(":")
    return host.strip("[]"), port


def dns_granted(snapshot: runs.Snapshot) -> bool:
    """DNS is opened only when the policy lists a port-53 destination."""
    return any(_host_port(entry)[1] == "53" for entry in snapshot.allowed_egress)


def network_policy(plan: runs.Plan, settings: _settings.Settings) -> JSON:
    """Deny all ingress; egress only to the gateway pods' port (plus what policy grants)."""
    egress: list[JSON] = [
        {
            "to": [
                {
                    "namespaceSelector": {
                        "matchLabels": {"kubernetes.io/metadata.name": settings.operator_namespace}
                    },
                    "podSelector": {
                        "matchLabels": {_names.GATEWAY_NAME_LABEL: _names.GATEWAY_NAME}
                    },
                }
            ],
            "ports": [{"protocol": "TCP", "port": settings.gateway_port}],
        }
    ]
    if dns_granted(plan.snapshot):
        egress.append(
            {
                "to": [
                    {
                        "namespaceSelector": {},
                        "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
                    }
                ],
                "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}],
            }
        )
    for entry in plan.snapshot.allowed_egress:
        host, port = _host_port(entry)
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            continue  # names cannot be expressed in a NetworkPolicy; the gateway brokers them
        rule: JSON = {"to": [{"ipBlock": {"cidr": f"{address}/{address.max_prefixlen}"}}]}
        if port != "*":
            rule["ports"] = [{"protocol": "TCP", "port": int(port)}]
        egress.append(rule)
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _meta(plan),
        "spec": {
            "podSelector": {"matchLabels": _names.selector(plan.uid)},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [],
            "egress": egress,
        },
    }


def _resources(plan: runs.Plan, settings: _settings.Settings) -> JSON:
    limits: dict[str, str | int] = {
        "cpu": settings.default_cpu,
        "memory": settings.default_memory,
        "ephemeral-storage": settings.workspace_size,
    }
    limits.update(plan.snapshot.resources.get("limits", {}))
    requests: dict[str, str | int] = {"cpu": "100m", "memory": "256Mi"}
    requests.update(plan.snapshot.resources.get("requests", {}))
    for key in list(requests):
        if key not in plan.snapshot.resources.get("requests", {}) and key in limits:
            requests[key] = min(requests[key], limits[key], key=_quantity)
    return {"requests": requests, "limits": limits}


_SUFFIXES = {
    "m": 1e-3,
    "": 1.0,
    "k": 1e3,
    "M": 1e6,
    "G": 1e9,
    "T": 1e12,
    "Ki": 2.0**10,
    "Mi": 2.0**20,
    "Gi": 2.0**30,
    "Ti": 2.0**40,
}


def _quantity(value: str | int) -> float:
    text = str(value)
    for suffix in sorted(_SUFFIXES, key=len, reverse=True):
        if suffix and text.endswith(suffix):
            try:
                return float(text[: -len(suffix)]) * _SUFFIXES[suffix]
            except ValueError:
                break
    try:
        return float(text)
    except ValueError:
        return float("inf")


NON_ROOT_UID = 65532


def pod(plan: runs.Plan, settings: _settings.Settings, *, verify: bool = False) -> JSON:
    """The sandbox pod; with ``verify``, the fresh sandbox that verifies a publication
    (the runner's ``--verify-only`` on the run's patch, under ``plan.run_id``)."""
    env: list[JSON] = [
        {"name": "ORCHESTRATOR_RUN_UID", "value": plan.uid},
        {"name": "ORCHESTRATOR_RUN_NAME", "value": str(plan.run.metadata.name)},
        {"name": "ORCHESTRATOR_RUN_NAMESPACE", "value": plan.namespace},
        {"name": "ORCHESTRATOR_RUN_DIR", "value": runs.RUN_DIR},
        {"name": "ORCHESTRATOR_WORKSPACE", "value": runs.WORKSPACE_DIR},
        {"name": "ORCHESTRATOR_GATEWAY_URL", "value": settings.effective_gateway_url},
        {"name": "ORCHESTRATOR_INPUTS_DIGEST", "value": plan.inputs_digest},
        {"name": "ORCHESTRATOR_POLICY_DIGEST", "value": plan.snapshot.digest},
        {"name": "HOME", "value": "/tmp"},
        {"name": runner.BUNDLE_FILE_ENV, "value": f"{runs.RUN_DIR}/bundle.json"},
    ]
    container_security: JSON = {
        "runAsNonRoot": True,
        "runAsUser": NON_ROOT_UID,
        "runAsGroup": NON_ROOT_UID,
        "readOnlyRootFilesystem": True,
        "allowPrivilegeEscalation": False,
        "privileged": False,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": _meta(
            plan, annotations={_names.RUNNER_IMAGE_ANNOTATION: settings.runner_image}
        ),
        "spec": {
            "runtimeClassName": plan.snapshot.runtime_class,
            "restartPolicy": "Never",
            "automountServiceAccountToken": False,
            "enableServiceLinks": False,
            "hostNetwork": False,
            "hostPID": False,
            "hostIPC": False,
            "activeDeadlineSeconds": plan.timeout_seconds,
            "terminationGracePeriodSeconds": 10,
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": NON_ROOT_UID,
                "runAsGroup": NON_ROOT_UID,
                "fsGroup": NON_ROOT_UID,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "containers": [
                {
                    "name": _names.CONTAINER,
                    "image": settings.runner_image,
                    "imagePullPolicy": "IfNotPresent",
                    "command": list(settings.runner_command),
                    **({"args": list(VERIFY_ARGS)} if verify else {}),
                    "workingDir": runs.WORKSPACE_DIR,
                    "env": env,
                    "securityContext": container_security,
                    "resources": _resources(plan, settings),
                    "terminationMessagePolicy": "FallbackToLogsOnError",
                    "volumeMounts": [
                        {"name": "workspace", "mountPath": runs.WORKSPACE_DIR},
                        {"name": "tmp", "mountPath": "/tmp"},
                        {"name": "run", "mountPath": runs.RUN_DIR, "readOnly": True},
                    ],
                }
            ],
            "volumes": [
                {"name": "workspace", "emptyDir": {"sizeLimit": settings.workspace_size}},
                {"name": "tmp", "emptyDir": {"medium": "Memory", "sizeLimit": "256Mi"}},
                {
                    "name": "run",
                    "secret": {
                        "secretName": plan.name,
                        "defaultMode": 0o440,
                        "items": [
                            {"key": key, "path": key}
                            for key in ("token", "policy.json", "bundle.json")
                            + ((PATCH_KEY,) if verify else ())
                        ]
                        + [
                            {"key": secret_key(name), "path": f"secrets/{name}"}
                            for name in sorted(plan.secret_values)
                        ],
                    },
                },
            ],
        },
    }
