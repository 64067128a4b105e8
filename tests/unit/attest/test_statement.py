"""The in-toto statement: its subjects, its predicate and its canonical bytes."""

from __future__ import annotations

import json
from datetime import datetime

import pydantic
import pytest
from tests.sigstore_stack import sample_facts

from continue_orchestrator import attest, errors


def test_subjects_name_every_artefact_by_sha256() -> None:
    facts = sample_facts()
    statement = attest.build_statement(facts)
    assert statement.type == "https://in-toto.io/Statement/v1"
    assert statement.predicate_type == "https://orchestrator.continue.dev/agent-run/v2"
    assert [(s.name, s.digest) for s in statement.subject] == [
        ("run-record", {"sha256": facts.record_digest}),
        ("workspace-diff", {"sha256": facts.diff_digest}),
        ("ledger-range/120-187", {"sha256": facts.ledger.merkle_root}),
        ("workspace-tree", {"sha256": facts.workspace_tree_digest}),
    ]
    assert statement.subject_digest("ledger-range") == facts.ledger.merkle_root


def test_predicate_round_trips_to_the_same_facts() -> None:
    facts = sample_facts()
    statement = attest.parse_statement(attest.build_statement(facts).to_bytes())
    assert statement.run_facts() == facts
    predicate = statement.predicate
    assert predicate["toolCalls"]["byTool"]["Bash"] == {"allowed": 2, "denied": 1, "approved": 1}
    assert predicate["startedAt"] == "2026-11-23T10:00:00.000000Z"
    assert "replayOf" not in predicate


def test_an_unmeasured_fact_is_null_and_its_subject_absent() -> None:
    facts = sample_facts().model_copy(
        update={"workspace_tree_digest": None, "diff_digest": None, "cli_version": None}
    )
    statement = attest.parse_statement(attest.build_statement(facts).to_bytes())
    assert [s.name for s in statement.subject] == ["run-record", "ledger-range/120-187"]
    for key in ("workspaceTreeDigest", "diffDigest", "cliVersion"):
        assert key in statement.predicate and statement.predicate[key] is None
    assert statement.run_facts() == facts
    with pytest.raises(errors.AttestationError, match="no subject 'workspace-tree'"):
        statement.subject_digest("workspace-tree")


def test_unmeasured_facts_must_be_stated_not_left_out() -> None:
    document = sample_facts().to_predicate()
    del document["workspaceTreeDigest"]
    with pytest.raises(errors.AttestationError, match="workspaceTreeDigest"):
        attest.RunFacts.from_predicate(document)


def test_replay_of_is_stated_when_given() -> None:
    original = attest.RunRef(namespace="team-a", name="first", uid="u-1")
    facts = sample_facts().model_copy(update={"replay_of": original})
    statement = attest.build_statement(facts)
    assert statement.predicate["replayOf"] == {"namespace": "team-a", "name": "first", "uid": "u-1"}
    assert statement.run_facts().replay_of == original


def test_bytes_are_canonical_json() -> None:
    statement = attest.build_statement(sample_facts())
    data = statement.to_bytes()
    document = json.loads(data)
    assert data == json.dumps(document, sort_keys=True, separators=(",", ":")).encode()
    assert attest.build_statement(sample_facts()).to_bytes() == data


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("record_digest", "ABC"),
        ("record_digest", "0" * 63),
        ("runner_image", "registry.example/runner:latest"),
        ("started_at", datetime(2026, 11, 23, 10, 0, 0)),
        ("finished_at", datetime.fromisoformat("2026-11-23T09:00:00+00:00")),
        ("outcome", "maybe"),
    ],
)
def test_bad_facts_are_refused(field: str, value: object) -> None:
    document = sample_facts().model_dump()
    document[field] = value
    with pytest.raises(pydantic.ValidationError):
        attest.RunFacts.model_validate(document)


def test_ledger_range_must_be_ordered() -> None:
    with pytest.raises(pydantic.ValidationError, match="before it starts"):
        attest.LedgerRange(first=10, last=9, merkle_root="0" * 64)


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"not json", "not JSON"),
        (b"[1]", "not a JSON object"),
        (b'{"_type": "x", "subject": [], "predicateType": "p", "predicate": {}}', "subject"),
        (
            b'{"_type": "https://in-toto.io/Statement/v0.1", "subject": [{"name": "a", '
            b'"digest": {"sha256": "00"}}], "predicateType": "p", "predicate": {}}',
            "_type",
        ),
    ],
)
def test_parse_statement_says_what_is_wrong(payload: bytes, message: str) -> None:
    with pytest.raises(errors.AttestationError, match=message):
        attest.parse_statement(payload)


def test_foreign_predicate_is_not_read_as_run_facts() -> None:
    statement = attest.build_statement(sample_facts()).model_copy(
        update={"predicate_type": "https://slsa.dev/provenance/v1"}
    )
    with pytest.raises(errors.AttestationError, match="predicate type"):
        statement.run_facts()
    broken = attest.build_statement(sample_facts()).model_copy(update={"predicate": {"run": 1}})
    with pytest.raises(errors.AttestationError, match="not a valid agent-run predicate"):
        broken.run_facts()
