"""The CRDs in crds/ are exactly what the models generate, and have the promised shape."""

from __future__ import annotations

import pathlib

import pytest
import yaml

from continue_orchestrator import api
from continue_orchestrator.cli import _crds

CRDS_DIR = pathlib.Path(__file__).resolve().parents[3] / "crds"


@pytest.mark.parametrize("crd", api.crds(), ids=lambda c: c["metadata"]["name"])
def test_committed_crd_matches_models(crd: dict[str, object]) -> None:
    path = CRDS_DIR / api.file_name(crd)
    assert path.exists(), f"{path} is missing: run `make crds`"
    assert path.read_text(encoding="utf-8") == _crds.render(crd), (
        f"{path} drifted from the models: run `make crds` and commit the result"
    )


# Static CRDs that are not generated from the models: kopf's peering resources.
STATIC_CRD_FILES = {"kopf.dev_clusterkopfpeerings.yaml", "kopf.dev_kopfpeerings.yaml"}


def test_no_stray_crd_files() -> None:
    expected = {api.file_name(crd) for crd in api.crds()} | STATIC_CRD_FILES
    assert {p.name for p in CRDS_DIR.glob("*.yaml")} == expected


def _walk(node: object, path: str = "") -> list[tuple[str, dict[str, object]]]:
    found: list[tuple[str, dict[str, object]]] = []
    if isinstance(node, dict):
        found.append((path, node))
        for key, value in node.items():
            found.extend(_walk(value, f"{path}.{key}"))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found.extend(_walk(value, f"{path}[{index}]"))
    return found


@pytest.mark.parametrize("crd", api.crds(), ids=lambda c: c["metadata"]["name"])
def test_schema_is_structural(crd: dict[str, object]) -> None:
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]  # type: ignore[index]
    for path, node in _walk(schema):
        assert "$ref" not in node and "anyOf" not in node and "$defs" not in node, path
        assert "title" not in node or not isinstance(node["title"], str), path
        if "properties" in node:
            assert node.get("type") == "object", f"{path}: properties without type object"
            assert "additionalProperties" not in node, path
        if path.endswith(".properties") or path.endswith(".items"):
            continue


def test_agentrun_crd_columns_names_and_rules() -> None:
    crd = {c["spec"]["names"]["kind"]: c for c in api.crds()}["AgentRun"]
    version = crd["spec"]["versions"][0]
    columns = [c["name"] for c in version["additionalPrinterColumns"]]
    assert columns[:3] == ["Phase", "Policy", "Interventions"] and "Age" in columns
    assert crd["spec"]["names"]["shortNames"] == ["ar"]
    assert "continue" in crd["spec"]["names"]["categories"]
    assert version["subresources"] == {"status": {}}
    spec = version["schema"]["openAPIV3Schema"]["properties"]["spec"]
    messages = [rule["message"] for rule in spec["x-kubernetes-validations"]]
    assert any("immutable" in m for m in messages)
    assert spec["properties"]["timeoutSeconds"]["minimum"] == 60
    assert spec["properties"]["timeoutSeconds"]["maximum"] == 86400
    agent_rules = spec["properties"]["agent"]["x-kubernetes-validations"]
    assert agent_rules[0]["rule"] == "has(self.config) != has(self.configMapKeyRef)"
    assert spec["properties"]["prompt"]["description"].startswith("The task for the agent")


def test_policy_crds_scope_and_short_names() -> None:
    by_kind = {c["spec"]["names"]["kind"]: c for c in api.crds()}
    assert by_kind["RunPolicy"]["spec"]["scope"] == "Namespaced"
    assert by_kind["ClusterRunPolicy"]["spec"]["scope"] == "Cluster"
    assert by_kind["RunPolicy"]["spec"]["names"]["shortNames"] == ["rp"]
    assert by_kind["ClusterRunPolicy"]["spec"]["names"]["shortNames"] == ["crp"]
    rules = by_kind["RunPolicy"]["spec"]["versions"][0]["schema"]["openAPIV3Schema"][
        "properties"
    ]["spec"]["properties"]["rules"]
    assert rules["x-kubernetes-list-type"] == "map"
    assert rules["x-kubernetes-list-map-keys"] == ["name"]


def test_crd_files_are_valid_yaml_documents() -> None:
    for path in CRDS_DIR.glob("*.yaml"):
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
        assert document["kind"] == "CustomResourceDefinition"
