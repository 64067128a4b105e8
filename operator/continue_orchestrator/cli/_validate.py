"""``orchestrator validate``: check manifests offline before ``kubectl apply``.

A policy library keeps each policy's test cases beside it (``NAME.cases.yaml`` next to
``NAME.yaml``), so ``orchestrator validate policies/*.yaml`` checks a cases file too: its
shape, and every case against the policy beside it.
"""

from __future__ import annotations

import argparse
import pathlib
import sys

from continue_orchestrator import api, errors, policy
from continue_orchestrator.cli import _flags, _policy

CASES_SUFFIXES = (".cases.yaml", ".cases.yml")


def register(subparsers: _flags.Subparsers) -> None:
    parser = _flags.command(
        subparsers,
        "validate",
        """
        validate AgentRun / RunPolicy / ClusterRunPolicy manifests offline

        Validate manifests against the same models the CRDs come from. Every problem is
        reported with its file, document and field path; exit 1 if any. A policy's test
        cases (NAME.cases.yaml beside NAME.yaml) are run against it.
        """,
    )
    parser.add_argument("files", nargs="+", type=pathlib.Path, metavar="FILE")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    failed = 0
    checked = 0
    for path in args.files:
        if path.name.endswith(CASES_SUFFIXES):
            problems = _validate_cases(path)
            failed += bool(problems)
            for problem in problems:
                print(f"error: {problem}", file=sys.stderr)
            continue
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


def _validate_cases(path: pathlib.Path) -> list[str]:
    """The problems of a cases file: its shape, then each case against its policy."""
    stem = path.name.removesuffix(".yaml").removesuffix(".yml").removesuffix(".cases")
    policy_file = next(
        (p for p in (path.with_name(f"{stem}.yaml"), path.with_name(f"{stem}.yml")) if p.exists()),
        None,
    )
    try:
        cases = policy.load_cases(path)
        if policy_file is None:
            return [
                f"{path}: no policy beside it to test the cases against (expected "
                f"{path.with_name(stem + '.yaml')}); run 'orchestrator policy test POLICY.yaml "
                f"{path}'"
            ]
        policy_set = policy.load_policies(policy_file)
    except errors.PolicyError as error:
        return [error.message]
    problems = []
    for case in cases:
        ok, decision = _policy.check_case(policy_set, case)
        if not ok:
            expected = case.expect.value + (f" ({case.expect_rule})" if case.expect_rule else "")
            problems.append(
                f"{path}: case {case.name!r}: expected {expected}, the policy in "
                f"{policy_file} decides {decision.effect.value} "
                f"({decision.rule or 'no rule'}): {decision.reason}"
            )
    if not problems:
        print(f"{path}: {len(cases)} test case(s) pass against {policy_file}")
    return problems
