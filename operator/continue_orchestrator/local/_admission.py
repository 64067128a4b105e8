"""Before a sandbox exists: the operator's admission checks, on one machine.

The operator refuses a run whose policy does not compile, whose timeout exceeds the
policy's, or whose repository or secrets the policy does not grant; ``admit`` refuses
the same runs with the same rules, before anything starts. It also takes the models'
literal apiKeys out of config.yaml (they go to the gateway, never the sandbox) and
finds which secrets are brokered model credentials, as the operator's plan does.
"""

from __future__ import annotations

import dataclasses
import os

from continue_orchestrator import api, errors, policy, runner
from continue_orchestrator.local import _context, _options


@dataclasses.dataclass(frozen=True)
class Admitted:
    """What admission found: the compiled policy set, the config with literal keys
    brokered, and the secrets that are model credentials."""

    policy_set: policy.PolicySet
    literals: runner.LiteralKeys
    brokered: frozenset[str]


def admit(run: _context.LocalRun) -> Admitted:
    """The operator's admission checks: policy compiles, timeout, repository, secrets."""
    inputs = run.inputs
    spec = inputs.run.spec
    where = f"{inputs.manifest} (AgentRun/{inputs.name})"
    policy_set = policy.compile(list(inputs.policies))
    limit = min(p.spec.sandbox.max_timeout_seconds for p in inputs.policies)
    if spec.timeout_seconds > limit:
        raise errors.PolicyError(
            f"spec.timeoutSeconds {spec.timeout_seconds} exceeds the policy's "
            f"sandbox.maxTimeoutSeconds of {limit}",
            where=where,
        )
    context = policy.RunContext(namespace=inputs.namespace, name=inputs.name, uid=run.uid)
    requests = [
        ("spec.repository.url", policy.Request(
            action=api.Action.REPOSITORY_ACCESS, repository=spec.repository.url, run=context
        )),
        *((f"spec.secrets[{i}].name", policy.Request(
            action=api.Action.SECRET_READ, secret=m.name, run=context
        )) for i, m in enumerate(spec.secrets)),
    ]  # fmt: skip
    literals = runner.broker_literal_keys(inputs.config, where=f"{where}: config.yaml")
    brokered = runner.brokered_secrets(literals.text, where=f"{where}: config.yaml")
    unmapped = sorted(brokered - {m.name for m in spec.secrets} - {*literals.values})
    if unmapped:
        raise errors.ManifestError(
            f"a model's apiKey uses secret {unmapped[0]!r}, which spec.secrets does not map",
            where=where,
            fix="add it to spec.secrets and pass --secret NAME=env:VARIABLE",
        )
    for field, request in requests:
        decision = policy.decide(policy_set, request)
        if decision.effect is not api.Effect.ALLOW:
            raise errors.PolicyError(
                f"{field}: {request.describe()} is {decision.effect.value} "
                f"(rule {decision.rule or 'default'}: {decision.reason})",
                where=where,
                fix="change the AgentRun or ask the policy's owner",
            )
    return Admitted(policy_set=policy_set, literals=literals, brokered=brokered)


def cn_path(option: str | None) -> str:
    """The Continue CLI to run: ``--cn``, else ``$ORCHESTRATOR_CN``, else the pinned one."""
    return option or os.environ.get("ORCHESTRATOR_CN") or _options.default_cn()


def find_cn(option: str | None) -> str:
    """``cn_path``, resolved, refusing a path that is not an executable."""
    cn = cn_path(option)
    if not os.access(cn, os.X_OK):
        raise errors.OrchestratorError(
            f"the Continue CLI is not at {cn}",
            where="orchestrator run",
            fix="run hack/install-cn.sh (make cn), or pass --cn PATH",
        )
    return os.path.realpath(cn)
