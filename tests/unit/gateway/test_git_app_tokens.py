"""A GitHub App's installation tokens as the gateway's forge credential.

`gateway.AppTokens` mints a token for a run's repository when its registration carries
none. Here GitHub's token endpoint is an httpx `MockTransport` answering as GitHub
documents (`POST /app/installations/{id}/access_tokens`: 201, `token`, `expires_at`),
which lets a clock decide expiry and a test make minting fail; the requests themselves
are checked against GitHub's OpenAPI description with Prism in
tests/integration/forge/test_git_gateway_github_app.py, which also clones through the
gateway with a minted token.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import json
import pathlib

import httpx
import jwt
import pytest
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from tests.unit.gateway import _git_support

from continue_orchestrator import errors, forge, gateway, ledger

INSTALLATION = 7
MINT_PATH = f"/api/v3/app/installations/{INSTALLATION}/access_tokens"
START = datetime.datetime(2026, 1, 5, 12, 0, tzinfo=datetime.UTC)


@pytest.fixture(scope="module")
def key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def pem(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> datetime.datetime:
        return self.now


class GitHub:
    """GitHub's token endpoint: each mint a new token valid for an hour from the clock."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.requests: list[httpx.Request] = []
        self.refuse = False

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if request.method != "POST" or request.url.path != MINT_PATH:
            return httpx.Response(404, json={"message": "Not Found"})
        if self.refuse:
            return httpx.Response(
                401,
                json={
                    "message": "A JSON web token could not be decoded",
                    "documentation_url": "https://docs.github.com/rest",
                },
            )
        expires = self.clock.now + datetime.timedelta(hours=1)
        token = f"ghs_minted-{len(self.requests)}-0123456789abcdef"
        return httpx.Response(
            201, json={"token": token, "expires_at": expires.isoformat(), "permissions": {}}
        )


def app_tokens(
    key: rsa.RSAPrivateKey, github: GitHub, api_url: str = "https://ghe.example/api/v3"
) -> gateway.AppTokens:
    return gateway.AppTokens(
        4242,
        pem(key),
        installation_id=INSTALLATION,
        api_url=api_url,
        transport=httpx.MockTransport(github),
        clock=github.clock,
    )


def test_the_app_serves_the_repositories_of_its_own_github_only(key: rsa.RSAPrivateKey) -> None:
    enterprise = app_tokens(key, GitHub(Clock()))
    assert enterprise.web_root == "https://ghe.example"
    assert enterprise.serves("https://ghe.example/acme/payments.git")
    assert enterprise.serves("git@ghe.example:acme/payments.git")
    assert not enterprise.serves("https://github.com/acme/payments.git")
    assert not enterprise.serves("http://ghe.example/acme/payments.git")  # never in clear
    assert not enterprise.serves("https://ghe.example:8443/acme/payments.git")
    assert not enterprise.serves("/srv/git/payments")
    dotcom = gateway.AppTokens(4242, pem(key))
    assert (dotcom.api_url, dotcom.web_root) == ("https://api.github.com", "https://github.com")
    assert dotcom.serves("https://github.com/acme/payments")
    assert not dotcom.serves("https://ghe.example/acme/payments.git")


@pytest.mark.parametrize(
    ("api_url", "message"),
    [
        ("https://ghe.example/api/v1", "is neither https://api.github.com nor"),
        ("https://ghe.example", "is neither https://api.github.com nor"),
        ("ftp://ghe.example/api/v3", "is neither https://api.github.com nor"),
        ("http://ghe.example/api/v3", "plain HTTP to another machine"),
    ],
)
def test_an_api_url_that_is_not_githubs_is_refused(
    key: rsa.RSAPrivateKey, api_url: str, message: str
) -> None:
    with pytest.raises(errors.OrchestratorError, match=message):
        gateway.AppTokens(4242, pem(key), api_url=api_url)


def test_a_key_that_github_apps_cannot_sign_with_is_refused_at_start() -> None:
    with pytest.raises(errors.ForgeError, match="does not load as an unencrypted PEM"):
        gateway.AppTokens(4242, "not a key")
    with pytest.raises(errors.ForgeError, match="not an RSA key"):
        gateway.AppTokens(4242, pem(ec.generate_private_key(ec.SECP256R1())))


def test_a_token_is_reused_then_minted_again_within_refresh_before_its_expiry(
    key: rsa.RSAPrivateKey,
) -> None:
    clock = Clock()
    github = GitHub(clock)
    tokens = app_tokens(key, github)
    url = "https://ghe.example/acme/payments.git"

    async def main() -> None:
        first = await tokens.credential(url)
        assert first.username == "x-access-token"
        assert first.expires_at == START + datetime.timedelta(hours=1)
        clock.now = START + datetime.timedelta(hours=1) - forge.REFRESH_BEFORE
        clock.now -= datetime.timedelta(seconds=1)
        assert (await tokens.credential(url)).secret == first.secret  # 5 min 1 s left
        assert len(github.requests) == 1
        clock.now += datetime.timedelta(seconds=1)  # exactly REFRESH_BEFORE left
        second = await tokens.credential(url)
        assert second.secret != first.secret
        assert second.expires_at == clock.now + datetime.timedelta(hours=1)
        assert len(github.requests) == 2
        other = await tokens.credential("https://ghe.example/acme/ledger.git")
        assert other.secret not in (first.secret, second.secret)  # one token per repository

    asyncio.run(main())
    bodies = [json.loads(request.content) for request in github.requests]
    assert bodies == [
        {"repositories": ["payments"]},
        {"repositories": ["payments"]},
        {"repositories": ["ledger"]},
    ]
    for request in github.requests:  # as the App: a JWT signed with its key
        scheme, _, signed = request.headers["authorization"].partition(" ")
        claims = jwt.decode(signed, key.public_key(), algorithms=["RS256"])
        assert (scheme, claims["iss"]) == ("Bearer", "4242")


def _refused_total() -> float:
    value = gateway.METRICS_REGISTRY.get_sample_value(
        "orchestrator_gateway_refused_calls_total", {"reason": "git-forge-credential"}
    )
    return value or 0.0


def test_a_token_that_cannot_be_minted_fails_the_fetch_saying_what_to_do(
    tmp_path: pathlib.Path, key: rsa.RSAPrivateKey
) -> None:
    github = GitHub(Clock())
    github.refuse = True
    url = "http://127.0.0.1:9/acme/payments.git"  # never reached: no token, no fetch
    tokens = app_tokens(key, github, api_url="http://127.0.0.1:9/api/v3")
    origin = gateway.GitOrigin(url=url, path="acme/payments.git")
    before = _refused_total()

    async def main() -> None:
        async with _git_support.served(
            tmp_path, origin=origin, local_repositories=False, app_tokens=tokens
        ) as served:
            cloned = await served.git("clone", served.git_url(url), str(tmp_path / "clone"))
            assert cloned.returncode != 0
            said = " ".join(cloned.stderr.split())
            assert "could not get an installation token of GitHub App 4242" in said
            assert "to fetch acme/payments.git" in said
            assert "GitHub refused the request (401)" in said
            assert "A JSON web token could not be decoded" in said
            assert "Install the gateway's GitHub App on the repository" in said
            assert "--github-app-key-file" in said and "credentialsSecretRef" in said
            (entry,) = served.entries()
            assert entry.kind is ledger.Kind.REPOSITORY_FETCH
            payload = entry.payload or {}
            assert payload["credential"] == "github-app:4242"
            assert payload["path"] == "acme/payments.git"
            assert "GitHub refused the request (401)" in payload["error"]
            assert "wants" not in payload

    asyncio.run(main())
    assert _refused_total() == before + 1
    assert [r.url.path for r in github.requests] == [MINT_PATH]  # no retry of a 401


def test_a_run_on_another_host_is_fetched_without_the_apps_token(
    tmp_path: pathlib.Path, key: rsa.RSAPrivateKey
) -> None:
    github = GitHub(Clock())
    tokens = app_tokens(key, github)  # GitHub Enterprise at ghe.example
    url = "http://127.0.0.1:9/acme/payments.git"
    origin = gateway.GitOrigin(url=url, path="acme/payments.git")

    async def main() -> None:
        async with _git_support.served(
            tmp_path, origin=origin, local_repositories=False, app_tokens=tokens
        ) as served:
            listed = await served.git("ls-remote", served.git_url(url))
            assert "the gateway could not reach the forge at 127.0.0.1:9" in listed.stderr

    asyncio.run(main())
    assert github.requests == []


def test_a_minted_token_the_forge_refuses_is_named_as_the_apps(
    tmp_path: pathlib.Path, key: rsa.RSAPrivateKey
) -> None:
    seen: list[str] = []

    async def refuse(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Authorization", ""))
        return web.Response(status=403, text="Resource not accessible by integration")

    async def main() -> None:
        forge_app = web.Application()
        forge_app.router.add_route("*", "/{tail:.*}", refuse)
        runner = web.AppRunner(forge_app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        root = f"http://127.0.0.1:{runner.addresses[0][1]}"
        github = GitHub(Clock())
        tokens = app_tokens(key, github, api_url=f"{root}/api/v3")
        url = f"{root}/acme/payments.git"
        origin = gateway.GitOrigin(url=url, path="acme/payments.git")
        try:
            async with _git_support.served(
                tmp_path, origin=origin, local_repositories=False, app_tokens=tokens
            ) as served:
                listed = await served.git("ls-remote", served.git_url(url))
        finally:
            await runner.cleanup()
        said = " ".join(listed.stderr.split())
        assert "with the installation token of GitHub App 4242 (HTTP 403)" in said
        assert "Install the gateway's GitHub App on the repository" in said
        assert len(github.requests) == 1  # one request: git stops at the refusal
        minted = "ghs_minted-1-0123456789abcdef"
        assert seen == ["Basic " + base64.b64encode(f"x-access-token:{minted}".encode()).decode()]
        assert minted not in listed.stderr

    asyncio.run(main())
