"""The Gitea (and Forgejo) backend, over Gitea's REST API v1 with a token.

What self-hosted teams run. Gitea has no check runs for an outside app to post and no
server-side filter of pull requests by head branch, so the summary is a marked comment
(``_summary``) and finding a pull request lists the open ones. Forgejo keeps Gitea's
API v1 for all of this, so one backend serves both.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

from continue_orchestrator import errors
from continue_orchestrator.forge import (
    _failure,
    _http,
    _model,
    _repository,
    _retry,
    _summary,
    _wire,
)

_PAGE = 50
_MAX_PAGES = 200


class Gitea:
    """Gitea or Forgejo at ``api_url`` (``https://HOST/api/v1``) for the repositories
    under ``web_root``, authenticated with a token."""

    kind: _model.Kind = "gitea"

    def __init__(
        self,
        api_url: str,
        web_root: str,
        credentials: _model.Token,
        *,
        timeout: float = 30.0,
        backoff: _retry.Backoff = _retry.DEFAULT,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.web_root = web_root
        self._token = credentials
        self._api = _http.Client(
            "Gitea",
            api_url,
            headers={"Authorization": f"token {credentials.token}"},
            timeout=timeout,
            backoff=backoff,
            sleep=sleep,
        )

    def _path(self, repo: _repository.Repository, rest: str = "") -> str:
        if repo.web_root != self.web_root:
            raise errors.ForgeError(
                f"repository {repo.clone_url} is not on this forge ({self.web_root})",
                where="Gitea",
                fix="make a forge for the repository's own host with forge.for_url",
            )
        return f"/repos/{repo.owner}/{repo.name}{rest}"

    def _pages(self, path: str, query: _http.Query) -> Iterator[object]:
        for page in range(1, _MAX_PAGES + 1):
            answer = self._api.call("GET", path, query={**query, "page": page, "limit": _PAGE})
            if not isinstance(answer, list) or not answer:
                return
            yield from answer
        raise errors.ForgeError(
            f"more than {_MAX_PAGES} pages of results",
            where=f"Gitea GET {self._api.url(path, query)}",
            fix="the forge seems to ignore paging; report it",
        )

    def git_credential(self, repo: _repository.Repository) -> _model.GitCredential:
        self._path(repo)
        return _model.GitCredential(
            username=self._token.username or "x-access-token", secret=self._token.token
        )

    def find_pull_request(
        self, repo: _repository.Repository, head_branch: str
    ) -> _model.PullRequest | None:
        path = self._path(repo, "/pulls")
        for item in self._pages(path, {"state": "open"}):
            pull = _failure.parse(_wire.Pull, item, forge="Gitea", where=f"GET {path}")
            if pull.is_from(repo.full_name, head_branch):
                return pull.public()
        return None

    def open_pull_request(
        self,
        repo: _repository.Repository,
        *,
        head_branch: str,
        base_branch: str,
        title: str,
        body: str,
    ) -> _model.PullRequest:
        existing = self.find_pull_request(repo, head_branch)
        if existing is None:
            path = self._path(repo, "/pulls")
            fields = {"head": head_branch, "base": base_branch, "title": title, "body": body}
            try:
                answer = self._api.call("POST", path, body=fields)
            except errors.ForgeError as e:  # opened meanwhile: Gitea answers 409
                existing = self.find_pull_request(repo, head_branch) if e.status == 409 else None
                if existing is None:
                    raise
            else:
                created = _failure.parse(_wire.Pull, answer, forge="Gitea", where=f"POST {path}")
                return created.public()
        path = self._path(repo, f"/pulls/{existing.number}")
        answer = self._api.call("PATCH", path, body={"body": body})
        updated = _failure.parse(_wire.Pull, answer, forge="Gitea", where=f"PATCH {path}")
        return updated.public()

    def get_pull_request(self, repo: _repository.Repository, number: int) -> _model.PullRequest:
        path = self._path(repo, f"/pulls/{int(number)}")
        pull = _failure.parse(
            _wire.Pull, self._api.call("GET", path), forge="Gitea", where=f"GET {path}"
        )
        return pull.public()

    def post_summary(
        self,
        repo: _repository.Repository,
        pr: _model.PullRequest,
        *,
        head_sha: str,
        title: str,
        summary: str,
    ) -> str:
        sha = _summary.commit(head_sha)
        text = _summary.body(head_sha=sha, title=title, summary=summary)
        path = self._path(repo, f"/issues/{pr.number}/comments")
        # Gitea lists an issue's comments whole: this endpoint takes no page or limit
        listed = self._api.call("GET", path)
        comments = _failure.parse(
            _summary.Comments, listed, forge="Gitea", where=f"GET {path}"
        ).root
        posted = _summary.ours(comments, sha)
        if posted is None:
            answer = self._api.call("POST", path, body={"body": text})
        else:
            edit = self._path(repo, f"/issues/comments/{posted.id}")
            answer = self._api.call("PATCH", edit, body={"body": text})
        comment = _failure.parse(_summary.Comment, answer, forge="Gitea", where=path)
        return comment.html_url
