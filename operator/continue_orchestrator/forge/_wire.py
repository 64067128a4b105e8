"""A pull request as GitHub's and Gitea's REST APIs write it, read into ``PullRequest``.

Both forges answer with the same field names for what publishing needs (``number``,
``html_url``, ``state``, ``merged``/``merged_at``, ``head`` and ``base`` with ``ref``,
``sha`` and ``repo.full_name``), so one model reads both, and "merged" is decided once:
a closed pull request is merged when the forge says ``merged`` or gives ``merged_at``
(GitHub's list answers carry only the latter); an open one is open, whatever else it
carries. Both say ``draft`` (Gitea: true when the title has one of its work-in-progress
prefixes).
"""

from __future__ import annotations

import dataclasses

import pydantic

from continue_orchestrator.forge import _model


class Repo(pydantic.BaseModel):
    full_name: str


class Branch(pydantic.BaseModel):
    ref: str
    sha: str
    repo: Repo | None = None


class Pull(pydantic.BaseModel):
    """The fields of a forge's pull request object this package reads."""

    number: int
    html_url: str
    state: str
    merged: bool | None = None
    merged_at: str | None = None
    draft: bool | None = None
    head: Branch
    base: Branch

    def is_from(self, repo_full_name: str, head_branch: str) -> bool:
        """Whether this pull request's head is ``head_branch`` of the repository itself
        (not a fork's branch of the same name)."""
        head_repo = self.head.repo.full_name if self.head.repo else ""
        return self.head.ref == head_branch and head_repo.lower() == repo_full_name.lower()

    def public(self) -> _model.PullRequest:
        state: _model.State = "open"
        if self.state == "closed":
            state = "merged" if self.merged or self.merged_at else "closed"
        return _model.PullRequest(
            number=self.number,
            url=self.html_url,
            head_branch=self.head.ref,
            head_sha=self.head.sha,
            base_branch=self.base.ref,
            state=state,
            draft=bool(self.draft),
        )


@dataclasses.dataclass(frozen=True)
class NewPull:
    """A pull request to open: what ``Forge.open_pull_request`` hands a backend."""

    head: str
    base: str
    title: str
    body: str
    draft: bool


class Pulls(pydantic.RootModel[list[Pull]]):
    """A list of pull requests, as both forges answer it."""
