"""Publication in ``orchestrator run``: ``runs.publish`` with this machine's surroundings.

The pipeline is ``runs.publish``'s; this module gives it what only local mode has:

- the forge: ``forge.for_url`` of the repository, with the token
  ``--repository-credential`` gave (the one the gateway fetched with; there is no
  separate publishing credential locally yet);
- approvals: a RequireApproval on a publication step is decided by ``--approve-all``
  (granted) or ``--deny-all`` (refused); without either it is held in the run's
  gateway, still up, until ``orchestrator approve|deny`` decides it (``Waiter``), as a
  held tool call is, and the run's approval timeout denies it. Each is recorded as
  ``approval.requested`` / ``approval.granted`` / ``approval.denied``;
- the fresh sandbox: a new ``_sandbox.Sandbox`` of the run's ``--sandbox`` mode, with no
  port open (no gateway, no model, no network), the clean checkout bound at the
  workspace's path, and each verify command run with ``/bin/sh -c`` as the runner runs
  it, with a minimal environment (PATH, HOME=/tmp);
- the ledger: the run's own, as the run's actor.
"""

from __future__ import annotations

import asyncio
import dataclasses
import getpass
import pathlib
import tempfile
from collections.abc import Callable, Sequence
from typing import Any

from continue_orchestrator import api, errors, forge, gateway, ledger, policy, runner, runs
from continue_orchestrator.local import _context, _sandbox

_SANDBOX_PATH = "/usr/local/bin:/usr/bin:/bin"
_OUTPUT_LIMIT = 65536


@dataclasses.dataclass(frozen=True)
class Waiter:
    """Holds a publication approval in the run's gateway until a person decides it.

    Publication runs in a worker thread while the gateway serves on the event loop, so
    ``orchestrator approve`` reaches the broker as it does for a held tool call."""

    broker: gateway.LocalApprovalBroker
    loop: asyncio.AbstractEventLoop
    command: str
    """``RUN CALL --gateway URL --admin-token-file FILE`` without the call: what
    ``orchestrator approve|deny`` needs besides the call id."""
    timeout: float

    def wait(self, approval: gateway.Approval) -> gateway.ApprovalOutcome | None:
        """The decision; None when nobody decided within ``timeout`` (a denial)."""

        async def held() -> gateway.ApprovalOutcome | None:
            try:
                return await asyncio.wait_for(
                    self.broker.request(approval.run, approval), self.timeout
                )
            except TimeoutError:
                return None

        return asyncio.run_coroutine_threadsafe(held(), self.loop).result()

    def refuse_pending(self, run: str, by: str) -> None:
        """Ctrl-C: a held publication approval is refused, so the waiting thread ends."""
        for approval in self.broker.pending(run):
            self.broker.decide(run, approval.id, approved=False, by=by,
                               reason="the run was stopped")  # fmt: skip


@dataclasses.dataclass
class Surroundings:
    """``runs.Surroundings`` for one local run."""

    run: _context.LocalRun
    book: ledger.Ledger
    render: Callable[[runs.VerifyRun], str]
    """The evidence body, given the fresh sandbox's verify run."""
    workspace: str
    """Where the checkout is bound in the fresh sandbox: the pod's workspace path."""
    waiter: Waiter | None = None
    posted_body: str | None = None
    held: int = 0
    """Publication approvals asked so far (their ids: ``publication-N``)."""

    def approve(self, decision: policy.Decision) -> None:
        run = self.run
        what = decision.request.describe()
        approvals = run.options.approvals
        if approvals == "ask":
            self._ask(decision)
            return
        flag = "--approve-all" if approvals == "approve" else "--deny-all"
        by = run.options.decided_by or getpass.getuser()
        self.record(
            ledger.Kind.APPROVAL_GRANTED if approvals == "approve" else ledger.Kind.APPROVAL_DENIED,
            {"name": run.inputs.name, "namespace": run.inputs.namespace, "for": "publication",
             "request": what, "rule": decision.rule, "by": f"{by} ({flag})",
             "reason": f"decided by {flag}"},
        )  # fmt: skip
        if approvals == "deny":
            raise errors.PublicationError(
                f"{what} needs approval ({decision.reason}) and --deny-all refused it",
                step="approval",
                rule=decision.rule,
            )
        run.say(f"publication: {what} needs approval ({decision.rule}); {flag} granted it")

    def _ask(self, decision: policy.Decision) -> None:
        run, waiter = self.run, self.waiter
        what = decision.request.describe()
        if waiter is None:
            raise errors.PublicationError(
                f"{what} needs approval ({decision.reason}), and no gateway is up to hold it",
                step="approval",
                rule=decision.rule,
                fix="run with --approve-all to decide it, or allow it in the policy",
            )
        self.held += 1
        approval = gateway.Approval(
            id=f"publication-{self.held}", run=run.uid, tool="publication",
            arguments={"request": what}, rule=str(decision.rule or ""),
            reason=decision.reason, timeout=waiter.timeout,
        )  # fmt: skip
        names = {"name": run.inputs.name, "namespace": run.inputs.namespace, "for": "publication"}
        self.record(ledger.Kind.APPROVAL_REQUESTED, {**names, **approval.to_json()})
        common = f"{run.uid} {approval.id} {waiter.command}"
        run.say(
            f"\n  WAITING FOR APPROVAL of publication: {what}\n"
            f"    rule {decision.rule}: {decision.reason}\n"
            f"    approve:  orchestrator approve {common}\n"
            f"    deny:     orchestrator deny {common}\n"
            f"    (denied automatically after {waiter.timeout:g} s)\n"
        )
        outcome = waiter.wait(approval)
        decided = (outcome.decided_by, outcome.reason, outcome.approved) if outcome else None
        runs.settle_approval(self, names, decision, call_id=approval.id, decided=decided,
                             timeout=waiter.timeout)  # fmt: skip
        run.say(f"publication: {what} approved by {outcome.decided_by if outcome else '?'}")

    def verify(
        self, checkout: pathlib.Path, commands: Sequence[api.VerifyCommand]
    ) -> tuple[runner.VerifyResult, ...]:
        mode = self.run.options.sandbox
        self.run.say(f"publication: verify again in a fresh sandbox ({mode}), no agent, no model")
        results: list[runner.VerifyResult] = []
        with _sandbox.Sandbox(mode=mode) as box, tempfile.TemporaryDirectory() as home:
            inside = mode != "none"
            env = {"PATH": _SANDBOX_PATH, "HOME": "/tmp" if inside else home,
                   "LANG": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1"}  # fmt: skip
            binds = [_sandbox.Bind(str(checkout), self.workspace, True)] if inside else []
            for command in commands:
                completed = box.run(
                    ["/bin/sh", "-c", command.command], env=env,
                    cwd=self.workspace if inside else str(checkout), binds=binds,
                    timeout=float(command.timeout_seconds), limit=_OUTPUT_LIMIT,
                )  # fmt: skip
                output = completed.stdout + completed.stderr
                results.append(runner.VerifyResult(
                    name=command.name, command=command.command,
                    result=runner.ProcessResult(
                        exit_code=completed.exit_code, timed_out=completed.timed_out,
                        duration_seconds=completed.duration_seconds,
                        output=output[-_OUTPUT_LIMIT:].decode(errors="replace"),
                        output_bytes=completed.stdout_bytes + completed.stderr_bytes,
                        truncated=completed.stdout_bytes + completed.stderr_bytes > len(output),
                    ),
                ))  # fmt: skip
                self.run.say(f"publication: verify {command.name}: exit {completed.exit_code}")
        return tuple(results)

    def record(self, kind: ledger.Kind, payload: dict[str, Any]) -> None:
        self.book.append(self.run.uid, kind, self.run.actor, payload)

    def body(self, fresh: runs.VerifyRun) -> str:
        self.posted_body = self.render(fresh)
        return self.posted_body


def connect(run: _context.LocalRun) -> Callable[[str], forge.Forge]:
    """The forge for a repository URL, with ``--repository-credential``'s token."""

    def forge_for(url: str) -> forge.Forge:
        token = run.inputs.git_token
        if not token:
            raise errors.PublicationError(
                "publishing needs the forge token, and none was given",
                step="forge",
                where=url,
                fix="pass --repository-credential env:VAR (a token that may push and open "
                "pull requests)",
            )
        return forge.for_url(url, forge.Token(token=token))

    return forge_for


def publish(
    run: _context.LocalRun,
    inputs: runs.PublishInputs,
    around: Surroundings,
) -> runs.Publication:
    """Publish, saying what happened."""
    spot = runs.publication_target(run.inputs.run)
    run.say(
        f"publication: {spot.repository if spot else '?'} branch {spot.branch if spot else '?'}"
    )
    with tempfile.TemporaryDirectory(prefix="publish-") as scratch:
        done = runs.publish(
            dataclasses.replace(inputs, scratch=pathlib.Path(scratch)),
            connect(run),
            around,
        )
    if done.failed:
        run.say(f"publication FAILED at {done.step}: {done.message}")
    elif done.pull_request is not None:
        run.say(f"publication: pull request {done.pull_request.url} at {done.head_sha}")
    return done
