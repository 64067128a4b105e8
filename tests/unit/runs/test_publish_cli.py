"""``orchestrator run`` exits non-zero when publication failed, though the run succeeded.

The run's own phase is what the agent earned; a failed publication is its own outcome,
and a script running ``orchestrator run`` must see it in the exit code.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import types
from typing import Any, Literal

import pytest

from continue_orchestrator import forge, local, runs
from continue_orchestrator.cli import _run


def _report(publication: runs.Publication | None) -> local.Report:
    return local.Report(run="fix-rounding", uid="fix-rounding-1", namespace="demo",
                        sandbox="gvisor", phase="Succeeded", reason="Completed",
                        publication=publication)  # fmt: skip


def _publication(state: Literal["opened", "failed"]) -> runs.Publication:
    return runs.Publication(state=state, step="policy" if state == "failed" else "done",
                            message="policy denies file.write path='NOTES.md'",
                            repository="https://forge.example/o/r.git", branch="agent/x",
                            base="main")  # fmt: skip


@pytest.mark.parametrize(
    ("publication", "code"),
    [(None, 0), (_publication("opened"), 0), (_publication("failed"), 1)],
)
def test_the_exit_code_says_whether_publication_failed(
    publication: runs.Publication | None,
    code: int,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: pathlib.Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    inputs = types.SimpleNamespace(
        namespace="demo", name="fix-rounding", policies=[object()],
        run_policy=types.SimpleNamespace(metadata=types.SimpleNamespace(name="demo-fixer")),
    )  # fmt: skip
    monkeypatch.setattr(local, "load", lambda *a, **k: inputs)
    monkeypatch.setattr(local, "runsc_path", lambda: "/usr/bin/runsc")
    monkeypatch.setattr(local, "run", lambda *a, **k: _report(publication))
    args: dict[str, Any] = {
        "manifest": tmp_path / "agentrun.yaml", "policy": [], "config_map": [], "secret": [],
        "repository_credential": None, "sandbox": "gvisor", "state_dir": tmp_path,
        "model_script": None, "approve_all": False, "deny_all": False, "cn": None,
        "json": False,
    }  # fmt: skip
    assert _run.run(argparse.Namespace(**args)) == code
    printed = capsys.readouterr().out
    if publication is not None and publication.failed:
        assert "publication  FAILED at policy: policy denies" in printed


def test_the_report_names_the_pull_request_in_camel_case() -> None:
    pull = forge.PullRequest(number=7, url="https://forge.example/o/r/pulls/7",
                             head_branch="agent/x", head_sha="a" * 40, base_branch="main",
                             state="open")  # fmt: skip
    done = _publication("opened").model_copy(update={"pull_request": pull})
    written = json.loads(_report(done).model_dump_json(by_alias=True))["publication"]
    assert written["pullRequest"] == {
        "number": 7, "url": "https://forge.example/o/r/pulls/7", "headBranch": "agent/x",
        "headSha": "a" * 40, "baseBranch": "main", "state": "open", "draft": False,
    }  # fmt: skip
    assert written["state"] == "opened" and "headSha" in written
