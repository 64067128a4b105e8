"""in-toto Statement v1 for a finished run, and its canonical bytes.

The statement is serialised once, as RFC 8785 canonical JSON, and those exact bytes
are what DSSE signs; verifiers parse them back with ``parse_statement``.
"""

from __future__ import annotations

import json
from typing import Any

import pydantic
import rfc8785
from pydantic import BaseModel, ConfigDict, Field

from continue_orchestrator import errors
from continue_orchestrator.attest import _facts

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://orchestrator.continue.dev/agent-run/v2"
PAYLOAD_TYPE = "application/vnd.in-toto+json"

# Subject names; the ledger subject's digest is the Merkle root of the run's range.
SUBJECT_RECORD = "run-record"
SUBJECT_DIFF = "workspace-diff"
SUBJECT_LEDGER = "ledger-range"
SUBJECT_TREE = "workspace-tree"


class Subject(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1)
    digest: dict[str, str] = Field(min_length=1)


class Statement(BaseModel):
    """An in-toto Statement v1 (any predicate; ours is checked by ``run_facts``)."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    type: str = Field(alias="_type")
    subject: tuple[Subject, ...] = Field(min_length=1)
    predicate_type: str = Field(alias="predicateType", min_length=1)
    predicate: dict[str, Any]

    def to_bytes(self) -> bytes:
        """Canonical JSON (RFC 8785): the bytes that get signed."""
        document = self.model_dump(mode="json", by_alias=True)
        encoded: bytes = rfc8785.dumps(document)
        return encoded

    def subject_digest(self, name: str) -> str:
        """The SHA-256 of the subject called ``name``."""
        for subject in self.subject:
            if subject.name.split("/", 1)[0] == name and "sha256" in subject.digest:
                return subject.digest["sha256"]
        raise errors.AttestationError(
            f"the statement has no subject {name!r} with a sha256 digest",
            where="attestation statement",
        )

    def run_facts(self) -> _facts.RunFacts:
        """The typed predicate; fails unless this is an agent-run statement."""
        if self.predicate_type != PREDICATE_TYPE:
            raise errors.AttestationError(
                f"predicate type is {self.predicate_type!r}, not {PREDICATE_TYPE!r}",
                where="attestation statement",
            )
        return _facts.RunFacts.from_predicate(self.predicate)


def build_statement(facts: _facts.RunFacts) -> Statement:
    """The in-toto statement attesting ``facts``; an unmeasured digest has no subject."""
    ledger = facts.ledger
    named = (
        (SUBJECT_RECORD, facts.record_digest),
        (SUBJECT_DIFF, facts.diff_digest),
        (f"{SUBJECT_LEDGER}/{ledger.first}-{ledger.last}", ledger.merkle_root),
        (SUBJECT_TREE, facts.workspace_tree_digest),
    )
    subjects = tuple(
        Subject(name=name, digest={"sha256": digest}) for name, digest in named if digest
    )
    return Statement(
        type=STATEMENT_TYPE,
        subject=subjects,
        predicate_type=PREDICATE_TYPE,
        predicate=facts.to_predicate(),
    )


def json_object(data: bytes, *, what: str, where: str) -> dict[str, Any]:
    """``data`` (``what``: the payload, the bundle) as a JSON object; raises
    ``errors.AttestationError`` at ``where`` unless it is one."""
    try:
        document = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise errors.AttestationError(f"{what} is not JSON: {error}", where=where) from error
    if not isinstance(document, dict):
        raise errors.AttestationError(f"{what} is not a JSON object", where=where)
    return document


def parse_statement(payload: bytes) -> Statement:
    """Parse a DSSE payload as an in-toto Statement v1."""
    where = "attestation payload"
    document = json_object(payload, what="payload", where=where)
    try:
        statement = Statement.model_validate(document)
    except pydantic.ValidationError as error:
        raise errors.AttestationError(
            f"payload is not an in-toto statement: {_facts._first_problem(error)}", where=where
        ) from error
    if statement.type != STATEMENT_TYPE:
        raise errors.AttestationError(
            f"statement _type is {statement.type!r}, expected {STATEMENT_TYPE!r}", where=where
        )
    return statement
