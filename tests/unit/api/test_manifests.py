"""Offline validation: valid manifests pass, invalid ones fail with the exact field path."""

from __future__ import annotations

import copy
import pathlib
from typing import Any

import pytest
import yaml

from continue_orchestrator import api, cli, errors

EXAMPLES = pathlib.Path(__file__).resolve().parents[3] / "examples"


def load(name: str) -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((EXAMPLES / name).read_text(encoding="utf-8"))
    return document


def expect_error(document: dict[str, Any], *fragments: str) -> str:
    with pytest.raises(errors.ManifestError) as caught:
        api.parse(document, where="case.yaml: document 1")
    message = caught.value.message
    for fragment in fragments:
        assert fragment in message, message
    return message


@pytest.mark.parametrize("name", ["agentrun.yaml", "runpolicy.yaml", "clusterrunpolicy.yaml"])
def test_examples_are_valid(name: str) -> None:
    resource = api.parse(load(name))
    assert resource.metadata.name


def test_agentrun_defaults_and_aliases() -> None:
    run = api.parse(load("agentrun.yaml"))
    assert isinstance(run, api.AgentRun)
    assert run.spec.policy_ref.name == "ci-fixer"
    assert run.spec.secrets[0].secret_key_ref.key == "api-key"
    assert run.spec.cancel is False
    assert run.spec.verify[0].timeout_seconds == 600
    assert run.wire()["spec"]["policyRef"] == {"name": "ci-fixer"}


def test_inline_config_is_accepted_as_continue_accepts_it() -> None:
    document = load("agentrun.yaml")
    config = (EXAMPLES / "continue" / "config.yaml").read_text(encoding="utf-8")
    document["spec"]["agent"] = {"config": config}
    run = api.parse(document)
    assert isinstance(run, api.AgentRun)
    assert run.spec.agent.config == config


# --- AgentRun: invalid ---------------------------------------------------------------


def test_wrong_type_deep_in_spec_names_the_path() -> None:
    document = load("agentrun.yaml")
    document["spec"]["verify"][0]["timeoutSeconds"] = "soon"
    expect_error(document, "spec.verify[0].timeoutSeconds", "integer", "case.yaml: document 1")


def test_unknown_field_is_rejected_with_its_path() -> None:
    document = load("agentrun.yaml")
    document["spec"]["repository"]["branch"] = "main"
    expect_error(document, "spec.repository.branch", "unknown field")


def test_missing_required_field() -> None:
    document = load("agentrun.yaml")
    del document["spec"]["prompt"]
    expect_error(document, "spec.prompt", "required")


def test_agent_needs_exactly_one_source() -> None:
    document = load("agentrun.yaml")
    document["spec"]["agent"]["config"] = "name: x\n"
    expect_error(document, "spec.agent", "exactly one of agent.config or agent.configMapKeyRef")
    document["spec"]["agent"] = {}
    expect_error(document, "exactly one of agent.config")


def test_timeout_bounds() -> None:
    document = load("agentrun.yaml")
    document["spec"]["timeoutSeconds"] = 5
    expect_error(document, "spec.timeoutSeconds", "greater than or equal to 60")
    document["spec"]["timeoutSeconds"] = 100000
    expect_error(document, "spec.timeoutSeconds", "less than or equal to 86400")


def test_commit_must_be_a_full_sha() -> None:
    document = load("agentrun.yaml")
    document["spec"]["repository"]["commit"] = "abc123"
    expect_error(document, "spec.repository.commit", "pattern")


def test_replay_of_needs_exactly_one_target() -> None:
    document = load("agentrun.yaml")
    document["spec"]["replayOf"] = {"run": "a", "record": "sha256:" + "0" * 64}
    expect_error(document, "spec.replayOf", "exactly one of replayOf.run or replayOf.record")


def test_inline_config_must_be_a_mapping() -> None:
    document = load("agentrun.yaml")
    document["spec"]["agent"] = {"config": "- just\n- a list\n"}
    expect_error(document, "spec.agent.config", "must be a YAML mapping")
    document["spec"]["agent"] = {"config": "models: {a: 1}\n"}
    expect_error(document, "'models' must be a list")


def test_wrong_api_version_and_kind() -> None:
    document = load("agentrun.yaml")
    document["apiVersion"] = "orchestrator.continue.dev/v1"
    expect_error(document, "apiVersion", "v1alpha1")
    expect_error({"apiVersion": "v1", "kind": "Pod"}, "kind 'Pod'")
    with pytest.raises(errors.ManifestError, match="expected a mapping"):
        api.parse(["not", "a", "mapping"])


# --- RunPolicy / ClusterRunPolicy: invalid --------------------------------------------


@pytest.mark.parametrize("name", ["runpolicy.yaml", "clusterrunpolicy.yaml"])
def test_bad_effect_names_rule_index(name: str) -> None:
    document = load(name)
    document["spec"]["rules"][1]["effect"] = "Maybe"
    expect_error(document, "spec.rules[1].effect", "'Allow', 'Deny' or 'RequireApproval'")


@pytest.mark.parametrize("name", ["runpolicy.yaml", "clusterrunpolicy.yaml"])
def test_bad_action(name: str) -> None:
    document = load(name)
    document["spec"]["rules"][0]["actions"] = ["tool.call", "rm.rf"]
    expect_error(document, "spec.rules[0].actions[1]")


def test_approval_rules_need_approvers() -> None:
    document = load("runpolicy.yaml")
    del document["spec"]["approvers"]
    expect_error(document, "RequireApproval need spec.approvers")


def test_egress_must_be_host_port() -> None:
    document = load("runpolicy.yaml")
    document["spec"]["allowedEgress"] = ["api.openai.com"]
    expect_error(document, "spec.allowedEgress[0]", "pattern")


def test_argument_matcher_needs_one_of_glob_or_regex() -> None:
    document = load("runpolicy.yaml")
    document["spec"]["rules"][0]["arguments"] = [{"name": "filepath"}]
    expect_error(document, "spec.rules[0].arguments[0]", "exactly one of glob or regex")


def test_cluster_policy_rejects_bad_max_timeout() -> None:
    document = load("clusterrunpolicy.yaml")
    document["spec"]["sandbox"]["maxTimeoutSeconds"] = 10
    expect_error(document, "spec.sandbox.maxTimeoutSeconds")


# --- The CLI ---------------------------------------------------------------------------


def test_cli_validate_examples_exits_zero(capsys: pytest.CaptureFixture[str]) -> None:
    paths = sorted(str(p) for p in EXAMPLES.glob("*.yaml"))
    assert cli.main(["validate", *paths]) == 0
    assert capsys.readouterr().out.count(": valid") == len(paths)


def test_cli_validate_reports_file_document_and_path(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = load("runpolicy.yaml")
    bad = copy.deepcopy(load("agentrun.yaml"))
    bad["spec"]["output"]["pullRequest"]["draft"] = {"yes": True}
    path = tmp_path / "two.yaml"
    path.write_text(yaml.safe_dump_all([good, bad]), encoding="utf-8")
    assert cli.main(["validate", str(path)]) == 1
    err = capsys.readouterr().err
    assert f"{path}: document 2 (AgentRun/fix-rounding-bug)" in err
    assert "spec.output.pullRequest.draft" in err


def test_cli_validate_unreadable_and_unparsable(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("kind: [unclosed\n", encoding="utf-8")
    assert cli.main(["validate", str(broken), str(tmp_path / "missing.yaml")]) == 1
    err = capsys.readouterr().err
    assert "not valid YAML" in err and "missing.yaml: cannot read" in err


# --- RunApproval -----------------------------------------------------------------------


def approval(**spec: Any) -> dict[str, Any]:
    base = {
        "runName": "fix-rounding-bug",
        "callId": "call-1",
        "decision": "Approve",
        "decidedBy": {"username": "lead@acme.dev", "groups": ["payments-leads"]},
    }
    return {
        "apiVersion": "orchestrator.continue.dev/v1alpha1",
        "kind": "RunApproval",
        "metadata": {"name": "fix-rounding-bug-call-1", "namespace": "team-payments"},
        "spec": {**base, **spec},
    }


def test_run_approval_valid_and_invalid() -> None:
    parsed = api.parse(approval())
    assert isinstance(parsed, api.RunApproval)
    assert parsed.spec.decision is api.Decision.APPROVE
    expect_error(approval(decision="Maybe"), "spec.decision", "'Approve' or 'Deny'")
    document = approval()
    del document["spec"]["decidedBy"]
    expect_error(document, "spec.decidedBy", "required")
