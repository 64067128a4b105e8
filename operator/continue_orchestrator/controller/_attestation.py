"""Attesting a finished AgentRun in the cluster, and where its bundle lives.

When a run reaches a terminal phase the operator builds its ``attest.RunFacts`` from
the AgentRun status, its ledger entries and whatever evidence the gateway kept (record,
diff), signs with the configured signer, stores the bundle in an immutable ConfigMap
``<run>-attestation`` next to the run, and only then writes ``status.attestation``:
``signed: "true"`` with the bundle's digest and location once the stored copy has been
read back and verified, ``"failed"`` with the reason otherwise. The ConfigMap is not
owned by the AgentRun: deleting a run leaves its evidence, as the ledger does. See
docs/attestation.md ("Publishing in a cluster").
"""

from __future__ import annotations

import base64
import dataclasses
import datetime
import hashlib
import json
import logging
import pathlib
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Literal

import rfc8785

from continue_orchestrator import api, attest, errors, ledger, records
from continue_orchestrator.controller import (
    _agentrun,
    _clock,
    _closing,
    _kube,
    _names,
    _outcome,
    _settings,
    _status,
)

log = logging.getLogger(__name__)
JSON = dict[str, Any]

BUNDLE_KEY = "bundle.sigstore.json"
LOCATION_SCHEME = "configmap:"
ATTESTATION_COMPONENT = "attestation"


def bundle_name(run_name: str) -> str:
    """The ConfigMap holding a run's bundle: ``<run>-attestation`` (a DNS subdomain)."""
    return f"{run_name[:240].rstrip('-.')}-attestation"


def location_of(namespace: str, name: str) -> str:
    return f"{LOCATION_SCHEME}{namespace}/{name}"


def parse_location(location: str) -> tuple[str, str]:
    """(namespace, name) of a ``configmap:NAMESPACE/NAME`` location."""
    namespace, _, name = location.removeprefix(LOCATION_SCHEME).partition("/")
    if not location.startswith(LOCATION_SCHEME) or not namespace or not name or "/" in name:
        raise errors.AttestationError(
            f"{location!r} is not a ConfigMap location",
            where="status.attestation.location",
            fix=f"expected {LOCATION_SCHEME}NAMESPACE/NAME",
        )
    return namespace, name


class ConfigMapStore:
    """``attest.BundleStore`` in immutable ConfigMaps of one namespace, labelled with the
    run's UID so admission controllers and ``orchestrator attestation get`` find them."""

    def __init__(self, kube: _kube.Kube, namespace: str, *, run_uid: str, run_name: str) -> None:
        self.kube = kube
        self.namespace = namespace
        self.run_uid = run_uid
        self.run_name = run_name

    def put(self, name: str, data: bytes) -> str:
        where = f"ConfigMap {self.namespace}/{name}"
        manifest = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": name,
                "namespace": self.namespace,
                "labels": {
                    _names.RUN_UID_LABEL: self.run_uid,
                    _names.MANAGED_BY_LABEL: _names.MANAGED_BY,
                    _names.COMPONENT_LABEL: ATTESTATION_COMPONENT,
                },
                "annotations": {
                    _names.RUN_NAME_ANNOTATION: self.run_name,
                    f"{_names.PREFIX}/bundle-digest": _sha256(data),
                },
            },
            "immutable": True,
            "binaryData": {BUNDLE_KEY: base64.b64encode(data).decode("ascii")},
        }
        path = _kube.core(self.namespace, "configmaps")
        for _ in range(3):
            try:
                self.kube.create(path, manifest)
                return location_of(self.namespace, name)
            except _kube.ApiError as error:
                if error.status != 409:
                    raise _store_error(error, where) from error
            found = self.kube.get(f"{path}/{name}")
            if found is None:
                continue
            labels = (found.get("metadata") or {}).get("labels") or {}
            if labels.get(_names.RUN_UID_LABEL) != self.run_uid:
                raise errors.AttestationError(
                    "a ConfigMap of that name exists and does not belong to this run",
                    where=where,
                    fix="rename or delete that ConfigMap; the operator never overwrites it",
                )
            if _bundle_bytes(found, where) == data:
                return location_of(self.namespace, name)
            # An earlier attempt of this run stored another signature; immutable, so replace.
            try:
                self.kube.delete(f"{path}/{name}")
            except _kube.ApiError as error:
                raise _store_error(error, where) from error
        raise errors.AttestationError(
            "the ConfigMap kept changing while being stored", where=where, fix="retry"
        )

    def get(self, location: str) -> bytes:
        return fetch(self.kube, location)


def fetch(kube: _kube.Kube, location: str) -> bytes:
    """The bundle bytes stored at a ``configmap:NAMESPACE/NAME`` location."""
    namespace, name = parse_location(location)
    where = f"ConfigMap {namespace}/{name}"
    try:
        found = kube.get(_kube.core(namespace, "configmaps", name))
    except _kube.ApiError as error:
        raise _store_error(error, where) from error
    if found is None:
        raise errors.AttestationError(
            "the bundle's ConfigMap does not exist", where=where, fix="it may have been deleted"
        )
    return _bundle_bytes(found, where)


def _bundle_bytes(config_map: Mapping[str, Any], where: str) -> bytes:
    encoded = (config_map.get("binaryData") or {}).get(BUNDLE_KEY)
    if not isinstance(encoded, str):
        raise errors.AttestationError(
            f"the ConfigMap has no binaryData key {BUNDLE_KEY!r}", where=where
        )
    return base64.b64decode(encoded)


def _store_error(error: _kube.ApiError, where: str) -> errors.AttestationError:
    return errors.AttestationError(
        f"the API server refused: {error.status} {error.reason}: {error.message_text}",
        where=where,
        fix="grant the operator create/get/delete on configmaps in the run's namespace"
        if error.status == 403
        else "",
    )


def _sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _hex(digest: str | None) -> str | None:
    if not digest:
        return None
    value = digest.removeprefix("sha256:")
    return value if len(value) == 64 else None


@dataclasses.dataclass(frozen=True, slots=True)
class RunEvidence:
    """What the gateway and runner know of a run that its AgentRun does not say.

    A digest or version left None is attested as ``null`` (and a digest gets no
    subject): the run produced no such thing, nobody measured it, or nobody kept it.
    """

    record_digest: str | None = None
    diff_digest: str | None = None
    workspace_tree_digest: str | None = None
    verify_results: tuple[attest.VerifyResult, ...] = ()
    models: tuple[attest.ModelUse, ...] = ()
    cli_version: str | None = None


EvidenceSource = Callable[[str], RunEvidence | None]
"""Run UID -> its evidence, or None when nothing is known."""


def evidence_from_records(root: str | pathlib.Path) -> EvidenceSource:
    """Evidence from the gateway's record store (a volume the operator also mounts):
    the sealed record's digest; from the runner's outcome the diff and workspace tree
    digests, the CLI version and verify results; models and their providers from the
    recorded model exchanges."""
    store = records.BlobStore(root)

    def evidence(uid: str) -> RunEvidence | None:
        try:
            record = records.load(store, uid)
        except errors.RecordError:
            return None
        manifest = record.directory / "manifest"
        sealed = manifest.read_text(encoding="utf-8").strip() if manifest.exists() else None
        requests: dict[tuple[str, str | None], int] = {}
        outcome: Mapping[str, Any] = {}
        for exchange in record.exchanges:
            if exchange.kind == "model" and exchange.facts.get("model"):
                provider = exchange.facts.get("provider")
                key = (str(exchange.facts["model"]), str(provider) if provider else None)
                requests[key] = requests.get(key, 0) + 1
            elif exchange.kind == "run.outcome" and "outcome" in exchange.blobs:
                try:
                    loaded = json.loads(store.get(exchange.blobs["outcome"]))
                except (errors.RecordError, ValueError):
                    loaded = {}
                outcome = loaded if isinstance(loaded, dict) else {}
        verify = []
        for item in outcome.get("verify") or []:
            result = item.get("result") or {}
            code = result.get("exitCode")
            verify.append(
                attest.VerifyResult(
                    command=str(item.get("command") or item.get("name") or "?"),
                    exit_code=code if isinstance(code, int) else -1,
                    duration_seconds=max(0.0, float(result.get("durationSeconds") or 0.0)),
                )
            )
        cli = outcome.get("cliVersion")
        tree = outcome.get("workspaceTreeDigest")
        return RunEvidence(
            record_digest=sealed,
            diff_digest=(outcome.get("diff") or {}).get("digest"),
            workspace_tree_digest=tree if isinstance(tree, str) else None,
            verify_results=tuple(verify),
            models=tuple(
                attest.ModelUse(provider=provider, model=name, requests=count)
                for (name, provider), count in sorted(
                    requests.items(), key=lambda item: (item[0][0], item[0][1] or "")
                )
            ),
            cli_version=cli if isinstance(cli, str) and cli else None,
        )

    return evidence


class Attestor:
    """Signs and publishes the attestation of each finished run; never raises.

    ``attest_run(run)`` is what the reconciler calls once a run is terminal. It is
    idempotent: a run whose status already says ``signed: "true"`` is left alone.
    """

    def __init__(
        self,
        kube: _kube.Kube,
        book: ledger.Ledger,
        signer: attest.Signer,
        *,
        builder_id: str,
        actor: str = _settings.DEFAULT_ACTOR,
        evidence: EvidenceSource | None = None,
        attempts: int = 4,
        backoff_seconds: float = 0.5,
        sleep: Callable[[float], None] = time.sleep,
        store: Callable[[str, str, str], attest.BundleStore] | None = None,
        closing: _closing.Closing | None = None,
    ) -> None:
        self.kube = kube
        # Shared with the reconciler: attestation.published never lands after a tombstone.
        self.closing = closing or _closing.Closing()
        self.book = book
        self.signer = signer
        self.builder_id = builder_id
        self.actor = actor
        self.evidence = evidence
        self.attempts = attempts
        self.backoff_seconds = backoff_seconds
        self.sleep = sleep
        self._store = store or (
            lambda namespace, uid, name: ConfigMapStore(kube, namespace, run_uid=uid, run_name=name)
        )

    def attest_run(self, run: Mapping[str, Any]) -> JSON | None:
        """Publish ``run``'s attestation; returns the ``status.attestation`` written."""
        metadata = run.get("metadata") or {}
        namespace, name, uid = (
            str(metadata.get("namespace")),
            str(metadata.get("name")),
            str(metadata.get("uid")),
        )
        try:
            current = self.kube.get(_kube.agentruns(namespace, name))
            if current is None or current["metadata"].get("uid") != uid:
                return None
            status = current.get("status") or {}
            if (status.get("attestation") or {}).get("signed") == "true":
                return dict(status["attestation"])
            if not _terminal(status):
                return None
            return self._publish(current)
        except Exception as error:  # an attestation failure must never fail the run
            log.exception("attesting AgentRun %s/%s", namespace, name)
            reason = (
                error.message
                if isinstance(error, errors.OrchestratorError)
                else (f"{error.__class__.__name__}: {error}")
            )
            return self._write(namespace, name, uid, _failed(reason), None)

    def _publish(self, run: JSON) -> JSON | None:
        metadata = run["metadata"]
        namespace, name, uid = metadata["namespace"], metadata["name"], metadata["uid"]
        try:
            facts = self.facts(run)
        except errors.AttestationError as error:
            return self._write(namespace, name, uid, _failed(error.message), None)
        statement = attest.build_statement(facts)
        published = attest.publish(
            statement,
            signer=self.signer,
            store=self._store(namespace, uid, name),
            name=bundle_name(name),
            attempts=self.attempts,
            backoff_seconds=self.backoff_seconds,
            sleep=self.sleep,
        )
        signer = _signer_label(self.signer)
        self.closing.append(
            self.book,
            uid,
            ledger.Kind.ATTESTATION_PUBLISHED,
            self.actor,
            {
                "name": name,
                "namespace": namespace,
                "signed": published.signed,
                "mode": published.mode,
                "signer": signer,
                "bundleDigest": published.bundle_digest,
                "statementDigest": published.statement_digest,
                "location": published.location,
                "attempts": published.attempts,
                "reason": published.reason,
            },
        )
        if published.signed:
            value: JSON = {
                "signed": "true",
                "digest": published.bundle_digest,
                "location": published.location,
                "signer": signer,
            }
        else:
            value = _failed(published.reason, signer)
        return self._write(namespace, name, uid, value, published)

    def _write(
        self,
        namespace: str,
        name: str,
        uid: str,
        value: JSON,
        published: attest.SigningStatus | None,
    ) -> JSON | None:
        signed = value["signed"] == "true"
        attested = (
            _outcome.Setting(
                "Attested",
                "True",
                "Signed",
                f"bundle {value.get('digest')} stored at {value.get('location')} and verified",
            )
            if signed
            else _outcome.Setting(
                "Attested", "False", "SigningFailed", str(value.get("reason") or "signing failed")
            )
        )

        def change(run: _agentrun.Run) -> JSON | None:
            stored = run.status.attestation
            if stored is not None and stored.signed == "true":
                return None  # never downgrade a stored, verified bundle
            at = _clock.now()
            conditions = _outcome.set_conditions(
                run.status.conditions, attested, at=at, generation=None
            )
            return {"attestation": value, "conditions": conditions}

        try:
            _status.patch(self.kube, _agentrun.Ref(namespace, name, uid), change)
        except (errors.OrchestratorError, _kube.ApiError) as error:
            log.error("could not write status.attestation of %s/%s: %s", namespace, name, error)
            return None
        return value

    # -- facts -------------------------------------------------------------------------

    def facts(self, run: JSON) -> attest.RunFacts:
        """The facts of a finished run, from its status, its ledger entries and evidence."""
        metadata, spec = run["metadata"], run.get("spec") or {}
        status = run.get("status") or {}
        uid = str(metadata["uid"])
        where = f"AgentRun {metadata['namespace']}/{metadata['name']}"
        policy_digest = _hex(status.get("policyDigest"))
        if policy_digest is None:
            raise errors.AttestationError(
                "the run never got a policy snapshot, so it never ran: nothing to attest",
                where=where,
                fix="see status.conditions (PolicyValid) for why it was refused",
            )
        entries = list(self.book.entries(run_uid=uid))
        if not entries:
            raise errors.AttestationError(
                "the run has no ledger entries", where=where, fix="check the operator's ledger"
            )
        evidence = (self.evidence(uid) if self.evidence else None) or RunEvidence()
        checkpoint = self.book.checkpoint()
        record = _hex(evidence.record_digest) or _hex((status.get("record") or {}).get("digest"))
        repository = spec.get("repository") or {}
        agent = spec.get("agent") or {}
        pinned = repository.get("commit") or repository.get("ref", "")
        inputs = {
            "agentrun-spec": hashlib.sha256(rfc8785.dumps(spec)).hexdigest(),
            "prompt": hashlib.sha256(str(spec.get("prompt", "")).encode()).hexdigest(),
            "repository": hashlib.sha256(
                f"{repository.get('url', '')}@{pinned}".encode()
            ).hexdigest(),
        }
        if isinstance(agent.get("config"), str):
            inputs["config.yaml"] = hashlib.sha256(agent["config"].encode()).hexdigest()
        inputs_digest = _hex(status.get("inputsDigest"))
        if inputs_digest:
            inputs["inputs"] = inputs_digest
        started = _time(status.get("startTime")) or _time(metadata.get("creationTimestamp"))
        finished = _time(status.get("completionTime")) or datetime.datetime.now(datetime.UTC)
        started = min(started or finished, finished)
        try:
            return attest.RunFacts(
                run=attest.RunRef(
                    namespace=str(metadata["namespace"]), name=str(metadata["name"]), uid=uid
                ),
                outcome=_run_outcome(status),
                record_digest=record,
                diff_digest=_hex(evidence.diff_digest),
                workspace_tree_digest=_hex(evidence.workspace_tree_digest),
                ledger=attest.LedgerRange(
                    first=entries[0].sequence,
                    last=entries[-1].sequence,
                    merkle_root=checkpoint.root_hash,
                ),
                inputs=inputs,
                policy_digest=policy_digest,
                runner_image=str(status.get("runnerImage") or ""),
                cli_version=evidence.cli_version,
                models=evidence.models,
                tool_calls=tool_call_summary(entries),
                verify_results=evidence.verify_results,
                interventions=interventions(entries, status),
                started_at=started,
                finished_at=finished,
                builder_id=self.builder_id,
                replay_of=replay_of(entries),
            )
        except ValueError as error:  # pydantic's ValidationError is a ValueError
            raise errors.AttestationError(
                f"the run's facts are not attestable: {error}".splitlines()[0][:1024],
                where=where,
                fix="a runner image must be pinned by digest (name@sha256:...) to be attested",
            ) from error


def replay_of(entries: Iterable[ledger.Entry]) -> attest.RunRef | None:
    """The run a replay replayed, from its ``replay.started`` entry."""
    for entry in entries:
        if entry.kind is ledger.Kind.REPLAY_STARTED and entry.payload:
            found = entry.payload.get("replayOf") or {}
            return attest.RunRef(
                namespace=str(found.get("namespace") or ""),
                name=str(found.get("name") or found.get("uid") or ""),
                uid=str(found.get("uid") or ""),
            )
    return None


def tool_call_summary(entries: Iterable[ledger.Entry]) -> attest.ToolCallSummary:
    """Allowed / denied / approved tool calls, from the gateway's ledger entries."""
    calls: list[tuple[str, str, str, bool]] = []  # call id, tool, effect, delivered
    for entry in entries:
        payload = entry.payload or {}
        if entry.kind is ledger.Kind.POLICY_DECISION and "tool" in payload:
            call_id, effect = str(payload.get("callId") or ""), str(payload.get("effect") or "")
            calls.append((call_id, str(payload["tool"]), effect, False))
        elif entry.kind is ledger.Kind.TOOL_CALL:
            call_id = str(payload.get("callId") or "")
            for index in range(len(calls) - 1, -1, -1):
                if calls[index][0] == call_id:
                    calls[index] = (*calls[index][:3], True)
                    break
    totals = {"allowed": 0, "denied": 0, "approved": 0}
    by_tool: dict[str, dict[str, int]] = {}
    for _, tool, effect, delivered in calls:
        kind = (
            "allowed"
            if effect == "Allow"
            else ("approved" if effect == "RequireApproval" and delivered else "denied")
        )
        totals[kind] += 1
        slot = by_tool.setdefault(tool, {"allowed": 0, "denied": 0, "approved": 0})
        slot[kind] += 1
    return attest.ToolCallSummary(
        **totals,
        by_tool={tool: attest.ToolCallCounts(**counts) for tool, counts in sorted(by_tool.items())},
    )


def interventions(
    entries: Iterable[ledger.Entry], status: Mapping[str, Any]
) -> tuple[attest.Intervention, ...]:
    """Human decisions: approvals and denials from the ledger, and a manual stop."""
    found: list[attest.Intervention] = []
    for entry in entries:
        if entry.kind not in (ledger.Kind.APPROVAL_GRANTED, ledger.Kind.APPROVAL_DENIED):
            continue
        payload = entry.payload or {}
        found.append(
            attest.Intervention(
                kind="approval" if entry.kind is ledger.Kind.APPROVAL_GRANTED else "denial",
                actor=str(payload.get("by") or entry.actor),
                at=_time(entry.time) or datetime.datetime.now(datetime.UTC),
                subject=str(payload.get("callId") or ""),
                reason=str(payload.get("reason") or ""),
            )
        )
    if status.get("phase") == api.Phase.CANCELLED.value:
        found.append(
            attest.Intervention(
                kind="manual-stop",
                actor="spec.cancel",
                at=_time(status.get("completionTime")) or datetime.datetime.now(datetime.UTC),
                subject="run",
                reason=str(status.get("message") or ""),
            )
        )
    return tuple(found)


def _terminal(status: Mapping[str, Any]) -> bool:
    return status.get("phase") in {p.value for p in api.TERMINAL_PHASES}


def _run_outcome(status: Mapping[str, Any]) -> Literal["succeeded", "failed", "stopped"]:
    phase = status.get("phase")
    if phase == api.Phase.SUCCEEDED.value:
        return "succeeded"
    if phase in (api.Phase.DENIED.value, api.Phase.CANCELLED.value):
        return "stopped"
    return "failed"


def _time(text: Any) -> datetime.datetime | None:
    if not isinstance(text, str) or not text:
        return None
    try:
        value = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return value if value.tzinfo else value.replace(tzinfo=datetime.UTC)


def _failed(reason: str, signer: str | None = None) -> JSON:
    value: JSON = {"signed": "failed", "reason": reason[:4096] or "signing failed"}
    if signer:
        value["signer"] = signer
    return value


def _signer_label(signer: attest.Signer) -> str:
    hint = getattr(signer, "hint", None)
    if isinstance(hint, str):
        return f"key:{hint}"
    expected = getattr(signer, "expected_identity", None)
    if callable(expected):
        try:
            identity, issuer = expected()
            return f"{identity} ({issuer})"[:1024]
        except errors.OrchestratorError:
            return "keyless"
    return str(signer.mode)


def bundle_digest(data: bytes) -> str:
    return _sha256(data)


def load_signer(
    *,
    key_dir: pathlib.Path | None = None,
    trust_config: pathlib.Path | None = None,
    token: pathlib.Path = attest.DEFAULT_TOKEN_PATH,
) -> attest.Signer:
    """The operator's signer: key mode from a mounted Secret directory, or keyless with
    a trust configuration file (mounted ConfigMap) and a projected ServiceAccount token."""
    if (key_dir is None) == (trust_config is None):
        raise errors.AttestationError(
            "choose one signing mode",
            where="operator attestation settings",
            fix="pass --signing-key-dir DIR (key mode) or --keyless-trust-config FILE",
        )
    if key_dir is not None:
        return attest.KeySigner.from_secret_files(key_dir)
    assert trust_config is not None
    try:
        text = trust_config.read_text(encoding="utf-8").strip()
    except OSError as error:
        raise errors.AttestationError(
            f"cannot read the trust configuration: {error.strerror}", where=str(trust_config)
        ) from error
    return attest.KeylessSigner(attest.load_trust_config(text), attest.token_file(token))
