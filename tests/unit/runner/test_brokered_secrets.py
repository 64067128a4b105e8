"""Which secrets are brokered (model apiKeys: the gateway's alone) and which are delivered
into the sandbox, as a config's author could try to blur the line: aliases, merge keys,
flow style, models without a key."""

from __future__ import annotations

import pytest
import yaml

from continue_orchestrator import errors, runner

BASE = "http://10.213.0.1:8080/runs/r1/v1"
TOKEN = "run-token-0123456789abcdef"
MODEL_KEY = "sk-real-model-key-0123456789"
VALUES = {"KEY": MODEL_KEY, "TRACKER": "trk-value-1", "HEADER": "hdr-value-2"}


def rewrite(text: str, secret_values: dict[str, str] | None = None) -> runner.RewrittenConfig:
    return runner.rewrite_config(
        text,
        api_base=BASE,
        api_key=TOKEN,
        allowed_secrets=set(VALUES),
        secret_values=VALUES if secret_values is None else secret_values,
    )


def classified(text: str) -> tuple[frozenset[str], frozenset[str]]:
    """(brokered, delivered), checking the rewrite and the operator's view agree and that
    no brokered value reaches the agent's config even when the runner were given one."""
    result = rewrite(text)
    assert runner.brokered_secrets(text) == result.brokered
    assert MODEL_KEY not in result.text or "KEY" not in result.brokered
    assert result.brokered.isdisjoint(result.resolved)
    return result.brokered, result.resolved


MIXED = """\
models:
  - name: a
    provider: openai
    model: m
    apiKey: ${{ secrets.KEY }}
    requestOptions:
      headers:
        X-Team: ${{ secrets.HEADER }}
mcpServers:
  - name: tracker
    command: tracker-mcp
    env:
      TOKEN: ${{ secrets.TRACKER }}
"""


def test_model_key_is_brokered_and_everything_else_delivered() -> None:
    brokered, delivered = classified(MIXED)
    assert brokered == {"KEY"}
    assert delivered == {"TRACKER", "HEADER"}
    result = rewrite(MIXED)
    document = yaml.safe_load(result.text)
    assert document["models"][0]["apiKey"] == TOKEN
    assert document["models"][0]["requestOptions"]["headers"]["X-Team"] == "hdr-value-2"
    assert document["mcpServers"][0]["env"]["TOKEN"] == "trk-value-1"
    assert MODEL_KEY not in result.text
    assert [(r.name, r.brokered) for r in result.references] == [
        ("KEY", True),
        ("HEADER", False),
        ("TRACKER", False),
    ]


def test_the_runner_needs_no_value_for_a_brokered_secret() -> None:
    result = rewrite(MIXED, secret_values={"TRACKER": "t", "HEADER": "h"})
    assert result.brokered == {"KEY"}
    with pytest.raises(errors.ManifestError, match="TRACKER have no value"):
        rewrite(MIXED, secret_values={"KEY": MODEL_KEY, "HEADER": "h"})


def test_a_model_without_api_key_brokers_nothing() -> None:
    text = (
        "models:\n  - {name: a, provider: openai, model: m}\n"
        "mcpServers:\n  - name: t\n    command: c\n    env: {T: '${{ secrets.TRACKER }}'}\n"
    )
    assert classified(text) == (frozenset(), {"TRACKER"})
    assert yaml.safe_load(rewrite(text).text)["models"][0]["apiKey"] == TOKEN


def test_no_models_list_brokers_nothing() -> None:
    assert runner.brokered_secrets("name: x\nrules: ['${{ secrets.TRACKER }}']\n") == set()


def test_flow_style() -> None:
    text = (
        'models: [{name: a, provider: openai, model: m, apiKey: "${{ secrets.KEY }}"}]\n'
        'mcpServers: [{name: t, command: c, env: {T: "${{ secrets.TRACKER }}"}}]\n'
    )
    assert classified(text) == ({"KEY"}, {"TRACKER"})


def test_one_anchored_key_shared_by_two_models_stays_brokered() -> None:
    text = (
        "models:\n"
        "  - {name: a, provider: openai, model: m, apiKey: &k '${{ secrets.KEY }}'}\n"
        "  - {name: b, provider: anthropic, model: m, apiKey: *k}\n"
    )
    assert classified(text) == ({"KEY"}, frozenset())
    document = yaml.safe_load(rewrite(text).text)
    assert [m["apiKey"] for m in document["models"]] == [TOKEN, TOKEN]


def test_a_key_merged_from_another_model_stays_brokered() -> None:
    text = (
        "models:\n"
        "  - &base\n    name: a\n    provider: openai\n    model: m\n"
        "    apiKey: ${{ secrets.KEY }}\n"
        "  - <<: *base\n    name: b\n"
    )
    assert classified(text) == ({"KEY"}, frozenset())
    result = rewrite(text)
    assert [m["apiKey"] for m in yaml.safe_load(result.text)["models"]] == [TOKEN, TOKEN]
    assert MODEL_KEY not in result.text


@pytest.mark.parametrize(
    "text",
    [
        # The model's key anchored, then aliased into an MCP server's environment.
        "models:\n  - name: a\n    provider: openai\n    model: m\n"
        "    apiKey: &k ${{ secrets.KEY }}\n"
        "mcpServers:\n  - name: t\n    command: c\n    env: {T: *k}\n",
        # Anchored in the MCP server's environment, aliased as the model's key.
        "mcpServers:\n  - name: t\n    command: c\n    env: {T: &k '${{ secrets.KEY }}'}\n"
        "models:\n  - name: a\n    provider: openai\n    model: m\n    apiKey: *k\n",
        # Anchored in another field of a model, aliased as a model's key.
        "models:\n  - name: a\n    provider: openai\n    model: m\n"
        "    requestOptions: {headers: {X: &k '${{ secrets.KEY }}'}}\n    apiKey: *k\n",
        # Merged into a model from a top-level mapping the agent's config keeps.
        "defaults: &d {provider: openai, model: m, apiKey: '${{ secrets.KEY }}'}\n"
        "models:\n  - <<: *d\n    name: a\n",
        # Written twice: as the key and in a header.
        "models:\n  - name: a\n    provider: openai\n    model: m\n"
        "    apiKey: ${{ secrets.KEY }}\n"
        "    requestOptions: {headers: {X: 'Bearer ${{ secrets.KEY }}'}}\n",
        # Mentioned in a comment (Continue templates raw text).
        "models:\n  - name: a\n    provider: openai\n    model: m\n"
        "    apiKey: ${{ secrets.KEY }}  # also ${{ secrets.KEY }}\n",
    ],
    ids=["key-aliased-out", "alias-as-key", "model-field-alias", "merge", "twice", "comment"],
)
def test_a_model_credential_used_anywhere_else_is_refused(text: str) -> None:
    with pytest.raises(errors.ManifestError, match="'KEY' is a model credential"):
        rewrite(text)
    with pytest.raises(errors.ManifestError, match="'KEY' is a model credential"):
        runner.brokered_secrets(text)


def test_an_alias_bomb_is_refused_not_expanded() -> None:
    lines = ["a0: &a0 ['${{ secrets.TRACKER }}']"]
    for level in range(1, 12):
        lines.append(f"a{level}: &a{level} [{', '.join([f'*a{level - 1}'] * 9)}]")
    text = "\n".join(lines) + "\nmodels:\n  - {name: m, provider: openai, model: m}\n"
    with pytest.raises(errors.ManifestError, match="through aliases"):
        runner.brokered_secrets(text)
