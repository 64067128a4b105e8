"""The runner's command line, shared by ``python -m continue_orchestrator.runner`` and
``orchestrator runner``.

The pod and local mode run the whole run in one process: clone (through the gateway,
with the run token), agent, verify. ``--prepare-only`` clones and exits, and
``--workspace-ready`` runs on a workspace cloned so, for a pod that splits the two.
``--verify-only --patch FILE`` is publication's fresh verification: clone, apply the
run's patch, run the verify commands; no agent, no model.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import sys
from collections.abc import Mapping, Sequence

from continue_orchestrator import errors
from continue_orchestrator.runner import _bundle, _outcome, _run, _verify

USAGE_ERROR = 2
"""The exit code of a command line that makes no sense (argparse's own)."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--bundle",
        type=pathlib.Path,
        metavar="FILE",
        help=f"the run bundle JSON (default: ${_bundle.BUNDLE_FILE_ENV} or ${_bundle.BUNDLE_ENV})",
    )
    phase = parser.add_mutually_exclusive_group()
    phase.add_argument(
        "--prepare-only",
        action="store_true",
        help="clone the repository at its pinned commit and exit (the init container)",
    )
    phase.add_argument(
        "--workspace-ready",
        action="store_true",
        help="the workspace was prepared by --prepare-only; do not clone",
    )
    phase.add_argument(
        "--verify-only",
        action="store_true",
        help="clone, apply --patch and run the verify commands; never start the agent",
    )
    parser.add_argument(
        "--patch",
        type=pathlib.Path,
        metavar="FILE",
        help="with --verify-only: the run's patch (its outcome's diff, whole), to apply",
    )
    parser.add_argument(
        "--no-report", action="store_true", help="do not POST the outcome to the gateway"
    )
    parser.add_argument(
        "--outcome", type=pathlib.Path, metavar="FILE", help="also write the outcome JSON here"
    )


def prepare_workspace(bundle: _bundle.RunBundle, environ: Mapping[str, str] = os.environ) -> str:
    """Clone the bundle's repository into its workspace; return the pinned commit."""
    token = _bundle.run_token(bundle, environ) if bundle.git_url is not None else ""
    return _run.clone(bundle, token, log=lambda line: None)


def execute(args: argparse.Namespace) -> int:
    if args.verify_only != (args.patch is not None):
        problem = (
            "--verify-only needs --patch FILE (the run's patch to verify)"
            if args.verify_only
            else "--patch is read only with --verify-only"
        )
        print(f"runner: {problem}", file=sys.stderr)
        return USAGE_ERROR
    try:
        bundle = _bundle.load_bundle(args.bundle)
    except errors.OrchestratorError as error:
        print(f"runner: {error.message}", file=sys.stderr)
        return int(_outcome.ExitCode.CONFIG_ERROR)
    if args.prepare_only:
        try:
            commit = prepare_workspace(bundle)
        except errors.OrchestratorError as error:
            print(f"runner: {error.message}", file=sys.stderr)
            return int(_outcome.ExitCode.WORKSPACE_ERROR)
        print(f"runner: workspace ready at {commit}", file=sys.stderr)
        return 0
    if args.verify_only:
        outcome = _verify.verify_only(bundle, args.patch, deliver=not args.no_report)
    else:
        outcome = _run.run(bundle, deliver=not args.no_report, prepare=not args.workspace_ready)
    if args.outcome:
        args.outcome.write_text(outcome.model_dump_json(by_alias=True, indent=2), encoding="utf-8")
    return outcome.exit_code


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="continue-orchestrator-runner",
        description="Run one AgentRun inside its sandbox and report the outcome.",
    )
    add_arguments(parser)
    return execute(parser.parse_args(argv))
