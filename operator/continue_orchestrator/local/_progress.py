"""What a person sees while a local run runs, and the approvals decided for them.

The ledger is the run's account as it happens: each new entry (a decision, an
approval, the runner's report) is told in one line. A call held for approval is
announced with the commands that decide it, or decided at once with
``--approve-all`` / ``--deny-all``.
"""

from __future__ import annotations

import asyncio
import getpass
import json
import pathlib
from typing import Any

from continue_orchestrator import gateway, ledger
from continue_orchestrator.local import _context


class Progress:
    """Tells ``run``'s new ledger entries and pending approvals, each once."""

    def __init__(
        self,
        run: _context.LocalRun,
        server: gateway.Gateway,
        book: ledger.Ledger,
        token_file: pathlib.Path,
    ) -> None:
        self.run = run
        self.server = server
        self.book = book
        self.token_file = token_file
        self._seen = 0
        self._decided: set[str] = set()
        self._announced: set[str] = set()

    async def poll(self) -> None:
        """Say what the ledger gained since last time; decide approvals if told to."""
        uid, options = self.run.uid, self.run.options
        entries = await asyncio.to_thread(
            lambda: list(self.book.entries(run_uid=uid, start=self._seen))
        )
        for entry in entries:
            self._seen = entry.sequence + 1
            self._announce(entry)
        for approval in self.server.pending_approvals(uid):
            if approval.id in self._decided:
                continue
            if options.approvals == "ask":
                if approval.id not in self._announced:
                    self._announced.add(approval.id)
                    self._ask(approval)
                continue
            self._decided.add(approval.id)
            approve = options.approvals == "approve"
            by = options.decided_by or getpass.getuser()
            flag = "--approve-all" if approve else "--deny-all"
            assert isinstance(self.server.broker, gateway.LocalApprovalBroker)
            self.server.broker.decide(uid, approval.id, approved=approve, by=f"{by} ({flag})",
                                      reason=f"decided by {flag}")  # fmt: skip

    def _ask(self, approval: gateway.Approval) -> None:
        common = (
            f"{self.run.uid} {approval.id} --gateway {self.server.base_url} "
            f"--admin-token-file {self.token_file}"
        )
        self.run.say(
            f"\n  WAITING FOR APPROVAL: {approval.tool} {brief_json(approval.arguments)}\n"
            f"    rule {approval.rule}: {approval.reason}\n"
            f"    approve:  orchestrator approve {common}\n"
            f"    deny:     orchestrator deny {common}\n"
            f"    (denied automatically after {approval.timeout:g} s)\n"
        )

    def _announce(self, entry: ledger.Entry) -> None:
        payload = entry.payload or {}
        kind, say = entry.kind, self.run.say
        if kind is ledger.Kind.POLICY_DECISION and "tool" in payload:
            effect = str(payload.get("effect"))
            mark = {"Allow": "allow", "Deny": "DENY", "RequireApproval": "HOLD"}.get(effect, effect)
            rule = payload.get("rule") or "default"
            say(
                f"  [{entry.sequence}] {mark:<5} {payload.get('tool')} "
                f"{brief_json(payload.get('arguments'))}  ({rule}: {payload.get('reason')})"
            )
        elif kind is ledger.Kind.POLICY_DECISION:
            say(f"  [{entry.sequence}] {payload.get('effect')} {payload.get('action')} "
                f"{payload.get('host')}:{payload.get('port')}")  # fmt: skip
        elif kind is ledger.Kind.APPROVAL_GRANTED:
            say(f"  [{entry.sequence}] approved {payload.get('tool')} by {payload.get('by')}")
        elif kind is ledger.Kind.APPROVAL_DENIED:
            say(f"  [{entry.sequence}] refused {payload.get('tool')} by {payload.get('by')}")
        elif kind is ledger.Kind.RUN_FINISHED and entry.actor == "runner":
            say(f"  [{entry.sequence}] runner reported {payload.get('status')}")


def brief_json(value: Any, limit: int = 90) -> str:
    """``value`` in one short line: a command, a path, or compact JSON."""
    if isinstance(value, dict) and "command" in value:
        text = "$ " + str(value["command"])
    elif isinstance(value, dict) and ("filepath" in value or "file_path" in value):
        text = str(value.get("filepath") or value.get("file_path"))
    else:
        text = json.dumps(value, sort_keys=True)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
