"""Path normalisation and glob semantics, including the tricks an agent might try."""

from __future__ import annotations

import os
import pathlib

import pytest

from continue_orchestrator import api, policy
from continue_orchestrator.policy import _glob

ROOT = "/workspace"


@pytest.mark.parametrize(
    ("raw", "normal"),
    [
        ("src/a.py", "src/a.py"),
        ("./src//a.py", "src/a.py"),
        ("src/./lib/../a.py", "src/a.py"),
        ("src/", "src"),
        (".", "."),
        ("/workspace", "."),
        ("/workspace/", "."),
        ("/workspace/src/../.git/config", ".git/config"),
        ("a/b/../../c", "c"),
        ("..foo/bar", "..foo/bar"),
    ],
)
def test_normalise(raw: str, normal: str) -> None:
    assert policy.normalise(raw, root=ROOT) == normal


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        ("..", "escapes"),
        ("../x", "escapes"),
        ("src/../../x", "escapes"),
        ("/etc/passwd", "outside"),
        ("/workspace/../etc/passwd", "outside"),
        ("/workspace2/x", "outside"),
        ("/workspace-evil/x", "outside"),
        ("/..", "escapes"),
        ("src/a\x00.py", "NUL"),
        ("src/a\n.py", "control"),
        ("..\\..\\etc\\passwd", "backslash"),
        ("~/.ssh/id_rsa", "home"),
        ("~root/x", "home"),
        ("", "empty"),
    ],
)
def test_normalise_refuses(raw: str, why: str) -> None:
    with pytest.raises(policy.PathRejectedError, match=why):
        policy.normalise(raw, root=ROOT)


def test_root_slash_makes_every_absolute_path_relative() -> None:
    assert policy.normalise("/etc/passwd", root="/") == "etc/passwd"


@pytest.mark.parametrize(
    ("glob", "matches", "misses"),
    [
        ("*.py", ["a.py", ".hidden.py"], ["src/a.py", "a.pyc"]),
        ("src/*", ["src/a", "src/.env"], ["src", "src/a/b"]),
        ("src/**", ["src", "src/a", "src/a/b/c"], ["srcx", "lib/src/a"]),
        ("**/*.pem", ["k.pem", "a/b/k.pem"], ["k.pem.txt"]),
        ("**", [".", "a", "a/b/.git/c"], []),
        ("a/**/b", ["a/b", "a/x/b", "a/x/y/b"], ["a/xb", "ab"]),
        ("file?.txt", ["file1.txt"], ["file10.txt", "file/.txt"]),
        ("[ab].txt", ["a.txt", "b.txt"], ["c.txt"]),
        ("[!ab].txt", ["c.txt"], ["a.txt", "/.txt"]),
        ("a+b(c).txt", ["a+b(c).txt"], ["aab(c).txt"]),
    ],
)
def test_segment_globs(glob: str, matches: list[str], misses: list[str]) -> None:
    compiled = _glob.compile_globs([glob], segments=True)
    for path in matches:
        assert compiled.fullmatch(path), (glob, path)
    for path in misses:
        assert not compiled.fullmatch(path), (glob, path)


def test_text_globs_cross_slashes() -> None:
    compiled = _glob.compile_globs(["pytest *"], segments=False)
    assert compiled.fullmatch("pytest tests/unit/a.py")
    assert not compiled.fullmatch("pytest")


def _set(paths: list[str], effect: str = "Allow") -> policy.PolicySet:
    return policy.compile(
        [
            api.parse(
                {
                    "apiVersion": api.API_VERSION,
                    "kind": "RunPolicy",
                    "metadata": {"name": "p", "namespace": "n"},
                    "spec": {"rules": [{"name": "r", "actions": ["file.read", "file.write"],
                                        "paths": paths, "effect": effect}]},
                }
            )  # type: ignore[list-item]
        ]
    )


def test_symlink_out_of_the_workspace_is_denied(tmp_path: pathlib.Path) -> None:
    workspace = tmp_path / "ws"
    (workspace / "src").mkdir(parents=True)
    outside = tmp_path / "secret"
    outside.mkdir()
    (outside / "key").write_text("k")
    os.symlink(outside, workspace / "src" / "link")
    policy_set = _set(["**"])
    request = policy.Request(api.Action.FILE_READ, path="src/link/key")
    assert policy.decide(policy_set, request).effect is api.Effect.ALLOW
    decision = policy.decide(policy_set, request, workspace=workspace)
    assert decision.effect is api.Effect.DENY
    assert "symlink" in decision.reason


def test_symlink_inside_the_workspace_meets_the_rules_of_its_target(
    tmp_path: pathlib.Path,
) -> None:
    workspace = tmp_path / "ws"
    (workspace / ".git" / "hooks").mkdir(parents=True)
    (workspace / "src").mkdir()
    os.symlink(workspace / ".git" / "hooks", workspace / "src" / "hooks")
    policy_set = policy.compile(
        [
            api.parse(
                {
                    "apiVersion": api.API_VERSION,
                    "kind": "RunPolicy",
                    "metadata": {"name": "p", "namespace": "n"},
                    "spec": {"rules": [
                        {"name": "git", "actions": ["file.write"], "paths": [".git/**"],
                         "effect": "Deny"},
                        {"name": "src", "actions": ["file.write"], "paths": ["src/**"],
                         "effect": "Allow"},
                    ]},
                }
            )  # type: ignore[list-item]
        ]
    )
    request = policy.Request(api.Action.FILE_WRITE, path="src/hooks/pre-commit")
    assert policy.decide(policy_set, request).effect is api.Effect.ALLOW
    decision = policy.decide(policy_set, request, workspace=workspace)
    assert (decision.effect, decision.rule) == (api.Effect.DENY, "p/git")
