"""A run's evidence as Markdown: the body of the pull request its diff becomes.

Issue 14's definition of done is that every pull request a run opens carries its
evidence: the tests that ran, the diff, a reasoning summary and the provenance, with the
commands that check it. All of it is already known when a run ends: its facts
(``runs.facts``, what the attestation states), its sealed record (the model's words and
the runner's report) and its ledger entries (every tool call and decision). This module
only lays them out, the same way every time: no model call, no clock, no randomness, so
the same run renders to the same bytes and a reviewer can regenerate and compare it.

GitHub refuses a body over 65,536 characters. Every quoted item has its own bound (an
output tail's lines, the model's message, an argument); if the whole still does not
fit, the largest sections are cut first, to a common size, each saying what it lost.
Quoted text is made harmless by ``_markdown`` so nothing a run wrote becomes live
Markdown.
"""

from __future__ import annotations

import dataclasses
import json
import shlex
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from continue_orchestrator import api, attest, errors, ledger, records, runner
from continue_orchestrator.runs import _diffstat, _evidence, _facts, _finish, _plan
from continue_orchestrator.runs import _markdown as md

BODY_LIMIT = 65_536
"""GitHub's limit on a pull request body, in characters."""
AGENT_SANDBOX = "agent's sandbox"
"""The verify run the runner made in the agent's own sandbox, after the agent."""
FRESH_SANDBOX = "fresh sandbox"
"""The verify run made again on a clean checkout, with no agent (publication's)."""
TAIL_LINES = 40
TAIL_CHARACTERS = 4_096
MESSAGE_CHARACTERS = 4_000
ARGUMENT_CHARACTERS = 80
REASON_CHARACTERS = 200
_ARGUMENT_KEYS = ("command", "filepath", "file_path", "path", "dirpath", "url", "pattern")


@dataclasses.dataclass(frozen=True, slots=True)
class VerifyRun:
    """The verify commands' results from one place they ran (``label``)."""

    label: str
    results: tuple[runner.VerifyResult, ...]


@dataclasses.dataclass(frozen=True, slots=True)
class Provenance:
    """Where the run's attestation and ledger are, so the body can say how to check them."""

    bundle_digest: str | None
    """The signed Sigstore bundle's ``sha256:`` digest; None when it was not signed."""
    bundle: str | None = None
    """Where the bundle is (a path, or a store's location)."""
    key: str | None = None
    """The public key that verifies it (key mode)."""
    identity: tuple[str, str] | None = None
    """The expected signer identity and issuer (keyless mode)."""
    ledger: str | None = None
    """The ledger's URL (or an export of it)."""
    ledger_key: str | None = None
    """The public key its checkpoints are signed with."""
    unsigned_reason: str = ""
    """Why there is no signed bundle, when there is none."""


@dataclasses.dataclass(frozen=True, slots=True)
class EvidenceInputs:
    """Everything the body says, as ``runs`` built it at the run's end."""

    run: api.AgentRun
    facts: attest.RunFacts
    finish: _finish.Finish
    entries: Sequence[ledger.Entry]
    """The run's ledger entries up to its ``run.finished`` (those the facts cover)."""
    record: records.RunRecord | None
    """The sealed record; None when the gateway kept none."""
    evidence: _evidence.Evidence
    provenance: Provenance
    verify_runs: tuple[VerifyRun, ...] | None = None
    """The verify runs to show; None: the agent's sandbox's, from the runner's report."""


def agent_verify_run(evidence: _evidence.Evidence) -> VerifyRun | None:
    """The runner's own verify results; None when its report never reached the record."""
    if evidence.outcome is None:
        return None
    return VerifyRun(label=AGENT_SANDBOX, results=tuple(evidence.outcome.verify))


def argument_summary(arguments: Any, limit: int = ARGUMENT_CHARACTERS) -> str:
    """A tool call's arguments in a few words: its command, path or URL when it has one."""
    if isinstance(arguments, Mapping):
        for key in _ARGUMENT_KEYS:
            if key in arguments:
                return md.shorten(str(arguments[key]), limit)
    return md.shorten(str(arguments), limit)


def final_message(record: records.RunRecord) -> str | None:
    """The model's last words: the text of the last upstream answer that had any.
    None when no recorded answer holds text."""
    said: str | None = None
    for turn in records.recorded_turns(record):
        text = _answer_text(turn.response)
        if text.strip():
            said = text
    return said


def _answer_text(response: bytes) -> str:
    """The assistant text of a chat completion, whole (JSON) or streamed (SSE)."""
    try:
        whole = json.loads(response)
    except ValueError:
        whole = None
    if isinstance(whole, dict):
        return records.message_text(_part(_first_choice(whole), "message"))
    parts: list[str] = []
    for line in response.splitlines():
        line = line.strip()
        data = line[len(b"data:") :].strip()
        if not line.startswith(b"data:") or data == b"[DONE]":
            continue
        try:
            event = json.loads(data)
        except ValueError:
            continue
        if isinstance(event, dict):
            content = _part(_first_choice(event), "delta").get("content")
            parts.append(content if isinstance(content, str) else "")
    return "".join(parts)


def _first_choice(payload: Mapping[str, Any]) -> Mapping[str, Any]:
    choices = payload.get("choices")
    return _part({"first": choices[0]}, "first") if isinstance(choices, list) and choices else {}


def _part(payload: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    """``payload[key]`` when it is an object, else an empty one (an answer is untrusted)."""
    found = payload.get(key)
    return found if isinstance(found, Mapping) else {}


def render(inputs: EvidenceInputs, *, limit: int = BODY_LIMIT) -> str:
    """The pull request body for a finished run, the same bytes for the same inputs.

    At most ``limit`` characters, given room for the headline and the provenance (which
    are never cut; a few KiB) and a line of each other section."""
    sections = [
        (_headline(inputs), False),
        (_verify(inputs), True),
        (_diff(inputs), True),
        (_reasoning(inputs), True),
        (_interventions(inputs.facts), True),
        (_provenance(inputs), False),
    ]
    return "\n\n".join(_fit(sections, limit)) + "\n"


def _fit(sections: Sequence[tuple[str, bool]], limit: int) -> list[str]:
    """The sections, the largest cut first to one common size until all fit in ``limit``
    (with their separators and the final newline)."""
    texts = [text for text, _ in sections]
    room = limit - 1 - 2 * (len(texts) - 1)
    if sum(map(len, texts)) <= room:
        return texts
    room -= sum(len(text) for text, cuttable in sections if not cuttable)
    sizes = sorted(len(text) for text, cuttable in sections if cuttable)
    cap, used = 0, 0
    for index, size in enumerate(sizes):
        share = (room - used) // (len(sizes) - index)
        if share < size:
            cap = share
            break
        used += size
    note = _cut_note(limit)
    return [md.cut(text, cap, note) if cuttable else text for text, cuttable in sections]


def _cut_note(limit: int) -> Callable[[int], str]:
    def note(left_out: int) -> str:
        return (
            f"_✂ Cut to keep this body under {limit:,} characters: {left_out:,} characters"
            " of this section are left out. The run record and the ledger hold all of it._"
        )

    return note


def _headline(inputs: EvidenceInputs) -> str:
    facts, finish, spec = inputs.facts, inputs.finish, inputs.run.spec
    run = f"{facts.run.namespace}/{facts.run.name}"
    repository = spec.repository
    outcome = inputs.evidence.outcome
    resolved = outcome.base_commit if outcome is not None else None
    if repository.commit:
        ref = md.code(repository.ref)
        at = f"commit {md.code(repository.commit)} (pinned by the spec; ref {ref})"
    elif resolved:
        at = (
            f"commit {md.code(resolved)} (ref {md.code(repository.ref)}, as the runner resolved it)"
        )
    else:
        at = f"ref {md.code(repository.ref)} (no commit: the run never cloned it)"
    calls = facts.tool_calls
    lines = [
        f"## Agent run {md.code(run)}: {finish.phase.value}",
        "",
        f"- **Run:** {md.code(run)}, uid {md.code(facts.run.uid)}",
        f"- **Phase:** {finish.phase.value} ({md.code(finish.reason)})"
        + (f": {md.code(md.shorten(finish.message, REASON_CHARACTERS))}" if finish.message else ""),
        f"- **Repository:** {md.code(_plan.shown_url(repository.url))} at {at}",
        f"- **Tool calls:** {calls.allowed} allowed, {calls.denied} denied, "
        f"{calls.approved} approved by a person",
        f"- **Ran:** {_finish.timestamp(facts.started_at)} to "
        f"{_finish.timestamp(facts.finished_at)}",
    ]
    if facts.replay_of is not None:
        of = facts.replay_of
        lines.append(
            f"- **Replay of:** {md.code(f'{of.namespace}/{of.name}')}, uid {md.code(of.uid)}"
        )
    return "\n".join(lines)


def _verify(inputs: EvidenceInputs) -> str:
    if inputs.verify_runs is not None:
        found = inputs.verify_runs
    else:
        agent = agent_verify_run(inputs.evidence)
        found = (agent,) if agent is not None else ()
    lines = ["### Verify results", ""]
    rows = [(run.label, item) for run in found for item in run.results]
    if rows:
        lines += [
            "| where | name | command | exit code | duration |",
            "|---|---|---|---:|---:|",
            *(
                f"| {_cell(label)} | {md.code(item.name)} | {md.code(item.command)} | "
                f"{_exit(item.result)} | {item.result.duration_seconds:.1f} s |"
                for label, item in rows
            ),
        ]
    if not rows and not inputs.run.spec.verify:
        return "\n".join([*lines, "The AgentRun names no verify commands."])
    labels = [AGENT_SANDBOX, FRESH_SANDBOX]
    labels += [run.label for run in found if run.label not in labels]
    for label in labels:
        run = next((r for r in found if r.label == label), None)
        if run is None or not run.results:
            lines += ["", _absent(label, run, inputs)]
    for label, item in rows:
        lines += ["", *_tail(label, item)]
    return "\n".join(lines)


def _exit(result: runner.ProcessResult) -> str:
    if result.timed_out:
        return "timed out"
    return "none" if result.exit_code is None else str(result.exit_code)


def _absent(label: str, run: VerifyRun | None, inputs: EvidenceInputs) -> str:
    """What to say of a verify run that is missing (``run`` None) or ran nothing."""
    if label == FRESH_SANDBOX and run is None:
        return (
            f"**{FRESH_SANDBOX}:** not re-verified. The verify commands ran only in the "
            "agent's own sandbox, so the results above are the agent run's word."
        )
    if run is None:
        return f"**{AGENT_SANDBOX}:** unknown: the runner's report did not reach the record."
    if label == AGENT_SANDBOX:
        return (
            f"**{AGENT_SANDBOX}:** no verify command ran: the run ended "
            f"{inputs.finish.phase.value} ({md.code(inputs.finish.reason)}) before verification."
        )
    return f"**{_html(label)}:** no verify command ran."


def _tail(label: str, item: runner.VerifyResult) -> list[str]:
    result = item.result
    text = md.clean(result.output).rstrip("\n")
    lines = text.split("\n") if text else []
    shown = lines[-TAIL_LINES:]
    while len(shown) > 1 and sum(len(line) + 1 for line in shown) > TAIL_CHARACTERS:
        shown = shown[1:]
    tail = "\n".join(shown)[-TAIL_CHARACTERS:]
    kept = "the runner kept the end of it" if result.truncated else "all of it kept"
    return [
        "<details>",
        f"<summary>{_html(item.name)} ({_html(label)}): last {len(shown)} line(s) of "
        f"{result.output_bytes:,} bytes of output, {kept}</summary>",
        "",
        md.fenced(tail),
        "",
        "</details>",
    ]


def _cell(text: str) -> str:
    """Plain text for a table cell: HTML-escaped, its pipes escaped."""
    return _html(text).replace("|", "\\|")


def _html(text: str) -> str:
    """Text for an HTML element's content (a ``<summary>``)."""
    plain = md.clean(text).replace("\n", " ")
    return plain.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _diff(inputs: EvidenceInputs) -> str:
    lines = ["### Diff", ""]
    outcome = inputs.evidence.outcome
    diff = outcome.diff if outcome is not None else None
    if diff is None:
        lines.append(
            "No diff was taken: the run ended before it, or its report did not reach the record."
        )
        return "\n".join(lines)
    stats = _diffstat.stat(diff)
    added = sum(s.additions or 0 for s in stats)
    removed = sum(s.deletions or 0 for s in stats)
    lines.append(
        f"{len(stats)} file(s) changed, +{added} -{removed}; digest {md.code(diff.digest)}, "
        f"{diff.size:,} bytes of patch."
        + (
            " The runner kept only the start of the patch, so files past it have no counts."
            if diff.truncated
            else ""
        )
    )
    if not stats:
        return "\n".join(lines)
    lines += ["", "| file | change | added | removed |", "|---|---|---:|---:|"]
    for item in stats:
        plus = "binary" if item.binary else _count(item.additions)
        minus = "" if item.binary else _count(item.deletions)
        lines.append(f"| {md.code(item.path)} | {item.change} | {plus} | {minus} |")
    return "\n".join(lines)


def _count(value: int | None) -> str:
    return "?" if value is None else str(value)


def _reasoning(inputs: EvidenceInputs) -> str:
    lines = ["### Reasoning summary", ""]
    said = _final(inputs.record)
    if said is None:
        lines.append("The run record holds no text from the model.")
    else:
        shown = md.shorten(said.strip(), MESSAGE_CHARACTERS)
        cut = f" (the first {MESSAGE_CHARACTERS:,} of {len(said.strip()):,} characters)"
        lines += [
            "The model's final message, from the run record"
            + (cut if len(shown) < len(said.strip()) else "")
            + ":",
            "",
            md.fenced(shown),
        ]
    calls = _facts.tool_calls(inputs.entries)
    lines.append("")
    if not calls:
        lines.append("The model asked for no tool call.")
        return "\n".join(lines)
    lines += [
        "Its tool calls, in the order the gateway decided them (from the ledger):",
        "",
        "| # | tool | arguments | decision | rule | by | reason |",
        "|---:|---|---|---|---|---|---|",
    ]
    for number, call in enumerate(calls, start=1):
        decision = call.verdict if call.effect != "RequireApproval" else f"held, {call.verdict}"
        if call.verdict == "denied":
            decision = f"**{decision}**"
        lines.append(
            f"| {number} | {md.code(call.tool)} | {md.code(argument_summary(call.arguments))} | "
            f"{decision} | {md.code(call.rule)} | {md.code(call.decided_by or '')} | "
            f"{md.code(md.shorten(call.reason, REASON_CHARACTERS))} |"
        )
    return "\n".join(lines)


def _final(record: records.RunRecord | None) -> str | None:
    if record is None:
        return None
    try:
        return final_message(record)
    except errors.RecordError:
        return None


def _interventions(facts: attest.RunFacts) -> str:
    lines = ["### Interventions", ""]
    if not facts.interventions:
        lines.append("None: no person approved, refused or stopped anything in this run.")
        return "\n".join(lines)
    lines += ["| when (UTC) | what | who | subject | reason |", "|---|---|---|---|---|"]
    for item in facts.interventions:
        lines.append(
            f"| {_finish.timestamp(item.at)} | {item.kind} | {md.code(item.actor)} | "
            f"{md.code(item.subject)} | {md.code(md.shorten(item.reason, REASON_CHARACTERS))} |"
        )
    return "\n".join(lines)


def _provenance(inputs: EvidenceInputs) -> str:
    facts, proof = inputs.facts, inputs.provenance
    span = facts.ledger
    bundle = (
        md.code(proof.bundle_digest)
        if proof.bundle_digest
        else f"not signed: {md.code(md.shorten(proof.unsigned_reason, REASON_CHARACTERS))}"
    )
    lines = [
        "### Provenance",
        "",
        f"- **Attestation** (Sigstore bundle): {bundle}",
        f"- **Run record:** {_sha(facts.record_digest)}",
        f"- **Ledger:** entries {span.first} to {span.last}, Merkle root {_sha(span.merkle_root)}",
        f"- **Inputs digest:** {_sha(facts.inputs.get('inputs'))}",
        f"- **Policy digest:** {_sha(facts.policy_digest)}",
        f"- **Diff:** {_sha(facts.diff_digest)}",
        f"- **Workspace tree:** {_sha(facts.workspace_tree_digest)}",
        f"- **Runner image:** {md.code(facts.runner_image)}",
        f"- **Continue CLI:** {md.code(facts.cli_version or '')}",
    ]
    commands = _check_commands(proof)
    if commands:
        lines += ["", "Check it:", "", md.fenced("\n".join(commands), "sh")]
    return "\n".join(lines)


def _sha(hex_or_none: str | None) -> str:
    return md.code(f"sha256:{hex_or_none}") if hex_or_none else "not measured"


def _check_commands(proof: Provenance) -> list[str]:
    commands: list[str] = []
    if proof.bundle_digest and proof.bundle:
        if proof.key:
            commands.append(
                f"orchestrator verify {shlex.quote(proof.bundle)} --key {shlex.quote(proof.key)}"
            )
        elif proof.identity:
            identity, issuer = proof.identity
            commands.append(
                f"orchestrator verify {shlex.quote(proof.bundle)} "
                f"--identity {shlex.quote(identity)} --issuer {shlex.quote(issuer)}"
            )
    if proof.ledger:
        key = f" --public-key {shlex.quote(proof.ledger_key)}" if proof.ledger_key else ""
        commands.append(f"orchestrator ledger verify {shlex.quote(proof.ledger)}{key}")
    return commands
