"""Prometheus metrics of the gateway: model calls, tool-call and tool-result decisions, git
requests, runs.

One registry per process, created at import (several ``Gateway`` objects in one process,
as in tests, share it). ``orchestrator gateway --metrics-port`` serves it.
"""

from __future__ import annotations

import prometheus_client

REGISTRY = prometheus_client.CollectorRegistry()


def _counter(name: str, documentation: str, *labels: str) -> prometheus_client.Counter:
    return prometheus_client.Counter(name, documentation, labels, registry=REGISTRY)


def _gauge(name: str, documentation: str) -> prometheus_client.Gauge:
    return prometheus_client.Gauge(name, documentation, registry=REGISTRY)


MODEL_CALLS = _counter(
    "orchestrator_gateway_model_calls",
    "Chat completion calls answered to agents, by streaming and HTTP status.",
    "stream",
    "status",
)
REFUSED = _counter(
    "orchestrator_gateway_refused_calls",
    "Agent calls refused before reaching upstream, by reason.",
    "reason",
)
DECISIONS = _counter(
    "orchestrator_gateway_tool_decisions",
    "Tool calls decided, by final effect (after any approval).",
    "effect",
)
TOOL_RESULTS = _counter(
    "orchestrator_gateway_tool_result_decisions",
    "Tool results decided against spec.toolResults, by effect (Deny: withheld from the model).",
    "effect",
)
RUNS = _gauge("orchestrator_gateway_registered_runs", "Runs this gateway currently serves.")
IN_FLIGHT = _gauge(
    "orchestrator_gateway_calls_in_flight", "Chat completion calls being served right now."
)
GIT_REQUESTS = _counter(
    "orchestrator_gateway_git_requests",
    "Git smart-HTTP requests to runs' git endpoints, by request (advertisement, "
    "upload-pack, receive-pack, other) and HTTP status.",
    "request",
    "status",
)
REGISTRATIONS = _counter(
    "orchestrator_gateway_registrations",
    "Admin registration requests, by result (created, repeated, refused, conflict).",
    "result",
)


def serve(port: int, address: str = "0.0.0.0") -> None:
    """Serve /metrics on ``port`` from a daemon thread."""
    prometheus_client.start_http_server(port, addr=address, registry=REGISTRY)
