"""``forge.Forge``: what every forge does, written once over each forge's primitives.

Finding a pull request by its head, opening one without ever opening a second, reading
merged apart from closed, and posting the summary as a comment that a second post
edits are the same rules on GitHub and on Gitea; only the calls differ. So the rules
live here, and a backend supplies the calls (list the open pull requests for a head,
create one, replace a body, read one, list/add/edit comments) and its git credential.
"""

from __future__ import annotations

import abc
import dataclasses
import datetime
import time
from collections.abc import Callable

import httpx

from continue_orchestrator import errors
from continue_orchestrator.forge import _clock, _model, _repository, _retry, _summary, _wire


@dataclasses.dataclass(frozen=True)
class Endpoint:
    """Where a forge's API is and how it is called: timeout, retries, and the seams a
    test uses to watch or steer (how a retry waits, the transport, the clock)."""

    api_url: str
    """The REST API root, e.g. ``https://api.github.com``, ``https://HOST/api/v1``."""
    web_root: str
    """The root of the forge's repository URLs (``Repository.web_root``)."""
    timeout: float = 30.0
    """Seconds one request may take."""
    backoff: _retry.Backoff = _retry.DEFAULT
    """How transient failures are retried."""
    sleep: Callable[[float], None] = time.sleep
    """How a retry waits."""
    transport: httpx.BaseTransport | None = None
    """The httpx transport the GitHub backend sends through (the tests record with it)."""
    clock: Callable[[], datetime.datetime] = _clock.utc_now
    """The time that decides when a GitHub App's installation token is refreshed."""


class Forge(abc.ABC):
    """One forge host. Synchronous: async callers use ``asyncio.to_thread``.

    Every method raises ``errors.ForgeError`` (``transient`` when a retry may help) with
    the forge's own message; transient failures were already retried with backoff.
    """

    kind: _model.Kind
    """``"github"`` or ``"gitea"`` (Forgejo is Gitea here)."""
    conflict_status: int
    """The status the forge answers when an open pull request for the head exists."""

    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint
        self.web_root = endpoint.web_root

    # -- what callers use ----------------------------------------------------------
    @abc.abstractmethod
    def git_credential(self, repo: _repository.Repository) -> _model.GitCredential:
        """The username and secret for git over HTTP to ``repo``."""

    def find_pull_request(
        self, repo: _repository.Repository, head_branch: str
    ) -> _model.PullRequest | None:
        """The open pull request from ``head_branch`` of ``repo`` itself, if there is one
        (a fork's branch of the same name is not it)."""
        self.check(repo)
        found = (
            p for p in self._open_pulls(repo, head_branch) if p.is_from(repo.full_name, head_branch)
        )
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
        draft: bool,
    ) -> _model.PullRequest:
        """Open a pull request (a draft when ``draft``), or return the open one for
        ``head_branch`` with its body replaced by ``body``: never a second one, also when
        one appears meanwhile. An existing one keeps its title and draft state (a person
        may have marked it ready)."""
        existing = self.find_pull_request(repo, head_branch)
        if existing is None:
            new = _wire.NewPull(head_branch, base_branch, title, body, draft)
            try:
                return self._create_pull(repo, new).public()
            except errors.ForgeError as e:
                if e.status == self.conflict_status:
                    existing = self.find_pull_request(repo, head_branch)
                if existing is None:
                    raise
        return self._edit_pull_body(repo, existing.number, body).public()

    def get_pull_request(self, repo: _repository.Repository, number: int) -> _model.PullRequest:
        """Pull request ``number`` as it is now (open, merged or closed unmerged)."""
        self.check(repo)
        return self._get_pull(repo, int(number)).public()

    def post_summary(
        self,
        repo: _repository.Repository,
        pr: _model.PullRequest,
        *,
        head_sha: str,
        title: str,
        summary: str,
    ) -> str:
        """Post the run's summary for commit ``head_sha`` of ``pr``; return its URL.

        Where the forge has its own place for it (GitHub, as an App: a check run) it
        goes there; elsewhere it is a comment, edited when posted again for the same
        commit."""
        self.check(repo)
        sha = _summary.commit(head_sha)
        native = self._native_summary(repo, pr, sha, title, summary)
        if native is not None:
            return native
        text = _summary.body(head_sha=sha, title=title, summary=summary)
        posted = _summary.ours(self._comments(repo, pr.number), sha)
        post = _summary.Post(pr.number, text, replaces=posted.id if posted else None)
        return self._put_comment(repo, post).html_url

    def check(self, repo: _repository.Repository) -> None:
        """Refuse a repository on another host: its credential is for this one only."""
        if repo.web_root != self.web_root:
            raise errors.ForgeError(
                f"repository {repo.clone_url} is not on this forge ({self.web_root})",
                where=f"forge {self.kind}",
                fix="make a forge for the repository's own host with forge.for_url",
            )

    # -- what each backend supplies ------------------------------------------------
    @abc.abstractmethod
    def _open_pulls(self, repo: _repository.Repository, head_branch: str) -> list[_wire.Pull]:
        """Open pull requests, at least every one whose head is ``head_branch``."""

    @abc.abstractmethod
    def _create_pull(self, repo: _repository.Repository, new: _wire.NewPull) -> _wire.Pull:
        """Create the pull request ``new`` describes, a draft as the forge has them when
        ``new.draft``."""

    @abc.abstractmethod
    def _edit_pull_body(self, repo: _repository.Repository, number: int, body: str) -> _wire.Pull:
        """Replace pull request ``number``'s body."""

    @abc.abstractmethod
    def _get_pull(self, repo: _repository.Repository, number: int) -> _wire.Pull:
        """Read pull request ``number``."""

    @abc.abstractmethod
    def _comments(self, repo: _repository.Repository, number: int) -> list[_summary.Comment]:
        """Every comment on pull request ``number``."""

    @abc.abstractmethod
    def _put_comment(self, repo: _repository.Repository, post: _summary.Post) -> _summary.Comment:
        """Add ``post`` as a comment, or replace the text of the one it replaces."""

    def _native_summary(
        self, repo: _repository.Repository, pr: _model.PullRequest, *summary: str
    ) -> str | None:
        """Post (sha, title, summary) where the forge keeps such things and return its
        URL, or None: then the summary is a comment. None unless a backend has one."""
        return None
