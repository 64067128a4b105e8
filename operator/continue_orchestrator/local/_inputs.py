"""What ``orchestrator run`` reads before anything starts: the manifests, the config, secrets.

In a cluster the operator finds the RunPolicy, the cluster baselines, the ConfigMap and
the Secrets in the API server. On one machine they are files: given with flags, or
found in YAML files beside the AgentRun. Secret values come from the environment or
files the person names (``NAME=env:VAR``, ``NAME=file:PATH``), never from the manifests.
Everything is checked here, so a run that cannot start fails before a sandbox exists.
The forge credential ``spec.repository.credentialsSecretRef`` names comes the same way
(``repository_credential``, ``env:VAR`` or ``file:PATH``) and goes to the gateway only.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
from collections.abc import Mapping, Sequence
from typing import Any

from continue_orchestrator import api, errors

Policy = api.ClusterRunPolicy | api.RunPolicy


@dataclasses.dataclass(frozen=True)
class Inputs:
    """One AgentRun with everything it refers to, resolved from files."""

    run: api.AgentRun
    manifest: pathlib.Path
    policies: tuple[Policy, ...]
    """Cluster baselines (by name), then the run's RunPolicy: the operator's order."""
    config: str
    """The Continue config.yaml text, exactly as written."""
    secrets: Mapping[str, str] = dataclasses.field(default_factory=dict)
    """Secret values by Continue name (for the sandbox, or brokered model keys)."""
    git_token: str | None = dataclasses.field(default=None, repr=False)
    """The forge credential the gateway fetches the repository with (never the sandbox)."""

    @property
    def namespace(self) -> str:
        return self.run.metadata.namespace or "default"

    @property
    def name(self) -> str:
        return str(self.run.metadata.name)

    @property
    def run_policy(self) -> api.RunPolicy:
        last = self.policies[-1]
        assert isinstance(last, api.RunPolicy)
        return last


def parse_secret_flag(text: str) -> tuple[str, str]:
    """``NAME=env:VAR`` or ``NAME=file:PATH`` -> (NAME, value)."""
    name, sep, source = text.partition("=")
    return name, secret_value(
        source if sep and name else "",
        where=f"--secret {text}",
        form="NAME=env:VARIABLE or NAME=file:PATH",
        example="--secret OPENAI_API_KEY=env:OPENAI_API_KEY",
    )


def secret_value(source: str, *, where: str, form: str, example: str) -> str:
    """The value ``env:VAR`` or ``file:PATH`` names (a file's trailing newline dropped);
    an error saying ``form`` is expected, ``example`` for one, when it is neither."""
    kind, colon, ref = source.partition(":")
    if not colon or kind not in ("env", "file") or not ref:
        raise errors.ManifestError(f"expected {form}", where=where, fix=f"for example {example}")
    if kind == "env":
        if ref not in os.environ:
            raise errors.ManifestError(
                f"environment variable {ref} is not set", where=where, fix=f"export {ref}=..."
            )
        return os.environ[ref]
    try:
        return pathlib.Path(ref).read_text(encoding="utf-8").rstrip("\n")
    except OSError as error:
        raise errors.ManifestError(
            f"cannot read the secret file: {error.strerror}", where=where
        ) from None


def _beside(manifest: pathlib.Path) -> list[pathlib.Path]:
    directory = manifest.parent
    return sorted(p for p in [*directory.glob("*.yaml"), *directory.glob("*.yml")] if p.is_file())


def load(
    manifest: pathlib.Path,
    *,
    policy_files: Sequence[pathlib.Path] = (),
    config_maps: Sequence[str] = (),
    secrets: Sequence[str] = (),
    repository_credential: str | None = None,
) -> Inputs:
    """Read and check the AgentRun in ``manifest`` and everything it refers to.

    ``policy_files`` (and ConfigMap manifests among them) replace the search beside the
    manifest. ``config_maps`` are ``NAME=FILE`` (a ConfigMap NAME whose key is FILE's
    base name, as ``kubectl create configmap --from-file`` makes). ``secrets`` are
    ``NAME=env:VAR`` or ``NAME=file:PATH``; ``repository_credential`` is ``env:VAR`` or
    ``file:PATH``, the forge token ``spec.repository.credentialsSecretRef`` names.
    """
    runs: list[tuple[str, api.AgentRun]] = []
    for where, document in api.documents(manifest):
        if isinstance(document, dict) and document.get("kind") == "AgentRun":
            resource = api.parse(document, where=where)
            assert isinstance(resource, api.AgentRun)
            runs.append((where, resource))
    if len(runs) != 1:
        raise errors.ManifestError(
            f"expected exactly one AgentRun, found {len(runs)}",
            where=str(manifest),
            fix="put one AgentRun in the file given to orchestrator run",
        )
    where, run = runs[0]
    namespace = run.metadata.namespace or "default"

    searched = list(policy_files) or [p for p in _beside(manifest)]
    if manifest not in searched:
        searched.append(manifest)
    baselines: dict[str, api.ClusterRunPolicy] = {}
    run_policies: list[api.RunPolicy] = []
    maps: dict[str, dict[str, str]] = {}
    for path in searched:
        for doc_where, document in api.documents(path):
            kind = document.get("kind") if isinstance(document, dict) else None
            if kind == "ConfigMap":
                _add_config_map(maps, document, doc_where, namespace)
            elif kind in ("RunPolicy", "ClusterRunPolicy"):
                resource = api.parse(document, where=doc_where)
                if isinstance(resource, api.ClusterRunPolicy):
                    baselines.setdefault(str(resource.metadata.name), resource)
                elif isinstance(resource, api.RunPolicy) and _same_namespace(resource, namespace):
                    run_policies.append(resource)
    wanted = run.spec.policy_ref.name
    matching = [p for p in run_policies if p.metadata.name == wanted]
    if not matching:
        looked = ", ".join(str(p) for p in searched)
        raise errors.ManifestError(
            f"spec.policyRef.name: RunPolicy {wanted!r} (namespace {namespace!r}) "
            f"is in none of: {looked}",
            where=where,
            fix="pass --policy FILE with that RunPolicy, or put it beside the AgentRun",
        )
    policies: tuple[Policy, ...] = (
        *(baselines[name] for name in sorted(baselines)),
        matching[0],
    )
    for flag in config_maps:
        name, sep, file_name = flag.partition("=")
        if not sep or not name or not file_name:
            raise errors.ManifestError(
                "expected NAME=FILE", where=f"--config-map {flag}",
                fix="for example --config-map demo-agent=continue/config.yaml",
            )  # fmt: skip
        path = pathlib.Path(file_name)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as error:
            raise errors.ManifestError(
                f"cannot read: {error.strerror}", where=f"--config-map {flag}"
            ) from None
        maps.setdefault(name, {})[path.name] = text
    config = _config(run, maps, where)
    values = dict(parse_secret_flag(flag) for flag in secrets)
    _check_secrets(run, policies, values, where)
    git_token = None
    if repository_credential is not None:
        git_token = secret_value(
            repository_credential,
            where=f"--repository-credential {repository_credential}",
            form="env:VARIABLE or file:PATH",
            example="--repository-credential env:FORGE_TOKEN",
        )
    return Inputs(
        run=run, manifest=manifest, policies=policies, config=config, secrets=values,
        git_token=git_token,
    )  # fmt: skip


def _same_namespace(policy: api.RunPolicy, namespace: str) -> bool:
    return (policy.metadata.namespace or "default") == namespace


def _add_config_map(
    maps: dict[str, dict[str, str]], document: dict[str, Any], where: str, namespace: str
) -> None:
    metadata = document.get("metadata") or {}
    name, data = metadata.get("name"), document.get("data")
    if not isinstance(name, str) or not isinstance(data, dict):
        raise errors.ManifestError(
            "a ConfigMap needs metadata.name and a data mapping", where=where
        )
    if (metadata.get("namespace") or "default") != namespace:
        return
    maps.setdefault(name, {}).update({str(k): str(v) for k, v in data.items()})


def _config(run: api.AgentRun, maps: Mapping[str, Mapping[str, str]], where: str) -> str:
    agent = run.spec.agent
    if agent.config is not None:
        return agent.config
    ref = agent.config_map_key_ref
    assert ref is not None
    field = f"{where}: spec.agent.configMapKeyRef"
    if ref.name not in maps:
        raise errors.ManifestError(
            f"ConfigMap {ref.name!r} was not found",
            where=field,
            fix=f"pass --config-map {ref.name}=PATH/{ref.key}, or put the ConfigMap "
            "manifest beside the AgentRun",
        )
    if ref.key not in maps[ref.name]:
        raise errors.ManifestError(
            f"ConfigMap {ref.name!r} has no key {ref.key!r} "
            f"(it has {', '.join(sorted(maps[ref.name])) or 'none'})",
            where=field,
        )
    text = maps[ref.name][ref.key]
    api.check_continue_config(text, where=field)
    return text


def _check_secrets(
    run: api.AgentRun, policies: Sequence[Policy], values: Mapping[str, str], where: str
) -> None:
    allowed = policies[-1].spec.allowed_secrets if policies else []
    for index, mapping in enumerate(run.spec.secrets):
        field = f"{where}: spec.secrets[{index}].name"
        if mapping.name not in allowed:
            raise errors.PolicyError(
                f"secret {mapping.name!r} is not in the RunPolicy's spec.allowedSecrets",
                where=field,
                fix="remove it from the AgentRun or ask the policy's owner to allow it",
            )
        if mapping.name not in values:
            raise errors.ManifestError(
                f"secret {mapping.name!r} has no value",
                where=field,
                fix=f"pass --secret {mapping.name}=env:VARIABLE (or =file:PATH)",
            )
