"""The reconciler: what happens to an AgentRun, independent of how kopf calls it.

Every entry point is idempotent and safe to call again after a crash at any line: the
run's objects have deterministic names and are adopted when found, its pod is created
at most once (``_sandbox``); ledger entries are looked up before they are appended
(``_entries``); and every status change (``_transitions``) is a compare-and-swap on the
AgentRun's resourceVersion that only moves a run forward (``_status``). So a run
reaches its terminal phase once, and only the writer that won the swap appends
``run.finished``, posts the Event (``_events``) and counts it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

from continue_orchestrator import api, errors, ledger, runs
from continue_orchestrator.controller import (
    _agentrun,
    _attestation,
    _clock,
    _closing,
    _entries,
    _events,
    _gateway,
    _kube,
    _metrics,
    _outcome,
    _publication,
    _replay,
    _sandbox,
    _settings,
    _status,
    _transitions,
    _validate,
    _verify_pod,
)

JSON = dict[str, Any]
log = logging.getLogger(__name__)


class Reconciler:
    """Drives AgentRuns; one per operator process, shared by all handler threads."""

    def __init__(
        self,
        kube: _kube.Kube,
        book: ledger.Ledger,
        gateway: _gateway.GatewayClient,
        settings: _settings.Settings,
        attestor: _attestation.Attestor | None = None,
        publishing: _publication.Options | None = None,
    ) -> None:
        self.kube = kube
        self.book = book
        self.gateway = gateway
        self.settings = settings
        self.attestor = attestor
        self.sandbox = _sandbox.Sandbox(kube, book, gateway, settings)
        self.closing = attestor.closing if attestor is not None else _closing.Closing()
        """The turn-taking of the ledger's writers at a run's end (the finalizer's
        tombstone first): shared with the attestor, the publisher and the poller."""
        options = publishing or _publication.Options()
        root = options.records_root
        self.publisher = _publication.Publisher(
            kube,
            book,
            self.sandbox,
            _verify_pod.VerifyPod(
                kube, gateway, settings, runs.evidence_from_records(root) if root else None
            ),
            settings,
            records_root=root,
            closing=self.closing,
            connect=options.connect,
            attesting=attestor is not None,
            workers=options.workers,
        )

    # -- entry points -------------------------------------------------------------------

    def start(self, body: Mapping[str, Any]) -> None:
        """On create and on operator restart: validate, record, create or adopt objects."""
        run = _agentrun.Run.of(body)
        if run.status.phase.terminal:
            self._ensure_finished_recorded(body)
            if self.attestor is not None:  # catch up after a crash before attesting
                self.attestor.attest_run(body)
            self.publisher.submit(body)  # and publish what a crash left unpublished
            return
        if run.cancel:
            self.cancel(body)
            return
        if run.condition("SandboxReady") is not None:
            self.sandbox.register_again(run)
            self.resync(body)
            return

        def planned() -> runs.Plan:
            plan = _validate.plan(self.kube, body, self.settings)
            _entries.record_created(self.book, plan, self.settings)
            _replay.check(self.kube, self.book, plan, self.settings)
            return plan

        try:
            plan = self.sandbox.plan(run, planned)
            pod_created = self.sandbox.start(run, plan)
        except _validate.Rejection as rejection:
            self._reject(body, rejection)
            return
        if pod_created:
            created_at = _clock.parse(run.created_at)
            if created_at is not None:
                _metrics.POD_CREATE_SECONDS.observe(max(0.0, time.time() - created_at))
        written = self._write(
            run,
            lambda current: _transitions.sandbox_created(
                current,
                pod=plan.name,
                inputs_digest=plan.inputs_digest,
                policy_digest=plan.snapshot.digest,
                runtime_class=plan.snapshot.runtime_class,
                runner_image=self.settings.runner_image,
            ),
        )
        if written is not None:
            self._event(body, "SandboxCreated", f"pod {plan.name} created")
        # Pod events that came before SandboxReady was written were ignored: catch up.
        self.resync(body)

    def resync(self, body: Mapping[str, Any]) -> None:
        """Bring the status up to the pod's state; also the timeout backstop."""
        run = _status.read(self.kube, _agentrun.Ref.of(body))
        if run is None or run.status.phase.terminal:
            return
        if run.cancel:
            self.cancel(run.body)
            return
        if run.condition("SandboxReady") is None:
            return  # the create handler has not finished; it will get here
        outcome = self.sandbox.outcome(run)
        if outcome is not None:
            self._advance(run, outcome)

    def on_pod(self, pod: Mapping[str, Any], *, deleted: bool) -> None:
        """A watch event for a pod carrying the run-uid label."""
        owner = _agentrun.owner_of(pod)
        run = _status.read(self.kube, owner) if owner is not None else None
        if run is None or run.deleting or run.status.phase.terminal:
            return
        if run.cancel:
            self.cancel(run.body)
            return
        if run.condition("SandboxReady") is None:
            return
        if deleted:
            self._advance(run, _outcome.pod_deleted(str(pod["metadata"]["name"])))
            return
        outcome = _outcome.from_pod(pod)
        if outcome is not None:
            self._advance(run, outcome)

    def cancel(self, body: Mapping[str, Any]) -> None:
        """spec.cancel: Cancelled first (so the pod's deletion is not a PodDeleted), then
        stop the pod."""
        run = _agentrun.Run.of(body)
        outcome = _outcome.Outcome(
            api.Phase.CANCELLED,
            "Cancelled",
            "spec.cancel was set; the sandbox pod was stopped",
        )
        written = self._write(run, lambda current: _transitions.cancelled(current, outcome))
        if written is not None:
            _metrics.INTERVENTIONS.labels("manual_stop").inc()
            self._finished(body, written.status, outcome)
        current = _status.read(self.kube, run.ref)
        if current is not None and current.status.phase is api.Phase.CANCELLED:
            pod = _kube.core(run.ref.namespace, "pods", run.ref.object_name)
            self.kube.delete(pod, grace_seconds=5)

    def delete(self, body: Mapping[str, Any]) -> None:
        """The finalizer: the ledger's tombstone goes in before the run's objects go."""
        ref = _agentrun.Ref.of(body)
        uid, namespace, run_name = ref.uid, ref.namespace, ref.name
        with self.closing.turn():
            entries = list(self.book.entries(run_uid=uid))
            kinds = {entry.kind for entry in entries}
            if kinds and ledger.Kind.TOMBSTONE not in kinds:
                if not _closing.finished_by(entries, self.settings.actor):
                    deleted = runs.Finish(
                        api.Phase.CANCELLED,
                        "AgentRunDeleted",
                        "the AgentRun was deleted before the run finished",
                    )
                    payload = deleted.payload(name=run_name, namespace=namespace)
                    self.book.append(uid, ledger.Kind.RUN_FINISHED, self.settings.actor, payload)
                self.book.tombstone(
                    run_uid=uid,
                    reason=f"AgentRun {namespace}/{run_name} deleted",
                    actor=self.settings.actor,
                )
        self.gateway.unregister(uid)

    # -- steps ------------------------------------------------------------------------------

    def _advance(self, run: _agentrun.Run, outcome: _outcome.Outcome) -> None:
        written = self._write(run, lambda current: _transitions.advanced(current, outcome))
        if written is None:
            return
        if outcome.phase is api.Phase.RUNNING:
            started = {"startTime": written.status.start_time}
            self._record(run.body, ledger.Kind.RUN_STARTED, started)
            self._event(run.body, "Running", outcome.message)
        elif outcome.phase.terminal:
            self._finished(run.body, written.status, outcome)

    def _finished(
        self, body: Mapping[str, Any], recorded: api.AgentRunStatus, outcome: _outcome.Outcome
    ) -> None:
        ref = _agentrun.Ref.of(body)
        sealed = self._unregister(body)
        finish = runs.Finish(
            phase=outcome.phase,
            reason=outcome.reason,
            message=outcome.message,
            started_at=runs.parse_time(recorded.start_time),
            finished_at=runs.parse_time(recorded.completion_time),
            inputs_digest=recorded.inputs_digest,
            policy_digest=recorded.policy_digest,
            record_digest=(sealed or {}).get("recordDigest"),
        )
        payload = finish.payload(name=ref.name, namespace=ref.namespace)
        # The finalizer may have closed the run's ledger meanwhile.
        self.closing.append(
            self.book, ref.uid, ledger.Kind.RUN_FINISHED, self.settings.actor, payload
        )
        _metrics.RUNS_FINISHED.labels(outcome.phase.value, outcome.reason).inc()
        kind = "Normal" if outcome.phase is api.Phase.SUCCEEDED else "Warning"
        self._event(body, outcome.phase.value, f"{outcome.reason}: {outcome.message}", kind)
        if self.attestor is not None:
            self.attestor.attest_run(body)  # never raises; writes status.attestation
        self.publisher.submit(body)  # in the background; Published says how it went

    def _unregister(self, body: Mapping[str, Any]) -> Mapping[str, Any] | None:
        """Unregister from the gateway; note its record digest and, for a replay, the
        ``Replayed`` condition in the status. The gateway's answer, or None."""
        run = _agentrun.Run.of(body)
        try:
            sealed = self.gateway.unregister(run.ref.uid)
        except errors.GatewayError as error:
            log.error("could not unregister run %s from the gateway: %s", run.ref.uid, error)
            return None
        digest = (sealed or {}).get("recordDigest")
        if not sealed or not digest:
            return sealed
        report = sealed.get("replay")
        self._write(
            run,
            lambda current: _transitions.recorded(
                current,
                digest=str(digest),
                location=f"gateway records: runs/{run.ref.uid}",
                replay=report if isinstance(report, Mapping) else None,
            ),
        )
        return sealed

    def _ensure_finished_recorded(self, body: Mapping[str, Any]) -> None:
        """After a restart: a terminal run whose run.finished did not make it is completed."""
        run = _agentrun.Run.of(body)
        entries = list(self.book.entries(run_uid=run.ref.uid))
        kinds = {entry.kind for entry in entries}
        if _closing.finished_by(entries, self.settings.actor) or ledger.Kind.TOMBSTONE in kinds:
            return
        recorded = runs.from_status(run.status)
        outcome = _outcome.Outcome(recorded.phase, recorded.reason, recorded.message)
        if not kinds:
            self._record(body, ledger.Kind.RUN_CREATED, _entries.created(body, None, self.settings))
        self._finished(body, run.status, outcome)

    def _reject(self, body: Mapping[str, Any], rejection: _validate.Rejection) -> None:
        outcome = _outcome.Outcome(rejection.phase, rejection.reason, rejection.message)
        run = _agentrun.Run.of(body)
        written = self._write(run, lambda current: _transitions.rejected(current, outcome))
        if written is None:
            return
        if not any(True for _ in self.book.entries(run_uid=run.ref.uid)):
            self._record(body, ledger.Kind.RUN_CREATED, _entries.created(body, None, self.settings))
        self._finished(body, written.status, outcome)

    def _record(self, body: Mapping[str, Any], kind: ledger.Kind, payload: JSON) -> None:
        """Append the operator's ``kind`` entry: the run's name and namespace, and the
        fields of ``payload`` that are set."""
        ref = _agentrun.Ref.of(body)
        named = {key: value for key, value in payload.items() if value is not None}
        named = {"name": ref.name, "namespace": ref.namespace, **named}
        self.book.append(ref.uid, kind, self.settings.actor, named)

    def _write(self, run: _agentrun.Run, change: _status.Change) -> _agentrun.Run | None:
        """``_status.patch`` starting from ``run`` in hand; the gauge of phases sees the
        phase written at once."""
        written = _status.patch(self.kube, run.ref, change, in_hand=run)
        if written is not None:
            _metrics.PHASES.observe(run.ref.uid, written.status.phase.value)
        return written

    def _event(
        self, body: Mapping[str, Any], reason: str, message: str, kind: str = "Normal"
    ) -> None:
        _events.post(self.kube, _agentrun.Ref.of(body), reason, message, kind)
