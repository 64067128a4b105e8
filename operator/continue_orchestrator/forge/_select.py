"""``forge.for_url``: which backend serves a repository URL, and at which API URL.

github.com is GitHub; any other host is taken for Gitea/Forgejo unless the caller says
``kind="github"`` (a GitHub Enterprise Server has no name that says so). The API URL
follows from the host (``https://api.github.com``, ``https://HOST/api/v3`` for GitHub
Enterprise, ``https://HOST[/sub-path]/api/v1`` for Gitea) and can be given instead, as
the tests do for their local servers. Credentials travel only over HTTPS, or plain
HTTP to this machine.
"""

from __future__ import annotations

import datetime
import urllib.parse
from collections.abc import Callable

import httpx

from continue_orchestrator import errors
from continue_orchestrator.forge import (
    _clock,
    _forge,
    _gitea,
    _github,
    _model,
    _repository,
    _retry,
)

GITHUB_HOSTS = frozenset({"github.com", "www.github.com"})


def kind_of(repo: _repository.Repository) -> _model.Kind:
    """The backend a repository's host implies: github.com is GitHub, the rest Gitea."""
    return "github" if repo.host in GITHUB_HOSTS else "gitea"


def api_url_of(repo: _repository.Repository, kind: _model.Kind) -> str:
    """The REST API root for ``repo``'s forge of ``kind``."""
    if kind == "github":
        if repo.host in GITHUB_HOSTS:
            return "https://api.github.com"
        return f"{repo.web_root}/api/v3"
    return f"{repo.web_root}/api/v1"


def _check_transport(api_url: str, repo: _repository.Repository) -> None:
    parts = urllib.parse.urlsplit(api_url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise errors.ForgeError(
            f"API URL {api_url!r} is not an http(s) URL",
            where=f"forge for {repo.clone_url}",
            fix="give the forge's REST API root, e.g. https://gitea.example/api/v1",
        )
    if parts.scheme == "http" and not _repository.loopback(parts.hostname):
        raise errors.ForgeError(
            f"API URL {api_url} is plain HTTP to another machine; the credential would "
            "cross the network in clear",
            where=f"forge for {repo.clone_url}",
            fix="use the forge's https:// URL (plain http is accepted on loopback only)",
        )


def for_url(
    url: str | _repository.Repository,
    credentials: _model.Credentials,
    *,
    kind: _model.Kind | None = None,
    api_url: str | None = None,
    timeout: float = 30.0,
    backoff: _retry.Backoff = _retry.DEFAULT,
    transport: httpx.BaseTransport | None = None,
    clock: Callable[[], datetime.datetime] = _clock.utc_now,
) -> _forge.Forge:
    """The forge serving the repository at ``url`` (and every repository on its host).

    ``kind`` overrides the choice by host; ``api_url`` the API root. ``transport`` and
    ``clock`` reach the GitHub backend (an httpx transport, the clock that decides
    when an App token is refreshed). Raises ``errors.ForgeError`` for a URL that names
    no repository, App credentials for Gitea, or plain HTTP to another machine.
    """
    repo = url if isinstance(url, _repository.Repository) else _repository.Repository(url)
    chosen = kind or kind_of(repo)
    api = (api_url or api_url_of(repo, chosen)).rstrip("/")
    _check_transport(api, repo)
    endpoint = _forge.Endpoint(
        api, repo.web_root, timeout=timeout, backoff=backoff, transport=transport, clock=clock
    )
    if chosen == "github":
        return _github.GitHub(endpoint, credentials)
    if not isinstance(credentials, _model.Token):
        raise errors.ForgeError(
            "a GitHub App cannot sign in to Gitea or Forgejo",
            where=f"forge for {repo.clone_url}",
            fix="give a Gitea access token, or kind='github' for a GitHub Enterprise host",
        )
    return _gitea.Gitea(endpoint, credentials)
