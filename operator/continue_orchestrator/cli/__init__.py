"""The ``orchestrator`` command.

Each command group lives in its own private module exposing ``register(subparsers)``;
the handler it sets returns the process exit code. Errors from the project
(``errors.OrchestratorError``) are printed as one clear line and exit 1; anything else
is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from continue_orchestrator import __version__, errors
from continue_orchestrator.cli import (
    _approve,
    _attestation,
    _crds,
    _gateway,
    _ledger,
    _operator,
    _policy,
    _replay,
    _run,
    _runner,
    _scripted_model,
    _validate,
    _verify,
)

Register = Callable[["argparse._SubParsersAction[argparse.ArgumentParser]"], None]

# One line per command group; order is the order of `orchestrator --help`.
COMMAND_GROUPS: tuple[Register, ...] = (
    _validate.register,
    _crds.register,
    _policy.register,
    _verify.register,
    _attestation.register,
    _ledger.register,
    _run.register,
    _replay.register,
    _approve.register,
    _scripted_model.register,
    _gateway.register,
    _operator.register,
    _runner.register,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="orchestrator",
        description="Run Continue agents under policy, with records, a ledger and attestations.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for register in COMMAND_GROUPS:
        register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        return handler(args)
    except errors.OrchestratorError as error:
        print(f"orchestrator {args.command}: {error.message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
