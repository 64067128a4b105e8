"""``orchestrator run``'s inputs: the demo loads as the operator would see it, and every
kind of bad input is refused before anything starts, saying what is wrong and where."""

from __future__ import annotations

import pathlib
import shutil

import pytest

from continue_orchestrator import api, errors, local

ROOT = pathlib.Path(__file__).resolve().parents[3]
DEMO = ROOT / "examples" / "demo"
CONFIG_MAP = f"demo-agent={DEMO / 'continue' / 'config.yaml'}"


@pytest.fixture
def demo(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> pathlib.Path:
    for name in ("agentrun.yaml", "runpolicy.yaml", "clusterrunpolicy.yaml"):
        shutil.copy(DEMO / name, tmp_path / name)
    monkeypatch.setenv("DEMO_KEY", "sk-test-0123456789")
    return tmp_path


def _load(directory: pathlib.Path, **kwargs: object) -> local.Inputs:
    options: dict[str, object] = {"config_maps": [CONFIG_MAP],
                                  "secrets": ["OPENAI_API_KEY=env:DEMO_KEY"], **kwargs}  # fmt: skip
    return local.load(directory / "agentrun.yaml", **options)  # type: ignore[arg-type]


def test_the_demo_loads_with_baseline_first(demo: pathlib.Path) -> None:
    inputs = _load(demo)
    assert [type(p).__name__ for p in inputs.policies] == ["ClusterRunPolicy", "RunPolicy"]
    assert inputs.run_policy.metadata.name == "demo-fixer"
    assert inputs.config == (DEMO / "continue" / "config.yaml").read_text()
    assert inputs.secrets == {"OPENAI_API_KEY": "sk-test-0123456789"}
    assert inputs.namespace == "demo" and isinstance(inputs.run, api.AgentRun)


def test_a_missing_run_policy_names_the_field_and_the_flag(demo: pathlib.Path) -> None:
    (demo / "runpolicy.yaml").unlink()
    with pytest.raises(errors.ManifestError) as raised:
        _load(demo)
    assert "spec.policyRef.name" in raised.value.message
    assert "'demo-fixer'" in raised.value.message and "--policy FILE" in raised.value.message


def test_a_run_policy_of_another_namespace_does_not_count(demo: pathlib.Path) -> None:
    text = (demo / "runpolicy.yaml").read_text().replace("namespace: demo", "namespace: other")
    (demo / "runpolicy.yaml").write_text(text)
    with pytest.raises(errors.ManifestError, match="RunPolicy 'demo-fixer'"):
        _load(demo)


def test_a_missing_config_map_says_how_to_give_it(demo: pathlib.Path) -> None:
    with pytest.raises(errors.ManifestError) as raised:
        _load(demo, config_maps=[])
    assert "ConfigMap 'demo-agent' was not found" in raised.value.message
    assert "--config-map demo-agent=" in raised.value.message


def test_a_secret_without_a_value_or_grant_is_refused(demo: pathlib.Path) -> None:
    with pytest.raises(errors.ManifestError, match=r"spec.secrets\[0\].name.*has no value"):
        _load(demo, secrets=[])
    policy = (
        (demo / "runpolicy.yaml")
        .read_text()
        .replace("allowedSecrets: [OPENAI_API_KEY]", "allowedSecrets: []")
    )
    (demo / "runpolicy.yaml").write_text(policy)
    with pytest.raises(errors.PolicyError, match=r"not in the RunPolicy.s spec\.allowedSecrets"):
        _load(demo)


@pytest.mark.parametrize(
    ("flag", "problem"),
    [
        ("OPENAI_API_KEY", "expected NAME=env:VARIABLE"),
        ("OPENAI_API_KEY=DEMO_KEY", "expected NAME=env:VARIABLE"),
        ("OPENAI_API_KEY=env:NOT_SET_ANYWHERE_42", "NOT_SET_ANYWHERE_42 is not set"),
        ("OPENAI_API_KEY=file:/nonexistent/key", "cannot read the secret file"),
    ],
)
def test_bad_secret_flags_say_what_is_wrong(flag: str, problem: str) -> None:
    with pytest.raises(errors.ManifestError, match=problem):
        local.parse_secret_flag(flag)


def test_one_agent_run_per_file(demo: pathlib.Path) -> None:
    text = (demo / "agentrun.yaml").read_text()
    (demo / "agentrun.yaml").write_text(text + "\n---\n" + text)
    with pytest.raises(errors.ManifestError, match="exactly one AgentRun, found 2"):
        _load(demo)


def test_an_invalid_policy_points_at_its_file_and_field(demo: pathlib.Path) -> None:
    text = (demo / "runpolicy.yaml").read_text().replace("effect: Deny", "effect: Maybe", 1)
    (demo / "runpolicy.yaml").write_text(text)
    with pytest.raises(errors.ManifestError) as raised:
        _load(demo)
    assert "runpolicy.yaml" in raised.value.message and "effect" in raised.value.message


def test_the_repository_credential_is_read_for_the_gateway_only(
    demo: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FORGE_TOKEN", "forge-token-for-local-0123456789")
    inputs = _load(demo, repository_credential="env:FORGE_TOKEN")
    assert inputs.git_token == "forge-token-for-local-0123456789"
    assert "forge-token-for-local" not in repr(inputs)
    assert _load(demo).git_token is None
    with pytest.raises(errors.ManifestError) as raised:
        _load(demo, repository_credential="FORGE_TOKEN")
    assert "expected env:VARIABLE or file:PATH" in raised.value.message
    assert "--repository-credential" in raised.value.message
