"""config.yaml rewrite: every model through the gateway, the rest byte for byte, and
secrets only as the policy grants them."""

from __future__ import annotations

import pytest
import yaml

from continue_orchestrator import errors, runner

BASE = "http://10.213.0.1:8080/runs/r1/v1"
TOKEN = "run-token-0123456789abcdef"

USER_CONFIG = """\
# team config, do not reformat
name: ci-fixer   # trailing comment
version: 1.0.0
schema: v1
models:
  - name: fixer
    provider: openai
    model: gpt-4.1
    apiBase: https://api.openai.com/v1
    apiKey: ${{ secrets.OPENAI_API_KEY }}
    roles:
      - chat
  - name: claude
    provider: anthropic
    model: claude-sonnet-4
    apiKey: "${{ secrets.ANTHROPIC_KEY }}"
    roles: [chat]
  - {name: local, provider: openai, model: qwen, apiBase: "http://x/v1"}
mcpServers:
  - name: tracker
    command: tracker-mcp
    env:
      TOKEN: 'Bearer ${{ secrets.TRACKER_TOKEN }}'
rules:
  - Keep changes minimal.
"""


def rewrite(text: str = USER_CONFIG, **kwargs: object) -> runner.RewrittenConfig:
    options: dict[str, object] = {
        "api_base": BASE,
        "api_key": TOKEN,
        "allowed_secrets": {"OPENAI_API_KEY", "ANTHROPIC_KEY", "TRACKER_TOKEN"},
        "secret_values": {"TRACKER_TOKEN": 'trk-"quoted"-value'},
    }
    options.update(kwargs)
    return runner.rewrite_config(text, **options)  # type: ignore[arg-type]


def test_every_model_points_at_the_gateway_with_the_run_token() -> None:
    result = rewrite()
    document = yaml.safe_load(result.text)
    assert [m["apiBase"] for m in document["models"]] == [BASE] * 3
    assert [m["apiKey"] for m in document["models"]] == [TOKEN] * 3
    assert result.models == ("fixer", "claude", "local")
    assert result.brokered == {"OPENAI_API_KEY", "ANTHROPIC_KEY"}
    assert result.resolved == {"TRACKER_TOKEN"}
    assert document["mcpServers"][0]["env"]["TOKEN"] == 'Bearer trk-"quoted"-value'
    assert "api.openai.com" not in result.text
    assert "secrets." not in result.text


def test_everything_else_survives_byte_for_byte() -> None:
    result = rewrite()
    assert result.in_place
    kept = [line for line in USER_CONFIG.splitlines() if "api" not in line and "TOKEN" not in line]
    lines = result.text.splitlines()
    for line in kept:
        if "{name: local" in line:
            continue
        assert line in lines
    assert lines[0] == "# team config, do not reformat"
    assert "name: ci-fixer   # trailing comment" in lines
    # The inserted apiBase sits with its model, indented like its siblings.
    claude = lines.index("  - name: claude")
    assert f'    apiBase: "{BASE}"' in lines[claude : claude + 7]


def test_unchanged_config_without_models_or_secrets_is_refused_clearly() -> None:
    with pytest.raises(errors.ManifestError, match="no 'models' list"):
        rewrite("name: x\n")
    with pytest.raises(errors.ManifestError, match="not valid YAML"):
        rewrite("models: [\n")


def test_ungranted_secret_is_a_policy_stop_naming_secret_and_line() -> None:
    with pytest.raises(errors.PolicyStopError) as raised:
        rewrite(allowed_secrets={"OPENAI_API_KEY", "ANTHROPIC_KEY"})
    assert "TRACKER_TOKEN" in raised.value.message
    assert "line 23" in raised.value.message


def test_ungranted_model_credential_is_a_policy_stop_too() -> None:
    with pytest.raises(errors.PolicyStopError, match="ANTHROPIC_KEY"):
        rewrite(allowed_secrets={"OPENAI_API_KEY", "TRACKER_TOKEN"})


def test_secret_reference_in_a_comment_counts() -> None:
    text = USER_CONFIG + "# ${{ secrets.SNEAKY }}\n"
    with pytest.raises(errors.PolicyStopError, match="SNEAKY"):
        rewrite(text)


def test_brokered_credential_reused_elsewhere_is_refused() -> None:
    text = USER_CONFIG.replace("secrets.TRACKER_TOKEN", "secrets.OPENAI_API_KEY")
    with pytest.raises(errors.ManifestError, match="brokered"):
        rewrite(text, secret_values={"OPENAI_API_KEY": "sk-real"})


def test_granted_secret_without_value_is_a_config_error() -> None:
    with pytest.raises(errors.ManifestError, match="TRACKER_TOKEN have no value"):
        rewrite(secret_values={})


@pytest.mark.parametrize(
    ("model", "message"),
    [
        ("  - uses: anthropic/claude-sonnet\n", "hub model blocks"),
        ("  - name: o\n    provider: ollama\n    model: llama\n", "'ollama' cannot be routed"),
        ("  - name: o\n    model: llama\n", "None cannot be routed"),
    ],
)
def test_models_the_gateway_cannot_front_are_refused(model: str, message: str) -> None:
    with pytest.raises(errors.ManifestError, match=message):
        rewrite("models:\n" + model)


def test_block_scalars_and_anchors_still_give_the_intended_document() -> None:
    text = (
        "defaults: &d\n  provider: openai\n  model: m\n"
        "models:\n  - <<: *d\n    name: a\n    apiKey: |\n      literal-key\n"
        "  - name: b\n    provider: openai\n    model: m\n"
    )
    result = rewrite(text, allowed_secrets=set(), secret_values={})
    document = yaml.safe_load(result.text)
    assert [(m["name"], m["apiBase"], m["apiKey"]) for m in document["models"]] == [
        ("a", BASE, TOKEN),
        ("b", BASE, TOKEN),
    ]
    assert "literal-key" not in result.text


def test_flow_style_models_are_rewritten() -> None:
    text = "models: [{name: a, provider: openai, model: m}]\n"
    document = yaml.safe_load(rewrite(text, allowed_secrets=set(), secret_values={}).text)
    assert document["models"] == [
        {"name": "a", "provider": "openai", "model": "m", "apiBase": BASE, "apiKey": TOKEN}
    ]


def test_the_repository_example_config_routes_through_the_gateway() -> None:
    with open("examples/continue/config.yaml", encoding="utf-8") as handle:
        text = handle.read()
    result = rewrite(text, allowed_secrets={"OPENAI_API_KEY"}, secret_values={})
    assert result.in_place
    assert yaml.safe_load(result.text)["models"][0]["apiBase"] == BASE
    assert text.splitlines()[:4] == result.text.splitlines()[:4]


def test_model_credential_shared_through_an_anchor_is_refused() -> None:
    text = (
        "defaults: &d\n  provider: openai\n  model: m\n  apiKey: ${{ secrets.KEY }}\n"
        "models:\n  - <<: *d\n    name: a\n"
    )
    with pytest.raises(errors.ManifestError, match="'KEY' is a model credential"):
        rewrite(text, allowed_secrets={"KEY"}, secret_values={"KEY": "sk-real-value"})
