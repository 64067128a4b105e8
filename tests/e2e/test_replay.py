"""Replay with the real Continue CLI in gVisor, through ``orchestrator run``'s pipeline.

A run is recorded against the scripted model; the replay serves the recorded answers
while the tools run for real in a fresh sandbox. It must be identical (and so must a
replay of the replay); a file changed in the repository must make it diverge at the
step that read the file, with the diff; a changed policy must be refused as input drift
before anything runs.
"""

from __future__ import annotations

import base64
import json
import os
import pathlib
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest
from tests import continue_config

from continue_orchestrator import attest, cli, ledger, local, records
from continue_orchestrator.local import _options

pytestmark = [
    pytest.mark.sandbox,
    pytest.mark.cli,
    pytest.mark.skipif(os.geteuid() != 0, reason="the local gVisor sandbox needs root"),
]

ROOT = pathlib.Path(__file__).resolve().parents[2]
KEY = "sk-replay-placeholder-0123456789"
IMAGE = _options.runner_image()
SCRIPT = """
turns:
  - tool_calls: [{id: call_readme, name: Read, arguments: {filepath: README.md}}]
  - tool_calls: [{id: call_app, name: Read, arguments: {filepath: src/app.py}}]
  - text: "Adding a module."
    tool_calls:
      - {id: call_write, name: Write, arguments: {filepath: src/new.py, content: "X = 1\\n"}}
  - tool_calls: [{id: call_cat, name: Bash, arguments: {command: "cat src/new.py"}}]
  - tool_calls: [{id: call_ci, name: Write, arguments: {filepath: ci.yml, content: "x"}}]
  - text: "Done: src/new.py holds X."
"""
CONFIG = continue_config.text(name="replay")
POLICY = """apiVersion: orchestrator.continue.dev/v1alpha1
kind: RunPolicy
metadata: {name: replayer, namespace: demo}
spec:
  defaultEffect: Deny
  allowedSecrets: [OPENAI_API_KEY]
  sandbox: {runtimeClassName: gvisor, maxTimeoutSeconds: 900}
  rules:
    - {name: repo, actions: [repository.access], repositories: ["file://ROOT/*"], effect: Allow}
    - {name: key, actions: [secret.read], secrets: [OPENAI_API_KEY], effect: Allow}
    - {name: tools, actions: [tool.call], tools: [Read, List, Write, Edit, Bash], effect: Allow}
    - {name: read, actions: [file.read], paths: ["**"], effect: Allow}
    - {name: write-src, actions: [file.write], paths: ["src/**"], effect: Allow}
    - {name: look, actions: [shell.exec], commands: ["cat *", "ls*"], effect: Allow}
"""


def git(cwd: pathlib.Path, *args: str) -> str:
    env = {
        **os.environ, "GIT_CONFIG_NOSYSTEM": "1", "HOME": str(cwd),
        "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.invalid",
        "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.invalid",
    }  # fmt: skip
    done = subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return done.stdout


class Project:
    """An origin repository, an AgentRun with its policy, and a state directory."""

    def __init__(self, root: pathlib.Path) -> None:
        self.root = root
        self.state = root / "state"
        self.origin = root / "origin.git"
        work = root / "work"
        work.mkdir(parents=True)
        (work / "README.md").write_text("replay me\n")
        (work / "src").mkdir()
        (work / "src" / "app.py").write_text("print('app')\n")
        git(work, "init", "-q", "-b", "main")
        git(work, "add", "-A")
        git(work, "commit", "-qm", "base")
        git(root, "clone", "-q", "--bare", str(work), str(self.origin))
        self.work = work
        self.policy = root / "runpolicy.yaml"
        self.policy.write_text(POLICY.replace("ROOT", str(root)))
        self.manifest = root / "agentrun.yaml"
        run = {
            "apiVersion": "orchestrator.continue.dev/v1alpha1",
            "kind": "AgentRun",
            "metadata": {"name": "replayed", "namespace": "demo"},
            "spec": {
                "policyRef": {"name": "replayer"},
                "repository": {"url": f"file://{self.origin}", "ref": "main"},
                "agent": {"config": CONFIG},
                "secrets": [{"name": "OPENAI_API_KEY", "secretKeyRef": {"name": "k", "key": "k"}}],
                "prompt": "Add src/new.py.",
                "timeoutSeconds": 300,
            },
        }
        self.manifest.write_text(json.dumps(run))
        self.script = root / "script.yaml"
        self.script.write_text(SCRIPT)

    def inputs(self, policy: pathlib.Path | None = None) -> local.Inputs:
        return local.load(
            self.manifest,
            policy_files=[policy or self.policy],
            secrets=["OPENAI_API_KEY=env:REPLAY_TEST_KEY"],
        )

    def options(self, *, script: bool = False) -> local.Options:
        return local.Options(
            state_dir=self.state,
            model_script=self.script if script else None,
            approvals="deny",
        )

    def record(self) -> local.Report:
        report = local.run(self.inputs(), self.options(script=True), say=lambda line: None)
        assert report.phase == "Succeeded", report.render()
        assert report.record_digest is not None
        return report

    def replay(self, record: str, **kwargs: Any) -> records.ReplayReport:
        return local.replay(
            record, self.options(), secrets={"OPENAI_API_KEY": KEY}, say=lambda line: None,
            **kwargs,
        )  # fmt: skip

    def entries(self, uid: str) -> list[ledger.Entry]:
        with ledger.open(f"sqlite:///{self.state / 'ledger.db'}") as book:
            return list(book.entries(run_uid=uid))


@pytest.fixture(scope="module", autouse=True)
def _environment() -> Iterator[None]:
    subprocess.run([str(ROOT / "hack" / "install-cn.sh")], capture_output=True, check=True)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("REPLAY_TEST_KEY", KEY)
        # The runner image is the package source's digest. Engineers edit this working tree
        # while tests run; pin it for the module so only the inputs a test changes can drift.
        patch.setattr(_options, "runner_image", lambda: IMAGE)
        yield


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Project:
    return Project(tmp_path_factory.mktemp("replay"))


@pytest.fixture(scope="module")
def recorded(project: Project) -> local.Report:
    """The module's one recording, which every test here may replay in any order."""
    return project.record()


def _statement(state: pathlib.Path, uid: str) -> dict[str, Any]:
    bundle = (state / "attestations" / f"{uid}.sigstore.json").read_bytes()
    key = (state / "keys" / "DEVELOPMENT-ONLY-attestation.pub").read_bytes()
    attest.verify_bundle(bundle, public_key=key)
    payload = json.loads(bundle)["dsseEnvelope"]["payload"]
    statement: dict[str, Any] = json.loads(base64.b64decode(payload))
    return statement


def test_a_recorded_run_and_its_replay_replay_identically(
    project: Project, recorded: local.Report
) -> None:
    original = recorded
    assert original.record_digest is not None
    first = project.replay(original.record_digest)
    assert first.identical, first.render()
    assert first.recorded is not None and first.replayed is not None
    tools = [(c["tool"], c["effect"]) for c in first.replayed.tool_calls]
    assert tools == [
        ("Read", "Allow"), ("Read", "Allow"), ("Write", "Allow"), ("Bash", "Allow"),
        ("Write", "Deny"),
    ]  # fmt: skip
    assert first.replayed.tool_calls == first.recorded.tool_calls
    assert first.replayed.diff_digest == first.recorded.diff_digest == original.diff_digest
    assert first.model_requests == first.recorded_model_requests == 6
    assert first.replay is not None and first.replay_record is not None
    replay_report = json.loads((project.state / "runs" / first.replay / "report.json").read_text())
    assert [f["path"] for f in replay_report["diffFiles"]] == ["src/new.py"]

    # The ledger says what was replayed and how it ended; the attestation names the original.
    kinds = [str(e.kind) for e in project.entries(first.replay)]
    assert kinds[0] == "replay.started" and kinds[-1] == "replay.finished"
    assert "run.created" in kinds and "tool.call" in kinds
    finished = project.entries(first.replay)[-1].payload or {}
    assert finished["identical"] is True and finished["record"] == original.record_digest
    predicate = _statement(project.state, first.replay)["predicate"]
    assert predicate["replayOf"]["uid"] == original.uid

    # Replaying the replay, through the CLI, is identical too (exit 0).
    code = cli.main(
        ["replay", first.replay_record, "--state-dir", str(project.state), "--deny-all",
         "--secret", "OPENAI_API_KEY=env:REPLAY_TEST_KEY"]
    )  # fmt: skip
    assert code == 0
    second = sorted((project.state / "replays").glob("*.json"), key=lambda p: p.stat().st_mtime)
    again = json.loads(second[-1].read_text())
    assert again["identical"] is True and again["original"] == first.replay


def test_a_changed_policy_is_input_drift_and_nothing_runs(
    project: Project, recorded: local.Report, capsys: pytest.CaptureFixture[str]
) -> None:
    digest = recorded.record_digest
    assert digest is not None
    changed = project.root / "stricter.yaml"
    changed.write_text(project.policy.read_text().replace('"cat *", ', ""))
    runs_before = set((project.state / "runs").iterdir())
    code = cli.main(
        ["replay", digest, str(project.manifest), "--policy", str(changed),
         "--state-dir", str(project.state), "--secret", "OPENAI_API_KEY=env:REPLAY_TEST_KEY"]
    )  # fmt: skip
    assert code == 3
    out = capsys.readouterr().out
    assert "DIVERGED (input-drift)" in out and "nothing ran" in out
    assert "input      policy: sha256:" in out
    assert set((project.state / "runs").iterdir()) == runs_before, "a sandbox was started"
    (latest,) = [
        p for p in (project.state / "replays").glob("*.json")
        if json.loads(p.read_text())["ran"] is False
    ]  # fmt: skip
    report = json.loads(latest.read_text())
    assert [d["name"] for d in report["inputDrift"]] == ["policy"]
    kinds = [str(e.kind) for e in project.entries(report["replay"])]
    assert kinds == ["replay.started", "replay.finished"]


def test_a_changed_file_diverges_at_the_step_that_read_it(tmp_path: pathlib.Path) -> None:
    project = Project(tmp_path)
    original = project.record()
    assert original.record_digest is not None
    git(project.work, "remote", "add", "origin", str(project.origin))
    (project.work / "src" / "app.py").write_text("print('changed')\n")
    git(project.work, "commit", "-qam", "change app.py")
    git(project.work, "push", "-q", "origin", "main")

    report = project.replay(original.record_digest)
    assert not report.identical and report.ran
    assert report.cause == "input-drift", report.render()
    divergence = report.divergence
    assert divergence is not None
    # Steps of the recording: 1 model (-> Read README), 2 its result, 3 model (-> Read
    # src/app.py), 4 its result, 5 the model request carrying it: where the replay departs.
    store = records.BlobStore(project.state / "records")
    recorded = records.record_by_digest(store, original.record_digest)
    kinds = [(e.step, e.kind) for e in recorded.exchanges[:5]]
    assert kinds == [(1, "model"), (2, "tool.result"), (3, "model"), (4, "tool.result"),
                     (5, "model")]  # fmt: skip
    assert (divergence.step, divergence.tool_result_step, divergence.role) == (5, 4, "tool")
    assert divergence.tool_call is not None
    assert divergence.tool_call["function"]["name"] == "Read"
    assert "src/app.py" in divergence.tool_call["function"]["arguments"]
    lines = divergence.diff.splitlines()
    assert "-print('app')" in lines and "+print('changed')" in lines
    assert [d.name for d in report.input_drift] == ["commit"]
    # The agent was stopped there: nothing after the read ran in the replay.
    assert report.replayed is not None
    assert [c["tool"] for c in report.replayed.tool_calls] == ["Read", "Read"]
    assert "step 5" in report.render() and "+print('changed')" in report.render()


def test_a_literal_model_key_is_in_no_record_and_the_run_still_replays(
    tmp_path: pathlib.Path,
) -> None:
    """A config with the key written in it: the run is recorded and replays without it,
    and no file the run left behind (records, ledger, run directory) holds the key."""
    literal = "sk-literal-" + os.urandom(16).hex()
    project = Project(tmp_path)
    run = json.loads(project.manifest.read_text())
    run["spec"]["agent"]["config"] = continue_config.text(name="replay", api_key=literal)
    project.manifest.write_text(json.dumps(run))
    project.script.write_text(
        "turns:\n"
        "  - tool_calls: [{id: call_readme, name: Read, arguments: {filepath: README.md}}]\n"
        "  - text: Read it.\n"
    )
    original = project.record()
    assert original.record_digest is not None

    replayed = project.replay(original.record_digest)
    assert replayed.identical, replayed.render()
    assert not replayed.input_drift, replayed.render()

    holding = [
        str(path.relative_to(project.state))
        for path in project.state.rglob("*")
        if path.is_file() and not path.is_symlink() and literal.encode() in path.read_bytes()
    ]
    assert holding == []
