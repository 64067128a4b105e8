"""What the gateway is told of a run, and the token that proves a request belongs to it.

The operator registers each run with its own random token and an expiry; the runner puts
that token where the agent's config.yaml had the provider key, and clones the run's
repository (``GitOrigin``) through the gateway with it. The real provider keys and the
forge credential live only here (from the run's Secrets, outside the sandbox). Only the
token's SHA-256 is compared (see ``_runs.Runs.authenticate``).
"""

from __future__ import annotations

import hashlib
import secrets
import urllib.parse
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field

from continue_orchestrator import errors, policy


def new_token() -> str:
    """A fresh run token (256 bits, URL-safe)."""
    return secrets.token_urlsafe(32)


def token_digest(token: str) -> str:
    """Hex SHA-256 of a token: what registrations may carry and what is compared."""
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class Upstream:
    """Where one model of the run's config really lives, and the key to call it."""

    api_base: str
    api_key: str
    provider: str = "openai"

    @property
    def host(self) -> str:
        return urllib.parse.urlsplit(self.api_base).hostname or ""

    @property
    def port(self) -> int:
        parts = urllib.parse.urlsplit(self.api_base)
        return parts.port or (443 if parts.scheme == "https" else 80)


@dataclass(frozen=True)
class GitOrigin:
    """The run's repository as the gateway's git endpoint (``_git``) serves it.

    ``url`` is where fetches go: a forge's smart-HTTP clone URL (http or https), or, on a
    gateway that serves local repositories (local mode), a ``file://`` URL or absolute
    path; any other URL (ssh) is taken, and each fetch of it refused saying why.
    ``path`` names the repository under ``/runs/RUN/git/`` (``owner/name.git``): a
    request naming another path asks for another repository and is refused.
    ``username`` and ``token`` are the forge credential the gateway fetches with (HTTP
    Basic); no endpoint returns them, and they never reach the sandbox.
    """

    url: str
    path: str
    username: str = "x-access-token"
    token: str = field(default="", repr=False)

    def __post_init__(self) -> None:
        parts = urllib.parse.urlsplit(self.url)
        if parts.scheme in ("http", "https") and ("@" in parts.netloc or not parts.hostname):
            raise errors.GatewayError(
                f"the http(s) URL for host {parts.hostname or '(none)'} carries a user name "
                "or password, or names no host (the URL is not repeated here)",
                where="repository.url",
                fix="give the clone URL without credentials, and the credential as "
                "repository.username and repository.token",
            )
        segments = self.path.strip("/").split("/")
        if not self.key or any(s in ("", ".", "..") for s in segments):
            raise errors.GatewayError(
                f"{self.path!r} is not a repository path (owner/name.git)", where="repository.path"
            )

    @property
    def key(self) -> str:
        """``path`` without its slashes at either end and its ``.git``: what requests match."""
        return repository_key(self.path)

    @property
    def remote(self) -> bool:
        """Whether ``url`` is a forge's smart-HTTP URL (http or https)."""
        return urllib.parse.urlsplit(self.url).scheme in ("http", "https")

    @property
    def local_path(self) -> str | None:
        """The directory of a local repository (``file://`` or a path), else None."""
        if self.url.startswith("file://"):
            return urllib.parse.unquote(urllib.parse.urlsplit(self.url).path) or None
        return self.url if self.url.startswith("/") else None


def repository_key(path: str) -> str:
    """A repository path as requests are matched: no slash at either end, no ``.git``."""
    return path.strip("/").removesuffix(".git").rstrip("/")


@dataclass
class RunRegistration:
    """Everything the gateway needs to serve one run.

    ``models`` maps the model name the agent sends (the ``model`` of its config.yaml
    entry) to the real upstream. ``allowed_egress`` lists the hosts (``host`` or
    ``host:port``) the run's policy lets the gateway call on its behalf; an upstream not
    in it is refused. ``secrets`` are values to redact from every record (the run's
    granted secrets; upstream keys and the token are redacted anyway). A registration
    may carry only ``token_sha256`` (hex) instead of ``token``: the gateway then never
    holds the token itself, but cannot redact it either.
    """

    uid: str
    token: str
    expires_at: float
    policy_set: policy.PolicySet
    models: Mapping[str, Upstream]
    allowed_egress: Collection[str]
    name: str = ""
    namespace: str = ""
    secrets: Mapping[str, str] = field(default_factory=dict)
    workspace: str | None = None
    approval_timeout: float = 900.0
    max_denied_rounds: int = 8
    token_sha256: str = ""
    policy_digest: str = ""
    replay_of: str = ""
    """A record digest: serve that recorded run's answers instead of ``models``."""
    workspace_visible: bool = True
    """Whether ``workspace`` is also a directory here, holding the agent's tree (local
    mode), so paths can be checked through its symlinks; a cluster gateway cannot see
    the sandbox's tree."""
    repository: GitOrigin | None = None
    """The one repository the run may fetch through the gateway's git endpoint."""

    def __post_init__(self) -> None:
        if self.token and len(self.token) < 16:
            raise errors.GatewayError(
                "the run token is shorter than 16 characters",
                where=f"run {self.uid}",
                fix="use gateway.new_token()",
            )
        digest = token_digest(self.token) if self.token else self.token_sha256.lower()
        if self.token_sha256 and digest != self.token_sha256.lower():
            raise errors.GatewayError(
                "token and token_sha256 disagree",
                where=f"run {self.uid}",
                fix="give one of them",
            )
        if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            raise errors.GatewayError(
                "the run has neither a token nor a SHA-256 (64 hex digits) of one",
                where=f"run {self.uid}",
                fix="use gateway.new_token()",
            )
        self.token_sha256 = digest
        for model, upstream in self.models.items():
            if urllib.parse.urlsplit(upstream.api_base).scheme not in ("http", "https"):
                raise errors.GatewayError(
                    f"model {model!r} has apiBase {upstream.api_base!r}, not an http(s) URL",
                    where=f"run {self.uid}",
                    fix="give the provider's base URL, e.g. https://api.openai.com/v1",
                )

    def egress_allowed(self, upstream: Upstream) -> bool:
        return upstream.host in self.allowed_egress or (
            f"{upstream.host}:{upstream.port}" in self.allowed_egress
        )

    def redactions(self) -> dict[str, str]:
        """Value -> placeholder name, for everything that must never reach a record."""
        values = {value: name for name, value in self.secrets.items() if value}
        for model, upstream in self.models.items():
            if upstream.api_key:
                values[upstream.api_key] = f"upstream-key:{model}"
        if self.token:
            values[self.token] = "run-token"
        if self.repository is not None and self.repository.token:
            values[self.repository.token] = "forge-credential"
        return values
