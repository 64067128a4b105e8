"""How a local run ends: its ``run.finished`` entry, its report and its attestation.

The runner's exit code (or the one it reported) becomes the run's phase with
``runs.phase_of``, as the operator maps a pod's; the ``run.finished`` entry is a
``runs.Finish``, as the operator writes it. Everything the report and the attestation
say comes from what was recorded, read back: the ledger entries, and the gateway's
sealed record with the runner's report in it (``runs.read_evidence``); the facts are
``runs.facts``, the operator's builder. The attestation is signed with a development
key that says so, stored under the state directory and verified again. The pull
request body (``runs.evidence_body``) is written beside the report as
``pull-request.md``; when the run succeeded and its AgentRun asks for a pull request,
the run's work is published (``_publish``, ``runs.publish``) and the file holds the
body that was posted, with the fresh sandbox's verify results. Ctrl-C ends the run as
a manual stop (``stopped``).
"""

from __future__ import annotations

import asyncio
import os
import pathlib
from datetime import UTC, datetime

from continue_orchestrator import (
    api,
    attest,
    digest,
    errors,
    gateway,
    ledger,
    policy,
    records,
    runs,
)
from continue_orchestrator.local import _context, _publish, _report, _sandbox


async def stopped(
    run: _context.LocalRun, server: gateway.Gateway, book: ledger.Ledger, plan: runs.Plan
) -> None:
    """Ctrl-C: held calls are refused, and the run ends Cancelled, as a manual stop."""
    broker = server.broker
    if isinstance(broker, gateway.LocalApprovalBroker):
        for approval in broker.pending(run.uid):
            broker.decide(run.uid, approval.id, approved=False, by=run.actor,
                          reason="the run was stopped")  # fmt: skip
    await asyncio.sleep(0.5)  # let the gateway record the refusals and answer
    finish = runs.Finish(
        phase=api.Phase.CANCELLED,
        reason="ManualStop",
        message="interrupted by the person running orchestrator run",
        started_at=run.started,
        finished_at=datetime.now(UTC),
        inputs_digest=plan.inputs_digest,
        policy_digest=plan.snapshot.digest,
    )
    _append_finish(run, book, finish)
    run.say("phase: Cancelled (ManualStop); the sandbox is being torn down")


def _append_finish(run: _context.LocalRun, book: ledger.Ledger, finish: runs.Finish) -> None:
    payload = finish.payload(name=run.inputs.name, namespace=run.inputs.namespace)
    book.append(run.uid, ledger.Kind.RUN_FINISHED, run.actor, payload)


def finish(
    run: _context.LocalRun,
    book: ledger.Ledger,
    plan: runs.Plan,
    completed: _sandbox.Completed,
    *,
    record_digest: str | None,
    image: str,
    gateway_url: str,
    waiter: _publish.Waiter | None = None,
) -> _report.Report:
    """The run's end once the gateway sealed its record (``record_digest``, as it
    answered): ledger entry, report, attestation."""
    evidence = runs.read_evidence(records.BlobStore(run.records), run.uid) or runs.Evidence()
    outcome = evidence.outcome
    if completed.timed_out:
        phase, reason = api.Phase.TIMED_OUT, "DeadlineExceeded"
    else:
        reported = outcome.exit_code if outcome is not None else completed.exit_code
        phase, reason = runs.phase_of(reported)
    if outcome is None and phase is api.Phase.SUCCEEDED:
        phase, reason = api.Phase.FAILED, "NoOutcome"
    end = runs.Finish(
        phase=phase,
        reason=reason,
        message=outcome.message if outcome is not None else "",
        started_at=run.started,
        finished_at=datetime.now(UTC),
        inputs_digest=plan.inputs_digest,
        policy_digest=plan.snapshot.digest,
        record_digest=record_digest,
    )
    _append_finish(run, book, end)
    run.say(f"phase: {phase.value} ({reason})")
    entries = list(book.entries(run_uid=run.uid))
    calls = runs.tool_calls(entries)
    allowed, denied, approved = runs.counts(calls)
    # The checkpoint the attestation cites is signed with the same development key.
    dev_key = attest.ensure_dev_key(run.state / "keys")
    signing_key = attest.load_private_key(
        dev_key.private_key_path.read_bytes(), where=str(dev_key.private_key_path)
    )
    checkpoint = book.checkpoint(ledger.KeySigner(signing_key))
    first, last = entries[0], entries[-1]
    summary = _report.LedgerSummary(
        url=run.ledger_url, first=first.sequence, last=last.sequence,
        head_sequence=last.sequence, head_hash=last.entry_hash,
        merkle_root=checkpoint.root_hash,
    )  # fmt: skip
    diff = outcome.diff if outcome is not None else None
    report = _report.Report(
        run=run.inputs.name, uid=run.uid, namespace=run.inputs.namespace,
        sandbox=run.options.sandbox, phase=phase.value, reason=reason, message=end.message,
        exit_code=completed.exit_code, gateway=gateway_url,
        tool_calls=calls, allowed=allowed, denied=denied, approved=approved,
        verify=[
            _report.VerifyLine(
                name=v.name, command=v.command, exit_code=v.result.exit_code, passed=v.passed,
                duration_seconds=v.result.duration_seconds,
            )
            for v in (outcome.verify if outcome is not None else [])
        ],
        diff_files=[_report.ChangedFile(status=f.status, path=f.path)
                    for f in (diff.files if diff is not None else [])],
        diff_digest=diff.digest if diff is not None else None,
        record_digest=record_digest, ledger=summary, state_dir=str(run.state),
    )  # fmt: skip
    facts = runs.facts(
        run.inputs.run,
        uid=run.uid,
        finish=end,
        entries=entries,
        evidence=evidence,
        merkle_root=checkpoint.root_hash,
        runner_image=image,
        builder_id=f"urn:continue-orchestrator:local:{os.uname().nodename}",
        stopped_by=run.actor,
    )
    report.attestation = _attest(run, book, facts)
    report.pull_request, report.publication = _pull_request(
        run, book, plan, facts, end, entries, evidence, report.attestation, waiter
    )
    head = list(book.entries(run_uid=run.uid, start=last.sequence + 1))
    if head:
        summary.head_sequence, summary.head_hash = head[-1].sequence, head[-1].entry_hash
    checked = ledger.verify(book, public_key=signing_key.public_key())
    summary.verified = checked.ok
    summary.problems = [f"entry {p.sequence}: {p.what}" for p in checked.problems]
    return report


def _pull_request(
    run: _context.LocalRun,
    book: ledger.Ledger,
    plan: runs.Plan,
    facts: attest.RunFacts,
    end: runs.Finish,
    entries: list[ledger.Entry],
    evidence: runs.Evidence,
    attestation: _report.AttestationSummary,
    waiter: _publish.Waiter | None,
) -> tuple[_report.PullRequestSummary, runs.Publication | None]:
    """The pull request body, written beside the report; when the run succeeded and its
    AgentRun asks for a pull request, published (``runs.publish``) with that body."""
    try:
        record = records.load(records.BlobStore(run.records), run.uid)
    except errors.RecordError:
        record = None
    signed = attestation.signed

    def render(fresh: runs.VerifyRun | None) -> str:
        agent = runs.agent_verify_run(evidence)
        verify_runs = None if fresh is None else (*([agent] if agent else []), fresh)
        return runs.evidence_body(
            runs.EvidenceInputs(
                run=run.inputs.run, facts=facts, finish=end, entries=entries, record=record,
                evidence=evidence, verify_runs=verify_runs,
                provenance=runs.Provenance(
                    bundle_digest=attestation.bundle_digest if signed else None,
                    bundle=attestation.location, key=attestation.public_key,
                    ledger=run.ledger_url, ledger_key=attestation.public_key,
                    unsigned_reason=attestation.reason,
                ),
            )
        )  # fmt: skip

    publication: runs.Publication | None = None
    body: str | None = None
    if end.phase is api.Phase.SUCCEEDED and runs.publication_target(run.inputs.run):
        around = _publish.Surroundings(
            run, book, render, workspace=runs.WORKSPACE_DIR, waiter=waiter
        )
        publication = _publish.publish(run, runs.PublishInputs(
            run=run.inputs.run, uid=run.uid,
            policy_set=policy.compile_snapshot(plan.snapshot.content),
            outcome=evidence.outcome, bundle_digest=attestation.bundle_digest if signed else None,
            record_digest=end.record_digest, finished_at=end.finished_at or run.started,
            scratch=run.root,
        ), around)  # fmt: skip
        body = around.posted_body
    if body is None:
        body = render(None)
    path = run.root / "pull-request.md"
    path.write_text(body, encoding="utf-8")
    posted = publication is not None and publication.pull_request is not None
    summary = _report.PullRequestSummary(path=str(path), digest=digest.text(body), posted=posted)
    return summary, publication


def _attest(
    run: _context.LocalRun, book: ledger.Ledger, facts: attest.RunFacts
) -> _report.AttestationSummary:
    key = attest.ensure_dev_key(run.state / "keys")
    signer = attest.KeySigner.from_pem(key.private_key_path.read_bytes(),
                                       where=str(key.private_key_path))  # fmt: skip
    statement = attest.build_statement(facts)
    status = attest.publish(
        statement,
        signer=signer,
        store=attest.FileStore(run.state / "attestations"),
        name=f"{run.uid}.sigstore.json",
        attempts=2,
        backoff_seconds=0.1,
    )
    summary = _report.AttestationSummary(
        public_key=str(key.public_key_path),
        **status.model_dump(
            include={"signed", "location", "bundle_digest", "statement_digest", "reason"}
        ),
    )
    if status.signed and status.location:
        try:
            attest.verify_bundle(
                pathlib.Path(status.location).read_bytes(),
                public_key=key.public_key_path.read_bytes(),
            )
            summary.verified = True
        except errors.AttestationError as error:
            summary.reason = f"re-verification failed: {error.message}"
    book.append(run.uid, ledger.Kind.ATTESTATION_PUBLISHED, run.actor, {
        "name": run.inputs.name, "namespace": run.inputs.namespace,
        "signed": status.signed, "mode": "key", "key": _report.DEV_KEY_LABEL,
        "keyHint": signer.hint, "bundleDigest": status.bundle_digest,
        "statementDigest": status.statement_digest, "location": status.location,
        "reason": status.reason,
    })  # fmt: skip
    return summary
