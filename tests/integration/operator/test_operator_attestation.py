"""The operator attests every finished run it drives, in key mode.

``orchestrator operator --signing-key-dir`` with a cosign-format key, a run that
succeeds and one that fails: both get ``status.attestation.signed: "true"``, an
``attestation.published`` ledger entry, and a bundle that ``orchestrator attestation
get`` fetches and ``orchestrator verify --key`` accepts, stating the right outcome.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from tests.integration.operator import harness
from tests.integration.operator.harness import Cluster, Operator
from tests.kube import ControlPlane

from continue_orchestrator import attest, cli

pytestmark = pytest.mark.cluster


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("signing")
    key = ec.generate_private_key(ec.SECP256R1())
    (directory / "key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    (directory / "cosign.pub").write_bytes(attest.public_key_pem(key.public_key()))
    return directory


@pytest.fixture(scope="module")
def attesting(
    kube: ControlPlane,
    cluster: Cluster,
    keys: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Operator]:
    op = Operator(
        kube,
        tmp_path_factory.mktemp("attesting-operator"),
        extra=("--signing-key-dir", str(keys), "--builder-id", "https://example.test/op"),
    ).start()
    try:
        yield op
    finally:
        op.stop()


@pytest.mark.parametrize(("name", "exit_code", "outcome"), [("ok", 0, "succeeded"),
                                                            ("broken", 20, "failed")])  # fmt: skip
def test_each_finished_run_is_attested(
    cluster: Cluster,
    attesting: Operator,
    namespace: str,
    keys: Path,
    kube: ControlPlane,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    name: str,
    exit_code: int,
    outcome: str,
) -> None:
    cluster.create(harness.run_policy(namespace))
    attesting.behave(name, sleep=1, exit=exit_code)
    created = cluster.create(harness.agent_run(namespace, name))
    uid = created["metadata"]["uid"]

    def signed() -> object:
        run = cluster.run(namespace, name) or {}
        attestation = (run.get("status") or {}).get("attestation") or {}
        return run if attestation.get("signed") in ("true", "failed") else None

    run = cluster.wait("status.attestation", signed, timeout=90, explain=attesting.log_tail)
    attestation = run["status"]["attestation"]
    assert attestation["signed"] == "true", attestation
    assert attestation["location"] == f"configmap:{namespace}/{name}-attestation"
    assert harness.conditions(run)["Attested"]["status"] == "True"
    kinds = harness.kinds(attesting.entries(uid))
    assert kinds.index("run.finished") < kinds.index("attestation.published")

    bundle = tmp_path / "bundle.json"
    argv = ["attestation", "get", name, "-n", namespace, "--kubeconfig", str(kube.kubeconfig)]
    assert cli.main([*argv, "-o", str(bundle)]) == 0
    capsys.readouterr()
    assert cli.main(["verify", str(bundle), "--key", str(keys / "cosign.pub")]) == 0
    assert f"{namespace}/{name} ({outcome})" in capsys.readouterr().out
    facts = attest.verify_bundle(
        bundle.read_bytes(), public_key=(keys / "cosign.pub").read_bytes()
    ).run_facts()
    assert facts.run.uid == uid and facts.builder_id == "https://example.test/op"
    assert facts.runner_image == harness.IMAGE
    # This operator has no --record-root: what only the runner measures is stated as
    # unmeasured (null, no subject), never as a digest of nothing or a made-up version.
    assert (facts.workspace_tree_digest, facts.diff_digest, facts.cli_version) == (None,) * 3
    statement = attest.verify_bundle(
        bundle.read_bytes(), public_key=(keys / "cosign.pub").read_bytes()
    )
    assert "workspace-tree" not in {s.name for s in statement.subject}
