"""Smoke tests of the real local control plane and of the pod executor.

They prove the project's CRDs work on a real kube-apiserver (schema and CEL
validation, `kubectl explain`, RBAC with impersonation) and that pods run to a
terminal phase with their exit codes, so the operator's tests can rely on both.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests.kube import ControlPlane, KubectlError, PodExecutor

pytestmark = pytest.mark.cluster

ROOT = Path(__file__).resolve().parents[2]
CRD_FILES = sorted((ROOT / "crds").glob("*.yaml"))


def _crds() -> list[dict[str, Any]]:
    return [yaml.safe_load(p.read_text()) for p in CRD_FILES]


def _crd(kind: str) -> dict[str, Any]:
    return next(c for c in _crds() if c["spec"]["names"]["kind"] == kind)


def _schema(kind: str) -> dict[str, Any]:
    version = next(v for v in _crd(kind)["spec"]["versions"] if v.get("storage"))
    schema: dict[str, Any] = version["schema"]["openAPIV3Schema"]
    return schema


def _example(name: str, namespace: str) -> dict[str, Any]:
    manifest: dict[str, Any] = yaml.safe_load((ROOT / "examples" / name).read_text())
    manifest["metadata"]["namespace"] = namespace
    return manifest


def _create(kube: ControlPlane, manifest: dict[str, Any], **kw: Any) -> str:
    return kube.kubectl("create", "-f", "-", input=yaml.safe_dump(manifest), **kw).stdout


@pytest.fixture(scope="module")
def crds(kube: ControlPlane) -> list[str]:
    assert CRD_FILES, f"no CRDs in {ROOT / 'crds'}"
    kube.apply(*CRD_FILES)
    names = [c["metadata"]["name"] for c in _crds()]
    kube.wait_established(names)
    return names


def test_crds_become_established(kube: ControlPlane, crds: list[str]) -> None:
    out = kube.kubectl("get", "crd", *crds, "-o",
                       "jsonpath={range .items[*]}{.metadata.name}={.status.conditions[?(@.type=="
                       "'Established')].status}{'\\n'}{end}").stdout
    assert sorted(out.split()) == sorted(f"{n}=True" for n in crds)


def test_kubectl_explain_shows_descriptions(kube: ControlPlane, crds: list[str]) -> None:
    spec = _schema("AgentRun")["properties"]["spec"]
    wanted = [spec["description"].split("\n")[0]]
    wanted += [p["description"].split("\n")[0] for p in spec["properties"].values()
               if "description" in p][:3]
    deadline = time.monotonic() + 30  # the OpenAPI for new CRDs is published asynchronously
    while True:
        result = kube.kubectl("explain", "agentrun.spec", check=False)
        if result.returncode == 0 and all(w[:60] in result.stdout for w in wanted):
            break
        assert time.monotonic() < deadline, result.stdout + result.stderr
        time.sleep(0.5)
    assert "FIELDS:" in result.stdout


def test_schema_violation_is_rejected_by_the_server(
    kube: ControlPlane, crds: list[str], namespace: str
) -> None:
    run = _example("agentrun.yaml", namespace)
    del run["spec"]["repository"]["url"]
    with pytest.raises(KubectlError) as err:
        _create(kube, run)
    assert "spec.repository.url: Required value" in err.value.stderr


def test_cel_rule_violation_is_rejected_with_its_message(
    kube: ControlPlane, crds: list[str], namespace: str
) -> None:
    agent = _schema("AgentRun")["properties"]["spec"]["properties"]["agent"]
    message = agent["x-kubernetes-validations"][0]["message"]
    run = _example("agentrun.yaml", namespace)
    run["spec"]["agent"]["config"] = "models: []\n"  # and configMapKeyRef: both set
    with pytest.raises(KubectlError) as err:
        _create(kube, run)
    assert message in err.value.stderr

    policy = _example("runpolicy.yaml", namespace)
    rule = _schema("RunPolicy")["properties"]["spec"]["x-kubernetes-validations"][0]
    assert "RequireApproval" in rule["rule"]
    del policy["spec"]["approvers"]
    with pytest.raises(KubectlError) as err:
        _create(kube, policy)
    assert " ".join(rule["message"].split()) in " ".join(err.value.stderr.split())


def test_member_may_create_agentruns_but_not_runpolicies(
    kube: ControlPlane, crds: list[str], namespace: str
) -> None:
    member = {
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": {"name": f"member-{namespace}"},
        "rules": [{"apiGroups": ["orchestrator.continue.dev"], "resources": ["agentruns"],
                   "verbs": ["create", "get", "list"]}],
    }
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": "alice-member", "namespace": namespace},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                    "name": member["metadata"]["name"]},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "alice"}],
    }
    _create(kube, member)
    _create(kube, binding)
    try:
        deadline = time.monotonic() + 30  # the authorizer reads bindings from a cache
        while kube.kubectl("auth", "can-i", "create", "agentruns", "-n", namespace,
                           as_user="alice", check=False).stdout.strip() != "yes":
            assert time.monotonic() < deadline, "alice's RoleBinding not in force after 30 s"
            time.sleep(0.2)
        with pytest.raises(KubectlError) as err:
            _create(kube, _example("runpolicy.yaml", namespace), as_user="alice")
        assert "Forbidden" in err.value.stderr or "forbidden" in err.value.stderr
        assert 'User "alice" cannot create resource "runpolicies"' in err.value.stderr
        out = _create(kube, _example("agentrun.yaml", namespace), as_user="alice")
        assert "created" in out
        assert kube.kubectl("auth", "can-i", "create", "runpolicies", "-n", namespace,
                            as_user="alice", check=False).stdout.strip() == "no"
    finally:
        kube.kubectl("delete", "clusterrole", member["metadata"]["name"], check=False)


def _pod(name: str, command: list[str], **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
        "spec": {"restartPolicy": "Never",
                 "containers": [{"name": "main", "image": "busybox", "command": command}],
                 **spec},
    }


def _terminated(pod: dict[str, Any]) -> dict[str, Any]:
    state: dict[str, Any] = pod["status"]["containerStatuses"][0]["state"]["terminated"]
    return state


def _run(kube: ControlPlane, ex: PodExecutor, ns: str, pod: dict[str, Any]) -> dict[str, Any]:
    kube.kubectl("-n", ns, "create", "-f", "-", input=yaml.safe_dump(pod))
    return ex.wait_for_phase(ns, pod["metadata"]["name"], timeout=60)


def test_pod_runs_to_succeeded(kube: ControlPlane, pod_executor: PodExecutor,
                               namespace: str) -> None:
    pod = _run(kube, pod_executor, namespace,
               _pod("hello", ["python3", "-c", "print('hello from a pod')"]))
    assert pod["status"]["phase"] == "Succeeded"
    assert pod["spec"]["nodeName"] == pod_executor.node_name
    assert _terminated(pod)["exitCode"] == 0
    assert "hello from a pod" in pod_executor.logs(namespace, "hello")
    out = kube.kubectl("-n", namespace, "get", "pod", "hello", "-o",
                       "jsonpath={.status.phase}").stdout
    assert out == "Succeeded"


def test_pod_exit_code_3_fails(kube: ControlPlane, pod_executor: PodExecutor,
                               namespace: str) -> None:
    pod = _run(kube, pod_executor, namespace, _pod("three", ["sh", "-c", "exit 3"]))
    assert pod["status"]["phase"] == "Failed"
    assert _terminated(pod)["exitCode"] == 3
    assert _terminated(pod)["reason"] == "Error"


def test_pod_env_volumes_and_working_dir(kube: ControlPlane, pod_executor: PodExecutor,
                                         namespace: str) -> None:
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"},
              "stringData": {"token": "s3cret"}}
    config = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"},
              "data": {"greeting": "hi", "config.yaml": "models: []\n"}}
    for obj in (secret, config):
        kube.kubectl("-n", namespace, "create", "-f", "-", input=yaml.safe_dump(obj))
    # ${PODEXEC_ROOT} is empty under runsc (real mount paths) and the pod's root
    # directory for plain processes: the same command works under both.
    script = (
        'set -e; R="${PODEXEC_ROOT}"; '
        'echo "token=$TOKEN greeting=$CFG_greeting name=$POD_NAME x=$X"; '
        'cat "$R/etc/cfg/config.yaml"; cat "$R/etc/sec/token"; echo; pwd; '
        'echo scratch > "$R/scratch/f"; cat "$R/scratch/f"; '
        'test -s "$R/var/run/secrets/kubernetes.io/serviceaccount/token" && echo sa-token'
    )
    pod = _pod("env", ["sh", "-c", script], volumes=[
        {"name": "cfg", "configMap": {"name": "c"}},
        {"name": "sec", "secret": {"secretName": "s"}},
        {"name": "scratch", "emptyDir": {}},
    ])
    main = pod["spec"]["containers"][0]
    main["workingDir"] = "/etc/cfg"
    main["env"] = [
        {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "s", "key": "token"}}},
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "X", "value": "$(POD_NAME)-x"},
    ]
    main["envFrom"] = [{"configMapRef": {"name": "c"}, "prefix": "CFG_"}]
    main["volumeMounts"] = [{"name": "cfg", "mountPath": "/etc/cfg"},
                            {"name": "sec", "mountPath": "/etc/sec", "readOnly": True},
                            {"name": "scratch", "mountPath": "/scratch"}]
    done = _run(kube, pod_executor, namespace, pod)
    logs = pod_executor.logs(namespace, "env")
    assert done["status"]["phase"] == "Succeeded", logs
    assert "token=s3cret greeting=hi name=env x=env-x" in logs
    assert "models: []" in logs and "s3cret" in logs and "scratch" in logs
    assert logs.splitlines()[3].endswith("/etc/cfg")
    assert "sa-token" in logs


def test_pod_active_deadline_and_deletion(kube: ControlPlane, pod_executor: PodExecutor,
                                          namespace: str) -> None:
    slow = _pod("slow", ["sleep", "300"], activeDeadlineSeconds=2)
    pod = _run(kube, pod_executor, namespace, slow)
    assert pod["status"]["phase"] == "Failed"
    assert pod["status"]["reason"] == "DeadlineExceeded"

    kube.kubectl("-n", namespace, "create", "-f", "-",
                 input=yaml.safe_dump(_pod("doomed", ["sleep", "300"])))
    pod_executor.wait_for_phase(namespace, "doomed", phases=["Running"])
    kube.kubectl("-n", namespace, "delete", "pod", "doomed", "--wait=true", "--timeout=30s")
    assert kube.kubectl("-n", namespace, "get", "pod", "doomed", "--ignore-not-found",
                        "-o", "name").stdout == ""

