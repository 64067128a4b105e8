"""The fallback workspace digest of ``orchestrator run`` cannot be walked out of the
workspace by a link the agent planted, and sees every change but git's internals."""

from __future__ import annotations

import os
import pathlib

from continue_orchestrator.local import _run


def _workspace(root: pathlib.Path) -> pathlib.Path:
    (root / "src").mkdir(parents=True)
    (root / "src" / "a.py").write_text("A = 1\n")
    (root / ".git").mkdir()
    (root / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    return root


def test_links_are_hashed_by_target_and_never_followed(tmp_path: pathlib.Path) -> None:
    workspace = _workspace(tmp_path / "ws")
    before = _run._tree_digest(workspace)
    os.symlink("/", workspace / "escape")
    (workspace / "src" / "up").symlink_to("../..", target_is_directory=True)
    planted = _run._tree_digest(workspace)  # would walk the whole host if links were followed
    assert planted != before
    (workspace / "escape").unlink()
    os.symlink("/etc", workspace / "escape")
    assert _run._tree_digest(workspace) != planted


def test_content_and_mode_count_git_internals_do_not(tmp_path: pathlib.Path) -> None:
    workspace = _workspace(tmp_path / "ws")
    before = _run._tree_digest(workspace)
    (workspace / ".git" / "HEAD").write_text("ref: refs/heads/other\n")
    assert _run._tree_digest(workspace) == before
    (workspace / "src" / "a.py").chmod(0o755)
    executable = _run._tree_digest(workspace)
    assert executable != before
    (workspace / "src" / "a.py").write_text("A = 2\n")
    assert _run._tree_digest(workspace) != executable
