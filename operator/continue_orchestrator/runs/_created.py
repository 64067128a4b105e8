"""The first entries of a run's ledger: ``run.created`` and one ``secret.read`` per secret.

Both say what the run was asked to do and with what, once its plan is known: the inputs
and policy digests, the policies, the runner image and the runtime class the policy
asks for, the names of the secrets it was given, the input digests a replay compares
(``replay_inputs``), and for each secret where its value came from (a Secret's name and
key) and what it is for (``secret_purpose``), never the value. The operator and
``orchestrator run`` write the same entries; what only one of them knows (local mode's
sandbox mode and its stored inputs document) comes in as ``extra``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from continue_orchestrator import ledger
from continue_orchestrator.runs import _plan


def created(
    plan: _plan.Plan,
    *,
    runner_image: str,
    replay_inputs: Mapping[str, str | None],
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The ``run.created`` payload of a run with a plan."""
    spec = plan.run.spec
    return {
        "name": str(plan.run.metadata.name),
        "namespace": plan.namespace,
        "repository": _plan.shown_url(spec.repository.url),
        "policyRef": spec.policy_ref.name,
        "inputsDigest": plan.inputs_digest,
        "policyDigest": plan.snapshot.digest,
        "policies": list(plan.snapshot.sources),
        "runnerImage": runner_image,
        "runtimeClassName": plan.snapshot.runtime_class,
        "secrets": sorted({*plan.secret_values, *plan.brokered_values}),
        "replayInputs": dict(replay_inputs),
        **(extra or {}),
    }


def secret_reads(plan: _plan.Plan) -> list[dict[str, Any]]:
    """One ``secret.read`` payload per ``spec.secrets`` entry, in order: the Secret and
    key its value is read from, and what it is for (which names the Continue secret);
    the ledger takes no other field of a secret.read."""
    return [
        {
            "name": mapping.secret_key_ref.name,
            "namespace": plan.namespace,
            "key": mapping.secret_key_ref.key,
            "purpose": _plan.secret_purpose(index, mapping.name, plan.brokered_values),
        }
        for index, mapping in enumerate(plan.run.spec.secrets)
    ]


def start_entries(
    plan: _plan.Plan,
    actor: str,
    *,
    runner_image: str,
    replay_inputs: Mapping[str, str | None],
    extra: Mapping[str, Any] | None = None,
) -> list[ledger.Append]:
    """``run.created`` and the ``secret.read`` entries, to append in one go."""
    payload = created(plan, runner_image=runner_image, replay_inputs=replay_inputs, extra=extra)
    return [
        ledger.Append(plan.uid, ledger.Kind.RUN_CREATED, actor, payload),
        *(ledger.Append(plan.uid, ledger.Kind.SECRET_READ, actor, read)
          for read in secret_reads(plan)),
    ]  # fmt: skip
