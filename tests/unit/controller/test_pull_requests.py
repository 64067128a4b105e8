"""The pull request poller on a scripted clock: when it reads a run's pull request from
the forge (first soon, then backing off, a failing forge too), that an open one writes
nothing, and that a merged or closed one is written once, through the one status
writer, with its ledger entry, Event and count."""

from __future__ import annotations

import copy
import datetime
import pathlib
from collections.abc import Iterator
from typing import Any

import pytest
from tests.unit.controller._fake_kube import JSON, NAMESPACE, FakeKube

from continue_orchestrator import api, errors, forge, ledger
from continue_orchestrator.controller import _metrics, _pull_requests

REPO = "https://forge.example/shop/prices"
LIST = f"/apis/{api.GROUP}/{api.VERSION}/agentruns"
RUNS = f"/apis/{api.GROUP}/{api.VERSION}/namespaces/{NAMESPACE}/agentruns"
FIRST, CEILING = 30.0, 240.0
T0 = 1_790_000_000.0  # the wall clock at the start, seconds since the epoch


class Kube(FakeKube):
    """``FakeKube`` that also lists AgentRuns, cluster-wide, a page at a time."""

    def put_run(self, name: str, pull: JSON | None, **metadata: Any) -> JSON:
        run: JSON = {
            "apiVersion": api.API_VERSION, "kind": "AgentRun",
            "metadata": {"name": name, "namespace": NAMESPACE, "uid": f"uid-{name}", **metadata},
            "spec": {"prompt": "fix it", "repository": {"url": REPO}},
            "status": {"phase": "Succeeded", **({"pullRequest": pull} if pull else {})},
        }  # fmt: skip
        self._bump(run)
        self.objects[f"{RUNS}/{name}"] = run
        return run

    def run(self, name: str) -> JSON:
        return self.objects[f"{RUNS}/{name}"]

    def get(self, path: str, **query: str) -> JSON | None:
        if path != LIST:
            return super().get(path, **query)
        runs = [copy.deepcopy(o) for o in self.objects.values() if o.get("kind") == "AgentRun"]
        start = int(query.get("continue") or 0)
        limit = int(query["limit"])
        more = start + limit < len(runs)
        page = runs[start : start + limit]
        return {"items": page, "metadata": {"continue": str(start + limit) if more else ""}}


def _pull(number: int, state: str = "open") -> JSON:
    return {"url": f"https://forge.example/shop/prices/pulls/{number}", "number": number,
            "branch": "agent/fix-it", "headSha": "a" * 40, "state": state}  # fmt: skip


class Forge:
    """The forge's answers, scripted per pull request number; each read is counted."""

    def __init__(self) -> None:
        self.states: dict[int, str | Exception] = {}
        self.reads: list[int] = []

    def get_pull_request(self, repo: forge.Repository, number: int) -> forge.PullRequest:
        assert repo.url.rstrip("/") == REPO
        self.reads.append(number)
        state = self.states.get(number, "open")
        if isinstance(state, Exception):
            raise state
        return forge.PullRequest(
            number=number, url=f"{REPO}/pulls/{number}", head_branch="agent/fix-it",
            head_sha="a" * 40, base_branch="main", state=state,  # type: ignore[arg-type]
        )  # fmt: skip


class Clock:
    def __init__(self) -> None:
        self.monotonic = 1000.0

    def advance(self, seconds: float) -> None:
        self.monotonic += seconds

    def now(self) -> float:
        return T0 + self.monotonic - 1000.0


@pytest.fixture
def book(tmp_path: pathlib.Path) -> Iterator[ledger.Ledger]:
    with ledger.open(f"sqlite:///{tmp_path / 'ledger.db'}") as opened:
        yield opened


def _poller(kube: Kube, book: ledger.Ledger, hub: Forge, clock: Clock) -> _pull_requests.Poller:
    return _pull_requests.Poller(
        kube, book, lambda run, url: hub,  # type: ignore[arg-type,return-value]
        actor="system:operator", backoff=_pull_requests.Backoff(FIRST, CEILING),
        clock=lambda: clock.monotonic, now=clock.now,
    )  # fmt: skip


def _count(outcome: str) -> float:
    return _metrics.PULL_REQUESTS.labels(outcome)._value.get()  # type: ignore[attr-defined,no-any-return]


def test_waits_double_from_the_first_up_to_the_ceiling() -> None:
    backoff = _pull_requests.Backoff(FIRST, CEILING)
    assert [backoff.wait(n) for n in range(6)] == [30, 60, 120, 240, 240, 240]
    assert _pull_requests.Backoff().wait(0) == 30 and _pull_requests.Backoff().wait(99) == 1800


@pytest.mark.parametrize(("first", "ceiling"), [(0, 10), (-1, 10), (60, 30)])
def test_unusable_waits_are_refused(first: float, ceiling: float) -> None:
    with pytest.raises(errors.OrchestratorError, match="is not usable"):
        _pull_requests.Backoff(first, ceiling)


def test_an_open_pull_request_is_read_on_a_backing_off_schedule_and_writes_nothing(
    book: ledger.Ledger,
) -> None:
    kube, hub, clock = Kube(), Forge(), Clock()
    kube.put_run("fix-it", _pull(7))
    kube.put_run("no-pull-request", None)
    kube.put_run("merged-already", _pull(8, "merged"))
    poller = _poller(kube, book, hub, clock)

    reads_at: list[float] = []
    for _ in range(int((FIRST + 60 + 120 + 240 + 240) / 5) + 1):
        before = len(hub.reads)
        poller.poll()
        if len(hub.reads) > before:
            reads_at.append(clock.monotonic - 1000.0)
        clock.advance(5)
    # first seen at 0: read at 30, then after 60, 120, 240 (the ceiling), 240
    assert reads_at == [30, 90, 210, 450, 690]
    assert set(hub.reads) == {7}  # only the run whose pull request is open
    assert kube.patches == []  # still open: no status write
    (ref,) = poller.schedule
    assert ref.name == "fix-it" and poller.schedule[ref].checked_at == T0 + 690
    assert kube.run("fix-it")["status"]["pullRequest"]["state"] == "open"


@pytest.mark.parametrize(
    ("outcome", "kind", "reason"),
    [
        ("merged", ledger.Kind.PULL_REQUEST_MERGED, "PullRequestMerged"),
        ("closed", ledger.Kind.PULL_REQUEST_CLOSED, "PullRequestClosed"),
    ],
)
def test_an_ended_pull_request_is_written_once_with_its_entry_event_and_count(
    book: ledger.Ledger, outcome: str, kind: ledger.Kind, reason: str
) -> None:
    kube, hub, clock = Kube(), Forge(), Clock()
    kube.put_run("fix-it", _pull(7))
    poller = _poller(kube, book, hub, clock)
    counted = _count(outcome)
    poller.poll()
    clock.advance(FIRST)
    hub.states[7] = outcome
    poller.poll()

    stored = kube.run("fix-it")["status"]["pullRequest"]
    assert stored == {**_pull(7), "state": outcome, "checkedAt": _rfc3339(T0 + FIRST)}
    (written,) = kube.patches
    assert written["status"] == {
        "pullRequest": {"state": outcome, "checkedAt": stored["checkedAt"]}
    }
    assert written["metadata"]["resourceVersion"]  # compare-and-swap
    (entry,) = book.entries(run_uid="uid-fix-it")
    assert (entry.kind, entry.actor) == (kind, "system:operator")
    assert entry.payload == {
        "name": "fix-it", "namespace": NAMESPACE, "repository": REPO,
        "number": 7, "url": f"{REPO}/pulls/7", "headSha": "a" * 40,
    }  # fmt: skip
    assert [e["reason"] for e in kube.events()] == [reason]
    assert _count(outcome) == counted + 1
    assert poller.schedule == {}

    clock.advance(CEILING * 4)
    poller.poll()
    assert hub.reads == [7] and len(kube.patches) == 1  # no longer open: never read again


def _rfc3339(at: float) -> str:
    return datetime.datetime.fromtimestamp(at, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def test_a_failing_forge_backs_off_and_the_other_runs_are_still_read(
    book: ledger.Ledger,
) -> None:
    kube, hub, clock = Kube(), Forge(), Clock()
    kube.put_run("limited", _pull(7))
    kube.put_run("broken", _pull(9))
    kube.put_run("fine", _pull(8))
    hub.states[7] = errors.ForgeError("rate limited", status=429, transient=True)
    hub.states[9] = RuntimeError("a bug in a forge client")
    poller = _poller(kube, book, hub, clock)
    poller.poll()
    dues: list[float] = []
    for _ in range(3):
        clock.advance(poller.schedule[_ref(poller, "limited")].due - clock.monotonic)
        hub.states[8] = "open"
        poller.poll()
        dues.append(poller.schedule[_ref(poller, "limited")].due - clock.monotonic)
    assert dues == [60, 120, 240]  # each failure waits longer
    limited = poller.schedule[_ref(poller, "limited")]
    assert limited.checks == 3 and limited.checked_at is None
    assert limited.failure is not None and "rate limited" in limited.failure
    assert "a bug" in str(poller.schedule[_ref(poller, "broken")].failure)
    assert hub.reads.count(8) == 3  # the healthy run was read at its own times

    hub.states[7] = "merged"
    clock.advance(poller.schedule[_ref(poller, "limited")].due - clock.monotonic)
    poller.poll()
    assert kube.run("limited")["status"]["pullRequest"]["state"] == "merged"


def _ref(poller: _pull_requests.Poller, name: str) -> Any:
    return next(ref for ref in poller.schedule if ref.name == name)


def test_a_pull_request_settled_meanwhile_is_not_written_or_recorded_again(
    book: ledger.Ledger,
) -> None:
    kube, hub, clock = Kube(), Forge(), Clock()
    kube.put_run("fix-it", _pull(7))
    poller = _poller(kube, book, hub, clock)
    poller.poll()
    hub.states[7] = "merged"

    def other_replica(fake: FakeKube) -> None:  # settles it between our read and our write
        run = fake.objects[f"{RUNS}/fix-it"]
        if run["status"]["pullRequest"]["state"] == "open":
            run["status"]["pullRequest"]["state"] = "merged"
            fake._bump(run)

    kube.before_patch = other_replica
    counted = _count("merged")
    clock.advance(FIRST)
    poller.poll()
    assert list(book.entries(run_uid="uid-fix-it")) == [] and kube.events() == []
    assert _count("merged") == counted
    assert len(kube.patches) == 1  # refused (409); read again: nothing left to write


def test_runs_being_deleted_or_gone_are_not_read(book: ledger.Ledger) -> None:
    kube, hub, clock = Kube(), Forge(), Clock()
    kube.put_run("deleting", _pull(7), deletionTimestamp="2026-01-01T00:00:00Z")
    kube.put_run("gone-soon", _pull(8))
    poller = _poller(kube, book, hub, clock)
    poller.poll()
    assert [ref.name for ref in poller.schedule] == ["gone-soon"]
    del kube.objects[f"{RUNS}/gone-soon"]
    clock.advance(FIRST)
    poller.poll()
    assert poller.schedule == {} and hub.reads == []


def test_every_page_of_the_list_is_read(
    book: ledger.Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_pull_requests, "_PAGE", "2")
    kube, hub, clock = Kube(), Forge(), Clock()
    for number in range(1, 6):
        kube.put_run(f"run-{number}", _pull(number))
    poller = _poller(kube, book, hub, clock)
    poller.poll()
    clock.advance(FIRST)
    poller.poll()
    assert sorted(hub.reads) == [1, 2, 3, 4, 5]


def test_opened_counts_an_opened_pull_request() -> None:
    counted = _count("opened")
    _pull_requests.opened()
    assert _count("opened") == counted + 1
