"""What any run does, wherever it runs: its plan and digests, its facts, its finish.

The operator (``controller``) and ``orchestrator run`` (``local``) drive the same run
in different surroundings: pods and Secrets in a cluster, a gVisor sandbox and files on
one machine. What a run *is* does not depend on those surroundings, so it lives here,
below both, and each of them calls it:

- the plan (``Plan``, ``Snapshot``, ``snapshot``): the policy snapshot, the inputs
  digest (``inputs_digest``, ``spec_document``), the runner's bundle (``bundle``), what
  the gateway is told (``registration``), the repository its git endpoint serves and the
  runner clones from (``git_origin``, ``git_url``), what a read secret is for
  (``secret_purpose``), and the plan of the fresh sandbox that verifies a publication
  (``verify_plan``);
- the ledger's first entries (``start_entries``: ``run.created``, ``secret.read``);
- the finish (``Finish``, ``phase_of``): the runner's exit code as a phase, and the
  ``run.finished`` ledger entry;
- the facts (``facts``): what the attestation and the run report say, from the ledger
  entries, the sealed record and the runner's report (``Evidence``);
- the evidence a pull request carries (``evidence_body``, ``EvidenceInputs``): its body,
  rendered from the facts, the sealed record and the ledger entries;
- publication (``publish``, ``publication_target``, ``Publication``): the run's diff
  checked against the policy again, verified again in a fresh sandbox, committed with
  trailers on a clean clone, pushed and opened as a pull request (docs/publishing.md).

``runs`` imports neither ``controller``, ``local``, ``gateway`` nor ``cli``.
"""

from continue_orchestrator.runs._created import created, secret_reads, start_entries
from continue_orchestrator.runs._evidence import Evidence, EvidenceSource, parse_outcome
from continue_orchestrator.runs._evidence import from_records as evidence_from_records
from continue_orchestrator.runs._evidence import read as read_evidence
from continue_orchestrator.runs._evidence_body import (
    AGENT_SANDBOX,
    BODY_LIMIT,
    FRESH_SANDBOX,
    EvidenceInputs,
    Provenance,
    VerifyRun,
    agent_verify_run,
    argument_summary,
    final_message,
)
from continue_orchestrator.runs._evidence_body import render as evidence_body
from continue_orchestrator.runs._facts import (
    ToolCall,
    check_attestable,
    counts,
    facts,
    interventions,
    replay_of,
    tool_call_summary,
    tool_calls,
)
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
    VERIFY_CONFIG,
    VERIFY_SUFFIX,
    WORKSPACE_DIR,
    GitOrigin,
    Plan,
    Registration,
    Snapshot,
    bundle,
    git_origin,
    git_path,
    git_url,
    inputs_digest,
    registration,
    secret_purpose,
    shown_url,
    snapshot,
    spec_document,
    verify_plan,
)
from continue_orchestrator.runs._publish import Inputs as PublishInputs
from continue_orchestrator.runs._publish import (
    Publication,
    Surroundings,
    check_paths,
    commit_message,
    default_branch,
    gates,
    publish,
    settle_approval,
)
from continue_orchestrator.runs._publish import Target as PublicationTarget
from continue_orchestrator.runs._publish import target as publication_target
from continue_orchestrator.runs._publish_git import COMMITTER

__all__ = [
    "AGENT_SANDBOX",
    "BODY_LIMIT",
    "COMMITTER",
    "FRESH_SANDBOX",
    "RUNNER_COMMAND",
    "RUNNER_EXIT_CODES",
    "RUNTIME_CLASS",
    "RUN_DIR",
    "VERIFY_CONFIG",
    "VERIFY_SUFFIX",
    "WORKSPACE_DIR",
    "Evidence",
    "EvidenceInputs",
    "EvidenceSource",
    "Finish",
    "GitOrigin",
    "Plan",
    "Provenance",
    "Publication",
    "PublicationTarget",
    "PublishInputs",
    "Registration",
    "Snapshot",
    "Surroundings",
    "ToolCall",
    "VerifyRun",
    "agent_verify_run",
    "argument_summary",
    "bundle",
    "check_attestable",
    "check_paths",
    "commit_message",
    "counts",
    "created",
    "default_branch",
    "evidence_body",
    "evidence_from_records",
    "facts",
    "final_message",
    "from_status",
    "gates",
    "git_origin",
    "git_path",
    "git_url",
    "inputs_digest",
    "interventions",
    "parse_outcome",
    "parse_time",
    "phase_of",
    "publication_target",
    "publish",
    "read_evidence",
    "registration",
    "replay_of",
    "secret_purpose",
    "secret_reads",
    "settle_approval",
    "shown_url",
    "snapshot",
    "spec_document",
    "start_entries",
    "timestamp",
    "tool_call_summary",
    "tool_calls",
    "verify_plan",
]
