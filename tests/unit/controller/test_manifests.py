"""The run's Pod, Secret and NetworkPolicy, read the way an attacker in the sandbox would."""

from __future__ import annotations

import base64
import json

import pytest
from tests.unit.controller import _builders

from continue_orchestrator import api, controller, errors, policy, runs

SECRET_VALUE = b"s3cr3t-value-that-must-not-leak"


def test_pod_is_locked_down(settings: controller.Settings) -> None:
    plan = _builders.make_plan(settings)
    pod = controller.pod(plan, settings)
    spec = pod["spec"]
    assert spec["runtimeClassName"] == "gvisor"
    assert spec["automountServiceAccountToken"] is False
    assert spec["enableServiceLinks"] is False
    assert not spec["hostNetwork"] and not spec["hostPID"] and not spec["hostIPC"]
    assert spec["restartPolicy"] == "Never"
    assert spec["activeDeadlineSeconds"] == 600
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    (container,) = spec["containers"]
    security = container["securityContext"]
    assert security["runAsNonRoot"] is True and security["runAsUser"] != 0
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["privileged"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert security["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container["image"] == settings.runner_image
    assert container["resources"]["limits"]["cpu"] and container["resources"]["limits"]["memory"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert "emptyDir" in volumes["workspace"]
    assert not any("hostPath" in v for v in spec["volumes"])
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert mounts["/var/run/continue-orchestrator"]["readOnly"] is True


def test_pod_carries_run_identity_and_owner(settings: controller.Settings) -> None:
    plan = _builders.make_plan(settings)
    meta = controller.pod(plan, settings)["metadata"]
    assert meta["labels"][controller.RUN_UID_LABEL] == _builders.UID
    assert meta["annotations"][controller.INPUTS_DIGEST_ANNOTATION] == plan.inputs_digest
    assert meta["annotations"][controller.POLICY_DIGEST_ANNOTATION] == plan.snapshot.digest
    (owner,) = meta["ownerReferences"]
    assert owner == {
        "apiVersion": api.API_VERSION,
        "kind": "AgentRun",
        "name": "fix-the-tests",
        "uid": _builders.UID,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def test_policy_names_runtime_class_and_resources(settings: controller.Settings) -> None:
    snapshot = _builders.snapshot_of(
        _builders.policy_spec(
            sandbox={
                "runtimeClassName": "kata",
                "resources": {"limits": {"cpu": "250m", "memory": "512Mi"}},
            }
        ),
        settings=settings,
    )
    pod = controller.pod(_builders.make_plan(settings, snapshot=snapshot), settings)
    assert pod["spec"]["runtimeClassName"] == "kata"
    resources = pod["spec"]["containers"][0]["resources"]
    assert resources["limits"]["cpu"] == "250m"
    assert resources["requests"]["cpu"] == "100m"  # below the limit, so kept
    assert resources["limits"]["memory"] == "512Mi"
    assert resources["requests"]["memory"] == "256Mi"


def test_requests_never_exceed_a_small_limit(settings: controller.Settings) -> None:
    snapshot = _builders.snapshot_of(
        _builders.policy_spec(sandbox={"resources": {"limits": {"cpu": "50m", "memory": "64Mi"}}}),
        settings=settings,
    )
    pod = controller.pod(_builders.make_plan(settings, snapshot=snapshot), settings)
    requests = pod["spec"]["containers"][0]["resources"]["requests"]
    assert requests == {"cpu": "50m", "memory": "64Mi"}


def test_secret_values_reach_only_the_run_secret(settings: controller.Settings) -> None:
    plan = _builders.make_plan(
        settings, secret_values={"GITHUB_TOKEN": SECRET_VALUE}, git_token=b"git-credential-xyz"
    )
    pod_text = json.dumps(controller.pod(plan, settings))
    assert SECRET_VALUE.decode() not in pod_text
    assert "git-credential-xyz" not in pod_text
    assert plan.token not in pod_text
    secret = controller.secret(plan, settings)
    data = {k: base64.b64decode(v) for k, v in secret["data"].items()}
    assert set(data) == {"token", "policy.json", "bundle.json", "secret.GITHUB_TOKEN"}
    # The forge credential is in no object of the run: the gateway's registration has it.
    assert not [key for key, value in data.items() if b"git-credential-xyz" in value]
    registration = runs.registration(plan, expires_at=0)
    assert registration.repository is not None
    assert registration.repository.token == "git-credential-xyz"
    assert data["secret.GITHUB_TOKEN"] == SECRET_VALUE
    assert secret["immutable"] is True
    bundle = json.loads(data["bundle.json"])
    assert SECRET_VALUE.decode() not in data["bundle.json"].decode()
    assert bundle["allowedSecrets"] == ["GITHUB_TOKEN"]
    assert bundle["tokenFile"].startswith("/var/run/continue-orchestrator/")
    assert data["policy.json"] == plan.snapshot.content
    # The pod clones through the gateway's git endpoint, with the run token.
    assert bundle["gitUrl"] == (
        f"{settings.effective_gateway_url}/runs/{plan.uid}/git/{runs.git_path(bundle['repository']['url'])}"
    )
    env = {item["name"] for item in controller.pod(plan, settings)["spec"]["containers"][0]["env"]}
    assert not [name for name in env if "GIT" in name]
    volume = next(
        v for v in controller.pod(plan, settings)["spec"]["volumes"] if v["name"] == "run"
    )
    paths = {item["path"] for item in volume["secret"]["items"]}
    assert paths == {"token", "policy.json", "bundle.json", "secrets/GITHUB_TOKEN"}


def test_ungranted_values_cannot_appear(settings: controller.Settings) -> None:
    plan = _builders.make_plan(settings)
    data = controller.secret(plan, settings)["data"]
    assert not [key for key in data if key.startswith("secret.")]


def test_network_policy_allows_only_the_gateway(settings: controller.Settings) -> None:
    plan = _builders.make_plan(settings)
    netpol = controller.network_policy(plan, settings)
    spec = netpol["spec"]
    assert spec["podSelector"] == {"matchLabels": {controller.RUN_UID_LABEL: _builders.UID}}
    assert spec["policyTypes"] == ["Ingress", "Egress"]
    assert spec["ingress"] == []
    (rule,) = spec["egress"]
    (peer,) = rule["to"]
    assert peer["namespaceSelector"] == {"matchLabels": {"kubernetes.io/metadata.name": "orch"}}
    assert peer["podSelector"] == {
        "matchLabels": {"app.kubernetes.io/name": "continue-orchestrator-gateway"}
    }
    assert rule["ports"] == [{"protocol": "TCP", "port": 8080}]


def test_network_policy_dns_and_ip_egress_only_when_granted(
    settings: controller.Settings,
) -> None:
    snapshot = _builders.snapshot_of(
        _builders.policy_spec(
            allowedEgress=["kube-dns.kube-system.svc:53", "10.1.2.3:5432", "pypi.org:443"]
        ),
        settings=settings,
    )
    spec = controller.network_policy(_builders.make_plan(settings, snapshot=snapshot), settings)[
        "spec"
    ]
    rendered = json.dumps(spec["egress"])
    assert '"port": 53' in rendered
    assert {"ipBlock": {"cidr": "10.1.2.3/32"}} in [
        peer for r in spec["egress"] for peer in r["to"]
    ]
    assert "pypi.org" not in rendered  # names go through the gateway, never a wide-open rule
    assert "0.0.0.0/0" not in rendered


def test_a_baseline_that_lists_egress_is_a_ceiling(settings: controller.Settings) -> None:
    snapshot = _builders.snapshot_of(
        _builders.policy_spec(allowedEgress=["kube-dns:53"]),
        _builders.policy_spec(allowedEgress=["10.1.2.3:5432", "kube-dns:53"]),
        settings=settings,
    )
    assert snapshot.allowed_egress == ("kube-dns:53",)
    spec = controller.network_policy(_builders.make_plan(settings, snapshot=snapshot), settings)[
        "spec"
    ]
    assert "10.1.2.3" not in json.dumps(spec["egress"])


def test_a_baseline_that_lists_no_egress_sets_no_ceiling(settings: controller.Settings) -> None:
    """As the policy engine decides network.egress (docs/policy.md): a ClusterRunPolicy's
    allowedEgress is a ceiling only when set; the RunPolicy's own list still rules."""
    snapshot = _builders.snapshot_of(
        _builders.policy_spec(allowedEgress=[]),
        _builders.policy_spec(allowedEgress=["10.1.2.3:5432", "api.openai.com:443"]),
        settings=settings,
    )
    assert snapshot.allowed_egress == ("10.1.2.3:5432", "api.openai.com:443")
    closed = _builders.snapshot_of(
        _builders.policy_spec(allowedEgress=[]), _builders.policy_spec(), settings=settings
    )
    assert closed.allowed_egress == ()


def test_snapshot_is_a_function_of_its_content(settings: controller.Settings) -> None:
    first = _builders.snapshot_of(
        _builders.policy_spec(sandbox={"maxTimeoutSeconds": 900}),
        _builders.policy_spec(sandbox={"maxTimeoutSeconds": 3600}),
        settings=settings,
    )
    again = runs.snapshot(first.content, runtime_class=settings.runtime_class)
    assert again == first
    assert first.max_timeout_seconds == 900
    assert first.digest.startswith("sha256:") and len(first.sources) == 2


def test_inputs_digest_covers_every_input(settings: controller.Settings) -> None:
    base = _builders.make_plan(settings)
    run, snapshot = base.run, base.snapshot
    digest = runs.inputs_digest(
        run,
        config=base.config,
        snapshot=snapshot,
        runner_image=settings.runner_image,
        runner_command=settings.runner_command,
    )
    assert digest == base.inputs_digest

    def other(**kwargs: object) -> str:
        values: dict[str, object] = {
            "config": base.config,
            "snapshot": snapshot,
            "settings": settings,
            **kwargs,
        }
        chosen: controller.Settings = values["settings"]  # type: ignore[assignment]
        return runs.inputs_digest(
            kwargs.get("run", run),  # type: ignore[arg-type]
            config=values["config"],  # type: ignore[arg-type]
            snapshot=values["snapshot"],  # type: ignore[arg-type]
            runner_image=chosen.runner_image,
            runner_command=chosen.runner_command,
        )

    assert other(config=base.config + "# changed\n") != digest
    assert other(run=_builders.agent_run(prompt="something else")) != digest
    assert (
        other(
            snapshot=_builders.snapshot_of(
                _builders.policy_spec(defaultEffect="Allow"), settings=settings
            )
        )
        != digest
    )
    assert (
        other(
            settings=_builders.make_settings(
                runner_image="registry.example/runner@sha256:" + "b" * 64
            )
        )
        != digest
    )
    assert other(run=_builders.agent_run(cancel=True)) == digest


@pytest.mark.parametrize(
    "name",
    ["fix-the-tests", "a" * 253, "x.y.z", "UPPER-ish", "-"],
)
def test_object_names_are_deterministic_dns_labels(name: str) -> None:
    made = controller.object_name(name, _builders.UID)
    assert made == controller.object_name(name, _builders.UID)
    assert len(made) <= 63
    assert api.field_path(()) and made.replace("-", "").isalnum()
    assert made[0].isalnum() and made[-1].isalnum() and made == made.lower()
    assert controller.object_name(name, "ffffffff-" + _builders.UID[9:]) != made


def test_settings_refuse_unpinned_runner_image() -> None:
    with pytest.raises(errors.OrchestratorError, match="not pinned by digest"):
        _builders.make_settings(runner_image="registry.example/runner:latest")
    assert (
        _builders.make_settings(
            runner_image="runner:dev", allow_unpinned_runner_image=True
        ).runner_image
        == "runner:dev"
    )
    with pytest.raises(errors.OrchestratorError, match="no ledger"):
        _builders.make_settings(ledger_url="")


def test_snapshot_digest_is_the_policy_sets_digest(settings: controller.Settings) -> None:
    snapshot = _builders.snapshot_of(
        _builders.policy_spec(allowedEgress=["10.0.0.1:443"]),
        _builders.policy_spec(allowedSecrets=["A"]),
        settings=settings,
    )
    compiled = policy.compile(policy.snapshot_sources(snapshot.content))
    assert compiled.digest == snapshot.digest
