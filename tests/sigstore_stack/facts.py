"""A realistic RunFacts for tests and benchmarks."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

from continue_orchestrator import attest


def _digest(label: str) -> str:
    return hashlib.sha256(label.encode()).hexdigest()


def sample_facts(name: str = "fix-flaky-test") -> attest.RunFacts:
    return attest.RunFacts(
        run=attest.RunRef(
            namespace="team-a", name=name, uid="5c0d8a0e-7a47-4f4e-9d52-0b3f6f0e2a11"
        ),
        outcome="succeeded",
        record_digest=_digest(f"{name}/record"),
        diff_digest=_digest(f"{name}/diff"),
        workspace_tree_digest=_digest(f"{name}/tree"),
        ledger=attest.LedgerRange(first=120, last=187, merkle_root=_digest(f"{name}/ledger")),
        inputs={
            "config.yaml": _digest("config"),
            "prompt": _digest("prompt"),
            "repository": _digest("repo@3f1c2e"),
        },
        policy_digest=_digest("policy"),
        runner_image=f"registry.example/continue-runner@sha256:{_digest('image')}",
        cli_version="1.5.47",
        models=(attest.ModelUse(provider="anthropic", model="claude-sonnet-4", requests=7),),
        tool_calls=attest.ToolCallSummary(
            allowed=5,
            denied=1,
            approved=1,
            by_tool={
                "Read": attest.ToolCallCounts(allowed=3),
                "Bash": attest.ToolCallCounts(allowed=2, denied=1, approved=1),
            },
        ),
        verify_results=(
            attest.VerifyResult(command="pytest -q", exit_code=0, duration_seconds=12.5),
        ),
        interventions=(
            attest.Intervention(
                kind="approval",
                actor="alice@example.com",
                at=datetime(2026, 11, 23, 10, 4, 5, tzinfo=UTC),
                subject="call_7",
                reason="git push to a feature branch",
            ),
        ),
        started_at=datetime(2026, 11, 23, 10, 0, 0, tzinfo=UTC),
        finished_at=datetime(2026, 11, 23, 10, 9, 30, tzinfo=UTC),
        builder_id="https://orchestrator.continue.dev/operator/cluster-a",
    )
