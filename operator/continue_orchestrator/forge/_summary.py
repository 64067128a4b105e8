"""A run's summary as a pull request comment, marked so that posting again edits it.

Where a forge has no check runs (Gitea, Forgejo; GitHub with a plain token, which may
not create check runs) the summary is a comment. Publication is retried and the
operator restarts, so the comment carries a hidden marker naming the commit it
summarises: posting the summary for the same commit again finds the marked comment
and edits it instead of adding a second one. A new commit gets a new comment.
"""

from __future__ import annotations

import dataclasses
import re

import pydantic

from continue_orchestrator import errors

_MARKER = "<!-- continue-orchestrator:summary {sha} -->"
_SHA = re.compile(r"[0-9a-f]{7,64}")


class Comment(pydantic.BaseModel):
    """The fields of an issue comment (GitHub's and Gitea's alike) this module reads."""

    id: int
    html_url: str
    body: str | None = None


class Comments(pydantic.RootModel[list[Comment]]):
    """A list of comments, as both forges answer it."""


@dataclasses.dataclass(frozen=True)
class Post:
    """A summary comment to write: ``text`` on pull request ``number``, replacing the
    text of comment ``replaces`` when there is one already."""

    number: int
    text: str
    replaces: int | None = None


def marker(head_sha: str) -> str:
    """The hidden line that marks the summary of commit ``head_sha``."""
    return _MARKER.format(sha=head_sha.lower())


def body(*, head_sha: str, title: str, summary: str) -> str:
    """The comment: the marker, ``title`` as a heading, then ``summary`` as given."""
    return f"{marker(head_sha)}\n### {title}\n\n{summary}\n"


def ours(comments: list[Comment], head_sha: str) -> Comment | None:
    """The summary comment already posted for ``head_sha``, if any (the first one)."""
    wanted = marker(head_sha)
    return next((c for c in comments if (c.body or "").startswith(wanted)), None)


def commit(head_sha: str) -> str:
    """``head_sha`` as a lowercase commit id; anything else raises ``errors.ForgeError``
    (it goes into the marker and, on GitHub, names the commit a check run is for)."""
    sha = head_sha.strip().lower()
    if not _SHA.fullmatch(sha):
        raise errors.ForgeError(
            f"{head_sha[:80]!r} is not a commit id",
            where="pull request summary",
            fix="pass the full hex id of the commit the summary is about",
        )
    return sha
