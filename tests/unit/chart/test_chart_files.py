"""The chart ships copies (Helm reads only files inside the chart): they must not drift.

crds/ must equal the repository's generated crds/ byte for byte (`make crds` writes
both), and the admission policy and baseline policy must equal their sources.
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[3]
CHART = ROOT / "charts" / "continue-orchestrator"

COPIES = {
    CHART / "files" / "runapproval-identity.yaml": ROOT
    / "deploy/admission/runapproval-identity.yaml",
    CHART / "files" / "baseline.yaml": ROOT / "policies" / "baseline.yaml",
}


def test_chart_crds_equal_the_generated_crds_byte_for_byte() -> None:
    ours = {p.name: p.read_bytes() for p in (CHART / "crds").iterdir()}
    source = {p.name: p.read_bytes() for p in (ROOT / "crds").glob("*.yaml")}
    assert source, "the repository has no crds/*.yaml"
    assert sorted(ours) == sorted(source), "run `make crds`: the file sets differ"
    stale = [name for name in source if ours[name] != source[name]]
    assert not stale, f"run `make crds`: charts/continue-orchestrator/crds/ differs in {stale}"


def test_copied_files_equal_their_sources() -> None:
    for copy, source in COPIES.items():
        assert copy.read_bytes() == source.read_bytes(), f"{copy} differs from {source}: copy it"


def test_baseline_is_a_cluster_run_policy() -> None:
    document = yaml.safe_load((CHART / "files" / "baseline.yaml").read_text())
    assert document["kind"] == "ClusterRunPolicy"
    assert document["metadata"] == {"name": "baseline"}  # the template adds labels only


def test_every_value_is_in_the_schema_and_the_defaults_fit_it() -> None:
    """values.yaml and values.schema.json describe the same keys (additionalProperties is
    false everywhere, so a key documented but not in the schema would fail every install)."""
    schema = json.loads((CHART / "values.schema.json").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())

    def walk(value: object, node: dict[str, object], path: str) -> None:
        if node.get("type") != "object" or "properties" not in node:
            return
        assert isinstance(value, dict), path
        properties = node["properties"]
        assert isinstance(properties, dict)
        missing = sorted(set(value) - set(properties))
        assert not missing, f"{path}: {missing} in values.yaml but not in the schema"
        for key, child in value.items():
            walk(child, properties[key], f"{path}.{key}")

    walk(values, schema, "values")
    assert schema["additionalProperties"] is False
