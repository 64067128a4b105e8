"""The one place for the project's errors.

Every message says what failed, where, and what to do about it, so a person reading
a CLI error, an AgentRun condition or an operator log line can act on it without the
source at hand. Subpackages raise these (or subclasses defined here), never bare
``ValueError``s, at their public surface.
"""

from __future__ import annotations


class OrchestratorError(Exception):
    """Base of every error this project raises on purpose."""

    def __init__(self, what: str, *, where: str = "", fix: str = "") -> None:
        self.what = what
        self.where = where
        self.fix = fix
        super().__init__(self.message)

    @property
    def message(self) -> str:
        text = f"{self.where}: {self.what}" if self.where else self.what
        if self.fix:
            text += f" ({self.fix})"
        return text


class ManifestError(OrchestratorError):
    """A manifest (AgentRun, RunPolicy, ClusterRunPolicy, config.yaml) is invalid."""


class PolicyError(OrchestratorError):
    """A policy cannot be loaded or compiled."""


class LedgerError(OrchestratorError):
    """The ledger cannot be opened, appended to, or read."""


class LedgerIntegrityError(LedgerError):
    """Verification found the ledger altered; ``sequence`` is the first bad entry."""

    def __init__(self, what: str, *, sequence: int, where: str = "", fix: str = "") -> None:
        self.sequence = sequence
        super().__init__(what, where=where, fix=fix)


class AttestationError(OrchestratorError):
    """Signing, storing or verifying an attestation failed."""


class RecordError(OrchestratorError):
    """A run record cannot be written, read or replayed."""


class GatewayError(OrchestratorError):
    """The gateway refused or failed a request."""


class SandboxError(OrchestratorError):
    """The sandbox (gVisor, network namespace) cannot be set up."""


class PolicyStopError(OrchestratorError):
    """Policy stopped a run, e.g. its config references a secret the policy does not grant."""


class RunnerError(OrchestratorError):
    """The runner cannot prepare the workspace, start the agent, or report the outcome."""


class PublicationError(OrchestratorError):
    """Publishing a run's work (diff check, fresh verify, commit, push, pull request) failed.

    ``step`` names the step that failed (``diff``, ``verify``, ``commit``, ``push``,
    ``pullRequest``, ``summary``); ``rule`` the policy rule that refused, when one did.
    """

    def __init__(
        self, what: str, *, step: str, where: str = "", fix: str = "", rule: str | None = None
    ) -> None:
        self.step = step
        self.rule = rule
        super().__init__(what, where=where, fix=fix)


class ForgeError(OrchestratorError):
    """A forge (GitHub, Gitea) refused or failed a request, or is configured wrongly.

    ``transient`` says a later retry may succeed (rate limit, 5xx, timeouts, no
    connection); auth failures, 404, validation and branch protection are not. ``status``
    is the HTTP status (None when no answer came), ``forge_message`` the forge's own words,
    and ``retry_after`` the seconds the forge asked to wait, when it said.
    """

    def __init__(
        self,
        what: str,
        *,
        where: str = "",
        fix: str = "",
        transient: bool = False,
        status: int | None = None,
        forge_message: str = "",
        retry_after: float | None = None,
    ) -> None:
        self.transient = transient
        self.status = status
        self.forge_message = forge_message
        self.retry_after = retry_after
        super().__init__(what, where=where, fix=fix)
