"""The values crossing the ``Forge`` interface, whichever forge is behind it.

Publishing (and the gateway's git proxy) talk to "a forge", never to GitHub or Gitea by
name, so what they exchange with it is defined once, here: a pull request as the
project needs it (``PullRequest``), the credential git uses over HTTP
(``GitCredential``), and what a forge is configured with (``Token`` or ``GitHubApp``).
"""

from __future__ import annotations

import dataclasses
import datetime
from typing import Literal

import pydantic

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
    draft: bool = False
    """Whether the forge shows it as a draft (Gitea and Forgejo: work in progress, a
    ``WIP:`` title prefix), as it said when last read."""


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
