"""``orchestrator scripted-model SCRIPT.yaml --port N``: serve a scripted model.

For demos and benchmarks: a deterministic OpenAI-compatible model on ``/v1``.
"""

from __future__ import annotations

import argparse
import asyncio
import pathlib

from continue_orchestrator import local
from continue_orchestrator.cli import _flags


def register(subparsers: _flags.Subparsers) -> None:
    parser = _flags.command(
        subparsers,
        "scripted-model",
        """
        serve a deterministic OpenAI-compatible model that plays a YAML script

        Serve SCRIPT's assistant turns on /v1/chat/completions until stopped.
        """,
    )
    parser.add_argument("script", type=pathlib.Path, metavar="SCRIPT.yaml")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8766)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    model = local.ScriptedModel(local.Script.from_file(args.script))

    async def serve() -> None:
        base = await model.start(args.host, args.port)
        print(f"scripted model serving {args.script} at {base}", flush=True)
        try:
            await asyncio.Event().wait()
        finally:
            await model.stop()

    asyncio.run(serve())
    return 0
