"""The pure parts of cluster approvals and attestation publishing.

Who counts as an approver of a held call, where a bundle's ConfigMap is, and the CLI's
choice between the local gateway and the cluster (the attestation's facts: tests/unit/runs).
The API-server side is in tests/integration/approvals and tests/integration/attest.
"""

from __future__ import annotations

import pathlib
from typing import Any

import pytest

from continue_orchestrator import api, cli, controller, errors, policy
from continue_orchestrator.controller import _attestation


def _policy(kind: str, name: str, approvers: dict[str, list[str]] | None, *rules: Any) -> Any:
    model = api.ClusterRunPolicy if kind == "ClusterRunPolicy" else api.RunPolicy
    metadata: dict[str, Any] = {"name": name}
    if kind == "RunPolicy":
        metadata["namespace"] = "team-a"
    spec: dict[str, Any] = {"rules": list(rules)}
    if approvers is not None:
        spec["approvers"] = approvers
    return model.model_validate(
        {"apiVersion": api.API_VERSION, "kind": kind, "metadata": metadata, "spec": spec}
    )


def _rule(name: str, effect: str = "RequireApproval") -> dict[str, Any]:
    return {"name": name, "actions": ["tool.call"], "tools": ["Bash"], "effect": effect}


@pytest.fixture
def policies() -> policy.PolicySet:
    return policy.compile(
        [
            _policy(
                "ClusterRunPolicy",
                "baseline",
                {"groups": ["platform-admins"]},
                _rule("prod-deploy"),
            ),
            _policy(
                "RunPolicy",
                "default",
                {"users": ["alice"], "groups": ["leads"]},
                _rule("release"),
                _rule("reads", "Allow"),
            ),
        ]
    )


def test_the_rule_that_held_the_call_names_its_approvers(policies: policy.PolicySet) -> None:
    team = controller.approvers_for(policies, "default/release")
    assert team.admit("alice", [])
    assert team.admit("carol", ["leads"])
    # The namespace's approvers cannot approve what the cluster baseline holds.
    baseline = controller.approvers_for(policies, "baseline/prod-deploy")
    assert not baseline.admit("alice", ["leads"])
    assert baseline.admit("root", ["platform-admins"])


def test_a_default_effect_hold_falls_back_to_every_approver(policies: policy.PolicySet) -> None:
    everyone = controller.approvers_for(policies, "")
    assert everyone.admit("alice", []) and everyone.admit("x", ["platform-admins"])
    assert not everyone.admit("mallory", ["interns", "system:authenticated"])


def test_a_rule_that_does_not_require_approval_does_not_narrow(
    policies: policy.PolicySet,
) -> None:
    # "default/reads" is an Allow rule: a hold cannot have come from it.
    assert controller.approvers_for(policies, "default/reads") == controller.approvers_for(
        policies, ""
    )


def test_no_snapshot_means_nobody_counts() -> None:
    nobody = controller.approvers_for(None, "default/release")
    assert not nobody.admit("alice", ["leads", "system:masters"])
    assert "nobody" in nobody.describe()


@pytest.mark.parametrize(
    "location",
    ["configmap:", "configmap:ns", "configmap:/name", "configmap:ns/a/b", "file:///tmp/x"],
)
def test_a_bad_location_is_refused(location: str) -> None:
    with pytest.raises(errors.AttestationError, match="is not a ConfigMap location"):
        _attestation.parse_location(location)


def test_bundle_names_stay_dns_subdomains() -> None:
    assert controller.bundle_name("fix-it") == "fix-it-attestation"
    long = controller.bundle_name("a" * 239 + "." + "b" * 13)
    assert len(long) <= 253 and not long.startswith("-") and ".-" not in long
    assert _attestation.parse_location("configmap:team-a/fix-it-attestation") == (
        "team-a",
        "fix-it-attestation",
    )


def test_the_operator_needs_exactly_one_signing_mode(tmp_path: pathlib.Path) -> None:
    with pytest.raises(errors.AttestationError, match="choose one signing mode"):
        controller.load_signer()
    with pytest.raises(errors.AttestationError, match="choose one signing mode"):
        controller.load_signer(key_dir=tmp_path, trust_config=tmp_path / "trust.json")
    with pytest.raises(errors.AttestationError, match="no signing key found"):
        controller.load_signer(key_dir=tmp_path)


def test_cluster_and_local_flags_do_not_mix(capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(["approve", "run", "call", "-n", "team-a", "--by", "alice"])
    assert code == 1
    assert "cannot be combined with --gateway/--admin-token-file/--by" in capsys.readouterr().err


def test_a_missing_kubeconfig_is_a_clear_error(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nope.kubeconfig"
    code = cli.main(["approvals", "run", "--kubeconfig", str(missing)])
    assert code == 1
    err = capsys.readouterr().err
    assert "cannot load the cluster configuration" in err and str(missing) in err
    code = cli.main(["attestation", "get", "run", "--kubeconfig", str(missing)])
    assert code == 1
