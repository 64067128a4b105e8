"""The Gitea backend of `continue_orchestrator.forge` against a real Gitea on loopback.

Every operation publishing will use runs against the session's Gitea (the `gitea`
fixture): opening a pull request for a pushed branch, opening it again (the same pull
request, its body replaced), finding it, the summary comment (posted once per commit),
a merged and a closed-unmerged pull request read back as such, the git credential
pushing over smart HTTP, and what Gitea says to a wrong token or a missing repository.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from tests.forge import ForgeError as FixtureError
from tests.forge import Gitea

from continue_orchestrator import errors, forge

pytestmark = pytest.mark.forge


def _wait_for(what: str, probe: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not probe():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} after {timeout:.0f}s")
        time.sleep(0.1)


def _push_branch(gitea: Gitea, tmp_path: Path, prefix: str = "agent/forge") -> tuple[str, str]:
    """A new branch of `demo` with one commit, pushed; (branch, its commit)."""
    branch = f"{prefix}-{uuid.uuid4().hex[:8]}"
    clone = tmp_path / branch.replace("/", "-")
    gitea.git("clone", "--quiet", gitea.clone_url("demo"), str(clone))
    gitea.git("checkout", "--quiet", "-b", branch, cwd=clone)
    (clone / "README.md").write_text((clone / "README.md").read_text() + f"\n{branch}\n")
    gitea.git("commit", "--quiet", "-am", f"change on {branch}", cwd=clone)
    sha = gitea.git("rev-parse", "HEAD", cwd=clone).stdout.strip()
    gitea.git("push", "--quiet", "origin", branch, cwd=clone)
    gitea.wait_for_branch(branch, sha)
    return branch, sha


@pytest.fixture
def repo(gitea: Gitea) -> forge.Repository:
    return forge.Repository(gitea.clone_url("demo"))


@pytest.fixture
def backend(gitea: Gitea, repo: forge.Repository) -> forge.Forge:
    return forge.for_url(repo, forge.Token(gitea.token, username=gitea.admin))


def test_for_url_picks_gitea_at_its_api(gitea: Gitea, repo: forge.Repository) -> None:
    assert (forge.kind_of(repo), forge.api_url_of(repo, "gitea")) == (
        "gitea",
        f"{gitea.base_url}/api/v1",
    )
    assert isinstance(forge.for_url(repo.url, forge.Token(gitea.token)), forge.Gitea)


def test_open_twice_is_one_pull_request_with_the_new_body(
    gitea: Gitea, repo: forge.Repository, backend: forge.Forge, tmp_path: Path
) -> None:
    branch, sha = _push_branch(gitea, tmp_path)
    assert backend.find_pull_request(repo, branch) is None

    opened = backend.open_pull_request(
        repo,
        head_branch=branch,
        base_branch="main",
        title="Agent change",
        body="first",
        draft=False,
    )
    assert isinstance(opened, forge.PullRequest)
    assert (opened.head_branch, opened.head_sha, opened.base_branch, opened.state) == (
        branch,
        sha,
        "main",
        "open",
    )
    assert opened.url.startswith(f"{gitea.base_url}/{gitea.full_name('demo')}/pulls/")

    again = backend.open_pull_request(
        repo,
        head_branch=branch,
        base_branch="main",
        title="Agent change",
        body="second",
        draft=False,
    )
    assert again == opened
    assert backend.find_pull_request(repo, branch) == opened
    mine = [p for p in gitea.pulls("demo") if p.head.ref == branch]
    assert [(p.number, p.body) for p in mine] == [(opened.number, "second")]


def test_a_draft_is_work_in_progress_as_gitea_reports_it(
    gitea: Gitea, repo: forge.Repository, backend: forge.Forge, tmp_path: Path
) -> None:
    branch, _ = _push_branch(gitea, tmp_path, "agent/draft")
    opened = backend.open_pull_request(
        repo, head_branch=branch, base_branch="main", title="Agent change", body="evidence",
        draft=True,
    )  # fmt: skip
    assert (opened.state, opened.draft) == ("open", True)
    shown = gitea.api("GET", f"/repos/{gitea.full_name('demo')}/pulls/{opened.number}")
    assert (shown["title"], shown["draft"]) == ("WIP: Agent change", True)

    again = backend.open_pull_request(
        repo, head_branch=branch, base_branch="main", title="Agent change", body="edited",
        draft=True,
    )  # fmt: skip
    assert again == opened  # the same pull request, its title not prefixed twice
    assert backend.get_pull_request(repo, opened.number).draft is True
    mine = [p for p in gitea.pulls("demo") if p.head.ref == branch]
    assert [(p.number, p.body) for p in mine] == [(opened.number, "edited")]

    ready_branch, _ = _push_branch(gitea, tmp_path, "agent/ready")
    ready = backend.open_pull_request(
        repo, head_branch=ready_branch, base_branch="main", title="Agent change", body="",
        draft=False,
    )  # fmt: skip
    assert ready.draft is False
    shown = gitea.api("GET", f"/repos/{gitea.full_name('demo')}/pulls/{ready.number}")
    assert (shown["title"], shown["draft"]) == ("Agent change", False)


def test_summary_comment_is_one_per_commit(
    gitea: Gitea, repo: forge.Repository, backend: forge.Forge, tmp_path: Path
) -> None:
    branch, sha = _push_branch(gitea, tmp_path)
    pr = backend.open_pull_request(
        repo,
        head_branch=branch,
        base_branch="main",
        title="Summarised",
        body="evidence",
        draft=False,
    )

    url = backend.post_summary(repo, pr, head_sha=sha, title="Run summary", summary="all green")
    again = backend.post_summary(repo, pr, head_sha=sha, title="Run summary", summary="edited")

    assert url == again
    assert url.startswith(pr.url)
    comments = gitea.api("GET", f"/repos/{gitea.full_name('demo')}/issues/{pr.number}/comments")
    assert [c["html_url"] for c in comments] == [url]
    assert "### Run summary" in comments[0]["body"]
    assert comments[0]["body"].rstrip().endswith("edited")


def test_merged_and_closed_pull_requests_read_back_as_such(
    gitea: Gitea, repo: forge.Repository, backend: forge.Forge, tmp_path: Path
) -> None:
    merged_branch, _ = _push_branch(gitea, tmp_path, "agent/merge")
    closed_branch, _ = _push_branch(gitea, tmp_path, "agent/close")
    # Merge into a base of this test's own, never `demo`'s main: the session's other tests
    # (the seeded-repository check, publication) rely on main staying at the seed commit.
    base = f"base/merge-{uuid.uuid4().hex[:8]}"
    seed = tmp_path / "seed"
    gitea.git("clone", "--quiet", gitea.clone_url("demo"), str(seed))
    gitea.git("push", "--quiet", "origin", f"{gitea.seed_commit}:refs/heads/{base}", cwd=seed)
    gitea.wait_for_branch(base, gitea.seed_commit)
    to_merge = backend.open_pull_request(
        repo, head_branch=merged_branch, base_branch=base, title="Merge me", body="", draft=False
    )
    to_close = backend.open_pull_request(
        repo, head_branch=closed_branch, base_branch="main", title="Close me", body="", draft=False
    )
    full = gitea.full_name("demo")

    def merge() -> bool:  # Gitea checks mergeability in a queue after the PR opens
        try:
            gitea.api("POST", f"/repos/{full}/pulls/{to_merge.number}/merge", {"Do": "merge"})
        except FixtureError as e:
            if e.status == 405 and "try again later" in e.body.lower():
                return False
            raise
        return True

    _wait_for(f"Gitea to merge #{to_merge.number}", merge)
    gitea.api("PATCH", f"/repos/{full}/pulls/{to_close.number}", {"state": "closed"})

    assert backend.get_pull_request(repo, to_merge.number).state == "merged"
    closed = backend.get_pull_request(repo, to_close.number)
    assert (closed.number, closed.state) == (to_close.number, "closed")
    assert backend.find_pull_request(repo, closed_branch) is None


def test_git_credential_pushes_over_smart_http(
    gitea: Gitea, repo: forge.Repository, tmp_path: Path
) -> None:
    credential = forge.for_url(repo, forge.Token(gitea.token)).git_credential(repo)
    assert (credential.username, credential.secret) == ("x-access-token", gitea.token)
    assert gitea.token not in repr(credential)
    clone = tmp_path / "clone"
    gitea.git("clone", "--quiet", repo.clone_url, str(clone), auth=False)
    branch = f"agent/credential-{uuid.uuid4().hex[:8]}"
    gitea.git("checkout", "--quiet", "-b", branch, cwd=clone, auth=False)
    gitea.git("commit", "--quiet", "--allow-empty", "-m", "pushed with the credential", cwd=clone)
    sha = gitea.git("rev-parse", "HEAD", cwd=clone).stdout.strip()
    pushed = repo.clone_url.replace("://", f"://{credential.username}:{credential.secret}@", 1)
    gitea.git("push", "--quiet", pushed, branch, cwd=clone, auth=False)
    gitea.wait_for_branch(branch, sha)


def test_a_wrong_token_is_refused_with_giteas_message(gitea: Gitea, repo: forge.Repository) -> None:
    backend = forge.for_url(repo, forge.Token("0" * 40))
    with pytest.raises(errors.ForgeError) as refused:
        backend.find_pull_request(repo, "main")
    failure = refused.value
    assert (failure.status, failure.transient) == (401, False)
    assert failure.forge_message  # Gitea's own words, e.g. "user does not exist"
    assert failure.forge_message in str(failure)
    assert "0" * 40 not in str(failure)
    assert "check the credential" in str(failure)


def test_a_missing_repository_is_a_clear_404(gitea: Gitea, backend: forge.Forge) -> None:
    missing = forge.Repository(gitea.clone_url("no-such-repository"))
    with pytest.raises(errors.ForgeError) as not_found:
        backend.get_pull_request(missing, 1)
    failure = not_found.value
    assert (failure.status, failure.transient) == (404, False)
    assert f"/repos/{gitea.admin}/no-such-repository/pulls/1" in str(failure)
    assert "check the repository URL" in str(failure)


def test_a_repository_on_another_host_is_refused_before_any_request(
    backend: forge.Forge,
) -> None:
    elsewhere = forge.Repository("https://gitea.example/acme/payments.git")
    with pytest.raises(errors.ForgeError, match="is not on this forge"):
        backend.git_credential(elsewhere)
