"""The replay report: identical, or the first divergence and what caused it.

Built from the two runs' records (tool calls as the gateway decided them, the runner's
outcome with the base commit and the diff digest) and from the input digests compared
before anything ran. A report never claims "identical" unless the model requests, the
tool-call sequence and the workspace diff all matched.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import rfc8785

from continue_orchestrator import digest, errors
from continue_orchestrator.records import _record, _replay

INPUT_NAMES = ("spec", "commit", "config", "policy", "image", "cli")
"""The inputs compared before a replay runs, in the order a report lists them."""

REPLAY_FIELDS = ("replayOf", "trigger", "cancel")
"""Spec fields a replay may change without changing what the run does."""


def spec_digest(spec: Mapping[str, Any]) -> str:
    """SHA-256 of the canonical wire spec, without the fields in ``REPLAY_FIELDS``."""
    kept = {key: value for key, value in spec.items() if key not in REPLAY_FIELDS}
    return digest.text(rfc8785.dumps(kept))


def input_digests(
    spec: Mapping[str, Any], *, config: str, policy_digest: str, runner_image: str, cli: str | None
) -> dict[str, str | None]:
    """Named digests of everything a replay must share with its recording; ``spec`` is
    the AgentRun's wire spec (``run.spec.wire()``). ``orchestrator run`` and the operator
    both note these in ``run.created`` (``replayInputs``), so both compare alike.

    ``commit`` is the pinned commit, or None when the run follows a branch: the commit
    it resolves to is only known once cloned, and the replay report compares it then.
    ``cli`` is None where the runner image pins the CLI (the cluster).
    """
    repository = spec.get("repository") or {}
    return {
        "spec": spec_digest(spec),
        "commit": repository.get("commit"),
        "config": digest.text(config),
        "policy": policy_digest,
        "image": runner_image,
        "cli": cli,
    }


@dataclass(frozen=True)
class InputDrift:
    """One input whose digest differs between the recording and the replay."""

    name: str
    recorded: str | None
    replayed: str | None

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "recorded": self.recorded, "replayed": self.replayed}


def input_drift(
    recorded: Mapping[str, str | None], replayed: Mapping[str, str | None]
) -> list[InputDrift]:
    """The inputs that differ. An input the recording did not note (None) is not compared;
    one the replay cannot know yet (a commit a branch resolves to) is not either."""
    names = [*INPUT_NAMES, *sorted(set(recorded) - set(INPUT_NAMES))]
    return [
        InputDrift(name, recorded.get(name), replayed.get(name))
        for name in names
        if recorded.get(name) is not None
        and replayed.get(name) is not None
        and recorded.get(name) != replayed.get(name)
    ]


@dataclass(frozen=True)
class RunSummary:
    """What a run did, as its record tells it."""

    run: str
    tool_calls: tuple[Mapping[str, Any], ...]
    """Every tool call the model asked for: tool, arguments and the policy's effect."""
    diff_digest: str | None
    base_commit: str | None
    status: str | None
    withheld: tuple[Mapping[str, Any], ...] = ()
    """Every tool result the policy withheld from the model: tool, rule and the digest of
    what was withheld (the model saw only a notice, so its requests cannot tell two
    different withheld results apart; these digests can)."""

    def to_json(self) -> dict[str, Any]:
        return {
            "run": self.run,
            "toolCalls": [dict(call) for call in self.tool_calls],
            "withheld": [dict(result) for result in self.withheld],
            "diffDigest": self.diff_digest,
            "baseCommit": self.base_commit,
            "status": self.status,
        }


def summarise(record: _record.RunRecord) -> RunSummary:
    calls: list[Mapping[str, Any]] = []
    withheld: list[Mapping[str, Any]] = []
    outcome: Mapping[str, Any] = {}
    for exchange in record.exchanges:
        if exchange.kind == "tool.result" and isinstance(exchange.facts.get("withheld"), Mapping):
            facts = exchange.facts["withheld"]
            withheld.append(
                {
                    "tool": exchange.facts.get("tool"),
                    "rule": facts.get("rule"),
                    "contentDigest": facts.get("contentDigest"),
                }
            )
        elif exchange.kind == "model":
            for decision in exchange.facts.get("decisions") or []:
                calls.append(
                    {
                        "tool": decision.get("tool"),
                        "arguments": decision.get("arguments"),
                        "effect": decision.get("effect"),
                    }
                )
        elif exchange.kind == "run.outcome" and "outcome" in exchange.blobs:
            try:
                outcome = json.loads(record.store.get(exchange.blobs["outcome"]))
            except ValueError as error:
                raise errors.RecordError(
                    f"step {exchange.step}: the run's outcome is not JSON",
                    where=str(record.directory),
                    fix="the record is damaged",
                ) from error
    diff = outcome.get("diff") if isinstance(outcome.get("diff"), Mapping) else {}
    return RunSummary(
        run=record.run,
        tool_calls=tuple(calls),
        diff_digest=(diff or {}).get("digest"),
        base_commit=outcome.get("baseCommit"),
        status=outcome.get("status"),
        withheld=tuple(withheld),
    )


@dataclass
class ReplayReport:
    """Identical, or the first divergence with its step, message, diff and cause."""

    original: str
    """The recorded run's uid."""
    original_record: str
    replay: str | None = None
    replay_record: str | None = None
    ran: bool = False
    """False when input drift stopped the replay before anything ran."""
    input_drift: list[InputDrift] = field(default_factory=list)
    divergence: _replay.Divergence | None = None
    recorded: RunSummary | None = None
    replayed: RunSummary | None = None
    model_requests: int = 0
    recorded_model_requests: int = 0
    normalisation_version: int = _replay.NORMALISATION_VERSION

    @property
    def identical(self) -> bool:
        return self.ran and not self.input_drift and self.divergence is None

    @property
    def cause(self) -> str | None:
        if self.input_drift and not self.ran:
            return "input-drift"
        return self.divergence.cause if self.divergence else None

    def to_json(self) -> dict[str, Any]:
        return {
            "identical": self.identical,
            "cause": self.cause,
            "original": self.original,
            "originalRecord": self.original_record,
            "replay": self.replay,
            "replayRecord": self.replay_record,
            "ran": self.ran,
            "inputDrift": [drift.to_json() for drift in self.input_drift],
            "divergence": self.divergence.to_json() if self.divergence else None,
            "recorded": self.recorded.to_json() if self.recorded else None,
            "replayed": self.replayed.to_json() if self.replayed else None,
            "modelRequests": self.model_requests,
            "recordedModelRequests": self.recorded_model_requests,
            "normalisationVersion": self.normalisation_version,
        }

    def render(self) -> str:
        lines = ["", f"== replay of {self.original} ({self.original_record}) =="]
        if self.replay:
            lines.append(f"replay       {self.replay} ({self.replay_record or 'no record'})")
        if self.identical:
            calls = len(self.replayed.tool_calls) if self.replayed else 0
            lines.append(
                f"result       IDENTICAL: {self.model_requests} model requests, {calls} tool "
                f"calls and the diff match (normalisation v{self.normalisation_version})"
            )
            return "\n".join(lines)
        lines.append(f"result       DIVERGED ({self.cause})")
        for drift in self.input_drift:
            lines.append(f"  input      {drift.name}: {drift.recorded} -> {drift.replayed}")
        if not self.ran:
            lines.append("  nothing ran: the inputs differ from the recorded run's")
        divergence = self.divergence
        if divergence is not None:
            if divergence.step is not None:
                at = f"  at         step {divergence.step}"
                if divergence.turn is not None:
                    at += f" (model request {divergence.turn + 1})"
                if divergence.message_index is not None:
                    at += f", message {divergence.message_index} ({divergence.role})"
                lines.append(at)
            lines.append(f"  what       {divergence.what}")
            if divergence.tool_call:
                function = divergence.tool_call.get("function") or {}
                got = divergence.tool_result_step
                lines.append(
                    f"  tool call  {function.get('name')} {function.get('arguments')}"
                    + (f" (its result: recorded step {got})" if got is not None else "")
                )
            if divergence.diff:
                lines.append("")
                lines.extend(divergence.diff.splitlines())
        return "\n".join(lines)


def build(
    *,
    original: _record.RunRecord,
    original_digest: str,
    replay: _record.RunRecord | None,
    replay_digest: str | None,
    model: _replay.ReplayModel | None,
    drift: Sequence[InputDrift] = (),
) -> ReplayReport:
    """The report once the replay ran (or was refused for ``drift``)."""
    report = ReplayReport(
        original=original.run,
        original_record=original_digest,
        replay=replay.run if replay else None,
        replay_record=replay_digest,
        ran=replay is not None,
        input_drift=list(drift),
        recorded=summarise(original),
    )
    report.recorded_model_requests = len(_replay.recorded_turns(original))
    if replay is None or model is None:
        return report
    report.replayed = summarise(replay)
    report.model_requests = model.requests
    divergence = model.finish()
    recorded, replayed = report.recorded, report.replayed
    assert recorded is not None
    commit_moved = (
        recorded.base_commit is not None
        and replayed.base_commit is not None
        and recorded.base_commit != replayed.base_commit
    )
    if commit_moved:
        report.input_drift.append(InputDrift("commit", recorded.base_commit, replayed.base_commit))
    if divergence is not None and commit_moved and divergence.cause == "environment":
        divergence = _with_cause(
            divergence,
            "input-drift",
            f"the repository resolved to another commit ({recorded.base_commit} -> "
            f"{replayed.base_commit}); {divergence.what}",
        )
    if divergence is None and recorded.tool_calls != replayed.tool_calls:
        divergence = _replay.Divergence(
            cause="agent-drift",
            what="the tool-call sequence differs although every model request matched",
            recorded=[dict(c) for c in recorded.tool_calls],
            replayed=[dict(c) for c in replayed.tool_calls],
        )
    if divergence is None and recorded.withheld != replayed.withheld:
        divergence = _replay.Divergence(
            cause="input-drift" if commit_moved else "environment",
            what="a tool result the policy withheld from the model differs from the recording "
            "(the model saw the same notice; the withheld contents' digests differ)",
            recorded=[dict(w) for w in recorded.withheld],
            replayed=[dict(w) for w in replayed.withheld],
        )
    if divergence is None and recorded.diff_digest != replayed.diff_digest:
        divergence = _replay.Divergence(
            cause="input-drift" if commit_moved else "environment",
            what=(
                f"the workspace diff differs ({recorded.diff_digest} -> "
                f"{replayed.diff_digest}) although every tool call matched"
            ),
        )
    if divergence is None and commit_moved:
        divergence = _replay.Divergence(
            cause="input-drift",
            what=(
                f"the repository resolved to another commit ({recorded.base_commit} -> "
                f"{replayed.base_commit}), though the agent did the same"
            ),
        )
    if divergence is not None and divergence.tool_call is not None:
        divergence = dataclasses.replace(
            divergence, tool_result_step=_result_step(original, divergence.tool_call.get("id"))
        )
    report.divergence = divergence
    return report


def _result_step(record: _record.RunRecord, call_id: Any) -> int | None:
    for exchange in record.exchanges:
        if exchange.kind == "tool.result" and exchange.facts.get("toolCallId") == call_id:
            return exchange.step
    return None


def _with_cause(
    divergence: _replay.Divergence, cause: _replay.Cause, what: str
) -> _replay.Divergence:
    return dataclasses.replace(divergence, cause=cause, what=what)
