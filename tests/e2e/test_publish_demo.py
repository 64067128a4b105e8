"""``orchestrator run`` publishes the demo's fix as a real pull request on a real Gitea.

The demo (the real Continue CLI in gVisor behind the gateway, the scripted model) runs
against a copy of the demo repository on the test forge, with a test copy of its
AgentRun asking for a pull request and of its RunPolicy allowing that repository,
``branch.push`` and ``pullRequest.create``. After the run: the pull request is open from
``agent/fix-rounding``, its body is the evidence ``pull-request.md`` holds (with the
verify command's result from the fresh gVisor sandbox), and its head commit carries the
trailers naming the run, its attestation bundle and its record. A second run whose agent
leaves a file the policy denies for ``file.write`` (written by code it ran, not by a
tool call the gateway could refuse) is not published: the report and the ledger name
the rule, ``orchestrator run`` would exit non-zero, and no branch appears in Gitea.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import shutil
import subprocess
import textwrap
import threading
import uuid
from collections.abc import Callable
from typing import Any, Literal

import pytest
import yaml
from tests.forge import ForgeError, Gitea
from tests.forge import gitea as forge_fixture

from continue_orchestrator import ledger, local

pytestmark = [
    pytest.mark.sandbox,
    pytest.mark.cli,
    pytest.mark.forge,
    pytest.mark.skipif(os.geteuid() != 0, reason="the local gVisor sandbox needs root"),
]

ROOT = pathlib.Path(__file__).resolve().parents[2]
ORCHESTRATOR = str(ROOT / ".venv" / "bin" / "orchestrator")
DEMO = ROOT / "examples" / "demo"
PUBLISH_RULES = [
    {"name": "push-agent-branches", "actions": ["branch.push"], "branches": ["agent/*"],
     "effect": "Allow"},
    {"name": "open-pull-requests", "actions": ["pullRequest.create"], "effect": "Allow"},
    {"name": "no-notes", "actions": ["file.write"], "paths": ["NOTES.md"], "effect": "Deny",
     "reason": "notes stay out of the repository"},
]  # fmt: skip


@pytest.fixture(scope="module")
def cn() -> str:
    done = subprocess.run([str(ROOT / "hack" / "install-cn.sh")], capture_output=True,
                          text=True, check=True)  # fmt: skip
    return done.stdout.strip().splitlines()[-1]


def _repository(gitea: Gitea) -> str:
    name = f"demo-{uuid.uuid4().hex[:8]}"
    gitea.api("POST", "/user/repos", {"name": name, "default_branch": "main"})
    seed = gitea.state_dir / "seed" / f"{forge_fixture.SEED_REPO}.git"
    gitea.git("push", "--quiet", gitea.clone_url(name), "main", cwd=seed)
    gitea.wait_for_branch("main", gitea.seed_commit, repo=name)
    return name


def _manifests(gitea: Gitea, name: str, directory: pathlib.Path) -> pathlib.Path:
    """Test copies of the demo's AgentRun and policies, pointed at the Gitea repository."""
    url = gitea.clone_url(name)
    run = yaml.safe_load((DEMO / "agentrun.yaml").read_text())
    run["spec"]["repository"] = {
        "url": url, "ref": "main", "commit": gitea.seed_commit,
        "credentialsSecretRef": {"name": "forge", "key": "token"},
    }  # fmt: skip
    run["spec"]["output"] = {"pullRequest": {"enabled": True}}
    policy = yaml.safe_load((DEMO / "runpolicy.yaml").read_text())
    for rule in policy["spec"]["rules"]:
        if rule["name"] == "demo-repository":
            rule["repositories"] = [url.removesuffix(".git")]
    repository = [url.removesuffix(".git")]
    policy["spec"]["rules"] += [
        r if r["name"] == "no-notes" else {**r, "repositories": repository} for r in PUBLISH_RULES
    ]
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "agentrun.yaml").write_text(yaml.safe_dump(run))
    (directory / "runpolicy.yaml").write_text(yaml.safe_dump(policy))
    shutil.copy(DEMO / "clusterrunpolicy.yaml", directory / "clusterrunpolicy.yaml")
    return directory / "agentrun.yaml"


def _run(
    gitea: Gitea,
    manifest: pathlib.Path,
    script: local.Script,
    state: pathlib.Path,
    monkeypatch: pytest.MonkeyPatch,
    *,
    approvals: Literal["ask", "approve", "deny"] = "approve",
    say: Callable[[str], None] = lambda line: None,
) -> local.Report:
    monkeypatch.setenv("DEMO_OPENAI_API_KEY", "sk-demo-placeholder-0123456789abcdef")
    monkeypatch.setenv("PUBLISH_FORGE_TOKEN", gitea.token)
    inputs = local.load(
        manifest,
        config_maps=[f"demo-agent={DEMO / 'continue' / 'config.yaml'}"],
        secrets=["OPENAI_API_KEY=env:DEMO_OPENAI_API_KEY"],
        repository_credential="env:PUBLISH_FORGE_TOKEN",
    )
    options = local.Options(state_dir=state, model=local.ScriptedModel(script), approvals=approvals)
    return local.run(inputs, options, say=say)


def _entries(state: pathlib.Path, uid: str) -> list[ledger.Entry]:
    with ledger.open(f"sqlite:///{state / 'ledger.db'}") as book:
        return list(book.entries(run_uid=uid))


def test_the_demo_opens_a_pull_request_with_its_evidence(
    gitea: Gitea, cn: str, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = _repository(gitea)
    manifest = _manifests(gitea, name, tmp_path / "manifests")
    script = local.Script.from_file(DEMO / "model-script.yaml")
    state = tmp_path / "state"
    report = _run(gitea, manifest, script, state, monkeypatch)
    assert report.phase == "Succeeded", report.render()
    done = report.publication
    assert done is not None and done.state == "opened", report.render()
    assert done.branch == "agent/fix-rounding" and done.pushed
    assert [(r.name, r.result.exit_code) for r in done.verify] == [("unit-tests", 0)]
    pull = done.pull_request
    assert pull is not None and pull.head_sha == done.head_sha
    assert report.pull_request is not None and report.pull_request.posted
    written = json.loads((state / "runs" / report.uid / "report.json").read_text())
    assert written["publication"]["pullRequest"]["number"] == pull.number
    assert written["publication"]["pullRequest"]["url"] == pull.url
    assert written["publication"]["pullRequest"]["headSha"] == done.head_sha

    (opened,) = gitea.pulls(name)
    assert (opened.number, opened.state) == (pull.number, "open")
    full = gitea.full_name(name)
    detail: dict[str, Any] = gitea.api("GET", f"/repos/{full}/pulls/{pull.number}")
    assert detail["head"]["ref"] == "agent/fix-rounding" and detail["base"]["ref"] == "main"
    body = pathlib.Path(report.pull_request.path).read_text(encoding="utf-8")
    assert detail["body"].strip() == body.strip()
    assert "| fresh sandbox | `unit-tests` | `python3 -m unittest -v` | 0 |" in body
    assert "| agent's sandbox | `unit-tests` | `python3 -m unittest -v` | 0 |" in body
    assert report.attestation is not None and report.attestation.bundle_digest
    assert report.attestation.bundle_digest in body

    commit = gitea.api("GET", f"/repos/{full}/git/commits/{pull.head_sha}")
    message = commit["commit"]["message"]
    assert f"Orchestrator-Run: demo/fix-rounding ({report.uid})" in message
    assert f"Orchestrator-Attestation: {report.attestation.bundle_digest}" in message
    assert f"Orchestrator-Record: {report.record_digest}" in message
    assert [p["sha"] for p in commit["parents"]] == [gitea.seed_commit]
    files = gitea.api("GET", f"/repos/{full}/pulls/{pull.number}/files")
    assert sorted(f["filename"] for f in files) == sorted(f.path for f in report.diff_files)

    entries = _entries(state, report.uid)
    kinds = [e.kind for e in entries]
    finished = kinds.index(ledger.Kind.RUN_FINISHED)
    published = [k for k in kinds[finished:] if k.value.startswith(("publication.", "pull_"))]
    assert published == [
        ledger.Kind.PUBLICATION_CHECKED, ledger.Kind.PUBLICATION_VERIFIED,
        ledger.Kind.PUBLICATION_PUSHED, ledger.Kind.PULL_REQUEST_OPENED,
        ledger.Kind.PUBLICATION_SUMMARY,
    ]  # fmt: skip
    # The held test change is held again at publication; --approve-all granted it.
    granted = [e.payload or {} for e in entries[finished:]
               if e.kind is ledger.Kind.APPROVAL_GRANTED]  # fmt: skip
    assert [(g["for"], g["rule"]) for g in granted] == [
        ("publication", "demo-fixer/tests-need-approval")
    ]
    assert "(--approve-all)" in granted[0]["by"]
    assert report.ledger is not None and report.ledger.verified, report.ledger
    # The forge token pushed, and is in nothing the run left behind.
    for path in state.rglob("*"):
        assert not path.is_file() or gitea.token.encode() not in path.read_bytes(), path


NOTES_WRITER = textwrap.dedent('''\
    """Prices in cents."""
    import pathlib

    pathlib.Path(__file__).resolve().parents[2].joinpath("NOTES.md").write_text("notes\\n")


    def apply_discount(cents: int, percent: int) -> int:
        """The price after a discount of ``percent``, rounded half up to a whole cent."""
        if not 0 <= percent <= 100:
            raise ValueError(f"percent must be 0-100, not {percent}")
        return (cents * (100 - percent) + 50) // 100
''')


def test_a_file_the_policy_denies_is_not_published(
    gitea: Gitea, cn: str, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = _repository(gitea)
    manifest = _manifests(gitea, name, tmp_path / "manifests")
    script = local.Script.from_data(
        {
            "turns": [
                {"tool_calls": [{"id": "call_fix", "name": "Write",
                                 "arguments": {"filepath": "src/shop/pricing.py",
                                               "content": NOTES_WRITER}}]},
                {"tool_calls": [{"id": "call_test", "name": "Bash",
                                 "arguments": {"command": "python3 -m unittest"}}],
                 "expect": {"last_role": "tool"}},
                {"text": "Fixed.", "expect": {"last_role": "tool"}},
            ]
        }
    )  # fmt: skip
    state = tmp_path / "state"
    report = _run(gitea, manifest, script, state, monkeypatch)
    assert report.phase == "Succeeded", report.render()
    assert "NOTES.md" in [f.path for f in report.diff_files], report.diff_files
    done = report.publication
    assert done is not None and done.state == "failed", report.render()
    assert done.step == "policy" and done.rule == "demo-fixer/no-notes"
    assert "NOTES.md" in done.message and not done.pushed
    assert report.pull_request is not None and not report.pull_request.posted
    assert "publication  FAILED at policy" in report.render()
    failed = [e.payload or {} for e in _entries(state, report.uid)
              if e.kind is ledger.Kind.PUBLICATION_FAILED]  # fmt: skip
    assert [f["rule"] for f in failed] == ["demo-fixer/no-notes"]
    with pytest.raises(ForgeError) as missing:
        gitea.api("GET", f"/repos/{gitea.full_name(name)}/branches/agent%2Ffix-rounding")
    assert missing.value.status == 404
    assert gitea.pulls(name) == []


def test_a_person_approves_the_publication_with_orchestrator_approve(
    gitea: Gitea, cn: str, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without --approve-all, the demo's held tests/** write is held twice: during the run
    (a tool call) and at publication, each until a person runs the printed command."""
    name = _repository(gitea)
    manifest = _manifests(gitea, name, tmp_path / "manifests")
    lines: list[str] = []
    approvals: list[subprocess.CompletedProcess[str]] = []
    deciders: list[threading.Thread] = []

    def approve(argv: list[str]) -> None:
        approvals.append(subprocess.run([*argv, "--by", "alice"], capture_output=True,
                                        text=True, timeout=60))  # fmt: skip

    def say(text: str) -> None:
        lines.append(text)
        for line in text.splitlines():
            match = re.search(r"approve:\s+(orchestrator approve .*)$", line)
            if match:  # another terminal: never block the run that printed it
                argv = match.group(1).split()
                argv[0] = ORCHESTRATOR
                deciders.append(threading.Thread(target=approve, args=(argv,)))
                deciders[-1].start()

    script = local.Script.from_file(DEMO / "model-script.yaml")
    state = tmp_path / "state"
    report = _run(gitea, manifest, script, state, monkeypatch, approvals="ask", say=say)
    for decider in deciders:
        decider.join(timeout=60)
    output = "\n".join(lines)
    assert [a.returncode for a in approvals] == [0, 0], [a.stderr for a in approvals]
    assert "WAITING FOR APPROVAL of publication: file.write path='tests/test_pricing.py'" in output
    done = report.publication
    assert done is not None and done.state == "opened", report.render()
    assert len(gitea.pulls(name)) == 1
    entries = _entries(state, report.uid)
    finished = [e.kind for e in entries].index(ledger.Kind.RUN_FINISHED)
    granted = [e.payload or {} for e in entries[finished:]
               if e.kind is ledger.Kind.APPROVAL_GRANTED]  # fmt: skip
    assert [(g["for"], g["by"], g["callId"]) for g in granted] == [
        ("publication", "alice", "publication-1")
    ]
