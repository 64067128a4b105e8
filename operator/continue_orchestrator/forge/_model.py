"""What every forge backend takes and gives: the ``Forge`` protocol and its values.

Publishing (and the gateway's git proxy) talk to "a forge", never to GitHub or Gitea by
name, so the values crossing that line are defined once, here: a pull request as the
project needs it (``PullRequest``), the credential git uses over HTTP
(``GitCredential``), and what a forge is configured with (``Token`` or ``GitHubApp``).
"""

from __future__ import annotations

import dataclasses
import datetime
from typing import Literal, Protocol

import pydantic

from continue_orchestrator.forge import _repository

Kind = Literal["github", "gitea"]
State = Literal["open", "merged", "closed"]


class PullRequest(pydantic.BaseModel):
    """A pull request as publishing sees it; ``state`` tells merged from closed unmerged."""

    model_config = pydantic.ConfigDict(frozen=True, extra="forbid")

    number: int = pydantic.Field(ge=1)
    url: str
    """The pull request's web page."""
    head_branch: str
    head_sha: str
    base_branch: str
    state: State


@dataclasses.dataclass(frozen=True)
class GitCredential:
    """A username and secret for git over HTTP (Basic auth) to the forge.

    ``expires_at`` is set for a GitHub App installation token: ask the forge again
    before then (``git_credential`` returns the same token until it nears expiry).
    """

    username: str
    secret: str = dataclasses.field(repr=False)
    expires_at: datetime.datetime | None = None


@dataclasses.dataclass(frozen=True)
class Token:
    """A personal, bot or project access token (GitHub PAT, Gitea or Forgejo token)."""

    token: str = dataclasses.field(repr=False)
    username: str = ""
    """The account the token belongs to, for git's Basic auth; GitHub ignores it, Gitea
    and Forgejo accept any name with a token as the password. Empty: ``x-access-token``."""


@dataclasses.dataclass(frozen=True)
class GitHubApp:
    """A GitHub App: its id and private key (PEM). Installation tokens are minted per
    repository from them; ``installation_id`` skips looking the installation up."""

    app_id: int | str
    private_key: str = dataclasses.field(repr=False)
    installation_id: int | None = None


Credentials = Token | GitHubApp


class Forge(Protocol):
    """One forge host. Synchronous: async callers use ``asyncio.to_thread``.

    Every method raises ``errors.ForgeError`` (``transient`` when a retry may help) with
    the forge's own message; transient failures were already retried with backoff.
    """

    @property
    def kind(self) -> Kind:
        """``"github"`` or ``"gitea"`` (Forgejo is Gitea here)."""
        ...

    def git_credential(self, repo: _repository.Repository) -> GitCredential:
        """The username and secret for git over HTTP to ``repo``."""
        ...

    def find_pull_request(
        self, repo: _repository.Repository, head_branch: str
    ) -> PullRequest | None:
        """The open pull request from ``head_branch`` of ``repo`` itself, if there is one."""
        ...

    def open_pull_request(
        self,
        repo: _repository.Repository,
        *,
        head_branch: str,
        base_branch: str,
        title: str,
        body: str,
    ) -> PullRequest:
        """Open a pull request, or return the open one for ``head_branch`` with its body
        replaced by ``body``: never a second one."""
        ...

    def get_pull_request(self, repo: _repository.Repository, number: int) -> PullRequest:
        """Pull request ``number`` as it is now (open, merged or closed unmerged)."""
        ...

    def post_summary(
        self,
        repo: _repository.Repository,
        pr: PullRequest,
        *,
        head_sha: str,
        title: str,
        summary: str,
    ) -> str:
        """Post the run's summary for commit ``head_sha`` of ``pr``; return its URL."""
        ...
