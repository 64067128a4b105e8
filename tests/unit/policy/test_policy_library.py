"""The ready-made policies in policies/: each validates, and its cases file passes."""

from __future__ import annotations

import pathlib

import pytest

from continue_orchestrator import api, cli, policy

POLICIES = pathlib.Path(__file__).resolve().parents[3] / "policies"
NAMES = sorted(p.name.removesuffix(".cases.yaml") for p in POLICIES.glob("*.cases.yaml"))


def test_the_library_has_the_three_policies() -> None:
    assert {"baseline", "read-only", "ci-fixer"} <= set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_cases_pass(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(
        ["policy", "test", str(POLICIES / f"{name}.yaml"), str(POLICIES / f"{name}.cases.yaml")]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    assert " 0 failed" in out


@pytest.mark.parametrize("name", NAMES)
def test_validates(name: str) -> None:
    assert cli.main(["validate", str(POLICIES / f"{name}.yaml")]) == 0


def test_namespace_policy_under_the_baseline_needs_approval_for_pull_requests() -> None:
    both = policy.compile(
        [*policy.load_policies(POLICIES / "baseline.yaml").policies,
         *policy.load_policies(POLICIES / "ci-fixer.yaml").policies]
    )
    run = policy.RunContext(namespace="default", name="r", branch="agent/x")
    pr = policy.Request(api.Action.PULL_REQUEST_CREATE, branch="agent/x", run=run)
    decision = policy.decide(both, pr)
    assert decision.effect.value == "RequireApproval"
    assert decision.rule == "baseline/pr-needs-approval"
    env_read = policy.decide_tool_call(both, "Read", {"filepath": "src/.env"}, run=run)
    assert (env_read.effect.value, env_read.rule) == ("Deny", "baseline/no-secret-files")
