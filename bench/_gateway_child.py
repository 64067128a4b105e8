"""Serve one benchmark run through the gateway in its own process (as deployed).

Usage: python -m bench._gateway_child UPSTREAM_BASE TOKEN RECORD_DIR LEDGER_URL
Prints the run's apiBase on stdout once listening.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Mapping
from typing import Any

from continue_orchestrator import gateway, ledger


class _Allow:
    effect = "Allow"
    rule = "bench.allow"
    reason = "benchmark"
    policy_digest = ""


def _allow(registration: gateway.RunRegistration, tool: str, args: Mapping[str, Any]) -> _Allow:
    return _Allow()


async def main(upstream: str, token: str, records: str, ledger_url: str) -> None:
    opened = ledger.open(ledger_url)
    server = gateway.Gateway(record_root=records, ledger=opened, decide=_allow)
    await server.start()
    api_base = server.register_run(
        gateway.RunRegistration(
            uid="bench-run",
            token=token,
            expires_at=time.time() + 86400,
            policy_set=None,
            models={"scripted": gateway.Upstream(upstream, "sk-bench-upstream")},
            allowed_egress={"127.0.0.1"},
        )
    )
    print(api_base, flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:5]))
