"""Names, labels and annotations of the objects a run owns.

Names are derived from the AgentRun's name and UID alone, so a restarted operator (or a
second replica) computes the same names and finds what the first one created instead
of making duplicates. The UID suffix keeps a re-created AgentRun of the same name from
colliding with the previous run's objects while they are still being deleted.
"""

from __future__ import annotations

import re

from continue_orchestrator import api

PREFIX = api.GROUP
RUN_UID_LABEL = f"{PREFIX}/run-uid"
RUN_NAME_ANNOTATION = f"{PREFIX}/run-name"
INPUTS_DIGEST_ANNOTATION = f"{PREFIX}/inputs-digest"
POLICY_DIGEST_ANNOTATION = f"{PREFIX}/policy-digest"
RUNNER_IMAGE_ANNOTATION = f"{PREFIX}/runner-image"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY = "continue-orchestrator"
COMPONENT_LABEL = "app.kubernetes.io/component"
COMPONENT = "agent-run"
GATEWAY_NAME_LABEL = "app.kubernetes.io/name"
GATEWAY_NAME = "continue-orchestrator-gateway"

CONTAINER = "runner"

_UNSAFE = re.compile(r"[^a-z0-9-]+")


def object_name(run_name: str, run_uid: str) -> str:
    """The name shared by the run's Pod, Secret and NetworkPolicy (a DNS label)."""
    stem = _UNSAFE.sub("-", run_name.lower())[:45].strip("-") or "run"
    return f"{stem}-{run_uid.replace('-', '')[:8]}"


def event_name(object_name: str, transition: str) -> str:
    """One Event per transition: posting it twice hits the same name and is a no-op."""
    return f"{object_name}.{_UNSAFE.sub('-', transition.lower()).strip('-')}"


def selector(run_uid: str) -> dict[str, str]:
    return {RUN_UID_LABEL: run_uid}


def labels(run_uid: str) -> dict[str, str]:
    return {
        RUN_UID_LABEL: run_uid,
        MANAGED_BY_LABEL: MANAGED_BY,
        COMPONENT_LABEL: COMPONENT,
    }
