"""The model key is brokered: the gateway holds it and the sandbox never sees it, attacked
from inside by the agent.

``orchestrator run`` runs the demo with a config whose model takes its apiKey from one
secret and whose rules quote another. The scripted agent writes a probe and runs it with
Bash, inside the same gVisor sandbox ``make demo`` uses: it reads every environment it
can (its own, and ``/proc/*/environ`` and ``cmdline`` of every process in the sandbox)
and greps the filesystem from ``/`` for each secret's value, raw and base64 (all but
``/proc``, read above, ``/sys``, ``/dev``, and this machine's system directories
(``/usr``, ``/bin``, ``/sbin``, ``/lib*``, ``/opt``) that the sandbox binds read-only:
no run writes to them, and grepping their gigabytes through gVisor outlasts the Bash
tool's timeout). The
model key must be found nowhere, while the other granted secret must be found (it is
delivered: the probe can see a secret when there is one), and the upstream model must
have received the real key from the gateway. The probe holds each value reversed, so
neither is in the sandbox merely because the probe is; the values are random per run,
so no file on this machine holds them by chance. The result is read from the run's
record (the tool result the gateway saw), not from anything the agent claims.
"""

from __future__ import annotations

import os
import pathlib
import secrets
import subprocess
import textwrap

import pytest
import yaml
from tests import continue_config, runner_support

from continue_orchestrator import local

pytestmark = [
    pytest.mark.sandbox,
    pytest.mark.cli,
    pytest.mark.skipif(os.geteuid() != 0, reason="the local gVisor sandbox needs root"),
]

ROOT = pathlib.Path(__file__).resolve().parents[2]
DEMO = ROOT / "examples" / "demo"

PROBE = textwrap.dedent("""\
    import base64, json, os, subprocess
    SKIPPED = {{"proc", "sys", "dev", "usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32",
               "opt"}}
    wanted = {{"model-key": "{model_key}"[::-1], "delivered": "{delivered}"[::-1]}}
    forms = {{form: name for name, value in wanted.items()
             for form in (value, base64.b64encode(value.encode()).decode())}}
    found = {{name: [] for name in wanted}}
    environment = "\\0".join(f"{{k}}={{v}}" for k, v in os.environ.items())
    for form, name in forms.items():
        if form in environment:
            found[name].append("env")
    for pid in (p for p in os.listdir("/proc") if p.isdigit()):
        for part in ("environ", "cmdline"):
            try:
                data = open(f"/proc/{{pid}}/{{part}}", "rb").read()
            except OSError:
                continue
            for form, name in forms.items():
                if form.encode() in data:
                    found[name].append(f"/proc/{{pid}}/{{part}}")
    tops = sorted(f"/{{e}}" for e in os.listdir("/") if e not in SKIPPED)
    grep = subprocess.run(
        ["grep", "-raosF", "--devices=skip", "-f", "-", *tops],
        input="\\n".join(forms).encode(), capture_output=True)
    for line in grep.stdout.decode(errors="replace").splitlines():
        for form, name in forms.items():
            if line.endswith(":" + form):
                found[name].append(line[: -len(form) - 1])
    found["searched"] = tops
    found["grep-exit"] = grep.returncode
    print("PROBE " + json.dumps(found, sort_keys=True))
""")

CONFIG = continue_config.text(
    name="brokered-key",
    roles="[chat, edit]",
    rest='rules:\n  - "Tracker token for the ticket system: ${{ secrets.TRACKER_TOKEN }}"\n',
)

POLICY = """\
apiVersion: orchestrator.continue.dev/v1alpha1
kind: RunPolicy
metadata: {name: demo-fixer, namespace: demo}
spec:
  defaultEffect: Deny
  allowedSecrets: [OPENAI_API_KEY, TRACKER_TOKEN]
  rules:
    - {name: repo, actions: [repository.access], effect: Allow,
       repositories: ["file:///var/tmp/continue-orchestrator-demo/*"]}
    - {name: keys, actions: [secret.read], secrets: [OPENAI_API_KEY, TRACKER_TOKEN],
       effect: Allow}
    - {name: tools, actions: [tool.call], tools: [Write, Bash], effect: Allow}
    - {name: probe-file, actions: [file.write], paths: [probe.py], effect: Allow}
    - {name: run-probe, actions: [shell.exec], commands: ["python3 probe.py"], effect: Allow}
"""


def test_the_model_key_is_nowhere_in_the_sandbox(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    subprocess.run([str(ROOT / "hack" / "demo-origin.sh")], check=True, capture_output=True)
    subprocess.run([str(ROOT / "hack" / "install-cn.sh")], check=True, capture_output=True)
    model_key = "sk-brokered-" + secrets.token_hex(16)
    delivered = "trk-delivered-" + secrets.token_hex(16)
    run = yaml.safe_load((DEMO / "agentrun.yaml").read_text())
    run["spec"]["secrets"].append(
        {"name": "TRACKER_TOKEN", "secretKeyRef": {"name": "tracker", "key": "token"}}
    )
    run["spec"]["verify"] = []
    (tmp_path / "agentrun.yaml").write_text(yaml.safe_dump(run))
    (tmp_path / "runpolicy.yaml").write_text(POLICY)
    (tmp_path / "config.yaml").write_text(CONFIG)
    probe = PROBE.format(model_key=model_key[::-1], delivered=delivered[::-1])
    script = local.Script.from_data(
        {
            "turns": [
                {"tool_calls": [{"id": "call_probe_file", "name": "Write",
                                 "arguments": {"filepath": "probe.py", "content": probe}}]},
                {"tool_calls": [{"id": "call_probe", "name": "Bash",
                                 "arguments": {"command": "python3 probe.py"}}],
                 "expect": {"last_role": "tool"}},
                {"text": "Probed.", "expect": {"last_role": "tool"}},
            ]
        }
    )  # fmt: skip
    model = local.ScriptedModel(script)
    monkeypatch.setenv("BROKERED_MODEL_KEY", model_key)
    monkeypatch.setenv("DELIVERED_TRACKER_TOKEN", delivered)
    inputs = local.load(
        tmp_path / "agentrun.yaml",
        config_maps=[f"demo-agent={tmp_path / 'config.yaml'}"],
        secrets=[
            "OPENAI_API_KEY=env:BROKERED_MODEL_KEY",
            "TRACKER_TOKEN=env:DELIVERED_TRACKER_TOKEN",
        ],
    )
    report = local.run(
        inputs,
        local.Options(state_dir=tmp_path / "state", model=model),
        say=lambda line: None,
    )
    assert [c.delivered for c in report.tool_calls] == [True, True], report.tool_calls

    # The gateway called the upstream with the real key, and only ever with it.
    assert len(model.authorizations) == 3, model.failures
    assert set(model.authorizations) == {f"Bearer {model_key}"}

    found = runner_support.probe_report(tmp_path / "state", report.uid, "call_probe")
    assert found["model-key"] == [], found
    # The positive control: a delivered secret is seen, in the agent's config and the
    # run directory (the pod's mounted secrets/), so the search does find values.
    assert {"/tmp", "/workspace"} <= set(found["searched"]), found
    places = found["delivered"]
    assert any(p.endswith("/.continue/run-config.yaml") for p in places), places
    assert any(p.endswith("/secrets/TRACKER_TOKEN") for p in places), places
    run_dir = tmp_path / "state" / "runs" / report.uid / "run"
    assert sorted(p.name for p in (run_dir / "secrets").iterdir()) == ["TRACKER_TOKEN"]
