"""RunApproval: a person's decision on an action a run holds for approval.

Kubernetes RBAC cannot tell one field of an AgentRun from another, so a decision is its
own object: members who may approve get ``create`` on runapprovals, and the API server
itself vouches for who decided: a ValidatingAdmissionPolicy (in the chart) admits a
RunApproval only when ``spec.decidedBy`` equals the requesting user's name and groups.
The gateway then counts the decision only if that person is one of the approvers of the
policy snapshot the run started with.
"""

from __future__ import annotations

import enum
from typing import Literal

import pydantic

from continue_orchestrator.api import _base


class Decision(enum.StrEnum):
    """The person's decision."""

    APPROVE = "Approve"
    DENY = "Deny"


class DecidedBy(_base.Model):
    """Who decided, as the API server authenticated them."""

    username: str = pydantic.Field(min_length=1, max_length=256)
    """Kubernetes user name of the person deciding."""
    groups: list[str] = pydantic.Field(default_factory=list, max_length=64)
    """Their groups, as authenticated."""


class RunApprovalSpec(_base.Model):
    """The decision on one held action of one run."""

    cross_field_rules = (
        _base.CrossFieldRule(
            cel="self == oldSelf",
            message="a RunApproval is immutable; create a new one",
            holds=None,
        ),
    )

    run_name: str = pydantic.Field(min_length=1, max_length=253, pattern=_base.DNS_SUBDOMAIN)
    """The AgentRun in this namespace."""
    call_id: str = pydantic.Field(min_length=1, max_length=128)
    """The held action's id, from the run's status.pendingApprovals."""
    decision: Decision
    """Approve or Deny."""
    reason: str = pydantic.Field(default="", max_length=4096)
    """Why, for the record."""
    decided_by: DecidedBy
    """Who decided; must match the requesting user (enforced at admission)."""


class RunApproval(_base.Model):
    """An approver's decision on an action an AgentRun holds."""

    api_version: Literal["orchestrator.continue.dev/v1alpha1"]
    kind: Literal["RunApproval"]
    metadata: _base.ObjectMeta
    spec: RunApprovalSpec
