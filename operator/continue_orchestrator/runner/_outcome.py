"""What the runner reports when a run ends, and the exit codes that say it in one number.

``Outcome`` is the JSON body of ``POST {gateway}/runs/{run}/outcome`` (authenticated
with the run token); the gateway imports this model to read it. Output tails and the
patch are redacted of every secret value the runner knows (the run token and granted
secrets) before they leave the sandbox.
"""

from __future__ import annotations

import enum
import json
import time
import urllib.error
import urllib.request
from collections.abc import Mapping

import pydantic
from pydantic import alias_generators

from continue_orchestrator import errors


class ExitCode(enum.IntEnum):
    """The runner's process exit codes. 1 is reserved for bugs (an uncaught exception)."""

    SUCCEEDED = 0
    AGENT_FAILED = 20
    """The Continue CLI exited non-zero."""
    VERIFY_FAILED = 21
    """The agent finished but a verify command failed or timed out."""
    POLICY_STOPPED = 22
    """Policy stopped the run (an ungranted secret; the gateway ended the run)."""
    CONFIG_ERROR = 23
    """The bundle or config.yaml is unusable; the agent did not start."""
    TIMED_OUT = 24
    """The agent ran past its timeout."""
    WORKSPACE_ERROR = 25
    """The repository could not be cloned or checked out, or the diff failed."""
    REPORT_FAILED = 26
    """The outcome could not be delivered to the gateway."""


class Status(enum.StrEnum):
    SUCCEEDED = "Succeeded"
    AGENT_FAILED = "AgentFailed"
    VERIFY_FAILED = "VerifyFailed"
    POLICY_STOPPED = "PolicyStopped"
    CONFIG_ERROR = "ConfigError"
    TIMED_OUT = "TimedOut"
    WORKSPACE_ERROR = "WorkspaceError"

    @property
    def exit_code(self) -> ExitCode:
        return ExitCode[self.name]


class _Wire(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(
        alias_generator=alias_generators.to_camel, populate_by_name=True, extra="forbid"
    )

    def wire(self) -> dict[str, object]:
        return self.model_dump(by_alias=True, mode="json")


class ProcessResult(_Wire):
    """A finished child process; ``output`` is the tail, UTF-8 with replacement."""

    exit_code: int | None
    timed_out: bool = False
    duration_seconds: float = 0.0
    output: str = ""
    output_bytes: int = 0
    truncated: bool = False


class AgentResult(_Wire):
    """The Continue CLI run."""

    argv: list[str]
    """Its command line; the prompt is the last element."""
    result: ProcessResult
    """Exit code and stdout tail (the agent's final answer)."""
    stderr: str = ""
    """Tail of its stderr."""


class VerifyResult(_Wire):
    """One verify command."""

    name: str
    command: str
    result: ProcessResult

    @property
    def passed(self) -> bool:
        return self.result.exit_code == 0 and not self.result.timed_out


class ChangedFile(_Wire):
    status: str
    """git's letter: A added, M modified, D deleted, T type changed."""
    path: str


class DiffReport(_Wire):
    """The workspace diff against the pinned commit."""

    base: str
    files: list[ChangedFile]
    digest: str
    """sha256 of the full patch as produced (before redaction or truncation)."""
    size: int
    truncated: bool
    patch_base64: str
    """``git diff --binary`` output, base64 (patches need not be UTF-8)."""


class Outcome(_Wire):
    """Everything the runner knows at the end of a run."""

    run: str
    status: Status
    exit_code: int
    message: str = ""
    base_commit: str | None = None
    models: list[str] = pydantic.Field(default_factory=list)
    """Model names routed through the gateway."""
    resolved_secrets: list[str] = pydantic.Field(default_factory=list)
    """Names (never values) of granted secrets written into the agent's config."""
    agent: AgentResult | None = None
    verify: list[VerifyResult] = pydantic.Field(default_factory=list)
    diff: DiffReport | None = None
    workspace_tree_digest: str | None = None
    """``sha256:`` digest of the workspace after the agent (``runner.tree_digest``); None
    when the agent never ran or the tree could not be read."""
    cli_version: str | None = None
    """Version of the Continue CLI that ran, from its package.json; None if unknown."""
    redacted: list[str] = pydantic.Field(default_factory=list)
    """Names of secrets whose values were found and removed from this report."""
    started_at: str
    finished_at: str


class Receipt(_Wire):
    """The gateway's answer to an outcome report."""

    model_config = pydantic.ConfigDict(extra="ignore")

    accepted: bool = True
    policy_stop: str | None = None
    """Set when the gateway stopped the run for policy; the reason."""


def redact(text: str, secrets: Mapping[str, str]) -> tuple[str, set[str]]:
    """``text`` with every secret value replaced by ``[REDACTED:NAME]``; names found."""
    found: set[str] = set()
    for name, value in sorted(secrets.items(), key=lambda item: -len(item[1])):
        if len(value) >= 4 and value in text:
            text = text.replace(value, f"[REDACTED:{name}]")
            found.add(name)
    return text, found


def report(url: str, token: str, outcome: Outcome, *, attempts: int = 5) -> Receipt:
    """POST the outcome to the gateway, retrying transient failures."""
    body = json.dumps(outcome.wire(), separators=(",", ":")).encode()
    request = urllib.request.Request(
        url,
        data=body,
        method="POST",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    last = ""
    for attempt in range(attempts):
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                payload = response.read()
            return Receipt.model_validate(json.loads(payload or b"{}"))
        except urllib.error.HTTPError as error:
            last = f"HTTP {error.code}"
            if error.code < 500:
                break
        except (urllib.error.URLError, OSError, ValueError) as error:
            last = str(getattr(error, "reason", error))
        time.sleep(min(0.2 * 2**attempt, 2.0))
    raise errors.RunnerError(
        f"the gateway did not accept the outcome ({last})",
        where=url,
        fix="check that the gateway is running and the run is registered",
    )
