"""The workspace tree digest: recomputable from its documented definition, sensitive to
every byte, mode and name, and blind to what lies outside the workspace (links are
never followed) and to git's own metadata."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import threading

import pytest
from tests.tree_digest_reference import reference_tree_digest

from continue_orchestrator import errors, runner


@pytest.fixture
def workspace(tmp_path: pathlib.Path) -> pathlib.Path:
    root = tmp_path / "workspace"
    (root / "src" / "deep").mkdir(parents=True)
    (root / "src" / "app.py").write_text("print('hi')\n")
    (root / "src" / "deep" / "blob.bin").write_bytes(bytes(range(256)) * 3)
    (root / "run.sh").write_text("#!/bin/sh\necho run\n")
    (root / "run.sh").chmod(0o755)
    (root / "empty").write_bytes(b"")
    (root / "name with\nnewline").write_text("x")
    (root / os.fsdecode(b"latin1-\xe9.txt")).write_text("not utf-8 in its name")
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    (root / "vendored" / ".git").mkdir(parents=True)
    (root / "vendored" / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    return root


def test_the_runner_matches_the_documented_algorithm(workspace: pathlib.Path) -> None:
    digest = runner.tree_digest(workspace)
    assert digest.startswith("sha256:") and len(digest) == 7 + 64
    assert digest == reference_tree_digest(workspace)
    assert runner.tree_digest(workspace) == digest


@pytest.mark.parametrize(
    "change",
    [
        lambda root: (root / "src" / "deep" / "blob.bin").write_bytes(
            bytes(range(256)) * 2 + bytes([1]) + bytes(range(1, 256)) + bytes(range(256))
        ),
        lambda root: (root / "src" / "app.py").write_text("print('hI')\n"),
        lambda root: (root / "run.sh").chmod(0o644),
        lambda root: (root / "empty").rename(root / "empty2"),
        lambda root: (root / "src" / "new").write_bytes(b""),
        lambda root: (root / "vendored" / ".git" / "HEAD").write_text("ref: refs/heads/x\n"),
        lambda root: (root / "src" / "app.py").unlink(),
    ],
    ids=["one-byte", "one-char", "exec-bit", "rename", "new-empty-file", "nested-git", "delete"],
)
def test_any_change_changes_the_digest(workspace: pathlib.Path, change: object) -> None:
    before = runner.tree_digest(workspace)
    change(workspace)  # type: ignore[operator]
    after = runner.tree_digest(workspace)
    assert after != before
    assert after == reference_tree_digest(workspace)


def test_one_byte_in_one_file_is_seen(workspace: pathlib.Path) -> None:
    blob = workspace / "src" / "deep" / "blob.bin"
    before = runner.tree_digest(workspace)
    data = bytearray(blob.read_bytes())
    data[300] ^= 0x01
    blob.write_bytes(bytes(data))
    assert runner.tree_digest(workspace) != before
    data[300] ^= 0x01
    blob.write_bytes(bytes(data))
    assert runner.tree_digest(workspace) == before


def test_git_metadata_and_empty_directories_do_not_count(workspace: pathlib.Path) -> None:
    before = runner.tree_digest(workspace)
    (workspace / ".git" / "scratch").write_text("index noise")
    (workspace / "some" / "empty" / "dirs").mkdir(parents=True)
    assert runner.tree_digest(workspace) == before


def test_links_are_hashed_by_target_and_never_followed(
    workspace: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    outside = tmp_path / "outside"
    (outside / "dir").mkdir(parents=True)
    (outside / "secret.txt").write_text("host secret")
    (outside / "dir" / "file").write_text("outside file")
    (workspace / "to-file").symlink_to(outside / "secret.txt")
    (workspace / "src" / "to-dir").symlink_to(outside / "dir")
    (workspace / "dangling").symlink_to(tmp_path / "nowhere")
    before = runner.tree_digest(workspace)
    assert before == reference_tree_digest(workspace)

    (outside / "secret.txt").write_text("changed outside")
    (outside / "dir" / "file").write_text("changed too")
    (outside / "dir" / "more").write_text("new outside")
    assert runner.tree_digest(workspace) == before

    (workspace / "to-file").unlink()
    (workspace / "to-file").symlink_to(outside / "dir" / "file")
    assert runner.tree_digest(workspace) != before


def test_a_fifo_is_listed_without_being_opened(workspace: pathlib.Path) -> None:
    os.mkfifo(workspace / "pipe")
    result: list[str] = []
    worker = threading.Thread(target=lambda: result.append(runner.tree_digest(workspace)))
    worker.start()
    worker.join(timeout=10)
    assert result == [reference_tree_digest(workspace)], "the digest blocked on a fifo"


def test_an_unreadable_workspace_is_an_error_not_a_digest(tmp_path: pathlib.Path) -> None:
    with pytest.raises(errors.RunnerError, match="cannot open the workspace"):
        runner.tree_digest(tmp_path / "missing")


def test_a_workspace_deeper_than_the_limit_has_no_digest(tmp_path: pathlib.Path) -> None:
    root = tmp_path / "deep"
    root.mkdir()
    descriptor = os.open(root, os.O_RDONLY)
    try:  # relative mkdirs: the absolute path would pass PATH_MAX
        for _ in range(runner.TREE_MAX_DEPTH + 1):
            os.mkdir("d", dir_fd=descriptor)
            child = os.open("d", os.O_RDONLY, dir_fd=descriptor)
            os.close(descriptor)
            descriptor = child
    finally:
        os.close(descriptor)
    with pytest.raises(errors.RunnerError, match="nested deeper than"):
        runner.tree_digest(root)


def test_cli_version_comes_from_the_package_that_owns_the_binary(tmp_path: pathlib.Path) -> None:
    package = tmp_path / "node_modules" / "@continuedev" / "cli"
    (package / "dist").mkdir(parents=True)
    (package / "dist" / "cn.js").write_text("#!/usr/bin/env node\n")
    (package / "package.json").write_text(
        json.dumps({"name": "@continuedev/cli", "version": "9.8.7", "bin": {"cn": "dist/cn.js"}})
    )
    bin_dir = tmp_path / "node_modules" / ".bin"
    bin_dir.mkdir()
    (bin_dir / "cn").symlink_to("../@continuedev/cli/dist/cn.js")
    assert runner.cli_version(str(bin_dir / "cn")) == "9.8.7"

    (package / "package.json").write_text(
        json.dumps({"name": "@continuedev/cli", "version": "9.8.7", "bin": {"cn": "other.js"}})
    )
    assert runner.cli_version(str(bin_dir / "cn")) is None
    assert runner.cli_version(str(tmp_path / "no" / "cn")) is None
