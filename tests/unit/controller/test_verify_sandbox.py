"""The fresh sandbox that verifies a publication, as the operator builds it: read the way
an attacker who controls the agent's patch would look for a way out of it."""

from __future__ import annotations

import base64
import json

import pytest
from tests.unit.controller import _builders

from continue_orchestrator import controller, errors, gateway, runs

PATCH = b"diff --git a/src/x.py b/src/x.py\n"
SECRET_VALUE = b"s3cr3t-value-that-must-not-leak"


def _fresh(settings: controller.Settings) -> tuple[runs.Plan, runs.Plan]:
    plan = _builders.make_plan(
        settings,
        secret_values={"GRANTED": SECRET_VALUE},
        git_token=b"forge-token-for-the-gateway-only",
    )
    return plan, runs.verify_plan(plan, name=f"{plan.name}-verify")


def test_the_verify_sandbox_has_its_own_gateway_id_and_no_agent_model_or_secret(
    settings: controller.Settings,
) -> None:
    plan, fresh = _fresh(settings)
    registration = runs.registration(fresh, expires_at=1e12)
    assert registration.uid == f"{plan.uid}{runs.VERIFY_SUFFIX}" != plan.uid
    assert len(registration.token) == 64 and registration.token != plan.token
    # The same on every attempt (a restarted operator adopts the Secret), and not the run's.
    assert runs.verify_plan(plan, name="other").token == registration.token
    assert registration.agent is False and registration.secrets == {}
    assert registration.config == runs.VERIFY_CONFIG
    # The gateway fetches the repository with the forge credential; the pod never sees it.
    assert registration.repository is not None
    assert registration.repository.token == "forge-token-for-the-gateway-only"
    body = gateway.registration_body(registration)
    assert body["agent"] is False and body["models"] == {} and body["secrets"] == {}
    assert gateway.parse_registration(body).uid == registration.uid


def test_the_gateway_refuses_a_model_for_a_sandbox_without_an_agent(
    settings: controller.Settings,
) -> None:
    _plan, fresh = _fresh(settings)
    body = gateway.registration_body(runs.registration(fresh, expires_at=1e12))
    body["models"] = {"m": {"apiBase": "http://127.0.0.1:9/v1", "apiKey": "k" * 16}}
    with pytest.raises(errors.GatewayError) as refused:
        gateway.parse_registration(body)
    assert "no agent, no model" in refused.value.message
    agent = {**body, "agent": True, "models": {}}
    with pytest.raises(errors.GatewayError) as empty:
        gateway.parse_registration(agent)
    assert "non-empty object of models" in empty.value.message


def test_the_verify_pod_runs_the_runner_on_the_patch_under_the_runs_network_policy(
    settings: controller.Settings,
) -> None:
    plan, fresh = _fresh(settings)
    pod = controller.pod(fresh, settings, verify=True)
    (container,) = pod["spec"]["containers"]
    assert container["args"] == ["--verify-only", "--patch", f"{runs.RUN_DIR}/patch"]
    assert pod["metadata"]["name"] == f"{plan.name}-verify"
    # The run's NetworkPolicy selects it (the run's uid label): its only peer is the gateway.
    policy = controller.network_policy(plan, settings)
    labels = pod["metadata"]["labels"]
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= labels.items()
    assert pod["metadata"]["ownerReferences"] == [plan.owner]
    (run_volume,) = [v for v in pod["spec"]["volumes"] if v["name"] == "run"]
    keys = [item["key"] for item in run_volume["secret"]["items"]]
    assert keys == ["token", "policy.json", "bundle.json", "patch"]
    assert not [k for k in keys if k.startswith("secret.")]
    secret = controller.secret(fresh, settings, patch=PATCH)
    data = {k: base64.b64decode(v) for k, v in secret["data"].items()}
    assert data["patch"] == PATCH and data["token"] == fresh.token.encode()
    assert SECRET_VALUE not in b"".join(data.values())
    assert b"forge-token-for-the-gateway-only" not in b"".join(data.values())
    bundle = json.loads(data["bundle.json"])
    assert bundle["run"] == fresh.run_id
    assert bundle["gitUrl"].endswith(f"/runs/{fresh.run_id}/git/acme/widgets.git")
    assert bundle["allowedSecrets"] == []
    # The agent's own pod is unchanged: no args, no patch.
    agent_pod = controller.pod(plan, settings)
    assert "args" not in agent_pod["spec"]["containers"][0]
