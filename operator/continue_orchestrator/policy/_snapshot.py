"""The policy snapshot: the policy set in force for one run, frozen as data.

A run is admitted under the ``ClusterRunPolicy`` baseline and its ``RunPolicy`` as they
were at that moment. That set travels as a snapshot: a list of ``{kind, name,
namespace, spec}``, baseline first, whose canonical JSON (RFC 8785) is what the run's
Secret carries, what the gateway is registered with, and what ``PolicySet.digest``
digests. Building it, digesting it and reading the policies back from it live here
(``policy.compile_snapshot`` compiles a set from it), so the operator, the gateway and
local mode cannot disagree about a policy's digest.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import rfc8785

from continue_orchestrator import api, digest, errors

Source = api.ClusterRunPolicy | api.RunPolicy
JSON = dict[str, Any]


def document(sources: Sequence[Source]) -> list[JSON]:
    """The policy set as data, baseline first: one ``{kind, name, namespace, spec}`` each."""
    return [
        {
            "kind": source.kind,
            "name": source.metadata.name or "",
            "namespace": source.metadata.namespace or "",
            "spec": source.spec.wire(),
        }
        for source in sources
    ]


def content(sources: Sequence[Source]) -> bytes:
    """The snapshot's canonical bytes (RFC 8785 JSON of ``document``)."""
    return canonical(document(sources))


def canonical(value: Any) -> bytes:
    """RFC 8785 canonical JSON, the one form anything digested here is digested in."""
    return bytes(rfc8785.dumps(value))


def digest_of(sources: Sequence[Source]) -> str:
    """``sha256:…`` of the snapshot: equal to ``compile(sources).digest``."""
    return digest.text(content(sources))


def source_digests(sources: Sequence[Source]) -> tuple[str, ...]:
    """The digest of each policy on its own, baseline first (for a run's inputs digest)."""
    return tuple(digest.text(canonical(item)) for item in document(sources))


def sources_from(manifests: Any, *, where: str = "policy snapshot") -> list[Source]:
    """The policies a snapshot document (a decoded list) holds, checked item by item.

    Raises ``errors.ManifestError`` naming the item (``where[i]``) that is not a
    ``{kind, name, namespace, spec}`` of a RunPolicy or ClusterRunPolicy.
    """
    if not isinstance(manifests, list) or not manifests:
        raise errors.ManifestError(
            "must be a non-empty list of {kind, name, namespace, spec}",
            where=where,
            fix="send the run's policy snapshot (its Secret's policy.json), baseline first",
        )
    out: list[Source] = []
    for index, item in enumerate(manifests):
        field = f"{where}[{index}]"
        if not isinstance(item, dict) or not isinstance(item.get("spec"), dict):
            raise errors.ManifestError(
                "must be an object with kind, name, namespace and spec", where=field
            )
        metadata = {"name": item.get("name")}
        if item.get("namespace"):
            metadata["namespace"] = item["namespace"]
        resource = api.parse(
            {
                "apiVersion": api.API_VERSION,
                "kind": item.get("kind"),
                "metadata": metadata,
                "spec": item["spec"],
            },
            where=field,
        )
        if not isinstance(resource, api.ClusterRunPolicy | api.RunPolicy):
            raise errors.ManifestError(
                "must be RunPolicy or ClusterRunPolicy", where=f"{field}.kind"
            )
        out.append(resource)
    return out


def sources_of(snapshot: bytes, *, where: str = "policy snapshot") -> list[Source]:
    """The policies in a snapshot's canonical bytes."""
    try:
        decoded = json.loads(snapshot)
    except ValueError as error:
        raise errors.ManifestError(f"is not JSON: {error}", where=where) from None
    return sources_from(decoded, where=where)
