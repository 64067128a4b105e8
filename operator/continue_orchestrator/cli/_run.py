"""``orchestrator run AGENTRUN.yaml``: one AgentRun end to end on this machine, no cluster."""

from __future__ import annotations

import argparse
import pathlib
import sys

from continue_orchestrator import api, errors, local
from continue_orchestrator.cli import _flags


def register(subparsers: _flags.Subparsers) -> None:
    parser = _flags.command(
        subparsers,
        "run",
        """
        run one AgentRun end to end on this machine (gVisor, gateway, ledger,
        attestation)

        Run an AgentRun the way the operator does, without Kubernetes: the gateway on
        the sandbox's host end, the runner in gVisor inside a network namespace whose
        only route is the gateway, a SQLite ledger, the record store, and an attestation
        signed with a development key. When the AgentRun sets
        spec.output.pullRequest.enabled and the run succeeded, its work is published as a
        pull request (docs/publishing.md). Exit 0 when the run succeeded and its
        publication, if it asked for one, opened the pull request.
        """,
    )
    parser.add_argument("manifest", type=pathlib.Path, metavar="AGENTRUN.yaml")
    parser.add_argument(
        "--policy",
        type=pathlib.Path,
        action="append",
        default=[],
        metavar="FILE",
        help="a file with the RunPolicy (and ClusterRunPolicies, ConfigMaps); repeatable. "
        "Default: every *.yaml beside the manifest",
    )
    parser.add_argument(
        "--config-map",
        action="append",
        default=[],
        metavar="NAME=FILE",
        help="ConfigMap NAME holding FILE under its base name (as kubectl create configmap "
        "--from-file); repeatable",
    )
    parser.add_argument(
        "--secret",
        action="append",
        default=[],
        metavar="NAME=env:VAR",
        help="value of a Continue secret, from an environment variable (NAME=env:VAR) or a "
        "file (NAME=file:PATH); repeatable",
    )
    parser.add_argument(
        "--repository-credential",
        metavar="env:VAR",
        help="the forge token spec.repository.credentialsSecretRef names, from an environment "
        "variable (env:VAR) or a file (file:PATH); the gateway fetches with it, the sandbox "
        "never sees it, and publication pushes and opens the pull request with it",
    )
    parser.add_argument(
        "--state-dir",
        type=pathlib.Path,
        default=None,
        metavar="DIR",
        help="ledger, records, keys and attestations (default: ./.orchestrator)",
    )
    parser.add_argument(
        "--sandbox",
        choices=("gvisor", "none"),
        default="gvisor",
        help="gvisor (default), or none: NO ISOLATION, the agent runs as you on this machine",
    )
    parser.add_argument(
        "--model-script",
        type=pathlib.Path,
        metavar="SCRIPT.yaml",
        help="answer with the scripted model instead of the config's real providers",
    )
    decide = parser.add_mutually_exclusive_group()
    decide.add_argument(
        "--approve-all", action="store_true", help="approve every held tool call (unattended)"
    )
    decide.add_argument(
        "--deny-all", action="store_true", help="deny every held tool call (unattended)"
    )
    parser.add_argument("--cn", metavar="PATH", help="the Continue CLI (default: the pinned one)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON at the end")
    parser.set_defaults(handler=run)


def _say(line: str) -> None:
    print(line, flush=True)


def run(args: argparse.Namespace) -> int:
    inputs = local.load(
        args.manifest,
        policy_files=args.policy,
        config_maps=args.config_map,
        secrets=args.secret,
        repository_credential=args.repository_credential,
    )
    if args.sandbox == "gvisor":
        try:
            local.runsc_path()
        except errors.SandboxError as error:
            raise errors.SandboxError(
                "gVisor's runsc is not installed, and orchestrator run never falls back to "
                "running without a sandbox",
                where="orchestrator run",
                fix=local.RUNSC_HELP,
            ) from error
    else:
        print(f"\n!!! {local.NONE_WARNING} !!!\n", file=sys.stderr, flush=True)
    options = local.Options(
        state_dir=args.state_dir or local.default_state_dir(),
        sandbox=args.sandbox,
        model_script=args.model_script,
        approvals="approve" if args.approve_all else "deny" if args.deny_all else "ask",
        cn=args.cn,
    )
    baselines = len(inputs.policies) - 1
    _say(
        f"run {inputs.namespace}/{inputs.name}: policy {inputs.run_policy.metadata.name}, "
        f"{baselines} cluster baseline(s), state in {options.state_dir}"
    )
    report = local.run(inputs, options, say=_say)
    print(report.render())
    if args.json:
        print(report.model_dump_json(by_alias=True, indent=2))
    published = report.publication is None or not report.publication.failed
    return 0 if report.phase == api.Phase.SUCCEEDED.value and published else 1
