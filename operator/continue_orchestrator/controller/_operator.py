"""The kopf wiring: which events call which reconciler step, and how kopf is run.

Handlers are plain functions that kopf runs in its thread pool; each one delegates to
``Reconciler`` and only adds timing, error counting and kopf's retry semantics.
Kopf keeps its bookkeeping in annotations under our prefix (the status schema belongs
to the API), and peering keeps a second replica paused while the first one lives.
"""

from __future__ import annotations

import functools
import logging
import random
import time
from collections.abc import Callable, Mapping
from typing import Any

import kopf

from continue_orchestrator import api, attest, errors, ledger, runs
from continue_orchestrator.controller import (
    _attestation,
    _gateway,
    _kube,
    _metrics,
    _names,
    _outcome,
    _publication,
    _pull_requests,
    _reconcile,
    _settings,
)

log = logging.getLogger(__name__)
FINALIZER = f"{api.GROUP}/ledger-tombstone"
RESOURCE = (api.GROUP, api.VERSION, "agentruns")


def _measured(handler: str, step: Callable[..., None]) -> Callable[..., None]:
    @functools.wraps(step)
    def call(*args: Any, **kwargs: Any) -> None:
        begun = time.perf_counter()
        try:
            step(*args, **kwargs)
        except (errors.OrchestratorError, _kube.ApiError) as error:
            _metrics.RECONCILE_ERRORS.labels(handler).inc()
            raise kopf.TemporaryError(str(error), delay=2) from error
        except Exception:
            _metrics.RECONCILE_ERRORS.labels(handler).inc()
            raise
        finally:
            _metrics.RECONCILE_SECONDS.labels(handler).observe(time.perf_counter() - begun)

    return call


def _live(status: Mapping[str, Any], **_: Any) -> bool:
    return not _outcome.current_phase(status).terminal


def build_registry(
    reconciler: _reconcile.Reconciler, settings: _settings.Settings
) -> kopf.OperatorRegistry:
    """A kopf registry with every handler of the operator bound to ``reconciler``."""
    registry = kopf.OperatorRegistry()
    start = _measured("start", reconciler.start)
    resync = _measured("resync", reconciler.resync)
    cancel = _measured("cancel", reconciler.cancel)
    delete = _measured("delete", reconciler.delete)
    on_pod = _measured("pod", reconciler.on_pod)

    @kopf.on.login(registry=registry, id="login")
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        # An own registry gets no default login handler; use the kubernetes client's
        # in-cluster / KUBECONFIG logic, the same that Kube.from_environment uses.
        return kopf.login_via_client(**kwargs)

    @kopf.on.startup(registry=registry, id="configure")
    def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
        configure_kopf(settings, workers=reconciler.settings.workers)

    @kopf.on.create(*RESOURCE, registry=registry, id="start")
    def on_create(body: kopf.Body, **_: Any) -> None:
        start(dict(body))

    @kopf.on.resume(*RESOURCE, registry=registry, id="adopt")
    def on_resume(body: kopf.Body, **_: Any) -> None:
        start(dict(body))

    @kopf.on.field(*RESOURCE, field="spec.cancel", registry=registry, id="cancel")
    def on_cancel(body: kopf.Body, new: Any, **_: Any) -> None:
        if new:
            cancel(dict(body))

    @kopf.on.delete(*RESOURCE, registry=registry, id="tombstone")
    def on_delete(body: kopf.Body, **_: Any) -> None:
        delete(dict(body))

    @kopf.timer(
        *RESOURCE,
        registry=registry,
        id="resync",
        interval=settings.resync_seconds,
        initial_delay=settings.resync_seconds,
        when=_live,
    )
    def on_timer(body: kopf.Body, **_: Any) -> None:
        resync(dict(body))

    @kopf.on.event(
        "", "v1", "pods", registry=registry, id="pod", labels={_names.RUN_UID_LABEL: kopf.PRESENT}
    )
    def on_pod_event(body: kopf.Body, type: str | None, **_: Any) -> None:
        on_pod(dict(body), deleted=type == "DELETED")

    @kopf.on.event(*RESOURCE, registry=registry, id="phase-gauge")
    def on_run_event(body: kopf.Body, type: str | None, **_: Any) -> None:
        phase = None if type == "DELETED" else _outcome.current_phase(body.get("status")).value
        _metrics.PHASES.observe(str(body["metadata"]["uid"]), phase)

    return registry


def configure_kopf(settings: kopf.OperatorSettings, *, workers: int) -> None:
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=api.GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=api.GROUP, key="last-handled-configuration"
    )
    settings.execution.max_workers = workers
    settings.posting.level = logging.WARNING
    settings.peering.lifetime = 30
    settings.networking.request_timeout = 60
    settings.watching.server_timeout = 300


def ensure_peering(kube: _kube.Kube, name: str, namespaces: tuple[str, ...]) -> None:
    """Create the peering object kopf keeps alive in; without it kopf stays paused."""
    paths = (
        [f"/apis/kopf.dev/v1/namespaces/{ns}/kopfpeerings" for ns in namespaces]
        if namespaces
        else ["/apis/kopf.dev/v1/clusterkopfpeerings"]
    )
    kind = "KopfPeering" if namespaces else "ClusterKopfPeering"
    for path in paths:
        try:
            kube.create(
                path, {"apiVersion": "kopf.dev/v1", "kind": kind, "metadata": {"name": name}}
            )
        except _kube.ApiError as error:
            if error.status == 409:
                continue
            raise errors.OrchestratorError(
                f"cannot create {kind} {name!r}: {error}",
                where="operator peering",
                fix="apply crds/kopf.dev_*.yaml and grant the operator create on kopf.dev "
                "peerings, or run with --standalone (one replica only)",
            ) from error


def run(
    settings: _settings.Settings,
    *,
    peering: str | None = "continue-orchestrator",
    priority: int | None = None,
    metrics_port: int | None = None,
    gateway: _gateway.GatewayClient | None = None,
    liveness_endpoint: str | None = None,
    signer: attest.Signer | None = None,
    builder_id: str = "https://orchestrator.continue.dev/operator",
    evidence: runs.EvidenceSource | None = None,
    publishing: _publication.Options | None = None,
) -> None:
    """Run the operator until SIGINT/SIGTERM. ``peering=None`` runs it standalone.
    With a ``signer``, every finished run is attested (``status.attestation``)."""
    settings.validate()
    kube = _kube.Kube.from_environment(pool_size=max(10, settings.workers * 2))
    book = ledger.open(settings.ledger_url)
    attestor = (
        _attestation.Attestor(
            kube, book, signer, builder_id=builder_id, actor=settings.actor, evidence=evidence
        )
        if signer is not None
        else None
    )
    reconciler = _reconcile.Reconciler(
        kube, book, gateway or _gateway.InMemoryGateway(), settings, attestor, publishing
    )
    poller = _pull_requests.Poller(
        kube,
        book,
        reconciler.publisher.forge_for,
        actor=settings.actor,
        namespaces=settings.namespaces,
        backoff=_pull_requests.Backoff(
            settings.pull_request_poll_seconds, settings.pull_request_poll_max_seconds
        ),
        closing=reconciler.closing,
    )
    if peering is not None:
        ensure_peering(kube, peering, settings.namespaces)
    if metrics_port is not None:
        _metrics.serve(metrics_port)
    poller.start()
    try:
        kopf.run(
            registry=build_registry(reconciler, settings),
            clusterwide=not settings.namespaces,
            namespaces=list(settings.namespaces),
            standalone=peering is None,
            peering_name=peering,
            priority=priority if priority is not None else random.randint(1, 1_000_000),
            liveness_endpoint=liveness_endpoint,
        )
    finally:
        poller.stop()
        reconciler.publisher.shutdown()
        book.close()
        kube.close()
