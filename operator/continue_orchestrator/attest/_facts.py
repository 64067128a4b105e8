"""The facts of one finished run that its attestation states.

``RunFacts`` is the single input of the statement builder: whoever finishes a run
(the controller, ``orchestrator run`` in local mode) fills it from the record, the
ledger and the runner's report. It is also the predicate itself, so a verifier gets
the same typed object back with ``RunFacts.from_predicate``. A fact nobody measured is
``None`` and is stated as JSON ``null``, never as a digest of nothing: the SHA-256 of
empty content is a real value (an agent that changed nothing has an empty diff).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import pydantic
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, PlainSerializer
from pydantic.alias_generators import to_camel

from continue_orchestrator import errors

_SHA256_PATTERN = r"^[0-9a-f]{64}$"

Sha256 = Annotated[str, Field(pattern=_SHA256_PATTERN, description="lowercase hex SHA-256")]


def _require_utc(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise ValueError("time must carry a timezone (use UTC)")
    return value.astimezone(UTC)


Timestamp = Annotated[
    datetime,
    AfterValidator(_require_utc),
    PlainSerializer(lambda t: t.strftime("%Y-%m-%dT%H:%M:%S.%fZ"), return_type=str),
]


class _Model(BaseModel):
    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        alias_generator=to_camel,
        populate_by_name=True,
    )


class RunRef(_Model):
    """Which AgentRun this is."""

    namespace: str = Field(min_length=1)
    name: str = Field(min_length=1)
    uid: str = Field(min_length=1)


class LedgerRange(_Model):
    """The ledger entries of the run, first to last, and their Merkle root."""

    first: int = Field(ge=0)
    last: int = Field(ge=0)
    merkle_root: Sha256

    @pydantic.model_validator(mode="after")
    def _ordered(self) -> LedgerRange:
        if self.last < self.first:
            raise ValueError(f"ledger range ends ({self.last}) before it starts ({self.first})")
        return self


class ModelUse(_Model):
    """One model the run talked to through the gateway."""

    provider: str | None = Field(
        min_length=1, description="the wire API the gateway spoke; null if not recorded"
    )
    model: str = Field(min_length=1)
    requests: int = Field(ge=0)


class ToolCallCounts(_Model):
    allowed: int = Field(default=0, ge=0)
    denied: int = Field(default=0, ge=0)
    approved: int = Field(default=0, ge=0)


class ToolCallSummary(ToolCallCounts):
    """Tool calls the gateway decided on: totals and per tool name."""

    by_tool: dict[str, ToolCallCounts] = Field(default_factory=dict)


class VerifyResult(_Model):
    """One verify command the runner ran after the agent finished."""

    command: str = Field(min_length=1)
    exit_code: int
    duration_seconds: float = Field(ge=0)

    @property
    def passed(self) -> bool:
        return self.exit_code == 0


class Intervention(_Model):
    """A human decision during the run."""

    kind: Literal["approval", "denial", "manual-stop"]
    actor: str = Field(min_length=1)
    at: Timestamp
    subject: str = Field(default="", description="what was decided on, e.g. a tool call id")
    reason: str = ""


class RunFacts(_Model):
    """Everything the attestation of one finished run states."""

    run: RunRef
    outcome: Literal["succeeded", "failed", "stopped"]
    record_digest: Sha256 | None = Field(description="null: no record was kept")
    diff_digest: Sha256 | None = Field(description="null: the run took no diff")
    workspace_tree_digest: Sha256 | None = Field(
        description="null: the agent never ran, or its workspace could not be read"
    )
    ledger: LedgerRange
    inputs: dict[str, Sha256] = Field(
        description="input name (config.yaml, prompt, repository, ...) to its digest"
    )
    policy_digest: Sha256
    runner_image: str = Field(pattern=r"^[^\s@]+@sha256:[0-9a-f]{64}$")
    cli_version: str | None = Field(min_length=1, description="null: not reported")
    models: tuple[ModelUse, ...] = ()
    tool_calls: ToolCallSummary = ToolCallSummary()
    verify_results: tuple[VerifyResult, ...] = ()
    interventions: tuple[Intervention, ...] = ()
    started_at: Timestamp
    finished_at: Timestamp
    builder_id: str = Field(min_length=1, description="URI naming the operator instance")
    replay_of: RunRef | None = None

    @pydantic.model_validator(mode="after")
    def _times_ordered(self) -> RunFacts:
        if self.finished_at < self.started_at:
            raise ValueError("finishedAt is before startedAt")
        return self

    def to_predicate(self) -> dict[str, Any]:
        """The predicate JSON object (camelCase, times as RFC 3339 UTC).

        Unmeasured facts stay as explicit ``null``; only an absent ``replayOf`` is left out.
        """
        predicate = self.model_dump(mode="json", by_alias=True)
        if predicate.get("replayOf") is None:
            predicate.pop("replayOf", None)
        return predicate

    @classmethod
    def from_predicate(cls, predicate: dict[str, Any]) -> RunFacts:
        try:
            return cls.model_validate(predicate)
        except pydantic.ValidationError as error:
            raise errors.AttestationError(
                f"the predicate is not a valid agent-run predicate: {_first_problem(error)}",
                where="attestation predicate",
                fix="the bundle was made by a different tool or a newer schema version",
            ) from error


def _first_problem(error: pydantic.ValidationError) -> str:
    problem = error.errors()[0]
    location = ".".join(str(part) for part in problem["loc"]) or "(top level)"
    return f"{location}: {problem['msg']}"
