"""The ``orchestrator`` command.

Each command group lives in its own private module exposing ``register(subparsers)``,
named in ``COMMANDS``; the handler it sets returns the process exit code. Errors from
the project (``errors.OrchestratorError``) are printed as one clear line and exit 1;
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence

from continue_orchestrator import __version__, errors

# Command name -> the private module that registers it, in `orchestrator --help` order.
# Modules are imported only for the command being run: some pull in kopf, kubernetes
# and sigstore, which would otherwise slow every invocation by seconds.
COMMANDS: dict[str, str] = {
    "validate": "_validate",
    "crds": "_crds",
    "policy": "_policy",
    "verify": "_verify",
    "attestation": "_attestation",
    "ledger": "_ledger",
    "run": "_run",
    "replay": "_replay",
    "approve": "_approve",
    "deny": "_approve",
    "approvals": "_approve",
    "scripted-model": "_scripted_model",
    "gateway": "_gateway",
    "operator": "_operator",
    "runner": "_runner",
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser for ``command`` alone, or for every command when it is None."""
    parser = argparse.ArgumentParser(
        prog="orchestrator",
        description="Run Continue agents under policy, with records, a ledger and attestations.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    modules = [COMMANDS[command]] if command in COMMANDS else list(dict.fromkeys(COMMANDS.values()))
    for module in modules:
        importlib.import_module(f"{__name__}.{module}").register(subparsers)
    return parser


def _command_of(argv: Sequence[str]) -> str | None:
    for word in argv:
        if not word.startswith("-"):
            return word
    return None


def main(argv: Sequence[str] | None = None) -> int:
    words = list(sys.argv[1:] if argv is None else argv)
    args = build_parser(_command_of(words)).parse_args(words)
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
