"""``orchestrator runner``: the runner entrypoint, for images that only ship this CLI."""

from __future__ import annotations

from continue_orchestrator.cli import _flags
from continue_orchestrator.runner import _main


def register(subparsers: _flags.Subparsers) -> None:
    parser = _flags.command(
        subparsers,
        "runner",
        """
        run one AgentRun inside its sandbox (the runner image's entrypoint)

        Clone the repository at its pinned commit, route the agent's models through the
        gateway, run the Continue CLI and the verify commands, and report the outcome.
        Exit codes: 0 succeeded, 20 agent failed, 21 verify failed, 22 policy stopped,
        23 config error, 24 timed out, 25 workspace error, 26 report failed.
        """,
    )
    _main.add_arguments(parser)
    parser.set_defaults(handler=_main.execute)
