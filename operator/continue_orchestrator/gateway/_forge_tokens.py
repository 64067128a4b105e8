"""Forge credentials the gateway mints itself: a GitHub App's installation tokens.

A run whose AgentRun names no ``credentialsSecretRef`` is registered without a forge
token. When its repository is on the GitHub the gateway's App belongs to (github.com,
or a GitHub Enterprise Server named by its API URL ``https://HOST/api/v3``), the git
endpoint fetches with an installation token minted for that one repository by the
forge package (``forge.GitHub.git_credential``: minted per repository, reused until
``forge.REFRESH_BEFORE`` its expiry, one lock for all). A registration that carries a
token keeps fetching with it. The minted token stays in this process: it is never in a
registration, an answer, a log line or the ledger, and each run's record redacts it.
Minting is a blocking githubkit call, so it runs in a worker thread.
"""

from __future__ import annotations

import asyncio
import datetime
import functools
import urllib.parse
from collections.abc import Callable

import httpx

from continue_orchestrator import errors, forge

GITHUB_API = "https://api.github.com"
GITHUB_WEB = "https://github.com"
BACKOFF = forge.Backoff(attempts=3, base_seconds=0.5, max_seconds=4.0, max_retry_after=10.0)
"""Retries of a transient mint failure: short, for a git client is waiting."""
_ENTERPRISE_SUFFIX = "/api/v3"
_WHERE = "orchestrator gateway --github-api-url"
_NOW = functools.partial(datetime.datetime.now, datetime.UTC)
"""The clock that decides when a token is minted again (a test gives its own)."""


def web_root_of(api_url: str) -> str:
    """The root of repository URLs on the GitHub whose REST API is at ``api_url``:
    ``https://github.com`` for ``https://api.github.com``, ``https://HOST`` for a GitHub
    Enterprise Server's ``https://HOST/api/v3`` (the inverse of ``forge.api_url_of``)."""
    api = api_url.rstrip("/")
    if api == GITHUB_API:
        return GITHUB_WEB
    parts = urllib.parse.urlsplit(api)
    if parts.scheme in ("http", "https") and parts.netloc and api.endswith(_ENTERPRISE_SUFFIX):
        root = api.removesuffix(_ENTERPRISE_SUFFIX)
        if forge.api_url_of(forge.Repository(f"{root}/owner/name"), "github") == api:
            return root
    raise errors.GatewayError(
        f"{api_url!r} is neither {GITHUB_API} nor a GitHub Enterprise Server's API URL",
        where=_WHERE,
        fix="give https://HOST/api/v3 for GitHub Enterprise Server, or leave it out for github.com",
    )


class AppTokens:
    """Installation tokens of one GitHub App, for repositories on its GitHub host."""

    def __init__(
        self,
        app_id: int | str,
        private_key: str,
        *,
        installation_id: int | None = None,
        api_url: str = GITHUB_API,
        transport: httpx.BaseTransport | None = None,
        clock: Callable[[], datetime.datetime] = _NOW,
    ) -> None:
        """The App ``app_id`` with its ``private_key`` (PEM); ``installation_id`` skips
        looking each repository's installation up. Raises ``errors.GatewayError`` for an
        API URL that is not GitHub's, ``errors.ForgeError`` for a key that is not an RSA
        PEM or plain HTTP to another machine: at start, before any run depends on it."""
        app = forge.GitHubApp(app_id, private_key, installation_id)
        self.app_id = app_id
        self.api_url = api_url.rstrip("/")
        self.web_root = web_root_of(self.api_url)
        # ``for_url`` names a forge by one of its repositories; any one on the host will do.
        self._forge = forge.for_url(
            f"{self.web_root}/owner/name.git",
            app,
            kind="github",
            api_url=self.api_url,
            backoff=BACKOFF,
            transport=transport,
            clock=clock,
        )

    def serves(self, url: str) -> bool:
        """Whether the repository at ``url`` is on this App's GitHub (same scheme, host)."""
        try:
            return forge.Repository(url).web_root == self.web_root
        except errors.ForgeError:
            return False

    async def credential(self, url: str) -> forge.GitCredential:
        """A token for the repository at ``url`` (minted, or the cached one while it has
        more than ``forge.REFRESH_BEFORE`` left). Raises ``errors.ForgeError``."""
        repo = forge.Repository(url)
        return await asyncio.to_thread(self._forge.git_credential, repo)
