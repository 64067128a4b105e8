"""``make demo``'s run, end to end, checked against what was recorded rather than what was
printed: the real Continue CLI in gVisor behind the real gateway, the scripted model, a
SQLite ledger, the record store and a development-key attestation.

The report must match the ledger entry for entry; the ledger must verify with
``orchestrator ledger verify`` and the attestation with ``orchestrator verify``; the
placeholder model key must appear in no record; the denied push must not have reached
the origin; and a person approving from another terminal with the printed command must
be what lets the held test change through.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import pathlib
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from continue_orchestrator import attest, digest, ledger, records

pytestmark = [
    pytest.mark.sandbox,
    pytest.mark.cli,
    pytest.mark.skipif(os.geteuid() != 0, reason="the local gVisor sandbox needs root"),
]

ROOT = pathlib.Path(__file__).resolve().parents[2]
DEMO = ROOT / "examples" / "demo"
ORCHESTRATOR = str(ROOT / ".venv" / "bin" / "orchestrator")
PLACEHOLDER_KEY = "sk-demo-placeholder-0123456789abcdef"
EXPECTED = [
    ("Read", "src/shop/pricing.py", "Allow", True),
    ("Read", "tests/test_pricing.py", "Allow", True),
    ("Bash", "python3 -m unittest", "Allow", True),
    ("Write", ".github/workflows/ci.yml", "Deny", False),
    ("Write", "src/shop/pricing.py", "Allow", True),
    ("Write", "tests/test_pricing.py", "RequireApproval", True),
    ("Bash", "python3 -m unittest -v", "Allow", True),
    ("Bash", "git push origin HEAD:main", "Deny", False),
]


@pytest.fixture(scope="module")
def origin() -> str:
    done = subprocess.run(
        [str(ROOT / "hack" / "demo-origin.sh")], capture_output=True, text=True, check=True
    )
    return done.stdout.strip()


@pytest.fixture(scope="module")
def cn() -> str:
    done = subprocess.run(
        [str(ROOT / "hack" / "install-cn.sh")], capture_output=True, text=True, check=True
    )
    return done.stdout.strip().splitlines()[-1]


def _command(state: pathlib.Path, *extra: str) -> list[str]:
    return [
        ORCHESTRATOR, "run", str(DEMO / "agentrun.yaml"),
        "--config-map", f"demo-agent={DEMO / 'continue' / 'config.yaml'}",
        "--secret", "OPENAI_API_KEY=env:DEMO_OPENAI_API_KEY",
        "--model-script", str(DEMO / "model-script.yaml"),
        "--state-dir", str(state), *extra,
    ]  # fmt: skip


def _env() -> dict[str, str]:
    return {**os.environ, "DEMO_OPENAI_API_KEY": PLACEHOLDER_KEY}


@contextlib.contextmanager
def _running(argv: list[str], lines: list[str], **kwargs: Any) -> Iterator[subprocess.Popen[str]]:
    """``orchestrator run`` in the background; if the test fails or times out meanwhile,
    it is stopped (its sandbox with it) and the output read so far is in the report."""
    process = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kwargs
    )
    try:
        yield process
    except BaseException:
        print("orchestrator run said:\n" + "".join(lines)[-4000:], file=sys.stderr)
        raise
    finally:
        if process.poll() is None:
            process.terminate()  # SIGTERM: it cleans its sandbox up
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)


def _report(state: pathlib.Path) -> dict[str, Any]:
    (path,) = state.glob("runs/*/report.json")
    report: dict[str, Any] = json.loads(path.read_text())
    return report


def _origin_head() -> str:
    return subprocess.run(
        ["git", "-C", "/var/tmp/continue-orchestrator-demo/origin.git", "rev-parse", "main"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip


@pytest.fixture(scope="module")
def demo(
    origin: str, cn: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[pathlib.Path, subprocess.CompletedProcess[str]]]:
    state = tmp_path_factory.mktemp("demo-state")
    done = subprocess.run(
        _command(state, "--approve-all"), capture_output=True, text=True, env=_env(), timeout=600
    )
    yield state, done


def test_demo_succeeds_and_reports_what_the_ledger_holds(
    demo: tuple[pathlib.Path, subprocess.CompletedProcess[str]], origin: str
) -> None:
    state, done = demo
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    report = _report(state)
    assert report["phase"] == "Succeeded" and report["sandbox"] == "gvisor"
    calls = [
        (c["tool"], c["arguments"].get("filepath") or c["arguments"].get("command"),
         c["effect"], c["delivered"])
        for c in report["toolCalls"]
    ]  # fmt: skip
    assert calls == EXPECTED
    assert (report["allowed"], report["denied"], report["approved"]) == (5, 2, 1)
    assert [(v["name"], v["passed"]) for v in report["verify"]] == [("unit-tests", True)]
    assert sorted(f["path"] for f in report["diffFiles"]) == [
        "src/shop/pricing.py", "tests/test_pricing.py",
    ]  # fmt: skip

    # The report against the ledger itself: same calls, same decisions, same head.
    with ledger.open(f"sqlite:///{state / 'ledger.db'}") as book:
        entries = list(book.entries(run_uid=report["uid"]))
        decisions = [e.payload for e in entries if e.kind is ledger.Kind.POLICY_DECISION]
        delivered = {e.payload["callId"] for e in entries if e.kind is ledger.Kind.TOOL_CALL}
        granted = [e.payload for e in entries if e.kind is ledger.Kind.APPROVAL_GRANTED]
        assert [(d["callId"], d["effect"]) for d in decisions] == [
            (c["callId"], c["effect"]) for c in report["toolCalls"]
        ]
        assert delivered == {c["callId"] for c in report["toolCalls"] if c["delivered"]}
        assert [g["callId"] for g in granted] == ["call_add_test"]
        assert "(--approve-all)" in granted[0]["by"]
        assert entries[-1].entry_hash == report["ledger"]["headHash"]
        finished = [e for e in entries if e.kind is ledger.Kind.RUN_FINISHED]
        assert [e.payload["status" if e.actor == "runner" else "phase"] for e in finished] == [
            "Succeeded", "Succeeded",
        ]  # fmt: skip

    # The runner's outcome, as the gateway recorded it, holds the same diff and verify.
    store = records.BlobStore(str(state / "records"))
    (outcome_step,) = [x for x in records.load(store, report["uid"]).exchanges
                       if x.kind == "run.outcome"]  # fmt: skip
    outcome = json.loads(store.get(outcome_step.blobs["outcome"]))
    assert outcome["diff"]["digest"] == report["diffDigest"]
    assert outcome["verify"][0]["result"]["exitCode"] == 0
    assert outcome["baseCommit"] == origin
    # The denied push never reached the origin.
    assert _origin_head() == origin


def test_ledger_and_attestation_verify_with_the_cli(
    demo: tuple[pathlib.Path, subprocess.CompletedProcess[str]],
) -> None:
    state, done = demo
    report = _report(state)
    key = state / "keys" / "DEVELOPMENT-ONLY-attestation.pub"
    checked = subprocess.run(
        [ORCHESTRATOR, "ledger", "verify", f"sqlite:///{state / 'ledger.db'}",
         "--public-key", str(key)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "(1 signatures verified)" in checked.stdout
    bundle = report["attestation"]["location"]
    verified = subprocess.run(
        [ORCHESTRATOR, "verify", bundle, "--key", str(key)], capture_output=True, text=True
    )
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "demo/fix-rounding (succeeded)" in verified.stdout
    statement = attest.verify_bundle(pathlib.Path(bundle).read_bytes(), public_key=key.read_bytes())
    facts = statement.run_facts()
    assert statement.subject_digest("run-record") == report["recordDigest"].removeprefix("sha256:")
    assert statement.subject_digest("workspace-diff") == report["diffDigest"].removeprefix(
        "sha256:"
    )
    assert (facts.tool_calls.allowed, facts.tool_calls.denied, facts.tool_calls.approved) == (
        5, 2, 1,
    )  # fmt: skip
    # The runner's own measurements, not placeholders: the tree digest it reported in its
    # outcome (and the record), and the version of the cn it started.
    store = records.BlobStore(str(state / "records"))
    [outcome] = [
        json.loads(store.get(e.blobs["outcome"]))
        for e in records.load(store, report["uid"]).exchanges
        if e.kind == "run.outcome"
    ]
    tree = outcome["workspaceTreeDigest"].removeprefix("sha256:")
    assert facts.workspace_tree_digest == tree != hashlib.sha256(b"").hexdigest()
    assert statement.subject_digest("workspace-tree") == tree
    assert facts.cli_version == outcome["cliVersion"] == "1.5.47"
    assert {m.provider for m in facts.models} == {"openai"}
    assert "DEVELOPMENT KEY" in done.stdout
    # A tampered bundle does not verify.
    tampered = pathlib.Path(bundle).read_text().replace('"payload": "', '"payload": "A', 1)
    (state / "tampered.json").write_text(tampered)
    refused = subprocess.run(
        [ORCHESTRATOR, "verify", str(state / "tampered.json"), "--key", str(key)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert refused.returncode != 0


def test_the_pull_request_body_carries_the_evidence(
    demo: tuple[pathlib.Path, subprocess.CompletedProcess[str]],
) -> None:
    state, done = demo
    report = _report(state)
    pull = report["pullRequest"]
    path = pathlib.Path(pull["path"])
    assert path == (state / "runs" / report["uid"] / "pull-request.md").resolve()
    assert str(path) in done.stdout and "not posted: no forge configured" in done.stdout
    body = path.read_text(encoding="utf-8")
    assert not pull["posted"] and pull["digest"] == digest.text(body)
    # The verify command and its exit code, the denied calls of the demo's script, the
    # model's last words, and the attestation report.json names.
    assert "| agent's sandbox | `unit-tests` | `python3 -m unittest -v` | 0 |" in body
    assert "| `Write` | `.github/workflows/ci.yml` | **denied** |" in body
    assert "| `Bash` | `git push origin HEAD:main` | **denied** |" in body
    assert "Fixed: apply_discount now rounds half up" in body
    assert report["attestation"]["bundleDigest"] in body
    assert f"orchestrator verify {report['attestation']['location']} --key" in body
    assert "**fresh sandbox:** not re-verified" in body


def test_the_model_key_is_in_no_record(
    demo: tuple[pathlib.Path, subprocess.CompletedProcess[str]],
) -> None:
    state, done = demo
    found = [
        str(path)
        for path in state.rglob("*")
        if path.is_file() and PLACEHOLDER_KEY.encode() in path.read_bytes()
    ]
    # The model key is brokered: no file of the run holds it, the sandbox's run directory
    # included (test_model_key_brokered.py shows the same scan finding a delivered
    # secret). Records and ledger are redacted.
    assert (state / "ledger.db").is_file()
    assert found == [], found
    assert PLACEHOLDER_KEY not in done.stdout + done.stderr


def test_a_person_approves_from_another_terminal(
    origin: str, cn: str, tmp_path: pathlib.Path
) -> None:
    lines: list[str] = []
    approved: list[subprocess.CompletedProcess[str]] = []
    with _running(_command(tmp_path), lines, env=_env()) as process:
        assert process.stdout is not None
        for line in process.stdout:
            lines.append(line)
            match = re.search(r"approve:\s+(orchestrator approve .*)$", line)
            if match:
                argv = match.group(1).split()
                argv[0] = ORCHESTRATOR
                approved.append(subprocess.run([*argv, "--by", "alice"], capture_output=True,
                                               text=True, timeout=60))  # fmt: skip
        process.wait(timeout=60)
    output = "".join(lines)
    assert len(approved) == 1, output
    assert approved[0].returncode == 0, approved[0].stderr
    assert "WAITING FOR APPROVAL: Write tests/test_pricing.py" in output
    assert process.returncode == 0, output[-4000:]
    report = _report(tmp_path)
    (held,) = [c for c in report["toolCalls"] if c["effect"] == "RequireApproval"]
    assert held["decidedBy"] == "alice" and held["delivered"]


def test_without_runsc_the_message_says_how_to_get_it(tmp_path: pathlib.Path) -> None:
    done = subprocess.run(
        _command(tmp_path, "--approve-all"), capture_output=True, text=True,
        env={**_env(), "PATH": "/nonexistent"},
    )  # fmt: skip
    assert done.returncode == 1
    assert "runsc is not installed" in done.stderr
    assert "apt-get install runsc" in done.stderr and "--sandbox none" in done.stderr
    assert not (tmp_path / "runs").exists()


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-v"]))


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_stopping_while_waiting_stops_everything_and_records_it(
    origin: str, cn: str, tmp_path: pathlib.Path, stop: signal.Signals
) -> None:
    # A background job inherits SIGINT ignored; a person's terminal delivers it.
    lines: list[str] = []
    with _running(
        _command(tmp_path), lines, env=_env(),
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    ) as process:  # fmt: skip
        assert process.stdout is not None
        for line in process.stdout:
            lines.append(line)
            if "WAITING FOR APPROVAL" in line:
                process.send_signal(stop)
                break
        rest, _ = process.communicate(timeout=60)
    output = "".join(lines) + rest
    assert process.returncode == 130, output[-3000:]
    assert "phase: Cancelled (ManualStop)" in output
    (run_dir,) = tmp_path.glob("runs/*")
    with ledger.open(f"sqlite:///{tmp_path / 'ledger.db'}") as book:
        finished = [e.payload for e in book.entries(run_uid=run_dir.name)
                    if e.kind is ledger.Kind.RUN_FINISHED]  # fmt: skip
    assert [(p["phase"], p["reason"]) for p in finished if p] == [("Cancelled", "ManualStop")]
    # Nothing of the sandbox is left: no namespace of that process, no runsc under it.
    netns = pathlib.Path("/var/run/netns")
    left = [p.name for p in netns.iterdir()] if netns.is_dir() else []
    assert not [name for name in left if name.startswith(f"cosbx-{process.pid}-")]
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert str(run_dir / "run") not in ps


def test_no_sandbox_is_loud_and_deny_all_refuses_the_held_call(
    origin: str, cn: str, tmp_path: pathlib.Path
) -> None:
    done = subprocess.run(
        _command(tmp_path, "--sandbox", "none", "--deny-all"), capture_output=True, text=True,
        env=_env(), timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    assert "WARNING: --sandbox none" in done.stderr
    assert "NO ISOLATION (--sandbox none)" in done.stdout
    assert "phase: Running (NO SANDBOX)" in done.stdout
    report = _report(tmp_path)
    assert report["sandbox"] == "none"
    (held,) = [c for c in report["toolCalls"] if c["effect"] == "RequireApproval"]
    assert not held["delivered"] and "(--deny-all)" in held["decidedBy"]
    assert (report["allowed"], report["denied"], report["approved"]) == (5, 3, 0)
    assert [f["path"] for f in report["diffFiles"]] == ["src/shop/pricing.py"]
    with ledger.open(f"sqlite:///{tmp_path / 'ledger.db'}") as book:
        created = next(book.entries(run_uid=report["uid"]))
    assert created.payload is not None and created.payload["sandbox"] == "none"
