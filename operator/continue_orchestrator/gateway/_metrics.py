"""Prometheus metrics of the gateway: model calls, tool-call and tool-result decisions, runs.

One registry per process, created at import (several ``Gateway`` objects in one process,
as in tests, share it). ``orchestrator gateway --metrics-port`` serves it.
"""

from __future__ import annotations

import prometheus_client

REGISTRY = prometheus_client.CollectorRegistry()

MODEL_CALLS = prometheus_client.Counter(
    "orchestrator_gateway_model_calls",
    "Chat completion calls answered to agents, by streaming and HTTP status.",
    ["stream", "status"],
    registry=REGISTRY,
)
REFUSED = prometheus_client.Counter(
    "orchestrator_gateway_refused_calls",
    "Agent calls refused before reaching upstream, by reason.",
    ["reason"],
    registry=REGISTRY,
)
DECISIONS = prometheus_client.Counter(
    "orchestrator_gateway_tool_decisions",
    "Tool calls decided, by final effect (after any approval).",
    ["effect"],
    registry=REGISTRY,
)
TOOL_RESULTS = prometheus_client.Counter(
    "orchestrator_gateway_tool_result_decisions",
    "Tool results decided against spec.toolResults, by effect (Deny: withheld from the model).",
    ["effect"],
    registry=REGISTRY,
)
RUNS = prometheus_client.Gauge(
    "orchestrator_gateway_registered_runs",
    "Runs this gateway currently serves.",
    registry=REGISTRY,
)
IN_FLIGHT = prometheus_client.Gauge(
    "orchestrator_gateway_calls_in_flight",
    "Chat completion calls being served right now.",
    registry=REGISTRY,
)
REGISTRATIONS = prometheus_client.Counter(
    "orchestrator_gateway_registrations",
    "Admin registration requests, by result (created, repeated, refused, conflict).",
    ["result"],
    registry=REGISTRY,
)


def serve(port: int, address: str = "0.0.0.0") -> None:
    """Serve /metrics on ``port`` from a daemon thread."""
    prometheus_client.start_http_server(port, addr=address, registry=REGISTRY)
