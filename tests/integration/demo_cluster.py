"""The demo's AgentRun on the local control plane: what the operator-side tests share.

The real ``controller.Reconciler`` runs in the test's process against the real
kube-apiserver, and registers runs through the real gateway's admin API
(``GatewayThread``: the gateway and the scripted model on a loop of their own, sharing
one ledger with the operator as they share one database in a cluster; the operator reads
the gateway's record store as ``orchestrator operator --record-root`` does). The pod
executor runs the run's pods in gVisor as the kubelet would, with the runner started as
the runner image starts it (``RUNNER_COMMAND``).

Host set-up this needs, as a runner image would provide (``prepare_host``): the pinned
Continue CLI at the bundle's default ``/opt/continue`` (copied from the cache, since the
pod runs as a non-root user that cannot read /root), and the demo origin in /var/tmp.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import pathlib
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import Any

import yaml
from tests.integration.operator import harness
from tests.kube import ControlPlane
from tests.kube.rest import ApiError

from continue_orchestrator import gateway, ledger, local, records, runs

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


def prepare_host() -> str:
    """The demo origin (its path) and the pinned Continue CLI where the bundle expects it."""
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


class GatewayThread:
    """A real gateway with its admin API, and the scripted model, on their own loop."""

    def __init__(self, root: pathlib.Path, script: local.Script | None = None) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.records = root / "gateway-records"
        self.ledger_url = f"sqlite:///{root / 'gateway-ledger.db'}"
        self.book = ledger.open(self.ledger_url)
        self.model = local.ScriptedModel(
            script or local.Script.from_file(DEMO / "model-script.yaml")
        )
        self.admin_token = gateway.new_token()
        # The pod clones the demo's directory origin through this gateway, as local mode's
        # gateway serves it; a forge's repository (Gitea) it fetches over HTTP.
        self.server = gateway.Gateway(
            record_root=str(self.records),
            ledger=self.book,
            admin_token=self.admin_token,
            local_repositories=True,
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

    def unregister(self, uid: str) -> dict[str, Any] | None:
        return self.client.unregister(uid)

    def approve_pending(self, run: str) -> None:
        """Approve the tool calls the run holds (the agent's, not publication's)."""
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


@contextlib.contextmanager
def demo_baseline(kube: ControlPlane) -> Iterator[None]:
    """The demo's ClusterRunPolicy, removed afterwards: it applies to every namespace."""
    harness.setup_cluster(kube)
    document = yaml.safe_load((DEMO / "clusterrunpolicy.yaml").read_text())
    path = f"{harness.GROUP_PATH}/clusterrunpolicies"
    with contextlib.suppress(ApiError):  # left by an interrupted earlier run
        kube.rest.request("DELETE", f"{path}/{document['metadata']['name']}")
    kube.rest.request("POST", path, document)
    try:
        yield
    finally:
        kube.rest.request("DELETE", f"{path}/{document['metadata']['name']}")
