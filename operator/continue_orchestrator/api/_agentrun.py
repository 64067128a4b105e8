"""AgentRun: one run of a Continue agent against a repository, and what became of it.

The spec is what a user asks for and is immutable once created (only ``cancel`` may
change): a run's inputs are digested and attested, so editing them afterwards would
make the record lie. The status is written by the operator alone.
"""

from __future__ import annotations

import enum
from typing import Literal

import pydantic

from continue_orchestrator.api import _base

SHA256_DIGEST = r"^sha256:[0-9a-f]{64}$"
GIT_COMMIT = r"^[0-9a-f]{40}([0-9a-f]{24})?$"
CONTINUE_SECRET_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"


class KeyRef(_base.Model):
    """A key of a ConfigMap or Secret in the run's namespace."""

    name: str = pydantic.Field(min_length=1, max_length=253, pattern=_base.DNS_SUBDOMAIN)
    """Name of the object."""
    key: str = pydantic.Field(min_length=1, max_length=253, pattern=r"^[-._a-zA-Z0-9]+$")
    """Key within the object."""


class Agent(_base.Model):
    """The agent: a Continue config.yaml, exactly as Continue accepts it."""

    cross_field_rules = (_base.exactly_one_of("config", "config_map_key_ref", prefix="agent."),)

    config: str | None = pydantic.Field(default=None, min_length=1, max_length=262144)
    """The config.yaml text, inline. Secrets stay as ${{ secrets.NAME }} references."""
    config_map_key_ref: KeyRef | None = None
    """A ConfigMap key holding the config.yaml text, instead of inline."""


class Repository(_base.Model):
    """The git repository the agent works on."""

    url: str = pydantic.Field(min_length=1, max_length=2048)
    """Clone URL: https://, or file:// for local runs (the gateway fetches it over smart
    HTTP; an ssh:// or git@host:path URL is accepted but cannot be fetched)."""
    ref: str = pydantic.Field(default="HEAD", min_length=1, max_length=255)
    """Branch or tag to check out."""
    commit: str | None = pydantic.Field(default=None, pattern=GIT_COMMIT)
    """Commit to pin; the run fails if ref does not contain it. Recommended for replay."""
    credentials_secret_ref: KeyRef | None = None
    """Secret key with the forge token; the gateway fetches the repository with it, and it
    never enters the sandbox."""


class PolicyRef(_base.Model):
    """The RunPolicy in the run's namespace that gates it (with the cluster baseline)."""

    name: str = pydantic.Field(min_length=1, max_length=253, pattern=_base.DNS_SUBDOMAIN)
    """Name of the RunPolicy."""


class SecretMapping(_base.Model):
    """Gives a Continue secret (${{ secrets.NAME }}) its value from a Kubernetes Secret."""

    name: str = pydantic.Field(min_length=1, max_length=253, pattern=CONTINUE_SECRET_NAME)
    """The Continue secret name, as in ${{ secrets.NAME }}."""
    secret_key_ref: KeyRef
    """The Secret key holding the value. The policy must allow the name."""


class VerifyCommand(_base.Model):
    """A command run in the workspace after the agent, whose result is evidence."""

    name: str = pydantic.Field(min_length=1, max_length=63, pattern=_base.DNS_LABEL)
    """Name of the check, for reports."""
    command: str = pydantic.Field(min_length=1, max_length=4096)
    """Shell command line, run with /bin/sh -c in the workspace."""
    timeout_seconds: int = pydantic.Field(default=600, ge=1, le=7200)
    """How long the command may run."""


class PullRequestOutput(_base.Model):
    """Open a pull request with the run's diff and its evidence."""

    enabled: bool = False
    """Whether to open a pull request when the run succeeds."""
    base: str | None = pydantic.Field(default=None, max_length=255)
    """Base branch; the repository's ref when unset."""
    branch: str | None = pydantic.Field(default=None, max_length=255)
    """Head branch to push; agent/RUN-NAME when unset."""
    title: str | None = pydantic.Field(default=None, max_length=256)
    """Pull request title; derived from the prompt when unset."""
    draft: bool = True
    """Open as a draft."""


class Output(_base.Model):
    """What the run produces beyond its record."""

    pull_request: PullRequestOutput | None = None
    """Pull request options."""


class ReplayOf(_base.Model):
    """The recorded run this run replays."""

    cross_field_rules = (_base.exactly_one_of("run", "record", prefix="replayOf."),)

    run: str | None = pydantic.Field(default=None, max_length=253, pattern=_base.DNS_SUBDOMAIN)
    """Name of an AgentRun in this namespace."""
    record: str | None = pydantic.Field(default=None, pattern=SHA256_DIGEST)
    """Digest of a run record (sha256:...)."""


class Trigger(_base.Model):
    """Where the run came from, for the record."""

    source: Literal["manual", "webhook", "schedule", "api", "replay"] = "manual"
    """What started the run."""
    id: str | None = pydantic.Field(default=None, max_length=256)
    """Identifier at the source (an issue number, a delivery id)."""
    url: str | None = pydantic.Field(default=None, max_length=2048)
    """Link to the source."""
    actor: str | None = pydantic.Field(default=None, max_length=256)
    """Who triggered it at the source."""


def _immutable_field(field: str, required: bool) -> str:
    if required:
        return f"self.{field} == oldSelf.{field}"
    return (
        f"has(self.{field}) == has(oldSelf.{field}) && "
        f"(!has(self.{field}) || self.{field} == oldSelf.{field})"
    )


class AgentRunSpec(_base.Model):
    """What to run: the agent, the prompt, the repository, and the policy that gates it."""

    agent: Agent
    """The Continue agent configuration."""
    prompt: str = pydantic.Field(min_length=1, max_length=65536)
    """The task for the agent, passed to cn -p."""
    repository: Repository
    """The repository to work on."""
    policy_ref: PolicyRef
    """The RunPolicy that gates the run."""
    secrets: list[SecretMapping] = pydantic.Field(
        default_factory=list,
        max_length=64,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )
    """Values for the config's ${{ secrets.NAME }} references."""
    verify: list[VerifyCommand] = pydantic.Field(
        default_factory=list,
        max_length=32,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )
    """Commands run after the agent; their results go into the record and attestation."""
    output: Output | None = None
    """Pull request options."""
    timeout_seconds: int = pydantic.Field(default=1800, ge=60, le=86400)
    """Wall-clock limit of the whole run; bounded again by the policy's maxTimeoutSeconds."""
    replay_of: ReplayOf | None = None
    """Replay a recorded run instead of calling the live model."""
    trigger: Trigger | None = None
    """Where the run came from."""
    cancel: bool = False
    """Set to true to stop the run (counted as a manual intervention)."""


AgentRunSpec.cross_field_rules = (
    _base.CrossFieldRule(
        cel=" && ".join(
            _immutable_field(info.alias or name, info.is_required())
            for name, info in AgentRunSpec.model_fields.items()
            if name != "cancel"
        ),
        message="spec is immutable except spec.cancel; create a new AgentRun instead",
        holds=None,
    ),
    _base.CrossFieldRule(
        cel="!has(oldSelf.cancel) || !oldSelf.cancel || (has(self.cancel) && self.cancel)",
        message="spec.cancel cannot be unset once true",
        holds=None,
    ),
)


class Phase(enum.StrEnum):
    """Where a run is in its life. The last five are terminal."""

    PENDING = "Pending"
    RUNNING = "Running"
    AWAITING_APPROVAL = "AwaitingApproval"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    DENIED = "Denied"
    TIMED_OUT = "TimedOut"
    CANCELLED = "Cancelled"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_PHASES


TERMINAL_PHASES = frozenset(
    {Phase.SUCCEEDED, Phase.FAILED, Phase.DENIED, Phase.TIMED_OUT, Phase.CANCELLED}
)


class RecordRef(_base.Model):
    """Where the run's record (inputs, model and tool I/O) is stored."""

    digest: str = pydantic.Field(pattern=SHA256_DIGEST)
    """Digest of the run record's manifest."""
    location: str = pydantic.Field(max_length=2048)
    """Where the record store keeps it."""


class LedgerRef(_base.Model):
    """The run's entries in the ledger."""

    first_sequence: int | None = pydantic.Field(default=None, ge=0)
    """Sequence number of the run's first entry."""
    last_sequence: int | None = pydantic.Field(default=None, ge=0)
    """Sequence number of the run's latest entry."""
    head: str | None = pydantic.Field(default=None, max_length=128)
    """Entry hash of the run's latest entry."""


class Attestation(_base.Model):
    """The run's signed attestation. signed is true only once stored and re-verified."""

    signed: Literal["true", "false", "failed"] = "false"
    """true: stored and verified; false: not yet; failed: see reason."""
    digest: str | None = pydantic.Field(default=None, pattern=SHA256_DIGEST)
    """Digest of the Sigstore bundle."""
    signer: str | None = pydantic.Field(default=None, max_length=1024)
    """Key hint (key mode) or certificate identity (keyless)."""
    location: str | None = pydantic.Field(default=None, max_length=2048)
    """Where the bundle is stored."""
    reason: str | None = pydantic.Field(default=None, max_length=4096)
    """Why signing failed, when it did."""


class PendingApproval(_base.Model):
    """An action held until an approver decides."""

    id: str = pydantic.Field(max_length=128)
    """Identifier to pass to orchestrator approve/deny."""
    action: str = pydantic.Field(max_length=64)
    """The action, for example tool.call."""
    tool: str | None = pydantic.Field(default=None, max_length=256)
    """Tool name, for tool calls."""
    summary: str = pydantic.Field(default="", max_length=4096)
    """What the agent wants to do, in brief."""
    rule: str | None = pydantic.Field(default=None, max_length=128)
    """The rule that asked for approval."""
    requested_at: str
    """When it was held (RFC 3339)."""
    expires_at: str
    """When it is denied if nobody decides (RFC 3339)."""


class Interventions(_base.Model):
    """Human and policy interventions in the run."""

    approvals: int = pydantic.Field(default=0, ge=0)
    """Held actions a person approved."""
    rejections: int = pydantic.Field(default=0, ge=0)
    """Held actions a person denied or let expire."""
    denials: int = pydantic.Field(default=0, ge=0)
    """Actions policy denied outright."""
    manual_stops: int = pydantic.Field(default=0, ge=0)
    """Cancellations by a person."""
    total: int = pydantic.Field(default=0, ge=0)
    """Sum of the above."""


class PullRequest(_base.Model):
    """The pull request the run opened, and what became of it."""

    url: str = pydantic.Field(max_length=2048)
    """Link to it."""
    number: int | None = pydantic.Field(default=None, ge=1)
    """Its number."""
    branch: str | None = pydantic.Field(default=None, max_length=255)
    """The head branch the run's commit was pushed to."""
    head_sha: str | None = pydantic.Field(default=None, pattern=GIT_COMMIT)
    """The commit published (the run's diff with its trailers)."""
    state: Literal["open", "merged", "closed"] | None = None
    """open, merged, or closed (closed without merging), as last seen on the forge."""
    checked_at: str | None = None
    """When the state was last read from the forge (RFC 3339)."""


class AgentRunStatus(_base.Model):
    """What became of the run. Written by the operator only."""

    phase: Phase = Phase.PENDING
    """Pending, Running, AwaitingApproval, Succeeded, Failed, Denied, TimedOut or Cancelled."""
    message: str | None = pydantic.Field(default=None, max_length=32768)
    """Human-readable summary of the current phase."""
    conditions: list[_base.Condition] = pydantic.Field(
        default_factory=list,
        max_length=32,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )
    """Standard conditions: PolicyValid, SandboxReady, Completed, Attested, Published."""
    observed_generation: int | None = pydantic.Field(default=None, ge=0)
    """The metadata.generation the status reflects."""
    inputs_digest: str | None = pydantic.Field(default=None, pattern=SHA256_DIGEST)
    """Digest of all inputs: canonical spec, config content, policy digests, runner image."""
    policy_digest: str | None = pydantic.Field(default=None, pattern=SHA256_DIGEST)
    """Digest of the policy set in force, snapshotted when the run started."""
    runner_image: str | None = pydantic.Field(default=None, max_length=1024)
    """Runner image reference with digest."""
    record: RecordRef | None = None
    """The run's record."""
    ledger: LedgerRef | None = None
    """The run's ledger entries."""
    attestation: Attestation | None = None
    """The run's attestation."""
    pending_approvals: list[PendingApproval] = pydantic.Field(default_factory=list, max_length=64)
    """Actions waiting for a person."""
    interventions: Interventions | None = None
    """Counts of interventions."""
    pull_request: PullRequest | None = None
    """The pull request the run opened (spec.output.pullRequest), and its state."""
    start_time: str | None = None
    """When the sandbox started (RFC 3339)."""
    completion_time: str | None = None
    """When the run reached a terminal phase (RFC 3339)."""


class AgentRun(_base.Model):
    """A run of a Continue agent under policy."""

    api_version: Literal["orchestrator.continue.dev/v1alpha1"]
    kind: Literal["AgentRun"]
    metadata: _base.ObjectMeta
    spec: AgentRunSpec
    status: AgentRunStatus | None = None
