"""The pure parts of cluster approvals and attestation publishing.

Who counts as an approver of a held call, how the ledger becomes the attestation's
tool-call summary, and the CLI's choice between the local gateway and the cluster.
The API-server side is in tests/integration/approvals and tests/integration/attest.
"""

from __future__ import annotations

import json
import pathlib
from typing import Any

import pytest

from continue_orchestrator import api, cli, controller, errors, ledger, policy, records
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


def _entry(sequence: int, kind: ledger.Kind, payload: dict[str, Any]) -> ledger.Entry:
    return ledger.Entry(
        sequence=sequence, run_uid="u", time="2026-11-23T10:00:00.000000Z", kind=kind,
        actor="gateway", payload_json=ledger.canonical(payload).decode(),
        payload_digest="0" * 64, prev_hash="0" * 64, entry_hash="0" * 64,
    )  # fmt: skip


def test_tool_call_summary_counts_each_decision_once() -> None:
    decision, call = ledger.Kind.POLICY_DECISION, ledger.Kind.TOOL_CALL
    entries = [
        _entry(1, decision, {"callId": "a", "tool": "Read", "effect": "Allow"}),
        _entry(2, call, {"callId": "a", "tool": "Read"}),
        _entry(3, decision, {"callId": "b", "tool": "Bash", "effect": "RequireApproval"}),
        _entry(4, ledger.Kind.APPROVAL_GRANTED, {"callId": "b", "by": "alice"}),
        _entry(5, call, {"callId": "b", "tool": "Bash"}),
        _entry(6, decision, {"callId": "c", "tool": "Bash", "effect": "RequireApproval"}),
        _entry(7, ledger.Kind.APPROVAL_DENIED, {"callId": "c", "by": "bob", "reason": "no"}),
        _entry(8, decision, {"callId": "d", "tool": "Write", "effect": "Deny"}),
        _entry(9, decision, {"action": "network.egress", "effect": "Deny"}),  # not a tool call
    ]
    summary = _attestation.tool_call_summary(entries)
    assert (summary.allowed, summary.approved, summary.denied) == (1, 1, 2)
    assert summary.by_tool["Bash"].approved == 1 and summary.by_tool["Bash"].denied == 1
    people = _attestation.interventions(entries, {"phase": "Succeeded"})
    assert [(i.kind, i.actor, i.subject) for i in people] == [
        ("approval", "alice", "b"),
        ("denial", "bob", "c"),
    ]
    stopped = _attestation.interventions([], {"phase": "Cancelled"})
    assert [i.kind for i in stopped] == ["manual-stop"]


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


def test_evidence_comes_from_the_gateways_record(tmp_path: pathlib.Path) -> None:
    store = records.BlobStore(tmp_path)
    record = records.RunRecord(store, "run-1")
    request = store.put(b'{"model": "gpt-x"}')
    record.append("model", blobs={"request": request}, facts={"model": "gpt-x"})
    record.append("model", blobs={"request": request}, facts={"model": "gpt-x"})
    outcome = {
        "status": "Succeeded",
        "diff": {"digest": "sha256:" + "d" * 64},
        "verify": [{"name": "unit", "command": "pytest -q",
                    "result": {"exitCode": 1, "durationSeconds": 2.5}}],
    }  # fmt: skip
    record.append("run.outcome", blobs={"outcome": store.put(json.dumps(outcome).encode())})
    sealed = record.seal()
    evidence = controller.evidence_from_records(tmp_path)("run-1")
    assert evidence is not None
    assert evidence.record_digest == sealed
    assert evidence.diff_digest == "sha256:" + "d" * 64
    assert [(v.command, v.exit_code, v.duration_seconds) for v in evidence.verify_results] == [
        ("pytest -q", 1, 2.5)
    ]
    assert [(m.model, m.requests) for m in evidence.models] == [("gpt-x", 2)]
    assert controller.evidence_from_records(tmp_path)("no-such-run") is None
