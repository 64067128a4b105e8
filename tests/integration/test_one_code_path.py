"""One code path: the demo's AgentRun run by the operator on the local control plane and by
``orchestrator run`` makes the same tool calls, gets the same decisions and the same diff.

The operator side is the real ``controller.Reconciler`` against the real kube-apiserver:
it validates the run, writes the Secret (token, policy snapshot, bundle), the
NetworkPolicy and the Pod, whose command is the same ``python -m
continue_orchestrator.runner``; the pod executor runs it in gVisor as the kubelet would.
The reconciler registers the run through the gateway's real admin API
(``gateway.BlockingClient``); as with ``--model-script``, the scripted model stands in
for the config's provider.

Host set-up this needs, as a runner image would provide: the pinned Continue CLI at the
bundle's default ``/opt/continue`` (copied from the cache, since the pod runs as a
non-root user that cannot read /root), and the demo origin in /var/tmp.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import pathlib
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from tests.integration.operator import harness
from tests.kube import ControlPlane, PodExecutor
from tests.kube.rest import ApiError

from continue_orchestrator import controller, gateway, ledger, local, records, runs

pytestmark = [
    pytest.mark.cluster,
    pytest.mark.sandbox,
    pytest.mark.cli,
    pytest.mark.skipif(os.geteuid() != 0, reason="gVisor pods and the local sandbox need root"),
]

ROOT = pathlib.Path(__file__).resolve().parents[2]
DEMO = ROOT / "examples" / "demo"
IMAGE_CN = pathlib.Path("/opt/continue/node_modules/.bin/cn")
KEY = "sk-demo-placeholder-0123456789abcdef"
# The runner image's entrypoint, on this host: the pod runs as a non-root user that cannot
# read the venv's interpreter under /root, so the system Python 3.11 runs the same package.
SITE = ROOT / ".venv" / "lib" / f"python{sys.version_info[0]}.{sys.version_info[1]}"
RUNNER_COMMAND = (
    "/usr/bin/env", f"PYTHONPATH={ROOT / 'operator'}:{SITE / 'site-packages'}",
    "/usr/bin/python3", "-m", "continue_orchestrator.runner",
)  # fmt: skip


@pytest.fixture(scope="module")
def host_ready() -> str:
    origin = subprocess.run(
        [str(ROOT / "hack" / "demo-origin.sh")], capture_output=True, text=True, check=True
    ).stdout.strip()
    cn = (
        subprocess.run(
            [str(ROOT / "hack" / "install-cn.sh")], capture_output=True, text=True, check=True
        )
        .stdout.strip()
        .splitlines()[-1]
    )
    if not IMAGE_CN.exists():
        shutil.copytree(pathlib.Path(cn).parents[2], IMAGE_CN.parents[2], symlinks=True)
    return origin


class _GatewayThread:
    """A real gateway with its admin API, and the scripted model, on their own loop."""

    def __init__(self, root: pathlib.Path) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.records = root / "gateway-records"
        self.book = ledger.open(f"sqlite:///{root / 'gateway-ledger.db'}")
        self.model = local.ScriptedModel(local.Script.from_file(DEMO / "model-script.yaml"))
        self.admin_token = gateway.new_token()
        self.server = gateway.Gateway(
            record_root=str(self.records), ledger=self.book, admin_token=self.admin_token
        )
        self.model_base = self.call(self.model.start())
        self.url = self.call(self.server.start())
        self.client = gateway.BlockingClient(self.url, self.admin_token, watch_seconds=0)

    def call(self, coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(60)

    # controller.GatewayClient, through the real admin API. Like --model-script, the
    # scripted model stands in for the config's provider; nothing else changes.
    def register(self, registration: runs.Registration) -> None:
        config = yaml.safe_load(registration.config)
        for model in config["models"]:
            model["apiBase"] = self.model_base
        self.client.register(
            dataclasses.replace(
                registration,
                config=yaml.safe_dump(config),
                allowed_egress=(*registration.allowed_egress, f"127.0.0.1:{self.model.port}"),
            )
        )

    def unregister(self, uid: str) -> None:
        self.client.unregister(uid)

    def approve_pending(self, run: str) -> None:
        broker = self.server.broker
        assert isinstance(broker, gateway.LocalApprovalBroker)

        def decide() -> None:
            for approval in broker.pending(run):
                broker.decide(run, approval.id, approved=True, by="operator-test")

        self.loop.call_soon_threadsafe(decide)

    def outcome(self, uid: str) -> dict[str, Any]:
        store = records.BlobStore(str(self.records))
        (step,) = [x for x in records.load(store, uid).exchanges if x.kind == "run.outcome"]
        found: dict[str, Any] = json.loads(store.get(step.blobs["outcome"]))
        return found

    def stop(self) -> None:
        self.client.close()
        self.call(self.server.stop())
        self.call(self.model.stop())
        self.book.close()
        self.loop.call_soon_threadsafe(self.loop.stop)


def _calls(entries: list[ledger.Entry]) -> list[tuple[str, Any, str]]:
    return [
        (e.payload["tool"], e.payload["arguments"], e.payload["effect"])
        for e in entries
        if e.kind is ledger.Kind.POLICY_DECISION and e.payload and "tool" in e.payload
    ]


@pytest.fixture
def demo_baseline(kube: ControlPlane) -> Iterator[None]:
    """The demo's ClusterRunPolicy, removed afterwards: it applies to every namespace."""
    harness.setup_cluster(kube)
    document = yaml.safe_load((DEMO / "clusterrunpolicy.yaml").read_text())
    path = f"{harness.GROUP_PATH}/clusterrunpolicies"
    with contextlib.suppress(ApiError):  # left by an interrupted earlier run
        kube.rest.request("DELETE", f"{path}/{document['metadata']['name']}")
    kube.rest.request("POST", path, document)
    yield
    kube.rest.request("DELETE", f"{path}/{document['metadata']['name']}")


@pytest.fixture
def gateway_thread(tmp_path: pathlib.Path) -> Iterator[_GatewayThread]:
    started = _GatewayThread(tmp_path)
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
    gateway_thread: _GatewayThread,
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
        runner_image=harness.IMAGE, ledger_url=f"sqlite:///{tmp_path / 'operator.db'}",
        runner_command=RUNNER_COMMAND,
        gateway_url=gateway_thread.url, operator_namespace="orchestrator-system",
    ).validate()  # fmt: skip
    book = ledger.open(settings.ledger_url)
    reconciler = controller.Reconciler(
        controller.Kube(kube.api_client()), book, gateway_thread, settings
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
    book.close()

    assert len(local_calls) == 8 and {c[2] for c in local_calls} == {
        "Allow", "Deny", "RequireApproval",
    }  # fmt: skip
    assert operator_calls == local_calls
    assert outcome is not None
    assert outcome["diff"]["digest"] == local_report.diff_digest
    assert [f["path"] for f in outcome["diff"]["files"]] == [
        f.path for f in local_report.diff_files
    ]
