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
import datetime
import json
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from continue_orchestrator import api, errors, ledger, runner, runs
from continue_orchestrator.controller import (
    _attestation,
    _closing,
    _gateway,
    _kube,
    _manifests,
    _metrics,
    _names,
    _outcome,
    _replay,
    _settings,
    _validate,
)

JSON = dict[str, Any]
log = logging.getLogger(__name__)

_CAS_ATTEMPTS = 10
POLICY_REASONS = frozenset(
    {
        "PolicyNotFound",
        "PolicyInvalid",
        "TimeoutExceedsPolicy",
        "RepositoryDenied",
        "SecretNotAllowed",
        "InvalidSpec",
    }
)


def _parse_time(text: str | None) -> float | None:
    if not text:
        return None
    try:
        return datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


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
        status = body.get("status") or {}
        if _outcome.current_phase(status).terminal:
            self._ensure_finished_recorded(body)
            if self.attestor is not None:  # catch up after a crash before attesting
                self.attestor.attest_run(body)
            return
        if (body.get("spec") or {}).get("cancel"):
            self.cancel(body)
            return
        if _outcome.condition(status, "SandboxReady") is not None:
            self._register_again(body)
            self.resync(body)
            return
        uid, namespace = _uid(body), _namespace(body)
        name = _names.object_name(_name(body), uid)
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
            pod_created = self._create_pod_at_most_once(body, plan)
        except _validate.Rejection as rejection:
            self._reject(body, rejection)
            return
        if pod_created:
            created_at = _parse_time(body.get("metadata", {}).get("creationTimestamp"))
            if created_at is not None:
                _metrics.POD_CREATE_SECONDS.observe(max(0.0, time.time() - created_at))

        def sandbox_created(current: JSON) -> JSON | None:
            old = dict(current.get("status") or {})
            if _outcome.current_phase(old).terminal:
                return None
            new = dict(old)
            if _outcome.condition(old, "SandboxReady") is not None and old.get("inputsDigest"):
                return None
            at = _outcome.now()
            generation = current["metadata"].get("generation")
            new.setdefault("phase", api.Phase.PENDING.value)
            new.setdefault("message", f"pod {plan.name} created")
            new["inputsDigest"] = plan.inputs_digest
            new["policyDigest"] = plan.snapshot.digest
            new["runnerImage"] = self.settings.runner_image
            new["observedGeneration"] = generation
            conditions = _outcome.set_condition(
                list(old.get("conditions") or []),
                "PolicyValid",
                "True",
                "PolicyAllowed",
                f"policy snapshot {plan.snapshot.digest} allows the run",
                at=at,
                generation=generation,
            )
            if _outcome.condition(old, "SandboxReady") is None:
                conditions = _outcome.set_condition(
                    conditions,
                    "SandboxReady",
                    "False",
                    "PodCreated",
                    f"pod {plan.name} created with runtimeClassName {plan.snapshot.runtime_class}",
                    at=at,
                    generation=generation,
                )
            new["conditions"] = conditions
            return new

        if self._transition(body, sandbox_created) is not None:
            self._event(body, "SandboxCreated", f"pod {plan.name} created", "Normal")
        # Pod events that came before SandboxReady was written were ignored: catch up.
        self.resync(body)

    def resync(self, body: Mapping[str, Any]) -> None:
        """Bring the status up to the pod's state; also the timeout backstop."""
        current = self._get_run(body)
        if current is None:
            return
        status = current.get("status") or {}
        if _outcome.current_phase(status).terminal:
            return
        if (current.get("spec") or {}).get("cancel"):
            self.cancel(current)
            return
        if _outcome.condition(status, "SandboxReady") is None:
            return  # the create handler has not finished; it will get here
        name = _names.object_name(_name(current), _uid(current))
        pod = self.kube.get(_kube.core(_namespace(current), "pods", name))
        if pod is None or _labels(pod).get(_names.RUN_UID_LABEL) != _uid(current):
            self._advance(current, _outcome.pod_deleted(name))
            return
        outcome = _outcome.from_pod(pod)
        if outcome is not None and not outcome.phase.terminal and self._past_deadline(current, pod):
            self.kube.delete(_kube.core(_namespace(current), "pods", name), grace_seconds=0)
            outcome = _outcome.Outcome(
                api.Phase.TIMED_OUT,
                "DeadlineExceeded",
                f"pod {name} was still {outcome.phase.value} "
                f"{self.settings.timeout_grace_seconds:.0f}s past spec.timeoutSeconds; "
                "the operator stopped it",
            )
        if outcome is not None:
            self._advance(current, outcome)

    def on_pod(self, pod: Mapping[str, Any], *, deleted: bool) -> None:
        """A watch event for a pod carrying the run-uid label."""
        uid = _labels(pod).get(_names.RUN_UID_LABEL)
        owner = next(
            (
                ref
                for ref in pod.get("metadata", {}).get("ownerReferences") or ()
                if ref.get("kind") == "AgentRun" and ref.get("uid") == uid
            ),
            None,
        )
        if owner is None:
            return
        namespace = str(pod["metadata"]["namespace"])
        run = self.kube.get(_kube.agentruns(namespace, str(owner["name"])))
        if run is None or _uid(run) != uid or run["metadata"].get("deletionTimestamp"):
            return
        status = run.get("status") or {}
        if _outcome.current_phase(status).terminal:
            return
        if (run.get("spec") or {}).get("cancel"):
            self.cancel(run)
            return
        if _outcome.condition(status, "SandboxReady") is None:
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
        name = _names.object_name(_name(body), _uid(body))
        outcome = _outcome.Outcome(
            api.Phase.CANCELLED,
            "Cancelled",
            "spec.cancel was set; the sandbox pod was stopped",
        )

        def cancelled(current: JSON) -> JSON | None:
            new = _outcome.advance(
                current.get("status"), outcome, generation=current["metadata"].get("generation")
            )
            if new is None:
                return None
            counts = dict(new.get("interventions") or {})
            counts["manualStops"] = int(counts.get("manualStops", 0)) + 1
            counts["total"] = int(counts.get("total", 0)) + 1
            new["interventions"] = counts
            return new

        won = self._transition(body, cancelled)
        if won is not None:
            _metrics.INTERVENTIONS.labels("manual_stop").inc()
            self._finished(body, won[1], outcome)
        current = self._get_run(body)
        if current is not None and _outcome.current_phase(current.get("status")).value == (
            api.Phase.CANCELLED.value
        ):
            self.kube.delete(_kube.core(_namespace(body), "pods", name), grace_seconds=5)

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

    def _advance(self, body: Mapping[str, Any], outcome: _outcome.Outcome) -> None:
        won = self._transition(
            body,
            lambda current: _outcome.advance(
                current.get("status"), outcome, generation=current["metadata"].get("generation")
            ),
        )
        if won is None:
            return
        new = won[1]
        if outcome.phase is api.Phase.RUNNING:
            self._record(body, ledger.Kind.RUN_STARTED, {"startTime": new.get("startTime")})
            self._event(body, "Running", outcome.message, "Normal")
        elif outcome.phase.terminal:
            self._finished(body, new, outcome)

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

        def recorded(current: JSON) -> JSON | None:
            new = dict(current.get("status") or {})
            new["record"] = {"digest": digest, "location": f"gateway records: runs/{_uid(body)}"}
            if isinstance(report, Mapping):
                state, reason, message = _replay.condition(report)
                new["conditions"] = _outcome.set_condition(
                    list(new.get("conditions") or []),
                    "Replayed",
                    state,
                    reason,
                    message,
                    at=_outcome.now(),
                    generation=current["metadata"].get("generation"),
                )
            return new

        self._transition(body, recorded)
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
        policy_problem = rejection.reason in POLICY_REASONS

        def rejected(current: JSON) -> JSON | None:
            generation = current["metadata"].get("generation")
            new = _outcome.advance(current.get("status"), outcome, generation=generation)
            if new is None:
                return None
            new["conditions"] = _outcome.set_condition(
                list(new.get("conditions") or []),
                "PolicyValid",
                "False" if policy_problem else "True",
                rejection.reason if policy_problem else "PolicyAllowed",
                rejection.message if policy_problem else "the policy allows the run",
                at=new.get("completionTime") or _outcome.now(),
                generation=generation,
            )
            if rejection.reason in _replay.REASONS:
                new["conditions"] = _outcome.set_condition(
                    new["conditions"],
                    "Replayed",
                    "False",
                    rejection.reason,
                    rejection.message,
                    at=new.get("completionTime") or _outcome.now(),
                    generation=generation,
                )
            return new

        won = self._transition(body, rejected)
        if won is None:
            return
        if not any(True for _ in self.book.entries(run_uid=_uid(body))):
            self._record(body, ledger.Kind.RUN_CREATED, self._created_payload(body, None))
        self._finished(body, won[1], outcome)

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
            inputs = str(_annotations(secret)[_names.INPUTS_DIGEST_ANNOTATION])
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
        if found is None or _labels(found).get(_names.RUN_UID_LABEL) != uid:
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

    def _create_pod_at_most_once(self, body: Mapping[str, Any], plan: runs.Plan) -> bool:
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
        current = self._get_run(body)
        if current is None:
            return False
        requested = _outcome.condition(current.get("status") or {}, "SandboxRequested") or {}
        if requested.get("status") == "True":
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
                    f"pod {plan.name} (requested at {requested.get('lastTransitionTime')}) is "
                    f"gone, and the ledger shows it ran ({acted[0].kind.value} at entry "
                    f"{acted[0].sequence}): it is not created again, for a run never acts "
                    "twice (create a new AgentRun to run again)",
                )
        elif not self._note_sandbox_requested(current, plan, "True", "PodRequested",
                                               f"pod {plan.name} requested"):  # fmt: skip
            return False  # the run ended (cancel, delete) in the meantime
        try:
            return self._ensure(pods, _manifests.pod(plan, self.settings), plan.uid) is None
        except _kube.ApiError as error:
            if 400 <= error.status < 500 and error.status != 408:
                self._note_sandbox_requested(
                    body, plan, "False", "PodRefused", f"the API server refused pod {plan.name}: "
                    f"{error.status} {error.reason}; the operator retries",
                )  # fmt: skip
            raise

    def _note_sandbox_requested(
        self, body: Mapping[str, Any], plan: runs.Plan, state: str, reason: str, message: str
    ) -> bool:
        def noted(current: JSON) -> JSON | None:
            old = dict(current.get("status") or {})
            if _outcome.current_phase(old).terminal or (current.get("spec") or {}).get("cancel"):
                return None
            new = dict(old)
            new.setdefault("phase", api.Phase.PENDING.value)
            new["conditions"] = _outcome.set_condition(
                list(old.get("conditions") or []),
                "SandboxRequested",
                state,
                reason,
                message,
                at=_outcome.now(),
                generation=current["metadata"].get("generation"),
            )
            return new

        return self._transition(body, noted) is not None

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
        if _labels(found).get(_names.RUN_UID_LABEL) != uid:
            raise _validate.Rejection(
                api.Phase.FAILED,
                "NameConflict",
                f"{kind} {found['metadata']['namespace']}/{found['metadata']['name']} exists "
                "and does not belong to this run; the operator will not adopt or replace it",
            )

    def _past_deadline(self, run: Mapping[str, Any], pod: Mapping[str, Any]) -> bool:
        started = _parse_time((pod.get("status") or {}).get("startTime")) or _parse_time(
            pod["metadata"].get("creationTimestamp")
        )
        if started is None:
            return False
        timeout = int((run.get("spec") or {}).get("timeoutSeconds", 1800))
        return time.time() > started + timeout + self.settings.timeout_grace_seconds

    def _get_run(self, body: Mapping[str, Any]) -> JSON | None:
        current = self.kube.get(_kube.agentruns(_namespace(body), _name(body)))
        if current is None or _uid(current) != _uid(body):
            return None
        return current

    def _transition(
        self, body: Mapping[str, Any], compute: Callable[[JSON], JSON | None]
    ) -> tuple[JSON, JSON] | None:
        """Compare-and-swap the status: (old, new) if this call moved it, else None."""
        namespace, name = _namespace(body), _name(body)
        # The first try swaps against the body in hand: if it is stale the API server
        # answers 409 and the next try reads the current object.
        current: JSON | None = dict(body) if body["metadata"].get("resourceVersion") else None
        for _ in range(_CAS_ATTEMPTS):
            if current is None:
                current = self._get_run(body)
            if current is None:
                return None
            new = compute(current)
            if new is None:
                return None
            patch = {
                "metadata": {"resourceVersion": current["metadata"]["resourceVersion"]},
                "status": new,
            }
            try:
                self.kube.merge_patch(_kube.agentruns(namespace, name, status=True), patch)
            except _kube.ApiError as error:
                if error.status == 409:
                    current = None
                    continue
                if error.status == 404:
                    return None
                raise
            _metrics.PHASES.observe(_uid(body), str(new.get("phase")))
            return dict(current.get("status") or {}), new
        raise errors.OrchestratorError(
            f"status of AgentRun {namespace}/{name} kept changing under {_CAS_ATTEMPTS} writes",
            where="operator status update",
            fix="nothing: the operator retries",
        )

    def _event(self, body: Mapping[str, Any], reason: str, message: str, kind: str) -> None:
        """One Event per transition; a second post of the same transition is a no-op."""
        uid, namespace, run_name = _uid(body), _namespace(body), _name(body)
        at = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {
                "name": _names.event_name(_names.object_name(run_name, uid), reason),
                "namespace": namespace,
                "labels": {_names.RUN_UID_LABEL: uid},
            },
            "involvedObject": {
                "apiVersion": api.API_VERSION,
                "kind": "AgentRun",
                "name": run_name,
                "namespace": namespace,
                "uid": uid,
            },
            "reason": reason,
            "message": message[:1024],
            "type": kind,
            "source": {"component": _names.MANAGED_BY},
            "reportingComponent": _names.MANAGED_BY,
            "reportingInstance": _names.MANAGED_BY,
            "firstTimestamp": at[:19] + "Z",
            "lastTimestamp": at[:19] + "Z",
            "count": 1,
        }
        try:
            self.kube.create(_kube.core(namespace, "events"), event)
        except _kube.ApiError as error:
            if error.status != 409:
                log.warning(
                    "could not post event %s for %s/%s: %s", reason, namespace, run_name, error
                )


def _uid(body: Mapping[str, Any]) -> str:
    return str(body["metadata"]["uid"])


def _name(body: Mapping[str, Any]) -> str:
    return str(body["metadata"]["name"])


def _namespace(body: Mapping[str, Any]) -> str:
    return str(body["metadata"]["namespace"])


def _labels(body: Mapping[str, Any]) -> Mapping[str, str]:
    return (body.get("metadata") or {}).get("labels") or {}


def _annotations(body: Mapping[str, Any]) -> Mapping[str, str]:
    return (body.get("metadata") or {}).get("annotations") or {}
