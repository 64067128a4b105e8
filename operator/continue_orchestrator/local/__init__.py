"""Local mode: what runs a whole AgentRun on one machine without a cluster.

``ScriptedModel`` is a deterministic OpenAI-compatible model for tests, benchmarks and
the demo. ``Sandbox`` runs a command in gVisor inside a network namespace whose only
reachable address is the gateway's (``mode="none"`` is the labelled opt-out).
``run(load(manifest, ...), Options(...))`` is ``orchestrator run``: the operator's
pipeline for one AgentRun with the gateway on the sandbox's host end, a SQLite ledger,
the record store and a development-key attestation, ending in a ``Report``.
``replay(record, Options(...))`` is ``orchestrator replay``: the same pipeline with the
recorded model answers, ending in a ``records.ReplayReport``.
"""

from continue_orchestrator.local._inputs import Inputs, load, parse_secret_flag
from continue_orchestrator.local._options import (
    ModelServer,
    Options,
    default_cn,
    default_state_dir,
    runner_image,
)
from continue_orchestrator.local._replay import replay, resolve_record
from continue_orchestrator.local._report import DEV_KEY_LABEL, Report
from continue_orchestrator.local._run import run
from continue_orchestrator.local._sandbox import (
    NONE_WARNING,
    RUNSC_HELP,
    Bind,
    Mode,
    Sandbox,
    cleanup_stale,
    python_binds,
    runsc_path,
)
from continue_orchestrator.local._scripted import Failure, Script, ScriptedModel, ToolCall, Turn

__all__ = [
    "DEV_KEY_LABEL",
    "NONE_WARNING",
    "RUNSC_HELP",
    "Bind",
    "Failure",
    "Inputs",
    "Mode",
    "ModelServer",
    "Options",
    "Report",
    "Sandbox",
    "Script",
    "ScriptedModel",
    "ToolCall",
    "Turn",
    "cleanup_stale",
    "default_cn",
    "default_state_dir",
    "load",
    "parse_secret_flag",
    "python_binds",
    "replay",
    "resolve_record",
    "run",
    "runner_image",
    "runsc_path",
]
