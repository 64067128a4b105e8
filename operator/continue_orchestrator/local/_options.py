"""How ``orchestrator run`` is told to run, and what it runs with by default.

``Options`` is everything a person (or a test) chooses: where state lives, which
sandbox, which model, who decides approvals. The defaults name what this machine
provides: the pinned Continue CLI that ``hack/install-cn.sh`` installs, and this
package's own source playing the runner image, pinned by its digest.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import pathlib
from collections.abc import Callable
from typing import Literal, Protocol

from continue_orchestrator import digest
from continue_orchestrator.local import _sandbox

Approvals = Literal["ask", "approve", "deny"]
Say = Callable[[str], None]

CN_VERSION = "1.5.47"
RUNNER_IMAGE_NAME = "local/continue-orchestrator-runner"


class ModelServer(Protocol):
    """An OpenAI-compatible upstream the pipeline starts and stops (``ScriptedModel``)."""

    port: int

    async def start(self, host: str = ..., port: int = ...) -> str: ...

    async def stop(self) -> None: ...


@dataclasses.dataclass(frozen=True)
class Options:
    """How to run: where state lives, which sandbox, which model, who decides approvals."""

    state_dir: pathlib.Path
    sandbox: _sandbox.Mode = "gvisor"
    model_script: pathlib.Path | None = None
    """Play this scripted model instead of calling the config's real providers."""
    approvals: Approvals = "ask"
    """ask: wait for ``orchestrator approve|deny``; approve / deny: decide every one."""
    cn: str | None = None
    """The Continue CLI; default: the pinned one hack/install-cn.sh installs."""
    decided_by: str = ""
    """Name recorded for --approve-all / --deny-all decisions (default: login name)."""
    uid: str | None = None
    """The run's uid; default: its name and a random suffix."""
    model: ModelServer | None = None
    """Play this upstream (``records.ReplayModel``) instead of the config's providers."""


def default_state_dir() -> pathlib.Path:
    """``.orchestrator/`` in the working directory."""
    return pathlib.Path.cwd() / ".orchestrator"


def default_cn() -> str:
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(
        cache, "continue-orchestrator", "npm", f"continuedev-cli-{CN_VERSION}",
        "node_modules", ".bin", "cn",
    )  # fmt: skip


def runner_image() -> str:
    """What plays the runner image here: the package source, pinned by its digest."""
    package = pathlib.Path(__file__).resolve().parents[1]
    hashed = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        hashed.update(str(path.relative_to(package)).encode() + b"\0")
        hashed.update(path.read_bytes() + b"\0")
    return f"{RUNNER_IMAGE_NAME}@{digest.Digest.from_hash(hashed)}"
