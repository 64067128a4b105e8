"""`helm lint` and `helm template` of the chart, and what values.schema.json refuses.

Needs the helm binary (hack/build-k8s.sh), not a cluster. The wiring between the
gateway objects and the NetworkPolicy the operator writes for every run is checked
against the controller's own manifest code, so a renamed label or a moved port fails here.
"""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import prometheus_client
import pytest
import yaml
from tests.integration.chart import chart_support as chart
from tests.unit.controller import _builders

from continue_orchestrator import controller
from continue_orchestrator.gateway import _metrics as gateway_metrics

NS = "continue-orchestrator"
FULL_VALUES: dict[str, Any] = {
    "image": {"repository": "registry.example/orchestrator", "digest": "sha256:" + "3" * 64},
    "ledger": {"existingSecret": "ledger-url", "key": "dsn", "url": ""},
    "operator": {
        "replicas": 3,
        "watchNamespaces": ["team-a", "team-b"],
        "workers": 4,
        "logLevel": "debug",
    },
    "gateway": {
        "port": 9443,
        "adminPort": 9444,
        "adminToken": {"existingSecret": "gw-admin"},
        "githubApp": {
            "appId": 1234567,
            "installationId": 76543210,
            "apiUrl": "https://ghe.example/api/v3",
            "privateKey": {"existingSecret": "github-app", "key": "app.pem"},
        },
    },
    "recordStore": {"existingClaim": "records"},
    "attestation": {"mode": "keyless", "keyless": {"trustConfig": '{"mediaType": "x"}'}},
    "baselinePolicy": {"enabled": True, "approverGroups": ["security"]},
    "runtimeClass": {"create": True},
    "metrics": {
        "serviceMonitor": {"enabled": True},
        "prometheusRule": {"enabled": True},
        "grafanaDashboard": {"enabled": True},
    },
}


@pytest.fixture(scope="module")
def default_docs() -> list[dict[str, Any]]:
    return chart.documents(chart.template().stdout)


@pytest.fixture(scope="module")
def full_values(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("values") / "full.yaml"
    path.write_text(yaml.safe_dump(FULL_VALUES))
    return path


@pytest.fixture(scope="module")
def full_docs(full_values: Path) -> list[dict[str, Any]]:
    return chart.documents(chart.template("-f", str(full_values)).stdout)


def _deployment(docs: list[dict[str, Any]], component: str) -> dict[str, Any]:
    return chart.find(docs, "Deployment", f"continue-orchestrator-{component}")


def _container(deployment: dict[str, Any]) -> dict[str, Any]:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return dict(containers[0])


def _flags(container: dict[str, Any]) -> dict[str, str]:
    return dict(a[2:].partition("=")[::2] for a in container["args"] if a.startswith("--"))


# -- lint ----------------------------------------------------------------------------------


def test_lint_passes_with_required_and_with_every_toggle_on(full_values: Path) -> None:
    chart.run("lint", "--strict", str(chart.CHART), *chart.set_args(chart.REQUIRED))
    chart.run(
        "lint",
        "--strict",
        str(chart.CHART),
        *chart.set_args(chart.REQUIRED),
        "-f",
        str(full_values),
    )


# -- defaults ------------------------------------------------------------------------------


def test_defaults_render_the_core_and_leave_the_optional_objects_out(
    default_docs: list[dict[str, Any]],
) -> None:
    kinds = {(d["kind"], d["metadata"]["name"]) for d in default_docs}
    for expected in [
        ("Deployment", "continue-orchestrator-operator"),
        ("Deployment", "continue-orchestrator-gateway"),
        ("Service", "continue-orchestrator-gateway"),
        ("ServiceAccount", "continue-orchestrator-operator"),
        ("ServiceAccount", "continue-orchestrator-gateway"),
        ("ClusterRole", "continue-orchestrator-admin"),
        ("ClusterRole", "continue-orchestrator-member"),
        ("ClusterRole", "continue-orchestrator-view"),
        ("ValidatingAdmissionPolicy", "runapproval-identity.orchestrator.continue.dev"),
        ("ValidatingAdmissionPolicyBinding", "runapproval-identity.orchestrator.continue.dev"),
        ("PodDisruptionBudget", "continue-orchestrator-operator"),
    ]:
        assert expected in kinds
    present = {kind for kind, _ in kinds}
    for optional in ("ClusterRunPolicy", "RuntimeClass", "ServiceMonitor", "PrometheusRule"):
        assert optional not in present
    assert "RoleBinding" not in present  # cluster-wide by default


def test_the_admission_policy_is_the_one_in_deploy(default_docs: list[dict[str, Any]]) -> None:
    source = chart.documents(
        (chart.ROOT / "deploy/admission/runapproval-identity.yaml").read_text()
    )
    rendered = [d for d in default_docs if d["kind"].startswith("ValidatingAdmissionPolicy")]
    assert rendered == source


def test_pods_are_hardened(default_docs: list[dict[str, Any]]) -> None:
    for component in ("operator", "gateway"):
        pod = _deployment(default_docs, component)["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        container = _container(_deployment(default_docs, component))
        security = container["securityContext"]
        assert security["readOnlyRootFilesystem"] is True
        assert security["allowPrivilegeEscalation"] is False
        assert security["capabilities"] == {"drop": ["ALL"]}
        assert security["runAsUser"] != 0
        assert container["resources"]["limits"] and container["resources"]["requests"]
        assert container["livenessProbe"] and container["readinessProbe"]
        # A read-only root needs a writable /tmp for Python.
        assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]


def test_operator_runs_two_peered_replicas_probed_on_kopfs_health_endpoint(
    default_docs: list[dict[str, Any]],
) -> None:
    deployment = _deployment(default_docs, "operator")
    assert deployment["spec"]["replicas"] == 2
    container = _container(deployment)
    flags = _flags(container)
    assert flags["peering"] == "continue-orchestrator" and "standalone" not in flags
    liveness = urlsplit(flags["liveness"])
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert liveness.port == ports["health"]
    for probe in ("livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"] == {"path": liveness.path, "port": "health"}
    env = chart.env_of(container)
    assert int(env["ORCHESTRATOR_METRICS_PORT"]) == ports["metrics"]
    assert env["ORCHESTRATOR_RUNNER_IMAGE"] == chart.RUNNER
    assert env["ORCHESTRATOR_NAMESPACE"] == NS
    # The ledger names the operator by the ServiceAccount it really runs as.
    account = deployment["spec"]["template"]["spec"]["serviceAccountName"]
    assert env["ORCHESTRATOR_ACTOR"] == f"system:serviceaccount:{NS}:{account}"


@pytest.mark.parametrize("docs_fixture", ["default_docs", "full_docs"])
def test_gateway_is_what_the_runs_network_policy_lets_sandboxes_reach(
    docs_fixture: str, request: pytest.FixtureRequest
) -> None:
    docs: list[dict[str, Any]] = request.getfixturevalue(docs_fixture)
    env = chart.env_of(_container(_deployment(docs, "operator")))
    settings = _builders.make_settings(
        operator_namespace=env["ORCHESTRATOR_NAMESPACE"],
        gateway_port=int(env["ORCHESTRATOR_GATEWAY_PORT"]),
        gateway_url=env["ORCHESTRATOR_GATEWAY_URL"],
    )
    policy = controller.network_policy(_builders.make_plan(settings), settings)
    [to_gateway] = policy["spec"]["egress"][:1]
    [peer] = to_gateway["to"]
    [port] = to_gateway["ports"]

    assert peer["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": NS}
    gateway = _deployment(docs, "gateway")
    assert gateway["metadata"]["namespace"] == NS
    pod_labels = gateway["spec"]["template"]["metadata"]["labels"]
    assert peer["podSelector"]["matchLabels"].items() <= pod_labels.items()
    ports = {p["name"]: p["containerPort"] for p in _container(gateway)["ports"]}
    assert port == {"protocol": "TCP", "port": ports["agents"]}
    assert _flags(_container(gateway))["listen"] == f"0.0.0.0:{ports['agents']}"
    # Held calls wait on the AgentRun for a RunApproval, not on the local admin API.
    assert _flags(_container(gateway))["approvals"] == "kubernetes"
    # The admin API is on another port: the run's NetworkPolicy never opens it.
    assert ports["admin"] != ports["agents"]

    url = urlsplit(settings.effective_gateway_url)
    service = chart.find(docs, "Service", url.hostname.split(".")[0] if url.hostname else "")
    assert url.hostname == f"{service['metadata']['name']}.{NS}.svc"
    assert service["spec"]["selector"].items() <= pod_labels.items()
    by_name = {p["name"]: p for p in service["spec"]["ports"]}
    assert by_name["agents"]["port"] == url.port == ports["agents"]
    assert by_name["agents"]["targetPort"] == "agents"
    admin = urlsplit(env["ORCHESTRATOR_GATEWAY_ADMIN_URL"])
    assert admin.hostname == url.hostname and admin.port == by_name["admin"]["port"]


def test_gateway_admin_port_is_open_to_the_operator_pods_only(
    default_docs: list[dict[str, Any]],
) -> None:
    policy = chart.find(default_docs, "NetworkPolicy")
    gateway = _deployment(default_docs, "gateway")
    operator = _deployment(default_docs, "operator")
    assert (
        policy["spec"]["podSelector"]["matchLabels"] == gateway["spec"]["selector"]["matchLabels"]
    )
    ports = {p["name"]: p["containerPort"] for p in _container(gateway)["ports"]}
    admin_rules = [
        r
        for r in policy["spec"]["ingress"]
        if {"protocol": "TCP", "port": ports["admin"]} in r["ports"]
    ]
    [rule] = admin_rules
    [peer] = rule["from"]
    assert set(peer) == {"podSelector"}  # same namespace only
    selector = peer["podSelector"]["matchLabels"]
    assert selector.items() <= operator["spec"]["template"]["metadata"]["labels"].items()
    assert not selector.items() <= gateway["spec"]["template"]["metadata"]["labels"].items()


def test_a_generated_admin_token_is_long_and_shared_by_both_pods(
    default_docs: list[dict[str, Any]],
) -> None:
    secret = chart.find(default_docs, "Secret")
    token = base64.b64decode(secret["data"]["token"]).decode()
    assert len(token) >= 32
    for component in ("operator", "gateway"):
        volumes = _deployment(default_docs, component)["spec"]["template"]["spec"]["volumes"]
        names = [v["secret"]["secretName"] for v in volumes if "secret" in v]
        assert secret["metadata"]["name"] in names


# -- every toggle on -------------------------------------------------------------------------


def test_keyless_signing_gets_a_sigstore_audience_token_and_the_trust_config(
    full_docs: list[dict[str, Any]],
) -> None:
    deployment = _deployment(full_docs, "operator")
    container = _container(deployment)
    flags = _flags(container)
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    [source] = volumes["sigstore-token"]["projected"]["sources"]
    token = source["serviceAccountToken"]
    assert token["audience"] == "sigstore"
    assert flags["sigstore-token"] == f"{mounts['sigstore-token']}/{token['path']}"
    trust = chart.find(full_docs, "ConfigMap", "continue-orchestrator-sigstore-trust")
    assert volumes["sigstore-trust"]["configMap"]["name"] == trust["metadata"]["name"]
    [key] = trust["data"]
    assert flags["keyless-trust-config"] == f"{mounts['sigstore-trust']}/{key}"
    assert trust["data"][key].strip() == FULL_VALUES["attestation"]["keyless"]["trustConfig"]
    assert "signing-key-dir" not in flags


def test_key_mode_mounts_the_signing_secret_where_the_operator_reads_it() -> None:
    docs = chart.documents(
        chart.template(
            values={"attestation.mode": "key", "attestation.key.existingSecret": "cosign-key"}
        ).stdout
    )
    deployment = _deployment(docs, "operator")
    container = _container(deployment)
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    assert volumes["signing"]["secret"]["secretName"] == "cosign-key"
    assert mounts["signing"]["readOnly"] is True
    assert _flags(container)["signing-key-dir"] == mounts["signing"]["mountPath"]
    assert "sigstore-token" not in volumes  # no OIDC token where none is needed


def test_a_ca_bundle_is_trusted_by_python_and_git_in_both_pods() -> None:
    """trust.caBundle: the ConfigMap's bundle mounted into the operator and the gateway,
    and named where Python's ssl (SSL_CERT_FILE) and git (GIT_SSL_CAINFO) read it."""
    values = {"trust.caBundle.configMap": "corp-ca", "trust.caBundle.key": "bundle.pem"}
    docs = chart.documents(chart.template(values=values).stdout)
    default = chart.documents(chart.template().stdout)
    for component in ("operator", "gateway"):
        deployment = _deployment(docs, component)
        container = _container(deployment)
        volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
        mounts = {m["name"]: m for m in container["volumeMounts"]}
        assert volumes["ca-bundle"]["configMap"] == {
            "name": "corp-ca", "items": [{"key": "bundle.pem", "path": "bundle.pem"}]
        }  # fmt: skip
        assert mounts["ca-bundle"]["readOnly"] is True
        path = f"{mounts['ca-bundle']['mountPath']}/bundle.pem"
        env = chart.env_of(container)
        assert env["SSL_CERT_FILE"] == path and env["GIT_SSL_CAINFO"] == path
        # without the value: the image's own bundle, nothing mounted or set
        plain = _container(_deployment(default, component))
        assert "SSL_CERT_FILE" not in chart.env_of(plain)
        assert all(m["name"] != "ca-bundle" for m in plain["volumeMounts"])


def test_a_github_app_is_mounted_where_the_gateways_flags_read_it(
    default_docs: list[dict[str, Any]], full_docs: list[dict[str, Any]]
) -> None:
    plain = _container(_deployment(default_docs, "gateway"))
    assert not [flag for flag in _flags(plain) if flag.startswith("github")]
    assert "github-app" not in {m["name"] for m in plain["volumeMounts"]}

    deployment = _deployment(full_docs, "gateway")
    container = _container(deployment)
    flags = _flags(container)
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    # Numbers as the CLI parses them: a values file's 1234567 is a float to Helm.
    assert flags["github-app-id"] == "1234567"
    assert flags["github-app-installation-id"] == "76543210"
    assert flags["github-api-url"] == "https://ghe.example/api/v3"
    assert flags["github-app-key-file"] == f"{mounts['github-app']['mountPath']}/app.pem"
    assert mounts["github-app"]["readOnly"] is True
    assert volumes["github-app"]["secret"]["secretName"] == "github-app"
    assert volumes["github-app"]["secret"]["items"] == [{"key": "app.pem", "path": "app.pem"}]
    operator = _container(_deployment(full_docs, "operator"))
    assert "github-app" not in {m["name"] for m in operator.get("volumeMounts", [])}


def test_watched_namespaces_get_role_bindings_and_nothing_cluster_wide(
    full_docs: list[dict[str, Any]],
) -> None:
    bindings = [d for d in full_docs if d["kind"] == "RoleBinding"]
    assert sorted((b["metadata"]["namespace"], b["roleRef"]["name"]) for b in bindings) == [
        (ns, f"continue-orchestrator-{who}")
        for ns in ("team-a", "team-b")
        for who in ("gateway", "operator")
    ]
    cluster_bindings = {
        d["roleRef"]["name"] for d in full_docs if d["kind"] == "ClusterRoleBinding"
    }
    assert cluster_bindings == {"continue-orchestrator-operator-cluster"}
    cluster_rules = chart.find(full_docs, "ClusterRole", "continue-orchestrator-operator-cluster")
    resources = {r for rule in cluster_rules["rules"] for r in rule["resources"]}
    assert not resources & {"secrets", "pods", "configmaps", "agentruns"}
    env = chart.env_of(_container(_deployment(full_docs, "operator")))
    assert env["ORCHESTRATOR_WATCH_NAMESPACES"] == "team-a,team-b"
    assert env["ORCHESTRATOR_LEDGER"] == {"secretKeyRef": {"name": "ledger-url", "key": "dsn"}}


def test_baseline_policy_and_runtime_class(full_docs: list[dict[str, Any]]) -> None:
    policy = chart.find(full_docs, "ClusterRunPolicy", "baseline")
    source = yaml.safe_load((chart.ROOT / "policies" / "baseline.yaml").read_text())
    assert policy["spec"]["rules"] == source["spec"]["rules"]
    assert policy["spec"]["defaultEffect"] == source["spec"]["defaultEffect"]
    assert policy["spec"]["approvers"] == {"groups": ["security"]}
    runtime = chart.find(full_docs, "RuntimeClass", "gvisor")
    assert runtime["handler"] == "runsc"


def test_alerts_only_use_metrics_the_code_exports(full_docs: list[dict[str, Any]]) -> None:
    exported: set[str] = set()
    registries: list[prometheus_client.CollectorRegistry] = [
        controller.METRICS_REGISTRY,
        gateway_metrics.REGISTRY,
    ]
    for registry in registries:
        for family in registry.collect():
            exported.add(family.name)
            exported.update(f"{family.name}{s}" for s in ("_total", "_bucket", "_count", "_sum"))
    rule = chart.find(full_docs, "PrometheusRule")
    alerts = {r["alert"]: r["expr"] for g in rule["spec"]["groups"] for r in g["rules"]}
    assert {
        "OrchestratorReconcileErrors",
        "OrchestratorInterventionRateHigh",
        "OrchestratorAttestationSigningFailing",
    } <= set(alerts)
    dashboard = json.loads(
        chart.find(full_docs, "ConfigMap", "continue-orchestrator-dashboard")["data"][
            "continue-orchestrator.json"
        ]
    )
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            alerts[f"dashboard panel {panel['title']!r}"] = target["expr"]
    for name, expr in alerts.items():
        for metric in re.findall(r"\borchestrator_[a-z_]+", expr):
            assert metric in exported, f"alert {name} uses {metric}, which nothing exports"
    monitor = chart.find(full_docs, "ServiceMonitor")
    selected = [
        d
        for d in full_docs
        if d["kind"] == "Service"
        and monitor["spec"]["selector"]["matchLabels"].items() <= d["metadata"]["labels"].items()
    ]
    assert sorted(s["metadata"]["name"] for s in selected) == [
        "continue-orchestrator-gateway",
        "continue-orchestrator-operator-metrics",
    ]
    assert all(any(p["name"] == "metrics" for p in s["spec"]["ports"]) for s in selected)


def test_unpinned_runner_image_only_when_asked_for() -> None:
    docs = chart.documents(
        chart.template(
            values={"runner.image": "runner:dev", "runner.allowUnpinnedImage": "true"}
        ).stdout
    )
    env = chart.env_of(_container(_deployment(docs, "operator")))
    assert env["ORCHESTRATOR_RUNNER_IMAGE"] == "runner:dev"
    assert env["ORCHESTRATOR_ALLOW_UNPINNED_RUNNER_IMAGE"] == "1"


# -- refused values ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"runner.image": ""}, "at '/runner/image'"),
        ({"runner.image": "runner:latest"}, "'runner:latest' does not match pattern"),
        ({"gateway.replicas": "2"}, "at '/gateway/replicas': maximum: got 2, want 1"),
        ({"operator.replicas": "0"}, "at '/operator/replicas': minimum"),
        ({"operator.workers": "many"}, "at '/operator/workers'"),
        ({"operator.bogus": "1"}, "additional properties 'bogus' not allowed"),
        ({"attestation.mode": "sometimes"}, "at '/attestation/mode'"),
        ({"gateway.port": "70000"}, "at '/gateway/port': maximum"),
        ({"ledger.url": "mysql://db"}, "at '/ledger/url'"),
        ({"operator.watchNamespaces[0]": "Team_A"}, "at '/operator/watchNamespaces/0'"),
        ({"ledger.url": ""}, "no ledger: set ledger.url"),
        ({"operator.standalone": "true"}, "operator.replicas must be 1 (is 2)"),
        ({"attestation.mode": "key"}, "attestation.key.existingSecret is empty"),
        ({"attestation.mode": "keyless"}, "neither attestation.keyless.existingConfigMap"),
        ({"gateway.githubApp.appId": "12"}, "privateKey.existingSecret is empty"),
        ({"gateway.githubApp.apiUrl": "https://ghe.example/api/v3"}, "but no appId"),
        (
            {"gateway.githubApp.apiUrl": "http://ghe.example/api/v3"},
            "at '/gateway/githubApp/apiUrl'",
        ),
        ({"gateway.githubApp.installationId": "0"}, "at '/gateway/githubApp/installationId'"),
    ],
)
def test_bad_values_fail_with_the_path_named(values: dict[str, str], message: str) -> None:
    result = chart.template(values=values, check=False)
    assert result.returncode != 0, f"{values} was accepted"
    assert message in result.stderr, result.stderr


def test_install_without_values_names_what_is_missing() -> None:
    result = chart.run("template", "x", str(chart.CHART), check=False)
    assert result.returncode != 0
    assert "at '/runner/image'" in result.stderr
