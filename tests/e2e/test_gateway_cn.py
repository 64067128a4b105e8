"""The real Continue CLI, driven by the scripted model through the gateway.

Each test is one agent run; the policy decides at the model boundary and the workspace,
the bare remote's canary, the record store and the ledger show what really happened.
"""

from __future__ import annotations

import asyncio
import json
import pathlib
from collections.abc import Awaitable, Callable

import pytest
from tests.e2e import gateway_harness as harness

from continue_orchestrator import cli, gateway, records

pytestmark = pytest.mark.cli


def run(root: pathlib.Path, turns: list[dict[str, object]], **kwargs: object) -> harness.Result:
    return asyncio.run(harness.run_agent(root, turns, **kwargs))  # type: ignore[arg-type]


def test_allowed_read_and_write_in_src_reach_the_diff(tmp_path: pathlib.Path) -> None:
    result = run(
        tmp_path,
        [
            {"tool_calls": [{"name": "Read", "arguments": {"filepath": "README.md"}}]},
            {
                "expect": {"last_role": "tool", "last_contains": "hello readme"},
                "tool_calls": [
                    {"name": "Write", "arguments": {"filepath": "src/new.py", "content": "x = 1\n"}}
                ],
            },
            {"expect": {"last_role": "tool"}, "text": "Wrote src/new.py."},
        ],
    )
    assert result.model.failures == [], result.model.failures
    assert result.exit_code == 0, result.stderr
    assert "Wrote src/new.py." in result.stdout
    assert (result.workspace / "src" / "new.py").read_text() == "x = 1\n"
    assert "src/new.py" in harness.git(
        result.workspace, "status", "--porcelain", "--untracked-files=all"
    )
    harness.git(result.workspace, "add", "-A")
    assert "+x = 1" in harness.git(result.workspace, "diff", "--cached")
    kinds = result.kinds()
    assert kinds.count("tool.call") == 2 and kinds.count("tool.result") == 2
    assert kinds.count("model.request") == 3 == kinds.count("model.response")


def test_write_outside_allowed_paths_is_denied_and_never_written(tmp_path: pathlib.Path) -> None:
    result = run(
        tmp_path,
        [
            {
                "tool_calls": [
                    {
                        "name": "Write",
                        "id": "call_evil",
                        "arguments": {"filepath": "ci/deploy.sh", "content": "curl evil\n"},
                    }
                ]
            },
            # The gateway answers the model itself; the agent never sees the call.
            {
                "expect": {"last_role": "tool", "last_contains": "Denied by policy"},
                "tool_calls": [{"name": "Read", "arguments": {"filepath": "src/app.py"}}],
            },
            {
                "expect": {"last_role": "tool", "last_contains": "print('app')"},
                "text": "I was not allowed to write ci/deploy.sh.",
            },
        ],
    )
    assert result.model.failures == [], result.model.failures
    assert result.exit_code == 0, result.stderr
    assert not (result.workspace / "ci").exists()
    assert "not allowed to write" in result.stdout
    # The third upstream request carries the hidden exchange, spliced back in place.
    third = result.model.requests[2]["messages"]
    roles = [
        (m["role"], m.get("tool_call_id") or [c["id"] for c in m.get("tool_calls") or []])
        for m in third[1:]
    ]
    assert roles[:3] == [("user", []), ("assistant", ["call_evil"]), ("tool", "call_evil")]
    assert "Write call was not run" in third[3]["content"]
    denials = [
        e.payload
        for e in result.entries()
        if str(e.kind) == "policy.decision" and e.payload["effect"] == "Deny"
    ]
    assert [d["callId"] for d in denials] == ["call_evil"]
    assert "call_evil" not in {
        e.payload.get("callId") for e in result.entries() if str(e.kind) == "tool.call"
    }


def test_git_push_through_bash_is_denied_and_never_executed(tmp_path: pathlib.Path) -> None:
    result = run(
        tmp_path,
        [
            {
                "tool_calls": [
                    {
                        "name": "Bash",
                        "id": "call_push",
                        "arguments": {"command": "git push origin HEAD:refs/heads/main"},
                    }
                ]
            },
            {
                "expect": {"last_role": "tool", "last_contains": "no-push"},
                "text": "Pushing is not mine to do.",
            },
        ],
    )
    assert result.model.failures == [], result.model.failures
    assert result.exit_code == 0, result.stderr
    assert not (tmp_path / "PUSH_CANARY").exists()
    assert harness.git(result.remote, "for-each-ref") == ""
    # A control: the canary does fire on a real push, so its silence above means something.
    harness.git(result.workspace, "push", "-q", "origin", "HEAD:refs/heads/main")
    assert (tmp_path / "PUSH_CANARY").exists()


def _person(
    decision: str, *, by: str = "alice"
) -> Callable[[gateway.Gateway, str], Awaitable[None]]:
    async def act(server: gateway.Gateway, run: str) -> None:
        while not server.pending_approvals(run):  # noqa: ASYNC110 - a person polls
            await asyncio.sleep(0.05)
        [held] = server.pending_approvals(run)
        assert held.tool == "Bash" and held.arguments["command"] == "touch release.txt"
        token_file = pathlib.Path(server.store.root) / "admin-token"
        token_file.write_text(server.admin_token or "")
        code = await asyncio.to_thread(
            cli.main,
            [
                decision,
                run,
                held.id,
                "--by",
                by,
                "--gateway",
                server.base_url,
                "--admin-token-file",
                str(token_file),
            ],
        )
        assert code == 0

    return act


RELEASE = {
    "tool_calls": [
        {"name": "Bash", "id": "call_release", "arguments": {"command": "touch release.txt"}}
    ]
}


def test_approval_granted_by_a_person_lets_the_call_through(tmp_path: pathlib.Path) -> None:
    result = run(
        tmp_path,
        [RELEASE, {"expect": {"last_role": "tool"}, "text": "Released."}],
        person=_person("approve"),
    )
    assert result.model.failures == [], result.model.failures
    assert result.exit_code == 0, result.stderr
    assert (result.workspace / "release.txt").exists()
    granted = [e for e in result.entries() if str(e.kind) == "approval.granted"]
    assert [(e.actor, e.payload["callId"]) for e in granted] == [("alice", "call_release")]


def test_approval_denied_by_a_person_blocks_the_call(tmp_path: pathlib.Path) -> None:
    result = run(
        tmp_path,
        [
            RELEASE,
            {"expect": {"last_role": "tool", "last_contains": "alice"}, "text": "Not released."},
        ],
        person=_person("deny"),
    )
    assert result.model.failures == [], result.model.failures
    assert result.exit_code == 0, result.stderr
    assert not (result.workspace / "release.txt").exists()
    assert "approval.denied" in result.kinds() and "tool.call" not in result.kinds()


def test_no_decision_before_the_timeout_denies(tmp_path: pathlib.Path) -> None:
    result = run(
        tmp_path,
        [
            RELEASE,
            {
                "expect": {"last_role": "tool", "last_contains": "no approval within"},
                "text": "Timed out.",
            },
        ],
        approval_timeout=1.0,
    )
    assert result.model.failures == [], result.model.failures
    assert not (result.workspace / "release.txt").exists()
    [denied] = [e for e in result.entries() if str(e.kind) == "approval.denied"]
    assert denied.payload["by"] == "timeout"


def test_transcript_holds_every_exchange_and_no_secret(tmp_path: pathlib.Path) -> None:
    result = run(
        tmp_path,
        [
            {"tool_calls": [{"name": "Read", "arguments": {"filepath": "README.md"}}]},
            {
                "expect": {"last_contains": harness.SECRET_VALUE},
                "tool_calls": [
                    {
                        "name": "Bash",
                        "id": "call_push",
                        "arguments": {"command": "git push origin main"},
                    }
                ],
            },
            {"expect": {"last_contains": "Denied"}, "text": f"The key was {harness.SECRET_VALUE}."},
        ],
    )
    assert result.model.failures == [], result.model.failures
    # The upstream got the real key; the agent's config only ever had the run token.
    assert set(result.model.authorizations) == {f"Bearer {harness.UPSTREAM_KEY}"}
    store = records.BlobStore(result.records)
    record = records.load(store, result.registration.uid)
    kinds = [exchange.kind for exchange in record.exchanges]
    assert kinds == ["model", "tool.result", "model"]
    assert record.exchanges[2].facts["upstreamRounds"] == 2
    upstream_turns = [
        json.loads(store.get(digest))
        for exchange in record.exchanges
        if exchange.kind == "model"
        for role, digest in sorted(exchange.blobs.items())
        if role.startswith("upstreamRequest")
    ]
    assert len(upstream_turns) == len(result.model.requests) == 3
    assert result.manifest is not None and result.manifest in store
    forbidden = [harness.SECRET_VALUE, harness.UPSTREAM_KEY, result.registration.token]
    everything = b"".join(p.read_bytes() for p in result.records.rglob("*") if p.is_file())
    everything += result.ledger_path.read_bytes()
    for value in forbidden:
        assert value.encode() not in everything
    assert b"[REDACTED:API_TOKEN]" in everything
