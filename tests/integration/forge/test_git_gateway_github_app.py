"""The gateway's git endpoint fetching with a GitHub App installation token it minted.

A GitHub Enterprise Server is what this test stands up on loopback, because the
gateway's App is for one GitHub: github.com (not reachable here) or an Enterprise host
whose API is ``http(s)://HOST/api/v3`` and whose repositories are ``HOST/OWNER/NAME``.
Plain HTTP is accepted on loopback only (``forge.for_url``), so nothing about the TLS
rule is relaxed for the test. On that host:

- ``/api/v3/...`` is forwarded to Stoplight Prism serving GitHub's published OpenAPI
  description (`@octokit/openapi`, as in test_forge_github.py), which validates each
  request: the installation lookup and the token mint the gateway makes must be ones
  GitHub's description allows. Prism answers with the description's examples
  (installation 1; token ``ghs_16C7…`` expiring 2016-07-11T22:14:10Z), so the
  gateway's clock is set an hour before that expiry.
- ``/OWNER/NAME.git/...`` is the real ``git http-backend`` (CGI) on a bare repository,
  which serves a fetch only when HTTP Basic carries ``x-access-token`` and that token,
  as GitHub does.

A run registered without a forge token is cloned by the real git client through the
gateway: the host sees the minted token on every git request, the token is nowhere in
the ledger, the records, git's output or the logs, and it is minted again once its
expiry is within ``forge.REFRESH_BEFORE``. An App that is not installed on the
repository (GitHub's documented 404) fails the clone saying to install it.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import datetime
import json
import logging
import os
import pathlib
import subprocess
from collections.abc import Awaitable, Callable

import aiohttp
import pytest
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import rsa
from tests.integration.forge.test_forge_github import (
    EXAMPLE_EXPIRY,
    EXAMPLE_TOKEN,
    Clock,
    Exchange,
    Prism,
    Recorder,
    _pem,
    app_key,
    prism,
)
from tests.runner_support import REPO_FILES, make_origin
from tests.unit.gateway import _git_support

from continue_orchestrator import forge, gateway, ledger, runs

__all__ = ["app_key", "prism"]  # the fixtures, shared with test_forge_github.py

API = "/api/v3"
LOOKUP = "/repos/acme/payments/installation"
MINT = "/app/installations/1/access_tokens"
MINTED = "Basic " + base64.b64encode(f"x-access-token:{EXAMPLE_TOKEN}".encode()).decode()


@dataclasses.dataclass
class Enterprise:
    """A GitHub Enterprise Server on loopback: its API is Prism, its git is http-backend."""

    prism: Prism
    projects: pathlib.Path
    git_seen: list[str] = dataclasses.field(default_factory=list)
    """The Authorization header of each git request."""
    prefer: dict[str, str] = dataclasses.field(default_factory=dict)
    """API path -> Prism ``Prefer`` header (``code=404``: the documented error answer)."""
    url: str = ""

    async def api(self, request: web.Request) -> web.Response:
        path = request.path.removeprefix(API)
        headers = {k: v for k, v in request.headers.items() if k.lower() not in ("host",)}
        if path in self.prefer:
            headers["Prefer"] = self.prefer[path]
        async with (
            aiohttp.ClientSession() as session,
            session.request(
                request.method,
                f"{self.prism.url}{path}",
                params=request.query,
                headers=headers,
                data=await request.read(),
            ) as answer,
        ):
            passed = {
                k: v
                for k, v in answer.headers.items()
                if k.lower() in ("content-type", "sl-violations")
            }
            return web.Response(status=answer.status, body=await answer.read(), headers=passed)

    async def git(self, request: web.Request) -> web.StreamResponse:
        self.git_seen.append(request.headers.get("Authorization", ""))
        if request.headers.get("Authorization") != MINTED:
            return web.Response(status=401, headers={"WWW-Authenticate": 'Basic realm="GitHub"'})
        body = await request.read()
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.projects),
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_CONFIG_GLOBAL": os.devnull,
            "GIT_PROJECT_ROOT": str(self.projects),
            "GIT_HTTP_EXPORT_ALL": "1",
            "PATH_INFO": request.path,
            "REQUEST_METHOD": request.method,
            "QUERY_STRING": request.query_string,
            "CONTENT_TYPE": request.headers.get("Content-Type", ""),
            "CONTENT_LENGTH": str(len(body)),
            "REMOTE_USER": "x-access-token",
            "REMOTE_ADDR": "127.0.0.1",
        }
        if "Content-Encoding" in request.headers:
            env["HTTP_CONTENT_ENCODING"] = request.headers["Content-Encoding"]
        if "Git-Protocol" in request.headers:
            env["GIT_PROTOCOL"] = request.headers["Git-Protocol"]
        backend = await asyncio.create_subprocess_exec(
            "git",
            "http-backend",
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        )
        out, err = await backend.communicate(body)
        assert backend.returncode == 0, err.decode()
        head, _, payload = out.partition(b"\r\n\r\n")
        status, headers = 200, {}
        for line in head.decode().split("\r\n"):
            name, _, value = line.partition(": ")
            if name.lower() == "status":
                status = int(value.split()[0])
            else:
                headers[name] = value
        return web.Response(status=status, body=payload, headers=headers)


@dataclasses.dataclass
class Setup:
    host: Enterprise
    served: _git_support.Served
    recorder: Recorder
    clock: Clock
    origin_url: str
    commit: str


Check = Callable[[Setup], Awaitable[None]]


def _with_enterprise(
    tmp_path: pathlib.Path, prism: Prism, app_key: rsa.RSAPrivateKey, check: Check
) -> Setup:
    origin = make_origin(tmp_path, REPO_FILES)
    projects = tmp_path / "projects"
    (projects / "acme").mkdir(parents=True)
    origin.path.rename(projects / "acme" / "payments.git")
    host = Enterprise(prism, projects)
    recorder = Recorder()
    clock = Clock(EXAMPLE_EXPIRY - datetime.timedelta(hours=1))
    since = prism.mark()

    async def main() -> Setup:
        app = web.Application()
        app.router.add_route("*", API + "/{tail:.*}", host.api)
        app.router.add_route("*", "/{owner}/{name}.git/{tail:.*}", host.git)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        host.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
        url = f"{host.url}/acme/payments.git"
        tokens = gateway.AppTokens(
            4242, _pem(app_key), api_url=f"{host.url}{API}", transport=recorder, clock=clock
        )
        registered = gateway.GitOrigin(url=url, path=runs.git_path(url))  # no token
        try:
            async with _git_support.served(
                tmp_path, origin=registered, local_repositories=False, app_tokens=tokens
            ) as served:
                setup = Setup(host, served, recorder, clock, url, origin.commit)
                await check(setup)
                return setup
        finally:
            await runner.cleanup()

    setup = asyncio.run(main())
    broken = [(e.method, e.path, e.request_violations) for e in recorder.exchanges]
    assert [b for b in broken if b[2]] == [], "requests GitHub's description does not allow"
    assert prism.request_violations(since) == []
    assert recorder.exchanges, "the gateway asked GitHub for nothing"
    return setup


def _to(recorder: Recorder, method: str, path: str) -> list[Exchange]:
    return [e for e in recorder.exchanges if (e.method, e.path) == (method, API + path)]


def test_a_run_without_a_forge_token_clones_with_the_apps_minted_token(
    tmp_path: pathlib.Path,
    prism: Prism,
    app_key: rsa.RSAPrivateKey,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    said: list[str] = []

    async def check(setup: Setup) -> None:
        served, host = setup.served, setup.host
        for version in ("0", "2"):
            dest = tmp_path / f"clone-v{version}"
            cloned = await served.git(
                "-c", f"protocol.version={version}", "clone",
                served.git_url(setup.origin_url), str(dest),
            )  # fmt: skip
            said.append(cloned.stdout + cloned.stderr)
            assert cloned.returncode == 0, cloned.stderr
            head = await served.git("-C", str(dest), "rev-parse", "HEAD", authorization="")
            assert head.stdout.strip() == setup.commit
        assert host.git_seen and set(host.git_seen) == {MINTED}  # every request, the token
        assert len(_to(setup.recorder, "GET", LOOKUP)) == 1
        (mint,) = _to(setup.recorder, "POST", MINT)  # reused by every later request
        assert json.loads(mint.body) == {"repositories": ["payments"]}
        assert mint.status == 201

        # Within REFRESH_BEFORE of its expiry the token is minted again: one request
        # (protocol v0's ls-remote is the advertisement alone), one mint.
        setup.clock.now = EXAMPLE_EXPIRY - forge.REFRESH_BEFORE
        git_url = served.git_url(setup.origin_url)
        listed = await served.git("-c", "protocol.version=0", "ls-remote", git_url)
        said.append(listed.stdout + listed.stderr)
        assert listed.returncode == 0, listed.stderr
        assert len(_to(setup.recorder, "POST", MINT)) == 2
        assert len(_to(setup.recorder, "GET", LOOKUP)) == 1  # the installation is known

        fetches = [e for e in served.entries() if e.kind is ledger.Kind.REPOSITORY_FETCH]
        assert [(e.payload or {})["wants"] for e in fetches] == [[setup.commit]] * 2
        assert EXAMPLE_TOKEN not in json.dumps([e.payload for e in served.entries()])
        state = served.server.registry.state(_git_support.RUN)
        assert state is not None
        assert state.recorder.redact(EXAMPLE_TOKEN.encode()) == b"[REDACTED:forge-credential]"

    _with_enterprise(tmp_path, prism, app_key, check)
    assert all(EXAMPLE_TOKEN not in text for text in said)
    assert EXAMPLE_TOKEN not in caplog.text
    for path in (tmp_path / "records").rglob("*"):
        assert not path.is_file() or EXAMPLE_TOKEN.encode() not in path.read_bytes()
    for path in (tmp_path / "clone-v0" / ".git").rglob("*"):
        assert not path.is_file() or EXAMPLE_TOKEN.encode() not in path.read_bytes()


def test_an_app_not_installed_on_the_repository_fails_the_clone_saying_so(
    tmp_path: pathlib.Path, prism: Prism, app_key: rsa.RSAPrivateKey
) -> None:
    async def check(setup: Setup) -> None:
        setup.host.prefer[LOOKUP] = "code=404"  # GitHub's answer: the App is not installed
        served = setup.served
        cloned = await served.git("clone", served.git_url(setup.origin_url), str(tmp_path / "c"))
        assert cloned.returncode != 0
        text = " ".join(cloned.stderr.split())
        assert "could not get an installation token of GitHub App 4242" in text
        assert "GitHub refused the request (404)" in text
        assert "Install the gateway's GitHub App on the repository" in text
        assert setup.host.git_seen == []  # nothing reached git without a token
        assert _to(setup.recorder, "POST", MINT) == []
        (entry,) = served.entries()
        assert entry.kind is ledger.Kind.REPOSITORY_FETCH
        assert "GitHub refused the request (404)" in (entry.payload or {})["error"]

    _with_enterprise(tmp_path, prism, app_key, check)
