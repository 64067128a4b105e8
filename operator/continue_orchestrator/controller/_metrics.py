"""Prometheus metrics of the operator: runs by phase, transitions, errors, latencies.

One registry per process, created at import, so handlers and the HTTP endpoint share
it and a second operator object in the same process does not re-register names.
"""

from __future__ import annotations

import threading

import prometheus_client

from continue_orchestrator import api, attest

REGISTRY = prometheus_client.CollectorRegistry()
# The operator signs attestations in its own process: serve attest's counters with ours.
REGISTRY.register(attest.SIGNING_FAILURES)
REGISTRY.register(attest.PUBLISHED)

RUNS_FINISHED = prometheus_client.Counter(
    "orchestrator_agentruns_finished",
    "AgentRuns that reached a terminal phase, by phase and reason.",
    ["phase", "reason"],
    registry=REGISTRY,
)
RECONCILE_ERRORS = prometheus_client.Counter(
    "orchestrator_reconcile_errors",
    "Handler invocations that raised (they are retried unless permanent).",
    ["handler"],
    registry=REGISTRY,
)
RECONCILE_SECONDS = prometheus_client.Histogram(
    "orchestrator_reconcile_duration_seconds",
    "Time spent in one handler invocation.",
    ["handler"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
    registry=REGISTRY,
)
POD_CREATE_SECONDS = prometheus_client.Histogram(
    "orchestrator_agentrun_pod_created_seconds",
    "From AgentRun creation to its pod created.",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120),
    registry=REGISTRY,
)
INTERVENTIONS = prometheus_client.Counter(
    "orchestrator_interventions",
    "Interventions in runs counted by the operator (manual stops).",
    ["kind"],
    registry=REGISTRY,
)

PULL_REQUESTS = prometheus_client.Counter(
    "orchestrator_pull_requests",
    "Pull requests of runs by outcome: opened by publication, merged or closed unmerged "
    "as the pull request poller read them from the forge.",
    ["outcome"],
    registry=REGISTRY,
)
# Every outcome is exported from the start, at 0, so a rate over it is never empty.
PULL_REQUESTS.labels("opened")
PULL_REQUESTS.labels("merged")
PULL_REQUESTS.labels("closed")


class PhaseGauge:
    """Live AgentRuns by phase, from the operator's watch of AgentRuns."""

    def __init__(self) -> None:
        self._phases: dict[str, str] = {}
        self._lock = threading.Lock()
        self._gauge = prometheus_client.Gauge(
            "orchestrator_agentruns",
            "AgentRuns currently known to the operator, by phase.",
            ["phase"],
            registry=REGISTRY,
        )
        for phase in api.Phase:
            self._gauge.labels(phase.value).set(0)

    def observe(self, uid: str, phase: str | None) -> None:
        with self._lock:
            if phase is None:
                self._phases.pop(uid, None)
            else:
                self._phases[uid] = phase
            counts = dict.fromkeys((p.value for p in api.Phase), 0)
            for value in self._phases.values():
                counts[value] = counts.get(value, 0) + 1
        for value, count in counts.items():
            self._gauge.labels(value).set(count)


PHASES = PhaseGauge()


def serve(port: int, address: str = "0.0.0.0") -> None:
    """Serve /metrics on ``port`` from a daemon thread."""
    prometheus_client.start_http_server(port, addr=address, registry=REGISTRY)
