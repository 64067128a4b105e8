"""The GitHub backend (github.com and GitHub Enterprise Server), through githubkit.

With a token (a PAT or any bearer token) the REST calls use it as it is. With a GitHub
App they use the repository's installation token (``_github_app``), the same one git
gets. The summary is a check run on the commit when an App posts it: GitHub lets only
Apps create check runs. With a token it is the marked pull request comment
``Forge.post_summary`` writes, as on Gitea.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable
from typing import Any, TypeVar

import githubkit
import pydantic
from githubkit_schemas.v2022_11_28.rest import RestNamespace

from continue_orchestrator.forge import (
    _forge,
    _github_app,
    _githubkit,
    _model,
    _repository,
    _summary,
    _wire,
)

CHECK_NAME = "Continue Orchestrator"
"""The check run's name: one per commit, whatever the run."""
_SUMMARY_LIMIT = 65535  # GitHub's limit on a check run's output.summary
_PAGE = 100
_MAX_PAGES = 100
_M = TypeVar("_M", bound=pydantic.BaseModel)
_Call = Callable[[RestNamespace], githubkit.Response[Any, Any]]


class _CheckRun(pydantic.BaseModel):
    html_url: str | None = None


def _clipped(summary: str) -> str:
    if len(summary) <= _SUMMARY_LIMIT:
        return summary
    note = "\n\n… (cut at GitHub's limit; the full summary is in the pull request)"
    return summary[: _SUMMARY_LIMIT - len(note)] + note


class GitHub(_forge.Forge):
    """GitHub's REST API at ``endpoint`` (github.com's, or a GitHub Enterprise Server's
    ``https://HOST/api/v3``), with a token or as a GitHub App."""

    kind: _model.Kind = "github"
    conflict_status = 422  # "A pull request already exists for OWNER:BRANCH."

    def __init__(self, endpoint: _forge.Endpoint, credentials: _model.Credentials) -> None:
        super().__init__(endpoint)
        self._config = _githubkit.config(endpoint)
        self._token = credentials if isinstance(credentials, _model.Token) else None
        self._app = (
            _github_app.InstallationTokens(credentials, self._config, clock=endpoint.clock)
            if isinstance(credentials, _model.GitHubApp)
            else None
        )

    def git_credential(self, repo: _repository.Repository) -> _model.GitCredential:
        self.check(repo)
        if self._app is not None:
            return self._app.credential(repo)
        assert self._token is not None
        return _model.GitCredential(username=_github_app.GIT_USERNAME, secret=self._token.token)

    def _read(self, model: type[_M], repo: _repository.Repository, where: str, call: _Call) -> _M:
        """``call`` with the repository's token; its answer read as ``model``."""
        client = githubkit.GitHub(self.git_credential(repo).secret, config=self._config)
        return _githubkit.read(client, model, where, call)

    def _native_summary(
        self, repo: _repository.Repository, pr: _model.PullRequest, *summary: str
    ) -> str | None:
        """As an App: a check run named ``CHECK_NAME`` on the commit, conclusion neutral
        (it carries evidence; it does not gate the merge). With a token: None (GitHub
        lets only Apps create check runs), so the summary is the marked comment."""
        if self._app is None:
            return None
        sha, title, text = summary
        check = self._read(
            _CheckRun,
            repo,
            f"POST /repos/{repo.full_name}/check-runs",
            lambda rest: rest.checks.create(
                repo.owner,
                repo.name,
                name=CHECK_NAME,
                head_sha=sha,
                status="completed",
                conclusion="neutral",
                completed_at=datetime.datetime.now(datetime.UTC),
                output={"title": title, "summary": _clipped(text)},
            ),
        )
        return check.html_url or f"{pr.url}/checks"

    def _open_pulls(self, repo: _repository.Repository, head_branch: str) -> list[_wire.Pull]:
        head = f"{repo.owner}:{head_branch}"
        return self._read(
            _wire.Pulls,
            repo,
            f"GET /repos/{repo.full_name}/pulls?head={head}",
            lambda rest: rest.pulls.list(
                repo.owner, repo.name, state="open", head=head, per_page=_PAGE
            ),
        ).root

    def _create_pull(self, repo: _repository.Repository, new: _wire.NewPull) -> _wire.Pull:
        return self._read(
            _wire.Pull,
            repo,
            f"POST /repos/{repo.full_name}/pulls",
            lambda rest: rest.pulls.create(
                repo.owner,
                repo.name,
                head=new.head,
                base=new.base,
                title=new.title,
                body=new.body,
                draft=new.draft,
            ),
        )

    def _edit_pull_body(self, repo: _repository.Repository, number: int, body: str) -> _wire.Pull:
        return self._read(
            _wire.Pull,
            repo,
            f"PATCH /repos/{repo.full_name}/pulls/{number}",
            lambda rest: rest.pulls.update(repo.owner, repo.name, number, body=body),
        )

    def _get_pull(self, repo: _repository.Repository, number: int) -> _wire.Pull:
        return self._read(
            _wire.Pull,
            repo,
            f"GET /repos/{repo.full_name}/pulls/{number}",
            lambda rest: rest.pulls.get(repo.owner, repo.name, number),
        )

    def _comments(self, repo: _repository.Repository, number: int) -> list[_summary.Comment]:
        comments: list[_summary.Comment] = []
        for page in range(1, _MAX_PAGES + 1):
            batch = self._comment_page(repo, number, page)
            comments.extend(batch)
            if len(batch) < _PAGE:
                break
        return comments

    def _comment_page(
        self, repo: _repository.Repository, number: int, page: int
    ) -> list[_summary.Comment]:
        return self._read(
            _summary.Comments,
            repo,
            f"GET /repos/{repo.full_name}/issues/{number}/comments?page={page}",
            lambda rest: rest.issues.list_comments(
                repo.owner, repo.name, number, per_page=_PAGE, page=page
            ),
        ).root

    def _put_comment(self, repo: _repository.Repository, post: _summary.Post) -> _summary.Comment:
        number, text, replaces = post.number, post.text, post.replaces
        if replaces is None:
            where = f"POST /repos/{repo.full_name}/issues/{number}/comments"
            call: _Call = lambda rest: rest.issues.create_comment(  # noqa: E731
                repo.owner, repo.name, number, body=text
            )
        else:
            where = f"PATCH /repos/{repo.full_name}/issues/comments/{replaces}"
            call = lambda rest: rest.issues.update_comment(  # noqa: E731
                repo.owner, repo.name, replaces, body=text
            )
        return self._read(_summary.Comment, repo, where, call)
