"""Builders for controller tests: a run, a policy snapshot and a plan, without a cluster."""

from __future__ import annotations

from typing import Any

from continue_orchestrator import api, controller, policy, runs

IMAGE = "registry.example/runner@sha256:" + "a" * 64
UID = "0b6f3f7e-1111-4222-8333-944445555666"


def agent_run(**spec: Any) -> api.AgentRun:
    document = {
        "apiVersion": api.API_VERSION,
        "kind": "AgentRun",
        "metadata": {"name": "fix-the-tests", "namespace": "team-a", "uid": UID},
        "spec": {
            "agent": {"config": "name: a\nversion: 0.0.1\nschema: v1\nmodels: []\n"},
            "prompt": "fix the failing test",
            "repository": {"url": "https://github.com/acme/widgets"},
            "policyRef": {"name": "default"},
            "timeoutSeconds": 600,
            **spec,
        },
    }
    resource = api.parse(document)
    assert isinstance(resource, api.AgentRun)
    return resource


def policy_spec(**spec: Any) -> dict[str, Any]:
    return {"rules": [], "defaultEffect": "Deny", **spec}


def snapshot_of(*specs: dict[str, Any], settings: controller.Settings) -> runs.Snapshot:
    sources: list[api.ClusterRunPolicy | api.RunPolicy] = []
    for index, spec in enumerate(specs):
        last = index == len(specs) - 1
        resource = api.parse(
            {
                "apiVersion": api.API_VERSION,
                "kind": "RunPolicy" if last else "ClusterRunPolicy",
                "metadata": {"name": "default" if last else f"baseline-{index}"}
                | ({"namespace": "team-a"} if last else {}),
                "spec": spec,
            }
        )
        assert isinstance(resource, api.RunPolicy | api.ClusterRunPolicy)
        sources.append(resource)
    return runs.snapshot(policy.snapshot_content(sources), runtime_class=settings.runtime_class)


def make_settings(**overrides: Any) -> controller.Settings:
    values: dict[str, Any] = {
        "runner_image": IMAGE,
        "ledger_url": "sqlite:///unused.db",
        "operator_namespace": "orch",
        **overrides,
    }
    return controller.Settings(**values).validate()


def make_plan(
    settings: controller.Settings,
    run: api.AgentRun | None = None,
    snapshot: runs.Snapshot | None = None,
    secret_values: dict[str, bytes] | None = None,
    git_token: bytes | None = None,
) -> runs.Plan:
    run = run or agent_run()
    snapshot = snapshot or snapshot_of(policy_spec(), settings=settings)
    config = run.spec.agent.config or ""
    return runs.Plan(
        run=run,
        uid=UID,
        namespace="team-a",
        name=controller.object_name(str(run.metadata.name), UID),
        snapshot=snapshot,
        config=config,
        secret_values=secret_values or {},
        git_token=git_token,
        inputs_digest=runs.inputs_digest(
            run,
            config=config,
            snapshot=snapshot,
            runner_image=settings.runner_image,
            runner_command=settings.runner_command,
        ),
        token="t0k3n-" + "x" * 40,
    )
