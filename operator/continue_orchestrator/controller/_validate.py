"""Check a new AgentRun against the live cluster and turn it into a plan, or reject it.

Every rejection names the field or the rule that failed, so the AgentRun's condition
tells its author what to change. Denied means policy said no; Failed means something
the run needs is missing or broken. Nothing here writes to the cluster.
"""

from __future__ import annotations

import base64
import dataclasses
import secrets
from collections.abc import Mapping
from typing import Any

from continue_orchestrator import api, errors, policy, runner, runs
from continue_orchestrator.controller import _kube, _names, _settings

JSON = dict[str, Any]


@dataclasses.dataclass(frozen=True, slots=True)
class Rejection(Exception):  # noqa: N818 (a verdict on the run, not a fault)
    """Why a run cannot start: Denied (policy) or Failed (something missing or broken)."""

    phase: api.Phase
    reason: str
    message: str

    def __str__(self) -> str:
        return f"{self.phase.value} ({self.reason}): {self.message}"


def _denied(reason: str, message: str) -> Rejection:
    return Rejection(api.Phase.DENIED, reason, message)


def _failed(reason: str, message: str) -> Rejection:
    return Rejection(api.Phase.FAILED, reason, message)


def parse_run(body: Mapping[str, Any]) -> api.AgentRun:
    document = {key: body[key] for key in ("apiVersion", "kind", "metadata", "spec") if key in body}
    try:
        resource = api.parse(document, where="AgentRun")
    except errors.ManifestError as error:
        raise _failed("InvalidSpec", error.message) from None
    assert isinstance(resource, api.AgentRun)
    return resource


def _describe(decision: policy.Decision, subject: str) -> str:
    verdict = {api.Effect.DENY: "denied", api.Effect.REQUIRE_APPROVAL: "held for approval"}
    text = f"{subject} is {verdict.get(decision.effect, decision.effect.value)}"
    text += f" by rule {decision.rule}" if decision.rule else ""
    text += f" ({decision.policy})" if decision.policy else ""
    return text + (f": {decision.reason}" if decision.reason else "")


def plan(kube: _kube.Kube, body: Mapping[str, Any], settings: _settings.Settings) -> runs.Plan:
    """Validate the run against the live objects; raise ``Rejection`` when it cannot run."""
    run = parse_run(body)
    namespace = str(run.metadata.namespace)
    uid = str(body["metadata"]["uid"])
    spec = run.spec

    policy_name = spec.policy_ref.name
    raw = kube.get(
        f"/apis/{api.GROUP}/{api.VERSION}/namespaces/{namespace}/runpolicies/{policy_name}"
    )
    if raw is None:
        raise _failed(
            "PolicyNotFound",
            f"spec.policyRef.name: RunPolicy {policy_name!r} does not exist in namespace "
            f"{namespace!r}; create it or name an existing one",
        )
    sources: list[api.ClusterRunPolicy | api.RunPolicy] = []
    listed = kube.request("GET", f"/apis/{api.GROUP}/{api.VERSION}/clusterrunpolicies")
    for item in sorted(listed.get("items", []), key=lambda i: str(i["metadata"]["name"])):
        sources.append(_parse_policy(item, "ClusterRunPolicy"))
    sources.append(_parse_policy(raw, "RunPolicy"))
    try:
        compiled = policy.compile(sources)
    except errors.PolicyError as error:
        raise _failed("PolicyInvalid", f"spec.policyRef.name: {error.message}") from None

    context = policy.RunContext(namespace=namespace, name=str(run.metadata.name), uid=uid)
    snap = runs.snapshot(policy.snapshot_content(sources), runtime_class=settings.runtime_class)

    if spec.timeout_seconds > snap.max_timeout_seconds:
        raise _denied(
            "TimeoutExceedsPolicy",
            f"spec.timeoutSeconds: {spec.timeout_seconds} exceeds the policy's "
            f"sandbox.maxTimeoutSeconds of {snap.max_timeout_seconds}",
        )
    decision = policy.decide(
        compiled,
        policy.Request(
            action=api.Action.REPOSITORY_ACCESS, repository=spec.repository.url, run=context
        ),
    )
    if not decision.allowed:
        raise _denied(
            "RepositoryDenied",
            "spec.repository.url: " + _describe(decision, f"repository {spec.repository.url!r}"),
        )
    run_policy = sources[-1]
    for index, mapping in enumerate(spec.secrets):
        decision = policy.decide(
            compiled,
            policy.Request(action=api.Action.SECRET_READ, secret=mapping.name, run=context),
        )
        if mapping.name not in run_policy.spec.allowed_secrets or not decision.allowed:
            detail = (
                _describe(decision, f"secret {mapping.name!r}")
                if not decision.allowed
                else f"secret {mapping.name!r} is not in RunPolicy {policy_name!r} "
                "spec.allowedSecrets"
            )
            raise _denied("SecretNotAllowed", f"spec.secrets[{index}].name: {detail}")

    literals = literal_keys(_config(kube, run, namespace))
    config = literals.text
    brokered = brokered_secrets(run, config)
    values: dict[str, bytes] = {}
    for index, mapping in enumerate(spec.secrets):
        if mapping.name not in brokered:
            values[mapping.name] = _secret_value(
                kube, namespace, mapping.secret_key_ref, f"spec.secrets[{index}].secretKeyRef"
            )

    if kube.get(f"/apis/node.k8s.io/v1/runtimeclasses/{snap.runtime_class}") is None:
        raise _failed(
            "RuntimeClassNotFound",
            f"RuntimeClass {snap.runtime_class!r} (RunPolicy {policy_name!r} "
            "spec.sandbox.runtimeClassName) does not exist; install gVisor and its "
            "RuntimeClass, or name another one in the policy deliberately",
        )
    name = _names.object_name(str(run.metadata.name), uid)
    return runs.Plan(
        run=run,
        uid=uid,
        namespace=namespace,
        name=name,
        snapshot=snap,
        config=config,
        secret_values=values,
        brokered_values={
            **brokered_values(kube, run, brokered),
            **{name: value.encode("utf-8") for name, value in literals.values.items()},
        },
        git_token=git_token(kube, run),
        permissions_yaml=policy.to_permissions_yaml(compiled),
        inputs_digest=runs.inputs_digest(
            run,
            config=config,
            snapshot=snap,
            runner_image=settings.runner_image,
            runner_command=settings.runner_command,
        ),
        token=secrets.token_urlsafe(32),
    )


def literal_keys(config: str) -> runner.LiteralKeys:
    """The config with models' literal apiKeys taken out (``runner.broker_literal_keys``):
    the text is what the bundle carries, the values go to the gateway only."""
    try:
        return runner.broker_literal_keys(config, where="spec.agent config.yaml")
    except errors.ManifestError as error:
        raise _failed("ConfigInvalid", error.message) from None


def resumed_literal_keys(kube: _kube.Kube, run: api.AgentRun, bundled: str) -> dict[str, bytes]:
    """On resume, the literal model keys of a run whose bundle holds ``bundled``: taken
    again from the AgentRun's config (no object of the run keeps them), which must still
    give the same bundle text."""
    names = {r.name for r in runner.secret_references(bundled)}
    if not any(runner.is_literal_key_name(name) for name in names):
        return {}
    literals = literal_keys(_config(kube, run, str(run.metadata.namespace)))
    if literals.text != bundled:
        raise _failed(
            "ConfigChanged",
            "spec.agent config.yaml changed since the run started, so its literal model "
            "apiKey cannot be registered with the gateway again; delete the AgentRun and "
            "create it again",
        )
    return {name: value.encode("utf-8") for name, value in literals.values.items()}


def brokered_secrets(run: api.AgentRun, config: str) -> frozenset[str]:
    """The run's model credentials: used only as models' apiKey, each one mapped in
    spec.secrets (its grant is checked with the others)."""
    where = "spec.agent config.yaml"
    try:
        names = runner.brokered_secrets(config, where=where)
    except errors.ManifestError as error:
        raise _failed("ConfigInvalid", error.message) from None
    unmapped = sorted(
        name
        for name in names - {mapping.name for mapping in run.spec.secrets}
        if not runner.is_literal_key_name(name)
    )
    if unmapped:
        raise _failed(
            "SecretNotMapped",
            f"{where}: a model's apiKey uses secret {unmapped[0]!r}, which spec.secrets does "
            "not map; add it there (from a Secret the policy's allowedSecrets grants)",
        )
    return names


def brokered_values(kube: _kube.Kube, run: api.AgentRun, names: frozenset[str]) -> dict[str, bytes]:
    """Values of the model credentials ``names``, read from their Secrets for the gateway.

    Read again whenever the run is registered (they are kept in no object of the run),
    so a rotated key is the one registered after an operator restart."""
    namespace = str(run.metadata.namespace)
    return {
        mapping.name: _secret_value(
            kube, namespace, mapping.secret_key_ref, f"spec.secrets[{index}].secretKeyRef"
        )
        for index, mapping in enumerate(run.spec.secrets)
        if mapping.name in names
    }


def git_token(kube: _kube.Kube, run: api.AgentRun) -> bytes | None:
    """The forge credential ``spec.repository.credentialsSecretRef`` names, for the gateway.

    Like the model credentials, read again whenever the run is registered: it is kept in
    no object of the run (the pod clones through the gateway, which holds it)."""
    ref = run.spec.repository.credentials_secret_ref
    if ref is None:
        return None
    namespace = str(run.metadata.namespace)
    return _secret_value(kube, namespace, ref, "spec.repository.credentialsSecretRef")


def _parse_policy(raw: Mapping[str, Any], kind: str) -> api.ClusterRunPolicy | api.RunPolicy:
    name = raw.get("metadata", {}).get("name", "?")
    document = {key: raw[key] for key in ("apiVersion", "kind", "metadata", "spec") if key in raw}
    document["metadata"] = {
        "name": name,
        **({"namespace": raw["metadata"]["namespace"]} if raw["metadata"].get("namespace") else {}),
    }
    try:
        resource = api.parse(document, where=f"{kind} {name}")
    except errors.ManifestError as error:
        raise _failed("PolicyInvalid", error.message) from None
    assert isinstance(resource, api.ClusterRunPolicy | api.RunPolicy)
    return resource


def _config(kube: _kube.Kube, run: api.AgentRun, namespace: str) -> str:
    agent = run.spec.agent
    where = "spec.agent.config"
    if agent.config is not None:
        text = agent.config
    else:
        ref = agent.config_map_key_ref
        assert ref is not None
        where = "spec.agent.configMapKeyRef"
        config_map = kube.get(_kube.core(namespace, "configmaps", ref.name))
        if config_map is None:
            raise _failed(
                "ConfigNotFound", f"{where}: ConfigMap {namespace}/{ref.name} does not exist"
            )
        data = config_map.get("data") or {}
        if ref.key not in data:
            raise _failed(
                "ConfigNotFound",
                f"{where}: ConfigMap {namespace}/{ref.name} has no key {ref.key!r}",
            )
        text = str(data[ref.key])
    try:
        api.check_continue_config(text, where=where)
    except errors.ManifestError as error:
        raise _failed("ConfigInvalid", error.message) from None
    return text


def _secret_value(kube: _kube.Kube, namespace: str, ref: api.KeyRef, where: str) -> bytes:
    found = kube.get(_kube.core(namespace, "secrets", ref.name))
    if found is None:
        raise _failed("SecretNotFound", f"{where}: Secret {namespace}/{ref.name} does not exist")
    data = found.get("data") or {}
    if ref.key not in data:
        raise _failed(
            "SecretNotFound", f"{where}: Secret {namespace}/{ref.name} has no key {ref.key!r}"
        )
    return base64.b64decode(data[ref.key])
