"""``orchestrator operator``: run the AgentRun operator (kopf) against the current cluster."""

from __future__ import annotations

import argparse
import functools
import logging
import pathlib
import shlex

from continue_orchestrator import controller, errors, gateway, runs
from continue_orchestrator.cli import _flags


def register(subparsers: _flags.Subparsers) -> None:
    parser = _flags.command(
        subparsers,
        "operator",
        """
        run the AgentRun operator

        Reconcile AgentRuns into gVisor sandbox pods. Uses the in-cluster service
        account, or KUBECONFIG. Every flag can also come from the environment variable
        named in its help.
        """,
    )
    add = functools.partial(_flags.add, parser)
    add(
        "--runner-image",
        env="ORCHESTRATOR_RUNNER_IMAGE",
        default="",
        help="runner image, pinned: NAME@sha256:DIGEST",
    )
    add(
        "--runner-command",
        env="ORCHESTRATOR_RUNNER_COMMAND",
        default="python3 -m continue_orchestrator.runner",
        help="runner container command, shell-quoted",
    )
    _flags.add_switch(
        parser,
        "--allow-unpinned-runner-image",
        env="ORCHESTRATOR_ALLOW_UNPINNED_RUNNER_IMAGE",
        help="accept a runner image without @sha256 (development only)",
    )
    add(
        "--ledger",
        env="ORCHESTRATOR_LEDGER",
        default="",
        help="ledger URL: sqlite:///path.db or postgresql://...",
    )
    _flags.add_list(
        parser,
        "--namespace",
        env="ORCHESTRATOR_WATCH_NAMESPACES",
        help="watch only this namespace (repeatable; default: all)",
    )
    add(
        "--operator-namespace",
        env="ORCHESTRATOR_NAMESPACE",
        default="continue-orchestrator",
        help="namespace of the operator and gateway",
    )
    add(
        "--gateway-port",
        env="ORCHESTRATOR_GATEWAY_PORT",
        type=int,
        default=8080,
        help="the gateway Service's port for agents",
    )
    add(
        "--gateway-url",
        env="ORCHESTRATOR_GATEWAY_URL",
        default="",
        help="the gateway's URL as sandboxes reach it (default: from the Service and port)",
    )
    add(
        "--gateway-admin-url",
        env="ORCHESTRATOR_GATEWAY_ADMIN_URL",
        default="",
        help="the gateway's admin API, where runs are registered (without it runs are only "
        "kept in memory)",
    )
    add(
        "--gateway-admin-token-file",
        env="ORCHESTRATOR_GATEWAY_ADMIN_TOKEN_FILE",
        type=pathlib.Path,
        help="file holding the gateway's admin token",
    )
    add(
        "--runtime-class",
        env="ORCHESTRATOR_RUNTIME_CLASS",
        default="gvisor",
        help="RuntimeClass when a policy names none",
    )
    add(
        "--resync-seconds",
        env="ORCHESTRATOR_RESYNC_SECONDS",
        type=float,
        default=30.0,
        help="how often a live run is checked against its pod",
    )
    add(
        "--timeout-grace-seconds",
        env="ORCHESTRATOR_TIMEOUT_GRACE_SECONDS",
        type=float,
        default=30.0,
        help="how long past spec.timeoutSeconds a pod may run before it is stopped",
    )
    add("--workers", env="ORCHESTRATOR_WORKERS", type=int, default=16, help="handler threads")
    add(
        "--publication-approval-seconds",
        env="ORCHESTRATOR_PUBLICATION_APPROVAL_SECONDS",
        type=float,
        default=900.0,
        help="how long a publication step the policy holds for approval waits for a "
        "RunApproval before it counts as denied",
    )
    add(
        "--pull-request-poll-seconds",
        env="ORCHESTRATOR_PULL_REQUEST_POLL_SECONDS",
        type=float,
        default=30.0,
        help="first wait before an open pull request is read from its forge (then doubling)",
    )
    add(
        "--pull-request-poll-max-seconds",
        env="ORCHESTRATOR_PULL_REQUEST_POLL_MAX_SECONDS",
        type=float,
        default=1800.0,
        help="longest wait between two reads of one open pull request",
    )
    add(
        "--metrics-port",
        env="ORCHESTRATOR_METRICS_PORT",
        type=int,
        help="serve Prometheus /metrics on this port",
    )
    add(
        "--peering",
        env="ORCHESTRATOR_PEERING",
        default="continue-orchestrator",
        help="kopf peering name; replicas with the same name never act together",
    )
    parser.add_argument(
        "--standalone", action="store_true", help="no peering (a single replica only)"
    )
    parser.add_argument(
        "--priority", type=int, default=None, help="peering priority (default: random)"
    )
    parser.add_argument(
        "--liveness", default=None, help="kopf liveness endpoint, e.g. http://0.0.0.0:8081/healthz"
    )
    add(
        "--signing-key-dir",
        env="ORCHESTRATOR_SIGNING_KEY_DIR",
        type=pathlib.Path,
        help="attest runs in key mode with the mounted Secret in DIR: cosign.key + "
        "cosign.password, or key.pem (+ password)",
    )
    add(
        "--keyless-trust-config",
        env="ORCHESTRATOR_KEYLESS_TRUST_CONFIG",
        type=pathlib.Path,
        help="attest runs keyless with this Sigstore ClientTrustConfig JSON file (a mounted "
        "ConfigMap)",
    )
    add(
        "--sigstore-token",
        env="ORCHESTRATOR_SIGSTORE_TOKEN",
        type=pathlib.Path,
        default=pathlib.Path("/var/run/secrets/tokens/sigstore/token"),
        help="projected ServiceAccount token (audience sigstore) for keyless signing",
    )
    add(
        "--actor",
        env="ORCHESTRATOR_ACTOR",
        default=controller.DEFAULT_ACTOR,
        help="who the operator is in the ledger: its ServiceAccount's user name, e.g. "
        "system:serviceaccount:NAMESPACE:NAME (the chart sets it)",
    )
    add(
        "--builder-id",
        env="ORCHESTRATOR_BUILDER_ID",
        default="https://orchestrator.continue.dev/operator",
        help="URI naming this operator instance in attestations",
    )
    add(
        "--record-root",
        env="ORCHESTRATOR_RECORD_ROOT",
        type=pathlib.Path,
        help="the gateway's record store, mounted read-only: attestations then carry the "
        "record digest, diff digest, verify results and models",
    )
    parser.add_argument("--verbose", action="store_true")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    settings = controller.Settings(
        runner_image=args.runner_image,
        ledger_url=args.ledger,
        runner_command=tuple(shlex.split(args.runner_command)),
        operator_namespace=args.operator_namespace,
        gateway_port=args.gateway_port,
        gateway_url=args.gateway_url,
        namespaces=tuple(args.namespace),
        runtime_class=args.runtime_class,
        allow_unpinned_runner_image=args.allow_unpinned_runner_image,
        resync_seconds=args.resync_seconds,
        timeout_grace_seconds=args.timeout_grace_seconds,
        workers=args.workers,
        actor=args.actor,
        publication_approval_seconds=args.publication_approval_seconds,
        pull_request_poll_seconds=args.pull_request_poll_seconds,
        pull_request_poll_max_seconds=args.pull_request_poll_max_seconds,
    ).validate()
    signer = (
        controller.load_signer(
            key_dir=args.signing_key_dir,
            trust_config=args.keyless_trust_config,
            token=args.sigstore_token,
        )
        if args.signing_key_dir is not None or args.keyless_trust_config is not None
        else None
    )
    client = _gateway_client(args)
    controller.run(
        settings,
        gateway=client,
        signer=signer,
        builder_id=args.builder_id,
        evidence=(
            runs.evidence_from_records(args.record_root) if args.record_root is not None else None
        ),
        publishing=controller.PublishingOptions(records_root=args.record_root),
        peering=None if args.standalone else args.peering,
        priority=args.priority,
        metrics_port=args.metrics_port,
        liveness_endpoint=args.liveness,
    )
    return 0


def _gateway_client(args: argparse.Namespace) -> gateway.BlockingClient | None:
    if not args.gateway_admin_url:
        logging.getLogger(__name__).warning(
            "no --gateway-admin-url: runs are registered in this process only, so no "
            "gateway will serve them"
        )
        return None
    where = "orchestrator operator --gateway-admin-token-file"
    if args.gateway_admin_token_file is None:
        raise errors.GatewayError(
            "the gateway admin URL is set but no admin token file", where=where
        )
    token = _flags.read_token(
        args.gateway_admin_token_file,
        what="the gateway admin token",
        where=f"{where} {args.gateway_admin_token_file}",
        fix="mount the gateway admin token Secret there",
    )
    return gateway.BlockingClient(args.gateway_admin_url, token)
