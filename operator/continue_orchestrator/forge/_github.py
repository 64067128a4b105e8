"""The GitHub backend (github.com and GitHub Enterprise Server), through githubkit.

With a token (a PAT or any bearer token) the REST calls use it as it is. With a GitHub
App they use the repository's installation token (``_github_app``), the same one git
gets. The summary is a check run on the commit when an App posts it: GitHub lets only
Apps create check runs. With a token it is a marked pull request comment
(``_summary``), as on Gitea.
"""

from __future__ import annotations

import datetime
from typing import Any

import githubkit
import httpx
import pydantic
from githubkit_schemas.v2022_11_28.rest import RestNamespace

from continue_orchestrator import errors
from continue_orchestrator.forge import (
    _failure,
    _github_app,
    _githubkit,
    _model,
    _repository,
    _retry,
    _summary,
    _wire,
)

CHECK_NAME = "Continue Orchestrator"
"""The check run's name: one per commit, whatever the run."""
_SUMMARY_LIMIT = 65535  # GitHub's limit on a check run's output.summary
_PAGE = 100
_MAX_PAGES = 100


class _CheckRun(pydantic.BaseModel):
    html_url: str | None = None


def _clipped(summary: str) -> str:
    if len(summary) <= _SUMMARY_LIMIT:
        return summary
    note = "\n\n… (cut at GitHub's limit; the full summary is in the pull request)"
    return summary[: _SUMMARY_LIMIT - len(note)] + note


class GitHub:
    """GitHub's REST API at ``api_url`` for the repositories under ``web_root``
    (``https://github.com``, or a GitHub Enterprise Server's root)."""

    kind: _model.Kind = "github"

    def __init__(
        self,
        api_url: str,
        web_root: str,
        credentials: _model.Credentials,
        *,
        timeout: float = 30.0,
        backoff: _retry.Backoff = _retry.DEFAULT,
        transport: httpx.BaseTransport | None = None,
        clock: _github_app.Clock = _github_app.utc_now,
    ) -> None:
        self.web_root = web_root
        self._config = _githubkit.config(
            api_url, timeout=timeout, backoff=backoff, transport=transport
        )
        self._token = credentials if isinstance(credentials, _model.Token) else None
        self._app = (
            _github_app.InstallationTokens(credentials, self._config, clock=clock)
            if isinstance(credentials, _model.GitHubApp)
            else None
        )

    def _check(self, repo: _repository.Repository) -> None:
        if repo.web_root != self.web_root:
            raise errors.ForgeError(
                f"repository {repo.clone_url} is not on this forge ({self.web_root})",
                where="GitHub",
                fix="make a forge for the repository's own host with forge.for_url",
            )

    def _client(self, repo: _repository.Repository) -> githubkit.GitHub[Any]:
        """A client with the repository's token. Keep it referenced while its
        ``_githubkit.rest`` namespace is in use: the namespace holds it weakly."""
        return githubkit.GitHub(self.git_credential(repo).secret, config=self._config)

    def git_credential(self, repo: _repository.Repository) -> _model.GitCredential:
        self._check(repo)
        if self._app is not None:
            return self._app.credential(repo)
        assert self._token is not None
        return _model.GitCredential(username=_github_app.GIT_USERNAME, secret=self._token.token)

    def find_pull_request(
        self, repo: _repository.Repository, head_branch: str
    ) -> _model.PullRequest | None:
        client = self._client(repo)
        rest = _githubkit.rest(client)
        with _githubkit.calls():
            answer = rest.pulls.list(
                repo.owner,
                repo.name,
                state="open",
                head=f"{repo.owner}:{head_branch}",
                per_page=_PAGE,
            )
        where = f"GET /repos/{repo.full_name}/pulls"
        pulls = _failure.parse(_wire.Pulls, answer.json(), forge="GitHub", where=where)
        found = (p for p in pulls.root if p.is_from(repo.full_name, head_branch))
        pull = next(found, None)
        return pull.public() if pull is not None else None

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
        client = self._client(repo)
        rest = _githubkit.rest(client)
        if existing is None:
            try:
                with _githubkit.calls():
                    answer = rest.pulls.create(
                        repo.owner,
                        repo.name,
                        head=head_branch,
                        base=base_branch,
                        title=title,
                        body=body,
                    )
            except errors.ForgeError as e:  # "A pull request already exists": 422
                existing = self.find_pull_request(repo, head_branch) if e.status == 422 else None
                if existing is None:
                    raise
            else:
                return self._pull(answer.json(), f"POST /repos/{repo.full_name}/pulls")
        with _githubkit.calls():
            answer = rest.pulls.update(repo.owner, repo.name, existing.number, body=body)
        return self._pull(answer.json(), f"PATCH /repos/{repo.full_name}/pulls/{existing.number}")

    def get_pull_request(self, repo: _repository.Repository, number: int) -> _model.PullRequest:
        client = self._client(repo)
        rest = _githubkit.rest(client)
        with _githubkit.calls():
            answer = rest.pulls.get(repo.owner, repo.name, int(number))
        return self._pull(answer.json(), f"GET /repos/{repo.full_name}/pulls/{number}")

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
        client = self._client(repo)
        rest = _githubkit.rest(client)
        if self._app is None:
            return self._comment(
                rest, repo, pr, sha, _summary.body(head_sha=sha, title=title, summary=summary)
            )
        with _githubkit.calls():
            answer = rest.checks.create(
                repo.owner,
                repo.name,
                name=CHECK_NAME,
                head_sha=sha,
                status="completed",
                conclusion="neutral",
                completed_at=datetime.datetime.now(datetime.UTC),
                output={"title": title, "summary": _clipped(summary)},
            )
        where = f"POST /repos/{repo.full_name}/check-runs"
        check = _failure.parse(_CheckRun, answer.json(), forge="GitHub", where=where)
        return check.html_url or f"{pr.url}/checks"

    def _comment(
        self,
        rest: RestNamespace,
        repo: _repository.Repository,
        pr: _model.PullRequest,
        sha: str,
        text: str,
    ) -> str:
        where = f"/repos/{repo.full_name}/issues/{pr.number}/comments"
        comments: list[_summary.Comment] = []
        for page in range(1, _MAX_PAGES + 1):
            with _githubkit.calls():
                answer = rest.issues.list_comments(
                    repo.owner, repo.name, pr.number, per_page=_PAGE, page=page
                )
            batch = _failure.parse(_summary.Comments, answer.json(), forge="GitHub", where=where)
            comments.extend(batch.root)
            if len(batch.root) < _PAGE:
                break
        posted = _summary.ours(comments, sha)
        with _githubkit.calls():
            if posted is None:
                made = rest.issues.create_comment(repo.owner, repo.name, pr.number, body=text)
            else:
                made = rest.issues.update_comment(repo.owner, repo.name, posted.id, body=text)
        comment = _failure.parse(_summary.Comment, made.json(), forge="GitHub", where=where)
        return comment.html_url

    @staticmethod
    def _pull(answer: Any, where: str) -> _model.PullRequest:
        return _failure.parse(_wire.Pull, answer, forge="GitHub", where=where).public()
