"""The reconciler: what happens to an AgentRun, independent of how kopf calls it.

Every entry point is idempotent and safe to call again after a crash at any line:
objects have deterministic names and are adopted when found (409 -> read, check the
run-uid label); ledger entries are looked up before they are appended; and every status
change is a compare-and-swap on the AgentRun's resourceVersion that only moves a run
forward. So a run reaches its terminal phase once, and only the writer that won the
swap appends ``run.finished``, posts the Event and counts it.
"""

from __future__ import annotations

import base64
import json
import logging
import time
from collections.abc import Mapping
from typing import Any

from continue_orchestrator import api, errors, ledger, runner, runs
from continue_orchestrator.controller import (
    _agentrun,
    _attestation,
    _clock,
    _closing,
    _events,
    _gateway,
    _kube,
    _manifests,
    _metrics,
    _names,
    _outcome,
    _replay,
    _settings,
    _status,
    _transitions,
    _validate,
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
    ) -> None:
        self.kube = kube
        self.book = book
        self.gateway = gateway
        self.settings = settings
        self.attestor = attestor
        self._closing = attestor.closing if attestor is not None else _closing.Closing()

    # -- entry points -------------------------------------------------------------------

    def start(self, body: Mapping[str, Any]) -> None:
        """On create and on operator restart: validate, record, create or adopt objects."""
        run = _agentrun.Run.of(body)
        if run.status.phase.terminal:
            self._ensure_finished_recorded(body)
            if self.attestor is not None:  # catch up after a crash before attesting
                self.attestor.attest_run(body)
            return
        if run.cancel:
            self.cancel(body)
            return
        if run.condition("SandboxReady") is not None:
            self._register_again(body)
            self.resync(body)
            return
        uid, namespace = run.ref.uid, run.ref.namespace
        name = run.ref.object_name
        found = self.kube.get(_kube.core(namespace, "secrets", name))
        try:
            if found is not None:
                self._check_ours(found, uid, "Secret")
                plan = self._plan_from_secret(body, found)
            else:
                plan = _validate.plan(self.kube, body, self.settings)
                self._record_created(plan)
                _replay.check(self.kube, self.book, plan, self.settings)
                created = self._ensure(
                    _kube.core(namespace, "secrets"),
                    _manifests.secret(plan, self.settings),
                    uid,
                )
                if created is not None:
                    plan = self._plan_from_secret(body, created)
            self.gateway.register(self._registration(plan))
            self._ensure(
                _kube.network_policies(namespace),
                _manifests.network_policy(plan, self.settings),
                uid,
            )
            pod_created = self._create_pod_at_most_once(run, plan)
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
        name = run.ref.object_name
        pod = self.kube.get(_kube.core(run.ref.namespace, "pods", name))
        if pod is None or _agentrun.labels(pod).get(_names.RUN_UID_LABEL) != run.ref.uid:
            self._advance(run, _outcome.pod_deleted(name))
            return
        outcome = _outcome.from_pod(pod)
        if outcome is not None and not outcome.phase.terminal and self._past_deadline(run, pod):
            self.kube.delete(_kube.core(run.ref.namespace, "pods", name), grace_seconds=0)
            outcome = _outcome.Outcome(
                api.Phase.TIMED_OUT,
                "DeadlineExceeded",
                f"pod {name} was still {outcome.phase.value} "
                f"{self.settings.timeout_grace_seconds:.0f}s past spec.timeoutSeconds; "
                "the operator stopped it",
            )
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
            self._finished(body, written.body["status"], outcome)
        current = _status.read(self.kube, run.ref)
        if current is not None and current.status.phase is api.Phase.CANCELLED:
            pod = _kube.core(run.ref.namespace, "pods", run.ref.object_name)
            self.kube.delete(pod, grace_seconds=5)

    def delete(self, body: Mapping[str, Any]) -> None:
        """The finalizer: the ledger's tombstone goes in before the run's objects go."""
        uid, namespace, run_name = _uid(body), _namespace(body), _name(body)
        with self._closing.turn():
            entries = list(self.book.entries(run_uid=uid))
            kinds = {entry.kind for entry in entries}
            if kinds and ledger.Kind.TOMBSTONE not in kinds:
                if not _closing.finished_by(entries, self.settings.actor):
                    self.book.append(
                        uid,
                        ledger.Kind.RUN_FINISHED,
                        self.settings.actor,
                        {
                            "name": run_name,
                            "namespace": namespace,
                            "phase": api.Phase.CANCELLED.value,
                            "reason": "AgentRunDeleted",
                            "message": "the AgentRun was deleted before the run finished",
                        },
                    )
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
            self._finished(run.body, written.body["status"], outcome)

    def _finished(
        self, body: Mapping[str, Any], status: Mapping[str, Any], outcome: _outcome.Outcome
    ) -> None:
        sealed = self._unregister(body)
        # The finalizer may have closed the run's ledger meanwhile.
        self._closing.append(
            self.book,
            _uid(body),
            ledger.Kind.RUN_FINISHED,
            self.settings.actor,
            self._payload(
                body,
                {
                    "phase": outcome.phase.value,
                    "reason": outcome.reason,
                    "message": outcome.message,
                    "startTime": status.get("startTime"),
                    "completionTime": status.get("completionTime"),
                    "inputsDigest": status.get("inputsDigest"),
                    "policyDigest": status.get("policyDigest"),
                    "recordDigest": (sealed or {}).get("recordDigest"),
                },
            ),
        )
        _metrics.RUNS_FINISHED.labels(outcome.phase.value, outcome.reason).inc()
        kind = "Normal" if outcome.phase is api.Phase.SUCCEEDED else "Warning"
        self._event(body, outcome.phase.value, f"{outcome.reason}: {outcome.message}", kind)
        if self.attestor is not None:
            self.attestor.attest_run(body)  # never raises; writes status.attestation

    def _unregister(self, body: Mapping[str, Any]) -> Mapping[str, Any] | None:
        """Unregister from the gateway; note its record digest and, for a replay, the
        ``Replayed`` condition in the status. The gateway's answer, or None."""
        try:
            sealed = self.gateway.unregister(_uid(body))
        except errors.GatewayError as error:
            log.error("could not unregister run %s from the gateway: %s", _uid(body), error)
            return None
        digest = (sealed or {}).get("recordDigest")
        if not digest:
            return sealed
        report = (sealed or {}).get("replay")
        self._write(
            _agentrun.Run.of(body),
            lambda current: _transitions.recorded(
                current,
                digest=str(digest),
                location=f"gateway records: runs/{_uid(body)}",
                replay=report if isinstance(report, Mapping) else None,
            ),
        )
        return sealed

    def _ensure_finished_recorded(self, body: Mapping[str, Any]) -> None:
        """After a restart: a terminal run whose run.finished did not make it is completed."""
        uid = _uid(body)
        entries = list(self.book.entries(run_uid=uid))
        kinds = {entry.kind for entry in entries}
        if _closing.finished_by(entries, self.settings.actor) or ledger.Kind.TOMBSTONE in kinds:
            return
        status = body.get("status") or {}
        completed = _outcome.condition(status, "Completed") or {}
        phase = _outcome.current_phase(status)
        outcome = _outcome.Outcome(
            phase, str(completed.get("reason", phase.value)), str(completed.get("message", ""))
        )
        if not kinds:
            self._record(body, ledger.Kind.RUN_CREATED, self._created_payload(body, None))
        self._finished(body, status, outcome)

    def _reject(self, body: Mapping[str, Any], rejection: _validate.Rejection) -> None:
        outcome = _outcome.Outcome(rejection.phase, rejection.reason, rejection.message)
        run = _agentrun.Run.of(body)
        written = self._write(run, lambda current: _transitions.rejected(current, outcome))
        if written is None:
            return
        if not any(True for _ in self.book.entries(run_uid=run.ref.uid)):
            self._record(body, ledger.Kind.RUN_CREATED, self._created_payload(body, None))
        self._finished(body, written.body["status"], outcome)

    def _record_created(self, plan: runs.Plan) -> None:
        if any(
            entry.kind is ledger.Kind.RUN_CREATED for entry in self.book.entries(run_uid=plan.uid)
        ):
            return
        items: list[ledger.Append] = [
            ledger.Append(
                plan.uid,
                ledger.Kind.RUN_CREATED,
                self.settings.actor,
                self._created_payload(plan.run.model_dump(by_alias=True), plan),
            )
        ]
        for index, mapping in enumerate(plan.run.spec.secrets):
            items.append(
                ledger.Append(
                    plan.uid,
                    ledger.Kind.SECRET_READ,
                    self.settings.actor,
                    {
                        "name": mapping.secret_key_ref.name,
                        "namespace": plan.namespace,
                        "key": mapping.secret_key_ref.key,
                        "purpose": runs.secret_purpose(index, mapping.name, plan.brokered_values),
                    },
                )
            )
        self.book.append_many(items)

    def _created_payload(self, body: Mapping[str, Any], plan: runs.Plan | None) -> JSON:
        metadata = body.get("metadata") or {}
        spec = body.get("spec") or {}
        payload: JSON = {
            "name": metadata.get("name"),
            "namespace": metadata.get("namespace"),
            "repository": (spec.get("repository") or {}).get("url"),
            "policyRef": (spec.get("policyRef") or {}).get("name"),
        }
        if plan is not None:
            payload.update(
                inputsDigest=plan.inputs_digest,
                policyDigest=plan.snapshot.digest,
                policies=list(plan.snapshot.sources),
                runnerImage=self.settings.runner_image,
                runtimeClassName=plan.snapshot.runtime_class,
                secrets=sorted({*plan.secret_values, *plan.brokered_values}),
                replayInputs=_replay.input_digests(plan, self.settings),
            )
        return payload

    def _record(self, body: Mapping[str, Any], kind: ledger.Kind, payload: JSON) -> None:
        self.book.append(_uid(body), kind, self.settings.actor, self._payload(body, payload))

    @staticmethod
    def _payload(body: Mapping[str, Any], payload: JSON) -> JSON:
        return {
            "name": _name(body),
            "namespace": _namespace(body),
            **{key: value for key, value in payload.items() if value is not None},
        }

    def _plan_from_secret(self, body: Mapping[str, Any], secret: Mapping[str, Any]) -> runs.Plan:
        """The plan the run was started with, from its Secret: never re-read live policy."""
        data = {key: base64.b64decode(value) for key, value in (secret.get("data") or {}).items()}
        run = _validate.parse_run(body)
        try:
            snapshot = runs.snapshot(data["policy.json"], runtime_class=self.settings.runtime_class)
            bundle = runner.RunBundle.model_validate(json.loads(data["bundle.json"]))
            token = data["token"].decode("ascii")
            inputs = str(secret["metadata"]["annotations"][_names.INPUTS_DIGEST_ANNOTATION])
        except (KeyError, ValueError, errors.OrchestratorError) as error:
            raise _validate.Rejection(
                api.Phase.FAILED,
                "RunSecretInvalid",
                f"Secret {_namespace(body)}/{secret['metadata']['name']} of this run is "
                f"damaged ({error}); delete the AgentRun and create it again",
            ) from None
        values = {
            key.removeprefix("secret."): value
            for key, value in data.items()
            if key.startswith("secret.")
        }
        brokered = {
            **_validate.brokered_values(
                self.kube, run, _validate.brokered_secrets(run, bundle.config)
            ),
            **_validate.resumed_literal_keys(self.kube, run, bundle.config),
        }
        return runs.Plan(
            run=run,
            uid=_uid(body),
            namespace=_namespace(body),
            name=str(secret["metadata"]["name"]),
            snapshot=snapshot,
            config=bundle.config,
            secret_values=values,
            brokered_values=brokered,
            git_token=data.get("git-token"),
            permissions_yaml=bundle.permissions_yaml,
            inputs_digest=inputs,
            token=token,
        )

    def _register_again(self, body: Mapping[str, Any]) -> None:
        """On resume: the gateway may have restarted too (it keeps runs in memory only).
        Registering the same run again is a no-op for a gateway that still has it."""
        uid, namespace = _uid(body), _namespace(body)
        name = _names.object_name(_name(body), uid)
        found = self.kube.get(_kube.core(namespace, "secrets", name))
        if found is None or _agentrun.labels(found).get(_names.RUN_UID_LABEL) != uid:
            return  # resync sees what is missing and ends the run
        try:
            plan = self._plan_from_secret(body, found)
        except _validate.Rejection:
            return
        self.gateway.register(self._registration(plan))

    def _registration(self, plan: runs.Plan) -> runs.Registration:
        return runs.registration(
            plan,
            expires_at=time.time() + plan.timeout_seconds + self.settings.timeout_grace_seconds,
            replay_of=str((_replay.started(self.book, plan.uid) or {}).get("record") or ""),
        )

    def _create_pod_at_most_once(self, run: _agentrun.Run, plan: runs.Plan) -> bool:
        """Create the run's pod unless an earlier one may have acted: True if this call did.

        ``SandboxRequested`` is written before the create. A start that finds it (after a
        crash, or kopf's retry after an unclear failure) and no pod looks in the ledger:
        the gateway commits every tool call there before the agent sees it, so a run
        with no entry but the operator's never acted, and its pod is created (again).
        One with entries fails (``PodDeleted``): a run must never act twice. Only a
        create the API server refused (4xx) clears the condition. Nothing else reads it,
        so the resync timer cannot race it.
        """
        pods = _kube.core(plan.namespace, "pods")
        current = _status.read(self.kube, run.ref)
        if current is None:
            return False
        requested = current.condition("SandboxRequested")
        if requested is not None and requested.status == "True":
            found = self.kube.get(f"{pods}/{plan.name}")
            if found is not None:
                self._check_ours(found, plan.uid, "Pod")
                return False
            entries = self.book.entries(run_uid=plan.uid)
            acted = [entry for entry in entries if entry.actor != self.settings.actor]
            if acted:
                raise _validate.Rejection(
                    api.Phase.FAILED,
                    "PodDeleted",
                    f"pod {plan.name} (requested at {requested.last_transition_time}) is "
                    f"gone, and the ledger shows it ran ({acted[0].kind.value} at entry "
                    f"{acted[0].sequence}): it is not created again, for a run never acts "
                    "twice (create a new AgentRun to run again)",
                )
        elif not self._request_sandbox(
            current, "True", "PodRequested", f"pod {plan.name} requested"
        ):
            return False  # the run ended (cancel, delete) in the meantime
        try:
            return self._ensure(pods, _manifests.pod(plan, self.settings), plan.uid) is None
        except _kube.ApiError as error:
            if 400 <= error.status < 500 and error.status != 408:
                self._request_sandbox(
                    current,
                    "False",
                    "PodRefused",
                    f"the API server refused pod {plan.name}: {error.status} {error.reason}; "
                    "the operator retries",
                )
            raise

    def _request_sandbox(self, run: _agentrun.Run, state: str, reason: str, message: str) -> bool:
        """Write ``SandboxRequested``; False if the run ended or is being cancelled."""
        setting = _outcome.Setting("SandboxRequested", state, reason, message)
        written = self._write(run, lambda current: _transitions.sandbox_requested(current, setting))
        return written is not None

    def _ensure(self, collection: str, manifest: JSON, uid: str) -> JSON | None:
        """Create ``manifest``; None if this call created it, else the existing object
        (after checking it belongs to this run)."""
        kind = str(manifest["kind"])
        try:
            self.kube.create(collection, manifest)
            return None
        except _kube.ApiError as error:
            if error.status != 409:
                raise
        found = self.kube.get(f"{collection}/{manifest['metadata']['name']}")
        if found is None:
            raise errors.OrchestratorError(
                f"{kind} {manifest['metadata']['name']} was deleted while being adopted",
                where=f"AgentRun uid {uid}",
                fix="nothing: the operator retries",
            )
        self._check_ours(found, uid, kind)
        return found

    @staticmethod
    def _check_ours(found: Mapping[str, Any], uid: str, kind: str) -> None:
        if _agentrun.labels(found).get(_names.RUN_UID_LABEL) != uid:
            raise _validate.Rejection(
                api.Phase.FAILED,
                "NameConflict",
                f"{kind} {found['metadata']['namespace']}/{found['metadata']['name']} exists "
                "and does not belong to this run; the operator will not adopt or replace it",
            )

    def _past_deadline(self, run: _agentrun.Run, pod: Mapping[str, Any]) -> bool:
        pod_status: Mapping[str, Any] = pod.get("status") or {}
        started = _clock.parse(pod_status.get("startTime")) or _clock.parse(
            pod["metadata"].get("creationTimestamp")
        )
        if started is None:
            return False
        return time.time() > started + run.timeout_seconds + self.settings.timeout_grace_seconds

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


def _uid(body: Mapping[str, Any]) -> str:
    return str(body["metadata"]["uid"])


def _name(body: Mapping[str, Any]) -> str:
    return str(body["metadata"]["name"])


def _namespace(body: Mapping[str, Any]) -> str:
    return str(body["metadata"]["namespace"])
