"""The end-of-run report of ``orchestrator run``, read back from what was recorded.

Counts come from the ledger and the run's outcome from the record (``runs.tool_calls``,
``runs.read_evidence``: what the attestation says too), not from what the pipeline
believes happened, so the report says what a later audit would find. It is
printed for people and written as JSON beside the run for tools and tests.
"""

from __future__ import annotations

import pydantic
from pydantic import alias_generators

from continue_orchestrator import runs

DEV_KEY_LABEL = "DEVELOPMENT KEY — not for production"


class _Model(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(
        alias_generator=alias_generators.to_camel, populate_by_name=True, extra="forbid"
    )


class VerifyLine(_Model):
    name: str
    command: str
    exit_code: int | None
    passed: bool
    duration_seconds: float = 0.0


class ChangedFile(_Model):
    status: str
    path: str


class LedgerSummary(_Model):
    url: str
    first: int
    last: int
    head_sequence: int
    head_hash: str
    merkle_root: str = ""
    verified: bool = False
    problems: list[str] = pydantic.Field(default_factory=list)


class AttestationSummary(_Model):
    signed: bool
    key: str = DEV_KEY_LABEL
    public_key: str = ""
    location: str | None = None
    bundle_digest: str | None = None
    statement_digest: str | None = None
    verified: bool = False
    reason: str = ""


class PullRequestSummary(_Model):
    """The pull request body the run would post (``runs.evidence_body``), kept beside it."""

    path: str
    digest: str
    """``sha256:`` of the body's UTF-8 bytes."""
    posted: bool = False
    """Whether it went to a forge: only when the AgentRun asks for a pull request
    (``spec.output.pullRequest.enabled``) and publication opened it."""


class Report(_Model):
    """Everything ``orchestrator run`` tells a person at the end of a run."""

    run: str
    uid: str
    namespace: str
    sandbox: str
    phase: str
    reason: str
    message: str = ""
    exit_code: int | None = None
    gateway: str = ""
    tool_calls: list[runs.ToolCall] = pydantic.Field(default_factory=list)
    allowed: int = 0
    denied: int = 0
    approved: int = 0
    verify: list[VerifyLine] = pydantic.Field(default_factory=list)
    diff_files: list[ChangedFile] = pydantic.Field(default_factory=list)
    diff_digest: str | None = None
    record_digest: str | None = None
    ledger: LedgerSummary | None = None
    attestation: AttestationSummary | None = None
    pull_request: PullRequestSummary | None = None
    publication: runs.Publication | None = None
    """How publishing the run's work went; None when the run asked for no pull request
    or did not succeed."""
    state_dir: str = ""

    def render(self) -> str:
        lines = [
            "",
            f"== run {self.namespace}/{self.run} (uid {self.uid}) ==",
            f"phase        {self.phase} ({self.reason})"
            + (f": {self.message}" if self.message else ""),
            f"sandbox      {self.sandbox}"
            + ("   <-- NO ISOLATION (--sandbox none)" if self.sandbox == "none" else ""),
            f"tool calls   {self.allowed} allowed, {self.denied} denied, "
            f"{self.approved} approved by a person",
        ]
        for call in self.tool_calls:
            who = f" by {call.decided_by}" if call.decided_by else ""
            brief = runs.argument_summary(call.arguments, 70)
            lines.append(
                f"  {_verdict(call):<9} {call.tool} {brief}{who}"
                + (f"  [{call.rule}]" if call.rule else "")
            )
        if self.verify:
            lines.append("verify")
            for line in self.verify:
                state = "passed" if line.passed else f"FAILED (exit {line.exit_code})"
                lines.append(f"  {line.name:<12} {state}   $ {line.command}")
        else:
            lines.append("verify       (none ran)")
        if self.diff_files:
            lines.append(f"diff         {len(self.diff_files)} file(s), {self.diff_digest}")
            lines += [f"  {f.status} {f.path}" for f in self.diff_files]
        else:
            lines.append("diff         (no changes)")
        if self.record_digest:
            lines.append(f"record       {self.record_digest}")
        if self.ledger is not None:
            book = self.ledger
            state = "verified" if book.verified else "NOT VERIFIED: " + "; ".join(book.problems)
            lines += [
                f"ledger       {book.url}",
                f"  attested   entries {book.first}..{book.last}, Merkle root {book.merkle_root}",
                f"  head       #{book.head_sequence} {book.head_hash}",
                f"  check      {state}",
            ]
        if self.attestation is not None:
            att = self.attestation
            if att.signed:
                state = "verified" if att.verified else "NOT VERIFIED"
                lines += [
                    f"attestation  {att.bundle_digest}  ({state})",
                    f"  signed by  {att.key}",
                    f"  bundle     {att.location}",
                    f"  check      orchestrator verify {att.location} --key {att.public_key}",
                ]
            else:
                lines.append(f"attestation  NOT SIGNED: {att.reason}")
        if self.pull_request is not None:
            pr = self.pull_request
            lines += [
                f"pull request {pr.path}",
                f"  body       {pr.digest}" + ("" if pr.posted else _not_posted(self.publication)),
            ]
        done = self.publication
        if done is not None and done.pull_request is not None:
            lines.append(f"published    {done.pull_request.url}  (head {done.head_sha})")
        elif done is not None:
            lines.append(f"publication  FAILED at {done.step}: {done.message}")
        return "\n".join(lines)


def _not_posted(publication: runs.Publication | None) -> str:
    if publication is None:
        return "  (not posted: no forge configured)"
    return "  (not posted: publication failed)"


def _verdict(call: runs.ToolCall) -> str:
    if call.effect == "RequireApproval":
        return "approved" if call.delivered else "refused"
    return "allowed" if call.effect == "Allow" else "DENIED"
