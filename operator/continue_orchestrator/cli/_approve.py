"""``orchestrator approve|deny RUN CALL`` and ``orchestrator approvals RUN`` (local mode).

A person decides a held tool call through the gateway's admin API; the decision names
them (``--by``, default the login name), and the gateway records it in the ledger. In a
cluster, decisions are RunApproval objects instead, so the API server vouches for the
name.
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

from continue_orchestrator import errors


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    for name, verb in (("approve", "approve"), ("deny", "deny")):
        parser = subparsers.add_parser(
            name,
            help=f"{verb} a tool call held for approval (local gateway)",
            description=f"{verb.capitalize()} the held tool call CALL of run RUN.",
        )
        parser.add_argument("run", metavar="RUN", help="the run's uid")
        parser.add_argument("call", metavar="CALL", help="the tool call id (see `approvals`)")
        parser.add_argument("--by", default=None, help="who decides (default: login name)")
        parser.add_argument("--reason", default="", help="why, recorded with the decision")
        _connection(parser)
        parser.set_defaults(handler=_decide, decision=verb)
    parser = subparsers.add_parser(
        "approvals", help="list tool calls waiting for approval in a run (local gateway)"
    )
    parser.add_argument("run", metavar="RUN")
    _connection(parser)
    parser.set_defaults(handler=_list)


def _connection(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--gateway",
        default=os.environ.get("ORCHESTRATOR_GATEWAY", "http://127.0.0.1:8765"),
        help="gateway URL (env ORCHESTRATOR_GATEWAY)",
    )
    parser.add_argument(
        "--admin-token-file",
        type=pathlib.Path,
        default=None,
        help="file holding the gateway's admin token (default: env ORCHESTRATOR_ADMIN_TOKEN)",
    )


def _token(args: argparse.Namespace) -> str:
    if args.admin_token_file is not None:
        try:
            return str(args.admin_token_file.read_text(encoding="utf-8").strip())
        except OSError as error:
            raise errors.GatewayError(
                f"cannot read the admin token: {error.strerror}",
                where=str(args.admin_token_file),
                fix="pass the file the gateway was started with",
            ) from error
    token = os.environ.get("ORCHESTRATOR_ADMIN_TOKEN", "")
    if not token:
        raise errors.GatewayError(
            "no admin token",
            where="orchestrator " + args.command,
            fix="pass --admin-token-file or set ORCHESTRATOR_ADMIN_TOKEN",
        )
    return token


def _call(args: argparse.Namespace, path: str, body: dict[str, Any] | None = None) -> Any:
    url = args.gateway.rstrip("/") + path
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
    answer = _call(args, f"/admin/runs/{_quote(args.run)}/approvals")
    for approval in answer["approvals"]:
        arguments = json.dumps(approval["arguments"], sort_keys=True)
        print(f"{approval['id']}\t{approval['tool']}\t{arguments}\t{approval['reason']}")
    return 0
