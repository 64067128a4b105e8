"""Publishing a run's work: the one path from a finished run to a pull request.

After a run that succeeded, outside its sandbox, when its AgentRun's
``spec.output.pullRequest.enabled`` asks for it (``target``), ``publish``:

1. clones the repository afresh at the pinned commit (never the agent's workspace or
   its ``.git``), applies the patch the runner reported, and asks the policy again about
   every path the patch changes (``file.write``, ``check_paths``), and about the branch
   (``branch.push``) and the repository (``pullRequest.create``); a Deny fails
   publication naming the rule, a RequireApproval is put to ``Surroundings.approve``;
2. commits the patch with a fixed identity, the run's finish time and trailers naming
   the run, its attestation bundle and its record (``commit_message``): the same run
   always makes the same commit;
3. runs the verify commands again on a second clean checkout of that commit, in a fresh
   sandbox with no agent and no model (``Surroundings.verify``); a failure stops here;
4. pushes the commit to the branch unless the branch already holds it, opens the pull
   request (idempotent by head branch) with the evidence body, and posts the summary.

Each step is a ledger entry (``publication.*``, ``pull_request.opened``); a failure is
one ``publication.failed`` entry and a ``Publication`` in state ``failed`` naming the
step, never an exception, and never a change of the run's own phase. What differs
between the operator and ``orchestrator run`` (approvals, the sandbox, the ledger, the
body's provenance) comes in as ``Surroundings``.
"""

from __future__ import annotations

import base64
import dataclasses
import pathlib
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import Any, Literal, Protocol

import pydantic
from pydantic import alias_generators

from continue_orchestrator import api, digest, errors, forge, ledger, policy, runner
from continue_orchestrator.runs import _evidence_body
from continue_orchestrator.runs import _publish_git as git

BRANCH_PREFIX = "agent/"
TITLE_CHARACTERS = 72


def default_branch(name: str) -> str:
    """The head branch when the spec names none: ``agent/<run name>``."""
    return f"{BRANCH_PREFIX}{name}"


@dataclasses.dataclass(frozen=True, slots=True)
class Target:
    """Where a run's work is to be published, from its spec."""

    repository: str
    base: str
    branch: str
    title: str
    draft: bool
    """Open the pull request as a draft (``spec.output.pullRequest.draft``)."""


def target(run: api.AgentRun) -> Target | None:
    """The publication a run's spec asks for; None when it asks for none."""
    wanted = run.spec.output.pull_request if run.spec.output is not None else None
    if wanted is None or not wanted.enabled:
        return None
    spec = run.spec
    ref = spec.repository.ref
    base = wanted.base or (ref.removeprefix("refs/heads/") if ref != "HEAD" else "")
    prompt_line = next((line.strip() for line in spec.prompt.splitlines() if line.strip()), "")
    title = " ".join((wanted.title or "").split()) or _shorten(
        prompt_line or f"Agent run {run.metadata.name}"
    )
    return Target(
        repository=spec.repository.url,
        base=base,
        branch=wanted.branch or default_branch(str(run.metadata.name)),
        title=title,
        draft=wanted.draft,
    )


def _shorten(text: str) -> str:
    return text if len(text) <= TITLE_CHARACTERS else text[: TITLE_CHARACTERS - 1] + "…"


def commit_message(
    title: str, *, namespace: str, name: str, uid: str, attestation: str, record: str
) -> str:
    """The published commit's message: the title and the trailers that tie it to its run."""
    return (
        f"{title}\n\n"
        f"Orchestrator-Run: {namespace}/{name} ({uid})\n"
        f"Orchestrator-Attestation: {attestation}\n"
        f"Orchestrator-Record: {record}\n"
    )


def check_paths(
    policy_set: policy.PolicySet, context: policy.RunContext, paths: Iterable[str]
) -> tuple[policy.Decision, ...]:
    """The policy's ``file.write`` decision for each path the diff changes, as the
    gateway decided the agent's writes."""
    return tuple(
        policy.decide(
            policy_set, policy.Request(action=api.Action.FILE_WRITE, path=path, run=context)
        )
        for path in paths
    )


def gates(
    policy_set: policy.PolicySet, context: policy.RunContext, spot: Target
) -> tuple[policy.Decision, policy.Decision]:
    """The decisions on pushing the head branch and opening the pull request."""
    repository = spot.repository
    push = policy.Request(action=api.Action.BRANCH_PUSH, repository=repository,
                          branch=spot.branch, run=context)  # fmt: skip
    create = policy.Request(action=api.Action.PULL_REQUEST_CREATE, repository=repository,
                            branch=spot.branch, run=context)  # fmt: skip
    return policy.decide(policy_set, push), policy.decide(policy_set, create)


class Publication(pydantic.BaseModel):
    """How publication went: the pull request, or the step that failed and why."""

    model_config = pydantic.ConfigDict(
        alias_generator=alias_generators.to_camel, populate_by_name=True, frozen=True
    )

    state: Literal["opened", "failed"]
    step: str
    """The step publication ended at: ``done``, or the one that failed."""
    message: str = ""
    rule: str | None = None
    """The policy rule that refused, when one did."""
    repository: str
    branch: str
    base: str
    head_sha: str | None = None
    pushed: bool = False
    """Whether this publication pushed (False when the branch already held the commit)."""
    pull_request: forge.PullRequest | None = None
    summary_url: str | None = None
    verify: list[runner.VerifyResult] = pydantic.Field(default_factory=list)
    """The verify commands' results in the fresh sandbox."""

    @property
    def failed(self) -> bool:
        return self.state == "failed"

    @pydantic.field_serializer("pull_request")
    def _camel_pull_request(self, pull: forge.PullRequest | None) -> dict[str, Any] | None:
        """The forge's pull request in the report's own (camelCase) keys."""
        if pull is None:
            return None
        return {alias_generators.to_camel(k): v for k, v in pull.model_dump(mode="json").items()}


@dataclasses.dataclass(frozen=True)
class Inputs:
    """What publication needs of a finished run."""

    run: api.AgentRun
    uid: str
    policy_set: policy.PolicySet
    outcome: runner.Outcome | None
    bundle_digest: str | None
    """The signed attestation bundle's digest (the ``Orchestrator-Attestation`` trailer)."""
    record_digest: str | None
    finished_at: datetime
    """The commit's author and committer date."""
    scratch: pathlib.Path
    """An empty directory publication may use (its clones)."""


class Surroundings(Protocol):
    """What publication asks of where it runs."""

    def approve(self, decision: policy.Decision) -> None:
        """Settle a RequireApproval; raise ``errors.PublicationError`` if not approved."""

    def verify(
        self, checkout: pathlib.Path, commands: Sequence[api.VerifyCommand]
    ) -> tuple[runner.VerifyResult, ...]:
        """Run ``commands`` on ``checkout`` in a fresh sandbox (no agent, no model)."""

    def record(self, kind: ledger.Kind, payload: dict[str, Any]) -> None:
        """Append a ledger entry for the run."""

    def body(self, fresh: _evidence_body.VerifyRun) -> str:
        """The evidence body, with the fresh sandbox's verify results."""


def settle_approval(
    around: Surroundings,
    names: dict[str, Any],
    decision: policy.Decision,
    *,
    call_id: str,
    decided: tuple[str, str, bool] | None,
    timeout: float,
) -> None:
    """Record how a held publication step was decided (``approval.granted`` or
    ``approval.denied``) and raise ``errors.PublicationError`` unless it was approved.
    ``decided`` is (by whom, why, approved), or None when nobody decided in ``timeout``."""
    what = decision.request.describe()
    by, reason, approved = decided or ("timeout", f"no approval within {timeout:g} s", False)
    payload = {**names, "callId": call_id, "request": what, "rule": decision.rule,
               "by": by, "reason": reason}  # fmt: skip
    if approved:
        around.record(ledger.Kind.APPROVAL_GRANTED, payload)
        return
    around.record(ledger.Kind.APPROVAL_DENIED, payload)
    raise errors.PublicationError(
        f"{what} needs approval ({decision.reason}) and "
        + (f"{by} denied it" if decided else "nobody approved it in time"),
        step="approval",
        rule=decision.rule,
    )


@dataclasses.dataclass
class _Progress:
    step: str = "target"
    """The stage publication is in: a failure that is not a PublicationError is its."""
    head_sha: str | None = None
    pushed: bool = False
    verify: tuple[runner.VerifyResult, ...] = ()


def publish(
    inputs: Inputs, connect: Callable[[str], forge.Forge], around: Surroundings
) -> Publication:
    """Publish the run's diff as a pull request; see the module's docstring. ``connect``
    gives the forge serving a repository URL (with the credential to publish with)."""
    spot = target(inputs.run)
    if spot is None:
        raise errors.PublicationError("the run asks for no pull request", step="target")
    progress = _Progress()
    try:
        pull_request, summary_url = _publish(inputs, spot, connect, around, progress)
    except errors.OrchestratorError as error:  # a forge's refusal, a sandbox that failed
        step = error.step if isinstance(error, errors.PublicationError) else progress.step
        rule = error.rule if isinstance(error, errors.PublicationError) else None
        message = error.message
        if isinstance(error, errors.ForgeError) and error.forge_message:
            message = f"{message} (the forge said: {error.forge_message})"
        around.record(ledger.Kind.PUBLICATION_FAILED, {
            **_names(inputs, spot), "step": step, "message": message, "rule": rule,
        })  # fmt: skip
        return Publication(
            state="failed", step=step, message=message, rule=rule, repository=spot.repository,
            branch=spot.branch, base=spot.base, head_sha=progress.head_sha,
            pushed=progress.pushed, verify=list(progress.verify),
        )  # fmt: skip
    return Publication(
        state="opened", step="done", repository=spot.repository, branch=spot.branch,
        base=spot.base, head_sha=progress.head_sha, pushed=progress.pushed,
        pull_request=pull_request, summary_url=summary_url, verify=list(progress.verify),
    )  # fmt: skip


def _names(inputs: Inputs, spot: Target) -> dict[str, Any]:
    meta = inputs.run.metadata
    return {"name": meta.name, "namespace": meta.namespace or "default",
            "repository": spot.repository, "branch": spot.branch}  # fmt: skip


def _publish(
    inputs: Inputs,
    spot: Target,
    connect: Callable[[str], forge.Forge],
    around: Surroundings,
    progress: _Progress,
) -> tuple[forge.PullRequest, str]:
    run = inputs.run
    names = _names(inputs, spot)
    if not spot.base:
        raise errors.PublicationError(
            "no base branch: spec.repository.ref is HEAD and spec.output.pullRequest.base "
            "is unset", step="target", fix="set spec.output.pullRequest.base",
        )  # fmt: skip
    repo = forge.Repository(spot.repository)
    diff, patch = _patch(inputs.outcome)
    message = commit_message(
        spot.title, namespace=str(names["namespace"]), name=str(run.metadata.name),
        uid=inputs.uid, attestation=_required(inputs.bundle_digest, "attestation bundle"),
        record=_required(inputs.record_digest, "sealed record"),
    )  # fmt: skip
    context = policy.RunContext(namespace=str(names["namespace"]), name=str(run.metadata.name),
                                uid=inputs.uid, branch=spot.branch)  # fmt: skip
    progress.step = "commit"
    host = connect(spot.repository)
    credential = host.git_credential(repo)
    checkout = git.clone(repo.clone_url, diff.base, inputs.scratch / "commit", credential)
    paths = sorted({*git.apply(checkout, patch), *(f.path for f in diff.files)})
    if not paths:
        raise errors.PublicationError("the run changed nothing: there is nothing to publish",
                                      step="diff")  # fmt: skip
    decisions = [*check_paths(inputs.policy_set, context, paths),
                 *gates(inputs.policy_set, context, spot)]  # fmt: skip
    denied = [d for d in decisions if d.effect is api.Effect.DENY]
    if denied:
        raise errors.PublicationError(
            "policy denies " + "; ".join(f"{d.request.describe()} ({d.reason})" for d in denied),
            step="policy",
            rule=denied[0].rule,
            fix="the run's work is not published; change the diff or the policy",
        )
    for decision in decisions:
        if decision.effect is api.Effect.REQUIRE_APPROVAL:
            around.approve(decision)
    around.record(ledger.Kind.PUBLICATION_CHECKED, {
        **names, "paths": paths, "policyDigest": inputs.policy_set.digest,
        "decisions": [{"request": d.request.describe(), "effect": d.effect.value,
                       "rule": d.rule} for d in decisions],
    })  # fmt: skip
    progress.head_sha = git.commit(checkout, message, inputs.finished_at)
    progress.step = "verify"
    copy = git.verify_copy(checkout, inputs.scratch / "verify")
    progress.verify = around.verify(copy.path, run.spec.verify)
    failed = [r.name for r in progress.verify if not r.passed]
    around.record(ledger.Kind.PUBLICATION_VERIFIED, {
        **names, "commit": progress.head_sha,
        "results": [{"name": r.name, "exitCode": r.result.exit_code, "passed": r.passed}
                    for r in progress.verify],
    })  # fmt: skip
    if failed:
        raise errors.PublicationError(
            f"verify failed in the fresh sandbox: {', '.join(failed)}", step="verify"
        )
    progress.step = "push"
    _push(checkout, repo, spot, credential, progress)
    around.record(ledger.Kind.PUBLICATION_PUSHED,
                  {**names, "commit": progress.head_sha, "pushed": progress.pushed})  # fmt: skip
    progress.step = "pullRequest"
    body = around.body(_evidence_body.VerifyRun(_evidence_body.FRESH_SANDBOX, progress.verify))
    pull_request = host.open_pull_request(
        repo, head_branch=spot.branch, base_branch=spot.base, title=spot.title, body=body,
        draft=spot.draft,
    )  # fmt: skip
    around.record(ledger.Kind.PULL_REQUEST_OPENED, {
        **names, "number": pull_request.number, "url": pull_request.url,
        "headSha": pull_request.head_sha, "bodyDigest": digest.text(body),
    })  # fmt: skip
    progress.step = "summary"
    summary_url = host.post_summary(
        repo, pull_request, head_sha=progress.head_sha, title="Continue Orchestrator run",
        summary=_summary(inputs, progress.verify),
    )  # fmt: skip
    around.record(ledger.Kind.PUBLICATION_SUMMARY, {**names, "url": summary_url})
    return pull_request, summary_url


def _required(value: str | None, what: str) -> str:
    if not value:
        raise errors.PublicationError(
            f"the run has no {what} for the commit's trailers",
            step="commit",
            fix="a run is published only with a signed attestation and a sealed record",
        )
    return value


def _patch(outcome: runner.Outcome | None) -> tuple[runner.DiffReport, bytes]:
    """The runner's patch, whole and as it was taken, or a PublicationError."""
    diff = outcome.diff if outcome is not None else None
    if outcome is None or diff is None:
        raise errors.PublicationError("the runner reported no diff", step="diff")
    if diff.truncated:
        raise errors.PublicationError(
            f"the runner's patch was cut at its limit ({diff.size} bytes in all)",
            step="diff",
            fix="raise the run's diff limit so the whole patch is kept",
        )
    patch = _decode(diff.patch_base64)
    if digest.text(patch) != diff.digest or outcome.redacted:
        raise errors.PublicationError(
            "the kept patch is not the patch the runner took (a secret was redacted from "
            "it, or it was changed)",
            step="diff",
            fix="the run's work is not published; look at its record",
        )
    return diff, patch


def _decode(text: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except ValueError as error:
        raise errors.PublicationError(
            "the runner's patch is not valid base64", step="diff"
        ) from error


def _push(
    checkout: git.Clone,
    repo: forge.Repository,
    spot: Target,
    credential: forge.GitCredential,
    progress: _Progress,
) -> None:
    head = git.remote_head(repo.clone_url, spot.branch, credential)
    if head == progress.head_sha:
        return  # published before: nothing to push twice
    if head is not None:
        raise errors.PublicationError(
            f"branch {spot.branch} already exists at {head}, not at this run's commit "
            f"{progress.head_sha}",
            step="push",
            where=repo.clone_url,
            fix="delete the branch, or set spec.output.pullRequest.branch to another name",
        )
    git.push(checkout, repo.clone_url, spot.branch, credential)
    progress.pushed = True


def _summary(inputs: Inputs, fresh: Sequence[runner.VerifyResult]) -> str:
    passed = sum(1 for r in fresh if r.passed)
    return (
        f"Run {inputs.uid}: verify passed again in a fresh sandbox ({passed} of {len(fresh)} "
        f"commands). Attestation {inputs.bundle_digest}, record {inputs.record_digest}."
    )
