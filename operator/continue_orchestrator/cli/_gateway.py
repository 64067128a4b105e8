"""``orchestrator gateway``: run the gateway on its own, as its cluster Deployment does.

Runs arrive over the admin API (``POST /admin/runs``, from the operator's
``gateway.BlockingClient``). On SIGTERM or SIGINT the gateway stops accepting
connections, lets calls in flight finish for up to ``--grace-seconds``, writes every
pending record, seals each live run's record as it stands, and exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys

from continue_orchestrator import errors, gateway, ledger
from continue_orchestrator.cli import _flags
from continue_orchestrator.gateway import _metrics

log = logging.getLogger("continue_orchestrator.gateway")


def register(subparsers: _flags.Subparsers) -> None:
    parser = _flags.command(
        subparsers,
        "gateway",
        """
        run the model gateway standalone (runs are registered over its admin API)

        Serve the policy-gated, recorded model endpoint for sandboxed agents. Every flag
        can also come from the environment variable named in its help.
        """,
    )
    _flags.add(
        parser,
        "--listen",
        env="ORCHESTRATOR_GATEWAY_LISTEN",
        default="0.0.0.0:8080",
        help="HOST:PORT for agents",
    )
    _flags.add(
        parser,
        "--admin-listen",
        env="ORCHESTRATOR_GATEWAY_ADMIN_LISTEN",
        default="",
        help="HOST:PORT for the admin API alone, so sandboxes cannot even reach it "
        "(default: on --listen)",
    )
    _flags.add(
        parser,
        "--record-root",
        env="ORCHESTRATOR_RECORD_ROOT",
        default="",
        help="record store directory",
    )
    _flags.add(
        parser,
        "--ledger",
        env="ORCHESTRATOR_LEDGER",
        default="",
        help="ledger URL: sqlite:///path.db or postgresql://...",
    )
    _flags.add(
        parser,
        "--admin-token-file",
        env="ORCHESTRATOR_ADMIN_TOKEN_FILE",
        default="",
        help="file holding the admin token (or the token itself in $ORCHESTRATOR_ADMIN_TOKEN)",
    )
    _flags.add(
        parser,
        "--metrics-port",
        env="ORCHESTRATOR_METRICS_PORT",
        type=int,
        help="serve Prometheus /metrics on this port",
    )
    _flags.add(
        parser,
        "--grace-seconds",
        env="ORCHESTRATOR_GATEWAY_GRACE_SECONDS",
        type=float,
        default=25.0,
        help="on SIGTERM, how long calls in flight may take to finish (keep it below the "
        "pod's terminationGracePeriodSeconds)",
    )
    _flags.add(
        parser,
        "--approvals",
        env="ORCHESTRATOR_GATEWAY_APPROVALS",
        default="local",
        choices=("local", "kubernetes"),
        help="where held calls wait for a person: 'kubernetes' holds them in the AgentRun's "
        "status.pendingApprovals and takes RunApprovals (in a cluster); 'local' takes "
        "decisions on the admin API",
    )
    _flags.add(
        parser,
        "--github-app-id",
        env="ORCHESTRATOR_GITHUB_APP_ID",
        default="",
        help="a GitHub App whose installation tokens fetch a run's GitHub repository when "
        "its AgentRun names no credentialsSecretRef (needs --github-app-key-file)",
    )
    _flags.add(
        parser,
        "--github-app-key-file",
        env="ORCHESTRATOR_GITHUB_APP_KEY_FILE",
        default="",
        help="the GitHub App's private key (the .pem GitHub generated)",
    )
    _flags.add(
        parser,
        "--github-app-installation-id",
        env="ORCHESTRATOR_GITHUB_APP_INSTALLATION_ID",
        type=int,
        help="the App's installation (default: looked up for each repository)",
    )
    _flags.add(
        parser,
        "--github-api-url",
        env="ORCHESTRATOR_GITHUB_API_URL",
        default="",
        help="the App's GitHub: https://HOST/api/v3 for GitHub Enterprise Server "
        "(default: https://api.github.com, for github.com)",
    )
    parser.add_argument("--verbose", action="store_true")
    parser.set_defaults(handler=run)


def _address(text: str, flag: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise errors.GatewayError(
            f"{text!r} is not HOST:PORT",
            where=f"orchestrator gateway {flag}",
            fix="e.g. 0.0.0.0:8080",
        )
    return host.strip("[]"), int(port)


def _admin_token(path: str) -> str:
    where = f"orchestrator gateway --admin-token-file {path}" if path else "orchestrator gateway"
    token = _flags.admin_token(path, where=where, fix="mount the admin token Secret there")
    if len(token) < 32:
        raise errors.GatewayError(
            "the admin token is missing or shorter than 32 characters",
            where=where,
            fix="pass --admin-token-file with e.g. `openssl rand -hex 32` in it",
        )
    return token


def _app_tokens(args: argparse.Namespace) -> gateway.AppTokens | None:
    """The GitHub App the flags name, or None; refuses a half-given App."""
    where = "orchestrator gateway --github-app-id"
    if not args.github_app_id:
        given = [
            flag
            for flag, value in (
                ("--github-app-key-file", args.github_app_key_file),
                ("--github-app-installation-id", args.github_app_installation_id),
                ("--github-api-url", args.github_api_url),
            )
            if value not in (None, "")
        ]
        if given:
            raise errors.GatewayError(
                f"{', '.join(given)} given without a GitHub App",
                where=where,
                fix="pass --github-app-id too, or leave the App's other flags out",
            )
        return None
    if not args.github_app_key_file:
        raise errors.GatewayError(
            "a GitHub App without its private key",
            where=where,
            fix="pass --github-app-key-file with the App's .pem",
        )
    key = _flags.read_token(
        args.github_app_key_file,
        what="the GitHub App's private key",
        where=f"orchestrator gateway --github-app-key-file {args.github_app_key_file}",
        fix="mount the App's private key Secret there",
    )
    app_id = int(args.github_app_id) if args.github_app_id.isdigit() else args.github_app_id
    return gateway.AppTokens(
        app_id,
        key,
        installation_id=args.github_app_installation_id,
        api_url=args.github_api_url or gateway.GITHUB_API,
    )


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    listen = _address(args.listen, "--listen")
    admin = _address(args.admin_listen, "--admin-listen") if args.admin_listen else None
    if not args.record_root:
        raise errors.GatewayError(
            "no record store", where="orchestrator gateway", fix="pass --record-root DIR"
        )
    if not args.ledger:
        raise errors.GatewayError(
            "no ledger: decisions must be committed somewhere before an agent acts on them",
            where="orchestrator gateway",
            fix="pass --ledger sqlite:///path.db or postgresql://...",
        )
    token = _admin_token(args.admin_token_file)
    app_tokens = _app_tokens(args)
    book = ledger.open(args.ledger)
    try:
        return asyncio.run(_serve(args, listen, admin, token, book, app_tokens))
    finally:
        book.close()


async def _serve(
    args: argparse.Namespace,
    listen: tuple[str, int],
    admin: tuple[str, int] | None,
    token: str,
    book: ledger.Ledger,
    app_tokens: gateway.AppTokens | None,
) -> int:
    server = gateway.Gateway(
        record_root=args.record_root,
        ledger=book,
        admin_token=token,
        shutdown_timeout=args.grace_seconds,
        app_tokens=app_tokens,
    )
    if args.approvals == "kubernetes":
        # Imported here: only the cluster flavour needs the Kubernetes client.
        from continue_orchestrator import controller

        controller.KubeApprovalBroker.for_gateway(controller.Kube.from_environment(), server)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for number in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(number, stop.set)
    await server.start(*listen, admin=admin)
    if args.metrics_port:
        _metrics.serve(args.metrics_port)
    print(f"gateway serving agents at {server.base_url}, admin at {server.admin_url}", flush=True)
    log.info("held calls wait for approvals: %s", args.approvals)
    if app_tokens is not None:
        log.info(
            "GitHub App %s fetches runs' repositories on %s that come without a token",
            app_tokens.app_id,
            app_tokens.web_root,
        )
    await stop.wait()
    log.info("stopping: finishing calls in flight (up to %gs)", args.grace_seconds)
    sealed = await server.stop()
    for uid, digest in sorted(sealed.items()):
        log.info("sealed the record of live run %s as %s", uid, digest)
    print(f"gateway stopped; sealed {len(sealed)} live run record(s)", file=sys.stderr, flush=True)
    return 0
