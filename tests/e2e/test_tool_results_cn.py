"""The real Continue CLI reads a file holding a private key; the model must never see it.

The agent's Read runs for real; the gateway withholds its result (``spec.toolResults``),
so the scripted model receives the notice instead, and neither the record store nor the
ledger holds the key, only its digest and size.
"""

from __future__ import annotations

import asyncio
import json
import pathlib

import pytest
from tests.e2e import gateway_harness as harness

from continue_orchestrator import records

pytestmark = pytest.mark.cli

KEY_BODY = "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW-e2e-fake"
KEY = f"-----BEGIN OPENSSH PRIVATE KEY-----\n{KEY_BODY}\n-----END OPENSSH PRIVATE KEY-----\n"
TOOL_RESULTS = """\
  toolResults:
    withhold:
      - name: private-keys
        tools: [Read, Bash]
        patterns: ['-----BEGIN ([A-Z0-9]+ )*PRIVATE KEY-----']
        reason: the output holds a private key
"""


def test_a_private_key_the_agent_reads_is_withheld_from_the_model(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_workspace = harness.make_workspace

    def with_key(root: pathlib.Path) -> tuple[pathlib.Path, pathlib.Path]:
        workspace, remote = make_workspace(root)
        (workspace / "notes").mkdir()
        (workspace / "notes" / "server-key.txt").write_text("deploy key:\n" + KEY)
        return workspace, remote

    monkeypatch.setattr(harness, "make_workspace", with_key)
    monkeypatch.setattr(harness, "POLICY", harness.POLICY + TOOL_RESULTS)
    result = asyncio.run(
        harness.run_agent(
            tmp_path,
            [
                {
                    "tool_calls": [
                        {
                            "name": "Read",
                            "id": "call_key",
                            "arguments": {"filepath": "notes/server-key.txt"},
                        }
                    ]
                },
                {
                    "expect": {"last_role": "tool", "last_contains": "withheld by policy"},
                    "text": "The key file's content was withheld from me.",
                },
            ],
        )
    )
    assert result.model.failures == [], result.model.failures
    assert result.exit_code == 0, result.stderr
    assert "withheld from me" in result.stdout

    [_, second] = result.model.requests
    [notice] = [m for m in second["messages"] if m.get("tool_call_id") == "call_key"]
    assert "rule e2e/private-keys: the output holds a private key" in notice["content"]
    assert KEY_BODY not in json.dumps(result.model.requests)

    everything = b"".join(p.read_bytes() for p in result.records.rglob("*") if p.is_file())
    everything += result.ledger_path.read_bytes()
    assert KEY_BODY.encode() not in everything
    assert b"BEGIN OPENSSH PRIVATE KEY" not in everything

    [decision] = [
        e.payload
        for e in result.entries()
        if str(e.kind) == "policy.decision" and e.payload.get("action") == "tool.result"
    ]
    assert (decision["toolCallId"], decision["tool"], decision["effect"], decision["rule"]) == (
        "call_key",
        "Read",
        "Deny",
        "e2e/private-keys",
    )
    # The tool really ran and returned the file: what was withheld is at least the key.
    assert decision["contentBytes"] >= len(KEY)
    store = records.BlobStore(result.records)
    record = records.load(store, result.registration.uid)
    [tool_result] = [x for x in record.exchanges if x.kind == "tool.result"]
    assert tool_result.facts["withheld"]["contentDigest"] == decision["contentDigest"]
    stored = json.loads(store.get(tool_result.blobs["result"]))
    assert stored["content"].startswith("[withheld by policy rule e2e/private-keys: sha256:")
