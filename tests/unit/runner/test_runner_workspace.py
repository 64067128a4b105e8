"""Workspace preparation and diff, against real git: credentials stay out of the clone,
the pinned commit is enforced, and the diff holds every change, binary ones too."""

from __future__ import annotations

import base64
import http.server
import pathlib
import subprocess
import threading
from collections.abc import Iterator

import pytest
from tests.runner_support import REPO_FILES, Origin, make_origin

from continue_orchestrator import errors, runner
from continue_orchestrator.runner import _process, _workspace

SECRET = "ghp_s3cretCloneToken0123456789"


@pytest.fixture
def origin(tmp_path: pathlib.Path) -> Origin:
    return make_origin(tmp_path, REPO_FILES)


@pytest.fixture
def http_origin(origin: Origin) -> Iterator[str]:
    """The origin over git's dumb HTTP protocol, behind Basic auth with SECRET."""
    subprocess.run(["git", "-C", str(origin.path), "update-server-info"], check=True)
    expected = "Basic " + base64.b64encode(f"bot:{SECRET}".encode()).decode()

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, directory=str(origin.path), **kwargs)  # type: ignore[arg-type]

        def do_GET(self) -> None:
            if self.headers.get("Authorization") != expected:
                self.send_response(401)
                self.send_header("WWW-Authenticate", 'Basic realm="git"')
                self.end_headers()
                return
            super().do_GET()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    thread.join()


def _grep(root: pathlib.Path, needle: bytes) -> list[pathlib.Path]:
    return [p for p in root.rglob("*") if p.is_file() and needle in p.read_bytes()]


@pytest.mark.parametrize("via", ["environment", "url"])
def test_clone_credentials_never_reach_the_workspace(
    http_origin: str, origin: Origin, tmp_path: pathlib.Path, via: str
) -> None:
    workspace = tmp_path / "ws"
    if via == "url":
        url = http_origin.replace("http://", f"http://bot:{SECRET}@")
        pin = runner.RepositoryPin(url=url, ref="main", commit=origin.commit)
        commit = _workspace.prepare(pin, workspace)
    else:
        pin = runner.RepositoryPin(url=http_origin, ref="main", commit=origin.commit)
        credentials = runner.Credentials(username="bot", token=SECRET)
        commit = _workspace.prepare(pin, workspace, credentials=credentials)
    assert commit == origin.commit
    assert (workspace / "src" / "answer.py").read_text() == "ANSWER = 41\n"
    assert _grep(workspace, SECRET.encode()) == []
    assert _grep(workspace, base64.b64encode(f"bot:{SECRET}".encode())) == []
    remote = subprocess.run(
        ["git", "-C", str(workspace), "remote", "get-url", "origin"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert remote == http_origin


def test_clone_without_credentials_fails_clearly(http_origin: str, tmp_path: pathlib.Path) -> None:
    pin = runner.RepositoryPin(url=http_origin, ref="main")
    with pytest.raises(errors.RunnerError, match="git clone failed"):
        _workspace.prepare(pin, tmp_path / "ws")


def test_pinned_commit_must_be_on_the_ref(origin: Origin, tmp_path: pathlib.Path) -> None:
    stranger = "0" * 40
    pin = runner.RepositoryPin(url=origin.url, ref="main", commit=stranger)
    with pytest.raises(errors.RunnerError, match="not in the repository"):
        _workspace.prepare(pin, tmp_path / "ws")


def test_the_credential_environment_is_gone_before_the_agent(
    origin: Origin, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The runner reads no git credential any more (it clones through the gateway); one
    # left in its environment by whatever started it must still not reach the agent.
    monkeypatch.setenv("ORCHESTRATOR_GIT_TOKEN", SECRET)
    monkeypatch.setenv(runner.TOKEN_ENV, "tok-" + "x" * 30)
    env_dump = tmp_path / "agent-env"
    spy = tmp_path / "cn"
    spy.write_text(f"#!/bin/sh\nenv > {env_dump}\n")
    spy.chmod(0o755)
    bundle = runner.RunBundle.model_validate(
        {
            "run": "r",
            "repository": {"url": origin.url, "ref": "main"},
            "config": "models:\n  - {name: m, provider: openai, model: m}\n",
            "prompt": "p",
            "gatewayUrl": "http://127.0.0.1:9",
            "paths": {
                "workspace": str(tmp_path / "ws"),
                "home": str(tmp_path / "h"),
                "cn": str(spy),
            },
        }
    )
    runner.run(bundle, log=lambda _: None, deliver=False)
    seen = env_dump.read_text()
    assert SECRET not in seen and "ORCHESTRATOR_GIT_TOKEN" not in seen
    assert runner.TOKEN_ENV not in seen
    assert "TZ=UTC" in seen and f"HOME={tmp_path / 'h'}" in seen


def _git(workspace: pathlib.Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(workspace), *args], check=True, capture_output=True)


def test_diff_has_edits_new_deleted_and_binary_files(
    origin: Origin, tmp_path: pathlib.Path
) -> None:
    workspace = tmp_path / "ws"
    base = _workspace.prepare(runner.RepositoryPin(url=origin.url, ref="main"), workspace)
    (workspace / "src" / "answer.py").write_text("ANSWER = 42\n")
    (workspace / "src" / "new.py").write_text("print('new')\n")
    (workspace / "src" / "blob.bin").write_bytes(bytes(range(256)) * 4)
    (workspace / "README.md").unlink()
    (workspace / "src" / "__pycache__").mkdir()
    (workspace / "src" / "__pycache__" / "x.pyc").write_bytes(b"\0ignored")
    # The agent committing its work must not hide it from the diff.
    _git(workspace, "add", "src/new.py")
    _git(workspace, "commit", "-qm", "agent commit")

    taken = runner.diff(workspace, base, limit=1 << 20)

    assert {(f.status, f.path) for f in taken.files} == {
        ("M", "src/answer.py"),
        ("A", "src/new.py"),
        ("A", "src/blob.bin"),
        ("D", "README.md"),
    }
    assert b"GIT binary patch" in taken.patch
    check = tmp_path / "check"
    subprocess.run(["git", "clone", "-q", origin.url, str(check)], check=True)
    subprocess.run(
        ["git", "-C", str(check), "apply", "--binary", "-"], input=taken.patch, check=True
    )
    assert (check / "src" / "blob.bin").read_bytes() == bytes(range(256)) * 4
    assert not (check / "README.md").exists()


def test_planted_fsmonitor_cannot_run_code_or_hide_changes(
    origin: Origin, tmp_path: pathlib.Path
) -> None:
    workspace = tmp_path / "ws"
    base = _workspace.prepare(runner.RepositoryPin(url=origin.url, ref="main"), workspace)
    canary = tmp_path / "fsmonitor-ran"
    hook = tmp_path / "hook.sh"
    hook.write_text(f"#!/bin/sh\ntouch {canary}\nprintf '\\0'\n")
    hook.chmod(0o755)
    _git(workspace, "config", "core.fsmonitor", str(hook))
    _git(workspace, "config", "diff.external", str(hook))
    (workspace / "src" / "answer.py").write_text("ANSWER = 42\n")

    taken = runner.diff(workspace, base, limit=1 << 20)

    assert not canary.exists()
    assert [f.path for f in taken.files] == ["src/answer.py"]


def test_diff_limit_keeps_the_digest_of_the_whole(origin: Origin, tmp_path: pathlib.Path) -> None:
    workspace = tmp_path / "ws"
    base = _workspace.prepare(runner.RepositoryPin(url=origin.url, ref="main"), workspace)
    (workspace / "src" / "big.txt").write_text("line\n" * 10000)
    full = runner.diff(workspace, base, limit=1 << 24)
    cut = runner.diff(workspace, base, limit=2048)
    assert cut.truncated and len(cut.patch) == 2048 and not full.truncated
    assert cut.digest == full.digest and cut.size == full.size


def test_process_output_is_bounded_and_background_jobs_die(tmp_path: pathlib.Path) -> None:
    survivor = tmp_path / "survivor"
    script = f"(sleep 2; touch {survivor}) & head -c 300000 /dev/zero | tr '\\0' a; echo END"
    done = _process.run(
        ["/bin/sh", "-c", script],
        cwd=str(tmp_path),
        env={"PATH": "/usr/bin:/bin"},
        timeout=30,
        limit=1024,
    )
    assert done.exit_code == 0 and done.stdout_bytes == 300004
    assert len(done.stdout) == 1024 and done.stdout.endswith(b"aEND\n")
    slow = _process.run(
        ["/bin/sh", "-c", "sleep 60"],
        cwd=str(tmp_path),
        env={"PATH": "/usr/bin:/bin"},
        timeout=0.5,
    )
    assert slow.timed_out and slow.exit_code is None and slow.duration_seconds < 10
    import time

    time.sleep(2.5)
    assert not survivor.exists(), "a background job outlived the process group"


def test_redaction_names_what_it_removed() -> None:
    text, found = runner.redact("key=sk-abc123 and tok", {"OPENAI": "sk-abc123", "X": "zzzz"})
    assert text == "key=[REDACTED:OPENAI] and tok" and found == {"OPENAI"}
