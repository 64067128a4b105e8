"""Fuzzing manifests and policies: whatever a file holds, the only failure is a typed one.

``api.parse`` (every manifest, the CLI's ``validate``), ``api.load_file`` (any bytes in a
file), and ``policy.compile`` of RunPolicies whose rules hold arbitrary globs, commands
and CEL conditions raise ``errors.OrchestratorError`` subclasses and nothing else, and
never hang. Derandomized, so a run is reproducible.
"""

from __future__ import annotations

import contextlib
import pathlib
import tempfile
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from continue_orchestrator import api, cli, errors, policy

FUZZ = settings(
    max_examples=150,
    deadline=3000,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
VERSION = "orchestrator.continue.dev/v1alpha1"

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=10),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=15,
)
documents = st.fixed_dictionaries(
    {
        "apiVersion": st.just(VERSION) | json_values,
        "kind": st.sampled_from(sorted(api.KINDS)) | json_values,
    },
    optional={
        "metadata": st.fixed_dictionaries(
            {}, optional={"name": json_values, "namespace": json_values}
        )
        | json_values,
        "spec": st.dictionaries(
            st.sampled_from(
                [
                    "prompt",
                    "agent",
                    "repository",
                    "policyRef",
                    "rules",
                    "secrets",
                    "defaultEffect",
                    "toolResults",
                    "verify",
                    "allowedEgress",
                ]
            ),
            json_values,
            max_size=5,
        ),
    },
)


@FUZZ
@given(document=documents | json_values)
def test_parse_raises_only_manifest_errors(document: Any) -> None:
    with contextlib.suppress(errors.ManifestError):
        api.parse(document, where="fuzz")


@FUZZ
@given(data=st.binary(max_size=200) | st.text(max_size=200).map(str.encode))
def test_load_file_raises_only_manifest_errors(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as directory:
        path = pathlib.Path(directory) / "m.yaml"
        path.write_bytes(data)
        with contextlib.suppress(errors.ManifestError):
            list(api.load_file(path))


globs = st.text(alphabet="*?[]{}!/.-_ab\\^$", max_size=12)
cel = st.one_of(
    st.text(max_size=30),
    st.sampled_from(
        [
            'request.path.startsWith("src")',
            'request.run.labels["tier"] == "prod"',
            "request.port > 1",
            "request.comand == 1",
            "1 +",
            '"x".matches("(")',
        ]
    ),
)
rules = st.fixed_dictionaries(
    {
        "name": st.from_regex(r"[a-z][a-z0-9-]{0,10}", fullmatch=True),
        "actions": st.lists(st.sampled_from([a.value for a in api.Action]), min_size=1, max_size=3),
        "effect": st.sampled_from(["Allow", "Deny"]),
    },
    optional={
        "tools": st.lists(globs, max_size=2),
        "paths": st.lists(globs, max_size=2),
        "commands": st.lists(globs, max_size=2),
        "when": cel,
        "arguments": st.dictionaries(st.text(max_size=5), globs, max_size=2),
    },
)
patterns = st.lists(st.text(alphabet="()[]{}*+?\\.|^$ab0-9,", max_size=10), min_size=1, max_size=3)


@FUZZ
@given(
    rules=st.lists(rules, max_size=4, unique_by=lambda r: r["name"]),
    withhold=st.lists(
        st.fixed_dictionaries({"name": st.just("w"), "patterns": patterns}), max_size=1
    ),
)
def test_compile_raises_only_typed_errors(rules: list[dict[str, Any]], withhold: Any) -> None:
    spec: dict[str, Any] = {"rules": rules}
    if withhold:
        spec["toolResults"] = {"withhold": withhold}
    document = {
        "apiVersion": VERSION,
        "kind": "RunPolicy",
        "metadata": {"name": "p", "namespace": "n"},
        "spec": spec,
    }
    try:
        compiled = policy.compile([api.parse(document, where="fuzz")])
    except (errors.ManifestError, errors.PolicyError):
        return
    request = policy.Request(api.Action.FILE_READ, path="src/a.py", run=policy.RunContext())
    assert isinstance(policy.decide(compiled, request).effect, api.Effect)


def test_odd_documents_are_manifest_errors() -> None:
    """Each of these raised AttributeError or TypeError instead of a ManifestError."""
    for document in (
        {"apiVersion": VERSION, "kind": "RunPolicy", "metadata": "x"},
        {"apiVersion": VERSION, "kind": "RunPolicy", "metadata": [1]},
        {"apiVersion": VERSION, "kind": ["RunPolicy"]},
        {"apiVersion": VERSION, "kind": {"a": 1}},
    ):
        with pytest.raises(errors.ManifestError):
            api.parse(document, where="t")


@pytest.mark.parametrize("data", [b"\xff\xfe kind: RunPolicy", b"a: " + b"{a: " * 1200])
def test_odd_files_are_clear_errors(
    data: bytes, tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Not UTF-8 (UnicodeDecodeError) and nested 1,200 deep (RecursionError) were
    tracebacks from ``orchestrator validate`` and ``policy test``, not one line."""
    path = tmp_path / "m.yaml"
    path.write_bytes(data)
    with pytest.raises(errors.ManifestError):
        list(api.load_file(path))
    assert cli.main(["validate", str(path)]) == 1
    assert cli.main(["policy", "test", str(path), str(path)]) == 1
    err = capsys.readouterr().err
    assert "m.yaml" in err and "Traceback" not in err
    with pytest.raises(errors.PolicyError):
        policy.load_cases(path)
