"""``orchestrator operator``: run the AgentRun operator (kopf) against the current cluster."""

from __future__ import annotations

import argparse
import logging
import os
import pathlib
import shlex

from continue_orchestrator import controller, errors, gateway


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    env = os.environ.get
    parser = subparsers.add_parser(
        "operator",
        help="run the AgentRun operator",
        description="Reconcile AgentRuns into gVisor sandbox pods. Uses the in-cluster "
        "service account, or KUBECONFIG. Every flag can also come from the environment "
        "variable named in its help.",
    )
    parser.add_argument(
        "--runner-image",
        default=env("ORCHESTRATOR_RUNNER_IMAGE", ""),
        help="runner image, pinned: NAME@sha256:DIGEST ($ORCHESTRATOR_RUNNER_IMAGE)",
    )
    parser.add_argument(
        "--runner-command",
        default=env("ORCHESTRATOR_RUNNER_COMMAND", "python3 -m continue_orchestrator.runner"),
        help="runner container command, shell-quoted ($ORCHESTRATOR_RUNNER_COMMAND)",
    )
    parser.add_argument(
        "--allow-unpinned-runner-image",
        action="store_true",
        default=env("ORCHESTRATOR_ALLOW_UNPINNED_RUNNER_IMAGE") == "1",
        help="accept a runner image without @sha256 (development only)",
    )
    parser.add_argument(
        "--ledger",
        default=env("ORCHESTRATOR_LEDGER", ""),
        help="ledger URL: sqlite:///path.db or postgresql://... ($ORCHESTRATOR_LEDGER)",
    )
    parser.add_argument(
        "--namespace",
        action="append",
        default=[n for n in env("ORCHESTRATOR_WATCH_NAMESPACES", "").split(",") if n],
        help="watch only this namespace (repeatable; default: all) "
        "($ORCHESTRATOR_WATCH_NAMESPACES, comma-separated)",
    )
    parser.add_argument(
        "--operator-namespace",
        default=env("ORCHESTRATOR_NAMESPACE", "continue-orchestrator"),
        help="namespace of the operator and gateway ($ORCHESTRATOR_NAMESPACE)",
    )
    parser.add_argument(
        "--gateway-port", type=int, default=int(env("ORCHESTRATOR_GATEWAY_PORT", "8080"))
    )
    parser.add_argument("--gateway-url", default=env("ORCHESTRATOR_GATEWAY_URL", ""))
    parser.add_argument(
        "--gateway-admin-url",
        default=env("ORCHESTRATOR_GATEWAY_ADMIN_URL", ""),
        help="the gateway's admin API, where runs are registered "
        "($ORCHESTRATOR_GATEWAY_ADMIN_URL; without it runs are only kept in memory)",
    )
    parser.add_argument(
        "--gateway-admin-token-file",
        type=pathlib.Path,
        default=env("ORCHESTRATOR_GATEWAY_ADMIN_TOKEN_FILE") or None,
        help="file holding the gateway's admin token ($ORCHESTRATOR_GATEWAY_ADMIN_TOKEN_FILE)",
    )
    parser.add_argument(
        "--runtime-class",
        default=env("ORCHESTRATOR_RUNTIME_CLASS", "gvisor"),
        help="RuntimeClass when a policy names none",
    )
    parser.add_argument(
        "--resync-seconds", type=float, default=float(env("ORCHESTRATOR_RESYNC_SECONDS", "30"))
    )
    parser.add_argument(
        "--timeout-grace-seconds",
        type=float,
        default=float(env("ORCHESTRATOR_TIMEOUT_GRACE_SECONDS", "30")),
    )
    parser.add_argument("--workers", type=int, default=int(env("ORCHESTRATOR_WORKERS", "16")))
    parser.add_argument(
        "--metrics-port",
        type=int,
        default=int(env("ORCHESTRATOR_METRICS_PORT", "0")) or None,
        help="serve Prometheus /metrics on this port",
    )
    parser.add_argument(
        "--peering",
        default=env("ORCHESTRATOR_PEERING", "continue-orchestrator"),
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
    parser.add_argument(
        "--signing-key-dir",
        type=pathlib.Path,
        default=env("ORCHESTRATOR_SIGNING_KEY_DIR") or None,
        help="attest runs in key mode with the mounted Secret in DIR: cosign.key + "
        "cosign.password, or key.pem (+ password) ($ORCHESTRATOR_SIGNING_KEY_DIR)",
    )
    parser.add_argument(
        "--keyless-trust-config",
        type=pathlib.Path,
        default=env("ORCHESTRATOR_KEYLESS_TRUST_CONFIG") or None,
        help="attest runs keyless with this Sigstore ClientTrustConfig JSON file (a mounted "
        "ConfigMap) ($ORCHESTRATOR_KEYLESS_TRUST_CONFIG)",
    )
    parser.add_argument(
        "--sigstore-token",
        type=pathlib.Path,
        default=pathlib.Path(
            env("ORCHESTRATOR_SIGSTORE_TOKEN", "/var/run/secrets/tokens/sigstore/token")
        ),
        help="projected ServiceAccount token (audience sigstore) for keyless signing",
    )
    parser.add_argument(
        "--actor",
        default=env("ORCHESTRATOR_ACTOR", controller.DEFAULT_ACTOR),
        help="who the operator is in the ledger: its ServiceAccount's user name, e.g. "
        "system:serviceaccount:NAMESPACE:NAME ($ORCHESTRATOR_ACTOR; the chart sets it)",
    )
    parser.add_argument(
        "--builder-id",
        default=env("ORCHESTRATOR_BUILDER_ID", "https://orchestrator.continue.dev/operator"),
        help="URI naming this operator instance in attestations ($ORCHESTRATOR_BUILDER_ID)",
    )
    parser.add_argument(
        "--record-root",
        type=pathlib.Path,
        default=env("ORCHESTRATOR_RECORD_ROOT") or None,
        help="the gateway's record store, mounted read-only: attestations then carry the "
        "record digest, diff digest, verify results and models ($ORCHESTRATOR_RECORD_ROOT)",
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
            controller.evidence_from_records(args.record_root)
            if args.record_root is not None
            else None
        ),
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
    try:
        token = args.gateway_admin_token_file.read_text(encoding="utf-8").strip()
    except OSError as error:
        raise errors.GatewayError(
            f"cannot read the gateway admin token: {error.strerror}",
            where=f"{where} {args.gateway_admin_token_file}",
            fix="mount the gateway admin token Secret there",
        ) from None
    return gateway.BlockingClient(args.gateway_admin_url, token)
