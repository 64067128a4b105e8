"""``orchestrator policy replay``: recorded tool calls decided again under a changed policy.

The ledgers are written by the gateway's own gate (``gateway._gate.Gate`` with
``policy_decider``, the run's ``run.created`` first), on SQLite and on the real
PostgreSQL of the ledger suite, and replayed through the CLI's ``main``.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import pathlib
import tempfile
import time
from typing import TYPE_CHECKING, Any

import pytest
import yaml

from continue_orchestrator import api, cli, gateway, ledger, policy, records
from continue_orchestrator.cli import _policy_replay
from continue_orchestrator.gateway import _gate, _runs

if TYPE_CHECKING:
    from conftest import Store

RUN = "3f6b9c1e-0000-4000-8000-000000000001"
OTHER = "3f6b9c1e-0000-4000-8000-000000000002"

POLICY = """\
apiVersion: orchestrator.continue.dev/v1alpha1
kind: RunPolicy
metadata: {name: team, namespace: team-a}
spec:
  defaultEffect: Deny
  approvers: {users: [alice]}
  rules:
    - {name: tools, actions: [tool.call], tools: [Read, Bash, Write], effect: Allow}
    - {name: read, actions: [file.read], paths: ["**"], effect: Allow}
    - {name: write-src, actions: [file.write], paths: ["src/**"], effect: Allow}
    - name: tests
      actions: [shell.exec]
      commands: ["pytest*", "git status*"]
      effect: Allow
    - name: make-in-run-1
      actions: [shell.exec]
      commands: ["make*"]
      when: request.run.name == "run-1"
      effect: Allow
    - name: pr
      actions: [shell.exec]
      commands: ["gh pr*"]
      effect: RequireApproval
"""
# No more pytest; git status now waits for a person.
TIGHTER = POLICY.replace('["pytest*", "git status*"]', '["nothing"]').replace(
    '["gh pr*"]', '["gh pr*", "git status*"]'
)
# Writing docs/ too.
LOOSER = POLICY.replace('paths: ["src/**"]', 'paths: ["src/**", "docs/**"]')


def _record(url: str, calls: list[tuple[str, Any]], *, uid: str = RUN, name: str = "run-1") -> None:
    """``run.created`` for ``uid``, then each (tool, arguments JSON text or raw value) as
    the gateway's gate decides and records it under POLICY."""
    policy_set = policy.compile(
        [api.parse(doc, where="test") for doc in yaml.safe_load_all(POLICY)]
    )
    created = {"name": name, "namespace": "team-a", "policyDigest": policy_set.digest}
    message = {
        "role": "assistant",
        "tool_calls": [
            {"id": f"call-{i}", "type": "function",
             "function": {"name": tool, "arguments": arguments}}
            for i, (tool, arguments) in enumerate(calls)
        ],
    }  # fmt: skip
    with ledger.open(url) as book, tempfile.TemporaryDirectory() as blobs:
        book.append(uid, ledger.Kind.RUN_CREATED, "operator", created)
        registration = gateway.RunRegistration(
            uid=uid, token=gateway.new_token(), expires_at=time.time() + 60,
            policy_set=policy_set, models={}, allowed_egress=(), name=name,
            namespace="team-a", approval_timeout=0.01,
        )  # fmt: skip
        state = _runs.Runs(records.BlobStore(blobs), book).add(registration)
        gate = _gate.Gate(_gate.policy_decider, gateway.LocalApprovalBroker())
        asyncio.run(gate.gate(state, message))


def _bash(command: str) -> tuple[str, str]:
    return "Bash", json.dumps({"command": command})


CALLS = [
    ("Read", json.dumps({"filepath": "src/app.py"})),
    _bash("pytest -q"),
    _bash("git status"),
    _bash("make build"),
    _bash("rm -rf /"),
    ("Write", json.dumps({"filepath": "docs/a.md", "content": "x"})),
    _bash("gh pr create"),
    ("Bash", "{not json"),
    ("Read", {"filepath": "src/app.py"}),  # an object, not JSON text: the gateway denies it
]


def _policy(tmp_path: pathlib.Path, text: str) -> str:
    path = tmp_path / "policy.yaml"
    path.write_text(text, encoding="utf-8")
    return str(path)


def _replay(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = cli.main(["policy", "replay", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _json(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict[str, Any]]:
    code, out, err = _replay(capsys, *args, "--json")
    assert not err or code == 0, err
    return code, json.loads(out)


def test_the_recording_is_what_the_gateway_decided(store: Store) -> None:
    _record(store.url, CALLS)
    with ledger.open(store.url, create=False) as book:
        decisions = [e.payload for e in book.entries() if e.kind is ledger.Kind.POLICY_DECISION]
    effects = [d["effect"] for d in decisions if d]
    assert effects == ["Allow", "Allow", "Allow", "Allow", "Deny", "Deny", "RequireApproval",
                       "Deny", "Deny"]  # fmt: skip


def test_unchanged_policy_changes_nothing(
    store: Store, tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _record(store.url, CALLS)
    code, out, _ = _replay(
        capsys, _policy(tmp_path, POLICY), "--ledger", store.url, "--fail-on-tighten"
    )
    assert code == 0
    assert "CHANGE" not in out  # no table when nothing changes
    assert "9 tool calls of 1 runs decided again: 9 unchanged, 0 tighter, 0 looser" in out
    code, document = _json(capsys, _policy(tmp_path, POLICY), "--ledger", store.url, "--all")
    assert code == 0 and document["unchanged"] == 9 and len(document["calls"]) == 9
    # The run's recorded name reached the policy: `make` is allowed only in run-1.
    make = next(c for c in document["calls"] if c["arguments"] == {"command": "make build"})
    assert make["now"] == "Allow" and make["run"] == "team-a/run-1"
    # Arguments that were not JSON are denied before any policy, then and now.
    broken, objected = document["calls"][-2:]
    assert broken["arguments"] == "{not json" and broken["rule"] == "gateway.arguments"
    assert objected["arguments"] == {"filepath": "src/app.py"}
    assert (objected["now"], objected["rule"]) == ("Deny", "gateway.arguments")


def test_tightened_policy_lists_calls_and_fails_ci(
    store: Store, tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _record(store.url, CALLS)
    tighter = _policy(tmp_path, TIGHTER)
    code, out, _ = _replay(capsys, tighter, "--ledger", store.url)
    assert code == 0  # without --fail-on-tighten a report only
    lines = out.splitlines()
    assert lines[0].split()[:2] == ["CHANGE", "SEQ"]
    pytest_row = next(line for line in lines if "pytest -q" in line)
    assert pytest_row.startswith("tighter") and " Allow " in pytest_row and " Deny " in pytest_row
    status_row = next(line for line in lines if "git status" in line)
    assert "RequireApproval" in status_row and "team/pr" in status_row
    assert "2 tighter, 0 looser" in lines[-1]
    code, out, _ = _replay(capsys, tighter, "--ledger", store.url, "--fail-on-tighten")
    assert code == 1 and "2 tighter" in out
    code, document = _json(capsys, tighter, "--ledger", store.url, "--fail-on-tighten")
    assert code == 1 and document["tighter"] == 2
    assert {c["change"] for c in document["calls"]} == {"tighter"}


def test_loosened_policy_lists_calls_and_passes(
    store: Store, tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _record(store.url, CALLS)
    code, document = _json(
        capsys, _policy(tmp_path, LOOSER), "--ledger", store.url, "--fail-on-tighten"
    )
    assert code == 0 and document["looser"] == 1 and document["tighter"] == 0
    [call] = document["calls"]
    assert call["tool"] == "Write" and (call["was"], call["now"]) == ("Deny", "Allow")
    assert call["arguments"] == {"filepath": "docs/a.md", "content": "x"}


def test_redacted_decisions_are_listed_never_guessed(
    store: Store, tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _record(store.url, CALLS[:2])
    _record(store.url, [_bash("pytest tests")], uid=OTHER, name="run-2")
    with ledger.open(store.url) as book:
        first = next(e for e in book.entries() if e.kind is ledger.Kind.POLICY_DECISION)
        book.tombstone(sequence=first.sequence, reason="secret in arguments", actor="admin")
        book.tombstone(run_uid=OTHER, reason="erasure request", actor="admin")
    code, out, _ = _replay(
        capsys, _policy(tmp_path, TIGHTER), "--ledger", store.url, "--fail-on-tighten"
    )
    # Read is redacted; pytest in RUN is tighter; all of OTHER is redacted, even its run name.
    assert code == 1
    assert out.splitlines()[-1].startswith(
        "1 tool calls of 1 runs decided again: 0 unchanged, 1 tighter, 0 looser; "
        "2 redacted (not replayable); policy set sha256:"
    )
    redacted = [line for line in out.splitlines() if line.startswith("redacted")]
    assert len(redacted) == 2 and any(OTHER in line for line in redacted)


def test_since_takes_a_time_or_a_duration(
    store: Store, tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _record(store.url, [_bash("pytest -q")])
    with ledger.open(store.url, create=False) as book:
        times = [e.time for e in book.entries()]
    time.sleep(0.01)
    _record(store.url, [_bash("git status")], uid=OTHER, name="run-2")
    tighter = _policy(tmp_path, TIGHTER)
    after_first = (
        datetime.datetime.fromisoformat(times[-1]) + datetime.timedelta(microseconds=1)
    ).isoformat()
    code, document = _json(capsys, tighter, "--ledger", store.url, "--since", after_first)
    assert [c["arguments"]["command"] for c in document["calls"]] == ["git status"]
    assert document["since"].startswith(times[-1][:19])
    code, document = _json(capsys, tighter, "--ledger", store.url, "--since", "1h")
    assert document["tighter"] == 2
    future = (datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=1)).isoformat()
    code, document = _json(capsys, tighter, "--ledger", store.url, "--since", future)
    assert document["replayed"] == 0 and code == 0
    code, document = _json(capsys, tighter, "--ledger", store.url, "--run", OTHER)
    assert document["replayed"] == 1 and document["runs"] == 1


def test_parse_since() -> None:
    now = datetime.datetime(2026, 12, 3, 12, 0, tzinfo=datetime.UTC)
    assert _policy_replay.parse_since("24h", now=now) == now - datetime.timedelta(hours=24)
    assert _policy_replay.parse_since("1h30m", now=now) == now - datetime.timedelta(minutes=90)
    assert _policy_replay.parse_since("2w", now=now) == now - datetime.timedelta(days=14)
    assert _policy_replay.parse_since("2026-12-01T09:00:00+01:00") == datetime.datetime(
        2026, 12, 1, 8, 0, tzinfo=datetime.UTC
    )
    assert _policy_replay.parse_since("2026-12-01T09:00:00Z").hour == 9
    for bad in ("yesterday", "2026-12-01T09:00:00", "24", "h", "-1h", ""):
        with pytest.raises(Exception, match="neither an RFC 3339 time"):
            _policy_replay.parse_since(bad)


def test_bad_inputs_are_clear_errors(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite://{tmp_path / 'ledger.db'}"
    _record(url, [_bash("pytest -q")])
    good = _policy(tmp_path, POLICY)

    code, _, err = _replay(capsys, good, "--ledger", "mysql://x/y")
    assert code == 1 and "unsupported ledger URL 'mysql'" in err
    code, _, err = _replay(capsys, good, "--ledger", f"sqlite://{tmp_path / 'none.db'}")
    assert code == 1 and "orchestrator policy:" in err and "none.db" in err
    code, _, err = _replay(capsys, str(tmp_path / "missing.yaml"), "--ledger", url)
    assert code == 1 and "missing.yaml" in err
    broken = tmp_path / "broken.yaml"
    broken.write_text(POLICY.replace("effect: Allow", "effect: Perhaps", 1), encoding="utf-8")
    code, _, err = _replay(capsys, str(broken), "--ledger", url)
    assert code == 1 and "broken.yaml" in err and "spec.rules[0].effect" in err
    code, _, err = _replay(capsys, good, "--ledger", url, "--since", "last week")
    assert code == 1 and "--since" in err and "24h" in err

    # A ledger that fails verification is refused, unless --no-verify says otherwise.
    import sqlite3

    db = sqlite3.connect(url.removeprefix("sqlite://"), isolation_level=None)
    for (trigger,) in db.execute("SELECT name FROM sqlite_master WHERE type='trigger'").fetchall():
        db.execute(f"DROP TRIGGER {trigger}")
    db.execute(
        "UPDATE ledger_payloads SET payload = replace(payload, 'pytest -q', 'pytest -x') "
        "WHERE payload LIKE '%pytest -q%'"
    )
    db.close()
    code, out, err = _replay(capsys, good, "--ledger", url)
    assert code == 1 and not out and "payload" in err and "untrusted" in err
    code, out, _ = _replay(capsys, good, "--ledger", url, "--no-verify")
    assert code == 0 and "NOT verified" in out


def test_help_says_what_since_takes(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["policy", "replay", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "RFC 3339 time with an offset" in out and "24h, 7d, 1h30m" in out
    assert "--fail-on-tighten" in out
