"""``orchestrator replay RECORD``: re-run a recorded AgentRun and prove it did the same."""

from __future__ import annotations

import argparse
import json
import pathlib
import sys

from continue_orchestrator import errors, local
from continue_orchestrator.cli import _flags


def register(subparsers: _flags.Subparsers) -> None:
    parser = _flags.command(
        subparsers,
        "replay",
        """
        re-run a recorded run with its recorded model answers; report the first
        divergence

        Replay a run recorded by 'orchestrator run': the same pipeline (gateway, policy,
        gVisor sandbox, runner, ledger, attestation) with the recorded model answers in
        place of the live model, tools run for real. Input drift (spec, commit, config,
        policy, runner image or CLI version differs) is reported before anything runs.
        Exit 0 when the replay is identical, 3 when it diverged, 1 on error. See
        docs/replay.md.
        """,
    )
    parser.add_argument(
        "record",
        metavar="RECORD",
        help="a record digest (sha256:...), a run's report.json, a record directory, or a "
        "run uid recorded in the state directory",
    )
    parser.add_argument(
        "manifest",
        nargs="?",
        type=pathlib.Path,
        metavar="AGENTRUN.yaml",
        help="replay with this AgentRun (and --policy files) instead of the recorded inputs",
    )
    parser.add_argument(
        "--policy", type=pathlib.Path, action="append", default=[], metavar="FILE",
        help="with AGENTRUN.yaml: a file with the RunPolicy (and baselines); repeatable",
    )  # fmt: skip
    parser.add_argument(
        "--config-map", action="append", default=[], metavar="NAME=FILE",
        help="with AGENTRUN.yaml: ConfigMap NAME holding FILE under its base name",
    )  # fmt: skip
    parser.add_argument(
        "--secret", action="append", default=[], metavar="NAME=env:VAR",
        help="value of a Continue secret the run uses (NAME=env:VAR or NAME=file:PATH)",
    )  # fmt: skip
    parser.add_argument(
        "--state-dir", type=pathlib.Path, default=None, metavar="DIR",
        help="where the run was recorded (default: ./.orchestrator)",
    )  # fmt: skip
    parser.add_argument(
        "--sandbox", choices=("gvisor", "none"), default="gvisor",
        help="gvisor (default), or none: NO ISOLATION",
    )  # fmt: skip
    decide = parser.add_mutually_exclusive_group()
    decide.add_argument("--approve-all", action="store_true", help="approve every held call")
    decide.add_argument("--deny-all", action="store_true", help="deny every held call")
    parser.add_argument("--cn", metavar="PATH", help="the Continue CLI (default: the pinned one)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON at the end")
    parser.set_defaults(handler=replay)


def replay(args: argparse.Namespace) -> int:
    secrets = dict(local.parse_secret_flag(flag) for flag in args.secret)
    inputs = None
    if args.manifest is not None:
        inputs = local.load(
            args.manifest,
            policy_files=args.policy,
            config_maps=args.config_map,
            secrets=args.secret,
        )
    elif args.policy or args.config_map:
        raise errors.ManifestError(
            "--policy and --config-map need AGENTRUN.yaml",
            where="orchestrator replay",
            fix="pass the AgentRun manifest too, or leave them out to replay the recorded inputs",
        )
    if args.sandbox == "gvisor":
        local.runsc_path()
    else:
        print(f"\n!!! {local.NONE_WARNING} !!!\n", file=sys.stderr, flush=True)
    options = local.Options(
        state_dir=args.state_dir or local.default_state_dir(),
        sandbox=args.sandbox,
        approvals="approve" if args.approve_all else "deny" if args.deny_all else "ask",
        cn=args.cn,
    )
    report = local.replay(
        args.record,
        options,
        inputs=inputs,
        secrets=secrets,
        say=lambda line: print(line, flush=True),
    )
    print(report.render())
    if args.json:
        print(json.dumps(report.to_json(), indent=2, sort_keys=True))
    return 0 if report.identical else 3
