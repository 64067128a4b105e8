"""``spec.replayOf`` through the operator: the real reconciler, gateway, runner and CLI.

One run is recorded through the operator path (``controller.Reconciler`` against the
real kube-apiserver, the real gateway over its admin API, the runner and the Continue
CLI in a gVisor pod) and then replayed three ways: by a run that names it (identical),
by a run naming an AgentRun that does not exist, and after its policy was edited (input
drift, and no pod). Set-up as in tests/integration/test_one_code_path.py.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import pathlib
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from tests.integration.operator import harness
from tests.integration.test_one_code_path import (  # noqa: F401 (fixtures)
    DEMO,
    KEY,
    RUNNER_COMMAND,
    demo_baseline,
    host_ready,
)
from tests.kube import ControlPlane, PodExecutor

from continue_orchestrator import controller, gateway, ledger, local, runs

pytestmark = [
    pytest.mark.cluster,
    pytest.mark.sandbox,
    pytest.mark.cli,
    pytest.mark.skipif(os.geteuid() != 0, reason="gVisor pods need root"),
]

SCRIPT = """\
turns:
  - tool_calls: [{id: call_read, name: Read, arguments: {filepath: src/shop/pricing.py}}]
  - text: "I read the pricing code; nothing to change."
"""


class _Gateway:
    """The real gateway and its admin API on their own loop; the scripted model stands
    in for the config's provider (a replay's registration is served by the replay model)."""

    def __init__(self, root: pathlib.Path) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        root.mkdir(parents=True, exist_ok=True)
        self.ledger_url = f"sqlite:///{root / 'ledger.db'}"
        self.book = ledger.open(self.ledger_url)
        (root / "script.yaml").write_text(SCRIPT)
        self.model = local.ScriptedModel(local.Script.from_file(root / "script.yaml"))
        # The pods clone the demo's directory origin through this gateway.
        self.server = gateway.Gateway(
            record_root=str(root / "records"),
            ledger=self.book,
            admin_token=gateway.new_token(),
            local_repositories=True,
        )
        self.model_base = self.call(self.model.start())
        self.url = self.call(self.server.start())
        assert self.server.admin_token is not None
        self.client = gateway.BlockingClient(self.url, self.server.admin_token, watch_seconds=0)

    def call(self, coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(60)

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

    def stop(self) -> None:
        self.client.close()
        self.call(self.server.stop())
        self.call(self.model.stop())
        self.book.close()
        self.loop.call_soon_threadsafe(self.loop.stop)


@pytest.fixture
def gateway_thread(tmp_path: pathlib.Path) -> Iterator[_Gateway]:
    started = _Gateway(tmp_path / "gateway")
    try:
        yield started
    finally:
        started.stop()


def _drive(
    reconciler: controller.Reconciler, cluster: harness.Cluster, created: dict[str, Any]
) -> dict[str, Any]:
    namespace, name = created["metadata"]["namespace"], created["metadata"]["name"]
    reconciler.start(created)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        current = cluster.run(namespace, name)
        assert current is not None
        if (current.get("status") or {}).get("phase") in harness.TERMINAL:
            # _finished notes the record after the terminal phase: read once more.
            time.sleep(0.2)
            found = cluster.run(namespace, name)
            assert found is not None
            return found
        reconciler.resync(current)
        time.sleep(0.5)
    raise AssertionError(f"{name} did not finish: {cluster.run(namespace, name)}")


def test_replay_of_an_operator_run(
    kube: ControlPlane,
    pod_executor: PodExecutor,
    namespace: str,
    host_ready: str,  # noqa: F811
    demo_baseline: None,  # noqa: F811
    gateway_thread: _Gateway,
    tmp_path: pathlib.Path,
) -> None:
    cluster = harness.Cluster(kube)
    policy = yaml.safe_load((DEMO / "runpolicy.yaml").read_text())
    policy["metadata"]["namespace"] = namespace
    cluster.create(policy)
    cluster.create(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "demo-agent", "namespace": namespace},
            "data": {"config.yaml": (DEMO / "continue" / "config.yaml").read_text()},
        }
    )
    cluster.create(harness.secret(namespace, "demo-openai", {"api-key": KEY}))
    template = yaml.safe_load((DEMO / "agentrun.yaml").read_text())
    template["metadata"]["namespace"] = namespace
    template["spec"].pop("verify")  # a verify command's timing is not what is tested here

    def agent_run(name: str, **replay_of: str) -> dict[str, Any]:
        document = {**template, "metadata": {**template["metadata"], "name": name}}
        if replay_of:
            document["spec"] = {**template["spec"], "replayOf": replay_of}
        return cluster.create(document)

    settings = controller.Settings(
        runner_image=harness.IMAGE, ledger_url=gateway_thread.ledger_url,
        runner_command=RUNNER_COMMAND,
        gateway_url=gateway_thread.url, operator_namespace="orchestrator-system",
    ).validate()  # fmt: skip
    book = ledger.open(settings.ledger_url)  # the gateway's ledger: one ledger, as deployed
    reconciler = controller.Reconciler(
        controller.Kube(kube.api_client()), book, gateway_thread, settings
    )
    try:
        # The recording.
        original = _drive(reconciler, cluster, agent_run("original"))
        assert original["status"]["phase"] == "Succeeded", original["status"]
        digest = original["status"]["record"]["digest"]
        assert digest.startswith("sha256:")
        assert "Replayed" not in harness.conditions(original)

        # (c) replayOf naming a run that does not exist: Failed, naming the field; no pod.
        missing = _drive(reconciler, cluster, agent_run("missing", run="no-such-run"))
        assert missing["status"]["phase"] == "Failed"
        replayed = harness.conditions(missing)["Replayed"]
        assert (replayed["status"], replayed["reason"]) == ("False", "ReplaySourceNotFound")
        assert "spec.replayOf.run" in replayed["message"]
        assert "no-such-run" in replayed["message"]
        assert cluster.pods(namespace, missing["metadata"]["uid"]) == []

        # (a) the replay of the recorded run: identical.
        replay = _drive(reconciler, cluster, agent_run("replay", run="original"))
        uid = replay["metadata"]["uid"]
        assert replay["status"]["phase"] == "Succeeded", replay["status"]
        replayed = harness.conditions(replay)["Replayed"]
        assert (replayed["status"], replayed["reason"]) == ("True", "Identical"), replayed
        assert replay["status"]["record"]["digest"] != digest
        entries = {e.kind: e.payload for e in book.entries(run_uid=uid)}
        assert entries[ledger.Kind.REPLAY_STARTED]["record"] == digest
        assert (
            entries[ledger.Kind.REPLAY_STARTED]["replayOf"]["uid"] == (original["metadata"]["uid"])
        )
        finished = entries[ledger.Kind.REPLAY_FINISHED]
        assert (finished["identical"], finished["ran"], finished["cause"]) == (True, True, None)
        assert finished["replayRecord"] == replay["status"]["record"]["digest"]
        # The replay model answered: the scripted model was not asked again.
        assert len(gateway_thread.model.requests) == 2  # the recording's two turns only

        # (b) the policy edited after the recording: input drift before any pod exists.
        path = f"{harness.GROUP_PATH}/namespaces/{namespace}/runpolicies/demo-fixer"
        current = kube.rest.get(path)
        current["spec"]["approvalTimeoutSeconds"] = 300
        kube.rest.request("PUT", path, current)
        drifted = _drive(reconciler, cluster, agent_run("drifted", record=digest))
        assert drifted["status"]["phase"] == "Failed"
        replayed = harness.conditions(drifted)["Replayed"]
        assert (replayed["status"], replayed["reason"]) == ("False", "InputDrift"), replayed
        assert "policy" in replayed["message"]
        assert cluster.pods(namespace, drifted["metadata"]["uid"]) == []
        kinds = [e.kind for e in book.entries(run_uid=drifted["metadata"]["uid"])]
        assert ledger.Kind.REPLAY_FINISHED in kinds and ledger.Kind.RUN_STARTED not in kinds
        finished = next(
            e.payload
            for e in book.entries(run_uid=drifted["metadata"]["uid"])
            if e.kind is ledger.Kind.REPLAY_FINISHED
        )
        assert finished["cause"] == "input-drift" and finished["ran"] is False
        assert [d["name"] for d in finished["inputDrift"]] == ["policy"]
    finally:
        book.close()
