"""A finished run's facts: what its attestation and its report say, built in one place.

The facts come from three sources, read the same way wherever the run ran: the run's
ledger entries (tool calls and their decisions, human interventions, the replay it is,
the config digest noted at its start), the gateway's sealed record with the runner's
report in it (``Evidence``), and how the run ended (``Finish``). The operator's
attestor and ``orchestrator run`` both call ``facts``; only what differs by nature is
theirs to give (the ledger's Merkle root, the runner image, the builder's id, who can
stop a run). Where the two used to say different things, the meaning chosen is
documented on ``facts`` and in docs/attestation.md.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Sequence
from typing import Any, Literal

import pydantic
from pydantic import alias_generators

from continue_orchestrator import api, attest, digest, errors, ledger, policy
from continue_orchestrator.runs import _evidence, _finish, _plan

Outcome = Literal["succeeded", "failed", "stopped"]
_OUTCOMES: dict[api.Phase, Outcome] = {
    api.Phase.SUCCEEDED: "succeeded",
    api.Phase.DENIED: "stopped",
    api.Phase.CANCELLED: "stopped",
}


class ToolCall(pydantic.BaseModel):
    """One tool call the model asked for, and what became of it."""

    model_config = pydantic.ConfigDict(
        alias_generator=alias_generators.to_camel, populate_by_name=True, extra="forbid"
    )

    call_id: str
    tool: str
    arguments: Any = None
    effect: str
    """Allow, Deny or RequireApproval: the policy's answer."""
    rule: str = ""
    reason: str = ""
    decided_by: str | None = None
    """Who approved or refused a held call (``timeout`` when nobody did)."""
    delivered: bool = False
    """Whether the agent got the call to run."""

    @property
    def verdict(self) -> Literal["allowed", "denied", "approved"]:
        """A held call counts as approved only if it was delivered, else as denied."""
        if self.effect == "Allow":
            return "allowed"
        if self.effect == "RequireApproval" and self.delivered:
            return "approved"
        return "denied"


def tool_calls(entries: Iterable[ledger.Entry]) -> list[ToolCall]:
    """The run's tool calls in decision order, from the gateway's ledger entries."""
    calls: list[ToolCall] = []
    for entry in entries:
        payload = entry.payload or {}
        call_id = str(payload.get("callId") or "")
        if entry.kind is ledger.Kind.POLICY_DECISION and "tool" in payload:
            calls.append(
                ToolCall(
                    call_id=call_id,
                    tool=str(payload.get("tool") or ""),
                    arguments=payload.get("arguments"),
                    effect=str(payload.get("effect") or ""),
                    rule=str(payload.get("rule") or ""),
                    reason=str(payload.get("reason") or ""),
                )
            )
            continue
        # A decision, or the delivery, is about the latest call of that id.
        call = next((c for c in reversed(calls) if c.call_id == call_id), None)
        if call is None:
            continue
        if entry.kind in (ledger.Kind.APPROVAL_GRANTED, ledger.Kind.APPROVAL_DENIED):
            call.decided_by = str(payload.get("by") or entry.actor)
        elif entry.kind is ledger.Kind.TOOL_CALL:
            call.delivered = True
    return calls


def counts(calls: Sequence[ToolCall]) -> tuple[int, int, int]:
    """(allowed, denied, approved): held calls count as approved or denied, never both."""
    summary = tool_call_summary(calls)
    return summary.allowed, summary.denied, summary.approved


def tool_call_summary(calls: Sequence[ToolCall]) -> attest.ToolCallSummary:
    """Allowed / denied / approved tool calls, in total and per tool."""
    totals = {"allowed": 0, "denied": 0, "approved": 0}
    by_tool: dict[str, dict[str, int]] = {}
    for call in calls:
        totals[call.verdict] += 1
        slot = by_tool.setdefault(call.tool, {"allowed": 0, "denied": 0, "approved": 0})
        slot[call.verdict] += 1
    return attest.ToolCallSummary(
        **totals,
        by_tool={tool: attest.ToolCallCounts(**n) for tool, n in sorted(by_tool.items())},
    )


def interventions(
    entries: Iterable[ledger.Entry], finish: _finish.Finish, *, stopped_by: str
) -> tuple[attest.Intervention, ...]:
    """Human decisions: approvals and denials from the ledger, and a manual stop (a run
    that ended Cancelled), by ``stopped_by``."""
    found: list[attest.Intervention] = []
    for entry in entries:
        if entry.kind not in (ledger.Kind.APPROVAL_GRANTED, ledger.Kind.APPROVAL_DENIED):
            continue
        payload = entry.payload or {}
        found.append(
            attest.Intervention(
                kind="approval" if entry.kind is ledger.Kind.APPROVAL_GRANTED else "denial",
                actor=str(payload.get("by") or entry.actor),
                at=_finish.parse_time(entry.time) or _now(),
                subject=str(payload.get("callId") or ""),
                reason=str(payload.get("reason") or ""),
            )
        )
    if finish.phase is api.Phase.CANCELLED:
        found.append(
            attest.Intervention(
                kind="manual-stop",
                actor=stopped_by,
                at=finish.finished_at or _now(),
                subject="run",
                reason=finish.message,
            )
        )
    return tuple(found)


def replay_of(entries: Iterable[ledger.Entry]) -> attest.RunRef | None:
    """The run a replay replayed, from its ``replay.started`` entry."""
    for entry in entries:
        if entry.kind is ledger.Kind.REPLAY_STARTED and entry.payload:
            found = entry.payload.get("replayOf") or {}
            return attest.RunRef(
                namespace=str(found.get("namespace") or ""),
                name=str(found.get("name") or found.get("uid") or ""),
                uid=str(found.get("uid") or ""),
            )
    return None


def _config_digest(entries: Iterable[ledger.Entry]) -> str | None:
    """The config digest the run's ``run.created`` entry noted (``replayInputs``)."""
    for entry in entries:
        if entry.kind is ledger.Kind.RUN_CREATED and entry.payload:
            noted = entry.payload.get("replayInputs") or {}
            return digest.hex_of(noted.get("config"), where="run.created replayInputs.config")
    return None


def _repository(run: api.AgentRun, evidence: _evidence.Evidence) -> str:
    repository = run.spec.repository
    resolved = evidence.outcome.base_commit if evidence.outcome is not None else None
    return f"{repository.url}@{repository.commit or resolved or repository.ref}"


def check_attestable(finish: _finish.Finish, *, where: str) -> str:
    """The policy digest's hex; ``errors.AttestationError`` if the run never got a
    policy snapshot (it was refused before it ran: there is nothing to attest)."""
    policy_digest = digest.hex_of(finish.policy_digest, where=f"{where}: policy digest")
    if policy_digest is None:
        raise errors.AttestationError(
            "the run never got a policy snapshot, so it never ran: nothing to attest",
            where=where,
            fix="see status.conditions (PolicyValid) for why it was refused",
        )
    return policy_digest


def facts(
    run: api.AgentRun,
    *,
    uid: str,
    finish: _finish.Finish,
    entries: Sequence[ledger.Entry],
    evidence: _evidence.Evidence,
    merkle_root: str,
    runner_image: str,
    builder_id: str,
    stopped_by: str,
) -> attest.RunFacts:
    """The facts of a finished run, for its attestation (``attest.RunFacts``).

    ``entries`` are the run's ledger entries up to its ``run.finished``; ``merkle_root``
    is the ledger's root at that moment. Inputs, as hex SHA-256: ``agentrun-spec``, the
    spec as ``inputs_digest`` digests it (wire form without ``cancel``); ``prompt``;
    ``repository``, ``URL@COMMIT`` with the commit the spec pins, else the one the runner
    resolved its ref to, else the ref; ``config.yaml``, the config as the run's bundle
    carried it (literal keys brokered), from its ``run.created`` entry; ``inputs``, the
    inputs digest. Raises ``errors.AttestationError`` when there is nothing to attest.
    """
    namespace, name = run.metadata.namespace or "default", str(run.metadata.name)
    where = f"AgentRun {namespace}/{name}"
    policy_digest = check_attestable(finish, where=where)
    if not entries:
        raise errors.AttestationError(
            "the run has no ledger entries", where=where, fix="check the operator's ledger"
        )
    spec = run.spec
    inputs = {
        "agentrun-spec": digest.of(policy.canonical_json(_plan.spec_document(run))).hex,
        "prompt": digest.of(spec.prompt).hex,
        "repository": digest.of(_repository(run, evidence)).hex,
    }
    config = _config_digest(entries)
    if config is not None:
        inputs["config.yaml"] = config
    noted = digest.hex_of(finish.inputs_digest, where=f"{where}: inputs digest")
    if noted is not None:
        inputs["inputs"] = noted
    finished = finish.finished_at or _now()
    started = min(finish.started_at or finished, finished)
    record = evidence.record_digest or finish.record_digest
    try:
        return attest.RunFacts(
            run=attest.RunRef(namespace=namespace, name=name, uid=uid),
            outcome=_OUTCOMES.get(finish.phase, "failed"),
            # Unmeasured is null, never a digest of nothing (docs/attestation.md).
            record_digest=digest.hex_of(record, where=f"{where}: record digest"),
            diff_digest=digest.hex_of(evidence.diff_digest, where=f"{where}: diff digest"),
            workspace_tree_digest=digest.hex_of(
                evidence.workspace_tree_digest, where=f"{where}: workspace tree digest"
            ),
            ledger=attest.LedgerRange(
                first=entries[0].sequence, last=entries[-1].sequence, merkle_root=merkle_root
            ),
            inputs=inputs,
            policy_digest=policy_digest,
            runner_image=runner_image,
            cli_version=evidence.cli_version,
            models=evidence.models,
            tool_calls=tool_call_summary(tool_calls(entries)),
            verify_results=evidence.verify_results,
            interventions=interventions(entries, finish, stopped_by=stopped_by),
            started_at=started,
            finished_at=finished,
            builder_id=builder_id,
            replay_of=replay_of(entries),
        )
    except ValueError as error:  # pydantic's ValidationError is a ValueError
        raise errors.AttestationError(
            f"the run's facts are not attestable: {error}".splitlines()[0][:1024],
            where=where,
            fix="a runner image must be pinned by digest (name@sha256:...) to be attested",
        ) from error


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)
