"""Local mode: what runs a whole AgentRun on one machine without a cluster.

``ScriptedModel`` is a deterministic OpenAI-compatible model for tests, benchmarks and
the demo.
"""

from continue_orchestrator.local._scripted import Failure, Script, ScriptedModel, ToolCall, Turn

__all__ = ["Failure", "Script", "ScriptedModel", "ToolCall", "Turn"]
