"""The run's repository and forge credential on their way to the gateway, and nowhere else.

`runs` splits the AgentRun's repository into what the sandbox gets (the URL without any
credential, and the gateway's git endpoint to clone from) and what the gateway gets (the
URL to fetch from and the forge credential); the admin API reads the latter, refusing a
malformed one by field, and never answers with the credential.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest
from aiohttp import test_utils
from tests.unit.controller import _builders

from continue_orchestrator import errors, gateway, runs

FORGE_TOKEN = "forge-token-from-the-secret-0123456789"
URL_PASSWORD = "password-in-the-url-0123456789"


def _plan(url: str, git_token: bytes | None) -> runs.Plan:
    settings = _builders.make_settings()
    run = _builders.agent_run(repository={"url": url, "ref": "main"})
    return _builders.make_plan(settings, run=run, git_token=git_token)


def _body(plan: runs.Plan) -> dict[str, Any]:
    registration = runs.registration(plan, expires_at=time.time() + 600)
    models = {"m": gateway.Upstream("http://127.0.0.1:9/v1", "sk-model")}
    return gateway.registration_body(registration, models=models)


def test_the_forge_credential_goes_to_the_registration_and_not_the_bundle() -> None:
    url = f"https://bot:{URL_PASSWORD}@forge.example/acme/widgets.git"
    plan = _plan(url, FORGE_TOKEN.encode())
    bundle = runs.bundle(plan, gateway_url="http://gateway.orch:8080")
    text = bundle.model_dump_json(by_alias=True)
    assert FORGE_TOKEN not in text and URL_PASSWORD not in text
    assert bundle.repository.url == "https://forge.example/acme/widgets.git"
    assert bundle.git_url == f"http://gateway.orch:8080/runs/{plan.uid}/git/acme/widgets.git"

    origin = runs.registration(plan, expires_at=0).repository
    assert origin == runs.GitOrigin(
        url="https://forge.example/acme/widgets.git",
        path="acme/widgets.git",
        username="bot",
        token=FORGE_TOKEN,  # the Secret credentialsSecretRef names wins over the URL's
    )
    assert FORGE_TOKEN not in repr(origin)
    # Without a Secret the URL's own password is the credential, still only the gateway's.
    from_url = runs.registration(_plan(url, None), expires_at=0).repository
    assert from_url is not None and from_url.token == URL_PASSWORD


def test_the_admin_body_carries_it_and_the_gateway_redacts_it() -> None:
    plan = _plan("https://forge.example/acme/widgets.git", FORGE_TOKEN.encode())
    body = _body(plan)
    assert body["repository"] == {
        "url": "https://forge.example/acme/widgets.git",
        "path": "acme/widgets.git",
        "username": "x-access-token",
        "token": FORGE_TOKEN,
    }
    parsed = gateway.parse_registration(body)
    assert parsed.repository == gateway.GitOrigin(
        url="https://forge.example/acme/widgets.git",
        path="acme/widgets.git",
        username="x-access-token",
        token=FORGE_TOKEN,
    )
    assert parsed.redactions()[FORGE_TOKEN] == "forge-credential"


@pytest.mark.parametrize(
    ("repository", "expected"),
    [
        ("https://forge.example/a/b.git", "repository: must be an object with url and path"),
        ({"url": "https://forge.example/a/b.git"}, "repository.path: must be a non-empty string"),
        ({"path": "a/b.git"}, "repository.url: must be a non-empty string"),
        ({"url": "https://f/a/b.git", "path": "a/b.git", "tokn": "x"},
         "repository.tokn: is not a repository field"),
        ({"url": "https://f/a/b.git", "path": "a/b.git", "token": 7},
         "repository.token: must be a non-empty string"),
        ({"url": f"https://bot:{URL_PASSWORD}@f/a/b.git", "path": "a/b.git"},
         "repository.url: the http(s) URL for host f carries a user name or password"),
        ({"url": "https://f/a/b.git", "path": "../b.git"}, "repository.path: "),
        ({"url": "https://f/a/b.git", "path": "/"}, "repository.path: "),
    ],
)  # fmt: skip
def test_a_malformed_repository_is_refused_naming_the_field(
    repository: object, expected: str
) -> None:
    body = _body(_plan("https://forge.example/acme/widgets.git", None))
    body["repository"] = repository
    with pytest.raises(errors.GatewayError) as refused:
        gateway.parse_registration(body)
    assert refused.value.message.startswith("POST /admin/runs: ")
    assert expected in refused.value.message
    assert URL_PASSWORD not in refused.value.message


def test_the_status_names_the_repository_and_never_the_credential(tmp_path: Any) -> None:
    admin = "admin-token-for-git-registration-tests"

    async def main() -> None:
        server = gateway.Gateway(record_root=str(tmp_path), admin_token=admin)
        body = _body(_plan("https://forge.example/acme/widgets.git", FORGE_TOKEN.encode()))
        async with test_utils.TestClient(test_utils.TestServer(server.app())) as client:
            headers = {"Authorization": f"Bearer {admin}"}
            async with client.post("/admin/runs", json=body, headers=headers) as response:
                assert response.status == 201, await response.text()
                registered = await response.text()
            async with client.get(f"/admin/runs/{body['uid']}", headers=headers) as response:
                status = await response.json()
        assert status["repository"] == "https://forge.example/acme/widgets.git"
        assert FORGE_TOKEN not in json.dumps(status) and FORGE_TOKEN not in registered
        await server.stop()

    asyncio.run(main())
