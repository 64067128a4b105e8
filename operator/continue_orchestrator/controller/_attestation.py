"""Attesting a finished AgentRun in the cluster, and where its bundle lives.

When a run reaches a terminal phase the operator builds its ``attest.RunFacts`` with
``runs.facts`` (as local mode does) from the AgentRun status, its ledger entries and
whatever evidence the gateway kept (``runs.Evidence``), signs with the configured
signer, stores the bundle in an immutable ConfigMap ``<run>-attestation`` next to the
run, and only then writes ``status.attestation``:
``signed: "true"`` with the bundle's digest and location once the stored copy has been
read back and verified, ``"failed"`` with the reason otherwise. The ConfigMap is not
owned by the AgentRun: deleting a run leaves its evidence, as the ledger does. See
docs/attestation.md ("Publishing in a cluster").
"""

from __future__ import annotations

import base64
import dataclasses
import logging
import pathlib
import time
from collections.abc import Callable, Mapping
from typing import Any

from continue_orchestrator import attest, digest, errors, ledger, runs
from continue_orchestrator.controller import (
    _agentrun,
    _clock,
    _closing,
    _kube,
    _names,
    _outcome,
    _settings,
    _status,
    _validate,
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
                    f"{_names.PREFIX}/bundle-digest": digest.text(data),
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
        evidence: runs.EvidenceSource | None = None,
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
        ref = _agentrun.Ref.of(run)
        try:
            current = _status.read(self.kube, ref)
            if current is None:
                return None
            stored = current.status.attestation
            if stored is not None and stored.signed == "true":
                return stored.wire()
            if not current.status.phase.terminal:
                return None
            return self._publish(dict(current.body))
        except Exception as error:  # an attestation failure must never fail the run
            log.exception("attesting %s", ref)
            reason = (
                error.message
                if isinstance(error, errors.OrchestratorError)
                else (f"{error.__class__.__name__}: {error}")
            )
            return self._write(ref.namespace, ref.name, ref.uid, _failed(reason), None)

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

    def facts(self, run: Mapping[str, Any]) -> attest.RunFacts:
        """The facts of a finished run (``runs.facts``): how it ended, from its status;
        its ledger entries; what the gateway kept (``evidence``). A manual stop is
        ``spec.cancel``'s: the operator does not know who set it."""
        view = _agentrun.Run.of(run)
        finish = runs.from_status(view.status)
        if finish.started_at is None:
            finish = dataclasses.replace(finish, started_at=runs.parse_time(view.created_at))
        runs.check_attestable(finish, where=str(view.ref))
        uid = view.ref.uid
        return runs.facts(
            _validate.parse_run(run),
            uid=uid,
            finish=finish,
            entries=list(self.book.entries(run_uid=uid)),
            evidence=(self.evidence(uid) if self.evidence else None) or runs.Evidence(),
            merkle_root=self.book.checkpoint().root_hash,
            runner_image=view.status.runner_image or "",
            builder_id=self.builder_id,
            stopped_by="spec.cancel",
        )


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
