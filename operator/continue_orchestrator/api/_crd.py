"""CustomResourceDefinitions generated from the pydantic models.

The models are the one source of truth: their JSON schema is rewritten into a
structural OpenAPI v3 schema (refs inlined, nullables unwrapped, int-or-string marked,
titles dropped) that the API server accepts, with the descriptions ``kubectl explain``
shows and the CEL rules the models declare. ``crds/`` holds the output and a test
fails when it drifts from the models.
"""

from __future__ import annotations

from typing import Any

import pydantic

from continue_orchestrator.api import _agentrun, _approval, _base, _runpolicy

_DROPPED_KEYS = frozenset({"title", "additionalProperties", "$defs"})


def _structural(node: Any, defs: dict[str, Any]) -> Any:
    if isinstance(node, list):
        return [_structural(item, defs) for item in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        target = defs[node["$ref"].rsplit("/", 1)[-1]]
        merged = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
        return _structural(merged, defs)
    if "anyOf" in node:
        options = [option for option in node["anyOf"] if option.get("type") != "null"]
        rest = {k: v for k, v in node.items() if k != "anyOf"}
        if {option.get("type") for option in options} == {"integer", "string"}:
            return _structural({**rest, "x-kubernetes-int-or-string": True}, defs)
        if len(options) == 1:
            return _structural({**options[0], **rest}, defs)
        raise ValueError(f"cannot express anyOf {node['anyOf']!r} structurally")
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROPPED_KEYS and not (key == "additionalProperties" and isinstance(value, dict)):
            continue
        if key == "default" and value is None:
            continue
        if key == "const":
            out["enum"] = [value]
            continue
        if key == "description":
            out[key] = " ".join(str(value).split())
            continue
        if key == "properties":
            out[key] = {name: _structural(sub, defs) for name, sub in value.items()}
            continue
        out[key] = _structural(value, defs)
    if "enum" in out and "type" not in out:
        out["type"] = "string"
    return out


def schema_of(model: type[pydantic.BaseModel]) -> dict[str, Any]:
    """The structural OpenAPI v3 schema of a model."""
    raw = model.model_json_schema(by_alias=True, mode="validation")
    result: dict[str, Any] = _structural(raw, raw.get("$defs", {}))
    return result


def _resource_schema(
    model: type[pydantic.BaseModel],
    spec: type[pydantic.BaseModel],
    status: type[pydantic.BaseModel] | None,
) -> dict[str, Any]:
    properties: dict[str, Any] = {
        "apiVersion": {"type": "string", "description": "Versioned schema of this object."},
        "kind": {"type": "string", "description": "Kind of this object."},
        "metadata": {"type": "object"},
        "spec": schema_of(spec),
    }
    if status is not None:
        properties["status"] = schema_of(status)
    return {
        "type": "object",
        "description": " ".join((model.__doc__ or "").split()),
        "required": ["spec"],
        "properties": properties,
    }


def _column(name: str, json_path: str, kind: str = "string", priority: int = 0) -> dict[str, Any]:
    """A printer column (``kubectl get``); priority 1 shows only with ``-o wide``."""
    column: dict[str, Any] = {"name": name, "type": kind, "jsonPath": json_path}
    if priority:
        column["priority"] = priority
    return column


def _crd(
    model: type[pydantic.BaseModel],
    spec: type[pydantic.BaseModel],
    status: type[pydantic.BaseModel] | None = None,
    *,
    plural: str,
    short_name: str,
    columns: list[dict[str, Any]],
    scope: str = "Namespaced",
) -> dict[str, Any]:
    """The CRD of ``model`` (its kind is the class name), with a status subresource when
    it has a ``status`` model."""
    kind = model.__name__
    version: dict[str, Any] = {
        "name": _base.VERSION,
        "served": True,
        "storage": True,
        "schema": {"openAPIV3Schema": _resource_schema(model, spec, status)},
        "additionalPrinterColumns": [
            *columns,
            _column("Age", ".metadata.creationTimestamp", "date"),
        ],
    }
    if status is not None:
        version["subresources"] = {"status": {}}
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{plural}.{_base.GROUP}",
            "labels": {"app.kubernetes.io/part-of": "continue-orchestrator"},
        },
        "spec": {
            "group": _base.GROUP,
            "scope": scope,
            "names": {
                "kind": kind,
                "listKind": f"{kind}List",
                "plural": plural,
                "singular": kind.lower(),
                "shortNames": [short_name],
                "categories": ["continue"],
            },
            "versions": [version],
        },
    }


def crds() -> list[dict[str, Any]]:
    """The project's CRDs, in the order they should be applied."""
    policy_columns = [
        _column("Default", ".spec.defaultEffect"),
        _column("Runtime", ".spec.sandbox.runtimeClassName"),
    ]
    return [
        _crd(
            _agentrun.AgentRun,
            _agentrun.AgentRunSpec,
            _agentrun.AgentRunStatus,
            plural="agentruns",
            short_name="ar",
            columns=[
                _column("Phase", ".status.phase"),
                _column("Policy", ".spec.policyRef.name"),
                _column("Interventions", ".status.interventions.total", "integer"),
                _column("Signed", ".status.attestation.signed", priority=1),
            ],
        ),
        _crd(
            _runpolicy.RunPolicy,
            _runpolicy.RunPolicySpec,
            plural="runpolicies",
            short_name="rp",
            columns=policy_columns,
        ),
        _crd(
            _runpolicy.ClusterRunPolicy,
            _runpolicy.RunPolicySpec,
            plural="clusterrunpolicies",
            short_name="crp",
            columns=policy_columns,
            scope="Cluster",
        ),
        _crd(
            _approval.RunApproval,
            _approval.RunApprovalSpec,
            plural="runapprovals",
            short_name="rap",
            columns=[
                _column("Run", ".spec.runName"),
                _column("Call", ".spec.callId"),
                _column("Decision", ".spec.decision"),
                _column("By", ".spec.decidedBy.username"),
            ],
        ),
    ]


def file_name(crd: dict[str, Any]) -> str:
    """kubebuilder's naming: GROUP_PLURAL.yaml."""
    return f"{crd['spec']['group']}_{crd['spec']['names']['plural']}.yaml"
