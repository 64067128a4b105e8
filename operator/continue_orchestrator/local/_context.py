"""One local run's identity and places: its uid, its state directory, who runs it.

Every step of ``orchestrator run`` (admission, set-up, the sandbox, the end) works on
the same run; this is what they share, fixed when the run starts, so none of them
computes a path or a name of its own.
"""

from __future__ import annotations

import dataclasses
import getpass
import pathlib
import uuid
from datetime import UTC, datetime

from continue_orchestrator.local import _inputs, _options


@dataclasses.dataclass(frozen=True)
class LocalRun:
    """One AgentRun run on this machine."""

    inputs: _inputs.Inputs
    options: _options.Options
    say: _options.Say
    uid: str
    state: pathlib.Path
    """The state directory (ledger, records, keys, attestations, runs)."""
    actor: str
    """Who the ledger says acted: the person running ``orchestrator run``."""
    started: datetime

    @classmethod
    def start(
        cls, inputs: _inputs.Inputs, options: _options.Options, say: _options.Say
    ) -> LocalRun:
        return cls(
            inputs=inputs,
            options=options,
            say=say,
            uid=options.uid or f"{inputs.name}-{uuid.uuid4().hex[:8]}",
            state=options.state_dir.resolve(),
            actor=f"local:{getpass.getuser()}",
            started=datetime.now(UTC),
        )

    @property
    def root(self) -> pathlib.Path:
        """This run's directory: ``runs/UID`` in the state directory."""
        return self.state / "runs" / self.uid

    @property
    def run_dir(self) -> pathlib.Path:
        """What a pod's mounted Secret holds: token, bundle, delivered secrets."""
        return self.root / "run"

    @property
    def workspace(self) -> pathlib.Path:
        return self.root / "workspace"

    @property
    def records(self) -> pathlib.Path:
        """The gateway's record store."""
        return self.state / "records"

    @property
    def ledger_url(self) -> str:
        return f"sqlite:///{self.state / 'ledger.db'}"
