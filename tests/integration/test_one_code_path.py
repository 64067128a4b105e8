"""One code path: the demo's AgentRun run by the operator on the local control plane and by
``orchestrator run`` makes the same tool calls, gets the same decisions and the same diff,
and the two runs' attestations state the same facts, field by field, but for those that
name where and when a run ran (``PER_ENVIRONMENT``).

The operator side is the real ``controller.Reconciler`` against the real kube-apiserver:
it validates the run, writes the Secret (token, policy snapshot, bundle), the
NetworkPolicy and the Pod, whose command is the same ``python -m
continue_orchestrator.runner``; the pod executor runs it in gVisor as the kubelet would.
The reconciler registers the run through the gateway's real admin API
(``gateway.BlockingClient``); as with ``--model-script``, the scripted model stands in
for the config's provider. The gateway and the operator share one ledger, as they share
one database in a cluster, and the operator's attestor reads the gateway's record store
(``orchestrator operator --record-root``).

Host set-up this needs, as a runner image would provide: the pinned Continue CLI at the
bundle's default ``/opt/continue`` (copied from the cache, since the pod runs as a
non-root user that cannot read /root), and the demo origin in /var/tmp.
"""

from __future__ import annotations

import os
import pathlib
import re
import time
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from cryptography.hazmat.primitives.asymmetric import ec
from tests.integration import demo_cluster
from tests.integration.operator import harness
from tests.kube import ControlPlane, PodExecutor

from continue_orchestrator import attest, controller, ledger, local, runs

pytestmark = [
    pytest.mark.cluster,
    pytest.mark.sandbox,
    pytest.mark.cli,
    pytest.mark.skipif(os.geteuid() != 0, reason="gVisor pods and the local sandbox need root"),
]

ROOT = demo_cluster.ROOT
DEMO = demo_cluster.DEMO
KEY = demo_cluster.KEY
RUNNER_COMMAND = demo_cluster.RUNNER_COMMAND


@pytest.fixture(scope="module")
def host_ready() -> str:
    return demo_cluster.prepare_host()


def _calls(entries: list[ledger.Entry]) -> list[tuple[str, Any, str]]:
    return [
        (e.payload["tool"], e.payload["arguments"], e.payload["effect"])
        for e in entries
        if e.kind is ledger.Kind.POLICY_DECISION and e.payload and "tool" in e.payload
    ]


@pytest.fixture
def demo_baseline(kube: ControlPlane) -> Iterator[None]:
    with demo_cluster.demo_baseline(kube):
        yield


@pytest.fixture
def gateway_thread(tmp_path: pathlib.Path) -> Iterator[demo_cluster.GatewayThread]:
    started = demo_cluster.GatewayThread(tmp_path)
    try:
        yield started
    finally:
        started.stop()


def test_operator_and_orchestrator_run_take_the_same_path(
    kube: ControlPlane,
    pod_executor: PodExecutor,
    namespace: str,
    host_ready: str,
    demo_baseline: None,
    gateway_thread: demo_cluster.GatewayThread,
    tmp_path: pathlib.Path,
) -> None:
    # orchestrator run, as make demo runs it.
    os.environ["DEMO_KEY_FOR_TEST"] = KEY
    inputs = local.load(
        DEMO / "agentrun.yaml",
        config_maps=[f"demo-agent={DEMO / 'continue' / 'config.yaml'}"],
        secrets=["OPENAI_API_KEY=env:DEMO_KEY_FOR_TEST"],
    )
    local_report = local.run(
        inputs,
        local.Options(state_dir=tmp_path / "local", model_script=DEMO / "model-script.yaml",
                      approvals="approve"),
        say=lambda line: None,
    )  # fmt: skip
    assert local_report.phase == "Succeeded"
    with ledger.open(f"sqlite:///{tmp_path / 'local' / 'ledger.db'}") as book:
        local_calls = _calls(list(book.entries(run_uid=local_report.uid)))

    # The operator, with the same manifests in a namespace of the control plane.
    cluster = harness.Cluster(kube)
    documents = {
        name: yaml.safe_load((DEMO / name).read_text())
        for name in ("agentrun.yaml", "runpolicy.yaml")
    }
    for document in documents.values():
        document["metadata"]["namespace"] = namespace
    cluster.create(documents["runpolicy.yaml"])
    cluster.create(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "demo-agent", "namespace": namespace},
            "data": {"config.yaml": (DEMO / "continue" / "config.yaml").read_text()},
        }
    )
    cluster.create(harness.secret(namespace, "demo-openai", {"api-key": KEY}))
    created = cluster.create(documents["agentrun.yaml"])

    settings = controller.Settings(
        runner_image=harness.IMAGE, ledger_url=gateway_thread.ledger_url,
        runner_command=RUNNER_COMMAND,
        gateway_url=gateway_thread.url, operator_namespace="orchestrator-system",
    ).validate()  # fmt: skip
    client = controller.Kube(kube.api_client())
    signer = attest.KeySigner(ec.generate_private_key(ec.SECP256R1()))
    attestor = controller.Attestor(
        client, gateway_thread.book, signer, builder_id="https://example.test/one-code-path",
        evidence=runs.evidence_from_records(gateway_thread.records),
    )  # fmt: skip
    reconciler = controller.Reconciler(
        client, gateway_thread.book, gateway_thread, settings, attestor
    )
    reconciler.start(created)
    name = created["metadata"]["name"]
    deadline = time.monotonic() + 300
    phase = ""
    while time.monotonic() < deadline:
        gateway_thread.approve_pending(created["metadata"]["uid"])
        current = cluster.run(namespace, name)
        assert current is not None
        reconciler.resync(current)
        phase = (current.get("status") or {}).get("phase", "")
        if phase in harness.TERMINAL:
            break
        time.sleep(1)
    uid = created["metadata"]["uid"]
    pod = controller.object_name(name, uid)
    logs = pod_executor.logs(namespace, pod)
    assert phase == "Succeeded", f"{phase}: {current.get('status')}\n{logs}"
    operator_calls = _calls(list(gateway_thread.book.entries(run_uid=uid)))
    outcome = gateway_thread.outcome(uid)
    operator_predicate = _operator_predicate(cluster, client, namespace, name, signer)
    local_predicate = _local_predicate(local_report)

    assert len(local_calls) == 8 and {c[2] for c in local_calls} == {
        "Allow", "Deny", "RequireApproval",
    }  # fmt: skip
    assert operator_calls == local_calls
    assert outcome is not None
    assert outcome["diff"]["digest"] == local_report.diff_digest
    assert [f["path"] for f in outcome["diff"]["files"]] == [
        f.path for f in local_report.diff_files
    ]
    # The two attestations state the same facts, but for where and when each run ran.
    assert local_predicate["outcome"] == "succeeded"
    assert _differences(local_predicate, operator_predicate) == []


# Predicate fields that say where and when a run ran, not what it did: left out of the
# comparison, each with why the two runs differ there. Everything else must be equal.
PER_ENVIRONMENT = {
    "run.namespace": "the manifest's namespace locally, the test's namespace in the cluster",
    "run.uid": "each run has its own",
    "recordDigest": "the record holds the run's uid, token and times",
    "ledger": "two ledgers: other sequence numbers, another Merkle root",
    "policyDigest": "the snapshot names each policy's namespace (and the cluster's baselines)",
    "inputs.inputs": "the inputs digest covers the runner image and command, and the policy",
    "runnerImage": "the package source plays it locally, the harness's image in the cluster",
    "workspaceTreeDigest": "the agent runs the tests: the __pycache__/*.pyc it leaves hold the "
    "clone's mtime in their header (the same files, modes and sources; only those bytes differ)",
    "startedAt": "when each ran",
    "finishedAt": "when each ran",
    "builderId": "who attested: orchestrator run on this host, or the operator",
    "interventions[].actor": "who approved: --approve-all locally, the test in the cluster",
    "interventions[].at": "when it was approved",
    "interventions[].reason": "what the approver said",
    "verifyResults[].durationSeconds": "how long the verify command took",
}


def _flat(value: Any, path: str = "") -> dict[str, Any]:
    """``value`` as path -> leaf (``a.b``, ``a[0].b``); an empty dict or list is a leaf."""
    if isinstance(value, dict) and value:
        out: dict[str, Any] = {}
        for key, item in value.items():
            out.update(_flat(item, f"{path}.{key}" if path else key))
        return out
    if isinstance(value, list) and value:
        out = {}
        for index, item in enumerate(value):
            out.update(_flat(item, f"{path}[{index}]"))
        return out
    return {path: value}


def _per_environment(path: str) -> bool:
    general = re.sub(r"\[\d+\]", "[]", path)
    return any(general == key or general.startswith(f"{key}.") for key in PER_ENVIRONMENT)


def _differences(local_predicate: dict[str, Any], operator_predicate: dict[str, Any]) -> list[str]:
    """Every predicate field, other than ``PER_ENVIRONMENT``'s, that the two do not share."""
    mine, theirs = _flat(local_predicate), _flat(operator_predicate)
    missing = object()
    return [
        f"{path}: local {mine.get(path, missing)!r}, operator {theirs.get(path, missing)!r}"
        for path in sorted({*mine, *theirs})
        if not _per_environment(path) and mine.get(path, missing) != theirs.get(path, missing)
    ]


def _local_predicate(report: local.Report) -> dict[str, Any]:
    """The predicate of ``orchestrator run``'s attestation, verified with its development key."""
    summary = report.attestation
    assert summary is not None and summary.signed and summary.verified, summary
    assert summary.location is not None
    statement = attest.verify_bundle(
        pathlib.Path(summary.location).read_bytes(),
        public_key=pathlib.Path(summary.public_key).read_bytes(),
    )
    return statement.predicate


def _operator_predicate(
    cluster: harness.Cluster,
    client: controller.Kube,
    namespace: str,
    name: str,
    signer: attest.KeySigner,
) -> dict[str, Any]:
    """The predicate of the operator's attestation, once status.attestation says it is
    signed, fetched from its ConfigMap and verified with the operator's key."""
    deadline = time.monotonic() + 60
    stored: dict[str, Any] = {}
    while time.monotonic() < deadline:
        run = cluster.run(namespace, name) or {}
        stored = (run.get("status") or {}).get("attestation") or {}
        if stored.get("signed") in ("true", "failed"):
            break
        time.sleep(0.2)
    assert stored.get("signed") == "true", stored
    bundle = controller.fetch_bundle(client, str(stored["location"]))
    return attest.verify_bundle(bundle, public_key=signer.public_key_pem()).predicate
