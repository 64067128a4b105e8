"""The Gitea (and Forgejo) backend, over Gitea's REST API v1 with a token.

What self-hosted teams run. Gitea has no check runs for an outside app to post and no
server-side filter of pull requests by head branch, so the summary is the marked
comment ``Forge.post_summary`` writes and finding a pull request lists the open ones.
Nor has it a draft flag to set: a draft is a title with a work-in-progress prefix
(``WIP:``), which Gitea then reports as ``draft``.
Forgejo keeps Gitea's API v1 for all of this, so one backend serves both.
"""

from __future__ import annotations

from typing import TypeVar

import pydantic

from continue_orchestrator import errors
from continue_orchestrator.forge import (
    _failure,
    _forge,
    _http,
    _model,
    _repository,
    _summary,
    _wire,
)

WIP_PREFIXES = ("WIP:", "[WIP]")
"""Gitea's default ``[repository.pull-request] WORK_IN_PROGRESS_PREFIXES`` (Forgejo's
too): a pull request whose title starts with one (any case) is a draft."""
_PAGE = 50
_M = TypeVar("_M", bound=pydantic.BaseModel)
_MAX_PAGES = 200


def draft_title(title: str) -> str:
    """``title`` as a draft's: Gitea has no draft flag to set, it reads one from a
    work-in-progress prefix, so the title gets ``WIP: `` unless it has one already."""
    if title.upper().startswith(tuple(p.upper() for p in WIP_PREFIXES)):
        return title
    return f"{WIP_PREFIXES[0]} {title}"


class Gitea(_forge.Forge):
    """Gitea or Forgejo at ``endpoint`` (API ``https://HOST/api/v1``), authenticated
    with a token."""

    kind: _model.Kind = "gitea"
    conflict_status = 409  # "pull request already exists for these targets"

    def __init__(self, endpoint: _forge.Endpoint, credentials: _model.Token) -> None:
        super().__init__(endpoint)
        self._token = credentials
        self._api = _http.Client(
            "Gitea",
            endpoint.api_url,
            headers={"Authorization": f"token {credentials.token}"},
            timeout=endpoint.timeout,
            backoff=endpoint.backoff,
            sleep=endpoint.sleep,
        )

    def git_credential(self, repo: _repository.Repository) -> _model.GitCredential:
        self.check(repo)
        return _model.GitCredential(
            username=self._token.username or "x-access-token", secret=self._token.token
        )

    def _read(
        self,
        model: type[_M],
        method: str,
        repo: _repository.Repository,
        path: str,
        *,
        query: _http.Query | None = None,
        body: object = None,
    ) -> _M:
        """Call ``path`` under the repository's API path; the answer read as ``model``."""
        full = f"/repos/{repo.full_name}{path}"
        answer = self._api.call(method, full, query=query, body=body)
        return _failure.parse(model, answer, forge="Gitea", where=f"{method} {full}")

    def _open_pulls(self, repo: _repository.Repository, head_branch: str) -> list[_wire.Pull]:
        pulls: list[_wire.Pull] = []
        for page in range(1, _MAX_PAGES + 1):
            query: _http.Query = {"state": "open", "page": page, "limit": _PAGE}
            batch = self._read(_wire.Pulls, "GET", repo, "/pulls", query=query).root
            if not batch:
                return pulls
            pulls.extend(batch)
        raise errors.ForgeError(
            f"more than {_MAX_PAGES} pages of open pull requests",
            where=f"Gitea GET /repos/{repo.full_name}/pulls",
            fix="the forge seems to ignore paging; report it",
        )

    def _create_pull(self, repo: _repository.Repository, new: _wire.NewPull) -> _wire.Pull:
        title = draft_title(new.title) if new.draft else new.title
        fields = {"head": new.head, "base": new.base, "title": title, "body": new.body}
        return self._read(_wire.Pull, "POST", repo, "/pulls", body=fields)

    def _edit_pull_body(self, repo: _repository.Repository, number: int, body: str) -> _wire.Pull:
        return self._read(_wire.Pull, "PATCH", repo, f"/pulls/{number}", body={"body": body})

    def _get_pull(self, repo: _repository.Repository, number: int) -> _wire.Pull:
        return self._read(_wire.Pull, "GET", repo, f"/pulls/{number}")

    def _comments(self, repo: _repository.Repository, number: int) -> list[_summary.Comment]:
        # Gitea lists an issue's comments whole: this endpoint takes no page or limit
        return self._read(_summary.Comments, "GET", repo, f"/issues/{number}/comments").root

    def _put_comment(self, repo: _repository.Repository, post: _summary.Post) -> _summary.Comment:
        method, path = (
            ("POST", f"/issues/{post.number}/comments")
            if post.replaces is None
            else ("PATCH", f"/issues/comments/{post.replaces}")
        )
        return self._read(_summary.Comment, method, repo, path, body={"body": post.text})
