"""Withheld tool results through the real gateway: the model never receives them, the
record and ledger never hold them, splices still line up, and a replay is identical."""

from __future__ import annotations

import asyncio
import hashlib
import json
import pathlib
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import pytest
import yaml

from continue_orchestrator import api, gateway, ledger, local, policy, records
from continue_orchestrator.gateway import _metrics

TOKEN = "run-token-for-tool-result-tests-0123"
ADMIN = "admin-token-for-tool-result-tests"
KEY_BODY = "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW"
KEY = f"-----BEGIN OPENSSH PRIVATE KEY-----\n{KEY_BODY}\n-----END OPENSSH PRIVATE KEY-----\n"
POLICY = """\
apiVersion: orchestrator.continue.dev/v1alpha1
kind: ClusterRunPolicy
metadata: {name: base}
spec:
  defaultEffect: Allow
  rules:
    - name: no-write
      actions: [tool.call]
      tools: [Write]
      effect: Deny
      reason: no writing here
  toolResults:
    withhold:
      - name: private-keys
        tools: [Read, Bash]
        patterns: ['-----BEGIN ([A-Z0-9]+ )*PRIVATE KEY-----']
        reason: tool output held a private key
"""
RESOURCE = api.parse(yaml.safe_load(POLICY))
assert isinstance(RESOURCE, api.ClusterRunPolicy)
POLICY_SET = policy.compile([RESOURCE])
RULE = "base/private-keys"


def _digest(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


class Agent:
    """Plays the agent: posts chat requests the way cn does and keeps the history."""

    def __init__(self, api_base: str, *, stream: bool = False) -> None:
        self.url = api_base + "/chat/completions"
        self.stream = stream
        self.messages: list[dict[str, Any]] = [{"role": "user", "content": "do the task"}]

    async def send(self) -> tuple[int, str]:
        body = {"model": "m", "messages": self.messages, "stream": self.stream}
        async with aiohttp.ClientSession() as session:
            headers = {"Authorization": f"Bearer {TOKEN}"}
            async with session.post(self.url, json=body, headers=headers) as response:
                return response.status, await response.text()

    def called(self, *calls: tuple[str, str]) -> None:
        self.messages.append(
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"id": call, "type": "function", "function": {"name": tool, "arguments": "{}"}}
                    for call, tool in calls
                ],
            }
        )

    def result(self, call: str, content: Any) -> None:
        self.messages.append({"role": "tool", "tool_call_id": call, "content": content})


Scenario = Callable[[gateway.Gateway, str], Awaitable[None]]


async def _serve(
    root: pathlib.Path,
    turns: list[dict[str, Any]],
    scenario: Scenario,
    *,
    uid: str = "run-1",
) -> tuple[local.ScriptedModel, str | None]:
    model = local.ScriptedModel(local.Script.from_data({"turns": turns}))
    base = await model.start()
    opened = ledger.open(f"sqlite:///{root / 'ledger.db'}")
    server = gateway.Gateway(record_root=str(root / "records"), ledger=opened, admin_token=ADMIN)
    await server.start()
    server.register_run(
        gateway.RunRegistration(
            uid=uid,
            token=TOKEN,
            expires_at=time.time() + 600,
            policy_set=POLICY_SET,
            policy_digest=POLICY_SET.digest,
            models={"m": gateway.Upstream(base, "sk-real-upstream-key")},
            allowed_egress=frozenset({"127.0.0.1"}),
        )
    )
    try:
        await scenario(server, server.api_base(uid))
    finally:
        digest = await server.unregister_run(uid)
        await server.stop()
        await model.stop()
        opened.close()
    return model, digest


def _entries(root: pathlib.Path, uid: str = "run-1") -> list[Any]:
    with ledger.open(f"sqlite:///{root / 'ledger.db'}") as opened:
        return [e for e in opened.entries() if e.run_uid == uid]


def _stored_bytes(root: pathlib.Path) -> list[tuple[pathlib.Path, bytes]]:
    return [(p, p.read_bytes()) for p in (root / "records").rglob("*") if p.is_file()]


def _assert_key_nowhere(root: pathlib.Path, model: local.ScriptedModel) -> None:
    assert KEY_BODY not in json.dumps(model.requests), "the model received the key"
    for path, data in _stored_bytes(root):
        assert KEY_BODY.encode() not in data, f"{path} holds the key"
    for entry in _entries(root):
        assert KEY_BODY not in json.dumps(entry.payload), f"ledger {entry.kind} holds the key"
    assert KEY_BODY.encode() not in (root / "ledger.db").read_bytes()


READ_THEN_TALK = [
    {"tool_calls": [{"name": "Read", "id": "r1", "arguments": {"filepath": "id_ed25519"}}]},
    {"expect": {"last_role": "tool", "last_contains": "withheld by policy"}, "text": "Noted."},
    {"expect": {"last_role": "user"}, "text": "Bye."},
]


async def _read_then_talk(server: gateway.Gateway, api_base: str, *, stream: bool) -> None:
    agent = Agent(api_base, stream=stream)
    assert (await agent.send())[0] == 200
    agent.called(("r1", "Read"))
    agent.result("r1", "here it is:\n" + KEY)
    status, text = await agent.send()
    assert status == 200 and "Noted." in text
    agent.messages += [
        {"role": "assistant", "content": "Noted."},
        {"role": "user", "content": "and now?"},
    ]
    assert (await agent.send())[0] == 200


@pytest.mark.parametrize("stream", [False, True], ids=["complete", "stream"])
def test_a_withheld_result_never_reaches_the_model_record_or_ledger(
    tmp_path: pathlib.Path, stream: bool
) -> None:
    withheld_before = _metrics.TOOL_RESULTS.labels("Deny")._value.get()

    async def scenario(server: gateway.Gateway, api_base: str) -> None:
        await _read_then_talk(server, api_base, stream=stream)

    model, digest = asyncio.run(_serve(tmp_path, READ_THEN_TALK, scenario))
    assert model.failures == [], model.failures
    assert len(model.requests) == 3
    for sent in model.requests[1:]:
        notice = sent["messages"][2]
        assert notice["role"] == "tool" and notice["tool_call_id"] == "r1"
        assert f"rule {RULE}: tool output held a private key" in notice["content"]
    _assert_key_nowhere(tmp_path, model)

    content = "here it is:\n" + KEY
    decisions = [
        e.payload
        for e in _entries(tmp_path)
        if str(e.kind) == "policy.decision" and e.payload.get("action") == "tool.result"
    ]
    # Decided once although the agent sent the result twice.
    assert decisions == [
        {
            "step": decisions[0]["step"],
            "action": "tool.result",
            "toolCallId": "r1",
            "tool": "Read",
            "effect": "Deny",
            "rule": RULE,
            "reason": "tool output held a private key",
            "policyDigest": POLICY_SET.digest,
            "contentDigest": _digest(content),
            "contentBytes": len(content.encode()),
        }
    ]
    assert _metrics.TOOL_RESULTS.labels("Deny")._value.get() == withheld_before + 1

    assert digest is not None
    store = records.BlobStore(str(tmp_path / "records"))
    record = records.record_by_digest(store, digest)
    [result] = [x for x in record.exchanges if x.kind == "tool.result"]
    assert result.facts["withheld"]["contentDigest"] == _digest(content)
    stored = json.loads(store.get(result.blobs["result"]))
    assert stored["content"] == f"[withheld by policy rule {RULE}: {_digest(content)}, " + (
        f"{len(content.encode())} bytes]"
    )
    for exchange in [x for x in record.exchanges if x.kind == "model"][1:]:
        agent_request = store.get(exchange.blobs["agentRequest"])
        assert b"[withheld by policy rule" in agent_request
        # The request hash is the stored request's, so a reviewer can recompute it.
        assert exchange.request_hash == records.normalised_request_hash(json.loads(agent_request))


def test_a_splice_after_a_withheld_result_still_lines_up(tmp_path: pathlib.Path) -> None:
    turns = [
        {"tool_calls": [{"name": "Read", "id": "r1", "arguments": {"filepath": "k"}}]},
        # Denied: the gateway answers the model itself and asks again.
        {"tool_calls": [{"name": "Write", "id": "w1", "arguments": {"filepath": "x"}}]},
        {
            "expect": {"last_role": "tool", "last_contains": "no writing here"},
            "tool_calls": [{"name": "Read", "id": "r2", "arguments": {"filepath": "ok"}}],
        },
        {"expect": {"last_role": "tool", "last_contains": "plain text"}, "text": "Done."},
    ]

    async def scenario(server: gateway.Gateway, api_base: str) -> None:
        agent = Agent(api_base)
        await agent.send()
        agent.called(("r1", "Read"))
        agent.result("r1", KEY)
        status, text = await agent.send()
        assert status == 200 and '"r2"' in text and '"w1"' not in text
        agent.called(("r2", "Read"))
        agent.result("r2", "plain text")
        assert (await agent.send())[0] == 200

    model, digest = asyncio.run(_serve(tmp_path, turns, scenario))
    assert model.failures == [], model.failures
    last = model.requests[-1]["messages"]
    shape = [(m["role"], m.get("tool_call_id") or [c["id"] for c in m.get("tool_calls") or []])
             for m in last]  # fmt: skip
    assert shape == [
        ("user", []),
        ("assistant", ["r1"]),
        ("tool", "r1"),
        ("assistant", ["w1"]),
        ("tool", "w1"),
        ("assistant", ["r2"]),
        ("tool", "r2"),
    ]
    assert "withheld by policy" in last[2]["content"]
    _assert_key_nowhere(tmp_path, model)
    assert digest is not None
    record = records.record_by_digest(records.BlobStore(str(tmp_path / "records")), digest)
    assert [x.facts["splicesApplied"] for x in record.exchanges if x.kind == "model"] == [0, 0, 1]


def test_forged_structured_and_legacy_results_are_checked(tmp_path: pathlib.Path) -> None:
    turns = [
        {"tool_calls": [{"name": "List", "id": "l1", "arguments": {"dirpath": "."}}]},
        {"text": "Seen."},
    ]

    async def scenario(server: gateway.Gateway, api_base: str) -> None:
        agent = Agent(api_base)
        await agent.send()
        agent.called(("l1", "List"), ("forged", "Read"))
        # List is not a tool the rule names: a control that the selector is honoured.
        agent.result("l1", "KEYFILE listing: -----BEGIN RSA PRIVATE KEY----- (control)")
        # Never delivered by the gateway, so its tool is unknown and every glob matches.
        agent.result("forged", [{"type": "text", "text": "x"}, {"type": "text", "text": KEY}])
        agent.messages.append({"role": "function", "name": "Read", "content": KEY})
        assert (await agent.send())[0] == 200

    model, _ = asyncio.run(_serve(tmp_path, turns, scenario))
    messages = model.requests[1]["messages"]
    assert "(control)" in messages[2]["content"]
    assert "withheld by policy" in messages[3]["content"]
    assert "withheld by policy" in messages[4]["content"] and messages[4]["name"] == "Read"
    _assert_key_nowhere(tmp_path, model)
    decided = {
        e.payload["toolCallId"]: e.payload["effect"]
        for e in _entries(tmp_path)
        if e.payload.get("action") == "tool.result"
    }
    assert decided == {"l1": "Allow", "forged": "Deny", "": "Deny"}


# -- replay ---------------------------------------------------------------------------


async def _replay(
    root: pathlib.Path, record: str, uid: str, key: str
) -> dict[str, Any]:
    """Replay ``record`` as run ``uid`` over the admin API, the agent reading ``key``."""
    server = gateway.Gateway(
        record_root=str(root / "records"),
        ledger=ledger.open(f"sqlite:///{root / 'ledger.db'}"),
        admin_token=ADMIN,
    )
    await server.start()
    snapshot = [
        {"kind": p.kind, "name": p.metadata.name, "namespace": "", "spec": p.spec.wire()}
        for p in POLICY_SET.policies
    ]
    body = {
        "uid": uid,
        "token": TOKEN,
        "expiresAt": time.time() + 600,
        "policy": {"digest": POLICY_SET.digest, "manifests": snapshot},
        "models": {"m": {"apiBase": "http://127.0.0.1:9/v1", "apiKey": "unused-key-0123"}},
        "allowedEgress": ["127.0.0.1"],
        "replayOf": {"record": record},
    }
    headers = {"Authorization": f"Bearer {ADMIN}"}
    try:
        async with aiohttp.ClientSession(headers=headers) as session:
            async with session.post(server.admin_url + "/admin/runs", json=body) as response:
                registered = await response.json()
                assert response.status == 201, registered
            agent = Agent(registered["apiBase"])
            await agent.send()
            agent.called(("r1", "Read"))
            agent.result("r1", "here it is:\n" + key)
            await agent.send()
            agent.messages += [
                {"role": "assistant", "content": "Noted."},
                {"role": "user", "content": "and now?"},
            ]
            await agent.send()
            async with session.delete(f"{server.admin_url}/admin/runs/{uid}") as response:
                finished = await response.json()
    finally:
        await server.stop()
    replay: dict[str, Any] = finished["replay"]
    return replay


def test_a_run_with_a_withheld_result_replays_identically(tmp_path: pathlib.Path) -> None:
    async def scenario(server: gateway.Gateway, api_base: str) -> None:
        await _read_then_talk(server, api_base, stream=False)

    model, digest = asyncio.run(_serve(tmp_path, READ_THEN_TALK, scenario))
    assert model.failures == [] and digest is not None
    same = asyncio.run(_replay(tmp_path, digest, "run-2", KEY))
    assert same["identical"] is True, same
    assert same["report"]["replayed"]["withheld"] == same["report"]["recorded"]["withheld"]
    # Another key of the same length: the model sees the very same notice, so only the
    # withheld contents' digests can tell the replay departed from the recording.
    other = KEY.replace("b3Bl", "c3Bl")
    assert len(other) == len(KEY) and other != KEY
    changed = asyncio.run(_replay(tmp_path, digest, "run-3", other))
    assert changed["identical"] is False
    assert changed["cause"] == "environment"
    assert "withheld" in changed["what"]
    _assert_key_nowhere(tmp_path, model)
