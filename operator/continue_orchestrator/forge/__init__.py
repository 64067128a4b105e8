"""Forges behind one interface: GitHub (token or GitHub App) and Gitea/Forgejo.

Publishing a run's work (a branch, a pull request carrying its evidence, a summary on
the commit) and the gateway's git proxy need the same few things from whichever forge
hosts the repository, so they talk to a ``Forge`` (see ``docs/forges.md``):

- ``Repository(url)``: a repository URL parsed once (host, owner, name, clone URL);
- ``for_url(url, credentials)``: the backend for its host, ``GitHub`` (through
  githubkit) or ``Gitea`` (its REST API v1), given a ``Token`` or a ``GitHubApp``;
- ``Forge``: ``git_credential``, ``find_pull_request``, ``open_pull_request``
  (idempotent; a draft as each forge has them when asked), ``get_pull_request``
  (open, merged or closed) and ``post_summary``;
- ``PullRequest`` and ``GitCredential``, the values crossing that line;
- ``Backoff``: how transient failures are retried. Every failure is an
  ``errors.ForgeError`` saying whether it is ``transient`` and what the forge said.

``forge`` imports nothing of the project but ``errors``.
"""

from continue_orchestrator.forge._forge import Endpoint, Forge
from continue_orchestrator.forge._gitea import Gitea
from continue_orchestrator.forge._github import CHECK_NAME, GitHub
from continue_orchestrator.forge._github_app import REFRESH_BEFORE
from continue_orchestrator.forge._model import (
    Credentials,
    GitCredential,
    GitHubApp,
    Kind,
    PullRequest,
    State,
    Token,
)
from continue_orchestrator.forge._repository import Repository
from continue_orchestrator.forge._retry import Backoff
from continue_orchestrator.forge._select import api_url_of, for_url, kind_of

__all__ = [
    "CHECK_NAME",
    "REFRESH_BEFORE",
    "Backoff",
    "Credentials",
    "Endpoint",
    "Forge",
    "GitCredential",
    "GitHub",
    "GitHubApp",
    "Gitea",
    "Kind",
    "PullRequest",
    "Repository",
    "State",
    "Token",
    "api_url_of",
    "for_url",
    "kind_of",
]
