"""What the operator is told at start: runner image, gateway, ledger, limits.

One frozen value built by ``orchestrator operator`` from flags and environment, so every
handler sees the same configuration and tests can construct it directly.
"""

from __future__ import annotations

import dataclasses
import re

from continue_orchestrator import errors, runs

_PINNED = re.compile(r"^[^@\s]+@sha256:[0-9a-f]{64}$")


# The chart passes the real ServiceAccount as --actor; this matches its default install.
DEFAULT_ACTOR = "system:serviceaccount:continue-orchestrator:continue-orchestrator-operator"


@dataclasses.dataclass(frozen=True, slots=True)
class Settings:
    """Operator configuration. ``validate()`` before use."""

    runner_image: str
    """Runner image; must be pinned by digest (name@sha256:...) unless allowed otherwise."""
    ledger_url: str
    """Where the ledger lives (sqlite:///path or postgresql://...)."""
    runner_command: tuple[str, ...] = runs.RUNNER_COMMAND
    """Command of the runner container."""
    operator_namespace: str = "continue-orchestrator"
    """Namespace of the operator and the gateway pods."""
    gateway_port: int = 8080
    """Port of the gateway pods; the only egress a sandbox gets."""
    gateway_url: str = ""
    """URL the runner reaches the gateway at; derived from the namespace when empty."""
    namespaces: tuple[str, ...] = ()
    """Namespaces to watch; empty means all (cluster-wide)."""
    runtime_class: str = runs.RUNTIME_CLASS
    """RuntimeClass used when a policy does not name one."""
    allow_unpinned_runner_image: bool = False
    """Accept a runner image without a digest (development only: the inputs digest then
    cannot pin what ran)."""
    resync_seconds: float = 30.0
    """How often a live run's pod is re-read in case a watch event was missed."""
    timeout_grace_seconds: float = 30.0
    """How long past the deadline the backstop timer waits for the kubelet to act."""
    workers: int = 16
    """Threads for handlers (each does blocking API and ledger calls)."""
    actor: str = DEFAULT_ACTOR
    """Actor written into the ledger entries the operator appends."""
    publication_approval_seconds: float = 900.0
    """How long a publication step held for approval waits before it counts as denied."""
    pull_request_poll_seconds: float = 30.0
    """The first wait before a run's open pull request is read from its forge."""
    pull_request_poll_max_seconds: float = 1800.0
    """The longest wait between two reads of one open pull request (the backoff's cap)."""
    default_cpu: str = "1"
    default_memory: str = "2Gi"
    workspace_size: str = "2Gi"

    @property
    def effective_gateway_url(self) -> str:
        return self.gateway_url or (
            f"http://continue-orchestrator-gateway.{self.operator_namespace}.svc:{self.gateway_port}"
        )

    def validate(self) -> Settings:
        where = "operator settings"
        if not self.runner_image:
            raise errors.OrchestratorError(
                "no runner image", where=where, fix="pass --runner-image IMAGE@sha256:DIGEST"
            )
        if not self.allow_unpinned_runner_image and not _PINNED.match(self.runner_image):
            raise errors.OrchestratorError(
                f"runner image {self.runner_image!r} is not pinned by digest",
                where=f"{where}: --runner-image",
                fix="use NAME@sha256:<64 hex digits> so the inputs digest names what ran, or "
                "pass --allow-unpinned-runner-image for development",
            )
        if not self.ledger_url:
            raise errors.OrchestratorError(
                "no ledger URL",
                where=f"{where}: --ledger",
                fix="pass --ledger sqlite:///path.db or postgresql://user@host/db",
            )
        if not self.runner_command:
            raise errors.OrchestratorError(
                "empty runner command", where=f"{where}: --runner-command", fix="name a command"
            )
        if not 0 < self.gateway_port < 65536:
            raise errors.OrchestratorError(
                f"gateway port {self.gateway_port} is out of range",
                where=f"{where}: --gateway-port",
                fix="use 1-65535",
            )
        if self.workers < 1 or self.resync_seconds <= 0:
            raise errors.OrchestratorError(
                "workers and resync seconds must be positive",
                where=where,
                fix="pass --workers >= 1 and --resync-seconds > 0",
            )
        return self
