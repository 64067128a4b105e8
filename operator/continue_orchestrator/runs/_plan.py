"""A run's plan: the policy snapshot, the inputs and their digest, what the runner gets.

The operator builds a plan from the live cluster, local mode from files; both then
derive the same things from it here, so a run digests, bundles and registers alike
wherever it runs: the snapshot from its canonical content (the runtime class a policy
leaves unset is the caller's default), the inputs digest, the runner's bundle at the
sandbox's fixed paths, and what the gateway is told about the run. The runner clones
through the gateway's git endpoint (``git_url``), and the forge credential goes to the
gateway only (``git_origin``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import urllib.parse
from collections.abc import Collection, Mapping
from typing import Any

from continue_orchestrator import api, digest, policy, runner

JSON = dict[str, Any]

RUN_DIR = "/var/run/continue-orchestrator"
"""Where the sandbox finds its token, bundle and delivered secrets (a pod's mounted
Secret; local mode binds the run directory at the same path)."""
WORKSPACE_DIR = "/workspace"
"""The repository's checkout in the sandbox."""
RUNNER_COMMAND = ("orchestrator", "runner")
"""The runner image's command (the operator's default; what the inputs digest names
where the runner is not started from an image, as in local mode)."""
RUNTIME_CLASS = "gvisor"
"""The sandbox's runtime where a policy names none (the operator's default)."""


@dataclasses.dataclass(frozen=True, slots=True)
class Snapshot:
    """The policy set in force for one run, frozen when the run starts."""

    digest: str
    """sha256:... of ``content``."""
    content: bytes
    """Canonical JSON of the compiled policy set; what the gateway and runner enforce."""
    runtime_class: str
    resources: Mapping[str, Mapping[str, str | int]]
    max_timeout_seconds: int
    allowed_egress: tuple[str, ...] = ()
    sources: tuple[str, ...] = ()
    """Digests of the individual policies (cluster baseline first), for the inputs digest."""


@dataclasses.dataclass(frozen=True, slots=True)
class Plan:
    """Everything validated about a run that its objects are built from."""

    run: api.AgentRun
    uid: str
    namespace: str
    name: str
    """Shared name of the Pod, Secret and NetworkPolicy (local mode: the run's uid)."""
    snapshot: Snapshot
    config: str
    """config.yaml as the bundle carries it: models' literal apiKeys brokered."""
    secret_values: Mapping[str, bytes]
    """Values delivered to the sandbox: granted, mapped, used other than as a model key."""
    inputs_digest: str
    token: str
    git_token: bytes | None = None
    """The forge credential (``spec.repository.credentialsSecretRef``): for the gateway's
    registration only, never in the run's Secret, the pod or the bundle."""
    permissions_yaml: str = ""
    """Continue's permissions.yaml rendered from the policy set (an extra fence only)."""
    brokered_values: Mapping[str, bytes] = dataclasses.field(default_factory=dict)
    """Model credentials (``runner.brokered_secrets``): for the gateway's registration
    only, never in the run's Secret, the pod or the bundle."""
    gateway_run: str = ""
    """The id the gateway serves this sandbox under, when it is not ``uid`` (the fresh
    sandbox that verifies a publication: ``verify_plan``)."""
    agent: bool = True
    """False for a sandbox that runs no agent (``verify_plan``): registered with no model."""

    @property
    def run_id(self) -> str:
        """The id the gateway registers the sandbox under and the runner reports as."""
        return self.gateway_run or self.uid

    @property
    def owner(self) -> JSON:
        return {
            "apiVersion": api.API_VERSION,
            "kind": "AgentRun",
            "name": self.run.metadata.name,
            "uid": self.uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }

    @property
    def timeout_seconds(self) -> int:
        return self.run.spec.timeout_seconds


def snapshot(content: bytes, *, runtime_class: str) -> Snapshot:
    """The snapshot and what the sandbox takes from it; a function of ``content`` and the
    ``runtime_class`` used where the RunPolicy names none."""
    sources = policy.snapshot_sources(content)
    run_policy = sources[-1]
    resources = run_policy.spec.sandbox.resources
    return Snapshot(
        digest=digest.text(content),
        content=content,
        runtime_class=run_policy.spec.sandbox.runtime_class_name or runtime_class,
        resources={
            "requests": dict(resources.requests) if resources else {},
            "limits": dict(resources.limits) if resources else {},
        },
        max_timeout_seconds=min(s.spec.sandbox.max_timeout_seconds for s in sources),
        # The RunPolicy's list, within each ClusterRunPolicy that sets one (a ceiling only
        # when set, as the policy engine decides network.egress: docs/policy.md).
        allowed_egress=tuple(
            entry
            for entry in run_policy.spec.allowed_egress
            if all(entry in s.spec.allowed_egress for s in sources[:-1] if s.spec.allowed_egress)
        ),
        sources=policy.snapshot_source_digests(sources),
    )


def spec_document(run: api.AgentRun) -> JSON:
    """The spec as digested: wire form, without ``cancel`` (the one mutable field)."""
    spec = run.spec.wire()
    spec.pop("cancel", None)
    return spec


def inputs_digest(
    run: api.AgentRun,
    *,
    config: str,
    snapshot: Snapshot,
    runner_image: str,
    runner_command: tuple[str, ...],
) -> str:
    """Digest of everything that determines what a run does, as one sha256."""
    document = {
        "spec": spec_document(run),
        "config": digest.text(config),
        "policy": snapshot.digest,
        "policies": list(snapshot.sources),
        "runner": {"image": runner_image, "command": list(runner_command)},
    }
    return digest.text(policy.canonical_json(document))


def secret_purpose(index: int, name: str, brokered: Collection[str]) -> str:
    """What a read secret is for, as the ledger's secret.read entry says."""
    if name in brokered:
        return f"spec.secrets[{index}] {name} for the gateway (model credential, not the sandbox)"
    return f"spec.secrets[{index}] {name} for the run's sandbox"


@dataclasses.dataclass(frozen=True, slots=True)
class GitOrigin:
    """The run's repository as the gateway's git endpoint serves it (``gateway.GitOrigin``):
    where the gateway fetches from (the URL without any credential), the repository's
    path on the endpoint, and the forge credential, which stays with the gateway."""

    url: str
    path: str
    username: str = "x-access-token"
    token: str = dataclasses.field(default="", repr=False)


def git_path(url: str) -> str:
    """The repository's path on the gateway's git endpoint (``/runs/RUN/git/PATH``): the
    last two segments of the URL's path, ``owner/name.git``, whatever its form."""
    if "://" in url:
        path = urllib.parse.urlsplit(url).path
    elif url.startswith("/"):
        path = url
    else:  # git@host:owner/name.git
        path = url.partition(":")[2]
    segments = [segment for segment in path.split("/") if segment not in ("", ".", "..")]
    name = "/".join(segments[-2:]).removesuffix(".git")
    return f"{name or 'repository'}.git"


def shown_url(url: str) -> str:
    """A repository URL as it may be shown or recorded (ledger, pull request body): any
    credential in its userinfo removed. The credential itself goes to the gateway only."""
    return runner.split_credentials(url)[0]


def git_origin(plan: Plan) -> GitOrigin:
    """The run's repository for the gateway: credentials in the URL move to the credential,
    and the Secret ``credentialsSecretRef`` names wins over them."""
    url, in_url = runner.split_credentials(plan.run.spec.repository.url)
    token = plan.git_token.decode("utf-8") if plan.git_token is not None else ""
    return GitOrigin(
        url=url,
        path=git_path(url),
        username=in_url.username if in_url is not None else "x-access-token",
        token=token or (in_url.token if in_url is not None else ""),
    )


def git_url(gateway_url: str, uid: str, repository_url: str) -> str:
    """Where the runner clones the run's repository: the gateway's git endpoint for it."""
    return f"{gateway_url.rstrip('/')}/runs/{uid}/git/{git_path(repository_url)}"


def bundle(plan: Plan, *, gateway_url: str) -> runner.RunBundle:
    """What the runner in the sandbox reads: no secret value, only where to find them; the
    repository's URL without any credential, and the gateway's git endpoint to clone from."""
    spec = plan.run.spec
    url = shown_url(spec.repository.url)
    return runner.RunBundle(
        run=plan.run_id,
        namespace=plan.namespace,
        repository=runner.RepositoryPin(
            url=url, ref=spec.repository.ref, commit=spec.repository.commit
        ),
        git_url=git_url(gateway_url, plan.run_id, url),
        config=plan.config,
        prompt=spec.prompt,
        verify=tuple(spec.verify),
        gateway_url=gateway_url,
        allowed_secrets=tuple(sorted({*plan.secret_values, *plan.brokered_values})),
        secrets_dir=f"{RUN_DIR}/secrets",
        token_file=f"{RUN_DIR}/token",
        permissions_yaml=plan.permissions_yaml,
        agent_timeout_seconds=spec.timeout_seconds,
    )


@dataclasses.dataclass(frozen=True, slots=True)
class Registration:
    """What the gateway needs to serve one run: its token and the policy snapshot
    (``gateway.RunSource``; ``gateway.registration_body`` makes the admin-API body)."""

    uid: str
    name: str
    namespace: str
    token: str
    expires_at: float
    """Unix time after which the token is refused (the run's deadline plus grace)."""
    policy: bytes
    """The snapshot (canonical JSON) the run was started under; never the live policy."""
    policy_digest: str
    allowed_egress: tuple[str, ...]
    config: str
    secrets: Mapping[str, str] = dataclasses.field(default_factory=dict)
    """Granted secret values, delivered and brokered: models' upstream keys are read from
    them, and the gateway redacts all of them from records."""
    replay_of: str = ""
    """For a ``spec.replayOf`` run: the record digest whose answers the gateway serves."""
    repository: GitOrigin | None = None
    """The one repository the run may fetch through the gateway, with the forge credential."""
    agent: bool = True
    """False for a sandbox that runs no agent and may call no model (a verify sandbox)."""


def registration(plan: Plan, *, expires_at: float, replay_of: str = "") -> Registration:
    """The run as the gateway is told of it, from its plan."""
    return Registration(
        uid=plan.run_id,
        name=str(plan.run.metadata.name),
        namespace=plan.namespace,
        token=plan.token,
        expires_at=expires_at,
        policy=plan.snapshot.content,
        policy_digest=plan.snapshot.digest,
        allowed_egress=plan.snapshot.allowed_egress,
        config=plan.config,
        secrets={
            name: value.decode("utf-8", "replace")
            for name, value in {**plan.secret_values, **plan.brokered_values}.items()
        },
        replay_of=replay_of,
        repository=git_origin(plan),
        agent=plan.agent,
    )


VERIFY_SUFFIX = ".verify"
"""The gateway id of a run's verify sandbox: the run's uid and this."""
VERIFY_CONFIG = "name: verify\nversion: 0.0.1\nschema: v1\nmodels: []\n"
"""The config a verify sandbox is registered with: no model, so none can be reached."""


def verify_plan(plan: Plan, *, name: str) -> Plan:
    """The plan of the fresh sandbox that verifies a publication: the run's repository,
    pin, verify commands and policy snapshot, under a gateway id of its own
    (``uid`` + ``VERIFY_SUFFIX``) with a token of its own, and no model, no secret and no
    agent: the runner's ``--verify-only`` never starts one.

    The token is derived from the run's (HMAC-SHA256 under it), so the verify sandbox's
    objects are the same on every attempt and a restarted operator adopts them; it is
    honoured only while the gateway has the verify sandbox registered."""
    token = hmac.new(plan.token.encode("utf-8"), b"verify sandbox", hashlib.sha256).hexdigest()
    return dataclasses.replace(
        plan,
        name=name,
        config=VERIFY_CONFIG,
        secret_values={},
        brokered_values={},
        permissions_yaml="",
        token=token,
        gateway_run=plan.uid + VERIFY_SUFFIX,
        agent=False,
    )
