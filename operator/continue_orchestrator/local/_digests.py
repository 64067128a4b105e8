"""What a run notes so it can be replayed: its inputs, and their digests.

``orchestrator run`` stores the inputs (AgentRun, policies, config.yaml; never secret
values: a model's literal apiKey is stored as the brokered reference that stands for it,
as in the operator's config digest) as a blob and notes it and the inputs' digests in the
run's ``run.created`` ledger entry. ``orchestrator replay`` computes the digests again for
the replay and refuses to run when one differs (input drift). Both sides call
``input_digests`` so they cannot disagree on how.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
from collections.abc import Mapping
from typing import Any

from continue_orchestrator import api, errors, policy, records, runner
from continue_orchestrator.local import _inputs


def spec_digest(run: api.AgentRun) -> str:
    """SHA-256 of the canonical spec, without the fields a replay may change."""
    return records.spec_digest(run.spec.wire())


def cli_version(cn: str, fallback: str) -> str:
    """The Continue CLI's version from its package.json, else ``fallback``."""
    path = pathlib.Path(os.path.realpath(cn))
    for parent in path.parents:
        manifest = parent / "package.json"
        if manifest.is_file():
            try:
                data = json.loads(manifest.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                break
            if isinstance(data, dict) and isinstance(data.get("version"), str):
                return f"{data.get('name', 'cn')}@{data['version']}"
            break
    return fallback


def input_digests(
    run: api.AgentRun, *, config: str, policy_digest: str, runner_image: str, cli: str
) -> dict[str, str | None]:
    """Named digests of everything a replay must share with its recording
    (``records.input_digests``, which the operator calls too)."""
    return records.input_digests(
        run.spec.wire(),
        config=config,
        policy_digest=policy_digest,
        runner_image=runner_image,
        cli=cli,
    )


def policy_digest(inputs: _inputs.Inputs) -> str:
    """The policy snapshot's digest, as ``orchestrator run`` and the operator compute it."""
    return policy.snapshot_digest(inputs.policies)


# A brokered literal key's reference, as ``runner.broker_literal_keys`` writes it.
_LITERAL_KEY_REFERENCE = re.compile(r"\$\{\{\s*secrets\.(MODEL_[0-9]+_API_KEY)\s*\}\}")


def recordable_config(config: str) -> str:
    """``config`` as it may be recorded: each model's literal apiKey replaced by the
    brokered reference that stands for it (``runner.broker_literal_keys``)."""
    return runner.broker_literal_keys(config).text


def recordable_run(run: api.AgentRun) -> api.AgentRun:
    """``run`` as it may be recorded: an inline config as ``recordable_config`` has it."""
    inline = run.spec.agent.config
    if inline is None:
        return run
    agent = run.spec.agent.model_copy(update={"config": recordable_config(inline)})
    return run.model_copy(update={"spec": run.spec.model_copy(update={"agent": agent})})


def _without_literal_keys(config: str) -> str:
    # A literal key was not recorded; a replay answers from the record and needs none.
    return _LITERAL_KEY_REFERENCE.sub(r"literal-key-not-recorded-\1", config)


def inputs_document(inputs: _inputs.Inputs) -> bytes:
    """The run's inputs without secret values: enough to run it again from its record."""
    return policy.canonical_json(
        {
            "agentRun": recordable_run(inputs.run).wire(),
            "policies": [source.wire() for source in inputs.policies],
            "config": recordable_config(inputs.config),
            "manifest": str(inputs.manifest),
        }
    )


def run_created_fields(
    inputs: _inputs.Inputs,
    store: records.BlobStore,
    *,
    policy_digest: str,
    runner_image: str,
    cli: str,
) -> dict[str, Any]:
    """What ``orchestrator run`` adds to its ``run.created`` entry so the run can be replayed."""
    return {
        "replayInputs": input_digests(
            recordable_run(inputs.run),
            config=recordable_config(inputs.config),
            policy_digest=policy_digest,
            runner_image=runner_image,
            cli=cli,
        ),
        "inputsDocument": store.put(inputs_document(inputs)),
    }


def restore_inputs(
    store: records.BlobStore, digest: str, secrets: Mapping[str, str]
) -> _inputs.Inputs:
    """The inputs ``inputs_document`` stored as ``digest``, with ``secrets`` given again."""
    where = f"inputs document {digest}"
    try:
        data = json.loads(store.get(digest))
        run = api.parse(data["agentRun"], where=f"{where}: agentRun")
        policies = tuple(
            api.parse(document, where=f"{where}: policies[{index}]")
            for index, document in enumerate(data["policies"])
        )
        config = _without_literal_keys(str(data["config"]))
        manifest = pathlib.Path(str(data.get("manifest") or where))
    except (ValueError, KeyError, TypeError) as error:
        raise errors.RecordError(
            f"not an inputs document ({error})",
            where=where,
            fix="pass the AgentRun manifest (and --policy files) to replay with",
        ) from error
    if (
        not isinstance(run, api.AgentRun)
        or not policies
        or not all(isinstance(p, api.ClusterRunPolicy | api.RunPolicy) for p in policies)
    ):
        raise errors.RecordError(
            "the document does not hold an AgentRun and its policies",
            where=where,
            fix="pass the AgentRun manifest (and --policy files) to replay with",
        )
    inline = run.spec.agent.config
    if inline is not None:
        agent = run.spec.agent.model_copy(update={"config": _without_literal_keys(inline)})
        run = run.model_copy(update={"spec": run.spec.model_copy(update={"agent": agent})})
    missing = [m.name for m in run.spec.secrets if m.name not in secrets]
    if missing:
        raise errors.ManifestError(
            f"the recorded run used secret(s) {', '.join(missing)}, which have no value",
            where=where,
            fix=" ".join(f"--secret {name}=env:VARIABLE" for name in missing),
        )
    return _inputs.Inputs(
        run=run,
        manifest=manifest,
        policies=policies,  # type: ignore[arg-type]
        config=config,
        secrets={m.name: secrets[m.name] for m in run.spec.secrets},
    )
