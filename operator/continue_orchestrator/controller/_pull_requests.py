"""What became of the pull requests runs opened: read from the forge into the status.

Publication opens a run's pull request and writes ``status.pullRequest`` with state
``open``. What people do with it later, merge it or close it unmerged, happens on the
forge, and until webhooks come (with the workflows issue) the operator asks: a
``Poller`` lists the AgentRuns whose ``status.pullRequest.state`` is ``open`` and reads
each pull request (``forge.Forge.get_pull_request``) on a schedule of its own that backs
off (``Backoff``: the first check ``first`` seconds after the poller first sees it, then
twice as long each time up to ``ceiling``). A forge that fails (rate limit, 5xx, a
refused credential) backs off the same way and is logged; nothing it does stops the loop.

A check that finds the pull request still open writes nothing (the time of the last
check is kept in memory, ``Poller.schedule``). One that finds it merged or closed writes
``status.pullRequest.state`` and ``checkedAt`` through ``_status.patch`` (so of two
replicas, or a retry, one write wins), and the writer appends ``pull_request.merged`` or
``pull_request.closed`` to the run's ledger, posts an Event and counts
``orchestrator_pull_requests_total{outcome}``. ``opened()`` is the count's third outcome,
for publication to call when it records a new pull request.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, Literal

import pydantic

from continue_orchestrator import api, errors, forge, ledger
from continue_orchestrator.controller import (
    _agentrun,
    _clock,
    _closing,
    _events,
    _kube,
    _metrics,
    _status,
)

log = logging.getLogger(__name__)

_PAGE = "500"
"""AgentRuns per list request."""
_LEDGER: dict[str, ledger.Kind] = {
    "merged": ledger.Kind.PULL_REQUEST_MERGED,
    "closed": ledger.Kind.PULL_REQUEST_CLOSED,
}
_EVENT: dict[str, tuple[str, str]] = {
    "merged": ("PullRequestMerged", "was merged"),
    "closed": ("PullRequestClosed", "was closed without being merged"),
}


def opened() -> None:
    """Count a pull request publication opened (``outcome="opened"``). Call it once per
    pull request: when the status write that first records it succeeds."""
    _metrics.PULL_REQUESTS.labels("opened").inc()


Connect = Callable[[_agentrun.Run, str], forge.Forge]
"""A run and its repository URL -> the forge serving it, with a credential that may read
the run's pull request (the run's own token, as publication uses, or the operator's)."""


@dataclasses.dataclass(frozen=True, slots=True)
class Backoff:
    """When a run's pull request is read again: ``first`` seconds after it is first
    seen, then each wait twice the one before, at most ``ceiling``."""

    first: float = 30.0
    ceiling: float = 1800.0

    def __post_init__(self) -> None:
        if not 0 < self.first <= self.ceiling:
            raise errors.OrchestratorError(
                f"pull request polling every {self.first:g} s backing off to at most "
                f"{self.ceiling:g} s is not usable",
                where="pull request poller",
                fix="use a first wait above 0 and a ceiling no shorter than it",
            )

    def wait(self, checks: int) -> float:
        """The wait after ``checks`` checks (0: before the first one)."""
        return min(self.first * float(2 ** min(checks, 64)), self.ceiling)


@dataclasses.dataclass(slots=True)
class Schedule:
    """What the poller keeps of one run between checks (in memory only)."""

    checks: int
    """Checks made so far, failed ones too: the next wait is ``Backoff.wait(checks)``."""
    due: float
    """When the next check is due (the poller's ``clock``)."""
    checked_at: float | None = None
    """When the forge last answered, in seconds since the epoch (the poller's ``now``)."""
    failure: str | None = None
    """What the last check failed with, if it did."""


class _Repository(pydantic.BaseModel):
    url: str


class _Spec(pydantic.BaseModel):
    repository: _Repository


class _Status(pydantic.BaseModel):
    pull_request: api.PullRequest | None = pydantic.Field(default=None, alias="pullRequest")


class _Watched(pydantic.BaseModel):
    """The part of an AgentRun the poller reads: its pull request, and the repository
    that is in (publication opens it on ``spec.repository.url``)."""

    spec: _Spec
    status: _Status = _Status()


@dataclasses.dataclass(frozen=True, slots=True)
class _Open:
    """A run with an open pull request to read."""

    run: _agentrun.Run
    repository: str
    number: int


class Poller:
    """Reads the open pull requests of AgentRuns from their forges into their status.

    ``connect`` gives the forge serving a run's repository, with a credential.
    ``clock`` (monotonic seconds) schedules checks, ``now`` (seconds since the epoch)
    stamps ``checkedAt``; tests script both. ``namespaces`` empty: all.
    """

    def __init__(
        self,
        kube: _kube.Kube,
        book: ledger.Ledger,
        connect: Connect,
        *,
        actor: str,
        namespaces: tuple[str, ...] = (),
        backoff: Backoff = Backoff(),
        closing: _closing.Closing | None = None,
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], float] = time.time,
    ) -> None:
        self.kube = kube
        self.book = book
        self.connect = connect
        self.actor = actor
        self.namespaces = namespaces
        self.backoff = backoff
        self.closing = closing or _closing.Closing()
        self.clock = clock
        self.now = now
        self.schedule: dict[_agentrun.Ref, Schedule] = {}
        """The runs with an open pull request the last pass saw, and when each is due."""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- one pass ----------------------------------------------------------------------
    def poll(self) -> None:
        """List the runs with an open pull request and read each one that is due."""
        found = {item.run.ref: item for item in self._open_runs()}
        for gone in self.schedule.keys() - found.keys():
            del self.schedule[gone]
        for ref, item in found.items():
            entry = self.schedule.get(ref)
            if entry is None:
                self.schedule[ref] = Schedule(0, self.clock() + self.backoff.wait(0))
            elif self.clock() >= entry.due:
                self._check(item, entry)

    def _open_runs(self) -> Iterator[_Open]:
        for namespace in self.namespaces or (None,):
            for body in self._list(namespace):
                item = _opened(body)
                if item is not None:
                    yield item

    def _list(self, namespace: str | None) -> Iterator[dict[str, Any]]:
        path, token = _kube.agentruns(namespace), ""
        while True:
            query = {"limit": _PAGE, **({"continue": token} if token else {})}
            page = self.kube.get(path, **query) or {}
            yield from page.get("items") or ()
            token = str((page.get("metadata") or {}).get("continue") or "")
            if not token:
                return

    def _check(self, item: _Open, entry: Schedule) -> None:
        ref = item.run.ref
        entry.checks += 1
        entry.due = self.clock() + self.backoff.wait(entry.checks)
        try:
            repo = forge.Repository(item.repository)
            pull = self.connect(item.run, item.repository).get_pull_request(repo, item.number)
        except Exception as error:  # a forge's refusal or fault must not stop the loop
            entry.failure = str(error)
            log.warning(
                "could not read pull request #%s of %s (next try in %.0f s): %s",
                item.number, ref, entry.due - self.clock(), error,
                exc_info=not isinstance(error, errors.OrchestratorError),
            )  # fmt: skip
            return
        entry.checked_at, entry.failure = self.now(), None
        if pull.state != "open":
            self._settle(item, pull, entry.checked_at)
            del self.schedule[ref]

    def _settle(self, item: _Open, pull: forge.PullRequest, at: float) -> None:
        """Write the pull request's end into the status; the writer records it."""
        state: Literal["merged", "closed"] = "merged" if pull.state == "merged" else "closed"

        def change(run: _agentrun.Run) -> _status.JSON | None:
            known = run.status.pull_request
            if known is None or known.number != item.number or known.state != "open":
                return None  # settled meanwhile (another replica), or another pull request
            return {"pullRequest": {"state": state, "checkedAt": _clock.rfc3339(at)}}

        try:
            written = _status.patch(self.kube, item.run.ref, change)
        except (errors.OrchestratorError, _kube.ApiError) as error:
            log.warning("could not write the pull request's state to %s: %s", item.run.ref, error)
            return
        if written is None:
            return
        self._record(item, pull, state)

    def _record(self, item: _Open, pull: forge.PullRequest, state: str) -> None:
        ref = item.run.ref
        _metrics.PULL_REQUESTS.labels(state).inc()
        reason, happened = _EVENT[state]
        _events.post(self.kube, ref, reason, f"Pull request {pull.url} {happened}.",
                     key=str(item.number))  # fmt: skip
        payload = {
            "name": ref.name, "namespace": ref.namespace, "repository": item.repository,
            "number": item.number, "url": pull.url, "headSha": pull.head_sha,
        }  # fmt: skip
        try:
            self.closing.append(self.book, ref.uid, _LEDGER[state], self.actor, payload)
        except errors.OrchestratorError as error:
            log.error("could not append %s for %s: %s", _LEDGER[state], ref, error)

    # -- in the background ---------------------------------------------------------------
    def start(self) -> None:
        """Poll every ``backoff.first`` seconds in a daemon thread until ``stop``."""
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="pull-requests", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the background polling and wait for the pass under way to end."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.poll()
            except Exception:  # the API server away, a damaged list: try again next time
                log.exception("pull request poll failed")
            self._stop.wait(self.backoff.first)


def _opened(body: dict[str, Any]) -> _Open | None:
    """The run ``body`` if its status records an open pull request to read."""
    try:
        watched = _Watched.model_validate(body)
        pull = watched.status.pull_request
        if pull is None or pull.state != "open":
            return None
        run = _agentrun.Run.of(body)
    except (errors.OrchestratorError, pydantic.ValidationError) as error:
        where = (body.get("metadata") or {}).get("name")
        log.warning("not reading the pull request of AgentRun %s: %s", where, error)
        return None
    if run.deleting or pull.number is None:
        return None  # being deleted (its ledger is tombstoned), or no number to read
    return _Open(run, watched.spec.repository.url, pull.number)
