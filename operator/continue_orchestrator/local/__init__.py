"""Local mode: what runs a whole AgentRun on one machine without a cluster.

``ScriptedModel`` is a deterministic OpenAI-compatible model for tests, benchmarks and
the demo. ``Sandbox`` runs a command in gVisor inside a network namespace whose only
reachable address is the gateway's (``mode="none"`` is the labelled opt-out).
"""

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
    "NONE_WARNING",
    "RUNSC_HELP",
    "Bind",
    "Failure",
    "Mode",
    "Sandbox",
    "Script",
    "ScriptedModel",
    "ToolCall",
    "Turn",
    "cleanup_stale",
    "python_binds",
    "runsc_path",
]
