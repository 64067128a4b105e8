"""docs/crd-reference.md is what the models render, field by field."""

from __future__ import annotations

import pathlib

from continue_orchestrator import api

REFERENCE = pathlib.Path(__file__).resolve().parents[3] / "docs" / "crd-reference.md"


def test_reference_matches_models() -> None:
    assert REFERENCE.read_text(encoding="utf-8") == api.reference_markdown() + "\n", (
        "docs/crd-reference.md drifted from the models: run `make crds` and commit it"
    )


def test_reference_lists_every_spec_field_with_its_rules() -> None:
    text = api.reference_markdown()
    for field in ("spec.prompt", "spec.rules[].effect", "spec.decidedBy.username"):
        assert f"`{field}`" in text
    assert "spec is immutable except spec.cancel" in text
    assert "`Allow` \\| `Deny` \\| `RequireApproval`" in text
