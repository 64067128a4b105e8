"""`helm install` of the chart on the real local control plane, then RBAC as people and
service accounts actually get it (impersonation), then `helm upgrade` and `helm uninstall`.

There is no kubelet: the Deployments get Pending pods, never running ones, and readiness
is not awaited. The control plane is shared by the session, so the module puts back the
RunApproval admission policy other modules applied (the release takes it over).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests.integration.chart import chart_support as chart
from tests.kube import ControlPlane, KubectlError
from tests.unit.controller import _builders

from continue_orchestrator import api, controller

pytestmark = pytest.mark.cluster

RELEASE = "continue-orchestrator"
SCOPED = "scoped"
GROUP = "orchestrator.continue.dev"
VAP_NAME = f"runapproval-identity.{GROUP}"
VAP_FILE = chart.ROOT / "deploy" / "admission" / "runapproval-identity.yaml"
CRDS = sorted(
    yaml.safe_load(p.read_text())["metadata"]["name"] for p in (chart.CHART / "crds").iterdir()
)


class Installed:
    def __init__(self, kube: ControlPlane, suffix: str) -> None:
        self.kube = kube
        self.ns = f"co-chart-{suffix}"
        self.team = f"chart-team-{suffix}"
        self.scoped_ns = f"co-scoped-{suffix}"
        self.scoped_team = f"chart-scoped-team-{suffix}"
        self.other = f"chart-other-{suffix}"

    def helm(self, *args: str, check: bool = True) -> str:
        return chart.run(*args, env=self.kube.env(), check=check).stdout

    def sa(self, namespace: str, name: str) -> str:
        return f"system:serviceaccount:{namespace}:{name}"

    def can(
        self, who: str, verb: str, resource: str, *where: str, groups: tuple[str, ...] = ()
    ) -> bool:
        result = self.kube.kubectl(
            "auth", "can-i", verb, resource, *where, as_user=who, as_groups=groups, check=False
        )
        answer = result.stdout.strip()
        assert answer in ("yes", "no"), result.stderr
        return answer == "yes"

    def create(self, manifest: dict[str, Any], who: str | None = None) -> str:
        return self.kube.kubectl(
            "create", "-f", "-", input=yaml.safe_dump(manifest), as_user=who
        ).stdout


def _exists(kube: ControlPlane, *what: str) -> bool:
    return kube.kubectl("get", *what, check=False).returncode == 0


def _eventually(what: str, probe: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not probe():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} within {timeout:g} s")
        time.sleep(0.3)


@pytest.fixture(scope="module")
def installed(kube: ControlPlane) -> Iterator[Installed]:
    it = Installed(kube, uuid.uuid4().hex[:6])
    for ns in (it.ns, it.team, it.scoped_ns, it.scoped_team, it.other):
        kube.create_namespace(ns)
    vap_existed = _exists(kube, "validatingadmissionpolicy", VAP_NAME)
    # Applied by other modules with kubectl: the release takes the object and its fields over.
    takeover = ["--take-ownership", "--force-conflicts"] if vap_existed else []
    it.helm(
        "install", RELEASE, str(chart.CHART), "--namespace", it.ns,
        *chart.set_args(chart.REQUIRED), *takeover,
    )  # fmt: skip
    it.helm(
        "install", SCOPED, str(chart.CHART), "--namespace", it.scoped_ns,
        *chart.set_args({**chart.REQUIRED, "operator.watchNamespaces[0]": it.scoped_team,
                         "rbac.userRoles": "false", "admission.runApprovalIdentity": "false",
                         "operator.peering": "scoped"}),
    )  # fmt: skip
    try:
        yield it
    finally:
        for release, ns in ((RELEASE, it.ns), (SCOPED, it.scoped_ns)):
            it.helm("uninstall", release, "--namespace", ns, "--wait", check=False)
        for ns in (it.ns, it.team, it.scoped_ns, it.scoped_team, it.other):
            kube.delete_namespace(ns)
        if vap_existed and not _exists(kube, "validatingadmissionpolicy", VAP_NAME):
            kube.apply(VAP_FILE)


def _bind(it: Installed, namespace: str, user: str, role: str) -> None:
    it.create({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": f"{user}-{role}", "namespace": namespace},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}],
    })  # fmt: skip
    if role.startswith("continue-orchestrator-"):
        # The authorizer reads bindings from a cache: a new one is in force a moment later.
        _eventually(f"{user} bound to {role} in {namespace}",
                    lambda: it.can(user, "get", f"agentruns.{GROUP}", "-n", namespace),
                    timeout=30)  # fmt: skip


def _example(file: str, namespace: str, **metadata: str) -> dict[str, Any]:
    manifest: dict[str, Any] = yaml.safe_load((chart.ROOT / "examples" / file).read_text())
    manifest["metadata"].update(namespace=namespace, **metadata)
    return manifest


def _forbidden(call: Callable[[], object], needle: str) -> str:
    with pytest.raises(KubectlError) as error:
        call()
    assert needle in error.value.stderr, error.value.stderr
    return str(error.value.stderr)


def _approval(namespace: str, username: str, groups: list[str]) -> dict[str, Any]:
    return {
        "apiVersion": api.API_VERSION, "kind": "RunApproval",
        "metadata": {"generateName": "decision-", "namespace": namespace},
        "spec": {"runName": "fix-rounding-bug", "callId": "call-1", "decision": "Approve",
                 "reason": "looks right", "decidedBy": {"username": username, "groups": groups}},
    }  # fmt: skip


# -- the install -----------------------------------------------------------------------------


def test_install_creates_crds_and_a_gateway_the_runs_network_policy_selects(
    kube: ControlPlane, installed: Installed
) -> None:
    kube.wait_established(CRDS)
    status = installed.helm("status", RELEASE, "--namespace", installed.ns)
    assert "STATUS: deployed" in status
    for deployment in ("continue-orchestrator-operator", "continue-orchestrator-gateway"):
        assert _exists(kube, "deployment", deployment, "-n", installed.ns)
    # The NetworkPolicy the operator writes for a run in the team namespace.
    settings = _builders.make_settings(operator_namespace=installed.ns)
    policy = controller.network_policy(_builders.make_plan(settings), settings)
    peer = policy["spec"]["egress"][0]["to"][0]
    selector = ",".join(f"{k}={v}" for k, v in peer["podSelector"]["matchLabels"].items())

    def gateway_pods() -> list[Any]:
        out = kube.kubectl("get", "pods", "-n", installed.ns, "-l", selector, "-o", "json")
        return list(yaml.safe_load(out.stdout)["items"])

    _eventually("the gateway ReplicaSet made a pod", lambda: bool(gateway_pods()))
    [pod] = gateway_pods()
    labels = kube.kubectl("get", "ns", installed.ns, "-o", "json").stdout
    assert yaml.safe_load(labels)["metadata"]["labels"].items() >= (
        peer["namespaceSelector"]["matchLabels"].items()
    )
    ports = [p["containerPort"] for c in pod["spec"]["containers"] for p in c["ports"]]
    assert policy["spec"]["egress"][0]["ports"][0]["port"] in ports
    # The default gateway URL the runner uses names the chart's Service.
    host = settings.effective_gateway_url.split("//")[1].split(".")[0]
    assert _exists(kube, "service", host, "-n", installed.ns)


# -- people ----------------------------------------------------------------------------------


def test_member_runs_agents_but_cannot_touch_policies_approvals_or_secrets(
    installed: Installed,
) -> None:
    it, ns, alice = installed, installed.team, "alice-member"
    _bind(it, ns, alice, "continue-orchestrator-member")
    it.create(_example("runpolicy.yaml", ns))  # as cluster-admin
    assert "created" in it.create(_example("agentrun.yaml", ns), who=alice)
    it.kube.kubectl(
        "patch", "agentrun", "fix-rounding-bug", "-n", ns, "--type=merge",
        "-p", '{"spec":{"cancel":true}}', as_user=alice,
    )  # fmt: skip
    assert it.kube.kubectl("get", "runpolicy", "ci-fixer", "-n", ns, as_user=alice).returncode == 0
    _forbidden(
        lambda: it.create(_example("runpolicy.yaml", ns, name="mine"), who=alice),
        f'User "{alice}" cannot create resource "runpolicies"',
    )
    _forbidden(
        lambda: it.kube.kubectl(
            "patch", "runpolicy", "ci-fixer", "-n", ns, "--type=merge",
            "-p", '{"spec":{"defaultEffect":"Allow"}}', as_user=alice,
        ),
        f'User "{alice}" cannot patch resource "runpolicies"',
    )  # fmt: skip
    assert not it.can(alice, "update", "runpolicies", "-n", ns)
    _forbidden(
        lambda: it.kube.kubectl("get", "secrets", "-n", ns, as_user=alice),
        f'User "{alice}" cannot list resource "secrets"',
    )
    assert not it.can(alice, "get", "secrets", "-n", ns)
    _forbidden(
        lambda: it.create(_approval(ns, alice, []), who=alice),
        f'User "{alice}" cannot create resource "runapprovals"',
    )
    assert not it.can(alice, "patch", "agentruns", "-n", ns, "--subresource=status")
    assert not it.can(alice, "create", "agentruns", "-n", it.other)  # only where bound


def test_admin_manages_policies_and_decides_in_their_own_name_only(installed: Installed) -> None:
    it, ns, bob = installed, installed.team, "bob-admin"
    _bind(it, ns, bob, "continue-orchestrator-admin")
    assert "created" in it.create(_example("runpolicy.yaml", ns, name="bobs"), who=bob)
    it.kube.kubectl(
        "patch", "runpolicy", "bobs", "-n", ns, "--type=merge",
        "-p", '{"spec":{"approvalTimeoutSeconds":300}}', as_user=bob,
    )  # fmt: skip
    assert "created" in it.create(_approval(ns, bob, ["system:authenticated"]), who=bob)

    def refused_in_someone_elses_name() -> bool:
        try:
            it.create(_approval(ns, "carol", []), who=bob)
        except KubectlError as error:
            assert VAP_NAME in error.stderr, error.stderr
            return True
        return False

    _eventually("the chart's admission policy refused a decision in another's name",
                refused_in_someone_elses_name, timeout=30)  # fmt: skip
    assert not it.can(bob, "get", "secrets", "-n", ns)
    _forbidden(
        lambda: it.create(_example("clusterrunpolicy.yaml", "", name=f"bobs-{ns}"), who=bob),
        f'User "{bob}" cannot create resource "clusterrunpolicies"',
    )


def test_only_cluster_admin_writes_cluster_run_policies(
    kube: ControlPlane, installed: Installed
) -> None:
    it, ns = installed, installed.team
    for role in ("admin", "edit", "view", "continue-orchestrator-admin",
                 "continue-orchestrator-member", "continue-orchestrator-view"):  # fmt: skip
        user = f"u-{role}"
        if not _exists(kube, "rolebinding", f"{user}-{role}", "-n", ns):
            _bind(it, ns, user, role)
        for verb in ("create", "update", "patch", "delete"):
            assert not it.can(user, verb, f"clusterrunpolicies.{GROUP}"), (user, verb)
    for sa in (it.sa(it.ns, "continue-orchestrator-operator"),
               it.sa(it.ns, "continue-orchestrator-gateway")):  # fmt: skip
        assert not it.can(sa, "create", f"clusterrunpolicies.{GROUP}")
    # cluster-admin can (server-side dry run: nothing is left behind)
    policy = _example("clusterrunpolicy.yaml", "", name=f"dry-{ns}")
    del policy["metadata"]["namespace"]
    out = kube.kubectl("create", "--dry-run=server", "-f", "-", input=yaml.safe_dump(policy))
    assert "created (server dry run)" in out.stdout


def test_user_roles_are_aggregated_into_the_built_in_roles(installed: Installed) -> None:
    it, ns = installed, installed.team
    for user, role in (("dave", "admin"), ("erin", "edit"), ("frank", "view")):
        if not _exists(it.kube, "rolebinding", f"{user}-{role}", "-n", ns):
            _bind(it, ns, user, role)
    # The aggregation controller (kube-controller-manager) fills the built-in roles.
    _eventually("admin aggregated RunPolicy writes",
                lambda: it.can("dave", "create", f"runpolicies.{GROUP}", "-n", ns))  # fmt: skip
    _eventually("edit aggregated AgentRun creation",
                lambda: it.can("erin", "create", f"agentruns.{GROUP}", "-n", ns))  # fmt: skip
    _eventually("view aggregated AgentRun reads",
                lambda: it.can("frank", "list", f"agentruns.{GROUP}", "-n", ns))  # fmt: skip
    assert it.can("dave", "create", f"runapprovals.{GROUP}", "-n", ns)
    assert not it.can("erin", "create", f"runpolicies.{GROUP}", "-n", ns)
    assert not it.can("erin", "create", f"runapprovals.{GROUP}", "-n", ns)
    assert not it.can("frank", "create", f"agentruns.{GROUP}", "-n", ns)
    assert not it.can("frank", "get", "secrets", "-n", ns)


# -- service accounts ------------------------------------------------------------------------

# What the operator does (controller/: _reconcile, _validate, _attestation, _operator; kopf's
# watches, patches, Events and peering), as (verb, resource, subresource).
OPERATOR_NAMESPACED = [
    ("get", f"agentruns.{GROUP}", ""), ("list", f"agentruns.{GROUP}", ""),
    ("watch", f"agentruns.{GROUP}", ""), ("patch", f"agentruns.{GROUP}", ""),
    ("get", f"agentruns.{GROUP}", "status"), ("patch", f"agentruns.{GROUP}", "status"),
    ("update", f"agentruns.{GROUP}", "finalizers"),
    ("get", f"runpolicies.{GROUP}", ""),
    # A publication step held for approval: the operator reads the decisions, never writes one.
    ("get", f"runapprovals.{GROUP}", ""), ("list", f"runapprovals.{GROUP}", ""),
    ("watch", f"runapprovals.{GROUP}", ""),
    ("get", "secrets", ""), ("create", "secrets", ""),
    ("get", "configmaps", ""), ("create", "configmaps", ""), ("delete", "configmaps", ""),
    ("get", "pods", ""), ("list", "pods", ""), ("watch", "pods", ""),
    ("create", "pods", ""), ("delete", "pods", ""),
    ("get", "networkpolicies.networking.k8s.io", ""),
    ("create", "networkpolicies.networking.k8s.io", ""),
    ("create", "events", ""),
]  # fmt: skip
OPERATOR_CLUSTER = [
    ("list", f"clusterrunpolicies.{GROUP}"), ("get", "runtimeclasses.node.k8s.io"),
    ("list", "customresourcedefinitions.apiextensions.k8s.io"),
    ("watch", "customresourcedefinitions.apiextensions.k8s.io"),
]  # fmt: skip
PEERING_VERBS = ("get", "list", "watch", "create", "patch")
NEVER = [
    ("list", "secrets", ""), ("watch", "secrets", ""), ("update", "secrets", ""),
    ("patch", "secrets", ""), ("delete", "secrets", ""),
    ("create", "pods", "exec"), ("update", "pods", ""),
    ("create", "rolebindings.rbac.authorization.k8s.io", ""),
    ("create", "serviceaccounts", "token"),
    ("create", f"runpolicies.{GROUP}", ""), ("update", f"runpolicies.{GROUP}", ""),
    ("create", f"runapprovals.{GROUP}", ""), ("delete", f"agentruns.{GROUP}", ""),
    ("update", "networkpolicies.networking.k8s.io", ""),
]  # fmt: skip


def _where(subresource: str, *scope: str) -> list[str]:
    return [*scope, *([f"--subresource={subresource}"] if subresource else [])]


def test_operator_can_do_what_the_controller_does_and_no_more(installed: Installed) -> None:
    it = installed
    operator = it.sa(it.ns, "continue-orchestrator-operator")
    for verb, resource, sub in OPERATOR_NAMESPACED:
        for ns in (it.team, it.other):
            assert it.can(operator, verb, resource, *_where(sub, "-n", ns)), (verb, resource, sub)
    for verb, resource in OPERATOR_CLUSTER:
        assert it.can(operator, verb, resource), (verb, resource)
    for verb in PEERING_VERBS:
        assert it.can(operator, verb, "clusterkopfpeerings.kopf.dev")
    for verb, resource, sub in NEVER:
        assert not it.can(operator, verb, resource, *_where(sub, "-n", it.team)), (verb, resource)
    assert not it.can(operator, "list", "secrets", "--all-namespaces")
    for verb in ("update", "patch", "delete"):
        assert not it.can(operator, verb, f"runapprovals.{GROUP}", "-n", it.team), verb


def test_scoped_operator_reaches_only_its_watched_namespace(installed: Installed) -> None:
    it = installed
    operator = it.sa(it.scoped_ns, "scoped-continue-orchestrator-operator")
    for verb, resource, sub in OPERATOR_NAMESPACED:
        assert it.can(operator, verb, resource, *_where(sub, "-n", it.scoped_team)), (
            verb,
            resource,
        )
        assert not it.can(operator, verb, resource, *_where(sub, "-n", it.other)), (verb, resource)
    for verb in PEERING_VERBS:
        assert it.can(operator, verb, "kopfpeerings.kopf.dev", "-n", it.scoped_team)
        assert not it.can(operator, verb, "clusterkopfpeerings.kopf.dev")
    assert it.can(operator, "list", "namespaces")
    assert not it.can(operator, "get", "secrets", "-n", it.team)


def test_gateway_holds_approvals_and_reads_no_secrets(installed: Installed) -> None:
    it = installed
    gateway = it.sa(it.ns, "continue-orchestrator-gateway")
    for verb, resource, sub in [
        ("get", f"agentruns.{GROUP}", ""), ("patch", f"agentruns.{GROUP}", "status"),
        ("list", f"runapprovals.{GROUP}", ""), ("watch", f"runapprovals.{GROUP}", ""),
        ("create", "events", ""),
    ]:  # fmt: skip
        assert it.can(gateway, verb, resource, *_where(sub, "-n", it.team)), (verb, resource)
    for verb, resource in [("get", "secrets"), ("create", "pods"), ("patch", f"agentruns.{GROUP}"),
                           ("create", f"runapprovals.{GROUP}"), ("get", "configmaps")]:  # fmt: skip
        assert not it.can(gateway, verb, resource, "-n", it.team), (verb, resource)
    scoped = it.sa(it.scoped_ns, "scoped-continue-orchestrator-gateway")
    assert it.can(scoped, "list", f"runapprovals.{GROUP}", "-n", it.scoped_team)
    assert not it.can(scoped, "list", f"runapprovals.{GROUP}", "-n", it.team)


# -- every toggle, validated by the API server ------------------------------------------------


def test_every_optional_object_is_accepted_by_the_api_server(
    kube: ControlPlane, installed: Installed, tmp_path: Path
) -> None:
    values = tmp_path / "values.yaml"
    values.write_text(yaml.safe_dump({
        "operator": {"watchNamespaces": [installed.team]},
        "attestation": {"mode": "keyless", "keyless": {"trustConfig": "{}"}},
        "baselinePolicy": {"enabled": True},
        "runtimeClass": {"create": True, "name": f"gvisor-{installed.team}"},
        "metrics": {"grafanaDashboard": {"enabled": True}},
    }))  # fmt: skip
    rendered = chart.run(
        "template", "dry", str(chart.CHART), "--namespace", installed.ns,
        *chart.set_args(chart.REQUIRED), "-f", str(values),
    ).stdout  # fmt: skip
    docs = chart.documents(rendered)
    for doc in docs:  # cluster-scoped names must not collide with the live release's
        if doc["kind"] in ("ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding",
                           "ClusterRole", "ClusterRunPolicy"):  # fmt: skip
            doc["metadata"]["name"] = f"dry-{installed.team}-{doc['metadata']['name']}"
        if doc["kind"] == "ValidatingAdmissionPolicyBinding":
            doc["spec"]["policyName"] = f"dry-{installed.team}-{doc['spec']['policyName']}"
    out = kube.kubectl(
        "create", "--dry-run=server", "-f", "-", input=yaml.safe_dump_all(docs)
    ).stdout
    kinds = {d["kind"] for d in docs}
    assert {"ClusterRunPolicy", "RuntimeClass", "ValidatingAdmissionPolicy"} <= kinds
    assert out.count("(server dry run)") == len(docs)


# -- upgrade and uninstall --------------------------------------------------------------------


def test_upgrade_keeps_the_generated_admin_token(kube: ControlPlane, installed: Installed) -> None:
    def token() -> str:
        out = kube.kubectl("get", "secret", "continue-orchestrator-gateway-admin",
                           "-n", installed.ns, "-o", "jsonpath={.data.token}")  # fmt: skip
        return out.stdout

    before = token()
    installed.helm(
        "upgrade", RELEASE, str(chart.CHART), "--namespace", installed.ns, "--reuse-values",
        "--set", "operator.workers=8",
    )  # fmt: skip
    deployment = yaml.safe_load(kube.kubectl(
        "get", "deployment", "continue-orchestrator-operator", "-n", installed.ns, "-o", "json"
    ).stdout)  # fmt: skip
    env = chart.env_of(deployment["spec"]["template"]["spec"]["containers"][0])
    assert env["ORCHESTRATOR_WORKERS"] == "8"
    assert token() == before and len(before) > 40


def test_uninstall_keeps_the_crds_and_removes_the_rest(
    kube: ControlPlane, installed: Installed
) -> None:
    installed.helm("uninstall", RELEASE, "--namespace", installed.ns, "--wait")
    for name in CRDS:
        assert _exists(kube, "crd", name), f"helm uninstall removed CRD {name}"
    gone = [
        ("deployment", "continue-orchestrator-operator", "-n", installed.ns),
        ("deployment", "continue-orchestrator-gateway", "-n", installed.ns),
        ("service", "continue-orchestrator-gateway", "-n", installed.ns),
        ("secret", "continue-orchestrator-gateway-admin", "-n", installed.ns),
        ("serviceaccount", "continue-orchestrator-operator", "-n", installed.ns),
        ("clusterrole", "continue-orchestrator-operator"),
        ("clusterrolebinding", "continue-orchestrator-operator"),
        ("clusterrole", "continue-orchestrator-member"),
        ("clusterrole", "continue-orchestrator-admin"),
        ("validatingadmissionpolicy", VAP_NAME),
    ]
    for what in gone:
        assert not _exists(kube, *what), f"{' '.join(what)} survived helm uninstall"
    # Objects people made in the CRDs outlive the release too.
    assert _exists(kube, "agentrun", "fix-rounding-bug", "-n", installed.team)
