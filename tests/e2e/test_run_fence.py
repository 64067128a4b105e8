"""The fence ``orchestrator run`` puts around an agent, attacked from inside by the agent.

The scripted agent writes a probe and runs it with the Bash tool, inside the same
sandbox ``make demo`` uses: it finds the gateway in its own config, then tries the
gateway, another port on the gateway's address, its loopback, another address of this
machine and the internet. Only the gateway may answer, and the run token the agent holds
does not open the gateway's admin API (where approvals are decided). The result is read
from the run's record (the tool result the gateway saw), not from anything the agent
claims.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import socket
import subprocess
import textwrap
from collections.abc import Iterator

import pytest
import yaml
from tests import runner_support

from continue_orchestrator import ledger, local

pytestmark = [
    pytest.mark.sandbox,
    pytest.mark.cli,
    pytest.mark.skipif(os.geteuid() != 0, reason="the local gVisor sandbox needs root"),
]

ROOT = pathlib.Path(__file__).resolve().parents[2]
DEMO = ROOT / "examples" / "demo"
OTHER_ADDRESS = "10.213.255.78"

PROBE = textwrap.dedent("""\
    import json, os, re, socket
    config = open(os.path.expanduser("~/.continue/run-config.yaml")).read()
    host, port = re.search(r"apiBase:\\s*\\S*?http://([0-9.]+):([0-9]+)", config).groups()
    targets = {{"gateway": (host, int(port)), "gateway-host-other-port": (host, {port}),
               "loopback": ("127.0.0.1", {port}), "other-host-address": ("{other}", {port}),
               "internet": ("1.1.1.1", 443)}}
    found = {{}}
    for name, target in targets.items():
        try:
            socket.create_connection(target, timeout=3).close()
            found[name] = "connected"
        except OSError as error:
            found[name] = type(error).__name__
    # With the run token it holds, may the agent decide approvals on the admin API?
    import urllib.error, urllib.request
    run = re.search(r"/runs/([^/]+)/v1", config).group(1)
    key = re.search(r"apiKey:\\s*\\S*?([A-Za-z0-9_-]{{20,}})", config).group(1)
    request = urllib.request.Request(
        f"http://{{host}}:{{port}}/admin/runs/{{run}}/approvals/call_any", method="POST",
        data=b'{{"decision": "approve", "by": "agent"}}',
        headers={{"Authorization": "Bearer " + key, "Content-Type": "application/json"}})
    try:
        found["admin-with-run-token"] = str(urllib.request.urlopen(request, timeout=5).status)
    except urllib.error.HTTPError as error:
        found["admin-with-run-token"] = str(error.code)
    print("PROBE " + json.dumps(found, sort_keys=True))
""")

POLICY = """\
apiVersion: orchestrator.continue.dev/v1alpha1
kind: RunPolicy
metadata: {name: demo-fixer, namespace: demo}
spec:
  defaultEffect: Deny
  allowedSecrets: [OPENAI_API_KEY]
  rules:
    - {name: repo, actions: [repository.access], effect: Allow,
       repositories: ["file:///var/tmp/continue-orchestrator-demo/*"]}
    - {name: key, actions: [secret.read], secrets: [OPENAI_API_KEY], effect: Allow}
    - {name: tools, actions: [tool.call], tools: [Write, Bash], effect: Allow}
    - {name: probe-file, actions: [file.write], paths: [probe.py], effect: Allow}
    - {name: run-probe, actions: [shell.exec], commands: ["python3 probe.py"], effect: Allow}
"""


@pytest.fixture
def listener() -> Iterator[int]:
    """A host service on every address, and a second address of this machine."""
    subprocess.run(["ip", "addr", "add", f"{OTHER_ADDRESS}/32", "dev", "lo"], check=True)
    server = socket.create_server(("0.0.0.0", 0))
    server.listen()
    try:
        yield int(server.getsockname()[1])
    finally:
        server.close()
        subprocess.run(["ip", "addr", "del", f"{OTHER_ADDRESS}/32", "dev", "lo"], check=False)


def test_only_the_gateway_answers_the_agent(
    listener: int, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    subprocess.run([str(ROOT / "hack" / "demo-origin.sh")], check=True, capture_output=True)
    subprocess.run([str(ROOT / "hack" / "install-cn.sh")], check=True, capture_output=True)
    shutil.copy(DEMO / "agentrun.yaml", tmp_path / "agentrun.yaml")
    (tmp_path / "runpolicy.yaml").write_text(POLICY)
    script = {
        "turns": [
            {"tool_calls": [{"id": "call_probe_file", "name": "Write", "arguments": {
                "filepath": "probe.py",
                "content": PROBE.format(port=listener, other=OTHER_ADDRESS)}}]},
            {"tool_calls": [{"id": "call_probe", "name": "Bash",
                             "arguments": {"command": "python3 probe.py"}}],
             "expect": {"last_role": "tool"}},
            {"text": "Probed.", "expect": {"last_role": "tool"}},
        ]
    }  # fmt: skip
    (tmp_path / "script.yaml").write_text(yaml.safe_dump(script))
    monkeypatch.setenv("FENCE_KEY", "sk-fence-placeholder-0123456789")
    inputs = local.load(
        tmp_path / "agentrun.yaml",
        config_maps=[f"demo-agent={DEMO / 'continue' / 'config.yaml'}"],
        secrets=["OPENAI_API_KEY=env:FENCE_KEY"],
    )
    report = local.run(
        inputs,
        local.Options(state_dir=tmp_path / "state", model_script=tmp_path / "script.yaml"),
        say=lambda line: None,
    )
    assert [c.delivered for c in report.tool_calls] == [True, True], report.tool_calls

    found = runner_support.probe_report(tmp_path / "state", report.uid, "call_probe")
    assert found.pop("gateway") == "connected"
    assert found.pop("admin-with-run-token") == "401"
    assert set(found) == {"gateway-host-other-port", "loopback", "other-host-address", "internet"}
    assert all(outcome != "connected" for outcome in found.values()), found
    with ledger.open(f"sqlite:///{tmp_path / 'state' / 'ledger.db'}") as book:
        created = next(book.entries(run_uid=report.uid))
        assert created.payload is not None and created.payload["sandbox"] == "gvisor"
