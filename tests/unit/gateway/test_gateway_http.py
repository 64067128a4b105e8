"""The gateway over HTTP, as an attacker in the sandbox would see it (no cn needed)."""

from __future__ import annotations

import asyncio
import dataclasses
import pathlib
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import aiohttp

from continue_orchestrator import gateway, local, policy

TOKEN = "run-token-for-unit-tests-0123456789"


@dataclasses.dataclass(frozen=True)
class _Decision:
    effect: str
    rule: str = "test"
    reason: str = "test"


def _decide(
    registration: gateway.RunRegistration, tool: str, arguments: Mapping[str, Any]
) -> _Decision:
    if tool == "Write":
        return _Decision("Deny", "paths.write", "outside src/")
    if tool == "Deploy":
        return _Decision("RequireApproval", "deploy", "needs a person")
    return _Decision("Allow")


Check = Callable[[gateway.Gateway, local.ScriptedModel, str], Awaitable[None]]


def _with_gateway(
    tmp_path: pathlib.Path,
    turns: list[dict[str, Any]],
    check: Check,
    *,
    expires_in: float = 600,
    egress: frozenset[str] = frozenset({"127.0.0.1"}),
) -> None:
    async def main() -> None:
        model = local.ScriptedModel(local.Script.from_data({"turns": turns}))
        base = await model.start()
        server = gateway.Gateway(
            record_root=str(tmp_path / "records"), admin_token="admin-token", decide=_decide
        )
        await server.start()
        server.register_run(
            gateway.RunRegistration(
                uid="run-1",
                token=TOKEN,
                expires_at=time.time() + expires_in,
                policy_set=policy.compile([]),
                models={"m": gateway.Upstream(base, "sk-real")},
                allowed_egress=egress,
                approval_timeout=5,
            )
        )
        try:
            await check(server, model, server.api_base("run-1"))
        finally:
            await server.unregister_run("run-1")
            await server.stop()
            await model.stop()

    asyncio.run(main())


async def _post(url: str, body: Any, token: str = TOKEN) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as session:
        headers = {"Authorization": f"Bearer {token}"}
        async with session.post(url, json=body, headers=headers) as response:
            return response.status, await response.json(content_type=None)


REQUEST = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


def test_bad_unknown_and_expired_tokens_look_alike(tmp_path: pathlib.Path) -> None:
    async def check(server: gateway.Gateway, model: local.ScriptedModel, api: str) -> None:
        wrong = await _post(api + "/chat/completions", REQUEST, token="x" * 40)
        unknown = await _post(
            api.replace("run-1", "run-2") + "/chat/completions", REQUEST, token=TOKEN
        )
        empty = await _post(api + "/chat/completions", REQUEST, token="")
        assert wrong == unknown == empty
        assert wrong[0] == 401
        assert model.requests == []

    _with_gateway(tmp_path, [{"text": "never"}], check)

    async def expired(server: gateway.Gateway, model: local.ScriptedModel, api: str) -> None:
        assert (await _post(api + "/chat/completions", REQUEST))[0] == 401
        assert model.requests == []

    _with_gateway(tmp_path / "expired", [{"text": "never"}], expired, expires_in=-1)


def test_upstream_outside_allowed_egress_is_refused(tmp_path: pathlib.Path) -> None:
    async def check(server: gateway.Gateway, model: local.ScriptedModel, api: str) -> None:
        status, body = await _post(api + "/chat/completions", REQUEST)
        assert status == 403 and "egress" in body["error"]["message"]
        assert model.requests == []

    _with_gateway(tmp_path, [{"text": "never"}], check, egress=frozenset({"api.openai.com"}))


def test_denied_call_is_answered_upstream_and_spliced_back(tmp_path: pathlib.Path) -> None:
    turns = [
        {"text": "Writing.", "tool_calls": [{"name": "Write", "id": "w1", "arguments": {}}]},
        {
            "expect": {"last_role": "tool", "last_contains": "outside src/"},
            "tool_calls": [{"name": "Read", "id": "r1", "arguments": {"filepath": "a"}}],
        },
        {"text": "done"},
    ]

    async def check(server: gateway.Gateway, model: local.ScriptedModel, api: str) -> None:
        status, answer = await _post(api + "/chat/completions", REQUEST)
        assert status == 200, answer
        message = answer["choices"][0]["message"]
        assert [call["id"] for call in message["tool_calls"]] == ["r1"]
        assert answer["choices"][0]["finish_reason"] == "tool_calls"
        history = [
            *REQUEST["messages"],
            message,
            {"role": "tool", "tool_call_id": "r1", "content": "contents of a"},
        ]
        status, answer = await _post(api + "/chat/completions", {"model": "m", "messages": history})
        assert status == 200 and answer["choices"][0]["message"]["content"] == "done"
        upstream = model.requests[2]["messages"]
        assert [(m["role"], m.get("tool_call_id")) for m in upstream] == [
            ("user", None),
            ("assistant", None),
            ("tool", "w1"),
            ("assistant", None),
            ("tool", "r1"),
        ]
        assert [c["id"] for c in upstream[1]["tool_calls"]] == ["w1"]
        assert model.failures == []

    _with_gateway(tmp_path, turns, check)


def test_arguments_that_are_not_json_are_denied(tmp_path: pathlib.Path) -> None:
    turns = [
        {"tool_calls": [{"name": "Read", "id": "bad", "arguments": "{not json"}]},
        {"expect": {"last_contains": "not valid JSON"}, "text": "ok"},
    ]

    async def check(server: gateway.Gateway, model: local.ScriptedModel, api: str) -> None:
        status, answer = await _post(api + "/chat/completions", REQUEST)
        assert status == 200 and "tool_calls" not in answer["choices"][0]["message"]
        assert model.failures == []

    _with_gateway(tmp_path, turns, check)


def test_admin_api_needs_its_token_and_an_approver(tmp_path: pathlib.Path) -> None:
    turns = [
        {"tool_calls": [{"name": "Deploy", "id": "d1", "arguments": {}}]},
        {"text": "after"},
    ]

    async def check(server: gateway.Gateway, model: local.ScriptedModel, api: str) -> None:
        agent = asyncio.ensure_future(_post(api + "/chat/completions", REQUEST))
        admin = server.base_url + "/admin/runs/run-1/approvals/d1"
        while not server.pending_approvals("run-1"):  # noqa: ASYNC110 - waiting for the hold
            await asyncio.sleep(0.02)
        # The run token is not an admin token: an agent cannot approve its own calls.
        status, _ = await _post(admin, {"decision": "approve", "by": "agent"}, token=TOKEN)
        assert status == 401
        status, body = await _post(admin, {"decision": "approve"}, token="admin-token")
        assert status == 409 and "who made it" in body["error"]["message"]
        status, _ = await _post(admin, {"decision": "approve", "by": "bob"}, token="admin-token")
        assert status == 200
        status, answer = await agent
        assert [c["id"] for c in answer["choices"][0]["message"]["tool_calls"]] == ["d1"]
        assert server.pending_approvals("run-1") == []

    _with_gateway(tmp_path, turns, check)
