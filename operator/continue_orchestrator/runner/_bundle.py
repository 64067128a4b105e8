"""The run bundle: everything the runner needs, written by the operator or local mode.

The bundle is plain JSON and holds no secret value, so it can live in a ConfigMap or on
disk and be recorded. Values arrive separately: the run token and granted secrets from
environment variables or a mounted Secret directory. No forge credential arrives at
all: the runner clones through the gateway's git endpoint (``gitUrl``) with the run
token, and the gateway fetches from the forge with the credential it holds.
"""

from __future__ import annotations

import json
import os
import pathlib
from collections.abc import Mapping

import pydantic
from pydantic import alias_generators

from continue_orchestrator import api, errors

BUNDLE_ENV = "ORCHESTRATOR_RUN_BUNDLE"
"""Environment variable holding the bundle JSON itself."""
BUNDLE_FILE_ENV = "ORCHESTRATOR_RUN_BUNDLE_FILE"
"""Environment variable naming a file that holds the bundle JSON."""
TOKEN_ENV = "ORCHESTRATOR_RUN_TOKEN"
SECRET_ENV_PREFIX = "ORCHESTRATOR_SECRET_"

CREDENTIAL_ENV = (TOKEN_ENV,)
"""Variables the runner removes from its own environment once read."""


class _Wire(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(
        alias_generator=alias_generators.to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
    )


class RepositoryPin(_Wire):
    """The repository at the commit the run is pinned to."""

    url: str = pydantic.Field(min_length=1)
    ref: str = "HEAD"
    commit: str | None = pydantic.Field(default=None, pattern=r"^[0-9a-f]{40}([0-9a-f]{24})?$")


class Paths(_Wire):
    """Where things live in the sandbox; fixed so the agent's system prompt is stable."""

    workspace: str = "/workspace"
    home: str = "/tmp/home"
    cn: str = "/opt/continue/node_modules/.bin/cn"
    """The pinned Continue CLI."""
    path: str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    """PATH of the agent and verify commands (node's directory is added)."""


class RunBundle(_Wire):
    """One run, as the runner receives it."""

    run: str = pydantic.Field(min_length=1, max_length=253)
    """The run id the gateway registered it under (the AgentRun uid; local mode its own)."""
    namespace: str = "default"
    repository: RepositoryPin
    """The run's repository as the AgentRun names it (no credential in the URL); the
    clone's ``origin`` is set to it."""
    git_url: str | None = pydantic.Field(default=None, pattern=r"^https?://")
    """Where the clone fetches from: the gateway's git endpoint for this run, with the run
    token (``runs.git_url``). Unset (a bundle made by hand): ``repository.url`` itself,
    with only the credentials its URL carries."""
    config: str = pydantic.Field(min_length=1)
    """The config.yaml text as the user wrote it; the runner rewrites it."""
    prompt: str = pydantic.Field(min_length=1)
    verify: tuple[api.VerifyCommand, ...] = ()
    gateway_url: str = pydantic.Field(pattern=r"^https?://")
    """Base URL of the gateway; models get ``{gatewayUrl}/runs/{run}/v1``."""
    allowed_secrets: tuple[str, ...] = ()
    """Secret names the policy grants. Values come from the environment or secretsDir,
    except for brokered model credentials, whose values never reach the sandbox."""
    secrets_dir: str | None = None
    """A directory with one file per granted secret (a mounted Kubernetes Secret)."""
    token_file: str | None = None
    """A file holding the run token, instead of ORCHESTRATOR_RUN_TOKEN."""
    permissions_yaml: str = ""
    """The Continue permissions.yaml rendered from the policy."""
    agent_timeout_seconds: int = pydantic.Field(default=1800, ge=1)
    output_limit_bytes: int = pydantic.Field(default=65536, ge=1024)
    """Kept tail of each process's output."""
    diff_limit_bytes: int = pydantic.Field(default=16 * 1024 * 1024, ge=1024)
    paths: Paths = Paths()

    @property
    def api_base(self) -> str:
        return f"{self.gateway_url.rstrip('/')}/runs/{self.run}/v1"

    @property
    def outcome_url(self) -> str:
        return f"{self.gateway_url.rstrip('/')}/runs/{self.run}/outcome"


class Credentials(_Wire):
    """Who a clone authenticates as (HTTP Basic): the run token for the gateway's git
    endpoint, or what a hand-made bundle's URL carries; used by the clone step alone."""

    username: str = "x-access-token"
    token: str


def load_bundle(
    path: pathlib.Path | None = None, environ: Mapping[str, str] = os.environ
) -> RunBundle:
    """The bundle from ``path``, or the file or JSON named by the environment."""
    if path is None and environ.get(BUNDLE_FILE_ENV):
        path = pathlib.Path(environ[BUNDLE_FILE_ENV])
    if path is not None:
        where = str(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as error:
            raise errors.ManifestError(
                f"cannot read the run bundle: {error.strerror}", where=where
            ) from None
    elif environ.get(BUNDLE_ENV):
        where, text = f"${BUNDLE_ENV}", environ[BUNDLE_ENV]
    else:
        raise errors.ManifestError(
            "no run bundle given",
            where="runner",
            fix=f"pass --bundle FILE or set {BUNDLE_FILE_ENV} or {BUNDLE_ENV}",
        )
    try:
        return RunBundle.model_validate(json.loads(text))
    except json.JSONDecodeError as error:
        raise errors.ManifestError(f"run bundle is not JSON: {error}", where=where) from None
    except pydantic.ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in error.errors()
        )
        raise errors.ManifestError(f"run bundle is invalid: {problems}", where=where) from None


def run_token(bundle: RunBundle, environ: Mapping[str, str] = os.environ) -> str:
    """The run token from the token file or ``$ORCHESTRATOR_RUN_TOKEN``."""
    if bundle.token_file:
        token = _read_secret_file(pathlib.Path(bundle.token_file), "run token")
    else:
        token = environ.get(TOKEN_ENV, "")
    if not token.strip():
        raise errors.ManifestError(
            "no run token",
            where="runner",
            fix=f"set {TOKEN_ENV} or the bundle's tokenFile",
        )
    return token.strip()


def secret_values(bundle: RunBundle, environ: Mapping[str, str] = os.environ) -> dict[str, str]:
    """Values of the granted secrets that were provided; ungranted ones are never read."""
    values: dict[str, str] = {}
    for name in bundle.allowed_secrets:
        if bundle.secrets_dir:
            path = pathlib.Path(bundle.secrets_dir) / name
            if path.is_file():
                values[name] = _read_secret_file(path, f"secret {name}")
                continue
        env_name = SECRET_ENV_PREFIX + name
        if env_name in environ:
            values[name] = environ[env_name]
    return values


def _read_secret_file(path: pathlib.Path, what: str) -> str:
    try:
        return path.read_text(encoding="utf-8").rstrip("\n")
    except OSError as error:
        raise errors.ManifestError(
            f"cannot read the {what}: {error.strerror}", where=str(path)
        ) from None
