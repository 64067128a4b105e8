"""The operator's pull request poller between the real kube-apiserver and a real Gitea.

An AgentRun's status records a pull request really opened in Gitea (a draft, as
publication opens it); the poller runs in the background as the operator runs it, a
person merges (or closes) the pull request in Gitea, and the test polls the AgentRun
until its status.pullRequest.state says so, with the ledger entry, the Event and the
count. A forge that refuses (a wrong token, answered by Gitea itself) is read again
later and later, on a scripted clock.
"""

from __future__ import annotations

import base64
import pathlib
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from tests.forge import ForgeError as FixtureError
from tests.forge import Gitea
from tests.integration import cluster_support as support
from tests.kube import ControlPlane

from continue_orchestrator import controller, forge, ledger
from continue_orchestrator.controller import _metrics, _pull_requests

pytestmark = [pytest.mark.cluster, pytest.mark.forge]
ACTOR = "system:serviceaccount:continue-orchestrator:operator"


def _wait_for(what: str, probe: Callable[[], Any], timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture(scope="module")
def namespace(kube: ControlPlane) -> Iterator[str]:
    support.install(kube)
    name = support.new_namespace(kube, "pulls")
    yield name
    kube.delete_namespace(name)


@pytest.fixture(scope="module")
def repository(gitea: Gitea) -> str:
    """A copy of the seed repository of the module's own, so merging into its main
    leaves the session's `demo` as it is."""
    name, _ = gitea.private_copy("pulls")
    return name


@pytest.fixture
def book(tmp_path: pathlib.Path) -> Iterator[ledger.Ledger]:
    with ledger.open(f"sqlite:///{tmp_path / 'ledger.db'}") as opened:
        yield opened


def _forge(gitea: Gitea, url: str, token: str | None = None) -> forge.Forge:
    return forge.for_url(url, forge.Token(token or gitea.token, username=gitea.admin))


def _connect(gitea: Gitea, token: str | None = None) -> _pull_requests.Connect:
    """The poller's forge for a run: here one credential for every run."""
    return lambda run, url: _forge(gitea, url, token)


def _opened_pull_request(gitea: Gitea, repository: str, title: str) -> forge.PullRequest:
    """A new branch with one commit (made by Gitea's contents API) and its pull request
    into main, opened by the forge backend publication uses, as a draft."""
    branch = f"agent/poll-{uuid.uuid4().hex[:8]}"
    gitea.api(
        "POST",
        f"/repos/{gitea.full_name(repository)}/contents/{branch.replace('/', '-')}.txt",
        {"content": base64.b64encode(branch.encode()).decode(), "message": title,
         "branch": "main", "new_branch": branch},
    )  # fmt: skip
    url = gitea.clone_url(repository)
    return _forge(gitea, url).open_pull_request(
        forge.Repository(url), head_branch=branch, base_branch="main", title=title,
        body="evidence", draft=True,
    )  # fmt: skip


def _run_with(kube: ControlPlane, namespace: str, url: str, pull: forge.PullRequest) -> str:
    """An AgentRun whose status records ``pull`` open, as publication writes it; its uid."""
    name = f"poll-{uuid.uuid4().hex[:6]}"
    support.create_run(kube, namespace, name, repository={"url": url, "commit": "a" * 40})
    support.set_status(kube, namespace, name, {
        "phase": "Succeeded",
        "pullRequest": {"url": pull.url, "number": pull.number, "branch": pull.head_branch,
                        "headSha": pull.head_sha, "state": "open"},
    })  # fmt: skip
    return name


def _merge(gitea: Gitea, repository: str, number: int) -> bool:
    """Merge the pull request; False while Gitea still checks it (a queue after opening)."""
    try:
        gitea.api("POST", f"/repos/{gitea.full_name(repository)}/pulls/{number}/merge",
                  {"Do": "merge"})  # fmt: skip
    except FixtureError as e:
        if e.status == 405 and "try again later" in e.body.lower():
            return False
        raise
    return True


def _state(kube: ControlPlane, namespace: str, name: str) -> dict[str, Any]:
    pull: dict[str, Any] = support.get_run(kube, namespace, name)["status"]["pullRequest"]
    return pull


def _count(outcome: str) -> float:
    return _metrics.PULL_REQUESTS.labels(outcome)._value.get()  # type: ignore[attr-defined,no-any-return]


def test_a_merged_and_a_closed_pull_request_reach_the_agentrun(
    kube: ControlPlane, gitea: Gitea, namespace: str, repository: str, book: ledger.Ledger
) -> None:
    url = gitea.clone_url(repository)
    to_merge = _opened_pull_request(gitea, repository, "Merge me")
    to_close = _opened_pull_request(gitea, repository, "Close me")
    stays = _opened_pull_request(gitea, repository, "Leave me open")
    assert to_merge.draft and to_close.draft  # as publication opens them by default
    merged_run = _run_with(kube, namespace, url, to_merge)
    closed_run = _run_with(kube, namespace, url, to_close)
    open_run = _run_with(kube, namespace, url, stays)
    merged_before, closed_before = _count("merged"), _count("closed")

    client = controller.Kube(kube.api_client())
    poller = _pull_requests.Poller(
        client, book, _connect(gitea), actor=ACTOR, namespaces=(namespace,),
        backoff=_pull_requests.Backoff(first=0.2, ceiling=1.0),
    )  # fmt: skip
    poller.start()  # in the background, as the operator runs it
    try:
        _wait_for(
            "the poller to see the three open pull requests", lambda: len(poller.schedule) == 3
        )
        full = gitea.full_name(repository)
        # Gitea merges no work in progress: a person marks it ready (drops "WIP: ") first
        gitea.api("PATCH", f"/repos/{full}/pulls/{to_merge.number}", {"title": "Merge me"})
        _wait_for(
            f"Gitea to merge #{to_merge.number}", lambda: _merge(gitea, repository, to_merge.number)
        )
        gitea.api("PATCH", f"/repos/{full}/pulls/{to_close.number}", {"state": "closed"})

        merged = _wait_for(
            "status.pullRequest.state merged",
            lambda: (p := _state(kube, namespace, merged_run))["state"] == "merged" and p,
        )
        closed = _wait_for(
            "status.pullRequest.state closed",
            lambda: (p := _state(kube, namespace, closed_run))["state"] == "closed" and p,
        )
    finally:
        poller.stop()

    for pull, seen in ((to_merge, merged), (to_close, closed)):
        assert (seen["url"], seen["number"], seen["headSha"]) == (
            pull.url,
            pull.number,
            pull.head_sha,
        )
        assert seen["checkedAt"].endswith("Z")
    assert _state(kube, namespace, open_run) == {
        "url": stays.url,
        "number": stays.number,
        "branch": stays.head_branch,
        "headSha": stays.head_sha,
        "state": "open",
    }  # read on every check, written never
    kinds = {
        name: [
            (e.kind, e.payload["number"]) for e in book.entries(run_uid=_uid(kube, namespace, name))
        ]
        for name in (merged_run, closed_run, open_run)
    }
    assert kinds == {
        merged_run: [(ledger.Kind.PULL_REQUEST_MERGED, to_merge.number)],
        closed_run: [(ledger.Kind.PULL_REQUEST_CLOSED, to_close.number)],
        open_run: [],
    }
    events = kube.rest.get(f"/api/v1/namespaces/{namespace}/events")["items"]
    reasons = {(e["involvedObject"]["name"], e["reason"]) for e in events}
    assert {(merged_run, "PullRequestMerged"), (closed_run, "PullRequestClosed")} <= reasons
    assert (_count("merged"), _count("closed")) == (merged_before + 1, closed_before + 1)


def _uid(kube: ControlPlane, namespace: str, name: str) -> str:
    return str(support.get_run(kube, namespace, name)["metadata"]["uid"])


def test_a_forge_that_refuses_is_read_again_later_and_later(
    kube: ControlPlane, gitea: Gitea, namespace: str, repository: str, book: ledger.Ledger
) -> None:
    url = gitea.clone_url(repository)
    pull = _opened_pull_request(gitea, repository, "Read me with a wrong token")
    name = _run_with(kube, namespace, url, pull)
    clock = [0.0]
    poller = _pull_requests.Poller(
        controller.Kube(kube.api_client()), book, _connect(gitea, token="0" * 40), actor=ACTOR,
        namespaces=(namespace,), backoff=_pull_requests.Backoff(first=30, ceiling=240),
        clock=lambda: clock[0],
    )  # fmt: skip
    poller.poll()
    (ref,) = (r for r in poller.schedule if r.name == name)
    waits = []
    for _ in range(4):
        clock[0] = poller.schedule[ref].due
        poller.poll()
        waits.append(poller.schedule[ref].due - clock[0])
    assert waits == [60, 120, 240, 240]  # doubling up to the ceiling
    entry = poller.schedule[ref]
    assert entry.checks == 4 and entry.checked_at is None
    assert entry.failure is not None and "401" in entry.failure  # what Gitea answered
    assert _state(kube, namespace, name)["state"] == "open"
    assert list(book.entries(run_uid=_uid(kube, namespace, name))) == []
