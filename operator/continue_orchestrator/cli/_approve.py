"""``orchestrator approve|deny RUN CALL`` and ``orchestrator approvals RUN``.

In a cluster (the default, or with ``-n``/``--kubeconfig``/``--context``) RUN is the
AgentRun's name: the command asks the API server who you are (SelfSubjectReview) and
creates a RunApproval with that identity in ``spec.decidedBy``; admission rejects any
other identity, and the gateway counts it only if you are an approver of the run's
policy. Locally (``--gateway``, an admin token, or ``--by``) RUN is the run's uid and the
decision goes through the gateway's admin API, naming you with ``--by``.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import pathlib
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from continue_orchestrator import api, controller, errors
from continue_orchestrator.cli import _flags, _kubeconfig


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    for name, verb in (("approve", "approve"), ("deny", "deny")):
        parser = subparsers.add_parser(
            name,
            help=f"{verb} a tool call held for approval",
            description=f"{verb.capitalize()} the held tool call CALL of run RUN. In a cluster "
            "this creates a RunApproval in your own name; locally it calls the gateway.",
        )
        parser.add_argument(
            "run", metavar="RUN", help="the AgentRun's name (cluster) or the run's uid (local)"
        )
        parser.add_argument("call", metavar="CALL", help="the tool call id (see `approvals`)")
        parser.add_argument(
            "--by", default=None, help="local only: who decides (default: login name)"
        )
        parser.add_argument("--reason", default="", help="why, recorded with the decision")
        _connection(parser)
        parser.set_defaults(handler=_decide, decision=verb)
    parser = subparsers.add_parser(
        "approvals", help="list tool calls waiting for approval in a run"
    )
    parser.add_argument("run", metavar="RUN")
    _connection(parser)
    parser.set_defaults(handler=_list, by=None)


def _connection(parser: argparse.ArgumentParser) -> None:
    _kubeconfig.add_arguments(parser)
    parser.add_argument(
        "--gateway",
        default=None,
        help="local: gateway URL (env ORCHESTRATOR_GATEWAY, default http://127.0.0.1:8765)",
    )
    parser.add_argument(
        "--admin-token-file",
        type=pathlib.Path,
        default=None,
        help="local: file holding the gateway's admin token "
        "(default: env ORCHESTRATOR_ADMIN_TOKEN)",
    )


def _local(args: argparse.Namespace) -> bool:
    """Which flavour: cluster flags win; then any sign of a local gateway; else cluster."""
    local_flags = bool(args.gateway or args.admin_token_file or args.by)
    if _kubeconfig.requested(args):
        if local_flags:
            raise errors.OrchestratorError(
                "cluster flags (-n/--kubeconfig/--context) cannot be combined with "
                "--gateway/--admin-token-file/--by",
                where="orchestrator " + args.command,
                fix="in a cluster the API server says who you are; drop the local flags",
            )
        return False
    return local_flags or bool(
        os.environ.get("ORCHESTRATOR_GATEWAY") or os.environ.get(_flags.ADMIN_TOKEN_ENV)
    )


def _token(args: argparse.Namespace) -> str:
    token = _flags.admin_token(
        args.admin_token_file,
        where=str(args.admin_token_file),
        fix="pass the file the gateway was started with",
    )
    if not token:
        raise errors.GatewayError(
            "no admin token",
            where="orchestrator " + args.command,
            fix="pass --admin-token-file or set ORCHESTRATOR_ADMIN_TOKEN",
        )
    return token


def _call(args: argparse.Namespace, path: str, body: dict[str, Any] | None = None) -> Any:
    gateway = args.gateway or os.environ.get("ORCHESTRATOR_GATEWAY", "http://127.0.0.1:8765")
    url = gateway.rstrip("/") + path
    request = urllib.request.Request(
        url,
        data=None if body is None else json.dumps(body).encode(),
        method="GET" if body is None else "POST",
        headers={"Authorization": f"Bearer {_token(args)}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as error:
        try:
            message = json.loads(error.read())["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = f"HTTP {error.code}"
        raise errors.GatewayError(message, where=url, fix="check the run and call ids") from None
    except (urllib.error.URLError, OSError) as error:
        raise errors.GatewayError(
            f"cannot reach the gateway: {getattr(error, 'reason', error)}",
            where=url,
            fix="check --gateway (or ORCHESTRATOR_GATEWAY)",
        ) from None


def _quote(value: str) -> str:
    return urllib.parse.quote(value, safe="")


def _decide(args: argparse.Namespace) -> int:
    if not _local(args):
        return _decide_in_cluster(args)
    by = args.by or getpass.getuser()
    answer = _call(
        args,
        f"/admin/runs/{_quote(args.run)}/approvals/{_quote(args.call)}",
        {"decision": args.decision, "by": by, "reason": args.reason},
    )
    approval = answer["approval"]
    verb = "approved" if args.decision == "approve" else "denied"
    print(f"{verb} {approval['tool']} call {approval['id']} of run {args.run} (by {by})")
    return 0


def _list(args: argparse.Namespace) -> int:
    if not _local(args):
        return _list_in_cluster(args)
    answer = _call(args, f"/admin/runs/{_quote(args.run)}/approvals")
    for approval in answer["approvals"]:
        arguments = json.dumps(approval["arguments"], sort_keys=True)
        print(f"{approval['id']}\t{approval['tool']}\t{arguments}\t{approval['reason']}")
    return 0


# -- cluster ------------------------------------------------------------------------------


def _run(kube: controller.Kube, namespace: str, name: str) -> dict[str, Any]:
    path = f"/apis/{api.GROUP}/{api.VERSION}/namespaces/{namespace}/agentruns/{name}"
    with _kubeconfig.api_errors(f"reading AgentRun {namespace}/{name}"):
        run = kube.get(path)
    if run is None:
        raise errors.OrchestratorError(
            "no such AgentRun",
            where=f"AgentRun {namespace}/{name}",
            fix="check the name and -n NAMESPACE (kubectl get agentruns)",
        )
    return run


def _decide_in_cluster(args: argparse.Namespace) -> int:
    kube, namespace = _kubeconfig.connect(args)
    where = f"AgentRun {namespace}/{args.run}, tool call {args.call}"
    run = _run(kube, namespace, args.run)
    status = run.get("status") or {}
    pending = {str(p.get("id")): p for p in status.get("pendingApprovals") or []}
    held = pending.get(args.call)
    if held is None:
        listed = ", ".join(sorted(pending)) or "none"
        raise errors.OrchestratorError(
            f"no approval is pending for this tool call (pending: {listed}; "
            f"phase {status.get('phase', 'Pending')})",
            where=where,
            fix=f"list them with `orchestrator approvals {args.run} -n {namespace}`; "
            "a call nobody decides in time is denied",
        )
    username, groups = _kubeconfig.whoami(kube)
    decision = api.Decision.APPROVE if args.decision == "approve" else api.Decision.DENY
    body = {
        "apiVersion": api.API_VERSION,
        "kind": "RunApproval",
        "metadata": {
            "generateName": f"{args.run[:50].rstrip('-.')}-",
            "namespace": namespace,
            "labels": {controller.RUN_UID_LABEL: str(run["metadata"]["uid"])},
        },
        "spec": {
            "runName": args.run,
            "callId": args.call,
            "decision": decision.value,
            "reason": args.reason,
            "decidedBy": {"username": username, "groups": groups},
        },
    }
    with _kubeconfig.api_errors(f"creating the RunApproval for {where}"):
        created = kube.create(
            f"/apis/{api.GROUP}/{api.VERSION}/namespaces/{namespace}/runapprovals", body
        )
    verb = "approved" if decision is api.Decision.APPROVE else "denied"
    print(
        f"{verb} {held.get('tool') or 'tool'} call {args.call} of AgentRun "
        f"{namespace}/{args.run} as {username} (groups: {', '.join(groups) or 'none'}): "
        f"RunApproval {namespace}/{created['metadata']['name']}"
    )
    print("the gateway counts it only if you are an approver of the run's policy")
    return 0


def _list_in_cluster(args: argparse.Namespace) -> int:
    kube, namespace = _kubeconfig.connect(args)
    status = _run(kube, namespace, args.run).get("status") or {}
    pending = status.get("pendingApprovals") or []
    if not pending:
        print(
            f"no tool calls wait for approval in AgentRun {namespace}/{args.run} "
            f"(phase {status.get('phase', 'Pending')})"
        )
        return 0
    for held in pending:
        print(
            f"{held.get('id')}\t{held.get('tool') or held.get('action')}\t"
            f"until {held.get('expiresAt')}\t{held.get('summary', '')}"
        )
    return 0
