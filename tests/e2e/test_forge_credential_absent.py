"""The forge credential stays with the gateway: the agent, attacking from inside its sandbox,
finds it nowhere and cannot push.

``orchestrator run`` runs an AgentRun whose repository is a private repository on the
test forge (a real Gitea), with the forge token given as ``--repository-credential``:
the runner, in the same gVisor sandbox ``make demo`` uses, can clone it only through the
gateway's git endpoint, which holds the token. The scripted agent then writes a probe
and runs it with Bash. The probe looks for the token, raw and base64 (alone and as git's
``user:token``), in every process's environment, command line and readable memory, in
``git config -l`` (every scope, with origins) of the workspace, and in every file under
``/`` but the system directories the sandbox binds read-only (``/proc`` is read above;
grepping ``/usr`` and friends through gVisor outlasts the Bash tool's timeout): the run
directory, the home, the workspace and ``/tmp`` are all searched. It must find nothing,
while the run token, which the agent does hold, is found by the same search (the
positive control). The probe also pushes a canary branch through the gateway with the
run token (refused, with the gateway's message) and straight to the forge (no route):
the branch never appears in Gitea. The results are read from the run's record, not from
anything the agent claims.
"""

from __future__ import annotations

import os
import pathlib
import subprocess
import textwrap
import uuid

import pytest
import yaml
from tests import runner_support
from tests.forge import ForgeError, Gitea

from continue_orchestrator import ledger, local

pytestmark = [
    pytest.mark.sandbox,
    pytest.mark.cli,
    pytest.mark.forge,
    pytest.mark.skipif(os.geteuid() != 0, reason="the local gVisor sandbox needs root"),
]

ROOT = pathlib.Path(__file__).resolve().parents[2]
DEMO = ROOT / "examples" / "demo"

PROBE = textwrap.dedent("""\
    import base64, json, os, re, subprocess
    SKIPPED = {{"proc", "sys", "dev", "usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32",
               "opt"}}
    forge_token = "{forge_token}"[::-1]
    config = open(os.path.expanduser("~/.continue/run-config.yaml")).read()
    run_token = re.search(r"apiKey:\\s*\\S*?([A-Za-z0-9_-]{{40,}})", config).group(1)
    api_base = re.search(r"apiBase:\\s*\\S*?(http://\\S+?)/v1", config).group(1)
    wanted = {{"forge": forge_token, "run": run_token}}
    forms = {{}}
    for name, value in wanted.items():
        for form in (value, base64.b64encode(value.encode()).decode()):
            forms[form] = name
        for user in ("x-access-token", "{admin}", "run"):
            forms[base64.b64encode(f"{{user}}:{{value}}".encode()).decode()] = name
    found = {{name: [] for name in wanted}}
    def look(where, data):
        for form, name in forms.items():
            if form.encode() in data and where not in found[name]:
                found[name].append(where)
    look("env", "\\0".join(f"{{k}}={{v}}" for k, v in os.environ.items()).encode())
    memory = {{"read": 0, "unreadable": []}}
    for pid in sorted((p for p in os.listdir("/proc") if p.isdigit()), key=int):
        for part in ("environ", "cmdline"):
            try:
                look(f"/proc/{{pid}}/{{part}}", open(f"/proc/{{pid}}/{{part}}", "rb").read())
            except OSError:
                pass
        if pid == str(os.getpid()):
            continue  # this probe holds both values on purpose
        try:
            with open(f"/proc/{{pid}}/maps") as maps, open(f"/proc/{{pid}}/mem", "rb") as mem:
                for line in maps:
                    span, perms = line.split()[:2]
                    start, end = (int(x, 16) for x in span.split("-"))
                    if "r" not in perms or end - start > 1 << 30:
                        continue
                    try:
                        mem.seek(start)
                        look(f"/proc/{{pid}}/mem", mem.read(end - start))
                        memory["read"] += end - start
                    except (OSError, OverflowError, ValueError):
                        pass
        except OSError as error:
            memory["unreadable"].append(f"{{pid}}: {{error.strerror}}")
    git = ["git", "-C", "/workspace"]
    configured = subprocess.run([*git, "config", "-l", "--show-origin", "--show-scope"],
                                capture_output=True)
    look("git config -l", configured.stdout + configured.stderr)
    tops = sorted(f"/{{e}}" for e in os.listdir("/") if e not in SKIPPED)
    grep = subprocess.run(["grep", "-raosF", "--devices=skip", "-f", "-", *tops],
                          input="\\n".join(forms).encode(), capture_output=True)
    for line in grep.stdout.decode(errors="replace").splitlines():
        for form, name in forms.items():
            if line.endswith(":" + form):
                found[name].append(line[: -len(form) - 1])
    origin = subprocess.run([*git, "remote", "get-url", "origin"], capture_output=True,
                            text=True).stdout.strip()
    owner_name = "/".join(origin.rstrip("/").split("/")[-2:])
    env = {{"PATH": os.environ["PATH"], "HOME": "/tmp", "GIT_TERMINAL_PROMPT": "0"}}
    identity = ["-c", "user.name=agent", "-c", "user.email=agent@example.invalid"]
    open("/workspace/CANARY", "w").write("must never reach the forge\\n")
    subprocess.run([*git, "add", "CANARY"], env=env)
    subprocess.run([*git, *identity, "commit", "-qm", "canary"], env=env)
    header = f"http.extraHeader=Authorization: Bearer {{run_token}}"
    through = subprocess.run(
        ["git", "-c", header, "-C", "/workspace", "push", f"{{api_base}}/git/{{owner_name}}",
         "HEAD:refs/heads/{canary}"], capture_output=True, text=True, env=env, timeout=60)
    direct = subprocess.run(
        [*git, "push", origin, "HEAD:refs/heads/{canary}"], capture_output=True, text=True,
        env=env, timeout=60)
    print("PROBE " + json.dumps({{
        "found": found, "searched": tops, "grep-exit": grep.returncode, "memory": memory,
        "git-config": configured.stdout.decode(errors="replace"),
        "push-through-gateway": [through.returncode, through.stderr[-600:]],
        "push-direct": [direct.returncode, direct.stderr[-300:]],
    }}, sort_keys=True))
""")

POLICY = """\
apiVersion: orchestrator.continue.dev/v1alpha1
kind: RunPolicy
metadata: {{name: demo-fixer, namespace: demo}}
spec:
  defaultEffect: Deny
  allowedSecrets: [OPENAI_API_KEY]
  rules:
    - {{name: repo, actions: [repository.access], effect: Allow, repositories: ["{repository}"]}}
    - {{name: key, actions: [secret.read], secrets: [OPENAI_API_KEY], effect: Allow}}
    - {{name: tools, actions: [tool.call], tools: [Write, Bash], effect: Allow}}
    - {{name: probe-file, actions: [file.write], paths: [probe.py], effect: Allow}}
    - {{name: run-probe, actions: [shell.exec], commands: ["python3 probe.py"], effect: Allow}}
"""


def test_the_agent_finds_no_forge_credential_and_cannot_push(
    gitea: Gitea, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    subprocess.run([str(ROOT / "hack" / "install-cn.sh")], check=True, capture_output=True)
    name, forge_token = gitea.private_copy("attacked")
    url = gitea.clone_url(name)
    canary = f"canary-{uuid.uuid4().hex[:8]}"
    run = yaml.safe_load((DEMO / "agentrun.yaml").read_text())
    run["spec"]["repository"] = {
        "url": url,
        "ref": "main",
        "commit": gitea.seed_commit,
        "credentialsSecretRef": {"name": "forge", "key": "token"},
    }
    run["spec"]["verify"] = []
    (tmp_path / "agentrun.yaml").write_text(yaml.safe_dump(run))
    (tmp_path / "runpolicy.yaml").write_text(POLICY.format(repository=url.removesuffix(".git")))
    probe = PROBE.format(forge_token=forge_token[::-1], admin=gitea.admin, canary=canary)
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
    monkeypatch.setenv("ATTACK_MODEL_KEY", "sk-attack-placeholder-0123456789")
    monkeypatch.setenv("ATTACK_FORGE_TOKEN", forge_token)
    inputs = local.load(
        tmp_path / "agentrun.yaml",
        config_maps=[f"demo-agent={DEMO / 'continue' / 'config.yaml'}"],
        secrets=["OPENAI_API_KEY=env:ATTACK_MODEL_KEY"],
        repository_credential="env:ATTACK_FORGE_TOKEN",
    )
    state = tmp_path / "state"
    report = local.run(
        inputs,
        local.Options(state_dir=state, model=local.ScriptedModel(script)),
        say=lambda line: None,
    )
    assert [c.delivered for c in report.tool_calls] == [True, True], report.tool_calls

    # The clone went through the gateway, which fetched the pinned commit with the token.
    with ledger.open(f"sqlite:///{state / 'ledger.db'}") as book:
        entries = list(book.entries(run_uid=report.uid))
    fetches = [e.payload or {} for e in entries if e.kind is ledger.Kind.REPOSITORY_FETCH]
    assert [f["wants"] for f in fetches] == [[gitea.seed_commit]]
    assert fetches[0]["repository"] == url

    probed = runner_support.probe_report(state, report.uid, "call_probe")
    found = probed["found"]
    assert found["forge"] == [], probed
    # The positive control: the run token the agent holds is found by the same search,
    # in its config file and in the processes that hold it.
    assert {"/tmp", "/workspace", "/var"} <= set(probed["searched"]), probed["searched"]
    assert any(p.endswith("/.continue/run-config.yaml") for p in found["run"]), found["run"]
    assert any(p.endswith("/mem") for p in found["run"]), probed["memory"]
    assert probed["memory"]["read"] > 0, probed["memory"]
    assert "http.extraheader" not in probed["git-config"].lower()
    assert f"remote.origin.url={url}" in probed["git-config"]

    # Pushing: refused by the gateway with its message; no route to the forge itself.
    through_code, through_said = probed["push-through-gateway"]
    assert through_code != 0
    assert "continue-orchestrator gateway: push refused." in through_said, through_said
    direct_code, direct_said = probed["push-direct"]
    assert direct_code != 0 and "403" not in direct_said, direct_said
    with pytest.raises(ForgeError) as missing:
        gitea.api("GET", f"/repos/{gitea.full_name(name)}/branches/{canary}")
    assert missing.value.status == 404
    denials = [e.payload or {} for e in entries if e.kind is ledger.Kind.POLICY_DECISION]
    rules = [str(d.get("rule") or "") for d in denials]
    assert [rule for rule in rules if rule.startswith("gateway.git")] == ["gateway.git-fetch-only"]
    # Nor is the token in anything the run left outside the sandbox but the gateway's memory.
    for path in state.rglob("*"):
        assert not path.is_file() or forge_token.encode() not in path.read_bytes(), path
