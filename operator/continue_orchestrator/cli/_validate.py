"""``orchestrator validate``: check manifests offline before ``kubectl apply``."""

from __future__ import annotations

import argparse
import pathlib
import sys

from continue_orchestrator import api, errors, policy


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "validate",
        help="validate AgentRun / RunPolicy / ClusterRunPolicy manifests offline",
        description="Validate manifests against the same models the CRDs come from. "
        "Every problem is reported with its file, document and field path; exit 1 if any.",
    )
    parser.add_argument("files", nargs="+", type=pathlib.Path, metavar="FILE")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    failed = 0
    checked = 0
    for path in args.files:
        try:
            for resource in api.load_file(path):
                if isinstance(resource, api.RunPolicy | api.ClusterRunPolicy):
                    # Compiling catches what the schema cannot: CEL, globs, regexes.
                    policy.compile([resource])
                checked += 1
                print(f"{path}: {resource.kind}/{resource.metadata.name}: valid")
        except errors.ManifestError as error:
            failed += 1
            print(f"error: {error.message}", file=sys.stderr)
        except errors.PolicyError as error:
            failed += 1
            print(f"error: {path}: {error.message}", file=sys.stderr)
    if failed:
        print(f"{failed} file(s) invalid, {checked} manifest(s) valid", file=sys.stderr)
        return 1
    return 0
