"""Reading manifests from YAML, with errors that point at the file, document and field.

``kubectl apply`` users meet our validation twice: offline (``orchestrator validate``,
here) and in the API server (the CRD schema and CEL rules). Both say the same things,
because both come from the same models.
"""

from __future__ import annotations

import pathlib
from collections.abc import Iterator
from typing import Any

import pydantic
import yaml

from continue_orchestrator import errors
from continue_orchestrator.api import _agentrun, _approval, _base, _runpolicy

Resource = (
    _agentrun.AgentRun | _runpolicy.RunPolicy | _runpolicy.ClusterRunPolicy | _approval.RunApproval
)

KINDS: dict[str, type[Resource]] = {
    "AgentRun": _agentrun.AgentRun,
    "RunPolicy": _runpolicy.RunPolicy,
    "ClusterRunPolicy": _runpolicy.ClusterRunPolicy,
    "RunApproval": _approval.RunApproval,
}


_TOO_DEEP = "nested too deeply to read (PyYAML recurses once per level)"


def field_path(loc: tuple[int | str, ...]) -> str:
    """('spec', 'rules', 3, 'effect') -> 'spec.rules[3].effect'."""
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif part.startswith("function-after[") or part in KINDS or part.endswith("]"):
            continue
        else:
            path += f".{part}" if path else part
    return path or "(document)"


def _describe(error: Any) -> str:
    message = str(error["msg"])
    if error["type"] == "extra_forbidden":
        return "unknown field (check its spelling and indentation)"
    if error["type"] == "missing":
        return "required field is missing"
    return message.removeprefix("Value error, ")


def parse(document: Any, *, where: str = "") -> Resource:
    """Validate one manifest document into its model, or raise ``errors.ManifestError``."""
    if not isinstance(document, dict):
        raise errors.ManifestError(
            f"expected a mapping with apiVersion and kind, got {type(document).__name__}",
            where=where,
        )
    kind = document.get("kind")
    if not isinstance(kind, str) or kind not in KINDS:
        raise errors.ManifestError(
            f"kind {kind!r} is not one of {', '.join(KINDS)}",
            where=where,
            fix="only Continue Orchestrator resources are validated here",
        )
    if document.get("apiVersion") != _base.API_VERSION:
        raise errors.ManifestError(
            f"apiVersion is {document.get('apiVersion')!r}, expected {_base.API_VERSION!r}",
            where=where,
        )
    metadata = document.get("metadata")
    name = metadata.get("name", "?") if isinstance(metadata, dict) else "?"
    where = f"{where} ({kind}/{name})" if where else f"{kind}/{name}"
    try:
        resource = KINDS[kind].model_validate(document)
    except pydantic.ValidationError as error:
        problems = [f"{field_path(e['loc'])}: {_describe(e)}" for e in error.errors()]
        raise errors.ManifestError("; ".join(problems), where=where) from None
    if isinstance(resource, _agentrun.AgentRun) and resource.spec.agent.config is not None:
        check_continue_config(resource.spec.agent.config, where=f"{where}: spec.agent.config")
    return resource


def check_continue_config(text: str, *, where: str) -> dict[str, Any]:
    """Parse a Continue config.yaml the way Continue would, without judging its contents.

    Continue owns its schema; we only insist on what the runner must rewrite: a YAML
    mapping whose ``models``, if present, is a list of mappings.
    """
    try:
        config = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise errors.ManifestError(f"config.yaml is not valid YAML: {error}", where=where) from None
    except RecursionError:
        raise errors.ManifestError(_TOO_DEEP, where=where) from None
    if not isinstance(config, dict):
        raise errors.ManifestError("config.yaml must be a YAML mapping", where=where)
    models = config.get("models", [])
    if not isinstance(models, list) or not all(isinstance(m, dict) for m in models):
        raise errors.ManifestError("config.yaml 'models' must be a list of mappings", where=where)
    return config


def documents(path: pathlib.Path) -> list[tuple[str, Any]]:
    """The documents of a (multi-document) YAML file, not validated, each with where it
    is (``FILE: document N``); empty documents are skipped."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise errors.ManifestError(f"cannot read: {error.strerror}", where=str(path)) from None
    except UnicodeDecodeError as error:
        raise errors.ManifestError(
            f"not UTF-8 text (byte {error.start})", where=str(path), fix="save it as UTF-8"
        ) from None
    try:
        found = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as error:
        raise errors.ManifestError(f"not valid YAML: {error}", where=str(path)) from None
    except RecursionError:
        raise errors.ManifestError(_TOO_DEEP, where=str(path)) from None
    return [(f"{path}: document {index}", d) for index, d in enumerate(found, start=1)]


def load_file(path: pathlib.Path) -> Iterator[Resource]:
    """Every manifest of a (multi-document) YAML file, validated."""
    for where, document in documents(path):
        yield parse(document, where=where)
