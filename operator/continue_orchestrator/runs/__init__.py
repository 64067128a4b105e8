"""What any run does, wherever it runs: its plan and digests, its facts, its finish.

The operator (``controller``) and ``orchestrator run`` (``local``) drive the same run
in different surroundings: pods and Secrets in a cluster, a gVisor sandbox and files on
one machine. What a run *is* does not depend on those surroundings, so it lives here,
below both, and each of them calls it:

- the plan (``Plan``, ``Snapshot``, ``snapshot``): the policy snapshot, the inputs
  digest (``inputs_digest``, ``spec_document``), the runner's bundle (``bundle``), what
  the gateway is told (``registration``), what a read secret is for (``secret_purpose``);
- the finish (``Finish``, ``phase_of``): the runner's exit code as a phase, and the
  ``run.finished`` ledger entry;

``runs`` imports neither ``controller``, ``local``, ``gateway`` nor ``cli``.
"""

from continue_orchestrator.runs._finish import (
    RUNNER_EXIT_CODES,
    Finish,
    from_status,
    parse_time,
    phase_of,
    timestamp,
)
from continue_orchestrator.runs._plan import (
    RUN_DIR,
    RUNNER_COMMAND,
    RUNTIME_CLASS,
    WORKSPACE_DIR,
    Plan,
    Registration,
    Snapshot,
    bundle,
    inputs_digest,
    registration,
    secret_purpose,
    snapshot,
    spec_document,
)

__all__ = [
    "RUNNER_COMMAND",
    "RUNNER_EXIT_CODES",
    "RUNTIME_CLASS",
    "RUN_DIR",
    "WORKSPACE_DIR",
    "Finish",
    "Plan",
    "Registration",
    "Snapshot",
    "bundle",
    "from_status",
    "inputs_digest",
    "parse_time",
    "phase_of",
    "registration",
    "secret_purpose",
    "snapshot",
    "spec_document",
    "timestamp",
]
