"""What the gateway's sealed record says of a run: its digest, its models, the runner's report.

The gateway records every model exchange of a run (noting the model and the wire API
it spoke) and the outcome the runner posted at the end, and seals the record when the
run is unregistered. That is the evidence a run's facts take from outside the ledger:
the operator reads it from the record store it shares with the gateway (``orchestrator
operator --record-root``), local mode from its state directory. The runner's report is
parsed here, where it comes in, as a ``runner.Outcome``; one that is not a valid report
counts as no report (its measurements are attested as unmeasured, never guessed).
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
from collections.abc import Callable

import pydantic

from continue_orchestrator import attest, errors, records, runner


@dataclasses.dataclass(frozen=True, slots=True)
class Evidence:
    """What the gateway and runner know of a run that its AgentRun does not say.

    A digest or version left None is attested as ``null`` (and a digest gets no
    subject): the run produced no such thing, nobody measured it, or nobody kept it.
    """

    record_digest: str | None = None
    """The sealed record's ``sha256:`` digest."""
    outcome: runner.Outcome | None = None
    """The runner's report, as the record kept it."""
    models: tuple[attest.ModelUse, ...] = ()
    """Each model the gateway forwarded to, with the wire API it noted (None if not)."""

    @property
    def diff_digest(self) -> str | None:
        diff = self.outcome.diff if self.outcome is not None else None
        return diff.digest if diff is not None else None

    @property
    def workspace_tree_digest(self) -> str | None:
        return self.outcome.workspace_tree_digest if self.outcome is not None else None

    @property
    def cli_version(self) -> str | None:
        return (self.outcome.cli_version or None) if self.outcome is not None else None

    @property
    def verify_results(self) -> tuple[attest.VerifyResult, ...]:
        """The verify commands the runner ran; one that never exited counts as -1."""
        if self.outcome is None:
            return ()
        return tuple(
            attest.VerifyResult(
                command=item.command or item.name or "?",
                exit_code=item.result.exit_code if item.result.exit_code is not None else -1,
                duration_seconds=max(0.0, item.result.duration_seconds),
            )
            for item in self.outcome.verify
        )


EvidenceSource = Callable[[str], Evidence | None]
"""Run UID -> its evidence, or None when nothing is known."""


def parse_outcome(data: bytes | str) -> runner.Outcome | None:
    """The runner's report in ``data``; None when it is not one."""
    try:
        return runner.Outcome.model_validate(json.loads(data))
    except (ValueError, pydantic.ValidationError):
        return None


def read(store: records.BlobStore, uid: str) -> Evidence | None:
    """The evidence the record of run ``uid`` holds; None if there is no record."""
    try:
        record = records.load(store, uid)
    except errors.RecordError:
        return None
    manifest = record.directory / "manifest"
    sealed = manifest.read_text(encoding="utf-8").strip() if manifest.exists() else None
    requests: dict[tuple[str, str | None], int] = {}
    outcome: runner.Outcome | None = None
    for exchange in record.exchanges:
        if exchange.kind == "model" and exchange.facts.get("model"):
            provider = exchange.facts.get("provider")
            key = (str(exchange.facts["model"]), str(provider) if provider else None)
            requests[key] = requests.get(key, 0) + 1
        elif exchange.kind == "run.outcome" and "outcome" in exchange.blobs:
            try:
                outcome = parse_outcome(store.get(exchange.blobs["outcome"]))
            except errors.RecordError:
                outcome = None
    return Evidence(
        record_digest=sealed or None,
        outcome=outcome,
        models=tuple(
            attest.ModelUse(provider=provider, model=name, requests=count)
            for (name, provider), count in sorted(
                requests.items(), key=lambda item: (item[0][0], item[0][1] or "")
            )
        ),
    )


def from_records(root: str | pathlib.Path) -> EvidenceSource:
    """Evidence from a record store (the gateway's, or a volume the operator also mounts):
    the sealed record's digest; from the runner's outcome the diff and workspace tree
    digests, the CLI version and verify results; models and their providers from the
    recorded model exchanges."""
    store = records.BlobStore(root)
    return lambda uid: read(store, uid)
