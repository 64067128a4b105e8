"""Reading a run registration sent over the admin API, trusting nothing in it.

``POST /admin/runs`` carries what ``RunRegistration`` holds, as JSON: the policy comes
as its canonical manifests plus the digest the operator computed, and the gateway
compiles the manifests itself and refuses the run unless they digest to exactly that,
so the gateway enforces the snapshot the run was admitted under and nothing else. Every
refusal names the field at fault.
"""

from __future__ import annotations

import contextlib
import math
import re
import time
from collections.abc import Mapping
from typing import Any

from continue_orchestrator import digest, errors, policy
from continue_orchestrator.gateway import _registry

UID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_HEX64 = re.compile(r"[0-9a-fA-F]{64}")
_KNOWN = frozenset(
    {
        "uid",
        "agent",
        "name",
        "namespace",
        "token",
        "tokenSha256",
        "expiresAt",
        "policy",
        "models",
        "allowedEgress",
        "secrets",
        "workspace",
        "approvalTimeoutSeconds",
        "maxDeniedRounds",
        "replayOf",
        "repository",
    }
)
WHERE = "POST /admin/runs"


def _bad(field: str, what: str, fix: str = "") -> errors.GatewayError:
    return errors.GatewayError(what, where=f"{WHERE}: {field}", fix=fix)


def _string(body: Mapping[str, Any], field: str, *, required: bool = True, where: str = "") -> str:
    value = body.get(field)
    if value is None and not required:
        return ""
    if not isinstance(value, str) or (required and not value):
        raise _bad(where + field, f"must be a non-empty string, got {_kind(value)}")
    return value


def _number(body: Mapping[str, Any], field: str, default: float | None = None) -> float:
    value = body.get(field, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise _bad(field, f"must be a number, got {_kind(value)}")
    return float(value)


def _strings(value: Any, field: str) -> dict[str, str]:
    if not isinstance(value, dict):
        raise _bad(field, f"must be an object of strings, got {_kind(value)}")
    for key, item in value.items():
        if not isinstance(item, str):
            raise _bad(f"{field}.{key}", f"must be a string, got {_kind(item)}")
    return dict(value)


def _kind(value: Any) -> str:
    if value is None:
        return "nothing"
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean"}.get(
        type(value), type(value).__name__
    )


def _sha256(value: Any, field: str) -> str:
    """``value`` if it is exactly a digest's text form (``sha256:`` and 64 lower-case hex)."""
    if isinstance(value, str):
        with contextlib.suppress(errors.OrchestratorError):
            if str(digest.Digest.parse(value, where=field)) == value:
                return value
    raise _bad(field, "must be sha256: and 64 lower-case hex digits")


def policy_set(document: Any) -> policy.PolicySet:
    """Compile ``{"digest", "manifests"}``; raises unless the manifests give that digest."""
    if not isinstance(document, dict):
        raise _bad("policy", f"must be an object with digest and manifests, got {_kind(document)}")
    claimed = _sha256(document.get("digest"), "policy.digest")
    try:
        sources = policy.snapshot_sources_from(document.get("manifests"), where="policy.manifests")
    except errors.ManifestError as error:
        raise _bad(error.where, error.what, error.fix) from None
    try:
        compiled = policy.compile(sources)
    except errors.PolicyError as error:
        raise _bad("policy.manifests", error.message) from None
    if compiled.digest != claimed:
        raise _bad(
            "policy.digest",
            f"the manifests digest to {compiled.digest}, not {claimed}; refusing a policy "
            "that is not the run's snapshot",
            fix="send the snapshot the run was admitted under, unchanged",
        )
    return compiled


def _repository(value: Any) -> _registry.GitOrigin | None:
    """The run's repository for the git endpoint, or None when the body names none."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise _bad("repository", f"must be an object with url and path, got {_kind(value)}")
    unknown = sorted(set(value) - {"url", "path", "username", "token"})
    if unknown:
        raise _bad(f"repository.{unknown[0]}", "is not a repository field")
    fields = {
        name: _string(value, name, required=name in ("url", "path"), where="repository.")
        for name in ("url", "path", "username", "token")
    }
    try:
        return _registry.GitOrigin(
            url=fields["url"],
            path=fields["path"],
            username=fields["username"] or "x-access-token",
            token=fields["token"],
        )
    except errors.GatewayError as error:
        raise errors.GatewayError(
            error.what, where=f"{WHERE}: {error.where}", fix=error.fix
        ) from None


def _approval_timeout(compiled: policy.PolicySet) -> float:
    return float(min(p.spec.approval_timeout_seconds for p in compiled.policies))


def registration(body: Any, *, now: float | None = None) -> _registry.RunRegistration:
    """The run ``body`` describes; raises ``errors.GatewayError`` naming the bad field."""
    if not isinstance(body, dict):
        raise errors.GatewayError(f"the body must be a JSON object, got {_kind(body)}", where=WHERE)
    unknown = sorted(set(body) - _KNOWN)
    if unknown:
        raise _bad(unknown[0], "is not a registration field", fix=f"known: {sorted(_KNOWN)}")
    uid = _string(body, "uid")
    if not UID.fullmatch(uid):
        raise _bad("uid", "must be 1-128 letters, digits, '.', '_' or '-' (the run's uid)")
    token = _string(body, "token", required=False)
    token_sha256 = _string(body, "tokenSha256", required=False)
    if bool(token) == bool(token_sha256):
        raise _bad("token", "give exactly one of token and tokenSha256")
    if token and len(token) < 16:
        raise _bad("token", "is shorter than 16 characters", fix="use gateway.new_token()")
    if token_sha256 and not _HEX64.fullmatch(token_sha256):
        raise _bad("tokenSha256", "must be 64 hex digits (SHA-256 of the run token)")
    expires_at = _number(body, "expiresAt")
    if expires_at <= (time.time() if now is None else now):
        raise _bad("expiresAt", f"{expires_at:.0f} is in the past; the run has already expired")
    compiled = policy_set(body.get("policy"))
    agent = body.get("agent", True)
    if not isinstance(agent, bool):
        raise _bad("agent", f"must be true or false, got {_kind(agent)}")
    models_body = body.get("models")
    if not isinstance(models_body, dict) or (agent and not models_body):
        raise _bad(
            "models",
            f"must be a non-empty object of models, got {_kind(models_body)}",
            fix='a sandbox that runs no agent (a verify sandbox) is registered with "agent": '
            "false and no models",
        )
    if not agent and models_body:
        raise _bad("models", 'must be empty when "agent" is false: no agent, no model')
    models: dict[str, _registry.Upstream] = {}
    for model, entry in models_body.items():
        field = f"models.{model}"
        if not isinstance(entry, dict):
            raise _bad(field, f"must be an object with apiBase and apiKey, got {_kind(entry)}")
        unknown_keys = sorted(set(entry) - {"apiBase", "apiKey", "provider"})
        if unknown_keys:
            raise _bad(f"{field}.{unknown_keys[0]}", "is not a model field")
        base = _string(entry, "apiBase") if "apiBase" in entry else ""
        key = entry.get("apiKey")
        provider = entry.get("provider", "openai")
        if not base:
            raise _bad(f"{field}.apiBase", "must be a non-empty string")
        if not isinstance(key, str) or not key:
            raise _bad(f"{field}.apiKey", "must be the provider key, a non-empty string")
        if provider not in ("openai", "anthropic"):
            raise _bad(f"{field}.provider", f"{provider!r} is not openai or anthropic")
        models[str(model)] = _registry.Upstream(base, key, provider)
    egress = body.get("allowedEgress", [])
    if not isinstance(egress, list) or not all(isinstance(e, str) and e for e in egress):
        raise _bad("allowedEgress", "must be a list of host or host:port strings")
    secrets = _strings(body.get("secrets", {}), "secrets")
    workspace = _string(body, "workspace", required=False) or "/workspace"
    approval_timeout = (
        _number(body, "approvalTimeoutSeconds")
        if "approvalTimeoutSeconds" in body
        else _approval_timeout(compiled)
    )
    if approval_timeout <= 0:
        raise _bad("approvalTimeoutSeconds", "must be positive")
    rounds = body.get("maxDeniedRounds", 8)
    if isinstance(rounds, bool) or not isinstance(rounds, int) or not 0 <= rounds <= 64:
        raise _bad("maxDeniedRounds", "must be an integer from 0 to 64")
    replay_of = body.get("replayOf")
    if replay_of is not None:
        if not isinstance(replay_of, dict) or set(replay_of) != {"record"}:
            raise _bad("replayOf", 'must be {"record": "sha256:..."}')
        _sha256(replay_of["record"], "replayOf.record")
    repository = _repository(body.get("repository"))
    try:
        return _registry.RunRegistration(
            uid=uid,
            token=token,
            token_sha256=token_sha256.lower(),
            expires_at=expires_at,
            policy_set=compiled,
            policy_digest=compiled.digest,
            models=models,
            allowed_egress=frozenset(egress),
            name=_string(body, "name", required=False),
            namespace=_string(body, "namespace", required=False),
            secrets=secrets,
            workspace=workspace,
            workspace_visible=False,
            approval_timeout=approval_timeout,
            max_denied_rounds=rounds,
            replay_of=replay_of["record"] if replay_of else "",
            repository=repository,
        )
    except errors.GatewayError as error:
        raise errors.GatewayError(error.what, where=f"{WHERE}: models", fix=error.fix) from None
