"""The runner with the real Continue CLI, driven by the scripted model through the
run's gateway URL: what the agent does lands in the diff, verify results are kept, and
a policy stop happens before the agent ever runs."""

from __future__ import annotations

import base64
import json
import pathlib
import subprocess
import sys
from collections.abc import Callable

import pytest
from tests.runner_support import CONFIG, Origin, StandInGateway, bundle_for
from tests.tree_digest_reference import reference_tree_digest

from continue_orchestrator import runner

pytestmark = pytest.mark.cli

WRITE_THEN_DONE = """
turns:
  - text: "I will fix the answer."
    tool_calls:
      - name: Write
        id: call_write
        arguments: {filepath: src/answer.py, content: "ANSWER = 42\\n"}
  - text: "Also adding a note."
    expect: {last_role: tool}
    tool_calls:
      - name: Write
        id: call_note
        arguments: {filepath: src/NOTES.md, content: "fixed by the agent\\n"}
  - text: "Done: the answer is 42."
    expect: {last_role: tool}
"""


def _run(bundle: runner.RunBundle, gateway: StandInGateway) -> runner.Outcome:
    return runner.run(bundle, environ={runner.TOKEN_ENV: gateway.token}, log=lambda _: None)


def test_agent_calls_gateway_with_run_token_and_its_files_land_in_the_diff(
    stand_in_gateway: Callable[[str], StandInGateway],
    origin: Origin,
    tmp_path: pathlib.Path,
    cn_path: str,
) -> None:
    gateway = stand_in_gateway(WRITE_THEN_DONE)
    verify = [
        {"name": "answer", "command": "sh tests/check.sh && echo answer-ok"},
        {"name": "lint", "command": "echo lint-output; exit 3"},
    ]
    bundle = bundle_for(gateway, origin, tmp_path, cn_path, verify=verify)

    outcome = _run(bundle, gateway)

    completions = [(p, a) for p, a in gateway.seen if p.endswith("/chat/completions")]
    assert len(completions) == 3, gateway.model.failures
    assert all(p == "/runs/run-1/v1/chat/completions" for p, _ in completions)
    assert all(a == f"Bearer {gateway.token}" for _, a in completions)
    assert gateway.model.failures == []
    assert gateway.model.exhausted

    assert outcome.status is runner.Status.VERIFY_FAILED, outcome.message
    assert outcome.exit_code == runner.ExitCode.VERIFY_FAILED == 21
    assert outcome.base_commit == origin.commit
    assert outcome.agent is not None and outcome.agent.result.exit_code == 0
    assert "Done: the answer is 42." in outcome.agent.result.output
    answer, lint = outcome.verify
    assert (answer.name, answer.result.exit_code) == ("answer", 0)
    assert "answer-ok" in answer.result.output
    assert (lint.name, lint.result.exit_code) == ("lint", 3)
    assert "lint-output" in lint.result.output

    assert outcome.diff is not None
    files = {(f.status, f.path) for f in outcome.diff.files}
    assert files == {("M", "src/answer.py"), ("A", "src/NOTES.md")}
    patch = base64.b64decode(outcome.diff.patch_base64).decode()
    assert "+ANSWER = 42" in patch and "+fixed by the agent" in patch
    # The patch applies to the pinned commit and reproduces the workspace.
    check = tmp_path / "check"
    subprocess.run(["git", "clone", "-q", origin.url, str(check)], check=True)
    subprocess.run(["git", "-C", str(check), "checkout", "-q", origin.commit], check=True)
    subprocess.run(
        ["git", "-C", str(check), "apply", "--binary", "-"], input=patch.encode(), check=True
    )
    assert (check / "src" / "answer.py").read_text() == "ANSWER = 42\n"
    # The tree digest names the same workspace, recomputed from its documented definition
    # on that independent checkout; the CLI version is the installed package's.
    assert outcome.workspace_tree_digest == reference_tree_digest(check)
    assert outcome.cli_version == "1.5.47"

    # The outcome reached the gateway, and the run token is nowhere in it.
    assert len(gateway.outcomes) == 1
    assert gateway.outcomes[0]["status"] == "VerifyFailed"
    assert gateway.outcomes[0]["workspaceTreeDigest"] == outcome.workspace_tree_digest
    assert gateway.outcomes[0]["cliVersion"] == "1.5.47"
    assert gateway.token not in json.dumps(gateway.outcomes[0])


def test_passing_verify_is_success(
    stand_in_gateway: Callable[[str], StandInGateway],
    origin: Origin,
    tmp_path: pathlib.Path,
    cn_path: str,
) -> None:
    gateway = stand_in_gateway(WRITE_THEN_DONE)
    verify = [{"name": "answer", "command": "sh tests/check.sh"}]
    outcome = _run(bundle_for(gateway, origin, tmp_path, cn_path, verify=verify), gateway)
    assert (outcome.status, outcome.exit_code) == (runner.Status.SUCCEEDED, 0), outcome.message


def test_ungranted_secret_stops_the_run_before_the_agent_starts(
    stand_in_gateway: Callable[[str], StandInGateway],
    origin: Origin,
    tmp_path: pathlib.Path,
    cn_path: str,
) -> None:
    gateway = stand_in_gateway(WRITE_THEN_DONE)
    config = CONFIG + (
        "mcpServers:\n  - name: tracker\n    command: tracker-mcp\n"
        "    env:\n      TRACKER_TOKEN: ${{ secrets.TRACKER_TOKEN }}\n"
    )
    canary = tmp_path / "cn-ran"
    fake_cn = tmp_path / "cn"
    fake_cn.write_text(f'#!/bin/sh\ntouch {canary}\nexec {cn_path} "$@"\n')
    fake_cn.chmod(0o755)
    bundle = bundle_for(gateway, origin, tmp_path, str(fake_cn), config=config)

    outcome = _run(bundle, gateway)

    assert outcome.status is runner.Status.POLICY_STOPPED
    assert outcome.exit_code == runner.ExitCode.POLICY_STOPPED == 22
    assert "TRACKER_TOKEN" in outcome.message and "line 16" in outcome.message
    assert not canary.exists(), "the CLI was started despite the policy stop"
    assert outcome.agent is None
    assert not [p for p, _ in gateway.seen if p.endswith("/chat/completions")]
    assert gateway.outcomes and gateway.outcomes[0]["status"] == "PolicyStopped"


def test_agent_failure_and_timeout_have_their_own_exit_codes(
    stand_in_gateway: Callable[[str], StandInGateway],
    origin: Origin,
    tmp_path: pathlib.Path,
    cn_path: str,
) -> None:
    gateway = stand_in_gateway(WRITE_THEN_DONE)
    failing = tmp_path / "failing-cn"
    failing.write_text("#!/bin/sh\necho boom >&2\nexit 7\n")
    failing.chmod(0o755)
    slow = tmp_path / "slow-cn"
    slow.write_text("#!/bin/sh\nsleep 30\n")
    slow.chmod(0o755)

    failed = _run(bundle_for(gateway, origin, tmp_path / "a", str(failing)), gateway)
    timed_out = _run(
        bundle_for(gateway, origin, tmp_path / "b", str(slow), agentTimeoutSeconds=1), gateway
    )
    missing = _run(bundle_for(gateway, origin, tmp_path / "c", str(tmp_path / "nope")), gateway)

    assert (failed.status, failed.exit_code) == (runner.Status.AGENT_FAILED, 20)
    assert failed.agent is not None and "boom" in failed.agent.stderr
    assert (timed_out.status, timed_out.exit_code) == (runner.Status.TIMED_OUT, 24)
    assert timed_out.agent is not None and timed_out.agent.result.timed_out
    assert (missing.status, missing.exit_code) == (runner.Status.CONFIG_ERROR, 23)
    assert "hack/install-cn.sh" in missing.message


def test_module_entrypoint_exit_code_and_outcome_file(
    stand_in_gateway: Callable[[str], StandInGateway],
    origin: Origin,
    tmp_path: pathlib.Path,
    cn_path: str,
) -> None:
    gateway = stand_in_gateway(WRITE_THEN_DONE)
    bundle = bundle_for(gateway, origin, tmp_path, cn_path)
    bundle_file = tmp_path / "bundle.json"
    bundle_file.write_text(bundle.model_dump_json(by_alias=True))
    outcome_file = tmp_path / "outcome.json"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "continue_orchestrator.runner",
            "--bundle",
            str(bundle_file),
            "--outcome",
            str(outcome_file),
        ],
        env={"PATH": "/usr/local/bin:/usr/bin:/bin", runner.TOKEN_ENV: gateway.token},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    written = json.loads(outcome_file.read_text())
    assert written["status"] == "Succeeded"
    assert [f["path"] for f in written["diff"]["files"]] == ["src/NOTES.md", "src/answer.py"]
