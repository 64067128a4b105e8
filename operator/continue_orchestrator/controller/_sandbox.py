"""A run's sandbox: its Secret, NetworkPolicy and Pod, created or adopted, and the pod's state.

The objects have deterministic names (``_names.object_name``), so a restarted operator
finds what an earlier one created: a create answered 409 reads the object and adopts it
when its run-uid label names this run (the run ends ``NameConflict`` otherwise). The
Secret holds the run's plan (policy snapshot, bundle, token), so a resumed run goes on
with the plan it started with, never with live policy. The pod is created at most once
(``start``); ``outcome`` says what the pod's state means for the run, and stops a pod
past its deadline.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import time
from collections.abc import Callable, Mapping
from typing import Any

from continue_orchestrator import api, errors, ledger, runner, runs
from continue_orchestrator.controller import (
    _agentrun,
    _clock,
    _gateway,
    _kube,
    _manifests,
    _names,
    _outcome,
    _replay,
    _settings,
    _status,
    _transitions,
    _validate,
)

JSON = dict[str, Any]


@dataclasses.dataclass(frozen=True, slots=True)
class Sandbox:
    """Creates, adopts and reads the objects of runs; shared by all handler threads."""

    kube: _kube.Kube
    book: ledger.Ledger
    """Read for the run's entries: whether a vanished pod ever acted, a replay's source."""
    gateway: _gateway.GatewayClient
    settings: _settings.Settings

    def plan(self, run: _agentrun.Run, fresh: Callable[[], runs.Plan]) -> runs.Plan:
        """The run's plan: from its Secret when it has one; else ``fresh()`` (validated
        against live policy and recorded by the caller), and the Secret created from it.
        Raises ``_validate.Rejection`` for a Secret that is not this run's or is damaged."""
        found = self.kube.get(_kube.core(run.ref.namespace, "secrets", run.ref.object_name))
        if found is not None:
            self._check_ours(found, run.ref.uid, "Secret")
            return self._plan_from_secret(run, found)
        plan = fresh()
        created = self._ensure(
            _kube.core(run.ref.namespace, "secrets"),
            _manifests.secret(plan, self.settings),
            run.ref.uid,
        )
        return plan if created is None else self._plan_from_secret(run, created)

    def start(self, run: _agentrun.Run, plan: runs.Plan) -> bool:
        """Register the run with the gateway, create or adopt its NetworkPolicy, then its
        pod at most once: True if this call created the pod."""
        self.gateway.register(self._registration(plan))
        self._ensure(
            _kube.network_policies(run.ref.namespace),
            _manifests.network_policy(plan, self.settings),
            run.ref.uid,
        )
        return self._create_pod_at_most_once(run, plan)

    def register_again(self, run: _agentrun.Run) -> None:
        """On resume: the gateway may have restarted too (it keeps runs in memory only).
        Registering the same run again is a no-op for a gateway that still has it."""
        found = self.kube.get(_kube.core(run.ref.namespace, "secrets", run.ref.object_name))
        if found is None or _agentrun.labels(found).get(_names.RUN_UID_LABEL) != run.ref.uid:
            return  # resync sees what is missing and ends the run
        try:
            plan = self._plan_from_secret(run, found)
        except _validate.Rejection:
            return
        self.gateway.register(self._registration(plan))

    def outcome(self, run: _agentrun.Run) -> _outcome.Outcome | None:
        """What the run's pod says now: gone (or another run's) is ``PodDeleted``; one
        still going past the deadline is stopped (``DeadlineExceeded``); None while it
        says nothing new."""
        name = run.ref.object_name
        path = _kube.core(run.ref.namespace, "pods", name)
        pod = self.kube.get(path)
        if pod is None or _agentrun.labels(pod).get(_names.RUN_UID_LABEL) != run.ref.uid:
            return _outcome.pod_deleted(name)
        outcome = _outcome.from_pod(pod)
        if outcome is not None and not outcome.phase.terminal and self._past_deadline(run, pod):
            self.kube.delete(path, grace_seconds=0)
            return _outcome.Outcome(
                api.Phase.TIMED_OUT,
                "DeadlineExceeded",
                f"pod {name} was still {outcome.phase.value} "
                f"{self.settings.timeout_grace_seconds:.0f}s past spec.timeoutSeconds; "
                "the operator stopped it",
            )
        return outcome

    def _plan_from_secret(self, run: _agentrun.Run, secret: Mapping[str, Any]) -> runs.Plan:
        """The plan the run was started with, from its Secret: never re-read live policy."""
        data = {key: base64.b64decode(value) for key, value in (secret.get("data") or {}).items()}
        resource = _validate.parse_run(run.body)
        try:
            snapshot = runs.snapshot(data["policy.json"], runtime_class=self.settings.runtime_class)
            bundle = runner.RunBundle.model_validate(json.loads(data["bundle.json"]))
            token = data["token"].decode("ascii")
            inputs = str(secret["metadata"]["annotations"][_names.INPUTS_DIGEST_ANNOTATION])
        except (KeyError, ValueError, errors.OrchestratorError) as error:
            raise _validate.Rejection(
                api.Phase.FAILED,
                "RunSecretInvalid",
                f"Secret {run.ref.namespace}/{secret['metadata']['name']} of this run is "
                f"damaged ({error}); delete the AgentRun and create it again",
            ) from None
        values = {
            key.removeprefix("secret."): value
            for key, value in data.items()
            if key.startswith("secret.")
        }
        brokered = {
            **_validate.brokered_values(
                self.kube, resource, _validate.brokered_secrets(resource, bundle.config)
            ),
            **_validate.resumed_literal_keys(self.kube, resource, bundle.config),
        }
        return runs.Plan(
            run=resource,
            uid=run.ref.uid,
            namespace=run.ref.namespace,
            name=str(secret["metadata"]["name"]),
            snapshot=snapshot,
            config=bundle.config,
            secret_values=values,
            brokered_values=brokered,
            git_token=_validate.git_token(self.kube, resource),
            permissions_yaml=bundle.permissions_yaml,
            inputs_digest=inputs,
            token=token,
        )

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
        with no entry but the operator's (and the gateway's record of its clone's
        fetches) never acted, and its pod is created (again).
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
            # Its clone fetched through the gateway (repository.fetch): that is no act.
            acted = [
                entry
                for entry in entries
                if entry.actor != self.settings.actor
                and entry.kind is not ledger.Kind.REPOSITORY_FETCH
            ]
            if acted:
                raise _validate.Rejection(
                    api.Phase.FAILED,
                    "PodDeleted",
                    f"pod {plan.name} (requested at {requested.last_transition_time}) is "
                    f"gone, and the ledger shows it ran ({acted[0].kind.value} at entry "
                    f"{acted[0].sequence}): it is not created again, for a run never acts "
                    "twice (create a new AgentRun to run again)",
                )
        elif not self._request(current, "True", "PodRequested", f"pod {plan.name} requested"):
            return False  # the run ended (cancel, delete) in the meantime
        try:
            return self._ensure(pods, _manifests.pod(plan, self.settings), plan.uid) is None
        except _kube.ApiError as error:
            if 400 <= error.status < 500 and error.status != 408:
                self._request(
                    current,
                    "False",
                    "PodRefused",
                    f"the API server refused pod {plan.name}: {error.status} {error.reason}; "
                    "the operator retries",
                )
            raise

    def _request(self, run: _agentrun.Run, state: str, reason: str, message: str) -> bool:
        """Write ``SandboxRequested``; False if the run ended or is being cancelled."""
        setting = _outcome.Setting("SandboxRequested", state, reason, message)

        def requested(current: _agentrun.Run) -> JSON | None:
            return _transitions.sandbox_requested(current, setting)

        return _status.patch(self.kube, run.ref, requested, in_hand=run) is not None

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
