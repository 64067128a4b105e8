"""Bodies nested too deep to parse, from the agent and from the upstream, over real HTTP.

``json.loads`` raises RecursionError (not ValueError) for JSON nested about 100,000
deep; the gateway let it out of the handler, and the agent got a bare 500 from aiohttp
instead of the gateway's own answer. Found while fuzzing the gate (``test_fuzz_gate``).
"""

from __future__ import annotations

import asyncio
import pathlib
import time
from collections.abc import Awaitable, Callable

import aiohttp
from aiohttp import web

from continue_orchestrator import gateway, policy

TOKEN = "run-token-for-fuzz-tests-0123456789"
DEEP = b"[" * 100_000


def _with_gateway(tmp_path: pathlib.Path, check: Callable[[str], Awaitable[None]]) -> None:
    async def main() -> None:
        async def deep_answer(_request: web.Request) -> web.Response:
            return web.Response(body=DEEP, content_type="application/json")

        app = web.Application()
        app.router.add_post("/v1/chat/completions", deep_answer)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        port = runner.addresses[0][1]
        server = gateway.Gateway(record_root=str(tmp_path / "records"), admin_token="admin")
        await server.start()
        server.register_run(
            gateway.RunRegistration(
                uid="run-1",
                token=TOKEN,
                expires_at=time.time() + 600,
                policy_set=policy.compile([]),
                models={"m": gateway.Upstream(f"http://127.0.0.1:{port}/v1", "sk-real")},
                allowed_egress=frozenset({"127.0.0.1"}),
            )
        )
        try:
            await check(server.api_base("run-1") + "/chat/completions")
        finally:
            await server.unregister_run("run-1")
            await server.stop()
            await runner.cleanup()

    asyncio.run(main())


async def _post(url: str, data: bytes) -> tuple[int, str]:
    async with aiohttp.ClientSession() as session:
        headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
        async with session.post(url, data=data, headers=headers) as response:
            return response.status, await response.text()


def test_a_request_nested_too_deep_is_a_400(tmp_path: pathlib.Path) -> None:
    async def check(url: str) -> None:
        status, text = await _post(url, DEEP)
        assert status == 400 and "not JSON" in text

    _with_gateway(tmp_path, check)


def test_an_upstream_answer_nested_too_deep_is_a_502(tmp_path: pathlib.Path) -> None:
    async def check(url: str) -> None:
        body = b'{"model": "m", "messages": [{"role": "user", "content": "hi"}]}'
        status, text = await _post(url, body)
        assert status == 502 and "not a chat completion" in text

    _with_gateway(tmp_path, check)
