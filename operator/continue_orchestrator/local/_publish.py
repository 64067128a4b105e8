"""Publication in ``orchestrator run``: ``runs.publish`` with this machine's surroundings.

The pipeline is ``runs.publish``'s; this module gives it what only local mode has:

- the forge: ``forge.for_url`` of the repository, with the token
  ``--repository-credential`` gave (the one the gateway fetched with; there is no
  separate publishing credential locally yet);
- approvals: a RequireApproval on a publication step is decided by ``--approve-all``
  (granted) or ``--deny-all`` (refused), recorded as ``approval.granted`` /
  ``approval.denied``; without either, publication fails saying that approving a
  publication through ``orchestrator approve`` is not supported locally yet (the
  gateway that would hold the approval has already stopped);
- the fresh sandbox: a new ``_sandbox.Sandbox`` of the run's ``--sandbox`` mode, with no
  port open (no gateway, no model, no network), the clean checkout bound at the
  workspace's path, and each verify command run with ``/bin/sh -c`` as the runner runs
  it, with a minimal environment (PATH, HOME=/tmp);
- the ledger: the run's own, as the run's actor.
"""

from __future__ import annotations

import dataclasses
import getpass
import pathlib
import tempfile
from collections.abc import Callable, Sequence
from typing import Any

from continue_orchestrator import api, errors, forge, ledger, policy, runner, runs
from continue_orchestrator.local import _context, _sandbox

_SANDBOX_PATH = "/usr/local/bin:/usr/bin:/bin"
_OUTPUT_LIMIT = 65536


class Surroundings:
    """``runs.Surroundings`` for one local run."""

    def __init__(
        self,
        run: _context.LocalRun,
        book: ledger.Ledger,
        body: Callable[[runs.VerifyRun], str],
        *,
        workspace: str,
    ) -> None:
        self._run = run
        self._book = book
        self._body = body
        self._workspace = workspace
        self.posted_body: str | None = None

    def approve(self, decision: policy.Decision) -> None:
        run = self._run
        what = decision.request.describe()
        approvals = run.options.approvals
        if approvals == "ask":
            raise errors.PublicationError(
                f"{what} needs approval ({decision.reason}), and approving a publication "
                "with orchestrator approve is not supported locally yet",
                step="approval",
                rule=decision.rule,
                fix="run with --approve-all to decide it, or allow it in the policy",
            )
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

    def verify(
        self, checkout: pathlib.Path, commands: Sequence[api.VerifyCommand]
    ) -> tuple[runner.VerifyResult, ...]:
        mode = self._run.options.sandbox
        self._run.say(f"publication: verify again in a fresh sandbox ({mode}), no agent, no model")
        results: list[runner.VerifyResult] = []
        with _sandbox.Sandbox(mode=mode) as box, tempfile.TemporaryDirectory() as home:
            inside = mode != "none"
            env = {"PATH": _SANDBOX_PATH, "HOME": "/tmp" if inside else home,
                   "LANG": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1"}  # fmt: skip
            binds = [_sandbox.Bind(str(checkout), self._workspace, True)] if inside else []
            for command in commands:
                completed = box.run(
                    ["/bin/sh", "-c", command.command], env=env,
                    cwd=self._workspace if inside else str(checkout), binds=binds,
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
                self._run.say(f"publication: verify {command.name}: exit {completed.exit_code}")
        return tuple(results)

    def record(self, kind: ledger.Kind, payload: dict[str, Any]) -> None:
        self._book.append(self._run.uid, kind, self._run.actor, payload)

    def body(self, fresh: runs.VerifyRun) -> str:
        self.posted_body = self._body(fresh)
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
