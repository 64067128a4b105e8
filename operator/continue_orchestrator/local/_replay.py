"""``orchestrator replay RECORD``: run a recorded AgentRun again and say if it did the same.

The replay goes through ``orchestrator run``'s pipeline unchanged (gateway, policy,
gVisor sandbox, runner, ledger, attestation); only its upstream is a
``records.ReplayModel`` that plays the recorded model answers. Before anything runs,
the inputs' digests are compared with those the recorded run noted; any difference is
input drift and nothing runs. The outcome is a ``records.ReplayReport``, written to
``replays/UID.json`` in the state directory and summarised in the ledger
(``replay.started``, ``replay.finished``); the replay's attestation names the run it
replayed (from its ``replay.started`` entry, as the operator's does).
"""

from __future__ import annotations

import dataclasses
import getpass
import json
import pathlib
import re
import uuid
from collections.abc import Mapping
from typing import Any

from continue_orchestrator import attest, errors, ledger, records
from continue_orchestrator.local import _admission, _digests, _inputs, _options, _run

_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")


def resolve_record(record: str, store: records.BlobStore) -> str:
    """The record digest ``record`` names: a digest, a run's report.json, a record
    directory (``records/runs/UID``), a file holding the digest, or a run uid."""
    if _DIGEST.fullmatch(record):
        return record
    path = pathlib.Path(record)
    candidates = [path / "manifest", path / "report.json", path]
    for candidate in candidates:
        if not candidate.is_file():
            continue
        text = candidate.read_text(encoding="utf-8").strip()
        if candidate.name == "report.json" or text.startswith("{"):
            try:
                found = json.loads(text).get("recordDigest")
            except (ValueError, AttributeError):
                found = None
        else:
            found = text
        if isinstance(found, str) and _DIGEST.fullmatch(found):
            return found
    manifest = store.root / "runs" / record / "manifest"
    if "/" not in record and manifest.is_file():
        return manifest.read_text(encoding="utf-8").strip()
    raise errors.RecordError(
        f"{record!r} names no run record",
        where=str(store.root),
        fix="pass a record digest (sha256:...), a run's report.json, or a run uid "
        "recorded in this state directory",
    )


def recorded_inputs(book: ledger.Ledger, run: str) -> Mapping[str, Any]:
    """The ``run.created`` payload ``orchestrator run`` wrote for ``run``."""
    for entry in book.entries(run_uid=run):
        if entry.kind is ledger.Kind.RUN_CREATED and entry.payload is not None:
            return entry.payload
    raise errors.RecordError(
        f"the ledger has no run.created entry for run {run}",
        where=book_url(book),
        fix="replay from the state directory the run was recorded in (--state-dir)",
    )


def book_url(book: ledger.Ledger) -> str:
    return str(getattr(book, "url", "") or "the ledger")


def replay(
    record: str,
    options: _options.Options,
    *,
    inputs: _inputs.Inputs | None = None,
    secrets: Mapping[str, str] | None = None,
    say: _options.Say = print,
) -> records.ReplayReport:
    """Replay ``record`` with ``inputs`` (default: the recorded run's own) and report."""
    state = options.state_dir.resolve()
    store = records.BlobStore(state / "records")
    digest = resolve_record(record, store)
    original = records.record_by_digest(store, digest)
    url = f"sqlite:///{state / 'ledger.db'}"
    actor = f"local:{getpass.getuser()}"
    with ledger.open(url) as book:
        created = dict(recorded_inputs(book, original.run))
    if inputs is None:
        document = created.get("inputsDocument")
        if not isinstance(document, str):
            raise errors.RecordError(
                f"run {original.run} did not store its inputs",
                where=url,
                fix="pass the AgentRun manifest (and --policy files) to replay with",
            )
        inputs = _digests.restore_inputs(store, document, secrets or {})
    recorded = dict(created.get("replayInputs") or {})
    recorded.setdefault("policy", created.get("policyDigest"))
    recorded.setdefault("image", created.get("runnerImage"))
    cn = _admission.cn_path(options.cn)
    current = _digests.input_digests(
        _digests.recordable_run(inputs.run),
        config=_digests.recordable_config(inputs.config),
        policy_digest=_digests.policy_digest(inputs),
        runner_image=_options.runner_image(),
        cli=_digests.cli_version(cn, _options.CN_VERSION),
    )
    drift = records.input_drift(recorded, current)
    uid = f"{inputs.name}-replay-{uuid.uuid4().hex[:8]}"
    original_ref = attest.RunRef(
        namespace=str(created.get("namespace") or inputs.namespace),
        name=str(created.get("name") or inputs.name),
        uid=original.run,
    )
    with ledger.open(url) as book:
        book.append(uid, ledger.Kind.REPLAY_STARTED, actor, {
            "replayOf": original_ref.model_dump(mode="json"), "record": digest,
            "normalisationVersion": records.NORMALISATION_VERSION,
            "inputs": current, "inputDrift": [d.to_json() for d in drift],
        })  # fmt: skip
    say(f"replay of {original.run} ({digest}) as {uid}")
    if drift:
        for item in drift:
            say(f"  input drift: {item.name}: {item.recorded} -> {item.replayed}")
        report = records.build_replay_report(
            original=original, original_digest=digest, replay=None, replay_digest=None,
            model=None, drift=drift,
        )  # fmt: skip
        report.replay = uid
        return _finish(report, state, url, uid, actor)
    model = records.replay_model(store, digest, secrets=inputs.secrets)
    run_options = dataclasses.replace(options, uid=uid, model=model, model_script=None)
    result = _run.run(inputs, run_options, say=say)
    replay_record = (
        records.record_by_digest(store, result.record_digest) if result.record_digest else None
    )
    report = records.build_replay_report(
        original=original, original_digest=digest, replay=replay_record,
        replay_digest=result.record_digest, model=model,
    )  # fmt: skip
    report.replay = uid
    return _finish(report, state, url, uid, actor)


def _finish(
    report: records.ReplayReport, state: pathlib.Path, url: str, uid: str, actor: str
) -> records.ReplayReport:
    divergence = report.divergence
    with ledger.open(url) as book:
        book.append(uid, ledger.Kind.REPLAY_FINISHED, actor, {
            "replayOf": report.original, "record": report.original_record,
            "replayRecord": report.replay_record, "identical": report.identical,
            "cause": report.cause, "ran": report.ran,
            "step": divergence.step if divergence else None,
            "what": divergence.what if divergence else None,
            "inputDrift": [d.to_json() for d in report.input_drift],
            "normalisationVersion": report.normalisation_version,
        })  # fmt: skip
    directory = state / "replays"
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"{uid}.json").write_text(
        json.dumps(report.to_json(), indent=2, sort_keys=True) + "\n", encoding="utf-8"
    )
    return report
