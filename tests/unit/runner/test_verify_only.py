"""``--verify-only``, publication's fresh verification, against real git: a clean clone at
the pinned commit, the runner's own patch applied, the verify commands run as a run runs
them, and the tree digest of the verified tree; no agent ever starts."""

from __future__ import annotations

import json
import pathlib
import shutil
import subprocess
import sys

import pytest
from tests.runner_support import REPO_FILES, Origin, make_origin

from continue_orchestrator import digest, runner
from continue_orchestrator.runner import _workspace

TOKEN = "tok-" + "v" * 30
PNG = bytes(range(256)) * 4


@pytest.fixture
def origin(tmp_path: pathlib.Path) -> Origin:
    return make_origin(tmp_path, REPO_FILES)


def _bundle(
    origin: Origin, root: pathlib.Path, verify: list[dict[str, object]], cn: str = "/nonexistent"
) -> runner.RunBundle:
    return runner.RunBundle.model_validate(
        {
            "run": "verify-r",
            "repository": {"url": origin.url, "ref": "main", "commit": origin.commit},
            "config": "models:\n  - {name: m, provider: openai, model: m}\n",
            "prompt": "p",
            "verify": verify,
            "gatewayUrl": "http://127.0.0.1:9",
            "paths": {"workspace": str(root / "ws"), "home": str(root / "home"), "cn": cn},
        }
    )


def _edited(origin: Origin, root: pathlib.Path) -> tuple[bytes, str]:
    """The runner's diff of a workspace edited as an agent might, and that tree's digest."""
    workspace = root / "agent-ws"
    pin = runner.RepositoryPin(url=origin.url, ref="main", commit=origin.commit)
    base = _workspace.prepare(pin, workspace)
    (workspace / "src" / "answer.py").write_text("ANSWER = 42\n")
    (workspace / "README.md").unlink()
    (workspace / "assets").mkdir()
    (workspace / "assets" / "logo.png").write_bytes(PNG)
    (workspace / "tests" / "run.sh").write_text("#!/bin/sh\nexit 0\n")
    (workspace / "tests" / "run.sh").chmod(0o755)
    (workspace / "link").symlink_to("src/answer.py")
    taken = _workspace.diff(workspace, base, limit=1 << 20)
    assert not taken.truncated and b"GIT binary patch" in taken.patch
    return taken.patch, _workspace.tree_digest(workspace)


def _patch_file(root: pathlib.Path, patch: bytes) -> pathlib.Path:
    path = root / "run.patch"
    path.write_bytes(patch)
    return path


def test_the_verified_tree_is_the_agents_tree_and_its_checks_pass(
    origin: Origin, tmp_path: pathlib.Path
) -> None:
    patch, agent_tree = _edited(origin, tmp_path)
    verify = [
        {"name": "answer", "command": "sh tests/check.sh"},
        {"name": "binary", "command": "test -f assets/logo.png && test -x tests/run.sh"},
    ]
    bundle = _bundle(origin, tmp_path, verify)
    outcome = runner.verify_only(
        bundle,
        _patch_file(tmp_path, patch),
        environ={runner.TOKEN_ENV: TOKEN},
        log=lambda _: None,
        deliver=False,
    )
    assert outcome.status is runner.Status.SUCCEEDED, outcome.message
    assert outcome.exit_code == runner.ExitCode.SUCCEEDED
    assert outcome.workspace_tree_digest == agent_tree
    assert outcome.base_commit == origin.commit
    assert [(v.name, v.result.exit_code, v.passed) for v in outcome.verify] == [
        ("answer", 0, True),
        ("binary", 0, True),
    ]
    assert outcome.agent is None and outcome.models == [] and outcome.cli_version is None
    # The diff of the verified tree is the patch given, byte for byte.
    assert outcome.diff is not None and outcome.diff.digest == digest.text(patch)
    assert {(f.status, f.path) for f in outcome.diff.files} == {
        ("M", "src/answer.py"),
        ("D", "README.md"),
        ("A", "assets/logo.png"),
        ("A", "tests/run.sh"),
        ("A", "link"),
    }
    assert runner.Outcome.model_validate(outcome.wire()) == outcome


def test_a_failing_check_is_verify_failed_and_every_result_is_kept(
    origin: Origin, tmp_path: pathlib.Path
) -> None:
    patch, _ = _edited(origin, tmp_path)
    verify = [
        {"name": "fails", "command": "echo broken; exit 3"},
        {"name": "slow", "command": "sleep 30", "timeoutSeconds": 1},
        {"name": "passes", "command": "true"},
    ]
    outcome = runner.verify_only(
        _bundle(origin, tmp_path, verify),
        _patch_file(tmp_path, patch),
        environ={runner.TOKEN_ENV: TOKEN},
        log=lambda _: None,
        deliver=False,
    )
    assert outcome.status is runner.Status.VERIFY_FAILED
    assert outcome.exit_code == runner.ExitCode.VERIFY_FAILED
    assert outcome.message == "verify failed: fails, slow"
    results = {v.name: v.result for v in outcome.verify}
    assert results["fails"].exit_code == 3 and results["fails"].output == "broken\n"
    assert results["slow"].timed_out and results["slow"].exit_code is None
    assert results["passes"].exit_code == 0


def test_a_patch_that_does_not_apply_is_a_workspace_error_naming_it(
    origin: Origin, tmp_path: pathlib.Path
) -> None:
    patch, _ = _edited(origin, tmp_path)
    stale = patch.replace(b"-ANSWER = 41", b"-ANSWER = 40")
    path = _patch_file(tmp_path, stale)
    outcome = runner.verify_only(
        _bundle(origin, tmp_path, [{"name": "never", "command": "true"}]),
        path,
        environ={runner.TOKEN_ENV: TOKEN},
        log=lambda _: None,
        deliver=False,
    )
    assert outcome.status is runner.Status.WORKSPACE_ERROR
    assert outcome.exit_code == runner.ExitCode.WORKSPACE_ERROR
    assert f"patch {path}" in outcome.message and "does not apply" in outcome.message
    assert "src/answer.py" in outcome.message
    assert outcome.verify == [] and outcome.workspace_tree_digest is None
    # All or nothing: the hunks that would apply were not applied either.
    assert not (tmp_path / "ws" / "assets").exists()
    assert (tmp_path / "ws" / "README.md").exists()


def test_an_unreadable_patch_is_a_workspace_error(origin: Origin, tmp_path: pathlib.Path) -> None:
    missing = tmp_path / "absent.patch"
    outcome = runner.verify_only(
        _bundle(origin, tmp_path, []),
        missing,
        environ={runner.TOKEN_ENV: TOKEN},
        log=lambda _: None,
        deliver=False,
    )
    assert outcome.status is runner.Status.WORKSPACE_ERROR
    assert f"patch {missing}: cannot read the patch" in outcome.message


def test_an_empty_patch_verifies_the_pinned_commit(origin: Origin, tmp_path: pathlib.Path) -> None:
    clean = tmp_path / "clean"
    pin = runner.RepositoryPin(url=origin.url, ref="main", commit=origin.commit)
    _workspace.prepare(pin, clean)
    outcome = runner.verify_only(
        _bundle(origin, tmp_path, [{"name": "answer", "command": "sh tests/check.sh"}]),
        _patch_file(tmp_path, b""),
        environ={runner.TOKEN_ENV: TOKEN},
        log=lambda _: None,
        deliver=False,
    )
    assert outcome.status is runner.Status.VERIFY_FAILED
    assert outcome.workspace_tree_digest == _workspace.tree_digest(clean)
    assert outcome.diff is not None and outcome.diff.files == []


def test_no_token_is_a_config_error(origin: Origin, tmp_path: pathlib.Path) -> None:
    outcome = runner.verify_only(
        _bundle(origin, tmp_path, []),
        _patch_file(tmp_path, b""),
        environ={},
        log=lambda _: None,
        deliver=False,
    )
    assert outcome.status is runner.Status.CONFIG_ERROR and "no run token" in outcome.message
    assert not (tmp_path / "ws").exists()


def test_verify_commands_run_as_in_a_run_and_the_agent_never_starts(
    origin: Origin, tmp_path: pathlib.Path
) -> None:
    """The same environment, shell and directory as a run's verify step; no cn, no config."""
    started = tmp_path / "cn-started"
    cn = tmp_path / "cn"
    cn.write_text(f"#!/bin/sh\ntouch {started}\nexit 0\n")
    cn.chmod(0o755)
    dump = tmp_path / "verify-env"
    verify = [{"name": "env", "command": f"env | sort > {dump}; pwd >> {dump}; echo $0 >> {dump}"}]
    bundle = _bundle(origin, tmp_path, verify, cn=str(cn))

    ran = runner.run(bundle, environ={runner.TOKEN_ENV: TOKEN}, log=lambda _: None, deliver=False)
    assert ran.status is runner.Status.SUCCEEDED and started.exists()
    in_run = dump.read_text()
    for path in (tmp_path / "ws", tmp_path / "home", started, dump):
        shutil.rmtree(path) if path.is_dir() else path.unlink()

    checked = runner.verify_only(
        bundle,
        _patch_file(tmp_path, b""),
        environ={runner.TOKEN_ENV: TOKEN},
        log=lambda _: None,
        deliver=False,
    )
    assert checked.status is runner.Status.SUCCEEDED, checked.message
    assert dump.read_text() == in_run
    assert f"HOME={tmp_path / 'home'}" in in_run and "/bin/sh" in in_run
    assert not started.exists()
    assert not (tmp_path / "home" / ".continue").exists()


def test_the_command_line(
    origin: Origin, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    patch, agent_tree = _edited(origin, tmp_path)
    bundle_file = tmp_path / "bundle.json"
    bundle = _bundle(origin, tmp_path, [{"name": "answer", "command": "sh tests/check.sh"}])
    bundle_file.write_text(bundle.model_dump_json(by_alias=True))
    patch_file = _patch_file(tmp_path, patch)
    outcome_file = tmp_path / "outcome.json"
    monkeypatch.setenv(runner.TOKEN_ENV, TOKEN)
    common = ["--bundle", str(bundle_file), "--no-report"]
    assert runner.main([*common, "--verify-only"]) == 2
    assert runner.main([*common, "--patch", str(patch_file)]) == 2
    for other in ("--prepare-only", "--workspace-ready"):
        with pytest.raises(SystemExit) as exited:
            runner.main([*common, "--verify-only", other, "--patch", str(patch_file)])
        assert exited.value.code == 2
    assert not (tmp_path / "ws").exists()

    argv = [*common, "--verify-only", "--patch", str(patch_file), "--outcome", str(outcome_file)]
    assert runner.main(argv) == 0
    reported = json.loads(outcome_file.read_text())
    assert reported["status"] == "Succeeded" and reported["agent"] is None
    assert reported["workspaceTreeDigest"] == agent_tree
    assert [v["name"] for v in reported["verify"]] == ["answer"]


def test_the_module_runs_it(origin: Origin, tmp_path: pathlib.Path) -> None:
    patch, _ = _edited(origin, tmp_path)
    bundle = _bundle(origin, tmp_path, [{"name": "fails", "command": "false"}])
    result = subprocess.run(
        [sys.executable, "-m", "continue_orchestrator.runner", "--verify-only", "--no-report",
         "--patch", str(_patch_file(tmp_path, patch))],
        env={"PATH": "/usr/bin:/bin", runner.TOKEN_ENV: TOKEN,
             runner.BUNDLE_ENV: bundle.model_dump_json(by_alias=True)},
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == runner.ExitCode.VERIFY_FAILED, result.stderr
    assert "verify failed: fails" in result.stderr
