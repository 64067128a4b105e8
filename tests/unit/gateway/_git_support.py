"""A gateway serving one run's git endpoint to the real git client, for the git tests.

`served(tmp_path, origin=...)` starts a `gateway.Gateway` (real SQLite ledger; with
`app_tokens`, a GitHub App for runs registered without a forge token) behind
aiohttp's test server with the run `run-1` registered, and yields a `Served`: the
endpoint's base URL, the ledger's entries of the run, and `git(...)`, which runs the
real git client in a worker thread (the gateway answers on this thread's loop) with no
user or system configuration and the run token sent as git sends a credential.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import os
import pathlib
import subprocess
import time
from collections.abc import AsyncIterator, Sequence

from aiohttp import test_utils

from continue_orchestrator import gateway, ledger, policy, runs

TOKEN = "run-token-for-git-tests-0123456789abc"
RUN = "run-1"


def git_environment(home: pathlib.Path) -> dict[str, str]:
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_ASKPASS": "/bin/false",
        "NO_PROXY": "*",
        "LANG": "C",
    }


def basic(password: str, user: str = "run") -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@dataclasses.dataclass
class Served:
    server: gateway.Gateway
    client: test_utils.TestClient
    book: ledger.Ledger
    home: pathlib.Path

    @property
    def base(self) -> str:
        return str(self.client.make_url("")).rstrip("/")

    def git_url(self, repository_url: str) -> str:
        """The URL the runner clones from, as ``runs`` builds it for the bundle."""
        return runs.git_url(self.base, RUN, repository_url)

    def entries(self) -> list[ledger.Entry]:
        return list(self.book.entries(run_uid=RUN))

    async def git(
        self, *args: str, authorization: str | None = None, check: bool = False
    ) -> subprocess.CompletedProcess[str]:
        """Run git with ``authorization`` (default: Basic with the run token) as its
        ``http.extraHeader``, as the runner does."""
        header = authorization if authorization is not None else basic(TOKEN)
        config: Sequence[str] = (
            ("-c", f"http.extraHeader=Authorization: {header}") if header else ()
        )
        return await asyncio.to_thread(
            subprocess.run,
            ["git", *config, *args],
            env=git_environment(self.home),
            capture_output=True,
            text=True,
            check=check,
            timeout=60,
        )


@contextlib.asynccontextmanager
async def served(
    tmp_path: pathlib.Path,
    *,
    origin: gateway.GitOrigin | None,
    local_repositories: bool = True,
    expires_in: float = 600,
    app_tokens: gateway.AppTokens | None = None,
) -> AsyncIterator[Served]:
    book = ledger.open(f"sqlite:///{tmp_path / 'ledger.db'}")
    server = gateway.Gateway(
        record_root=str(tmp_path / "records"),
        ledger=book,
        local_repositories=local_repositories,
        app_tokens=app_tokens,
    )
    server.register_run(
        gateway.RunRegistration(
            uid=RUN,
            token=TOKEN,
            expires_at=time.time() + expires_in,
            policy_set=policy.compile([]),
            models={"m": gateway.Upstream("http://127.0.0.1:9/v1", "sk-unused")},
            allowed_egress=(),
            repository=origin,
        )
    )
    home = tmp_path / "git-home"
    home.mkdir(exist_ok=True)
    client = test_utils.TestClient(test_utils.TestServer(server.app()))
    await client.start_server()
    try:
        yield Served(server, client, book, home)
    finally:
        await client.close()
        await server.unregister_run(RUN)
        book.close()
