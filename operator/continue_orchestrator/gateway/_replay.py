"""Serving a run registered with ``replayOf``: the recorded answers in place of the model.

The gateway owns the record store, so it is where a replay's upstream lives: a
``records.ReplayModel`` playing the recorded run, registered as the upstream of every
model of the run's config. Gating, recording and the ledger stay as for any run. When
the run is unregistered the model's divergence and the two records make the replay
report, which goes to the ledger (``replay.finished``) and back to the operator, so it
can set the run's ``Replayed`` condition. See docs/replay.md.
"""

from __future__ import annotations

import asyncio
import dataclasses
import urllib.parse
from typing import Any

from continue_orchestrator import errors, ledger, records
from continue_orchestrator.gateway import _recorder, _registry

REPLAY_KEY = "replay-has-no-key"
"""The replay model needs no key; this stands in so the upstream is well-formed."""


@dataclasses.dataclass
class Replay:
    """One run's replay model and the record it plays back."""

    record: str
    original: records.RunRecord
    model: records.ReplayModel


async def start(
    store: records.BlobStore, registration: _registry.RunRegistration, host: str = "127.0.0.1"
) -> tuple[_registry.RunRegistration, Replay]:
    """Start the replay model for ``registration.replay_of``; the registration to serve,
    its models pointed at that model. Raises ``errors.GatewayError`` for a record the
    store does not hold or that made no model request."""
    digest = registration.replay_of
    try:
        original = await asyncio.to_thread(records.record_by_digest, store, digest)
        model = records.replay_model(store, digest, secrets=registration.secrets)
    except errors.RecordError as error:
        raise errors.GatewayError(
            f"replayOf.record {digest}: {error.what}",
            where=f"run {registration.uid}",
            fix=error.fix or "replay a run whose record this gateway keeps",
        ) from None
    api_base = await model.start(host)
    parts = urllib.parse.urlsplit(api_base)
    replaced = dataclasses.replace(
        registration,
        models={
            name: _registry.Upstream(api_base, REPLAY_KEY, "openai") for name in registration.models
        },
        allowed_egress=frozenset({*registration.allowed_egress, f"{parts.hostname}:{parts.port}"}),
    )
    return replaced, Replay(digest, original, model)


async def finish(
    replay: Replay,
    store: records.BlobStore,
    uid: str,
    record_digest: str,
    sink: _recorder.LedgerSink | None,
) -> dict[str, Any]:
    """Stop the model; build the report, append ``replay.finished``; the report summary."""
    await replay.model.stop()
    replayed = await asyncio.to_thread(records.record_by_digest, store, record_digest)
    report = records.build_replay_report(
        original=replay.original,
        original_digest=replay.record,
        replay=replayed,
        replay_digest=record_digest,
        model=replay.model,
    )
    report.replay = uid
    summary = finished_payload(report)
    if sink is not None:
        await asyncio.to_thread(
            sink.append_many,
            [(uid, ledger.Kind.REPLAY_FINISHED.value, _recorder.ACTOR, summary)],
        )
    return {**summary, "report": report.to_json()}


def finished_payload(report: records.ReplayReport) -> dict[str, Any]:
    """The ``replay.finished`` ledger payload, as ``orchestrator replay`` writes it."""
    divergence = report.divergence
    return {
        "replayOf": report.original,
        "record": report.original_record,
        "replayRecord": report.replay_record,
        "identical": report.identical,
        "cause": report.cause,
        "ran": report.ran,
        "step": divergence.step if divergence else None,
        "what": divergence.what if divergence else None,
        "inputDrift": [d.to_json() for d in report.input_drift],
        "normalisationVersion": report.normalisation_version,
    }


def keep_upstreams(
    old: _registry.RunRegistration, new: _registry.RunRegistration
) -> _registry.RunRegistration:
    """``new`` (a repeated registration) still served by the replay model ``old`` has."""
    return dataclasses.replace(new, models=old.models, allowed_egress=old.allowed_egress)
