"""The runs this gateway serves, and what it kept of those it sealed.

One table owns which runs are live: the agents' requests are authenticated against it,
the admin API registers, inspects and unregisters runs through it, and ``Gateway.stop``
seals what is left in it. (It replaces a registry of registrations and a table of run
states that were kept in step by hand.) A request names its run in the path and carries
the run token as a bearer credential; the token is compared in constant time, and an
unknown run, a wrong token and an expired one all get the same answer, so a probe
learns nothing. Sealed runs are remembered, the latest few thousand, so the operator can
read a record digest and outcome after the run is gone; older ones are read back from
the record store.
"""

from __future__ import annotations

import asyncio
import collections
import hmac
import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from continue_orchestrator import records
from continue_orchestrator.gateway import (
    _admin,
    _conversation,
    _http,
    _metrics,
    _recorder,
    _registry,
    _replay,
    _results,
)

_SEALED_KEPT = 4096


@dataclass
class RunState:
    """One live run: its registration and recorder, and what the gateway remembers of it
    from one request to the next."""

    registration: _registry.RunRegistration
    recorder: _recorder.RunRecorder
    replay: _replay.Replay | None = None
    conversation: _conversation.Conversation = field(default_factory=_conversation.Conversation)
    delivered: dict[str, str] = field(default_factory=dict)
    """Tool call id -> tool, for every call the gateway handed the agent."""
    results_seen: set[str] = field(default_factory=set)
    """Tool call ids whose result is already in the record."""
    results: _results.Checker = field(default_factory=_results.Checker)
    outcome: dict[str, Any] | None = None
    """The runner's report, once it has sent it."""


class Runs:
    """Live runs by uid, and the sealed ones' summaries; safe to read from other threads."""

    def __init__(self, store: records.BlobStore, ledger: _recorder.LedgerSink | None) -> None:
        self.store = store
        self.ledger = ledger
        self._live: dict[str, RunState] = {}
        self._sealed: collections.OrderedDict[str, dict[str, Any]] = collections.OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._live)

    def add(
        self, registration: _registry.RunRegistration, replay: _replay.Replay | None = None
    ) -> RunState:
        """Serve ``registration`` with a new recorder (its record continues if it exists)."""
        redactor = records.Redactor(registration.redactions())
        recorder = _recorder.RunRecorder(registration.uid, self.store, self.ledger, redactor)
        state = RunState(registration, recorder, replay)
        with self._lock:
            self._live[registration.uid] = state
        _metrics.RUNS.set(len(self._live))
        return state

    def renew(self, state: RunState, registration: _registry.RunRegistration) -> None:
        """The same run registered again (an operator resuming): its state and record
        stay; a replay keeps being served by its replay model."""
        if state.replay is not None:
            registration = _replay.keep_upstreams(state.registration, registration)
        state.registration = registration
        state.recorder.redact = records.Redactor(registration.redactions())

    def state(self, uid: str) -> RunState | None:
        with self._lock:
            return self._live.get(uid)

    def get(self, uid: str) -> _registry.RunRegistration | None:
        """The registration ``uid`` is served with, or None."""
        state = self.state(uid)
        return state.registration if state is not None else None

    def uids(self) -> list[str]:
        with self._lock:
            return list(self._live)

    def authenticate(self, uid: str, authorization: str | None) -> RunState | None:
        """The run if ``authorization`` is ``Bearer <its token>`` and it has not expired."""
        return self.authenticate_token(uid, _http.bearer(authorization))

    def authenticate_token(self, uid: str, token: str) -> RunState | None:
        """The run if ``token`` is its token and it has not expired."""
        state = self.state(uid)
        # Digests have one length, and unknown runs are compared too, so timing tells
        # neither the token's length nor which runs exist.
        expected = state.registration.token_sha256 if state else secrets.token_hex(32)
        presented = _registry.token_digest(token)
        matches = hmac.compare_digest(presented, expected)
        if state is None or not matches or time.time() >= state.registration.expires_at:
            return None
        return state

    async def seal(self, uid: str) -> dict[str, Any] | None:
        """Stop serving ``uid`` and seal its record; None if it was not served, else its
        summary: ``recordDigest``, ``outcome`` and, for a replay, ``replay`` (the replay
        report's summary and ``report``)."""
        with self._lock:
            state = self._live.pop(uid, None)
        _metrics.RUNS.set(len(self._live))
        if state is None:
            return None
        await state.recorder.drain()
        digest = await asyncio.to_thread(state.recorder.record.seal)
        summary: dict[str, Any] = {"recordDigest": digest, "outcome": state.outcome}
        if state.replay is not None:
            summary["replay"] = await _replay.finish(
                state.replay, self.store, uid, digest, self.ledger
            )
        self._sealed[uid] = summary
        while len(self._sealed) > _SEALED_KEPT:
            self._sealed.popitem(last=False)
        return summary

    async def seal_all(self) -> dict[str, str]:
        """Write every pending record and seal each live run's record as it stands (they
        stay registered); run uid -> record digest."""
        sealed: dict[str, str] = {}
        for uid in self.uids():
            state = self.state(uid)
            if state is None:
                continue
            await state.recorder.drain()
            sealed[uid] = await asyncio.to_thread(state.recorder.record.seal)
            if state.replay is not None:
                await state.replay.model.stop()
        return sealed

    async def sealed(self, uid: str) -> dict[str, Any] | None:
        """What is known of a run no longer served: ``recordDigest``, ``outcome`` and, for
        a replay, ``replay``; None if it never was, or its record is not in the store."""
        found = self._sealed.get(uid)
        return found if found is not None else await asyncio.to_thread(self._on_disk, uid)

    def _on_disk(self, uid: str) -> dict[str, Any] | None:
        manifest = self.store.root / "runs" / uid / "manifest"
        if _admin.UID.fullmatch(uid) is None or not manifest.is_file():
            return None
        return {"recordDigest": manifest.read_text(encoding="utf-8").strip(), "outcome": None}
