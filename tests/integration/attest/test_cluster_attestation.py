"""Attestations published in a real cluster, with a status that never lies.

A finished AgentRun is attested by ``controller.Attestor``: the bundle lands in an
immutable ConfigMap, ``status.attestation`` says ``signed: "true"`` with its digest,
``orchestrator attestation get`` fetches it and ``orchestrator verify --key`` accepts it.
When the store refuses (the operator's identity lacks RBAC on ConfigMaps) or the facts
cannot be attested, the status says ``failed`` with the reason and never ``true``.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterator
from typing import Any

import kubernetes
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from tests.integration import cluster_support as support
from tests.kube import ControlPlane
from tests.kube.rest import ApiError

from continue_orchestrator import api, attest, cli, controller, ledger, records, runner, runs

pytestmark = pytest.mark.cluster
DIFF = hashlib.sha256(b"diff --git a/src/x.py b/src/x.py").hexdigest()


def _recorded_evidence(root: Any, tree: str) -> runs.EvidenceSource:
    """Evidence read by ``evidence_from_records`` from a record holding, per run, one model
    exchange as the gateway notes it and the runner's outcome with its measurements."""
    store = records.BlobStore(root)
    read = runs.evidence_from_records(root)

    def evidence(uid: str) -> runs.Evidence | None:
        record = records.RunRecord(store, uid)
        if not record.exchanges:
            record.append("model", facts={"model": "claude-test", "provider": "anthropic"})
            outcome = runner.Outcome(
                run=uid, status=runner.Status.SUCCEEDED, exit_code=0,
                diff=runner.DiffReport(base="0" * 40, files=[], digest=f"sha256:{DIFF}",
                                       size=1, truncated=False, patch_base64=""),
                workspace_tree_digest=tree, cli_version="1.5.47",
                started_at="2026-11-23T10:00:00Z", finished_at="2026-11-23T10:09:00Z",
            ).wire()  # fmt: skip
            blob = store.put(json.dumps(outcome).encode())
            record.append("run.outcome", blobs={"outcome": blob})
            record.seal()
        return read(uid)

    return evidence


@pytest.fixture(scope="module")
def setup(kube: ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    support.install(kube)
    namespace = support.new_namespace(kube, "attest")
    work = tmp_path_factory.mktemp("attest")
    signer = attest.KeySigner(ec.generate_private_key(ec.SECP256R1()))
    public = work / "cosign.pub"
    public.write_bytes(signer.public_key_pem())
    # An operator identity that may write AgentRun status but not ConfigMaps.
    limited = support.user_kubeconfig(kube, work, "limited-operator", ())
    support.grant(
        kube,
        namespace,
        "limited-operator",
        [
            {"apiGroups": [api.GROUP], "resources": ["agentruns"], "verbs": ["get"]},
            {"apiGroups": [api.GROUP], "resources": ["agentruns/status"], "verbs": ["patch"]},
        ],
        [support.user("limited-operator")],
    )
    book = ledger.open(f"sqlite:///{work / 'ledger.db'}")
    workspace = work / "workspace"
    (workspace / "src").mkdir(parents=True)
    (workspace / "src" / "x.py").write_text("ANSWER = 42\n")
    yield {
        "tree": runner.tree_digest(workspace),
        "namespace": namespace,
        "work": work,
        "signer": signer,
        "public": public,
        "limited": limited,
        "book": book,
    }
    book.close()
    kube.delete_namespace(namespace)


def _finished_run(
    kube: ControlPlane, book: ledger.Ledger, namespace: str, name: str, **status: Any
) -> dict[str, Any]:
    created = support.create_run(kube, namespace, name)
    uid = str(created["metadata"]["uid"])
    actor = "system:serviceaccount:continue-orchestrator:operator"
    book.append(uid, ledger.Kind.RUN_CREATED, actor, {"name": name, "namespace": namespace})
    book.append(uid, ledger.Kind.POLICY_DECISION, "gateway",
                {"callId": "c1", "tool": "Read", "effect": "Allow"})  # fmt: skip
    book.append(uid, ledger.Kind.TOOL_CALL, "gateway", {"callId": "c1", "tool": "Read"})
    book.append(uid, ledger.Kind.POLICY_DECISION, "gateway",
                {"callId": "c2", "tool": "Bash", "effect": "RequireApproval"})  # fmt: skip
    book.append(uid, ledger.Kind.APPROVAL_GRANTED, "alice",
                {"callId": "c2", "tool": "Bash", "by": "alice", "reason": "ok"})  # fmt: skip
    book.append(uid, ledger.Kind.TOOL_CALL, "gateway", {"callId": "c2", "tool": "Bash"})
    book.append(uid, ledger.Kind.POLICY_DECISION, "gateway",
                {"callId": "c3", "tool": "Write", "effect": "Deny"})  # fmt: skip
    book.append(uid, ledger.Kind.RUN_FINISHED, actor, {"phase": "Succeeded"})
    values = {
        "phase": "Succeeded",
        "inputsDigest": "sha256:" + "3" * 64,
        "policyDigest": "sha256:" + "4" * 64,
        "runnerImage": support.PINNED_IMAGE,
        "startTime": "2026-11-23T10:00:00Z",
        "completionTime": "2026-11-23T10:09:30Z",
        "record": {"digest": "sha256:" + "5" * 64, "location": "records/x"},
        "conditions": [
            {
                "type": "Completed",
                "status": "True",
                "reason": "Completed",
                "message": "done",
                "lastTransitionTime": "2026-11-23T10:09:30Z",
            },
        ],
        **status,
    }
    support.set_status(kube, namespace, name, values)
    return support.get_run(kube, namespace, name)


def _attestor(
    kube_client: controller.Kube, setup: dict[str, Any], **kwargs: Any
) -> controller.Attestor:
    return controller.Attestor(
        kube_client,
        setup["book"],
        setup["signer"],
        builder_id="https://orchestrator.continue.dev/operator/test-cluster",
        evidence=_recorded_evidence(setup["work"] / "records", setup["tree"]),
        attempts=2,
        backoff_seconds=0.05,
        **kwargs,
    )


def _cli(kube: ControlPlane, *argv: str) -> int:
    return cli.main([*argv, "--kubeconfig", str(kube.kubeconfig)])


def test_a_finished_run_is_signed_stored_and_verifiable(
    kube: ControlPlane, setup: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    namespace, book = setup["namespace"], setup["book"]
    run = _finished_run(kube, book, namespace, "attest-me")
    uid = run["metadata"]["uid"]
    written = _attestor(controller.Kube(kube.api_client()), setup).attest_run(run)
    assert written is not None and written["signed"] == "true"

    status = support.get_run(kube, namespace, "attest-me")["status"]
    assert status["attestation"]["signed"] == "true"
    assert status["attestation"]["location"] == f"configmap:{namespace}/attest-me-attestation"
    assert status["attestation"]["signer"] == f"key:{setup['signer'].hint}"
    [attested] = [c for c in status["conditions"] if c["type"] == "Attested"]
    assert attested["status"] == "True"

    config_map = kube.rest.get(f"/api/v1/namespaces/{namespace}/configmaps/attest-me-attestation")
    assert config_map["immutable"] is True
    assert config_map["metadata"]["labels"][controller.RUN_UID_LABEL] == uid
    assert "ownerReferences" not in config_map["metadata"]  # outlives the AgentRun
    stored = base64.b64decode(config_map["binaryData"]["bundle.sigstore.json"])
    assert status["attestation"]["digest"] == "sha256:" + hashlib.sha256(stored).hexdigest()

    [published] = [
        e for e in book.entries(run_uid=uid) if e.kind is ledger.Kind.ATTESTATION_PUBLISHED
    ]
    assert published.payload is not None
    assert published.payload["signed"] is True
    assert published.payload["bundleDigest"] == status["attestation"]["digest"]

    out = setup["work"] / "attest-me.sigstore.json"
    assert _cli(kube, "attestation", "get", "attest-me", "-n", namespace, "-o", str(out)) == 0
    assert out.read_bytes() == stored
    capsys.readouterr()
    assert cli.main(["verify", str(out), "--key", str(setup["public"])]) == 0
    assert f"run      {namespace}/attest-me (succeeded)" in capsys.readouterr().out

    facts = attest.verify_bundle(stored, public_key=setup["public"].read_bytes()).run_facts()
    assert facts.run.uid == uid
    assert facts.diff_digest == DIFF
    # The runner's measurements as recorded, never stand-ins.
    sealed = (setup["work"] / "records" / "runs" / uid / "manifest").read_text().strip()
    assert facts.record_digest == sealed.removeprefix("sha256:")
    assert facts.workspace_tree_digest == setup["tree"].removeprefix("sha256:")
    assert facts.workspace_tree_digest != hashlib.sha256(b"").hexdigest()
    statement = attest.verify_bundle(stored, public_key=setup["public"].read_bytes())
    assert statement.subject_digest("workspace-tree") == facts.workspace_tree_digest
    assert facts.cli_version == "1.5.47"
    assert [(m.provider, m.model, m.requests) for m in facts.models] == [
        ("anthropic", "claude-test", 1)
    ]
    assert facts.policy_digest == "4" * 64
    assert (facts.tool_calls.allowed, facts.tool_calls.approved, facts.tool_calls.denied) == (
        1,
        1,
        1,
    )
    assert [(i.kind, i.actor, i.subject) for i in facts.interventions] == [
        ("approval", "alice", "c2")
    ]
    entries = list(book.entries(run_uid=uid))
    assert facts.ledger.first == entries[0].sequence

    # A second call (operator restart) leaves a signed run alone.
    again = _attestor(controller.Kube(kube.api_client()), setup).attest_run(run)
    assert again == status["attestation"]
    kinds = [e.kind for e in book.entries(run_uid=uid)]
    assert kinds.count(ledger.Kind.ATTESTATION_PUBLISHED) == 1


def test_a_replaced_bundle_is_refused_by_attestation_get(
    kube: ControlPlane, setup: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    namespace = setup["namespace"]
    run = _finished_run(kube, setup["book"], namespace, "attest-tampered")
    written = _attestor(controller.Kube(kube.api_client()), setup).attest_run(run)
    assert written is not None and written["signed"] == "true"
    path = f"/api/v1/namespaces/{namespace}/configmaps/attest-tampered-attestation"
    original = kube.rest.get(path)
    bundle = json.loads(base64.b64decode(original["binaryData"]["bundle.sigstore.json"]))
    statement = json.loads(base64.b64decode(bundle["dsseEnvelope"]["payload"]))
    statement["predicate"]["outcome"] = "failed"
    bundle["dsseEnvelope"]["payload"] = base64.b64encode(json.dumps(statement).encode()).decode()
    kube.rest.request("DELETE", path)
    forged = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": original["metadata"]["name"],
            "labels": original["metadata"]["labels"],
        },
        "binaryData": {
            "bundle.sigstore.json": base64.b64encode(json.dumps(bundle).encode()).decode()
        },
    }
    kube.rest.request("POST", f"/api/v1/namespaces/{namespace}/configmaps", forged)
    capsys.readouterr()
    out = setup["work"] / "tampered.json"
    assert _cli(kube, "attestation", "get", "attest-tampered", "-n", namespace, "-o", str(out)) == 1
    error = capsys.readouterr().err
    assert "the stored bundle's digest is sha256:" in error and "do not trust it" in error
    assert not out.exists()


def test_a_store_failure_is_failed_with_the_reason_never_true(
    kube: ControlPlane, setup: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    namespace = setup["namespace"]
    run = _finished_run(kube, setup["book"], namespace, "attest-denied")
    limited = controller.Kube(
        kubernetes.config.new_client_from_config(config_file=str(setup["limited"]))
    )
    written = _attestor(limited, setup).attest_run(run)
    assert written is not None and written["signed"] == "failed"
    status = support.get_run(kube, namespace, "attest-denied")["status"]
    assert status["attestation"]["signed"] == "failed"
    reason = status["attestation"]["reason"]
    assert "store failed (attempt 2/2)" in reason and "403" in reason
    assert "configmaps" in reason
    assert "digest" not in status["attestation"] and "location" not in status["attestation"]
    [attested] = [c for c in status["conditions"] if c["type"] == "Attested"]
    assert attested["status"] == "False" and attested["reason"] == "SigningFailed"
    with pytest.raises(ApiError) as missing:
        kube.rest.get(f"/api/v1/namespaces/{namespace}/configmaps/attest-denied-attestation")
    assert missing.value.status == 404
    [published] = [
        e
        for e in setup["book"].entries(run_uid=run["metadata"]["uid"])
        if e.kind is ledger.Kind.ATTESTATION_PUBLISHED
    ]
    assert published.payload is not None and published.payload["signed"] is False
    capsys.readouterr()
    assert _cli(kube, "attestation", "get", "attest-denied", "-n", namespace) == 1
    assert "no signed attestation (signed: failed): store failed" in capsys.readouterr().err


def test_an_unpinned_runner_image_is_not_attested(
    kube: ControlPlane, setup: dict[str, Any]
) -> None:
    namespace = setup["namespace"]
    run = _finished_run(
        kube, setup["book"], namespace, "attest-unpinned", runnerImage="runner:latest"
    )
    written = _attestor(controller.Kube(kube.api_client()), setup).attest_run(run)
    assert written is not None and written["signed"] == "failed"
    status = support.get_run(kube, namespace, "attest-unpinned")["status"]
    assert status["attestation"]["signed"] == "failed"
    assert "pinned by digest" in status["attestation"]["reason"]


def test_a_run_still_running_is_not_attested(kube: ControlPlane, setup: dict[str, Any]) -> None:
    namespace = setup["namespace"]
    run = _finished_run(kube, setup["book"], namespace, "attest-running", phase="Running")
    assert _attestor(controller.Kube(kube.api_client()), setup).attest_run(run) is None
    status = support.get_run(kube, namespace, "attest-running")["status"]
    assert "attestation" not in status


def test_a_foreign_configmap_is_never_overwritten(
    kube: ControlPlane, setup: dict[str, Any]
) -> None:
    namespace = setup["namespace"]
    kube.rest.request(
        "POST",
        f"/api/v1/namespaces/{namespace}/configmaps",
        {"apiVersion": "v1", "kind": "ConfigMap",
         "metadata": {"name": "attest-squatted-attestation"}, "data": {"x": "mine"}},
    )  # fmt: skip
    run = _finished_run(kube, setup["book"], namespace, "attest-squatted")
    written = _attestor(controller.Kube(kube.api_client()), setup).attest_run(run)
    assert written is not None and written["signed"] == "failed"
    assert "does not belong to this run" in written["reason"]
    squatted = kube.rest.get(
        f"/api/v1/namespaces/{namespace}/configmaps/attest-squatted-attestation"
    )
    assert squatted["data"] == {"x": "mine"}
