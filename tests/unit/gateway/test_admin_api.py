"""The registration API as the operator uses it and as an attacker probes it."""

from __future__ import annotations

import asyncio
import copy
import json
import pathlib
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import pytest
import yaml
from tests import continue_config

from continue_orchestrator import api, controller, errors, gateway, local, policy, records, runs

REPO = pathlib.Path(__file__).resolve().parents[3]
ADMIN = "admin-token-0123456789-0123456789-abcdef"
TOKEN = "run-token-0123456789-0123456789-abcdef"


def snapshot() -> tuple[list[dict[str, Any]], str]:
    """The demo's baseline and RunPolicy as the operator snapshots them."""
    sources = [
        api.parse(yaml.safe_load((REPO / "examples/demo" / name).read_text()))
        for name in ("clusterrunpolicy.yaml", "runpolicy.yaml")
    ]
    manifests = policy.snapshot_document(sources)  # type: ignore[arg-type]
    return manifests, policy.compile(sources).digest  # type: ignore[arg-type]


def body(model_base: str, **changes: Any) -> dict[str, Any]:
    manifests, digest = snapshot()
    document: dict[str, Any] = {
        "uid": "run-1",
        "name": "fix-rounding",
        "namespace": "demo",
        "token": TOKEN,
        "expiresAt": time.time() + 600,
        "policy": {"digest": digest, "manifests": manifests},
        "models": {"m": {"apiBase": model_base, "apiKey": "sk-upstream-secret-value"}},
        "allowedEgress": ["127.0.0.1"],
        "secrets": {"OPENAI_API_KEY": "sk-upstream-secret-value"},
    }
    document.update(changes)
    return document


Check = Callable[[gateway.Gateway, local.ScriptedModel, aiohttp.ClientSession], Awaitable[None]]


def _with_gateway(
    tmp_path: pathlib.Path,
    turns: list[dict[str, Any]],
    check: Check,
    *,
    admin_token: str | None = ADMIN,
) -> None:
    async def main() -> None:
        model = local.ScriptedModel(local.Script.from_data({"turns": turns}))
        await model.start()
        server = gateway.Gateway(record_root=str(tmp_path / "records"), admin_token=admin_token)
        await server.start()
        try:
            async with aiohttp.ClientSession(base_url=server.base_url) as session:
                await check(server, model, session)
        finally:
            await server.stop()
            await model.stop()

    asyncio.run(main())


async def _json(
    session: aiohttp.ClientSession,
    method: str,
    path: str,
    document: Any = None,
    token: str = ADMIN,
) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}"}
    async with session.request(method, path, json=document, headers=headers) as response:
        return response.status, await response.json(content_type=None)


def _model_base(model: local.ScriptedModel) -> str:
    return f"http://127.0.0.1:{model.port}/v1"


def test_admin_api_refuses_without_the_admin_token(tmp_path: pathlib.Path) -> None:
    async def check(
        server: gateway.Gateway, model: local.ScriptedModel, session: aiohttp.ClientSession
    ) -> None:
        document = body(_model_base(model))
        for token in ("", "x" * len(ADMIN), ADMIN[:-1], ADMIN + "x", TOKEN):
            status, answer = await _json(session, "POST", "/admin/runs", document, token)
            assert (status, answer["error"]["message"]) == (401, "invalid admin token")
        # Not registered: the agent's token opens nothing.
        status, _ = await _json(session, "GET", "/admin/runs/run-1", token=TOKEN)
        assert status == 401
        assert server.registry.get("run-1") is None

    _with_gateway(tmp_path, [{"text": "unused"}], check)

    async def disabled(
        server: gateway.Gateway, model: local.ScriptedModel, session: aiohttp.ClientSession
    ) -> None:
        status, answer = await _json(session, "POST", "/admin/runs", body(_model_base(model)))
        assert status == 404 and "disabled" in answer["error"]["message"]

    _with_gateway(tmp_path / "off", [{"text": "unused"}], disabled, admin_token=None)


def _tampered(document: dict[str, Any]) -> dict[str, Any]:
    """The RunPolicy's Deny rule for CI files, quietly turned into Allow."""
    changed = copy.deepcopy(document)
    for rule in changed["policy"]["manifests"][-1]["spec"]["rules"]:
        if rule["name"] == "no-ci":
            rule["effect"] = "Allow"
    return changed


BAD_BODIES: list[tuple[str, Callable[[dict[str, Any]], Any], str]] = [
    ("not an object", lambda d: [d], "the body must be a JSON object"),
    ("no uid", lambda d: {k: v for k, v in d.items() if k != "uid"}, "uid: must be a non-empty"),
    ("path in uid", lambda d: {**d, "uid": "../../etc"}, "uid: must be 1-128 letters"),
    ("unknown field", lambda d: {**d, "tokenn": "x"}, "tokenn: is not a registration field"),
    ("two tokens", lambda d: {**d, "tokenSha256": "0" * 64}, "token: give exactly one"),
    ("short token", lambda d: {**d, "token": "short"}, "token: is shorter than 16"),
    ("bad digest", lambda d: {**d, "token": None, "tokenSha256": "zz"}, "tokenSha256: must be"),
    ("expired", lambda d: {**d, "expiresAt": time.time() - 1}, "expiresAt: "),
    ("expiry text", lambda d: {**d, "expiresAt": "soon"}, "expiresAt: must be a number"),
    ("no policy", lambda d: {**d, "policy": None}, "policy: must be an object"),
    (
        "empty manifests",
        lambda d: {**d, "policy": {**d["policy"], "manifests": []}},
        "policy.manifests: must be a non-empty list",
    ),
    (
        "bad manifest",
        lambda d: {**d, "policy": {**d["policy"], "manifests": [{"kind": "Pod", "spec": {}}]}},
        "policy.manifests[0]",
    ),
    ("tampered policy", _tampered, "policy.digest: the manifests digest to sha256:"),
    (
        "digest format",
        lambda d: {**d, "policy": {**d["policy"], "digest": "md5:x"}},
        "policy.digest: must be sha256:",
    ),
    ("no models", lambda d: {**d, "models": {}}, "models: must be a non-empty object"),
    (
        "no key",
        lambda d: {**d, "models": {"m": {"apiBase": "http://127.0.0.1:1/v1"}}},
        "models.m.apiKey: must be the provider key",
    ),
    (
        "ftp upstream",
        lambda d: {**d, "models": {"m": {"apiBase": "ftp://x/v1", "apiKey": "k"}}},
        "not an http(s) URL",
    ),
    (
        "bad provider",
        lambda d: {**d, "models": {"m": {**d["models"]["m"], "provider": "gemini"}}},
        "models.m.provider",
    ),
    ("egress", lambda d: {**d, "allowedEgress": "127.0.0.1"}, "allowedEgress: must be a list"),
    ("secrets", lambda d: {**d, "secrets": {"A": 1}}, "secrets.A: must be a string"),
    ("rounds", lambda d: {**d, "maxDeniedRounds": 1000}, "maxDeniedRounds: must be an integer"),
]


def test_bad_bodies_get_400_naming_the_field_and_register_nothing(
    tmp_path: pathlib.Path,
) -> None:
    async def check(
        server: gateway.Gateway, model: local.ScriptedModel, session: aiohttp.ClientSession
    ) -> None:
        good = body(_model_base(model))
        for label, change, expected in BAD_BODIES:
            status, answer = await _json(session, "POST", "/admin/runs", change(good))
            message = answer["error"]["message"]
            assert status == 400, (label, status, answer)
            assert expected in message, (label, message)
            assert message.startswith("POST /admin/runs"), (label, message)
        async with session.post(
            "/admin/runs", data=b"{not json", headers={"Authorization": f"Bearer {ADMIN}"}
        ) as response:
            assert response.status == 400
            assert "not JSON" in (await response.json())["error"]["message"]
        assert server.registry.uids() == []
        assert not (tmp_path / "records" / "runs").exists() or not any(
            (tmp_path / "records" / "runs").iterdir()
        )

    _with_gateway(tmp_path, [{"text": "unused"}], check)


def test_a_tampered_policy_is_refused_even_with_a_matching_claimed_digest(
    tmp_path: pathlib.Path,
) -> None:
    """Recomputing nothing on the sender's side does not help: the gateway digests."""

    async def check(
        server: gateway.Gateway, model: local.ScriptedModel, session: aiohttp.ClientSession
    ) -> None:
        tampered = _tampered(body(_model_base(model)))
        sources = [
            api.parse(
                {
                    "apiVersion": api.API_VERSION,
                    "kind": item["kind"],
                    "metadata": {"name": item["name"], "namespace": item["namespace"]}
                    if item["namespace"]
                    else {"name": item["name"]},
                    "spec": item["spec"],
                }
            )
            for item in tampered["policy"]["manifests"]
        ]
        honest_digest = policy.compile(sources).digest  # type: ignore[arg-type]
        assert honest_digest != body(_model_base(model))["policy"]["digest"]
        # With its own honest digest the tampered policy registers, and the gateway then
        # reports that digest, not the run's: the operator's check below catches it.
        status, answer = await _json(
            session,
            "POST",
            "/admin/runs",
            {**tampered, "policy": {**tampered["policy"], "digest": honest_digest}},
        )
        assert status == 201
        assert answer["policyDigest"] == honest_digest

    _with_gateway(tmp_path, [{"text": "unused"}], check)


def test_register_serve_status_unregister(tmp_path: pathlib.Path) -> None:
    turns = [
        {
            "text": "Pushing.",
            "tool_calls": [{"name": "Bash", "id": "b1", "arguments": {"command": "git push"}}],
        },
        {"expect": {"last_role": "tool", "last_contains": "no-push"}, "text": "I will not."},
    ]

    async def check(
        server: gateway.Gateway, model: local.ScriptedModel, session: aiohttp.ClientSession
    ) -> None:
        document = body(_model_base(model))
        status, answer = await _json(session, "POST", "/admin/runs", document)
        assert status == 201, answer
        assert answer["created"] is True
        assert answer["apiBase"] == f"{server.base_url}/runs/run-1/v1"
        assert answer["policyDigest"] == document["policy"]["digest"]
        registered = server.registry.get("run-1")
        # The sandbox's tree is not on the gateway's disk: no symlink checks against it.
        assert registered is not None and registered.workspace_visible is False
        # Registering the same run again (an operator resuming) keeps it as it is.
        status, again = await _json(session, "POST", "/admin/runs", document)
        assert (status, again["created"]) == (200, False)
        status, conflict = await _json(
            session, "POST", "/admin/runs", {**document, "token": "another-token-0123456789"}
        )
        assert status == 409 and "different token" in conflict["error"]["message"]

        request = {"model": "m", "messages": [{"role": "user", "content": "push it"}]}
        async with session.post(
            "/runs/run-1/v1/chat/completions",
            json=request,
            headers={"Authorization": f"Bearer {TOKEN}"},
        ) as response:
            assert response.status == 200
            completion = await response.json()
        message = completion["choices"][0]["message"]
        assert "tool_calls" not in message  # the real policy denied git push
        assert message["content"] == "Pushing.I will not."
        assert len(model.requests) == 2 and not model.failures

        status, state = await _json(session, "GET", "/admin/runs/run-1")
        assert status == 200
        assert state["registered"] is True and state["policyDigest"] == document["policy"]["digest"]
        assert state["models"] == ["m"] and state["outcome"] is None
        assert state["steps"] >= 1

        status, gone = await _json(session, "DELETE", "/admin/runs/run-1")
        assert status == 200
        digest = gone["recordDigest"]
        store = records.BlobStore(str(tmp_path / "records"))
        manifest = json.loads(store.get(digest))
        assert manifest["run"] == "run-1"
        assert any(e["kind"] == "model" for e in manifest["exchanges"])
        # The upstream key never reached the record.
        for path in (tmp_path / "records").rglob("*"):
            if path.is_file():
                assert b"sk-upstream-secret-value" not in path.read_bytes(), path

        status, after = await _json(session, "GET", "/admin/runs/run-1")
        assert (status, after["registered"], after["recordDigest"]) == (200, False, digest)
        async with session.post(
            "/runs/run-1/v1/chat/completions",
            json=request,
            headers={"Authorization": f"Bearer {TOKEN}"},
        ) as response:
            assert response.status == 401
        status, _ = await _json(session, "DELETE", "/admin/runs/run-1")
        assert status == 404
        status, _ = await _json(session, "GET", "/admin/runs/never-registered")
        assert status == 404

    _with_gateway(tmp_path, turns, check)


def test_a_registration_by_token_digest_authenticates_the_token(tmp_path: pathlib.Path) -> None:
    async def check(
        server: gateway.Gateway, model: local.ScriptedModel, session: aiohttp.ClientSession
    ) -> None:
        document = body(_model_base(model), token=None, tokenSha256=gateway.token_digest(TOKEN))
        del document["token"]
        status, answer = await _json(session, "POST", "/admin/runs", document)
        assert status == 201, answer
        request = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
        for token, expected in ((TOKEN, 200), (gateway.token_digest(TOKEN), 401)):
            async with session.post(
                "/runs/run-1/v1/chat/completions",
                json=request,
                headers={"Authorization": f"Bearer {token}"},
            ) as response:
                assert response.status == expected

    _with_gateway(tmp_path, [{"text": "hello"}], check)


def test_the_admin_api_can_live_on_its_own_port(tmp_path: pathlib.Path) -> None:
    async def main() -> None:
        server = gateway.Gateway(record_root=str(tmp_path), admin_token=ADMIN)
        await server.start(admin=("127.0.0.1", 0))
        try:
            assert server.admin_url != server.base_url
            async with aiohttp.ClientSession() as session:
                headers = {"Authorization": f"Bearer {ADMIN}"}
                async with session.get(
                    server.base_url + "/admin/runs/x", headers=headers
                ) as response:
                    assert response.status == 404  # no admin route where agents connect
                async with session.get(
                    server.admin_url + "/admin/runs/x", headers=headers
                ) as response:
                    assert response.status == 404
                    assert "not registered" in (await response.json())["error"]["message"]
                async with session.post(
                    server.admin_url + "/runs/x/v1/chat/completions", json={}
                ) as response:
                    assert response.status == 404  # and no agent route on the admin port
        finally:
            await server.stop()

    asyncio.run(main())


def test_client_registers_what_the_controller_hands_it(tmp_path: pathlib.Path) -> None:
    """``BlockingClient`` is the controller's GatewayClient: a runs.Registration
    goes in, models and keys come from its config.yaml and granted secrets."""

    async def check(
        server: gateway.Gateway, model: local.ScriptedModel, session: aiohttp.ClientSession
    ) -> None:
        manifests, digest = snapshot()
        registration = runs.Registration(
            uid="run-7",
            name="fix-rounding",
            namespace="demo",
            token=TOKEN,
            expires_at=time.time() + 600,
            policy=json.dumps(manifests).encode(),
            policy_digest=digest,
            allowed_egress=("127.0.0.1",),
            config=continue_config.text(
                name="demo", model_name="m", model="m", api_base=_model_base(model), roles=None
            ),
            secrets={"OPENAI_API_KEY": "sk-from-the-run-secret"},
        )

        def blocking() -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
            client: controller.GatewayClient = gateway.BlockingClient(
                server.admin_url, ADMIN, watch_seconds=0
            )
            assert isinstance(client, gateway.BlockingClient)
            try:
                client.register(registration)
                live = client.status("run-7")
                client.unregister("run-7")
                client.unregister("run-7")  # gone already: not an error
                return live, client.status("run-7")
            finally:
                client.close()

        live, sealed = await asyncio.to_thread(blocking)
        assert live is not None and live["registered"] and live["policyDigest"] == digest
        assert sealed is not None and sealed["recordDigest"].startswith("sha256:")
        assert server.registry.get("run-7") is None

        # The key came from the secret, not from the config text.
        upstreams = gateway.upstreams_from_config(registration.config, registration.secrets)
        assert upstreams["m"].api_key == "sk-from-the-run-secret"
        with pytest.raises(errors.GatewayError, match="OPENAI_API_KEY"):
            gateway.upstreams_from_config(registration.config, {})

        async with gateway.Client(server.admin_url, "wrong-" + ADMIN) as client:
            with pytest.raises(errors.GatewayError, match="invalid admin token"):
                await client.register(registration)

    _with_gateway(tmp_path, [{"text": "unused"}], check)


def test_a_restarted_gateway_refuses_the_run_until_the_operator_registers_it_again(
    tmp_path: pathlib.Path,
) -> None:
    async def main() -> None:
        model = local.ScriptedModel(
            local.Script.from_data({"loop": True, "turns": [{"text": "x"}]})
        )
        await model.start()
        first = gateway.Gateway(record_root=str(tmp_path), admin_token=ADMIN)
        await first.start()
        port = int(first.base_url.rsplit(":", 1)[1])
        client = gateway.BlockingClient(first.admin_url, ADMIN, watch_seconds=0.1)
        request = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
        headers = {"Authorization": f"Bearer {TOKEN}"}
        url = f"{first.base_url}/runs/run-1/v1/chat/completions"
        second: gateway.Gateway | None = None

        class Run:
            uid, name, namespace, token = "run-1", "r", "demo", TOKEN
            expires_at = time.time() + 600
            allowed_egress = ("127.0.0.1",)
            config = continue_config.text(
                model="m", api_base=_model_base(model), api_key="k1234", roles=None
            )
            secrets: dict[str, str] = {}
            policy = json.dumps(snapshot()[0]).encode()
            policy_digest = snapshot()[1]
            repository = None
            agent = True

        try:
            await asyncio.to_thread(client.register, Run())
            async with aiohttp.ClientSession() as session:
                async with session.post(url, json=request, headers=headers) as response:
                    assert response.status == 200
                await asyncio.sleep(0.3)  # the client has seen the first instance
                await first.stop()
                second = gateway.Gateway(record_root=str(tmp_path), admin_token=ADMIN)
                await second.start(port=port)
                async with session.post(url, json=request, headers=headers) as response:
                    assert response.status == 401  # it does not know the run: refused
                deadline = time.monotonic() + 10
                while second.registry.get("run-1") is None:
                    assert time.monotonic() < deadline, "the client did not register again"
                    await asyncio.sleep(0.05)
                async with session.post(url, json=request, headers=headers) as response:
                    assert response.status == 200
            # The record continues where the first gateway left it.
            await asyncio.to_thread(client.unregister, "run-1")
            steps = [e.step for e in records.load(second.store, "run-1").exchanges]
            assert steps == [1, 2]
        finally:
            await asyncio.to_thread(client.close)
            if second is not None:
                await second.stop()
            await model.stop()

    asyncio.run(main())
