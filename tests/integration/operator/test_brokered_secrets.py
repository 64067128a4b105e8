"""A model's apiKey secret is brokered on the operator path: the gateway's registration
holds it, and nothing the run's pod can reach does (its Secret, env, volumes, bundle).

The real ``controller.Reconciler`` runs against the real kube-apiserver, registering
with an in-memory gateway so the registration can be read; the pod executor runs the
pod with the stand-in runner, which reports the environment it was given. A second
granted secret, used by an MCP server, is the control: it is delivered as before.
"""

from __future__ import annotations

import base64
import json
import pathlib
import secrets
import shutil
import tempfile
from collections.abc import Iterator

import pytest
from tests import continue_config
from tests.integration.operator import harness
from tests.kube import ControlPlane, PodExecutor

from continue_orchestrator import controller, gateway, ledger

pytestmark = pytest.mark.cluster

MCP_SERVERS = """\
mcpServers:
  - name: tracker
    command: tracker-mcp
    env:
      TOKEN: ${{ secrets.API_TOKEN }}
"""
CONFIG = continue_config.text(name="brokered", version="0.0.1", roles=None, rest=MCP_SERVERS)


@pytest.fixture
def control_dir() -> Iterator[pathlib.Path]:
    # Not under /tmp: in the sandbox that is the pod's own emptyDir.
    path = pathlib.Path(tempfile.mkdtemp(prefix="brokered-control-", dir="/var/tmp"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _reconciler(
    kube: ControlPlane, tmp_path: pathlib.Path, control: pathlib.Path
) -> tuple[controller.Reconciler, controller.InMemoryGateway, ledger.Ledger]:
    settings = controller.Settings(
        runner_image=harness.IMAGE,
        ledger_url=f"sqlite:///{tmp_path / 'ledger.db'}",
        runner_command=("/usr/bin/python3", str(harness.FAKE_RUNNER), str(control)),
        operator_namespace="orchestrator-system",
    ).validate()
    book = ledger.open(settings.ledger_url)
    registered = controller.InMemoryGateway()
    kube_client = controller.Kube(kube.api_client())
    return controller.Reconciler(kube_client, book, registered, settings), registered, book


def test_the_model_key_goes_to_the_gateway_and_nowhere_in_the_pod(
    kube: ControlPlane,
    pod_executor: PodExecutor,
    namespace: str,
    tmp_path: pathlib.Path,
    control_dir: pathlib.Path,
) -> None:
    harness.setup_cluster(kube)
    cluster = harness.Cluster(kube)
    model_key = "sk-brokered-" + secrets.token_hex(16)
    delivered = "delivered-" + secrets.token_hex(16)
    cluster.create(
        harness.run_policy(
            namespace,
            allowedSecrets=["API_TOKEN", "OPENAI_API_KEY"],
            rules=[
                {"name": "repos", "actions": ["repository.access"],
                 "repositories": ["https://github.com/acme/*"], "effect": "Allow"},
                {"name": "keys", "actions": ["secret.read"],
                 "secrets": ["API_TOKEN", "OPENAI_API_KEY"], "effect": "Allow"},
            ],
        )
    )  # fmt: skip
    cluster.create(harness.secret(namespace, "openai", {"api-key": model_key}))
    cluster.create(harness.secret(namespace, "creds", {"token": delivered}))
    created = cluster.create(
        harness.agent_run(
            namespace,
            "brokered",
            agent={"config": CONFIG},
            secrets=[
                {"name": "OPENAI_API_KEY", "secretKeyRef": {"name": "openai", "key": "api-key"}},
                {"name": "API_TOKEN", "secretKeyRef": {"name": "creds", "key": "token"}},
            ],
        )
    )
    uid = created["metadata"]["uid"]
    reconciler, registered, book = _reconciler(kube, tmp_path, control_dir)
    try:
        reconciler.start(created)

        # The gateway: the model's real key is its upstream credential.
        registration = registered.get(uid)
        assert registration is not None
        body = gateway.registration_body(registration)
        assert body["models"]["gpt-4.1"]["apiKey"] == model_key
        assert body["models"]["gpt-4.1"]["apiBase"] == "https://api.openai.com/v1"

        # The run's Secret: the delivered value, never the model key (nor its base64).
        name = controller.object_name("brokered", uid)
        run_secret = cluster.rest.get(f"/api/v1/namespaces/{namespace}/secrets/{name}")
        raw = json.dumps(run_secret)
        values = {k: base64.b64decode(v).decode() for k, v in run_secret["data"].items()}
        assert values["secret.API_TOKEN"] == delivered
        assert "secret.OPENAI_API_KEY" not in values
        assert model_key not in json.dumps(values)
        assert base64.b64encode(model_key.encode()).decode() not in raw
        bundle = json.loads(values["bundle.json"])
        assert sorted(bundle["allowedSecrets"]) == ["API_TOKEN", "OPENAI_API_KEY"]

        # The Pod: no env or volume carries it; the run volume mounts the delivered one.
        (pod,) = cluster.pods(namespace, uid)
        assert model_key not in json.dumps(pod)
        (run_volume,) = [v for v in pod["spec"]["volumes"] if "secret" in v]
        items = {item["key"]: item["path"] for item in run_volume["secret"]["items"]}
        assert items["secret.API_TOKEN"] == "secrets/API_TOKEN"
        assert not [key for key in items if "OPENAI" in key]

        # What the process in the pod was handed.
        report = harness.report(pod_executor, namespace, name, timeout=60)
        assert model_key not in json.dumps(report["env"])

        # The ledger says where each secret went, and holds neither value.
        reads = [e.payload for e in book.entries(run_uid=uid) if e.kind.value == "secret.read"]
        purposes = sorted(str(p["purpose"]) for p in reads if p)
        assert purposes == [
            "spec.secrets[0] OPENAI_API_KEY for the gateway (model credential, not the sandbox)",
            "spec.secrets[1] API_TOKEN for the run's sandbox",
        ]

        # On resume (operator restart) the plan is rebuilt from the run's Secret, which
        # lacks the key: it is read again from its Secret for the registration.
        registered.unregister(uid)
        reconciler.start(created)
        again = registered.get(uid)
        assert again is not None
        assert gateway.registration_body(again)["models"]["gpt-4.1"]["apiKey"] == model_key
    finally:
        book.close()


def test_a_model_key_not_mapped_in_spec_secrets_fails_before_any_object(
    kube: ControlPlane, namespace: str, tmp_path: pathlib.Path, control_dir: pathlib.Path
) -> None:
    harness.setup_cluster(kube)
    cluster = harness.Cluster(kube)
    cluster.create(harness.run_policy(namespace))
    cluster.create(harness.secret(namespace, "creds", {"token": "t"}))
    created = cluster.create(
        harness.agent_run(
            namespace,
            "unmapped",
            agent={"config": CONFIG},
            secrets=[{"name": "API_TOKEN", "secretKeyRef": {"name": "creds", "key": "token"}}],
        )
    )
    reconciler, registered, book = _reconciler(kube, tmp_path, control_dir)
    try:
        reconciler.start(created)
    finally:
        book.close()
    run = cluster.run(namespace, "unmapped")
    assert run is not None
    completed = harness.conditions(run)["Completed"]
    assert run["status"]["phase"] == "Failed", run["status"]
    assert completed["reason"] == "SecretNotMapped"
    assert "OPENAI_API_KEY" in completed["message"]
    assert cluster.pods(namespace, created["metadata"]["uid"]) == []
    assert len(registered) == 0


def test_a_literal_model_key_goes_to_the_gateway_and_nowhere_in_the_pod(
    kube: ControlPlane,
    pod_executor: PodExecutor,
    namespace: str,
    tmp_path: pathlib.Path,
    control_dir: pathlib.Path,
) -> None:
    """A config.yaml as many users have it, key inline: it works unchanged, and the key
    is brokered like a secret (MODEL_0_API_KEY) instead of riding in the bundle."""
    harness.setup_cluster(kube)
    cluster = harness.Cluster(kube)
    literal = "sk-literal-" + secrets.token_hex(16)
    config = continue_config.text(
        name="brokered", version="0.0.1", api_key=literal, roles=None, rest=MCP_SERVERS
    )
    cluster.create(
        harness.run_policy(
            namespace,
            allowedSecrets=["API_TOKEN"],
            rules=[
                {"name": "repos", "actions": ["repository.access"],
                 "repositories": ["https://github.com/acme/*"], "effect": "Allow"},
                {"name": "keys", "actions": ["secret.read"],
                 "secrets": ["API_TOKEN"], "effect": "Allow"},
            ],
        )
    )  # fmt: skip
    cluster.create(harness.secret(namespace, "creds", {"token": "delivered-value"}))
    created = cluster.create(
        harness.agent_run(
            namespace,
            "literal",
            agent={"config": config},
            secrets=[{"name": "API_TOKEN", "secretKeyRef": {"name": "creds", "key": "token"}}],
        )
    )
    uid = created["metadata"]["uid"]
    encoded = base64.b64encode(literal.encode()).decode()
    reconciler, registered, book = _reconciler(kube, tmp_path, control_dir)
    try:
        reconciler.start(created)

        registration = registered.get(uid)
        assert registration is not None
        assert registration.secrets["MODEL_0_API_KEY"] == literal  # redacted from records
        body = gateway.registration_body(registration)
        assert body["models"]["gpt-4.1"]["apiKey"] == literal

        name = controller.object_name("literal", uid)
        run_secret = cluster.rest.get(f"/api/v1/namespaces/{namespace}/secrets/{name}")
        values = {k: base64.b64decode(v).decode() for k, v in run_secret["data"].items()}
        assert literal not in json.dumps(values)
        assert encoded not in json.dumps(run_secret)
        bundle = json.loads(values["bundle.json"])
        assert literal not in bundle["config"]
        assert "${{ secrets.MODEL_0_API_KEY }}" in bundle["config"]
        assert sorted(bundle["allowedSecrets"]) == ["API_TOKEN", "MODEL_0_API_KEY"]

        (pod,) = cluster.pods(namespace, uid)
        assert literal not in json.dumps(pod)
        assert encoded not in json.dumps(pod)

        report = harness.report(pod_executor, namespace, name, timeout=60)
        assert literal not in json.dumps(report)
        assert literal not in json.dumps([e.payload for e in book.entries(run_uid=uid)])

        # On resume the literal is taken again from the AgentRun's config.
        registered.unregister(uid)
        reconciler.start(created)
        again = registered.get(uid)
        assert again is not None
        assert gateway.registration_body(again)["models"]["gpt-4.1"]["apiKey"] == literal
    finally:
        book.close()
