"""Publication in the operator: ``runs.publish`` once a run has Succeeded and is attested.

The pipeline is ``runs.publish``'s, the one ``orchestrator run`` takes (docs/publishing.md);
this module gives it what only a cluster has:

- the inputs: the plan the run started with (its Secret: the policy snapshot, and the
  forge credential ``spec.repository.credentialsSecretRef`` names), the runner's report
  from the gateway's record store, and the attested facts read back from the stored,
  signed bundle, so the pull request states exactly what the attestation states;
- approvals: a RequireApproval on ``branch.push`` or ``pullRequest.create`` becomes an
  entry of ``status.pendingApprovals`` (action = the step) decided by a RunApproval from
  one of the snapshot's approvers, as a held tool call is (``_approvals``); the run's
  phase stays what the agent earned, and ``Published`` says ``AwaitingApproval``;
- the fresh sandbox: a verify pod (``_verify_pod``);
- the ledger: the shared one, as the operator, never after the run's tombstone.

Publication runs on worker threads of its own, not kopf's handler threads (a held
approval can wait for minutes), one at a time per run. It is written down in the
``Published`` condition: ``Unknown``/``Publishing`` while it runs, ``False``/
``AwaitingApproval`` while a person is asked, ``True``/``Opened`` with
``status.pullRequest`` once the pull request is open, ``False``/``Failed`` (the step
and the forge's or the policy's words) or ``NotAttested`` otherwise. A restarted
operator publishes again every Succeeded run whose condition is not final: the commit
is deterministic, a branch that holds it is not pushed again and the open pull request
of the branch is updated, never doubled (idempotent by branch and head sha).
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import dataclasses
import logging
import pathlib
import tempfile
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from continue_orchestrator import (
    api,
    attest,
    digest,
    errors,
    forge,
    gateway,
    ledger,
    policy,
    records,
    runner,
    runs,
)
from continue_orchestrator.controller import (
    _agentrun,
    _approvals,
    _attestation,
    _clock,
    _closing,
    _events,
    _kube,
    _outcome,
    _pull_requests,
    _sandbox,
    _settings,
    _status,
    _validate,
    _verify_pod,
)

log = logging.getLogger(__name__)
JSON = dict[str, Any]
CONDITION = "Published"
FINAL_REASONS = frozenset({"Opened", "Failed", "NotAttested"})
"""Reasons of a ``Published`` condition that publication never revisits."""


def settled(run: _agentrun.Run) -> bool:
    """Whether the run needs no (more) publication."""
    if run.status.phase is not api.Phase.SUCCEEDED:
        return True
    if runs.publication_target(_validate.parse_run(run.body)) is None:
        return True
    condition = run.condition(CONDITION)
    return condition is not None and condition.reason in FINAL_REASONS


@dataclasses.dataclass
class _Around:
    """``runs.Surroundings`` for one AgentRun in the cluster."""

    publisher: Publisher
    ref: _agentrun.Ref
    plan: runs.Plan
    policy_set: policy.PolicySet
    patch: bytes
    render: Callable[[runs.VerifyRun], str]
    held: int = 0

    def approve(self, decision: policy.Decision) -> None:
        owner = self.publisher
        what = decision.request.describe()
        if self._granted_before(what, decision.rule):
            return  # an earlier attempt (before a restart) was approved: never ask twice
        self.held += 1
        approval = gateway.Approval(
            id=f"publication-{self.held}", run=self.ref.uid, tool="publication",
            arguments={"request": what}, rule=str(decision.rule or ""),
            reason=decision.reason, timeout=owner.settings.publication_approval_seconds,
            action=_action(decision),
        )  # fmt: skip
        owner.condition(self.ref, "False", "AwaitingApproval",
                        f"{what} waits for an approver ({decision.rule}: {decision.reason}); "
                        f"see status.pendingApprovals")  # fmt: skip
        names = {"name": self.ref.name, "namespace": self.ref.namespace, "for": "publication"}
        self.record(ledger.Kind.APPROVAL_REQUESTED, {**names, **approval.to_json()})
        scope = _approvals.RunScope(self.ref.namespace, self.ref.name, self.policy_set)
        broker = _approvals.KubeApprovalBroker(owner.kube, lambda _uid: scope)
        try:
            outcome: gateway.ApprovalOutcome | None = asyncio.run(
                broker.request(self.ref.uid, approval)
            )
        except errors.GatewayError:
            outcome = None  # nobody decided in time, or the run is gone
        decided = (outcome.decided_by, outcome.reason, outcome.approved) if outcome else None
        runs.settle_approval(self, names, decision, call_id=approval.id, decided=decided,
                             timeout=approval.timeout)  # fmt: skip
        owner.condition(self.ref, "Unknown", "Publishing", f"{what} approved by {decided[0]}"
                        if decided else what)  # fmt: skip

    def _granted_before(self, what: str, rule: str | None) -> bool:
        owner = self.publisher
        return any(
            entry.kind is ledger.Kind.APPROVAL_GRANTED
            and entry.actor == owner.settings.actor
            and (entry.payload or {}).get("for") == "publication"
            and (entry.payload or {}).get("request") == what
            and (entry.payload or {}).get("rule") == rule
            for entry in owner.book.entries(run_uid=self.ref.uid)
        )

    def verify(
        self, checkout: pathlib.Path, commands: Sequence[api.VerifyCommand]
    ) -> tuple[runner.VerifyResult, ...]:
        del commands  # the pod runs the spec's verify commands from its bundle
        return self.publisher.verify_pod.verify(self.plan, self.patch, checkout)

    def record(self, kind: ledger.Kind, payload: dict[str, Any]) -> None:
        owner = self.publisher
        owner.closing.append(owner.book, self.ref.uid, kind, owner.settings.actor, payload)

    def body(self, fresh: runs.VerifyRun) -> str:
        return self.render(fresh)


Connect = Callable[[runs.Plan], Callable[[str], forge.Forge]]
"""A run's plan -> the forge of a repository URL, with the credential to publish with."""


def token_forge(plan: runs.Plan) -> Callable[[str], forge.Forge]:
    """The forge of a repository URL with the token ``spec.repository.credentialsSecretRef``
    names (the one the gateway also fetches with)."""

    def connect(url: str) -> forge.Forge:
        if not plan.git_token:
            raise errors.PublicationError(
                "publishing needs a forge token, and the run names none",
                step="forge",
                where=f"AgentRun {plan.namespace}/{plan.run.metadata.name}",
                fix="set spec.repository.credentialsSecretRef to a token that may push "
                "branches and open pull requests",
            )
        return forge.for_url(url, forge.Token(token=plan.git_token.decode("utf-8")))

    return connect


@dataclasses.dataclass(frozen=True)
class Options:
    """How the operator publishes: where the gateway's record store is mounted (the
    runner's report, the record), and how it reaches a forge."""

    records_root: pathlib.Path | None = None
    connect: Connect = dataclasses.field(default=lambda plan: token_forge(plan))
    workers: int = 4


class Publisher:
    """Publishes finished runs on worker threads; ``submit`` never raises or blocks."""

    def __init__(
        self,
        kube: _kube.Kube,
        book: ledger.Ledger,
        sandbox: _sandbox.Sandbox,
        verify_pod: _verify_pod.VerifyPod,
        settings: _settings.Settings,
        *,
        records_root: pathlib.Path | None,
        closing: _closing.Closing,
        connect: Connect = token_forge,
        attesting: bool = True,
        workers: int = 4,
    ) -> None:
        """``attesting``: whether the operator signs attestations (without, nothing is
        published, and the ``Published`` condition says why)."""
        self.attesting = attesting
        self.kube = kube
        self.book = book
        self.sandbox = sandbox
        self.verify_pod = verify_pod
        self.settings = settings
        self.records_root = records_root
        self.closing = closing
        self.connect = connect
        self._pool = concurrent.futures.ThreadPoolExecutor(workers, "publication")
        self._busy: set[str] = set()
        self._lock = threading.Lock()

    def submit(self, body: Mapping[str, Any]) -> concurrent.futures.Future[None] | None:
        """Publish ``body``'s run in the background unless it needs none or is under way."""
        ref = _agentrun.Ref.of(body)
        with self._lock:
            if ref.uid in self._busy:
                return None
            self._busy.add(ref.uid)
        return self._pool.submit(self._publish_once, ref, dict(body))

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _publish_once(self, ref: _agentrun.Ref, body: JSON) -> None:
        try:
            self.publish(body)
        except Exception:  # a publication failure never ends the operator's thread
            log.exception("publishing %s", ref)
        finally:
            with self._lock:
                self._busy.discard(ref.uid)

    def publish(self, body: Mapping[str, Any]) -> runs.Publication | None:
        """Publish ``body``'s run now (on this thread); None when it needs none."""
        ref = _agentrun.Ref.of(body)
        run = _status.read(self.kube, ref)
        if run is None or settled(run):
            return None
        attestation = run.status.attestation
        if not self.attesting:
            self.condition(ref, "False", "NotAttested",
                           "a run's work is published only with a signed attestation, and this "
                           "operator signs none (start it with --signing-key-dir or "
                           "--keyless-trust-config)")  # fmt: skip
            return None
        if attestation is None or attestation.signed == "false":
            return None  # the attestor has not finished: it submits the run again
        if attestation.signed != "true" or not attestation.digest or not attestation.location:
            self.condition(ref, "False", "NotAttested",
                           "a run's work is published only with a signed, stored attestation "
                           f"({attestation.reason or 'signing failed'})")  # fmt: skip
            return None
        self.condition(ref, "Unknown", "Publishing", "publishing the run's diff")
        try:
            done = self._publish(run, attestation.digest, attestation.location)
        except errors.OrchestratorError as error:  # before runs.publish took over
            message = error.message
            failed = {"name": ref.name, "namespace": ref.namespace, "step": "inputs",
                      "message": message, "rule": None}  # fmt: skip
            self.closing.append(
                self.book, ref.uid, ledger.Kind.PUBLICATION_FAILED, self.settings.actor, failed
            )
            self.condition(ref, "False", "Failed", f"inputs: {message}")
            _events.post(self.kube, ref, "PublicationFailed", message, "Warning")
            return None
        self._written(ref, done)
        return done

    def _publish(self, run: _agentrun.Run, bundle_digest: str, location: str) -> runs.Publication:
        ref, status = run.ref, run.status
        try:
            plan = self.sandbox.plan(run, _no_fresh_plan)
        except _validate.Rejection as rejection:
            raise errors.PublicationError(rejection.message, step="inputs") from None
        evidence = runs.read_evidence(records.BlobStore(self.records_root), ref.uid) if (
            self.records_root is not None) else None  # fmt: skip
        if evidence is None or evidence.outcome is None:
            raise errors.PublicationError(
                "the runner's report is not in the gateway's record store",
                step="inputs",
                fix="run the operator with --record-root (the gateway's record store)",
            )
        facts = attested_facts(self.kube, location, bundle_digest)
        policy_set = policy.compile_snapshot(plan.snapshot.content)
        resource = _validate.parse_run(run.body)
        finish = runs.from_status(status)
        entries = [e for e in self.book.entries(run_uid=ref.uid) if e.sequence <= facts.ledger.last]
        record = _record(self.records_root, ref.uid)

        def render(fresh: runs.VerifyRun) -> str:
            agent = runs.agent_verify_run(evidence)
            return runs.evidence_body(runs.EvidenceInputs(
                run=resource, facts=facts, finish=finish, entries=entries, record=record,
                evidence=evidence, verify_runs=(*([agent] if agent else []), fresh),
                provenance=runs.Provenance(bundle_digest=bundle_digest, bundle=location),
            ))  # fmt: skip

        diff = evidence.outcome.diff
        patch = base64.b64decode(diff.patch_base64) if diff is not None else b""
        around = _Around(self, ref, plan, policy_set, patch, render)
        with tempfile.TemporaryDirectory(prefix="publish-") as scratch:
            return runs.publish(runs.PublishInputs(
                run=resource, uid=ref.uid, policy_set=policy_set, outcome=evidence.outcome,
                bundle_digest=bundle_digest, record_digest=evidence.record_digest,
                finished_at=finish.finished_at or _required_time(status.completion_time),
                scratch=pathlib.Path(scratch),
            ), self.connect(plan), around)  # fmt: skip

    def _written(self, ref: _agentrun.Ref, done: runs.Publication) -> None:
        pull = done.pull_request
        if done.failed or pull is None:
            message = f"{done.step}: {done.message}" + (f" [rule {done.rule}]" if done.rule else "")
            self.condition(ref, "False", "Failed", message)
            _events.post(self.kube, ref, "PublicationFailed", message, "Warning")
            return
        value = {"url": pull.url, "number": pull.number, "branch": done.branch,
                 "headSha": done.head_sha, "state": pull.state,
                 "checkedAt": _clock.now()}  # fmt: skip
        first = self.condition(ref, "True", "Opened",
                               f"pull request {pull.url} at {done.head_sha}",
                               pull_request=value)  # fmt: skip
        _events.post(self.kube, ref, "Published", f"pull request {pull.url} at {done.head_sha}")
        if first:
            _pull_requests.opened()  # once per pull request, not per publishing again

    def condition(
        self,
        ref: _agentrun.Ref,
        state: str,
        reason: str,
        message: str,
        *,
        pull_request: JSON | None = None,
    ) -> bool:
        """Set the ``Published`` condition (and ``status.pullRequest``); never undo
        an ``Opened``. Whether this write was the first to record a pull request."""
        setting = _outcome.Setting(CONDITION, state, reason, message[:32768])
        first = False

        def change(current: _agentrun.Run) -> JSON | None:
            nonlocal first
            now = current.condition(CONDITION)
            if now is not None and now.reason == "Opened":
                return None
            first = pull_request is not None and current.status.pull_request is None
            conditions = _outcome.set_conditions(
                current.status.conditions, setting, at=_clock.now(), generation=None
            )
            new: JSON = {"conditions": conditions}
            if pull_request is not None:
                new["pullRequest"] = pull_request
            return new

        return _status.patch(self.kube, ref, change) is not None and first

    def forge_for(self, run: _agentrun.Run, url: str) -> forge.Forge:
        """The forge of ``run``'s repository ``url`` with the credential publication used
        (``_pull_requests.Connect``: the poller reads the pull request with it)."""
        try:
            plan = self.sandbox.plan(run, _no_fresh_plan)
        except _validate.Rejection as rejection:
            raise errors.PublicationError(rejection.message, step="inputs") from None
        return self.connect(plan)(url)


def _action(decision: policy.Decision) -> str:
    """The held step's action (``branch.push``, ``pullRequest.create``)."""
    request = decision.request
    return request.action.value if isinstance(request, policy.Request) else "publication"


def _no_fresh_plan() -> runs.Plan:
    raise errors.PublicationError(
        "the run's Secret (its plan and policy snapshot) is gone", step="inputs",
        fix="a run is published from the plan it started with; create the AgentRun again",
    )  # fmt: skip


def _required_time(text: str | None) -> Any:
    parsed = runs.parse_time(text)
    if parsed is None:
        raise errors.PublicationError("the run has no completionTime", step="inputs")
    return parsed


def _record(root: pathlib.Path | None, uid: str) -> records.RunRecord | None:
    if root is None:
        return None
    try:
        return records.load(records.BlobStore(root), uid)
    except errors.RecordError:
        return None


def attested_facts(kube: _kube.Kube, location: str, bundle_digest: str) -> attest.RunFacts:
    """The facts the run's stored bundle attests, after checking it is the bundle
    ``status.attestation.digest`` names."""
    data = _attestation.fetch(kube, location)
    if digest.text(data) != bundle_digest:
        raise errors.PublicationError(
            f"the bundle at {location} is not the one the run's status names ({bundle_digest})",
            step="inputs",
            fix="the stored attestation was replaced; look at the ledger's attestation.published",
        )
    return attest.bundle_statement(data, where=location).run_facts()
