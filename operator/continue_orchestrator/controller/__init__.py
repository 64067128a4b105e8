"""The operator: reconcile each AgentRun into a network-restricted gVisor pod.

On create, a run is validated against the live policy, Secrets and RuntimeClass,
recorded in the ledger (``run.created``), and given three objects with deterministic
names and owner references: a Secret (run token, policy snapshot, runner bundle, granted
values only), a NetworkPolicy (no ingress; egress to the gateway only) and the sandbox
Pod. Pod state becomes the AgentRun's phase, conditions and Events; cancel stops the
pod; deletion tombstones the run in the ledger first. ``run(settings)`` starts it under
kopf; ``Reconciler`` is the same logic without kopf. See docs/operations.md. What any
run does wherever it runs (its plan and digests, its facts, its finish) is ``runs``,
which the operator drives as local mode does.

Also the cluster side of approvals (``KubeApprovalBroker``: held calls in
status.pendingApprovals, decisions as RunApprovals) and of attestations (``Attestor``:
sign, store in a ConfigMap, write an honest status.attestation), and publication
(``Publisher``: ``runs.publish`` after a Succeeded, attested run, verified again in a
fresh pod; status.pullRequest and the ``Published`` condition). See docs/security.md
and docs/publishing.md.
"""

from continue_orchestrator.controller._approvals import (
    Approvers,
    KubeApprovalBroker,
    RunScope,
    approvers_for,
)
from continue_orchestrator.controller._attestation import (
    Attestor,
    ConfigMapStore,
    bundle_name,
    load_signer,
)
from continue_orchestrator.controller._attestation import fetch as fetch_bundle
from continue_orchestrator.controller._gateway import GatewayClient, InMemoryGateway
from continue_orchestrator.controller._kube import ApiError, Kube
from continue_orchestrator.controller._manifests import network_policy, pod, secret
from continue_orchestrator.controller._metrics import REGISTRY as METRICS_REGISTRY
from continue_orchestrator.controller._names import (
    INPUTS_DIGEST_ANNOTATION,
    POLICY_DIGEST_ANNOTATION,
    RUN_UID_LABEL,
    object_name,
)
from continue_orchestrator.controller._operator import FINALIZER, build_registry, run
from continue_orchestrator.controller._outcome import Outcome, advance, from_pod
from continue_orchestrator.controller._publication import CONDITION as PUBLISHED_CONDITION
from continue_orchestrator.controller._publication import Options as PublishingOptions
from continue_orchestrator.controller._publication import Publisher
from continue_orchestrator.controller._reconcile import Reconciler
from continue_orchestrator.controller._settings import DEFAULT_ACTOR, Settings
from continue_orchestrator.controller._validate import Rejection, plan

__all__ = [
    "DEFAULT_ACTOR",
    "FINALIZER",
    "INPUTS_DIGEST_ANNOTATION",
    "METRICS_REGISTRY",
    "POLICY_DIGEST_ANNOTATION",
    "PUBLISHED_CONDITION",
    "RUN_UID_LABEL",
    "ApiError",
    "Approvers",
    "Attestor",
    "ConfigMapStore",
    "GatewayClient",
    "InMemoryGateway",
    "Kube",
    "KubeApprovalBroker",
    "Outcome",
    "Publisher",
    "PublishingOptions",
    "Reconciler",
    "Rejection",
    "RunScope",
    "Settings",
    "advance",
    "approvers_for",
    "build_registry",
    "bundle_name",
    "fetch_bundle",
    "from_pod",
    "load_signer",
    "network_policy",
    "object_name",
    "plan",
    "pod",
    "run",
    "secret",
]
