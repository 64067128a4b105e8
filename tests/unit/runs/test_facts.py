"""A run's facts, built once for the attestation and the run report (``runs.facts``).

The ledger becomes the tool-call summary and the interventions, the gateway's record
the evidence, the finish the outcome and times; where the operator and local mode used
to say different things, the meaning ``runs.facts`` documents is checked here.
"""

from __future__ import annotations

import hashlib
import json
import pathlib
from datetime import UTC, datetime
from typing import Any

import pytest

from continue_orchestrator import api, attest, errors, ledger, policy, records, runner, runs

IMAGE = "registry.example/runner@sha256:" + "a" * 64
COMMIT = "1" * 40
CONFIG = "name: a\nversion: 0.0.1\nschema: v1\nmodels: []\n"


def _entry(sequence: int, kind: ledger.Kind, payload: dict[str, Any]) -> ledger.Entry:
    return ledger.Entry(
        sequence=sequence, run_uid="u", time="2026-11-23T10:00:00.000000Z", kind=kind,
        actor="gateway", payload_json=ledger.canonical(payload).decode(),
        payload_digest="0" * 64, prev_hash="0" * 64, entry_hash="0" * 64,
    )  # fmt: skip


def _run(**repository: Any) -> api.AgentRun:
    resource = api.parse(
        {
            "apiVersion": api.API_VERSION,
            "kind": "AgentRun",
            "metadata": {"name": "fix-it", "namespace": "team-a"},
            "spec": {
                "agent": {"configMapKeyRef": {"name": "agent", "key": "config.yaml"}},
                "prompt": "fix the failing test",
                "repository": {"url": "https://github.com/acme/widgets", **repository},
                "policyRef": {"name": "default"},
            },
        }
    )
    assert isinstance(resource, api.AgentRun)
    return resource


def _outcome(**fields: Any) -> runner.Outcome:
    return runner.Outcome(
        run="u", status=runner.Status.SUCCEEDED, exit_code=0,
        started_at="2026-11-23T10:00:00Z", finished_at="2026-11-23T10:09:00Z", **fields,
    )  # fmt: skip


def _finish(phase: api.Phase = api.Phase.SUCCEEDED, **fields: Any) -> runs.Finish:
    values: dict[str, Any] = {
        "reason": "Completed",
        "started_at": datetime(2026, 11, 23, 10, tzinfo=UTC),
        "finished_at": datetime(2026, 11, 23, 10, 10, tzinfo=UTC),
        "inputs_digest": "sha256:" + "3" * 64,
        "policy_digest": "sha256:" + "4" * 64,
        **fields,
    }
    return runs.Finish(phase=phase, **values)


def _facts(
    run: api.AgentRun | None = None,
    *,
    finish: runs.Finish | None = None,
    entries: list[ledger.Entry] | None = None,
    evidence: runs.Evidence | None = None,
) -> attest.RunFacts:
    return runs.facts(
        run or _run(commit=COMMIT),
        uid="u",
        finish=finish or _finish(),
        entries=entries or [_entry(1, ledger.Kind.RUN_CREATED, {"name": "fix-it"})],
        evidence=evidence or runs.Evidence(),
        merkle_root="6" * 64,
        runner_image=IMAGE,
        builder_id="urn:test",
        stopped_by="spec.cancel",
    )


def _hex(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


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
    calls = runs.tool_calls(entries)
    summary = runs.tool_call_summary(calls)
    assert (summary.allowed, summary.approved, summary.denied) == (1, 1, 2)
    assert summary.by_tool["Bash"].approved == 1 and summary.by_tool["Bash"].denied == 1
    assert runs.counts(calls) == (1, 2, 1)
    assert [(c.call_id, c.decided_by, c.delivered) for c in calls] == [
        ("a", None, True), ("b", "alice", True), ("c", "bob", False), ("d", None, False),
    ]  # fmt: skip
    people = runs.interventions(entries, _finish(), stopped_by="spec.cancel")
    assert [(i.kind, i.actor, i.subject) for i in people] == [
        ("approval", "alice", "b"),
        ("denial", "bob", "c"),
    ]
    stopped = runs.interventions(
        [], _finish(api.Phase.CANCELLED, message="spec.cancel was set"), stopped_by="spec.cancel"
    )
    assert [(i.kind, i.actor, i.reason) for i in stopped] == [
        ("manual-stop", "spec.cancel", "spec.cancel was set")
    ]


def test_evidence_comes_from_the_gateways_record(tmp_path: pathlib.Path) -> None:
    store = records.BlobStore(tmp_path)
    record = records.RunRecord(store, "run-1")
    request = store.put(b'{"model": "gpt-x"}')
    record.append("model", blobs={"request": request}, facts={"model": "gpt-x"})
    record.append("model", blobs={"request": request}, facts={"model": "gpt-x"})
    unit = runner.ProcessResult(exit_code=1, duration_seconds=2.5)
    outcome = _outcome(
        diff=runner.DiffReport(base="0" * 40, files=[], digest="sha256:" + "d" * 64, size=1,
                               truncated=False, patch_base64=""),
        verify=[runner.VerifyResult(name="unit", command="pytest -q", result=unit)],
    ).wire()  # fmt: skip
    record.append("run.outcome", blobs={"outcome": store.put(json.dumps(outcome).encode())})
    sealed = record.seal()
    evidence = runs.evidence_from_records(tmp_path)("run-1")
    assert evidence is not None
    assert evidence.record_digest == sealed
    assert evidence.diff_digest == "sha256:" + "d" * 64
    assert [(v.command, v.exit_code, v.duration_seconds) for v in evidence.verify_results] == [
        ("pytest -q", 1, 2.5)
    ]
    assert [(m.model, m.requests) for m in evidence.models] == [("gpt-x", 2)]
    assert runs.evidence_from_records(tmp_path)("no-such-run") is None


def test_a_report_that_is_not_the_runners_is_no_report() -> None:
    assert runs.parse_outcome(b'{"status": "Succeeded"}') is None
    assert runs.parse_outcome(b"not json") is None
    assert runs.parse_outcome(json.dumps(_outcome().wire())) == _outcome()


def test_a_model_whose_provider_was_not_recorded_is_null_not_guessed() -> None:
    evidence = runs.Evidence(models=(attest.ModelUse(provider=None, model="m", requests=1),))
    assert [m.provider for m in _facts(evidence=evidence).models] == [None]


def test_the_spec_input_is_the_spec_as_the_inputs_digest_digests_it() -> None:
    run = _run(commit=COMMIT)
    cancelled = run.model_copy(update={"spec": run.spec.model_copy(update={"cancel": True})})
    expected = hashlib.sha256(policy.canonical_json(runs.spec_document(run))).hexdigest()
    assert _facts(run).inputs["agentrun-spec"] == expected
    assert _facts(cancelled).inputs["agentrun-spec"] == expected  # cancel is no input
    assert _facts(run).inputs["prompt"] == _hex("fix the failing test")


@pytest.mark.parametrize(
    ("pin", "resolved", "named"),
    [
        ({"commit": COMMIT, "ref": "main"}, "2" * 40, COMMIT),  # the pin, as the runner used it
        ({"ref": "main"}, "2" * 40, "2" * 40),  # a ref: the commit it resolved to
        ({"ref": "main"}, None, "main"),  # never cloned: the ref asked for
    ],
)
def test_the_repository_input_names_the_commit_the_run_started_from(
    pin: dict[str, str], resolved: str | None, named: str
) -> None:
    evidence = runs.Evidence(outcome=_outcome(base_commit=resolved))
    facts = _facts(_run(**pin), evidence=evidence)
    assert facts.inputs["repository"] == _hex(f"https://github.com/acme/widgets@{named}")


def test_the_config_input_is_the_config_the_run_created_entry_noted() -> None:
    noted = {"replayInputs": {"config": "sha256:" + hashlib.sha256(CONFIG.encode()).hexdigest()}}
    created = _entry(1, ledger.Kind.RUN_CREATED, {"name": "fix-it", **noted})
    assert _facts(entries=[created]).inputs["config.yaml"] == _hex(CONFIG)
    assert "config.yaml" not in _facts().inputs  # nothing noted: not attested
    assert _facts().inputs["inputs"] == "3" * 64


def test_outcome_times_and_unmeasured_facts() -> None:
    facts = _facts()
    assert facts.outcome == "succeeded"
    assert (facts.record_digest, facts.diff_digest, facts.workspace_tree_digest) == (None,) * 3
    assert facts.cli_version is None and facts.replay_of is None
    assert _facts(finish=_finish(api.Phase.DENIED)).outcome == "stopped"
    assert _facts(finish=_finish(api.Phase.CANCELLED)).outcome == "stopped"
    assert _facts(finish=_finish(api.Phase.TIMED_OUT)).outcome == "failed"
    late = _finish(started_at=datetime(2026, 11, 23, 11, tzinfo=UTC))
    assert _facts(finish=late).started_at == _facts(finish=late).finished_at
    sealed = _finish(record_digest="sha256:" + "5" * 64)
    assert _facts(finish=sealed).record_digest == "5" * 64


def test_a_replay_names_the_run_it_replayed() -> None:
    original = {"namespace": "team-a", "name": "fix-it", "uid": "orig"}
    started = _entry(1, ledger.Kind.REPLAY_STARTED, {"replayOf": original})
    replay_of = _facts(entries=[started]).replay_of
    assert replay_of is not None
    assert (replay_of.namespace, replay_of.name, replay_of.uid) == ("team-a", "fix-it", "orig")


def test_nothing_to_attest_is_an_error_naming_the_run() -> None:
    with pytest.raises(errors.AttestationError, match="never got a policy snapshot"):
        _facts(finish=_finish(policy_digest=None))
    with pytest.raises(errors.AttestationError, match="pinned by digest"):
        runs.facts(
            _run(), uid="u", finish=_finish(), entries=[_entry(1, ledger.Kind.RUN_CREATED, {})],
            evidence=runs.Evidence(), merkle_root="6" * 64, runner_image="runner:latest",
            builder_id="urn:test", stopped_by="spec.cancel",
        )  # fmt: skip
