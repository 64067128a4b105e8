"""A model apiKey written literally in config.yaml is brokered like a secret: the bundle's
config holds only a synthetic reference, the gateway gets the literal as the model's
upstream key, and records never hold it. Existing configs keep working unchanged; a
templated key ("Bearer ${{ secrets.X }}") is resolved whole for the gateway."""

from __future__ import annotations

import pytest
import yaml

from continue_orchestrator import errors, gateway, records, runner

LITERAL = "sk-live-0123456789abcdefLITERAL"
BASE = "http://10.213.0.1:8080/runs/r1/v1"
TOKEN = "run-token-0123456789abcdef"

CONFIG = f"""\
name: legacy  # a Continue config as users already have it
models:
  - name: fixer
    provider: openai
    model: gpt-4.1
    apiBase: https://api.openai.com/v1
    apiKey: {LITERAL}   # the key, inline
  - name: other
    provider: anthropic
    model: claude
    apiKey: ${{{{ secrets.ANTHROPIC }}}}
"""


def test_the_literal_leaves_the_config_and_is_kept_for_the_gateway() -> None:
    literals = runner.broker_literal_keys(CONFIG)
    assert LITERAL not in literals.text
    assert dict(literals.values) == {"MODEL_0_API_KEY": LITERAL}
    assert "# a Continue config as users already have it" in literals.text
    assert "# the key, inline" in literals.text
    assert runner.brokered_secrets(literals.text) == {"MODEL_0_API_KEY", "ANTHROPIC"}

    # The runner needs no value for it and gives the agent the run token.
    rewritten = runner.rewrite_config(
        literals.text,
        api_base=BASE,
        api_key=TOKEN,
        allowed_secrets={"MODEL_0_API_KEY", "ANTHROPIC"},
        secret_values={},
    )
    assert LITERAL not in rewritten.text
    assert [m["apiKey"] for m in yaml.safe_load(rewritten.text)["models"]] == [TOKEN, TOKEN]

    # The gateway resolves the synthetic reference to the literal.
    secrets = {**literals.values, "ANTHROPIC": "sk-ant-brokered-value"}
    upstreams = gateway.upstreams_from_config(literals.text, secrets)
    assert upstreams["gpt-4.1"].api_key == LITERAL
    assert upstreams["claude"].api_key == "sk-ant-brokered-value"


def test_the_literal_is_redacted_from_records() -> None:
    literals = runner.broker_literal_keys(CONFIG)
    secrets = {**literals.values, "ANTHROPIC": "sk-ant-brokered-value"}
    registration = gateway.RunRegistration(
        uid="r1",
        token=TOKEN,
        expires_at=0.0,
        policy_set=None,
        models=gateway.upstreams_from_config(literals.text, secrets),
        allowed_egress=(),
        secrets=secrets,
    )
    redact = records.Redactor(registration.redactions())
    leaked = f'{{"echo": "{LITERAL}", "header": "Bearer {LITERAL}"}}'.encode()
    assert LITERAL.encode() not in redact(leaked)


def test_a_config_without_literal_keys_is_unchanged() -> None:
    text = "models:\n  - name: a\n    provider: openai\n    apiKey: ${{ secrets.K }}\n"
    literals = runner.broker_literal_keys(text)
    assert literals.text == text
    assert literals.values == {}


def test_one_anchored_literal_shared_by_two_models_is_one_synthetic_secret() -> None:
    text = (
        "models:\n"
        f"  - {{name: a, provider: openai, model: m1, apiKey: &k {LITERAL}}}\n"
        "  - {name: b, provider: openai, model: m2, apiKey: *k}\n"
    )
    literals = runner.broker_literal_keys(text)
    assert LITERAL not in literals.text
    assert dict(literals.values) == {"MODEL_0_API_KEY": LITERAL}
    upstreams = gateway.upstreams_from_config(literals.text, dict(literals.values))
    assert {u.api_key for u in upstreams.values()} == {LITERAL}


@pytest.mark.parametrize(
    "text",
    [
        # The same node aliased into a field the sandbox gets.
        "models:\n"
        f"  - {{name: a, provider: openai, apiKey: &k {LITERAL}}}\n"
        "mcpServers:\n  - {name: t, command: t, env: {TOKEN: *k}}\n",
        # The same text written again elsewhere, or in a comment.
        f"models:\n  - {{name: a, provider: openai, apiKey: {LITERAL}}}\n"
        f"mcpServers:\n  - {{name: t, command: t, env: {{TOKEN: {LITERAL}}}}}\n",
        f"# old key: {LITERAL}\nmodels:\n  - {{name: a, provider: openai, apiKey: {LITERAL}}}\n",
    ],
)
def test_a_literal_key_also_used_elsewhere_is_refused(text: str) -> None:
    with pytest.raises(errors.ManifestError, match="sandbox"):
        runner.broker_literal_keys(text)


def test_a_short_placeholder_elsewhere_does_not_block_the_config() -> None:
    text = "name: x\nmodels:\n  - {name: x, provider: openai, model: x, apiKey: x}\n"
    literals = runner.broker_literal_keys(text)
    assert dict(literals.values) == {"MODEL_0_API_KEY": "x"}
    assert yaml.safe_load(literals.text)["name"] == "x"


def test_the_synthetic_name_is_reserved() -> None:
    text = (
        "models:\n  - {name: a, provider: openai, apiKey: k}\n"
        "mcpServers:\n  - {name: t, command: t, env: {T: '${{ secrets.MODEL_0_API_KEY }}'}}\n"
    )
    with pytest.raises(errors.ManifestError, match="reserved"):
        runner.broker_literal_keys(text)


def test_a_templated_key_is_resolved_whole_for_the_gateway() -> None:
    text = (
        "models:\n"
        "  - name: a\n    provider: openai\n    model: m\n"
        '    apiKey: "team-7:${{ secrets.KEY }}"\n'
    )
    literals = runner.broker_literal_keys(text)
    assert literals.text == text  # a reference inside: brokered as a secret already
    assert runner.brokered_secrets(text) == {"KEY"}
    upstreams = gateway.upstreams_from_config(text, {"KEY": "sk-brokered"})
    assert upstreams["m"].api_key == "team-7:sk-brokered"
    with pytest.raises(errors.GatewayError, match="'KEY'"):
        gateway.upstreams_from_config(text, {})
