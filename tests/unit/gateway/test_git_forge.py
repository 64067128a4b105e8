"""The git endpoint in front of a forge: the gateway's credential, streaming, the forge's no.

The forge here is a small aiohttp app that checks HTTP Basic against its own token and
serves a real repository with `git upload-pack` (the gateway's local backend, reused as
a forge would run it), and that can answer 401, 404 or a redirect instead. The run token
opens the gateway; only the forge credential the gateway was registered with reaches the
forge; requests and packs pass chunk by chunk, not held whole. (The real forge, Gitea,
is tests/integration/forge/test_git_gateway.py.)
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import pathlib
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from tests.runner_support import REPO_FILES, Origin, make_origin
from tests.unit.gateway import _git_support
from tests.unit.gateway._git_support import TOKEN, basic

from continue_orchestrator import gateway, ledger, runs
from continue_orchestrator.gateway import _git_fetch

FORGE_USER = "forge-bot"
FORGE_TOKEN = "forge-credential-canary-7f3e9a1c5b2d"


@dataclasses.dataclass
class Forge:
    """What the fake forge saw, and how it answers."""

    origin: Origin
    answer: int = 200
    seen: list[dict[str, str]] = dataclasses.field(default_factory=list)
    hold: asyncio.Event | None = None
    """When set up: a POST answers its first chunk, then waits for this before the rest."""
    got_first: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)

    async def serve(self, request: web.Request) -> web.StreamResponse:
        self.seen.append({"path": request.path_qs, **request.headers})
        expected = "Basic " + base64.b64encode(f"{FORGE_USER}:{FORGE_TOKEN}".encode()).decode()
        if request.headers.get("Authorization") != expected:
            return web.Response(status=401, headers={"WWW-Authenticate": 'Basic realm="forge"'})
        if self.answer == 302:
            raise web.HTTPFound("https://elsewhere.example/acme/moved.git/info/refs")
        if self.answer != 200:
            return web.Response(status=self.answer, text="no such repository")
        if self.hold is not None and request.method == "POST":
            return await self._held(request)
        advertise = request.path.endswith("/info/refs")
        body = None if advertise else _git_fetch.request_body(request, lambda chunk: None)
        served = await _git_fetch.from_directory(
            str(self.origin.path), request, advertise=advertise, body=body
        )
        return served.response

    async def _held(self, request: web.Request) -> web.StreamResponse:
        first = await request.content.readany()
        self.got_first.set()
        rest = await request.content.read()
        response = web.StreamResponse(
            headers={"Content-Type": "application/x-git-upload-pack-result"}
        )
        await response.prepare(request)
        await response.write(b"0008NAK\n")
        assert self.hold is not None
        await self.hold.wait()
        await response.write(json.dumps({"first": len(first), "rest": len(rest)}).encode())
        return response


Check = Callable[[_git_support.Served, Forge], Awaitable[None]]


def _with_forge(
    tmp_path: pathlib.Path,
    check: Check,
    *,
    github_app: Callable[[str], gateway.AppTokens] | None = None,
    **forge_options: object,
) -> None:
    """Run ``check`` on a gateway in front of the fake forge; ``github_app`` makes the gateway's
    GitHub App from the forge's API URL (``http://127.0.0.1:PORT/api/v3``)."""
    origin = make_origin(tmp_path, REPO_FILES)

    async def main() -> None:
        forge = Forge(origin, **forge_options)  # type: ignore[arg-type]
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", forge.serve)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        url = f"http://127.0.0.1:{runner.addresses[0][1]}/acme/payments.git"
        registered = gateway.GitOrigin(
            url=url, path=runs.git_path(url), username=FORGE_USER, token=FORGE_TOKEN
        )
        root = url.removesuffix("/acme/payments.git")
        try:
            async with _git_support.served(
                tmp_path,
                origin=registered,
                local_repositories=False,
                app_tokens=github_app(f"{root}/api/v3") if github_app else None,
            ) as served:
                await check(served, forge)
                everything = json.dumps([e.payload for e in served.entries()])
                assert FORGE_TOKEN not in everything and TOKEN not in everything
        finally:
            await runner.cleanup()
        for files in (tmp_path / "records").rglob("*"):
            assert not files.is_file() or FORGE_TOKEN.encode() not in files.read_bytes()

    asyncio.run(main())


def _url(served: _git_support.Served) -> str:
    return served.git_url("https://forge.example/acme/payments.git")


def test_the_forge_gets_the_gateways_credential_and_never_the_run_token(
    tmp_path: pathlib.Path,
) -> None:
    async def check(served: _git_support.Served, forge: Forge) -> None:
        for version in ("0", "2"):
            dest = tmp_path / f"clone-{version}"
            cloned = await served.git(
                "-c", f"protocol.version={version}", "clone", _url(served), str(dest)
            )
            assert cloned.returncode == 0, cloned.stderr
            head = await served.git("-C", str(dest), "rev-parse", "HEAD", authorization="")
            assert head.stdout.strip() == forge.origin.commit
        assert forge.seen, "nothing reached the forge"
        for request in forge.seen:
            assert request["Authorization"].startswith("Basic ")
            assert TOKEN not in json.dumps(request)
            assert request["User-Agent"].startswith("git/")
        assert forge.seen[0]["path"] == ("/acme/payments.git/info/refs?service=git-upload-pack")
        v2 = [r for r in forge.seen if r.get("Git-Protocol") == "version=2"]
        assert v2 and all(r["path"].startswith("/acme/payments.git/") for r in v2)
        fetches = [e for e in served.entries() if e.kind is ledger.Kind.REPOSITORY_FETCH]
        assert [(e.payload or {})["wants"] for e in fetches] == [[forge.origin.commit]] * 2

    _with_forge(tmp_path, check)


def test_a_registered_token_is_used_where_the_gateways_app_could_mint_one(
    tmp_path: pathlib.Path,
) -> None:
    asked: list[httpx.Request] = []

    def github(request: httpx.Request) -> httpx.Response:
        asked.append(request)
        return httpx.Response(500)

    def app(api_url: str) -> gateway.AppTokens:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode()
        tokens = gateway.AppTokens(
            1, pem, installation_id=1, api_url=api_url, transport=httpx.MockTransport(github)
        )
        assert tokens.serves(api_url.removesuffix("/api/v3") + "/acme/payments.git")
        return tokens

    async def check(served: _git_support.Served, forge: Forge) -> None:
        cloned = await served.git("clone", _url(served), str(tmp_path / "clone"))
        assert cloned.returncode == 0, cloned.stderr  # the fake forge took FORGE_TOKEN
        assert forge.seen

    _with_forge(tmp_path, check, github_app=app)
    assert asked == [], "the App was asked for a token the registration already had"


def test_a_forge_that_refuses_the_credential_is_named_with_what_to_fix(
    tmp_path: pathlib.Path,
) -> None:
    async def check(served: _git_support.Served, forge: Forge) -> None:
        forge.answer = 403
        cloned = await served.git("clone", _url(served), str(tmp_path / "c"))
        assert cloned.returncode != 0
        assert "refused to serve acme/payments.git with the credential the gateway holds" in (
            cloned.stderr
        )
        assert "HTTP 403" in cloned.stderr and "credentialsSecretRef" in cloned.stderr
        forge.answer = 404
        missing = await served.git("ls-remote", _url(served))
        assert "has no repository acme/payments.git" in missing.stderr
        forge.answer = 302
        moved = await served.git("ls-remote", _url(served))
        assert "redirected the fetch of acme/payments.git (HTTP 302" in moved.stderr
        assert [r["path"] for r in forge.seen].count(
            "/acme/payments.git/info/refs?service=git-upload-pack"
        ) == 3  # the redirect was not followed
        assert [e.kind for e in served.entries()] == []  # no fetch, and nothing refused

    _with_forge(tmp_path, check)


def test_request_and_pack_pass_through_as_they_come(tmp_path: pathlib.Path) -> None:
    async def check(served: _git_support.Served, forge: Forge) -> None:
        assert forge.hold is not None
        path = _url(served).removeprefix(served.base) + "/git-upload-pack"
        want = f"want {forge.origin.commit}\n".encode()
        wants = b"%04x" % (len(want) + 4) + want + b"0000"
        sent_rest = asyncio.Event()

        async def body() -> AsyncIterator[bytes]:
            yield wants
            await forge.got_first.wait()  # the forge has the wants while the rest is unsent
            sent_rest.set()
            yield b"0009done\n"

        headers = {
            "Authorization": basic(TOKEN),
            "Content-Type": "application/x-git-upload-pack-request",
        }
        async with served.client.post(path, data=body(), headers=headers) as response:
            assert response.status == 200
            assert await response.content.readexactly(8) == b"0008NAK\n"  # before the rest
            assert sent_rest.is_set()
            forge.hold.set()
            counted = json.loads(await response.content.read())
        assert counted == {"first": len(wants), "rest": len(b"0009done\n")}
        (fetch,) = [e for e in served.entries() if e.kind is ledger.Kind.REPOSITORY_FETCH]
        assert (fetch.payload or {})["wants"] == [forge.origin.commit]

    _with_forge(tmp_path, check, hold=asyncio.Event())
