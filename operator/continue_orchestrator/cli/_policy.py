"""``orchestrator policy``: test a policy against cases, explain a decision, export it,
and decide a ledger's recorded tool calls again under it (``_policy_replay``).

A policy is code; these commands are its test runner and debugger, offline, with the
same engine the gateway runs.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys

from continue_orchestrator import ledger, policy
from continue_orchestrator.cli import _flags, _policy_replay


def register(subparsers: _flags.Subparsers) -> None:
    parser = _flags.command(
        subparsers,
        "policy",
        """
        test, explain, export and replay RunPolicy / ClusterRunPolicy decisions

        Work with policies offline. POLICY.yaml may hold several documents (a
        ClusterRunPolicy and a RunPolicy): all are applied and the stricter effect wins.
        """,
    )
    commands = parser.add_subparsers(dest="policy_command", metavar="COMMAND", required=True)

    test = commands.add_parser(
        "test",
        help="decide every case of CASES.yaml and compare with its expected effect",
        description="Each case is a request or a toolCall and the expected effect "
        "(optionally expectRule). Prints a table; exit 1 if any case fails.",
    )
    test.add_argument("policy_file", type=pathlib.Path, metavar="POLICY.yaml")
    test.add_argument("cases_file", type=pathlib.Path, metavar="CASES.yaml")
    test.add_argument("--workspace", type=pathlib.Path, help="real workspace, to resolve symlinks")
    test.set_defaults(handler=run_test)

    explain = commands.add_parser(
        "explain",
        help="show which rule decided a request and why",
        description="REQUEST.yaml holds 'request: {...}', 'toolCall: {...}' or "
        "'toolResult: {tool, content}' and an optional 'run: {...}'.",
    )
    explain.add_argument("policy_file", type=pathlib.Path, metavar="POLICY.yaml")
    explain.add_argument("request_file", type=pathlib.Path, metavar="REQUEST.yaml")
    explain.add_argument(
        "--workspace", type=pathlib.Path, help="real workspace, to resolve symlinks"
    )
    explain.set_defaults(handler=run_explain)

    permissions = commands.add_parser(
        "permissions",
        help="print the Continue permissions.yaml the runner writes for these policies",
    )
    permissions.add_argument("policy_file", type=pathlib.Path, metavar="POLICY.yaml")
    permissions.set_defaults(handler=run_permissions)

    replay = commands.add_parser(
        "replay",
        help="decide every tool call recorded in a ledger again under POLICY.yaml; "
        "list the calls whose effect would change",
        description="Reads the policy.decision entries the gateway wrote for every tool "
        "call (allowed or not), decides each call again with the run's recorded context "
        "and lists those whose effect changes: tighter (stricter: Deny > RequireApproval "
        "> Allow) or looser. Redacted decisions cannot be decided again and are listed "
        "as redacted. The ledger is verified first; one that fails verification is an "
        "error (exit 1). Exit 0, or 1 with --fail-on-tighten when any call would be "
        "tighter.",
    )
    replay.add_argument("policy_file", type=pathlib.Path, metavar="POLICY.yaml")
    replay.add_argument(
        "--ledger",
        required=True,
        metavar="URL",
        help="sqlite:///path/to/ledger.db or postgresql://user@host/dbname",
    )
    replay.add_argument(
        "--since",
        metavar="TIME|DURATION",
        help="only calls recorded at or after this: an RFC 3339 time with an offset "
        "(2026-12-01T09:00:00Z) or a duration back from now (24h, 7d, 1h30m; units w d h m s)",
    )
    replay.add_argument("--run", metavar="UID", help="only the calls of this run")
    replay.add_argument(
        "--fail-on-tighten",
        action="store_true",
        help="exit 1 if any call would get a stricter effect (an allowed call denied or "
        "held for approval): for CI of a policy repository",
    )
    replay.add_argument(
        "--public-key",
        type=pathlib.Path,
        metavar="PEM",
        help="when verifying, require the ledger's checkpoints to be signed by this key",
    )
    replay.add_argument(
        "--no-verify",
        action="store_true",
        help="skip verifying the ledger first (a large ledger whose verification runs elsewhere)",
    )
    replay.add_argument(
        "--all", action="store_true", help="list unchanged calls too, not only changes"
    )
    replay.add_argument("--json", action="store_true", help="print the result as one JSON object")
    replay.set_defaults(handler=run_replay)


def _table(rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


def check_case(
    policy_set: policy.PolicySet, case: policy.Case, *, workspace: pathlib.Path | None = None
) -> tuple[bool, policy.Decision]:
    """Decide a case; whether the decision is the effect (and rule) it expects."""
    decision = policy.decide_subject(policy_set, case.subject, workspace=workspace)
    ok = decision.effect is case.expect and (
        case.expect_rule is None or decision.rule == case.expect_rule
    )
    return ok, decision


def run_test(args: argparse.Namespace) -> int:
    policy_set = policy.load_policies(args.policy_file)
    cases = policy.load_cases(args.cases_file)
    rows: list[tuple[str, ...]] = [("RESULT", "CASE", "EXPECTED", "GOT", "RULE", "REASON")]
    failed = 0
    for case in cases:
        ok, decision = check_case(policy_set, case, workspace=args.workspace)
        failed += not ok
        expected = case.expect.value + (f" ({case.expect_rule})" if case.expect_rule else "")
        rows.append(
            (
                "ok" if ok else "FAIL",
                case.name,
                expected,
                decision.effect.value,
                decision.rule or "(default)",
                decision.reason,
            )
        )
    print(_table(rows))
    print(f"\n{len(cases) - failed} passed, {failed} failed; policy set {policy_set.digest}")
    return 1 if failed else 0


def run_explain(args: argparse.Namespace) -> int:
    policy_set = policy.load_policies(args.policy_file)
    subject = policy.load_subject(args.request_file)
    decision = policy.decide_subject(policy_set, subject, workspace=args.workspace)
    print(f"effect:  {decision.effect.value}")
    print(f"rule:    {decision.rule or '(none: a default or a safety check decided)'}")
    print(f"policy:  {decision.policy or '(none)'}")
    print(f"reason:  {decision.reason}")
    print(f"request: {decision.request.describe()}")
    print(f"digest:  {decision.policy_digest}")
    if isinstance(subject, policy.ToolCall):
        try:
            # With the policy set, as the decision above: a glob's possible files too.
            requests = policy.requests_for(
                subject.name,
                subject.arguments,
                run=subject.run,
                mcp_server=subject.mcp_server,
                policy_set=policy_set,
            )
        except policy.UnmappableError as error:
            print(f"\nthe tool call cannot be checked: {error}")
            return 0
    elif isinstance(subject, policy.Request):
        requests = [subject]
    else:
        return 0  # a tool result: one spec.toolResults decision, no implied requests
    for index, request in enumerate(requests):
        print(f"\n{request.describe()}")
        implied = isinstance(subject, policy.ToolCall) and index == 0 and len(requests) > 1
        paths, outcomes = policy.outcomes(policy_set, request, workspace=args.workspace)
        if isinstance(paths, str):
            print(f"  refused before any rule: {paths}")
            continue
        for outcome in outcomes:
            if implied and outcome.by_default:
                print(
                    f"  {outcome.policy}: no rule matched; its default speaks through the "
                    "requests below"
                )
                continue
            decided_by = outcome.rule or "default"
            print(
                f"  {outcome.policy}: {outcome.effect.value} by {decided_by} "
                f"({outcome.considered} rule(s) indexed for this request): {outcome.reason}"
            )
    return 0


def run_replay(args: argparse.Namespace) -> int:
    policy_set = policy.load_policies(args.policy_file)
    since = _policy_replay.parse_since(args.since) if args.since else None
    public_key = ledger.load_public_key(args.public_key) if args.public_key else None
    entries, warnings = _policy_replay.read(
        args.ledger, verify=not args.no_verify, public_key=public_key
    )
    replayed = _policy_replay.replay(entries, policy_set, since=since, run_uid=args.run)
    counts = {
        change: sum(r.change == change for r in replayed)
        for change in (
            _policy_replay.UNCHANGED,
            _policy_replay.TIGHTER,
            _policy_replay.LOOSER,
            _policy_replay.REDACTED,
        )
    }
    decided = len(replayed) - counts[_policy_replay.REDACTED]
    runs = len({r.run_uid for r in replayed if r.change != _policy_replay.REDACTED})
    failed = args.fail_on_tighten and counts[_policy_replay.TIGHTER] > 0
    shown = [r for r in replayed if args.all or r.change != _policy_replay.UNCHANGED]
    if args.json:
        document = {
            "policyDigest": policy_set.digest,
            "since": since.isoformat() if since else None,
            "verified": not args.no_verify,
            "replayed": decided,
            "runs": runs,
            **counts,
            "calls": [r.to_json() for r in shown],
        }
        print(json.dumps(document, indent=2, ensure_ascii=False))
    else:
        for warning in warnings:
            print(f"warning: {warning}", file=sys.stderr)
        if shown:
            heads = ("CHANGE", "SEQ", "TIME", "RUN", "TOOL", "ARGUMENTS", "WAS", "NOW", "RULE")
            rows: list[tuple[str, ...]] = [(*heads, "REASON")]
            for r in shown:
                rows.append(
                    (
                        r.change,
                        str(r.sequence),
                        r.time,
                        r.run,
                        r.tool or "-",
                        _policy_replay.arguments_summary(r.arguments) if r.tool else "-",
                        r.was or "-",
                        r.now or "-",
                        r.rule or ("(default)" if r.now else "-"),
                        r.reason,
                    )
                )
            print(_table(rows) + "\n")
        window = f" since {since.isoformat()}" if since else ""
        print(
            f"{decided} tool calls of {runs} runs decided again{window}: "
            f"{counts[_policy_replay.UNCHANGED]} unchanged, "
            f"{counts[_policy_replay.TIGHTER]} tighter, {counts[_policy_replay.LOOSER]} looser; "
            f"{counts[_policy_replay.REDACTED]} redacted (not replayable); "
            f"policy set {policy_set.digest}"
            + ("" if not args.no_verify else "; ledger NOT verified (--no-verify)")
        )
    return 1 if failed else 0


def run_permissions(args: argparse.Namespace) -> int:
    print(policy.to_permissions_yaml(policy.load_policies(args.policy_file)), end="")
    return 0
