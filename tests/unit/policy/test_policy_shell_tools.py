"""Command lines split as a shell would, and tool calls mapped to what they imply.

Written as an attacker would: every way of dressing up ``git push`` to main or writing
into ``.git`` must still meet the rule against it.
"""

from __future__ import annotations

import shlex
from typing import Any

import pytest
import yaml

from continue_orchestrator import api, policy

RUN = policy.RunContext(namespace="n", name="r", branch="agent/r")


def texts(line: str) -> set[str]:
    return {c.text for c in policy.split_command(line).commands}


def test_operators_split_commands_and_quotes_do_not() -> None:
    assert texts("a && b || c; d | e |& f & g") == {"a", "b", "c", "d", "e", "f", "g"}
    assert texts("git commit -m 'fix; then && push'") == {"git commit -m 'fix; then && push'"}
    assert texts('echo "a|b"') == {"echo 'a|b'"}
    assert texts("(cd src; make) && { ls; }") == {"cd src", "make", "ls"}
    assert texts("a\nb") == {"a", "b"}
    assert texts("if test -f x; then rm x; fi") == {"test -f x", "rm x"}
    assert texts("ls # && git push") == {"ls"}


def test_quoting_and_escapes_are_canonicalised() -> None:
    assert "git push origin main" in texts('g\\it "pu"sh origin m\'ai\'n')


def test_views_peel_assignments_paths_and_wrappers() -> None:
    found = texts("FOO=1 /usr/bin/git push")
    assert {"FOO=1 /usr/bin/git push", "/usr/bin/git push", "git push"} <= found
    for line in (
        "env -u X GIT_DIR=.git git push",
        "nohup git push &",
        "timeout -s KILL 10 git push",
        "sudo -u root git push",
        "command git push",
        "exec git push",
        "nice -n 5 git push",
        "bash -c 'git push'",
        "sh -xc \"git push\"",
        "eval git push",
        "find . -exec git push \\;",
        "busybox sh -c 'git push'",
    ):
        assert "git push" in texts(line), line


@pytest.mark.parametrize(
    ("line", "why"),
    [
        ("echo $(git push)", "substitution"),
        ("echo `git push`", "substitution"),
        ('echo "$(git push)"', "substitution"),
        ("diff <(ls) x", "process substitution"),
        ("cat <<EOF\nx\nEOF", "here-documents"),
        ("$CMD push", "expanded"),
        ("${GIT} push", "expanded"),
        ("{git,push} origin main", "expanded"),
        ("/usr/bin/gi? push", "expanded"),
        ("~/bin/git push", "expanded"),
        ("echo x > $TARGET", "expanded"),
        ("echo x > ~/.bashrc", "expanded"),
        ("echo 'unclosed", "unclosed"),
        ("echo x >", "without a target"),
        ("sh -c", "without a command"),
        ("", "empty"),
        ("bash -c " + "'bash -c " * 3, "unclosed"),
    ],
)
def test_what_cannot_be_checked_is_refused(line: str, why: str) -> None:
    with pytest.raises(policy.ShellRejectedError, match=why):
        policy.split_command(line)


def test_nesting_is_bounded() -> None:
    line = "git push"
    for _ in range(12):
        line = f"sh -c {shlex.quote(line)}"
    with pytest.raises(policy.ShellRejectedError, match="nested too deeply"):
        policy.split_command(line)


def test_redirections_become_file_requests() -> None:
    parsed = policy.split_command("cmd > out.txt 2>&1 < in.txt 2>/dev/null >> log &> all")
    assert {(r.path, r.write) for r in parsed.redirects} == {
        ("out.txt", True), ("in.txt", False), ("log", True), ("all", True)
    }


def actions(tool: str, arguments: dict[str, Any]) -> list[tuple[str, str | None]]:
    found = policy.requests_for(tool, arguments, run=RUN)
    return [(r.action.value, r.path or r.command or r.branch or r.host) for r in found]


def test_built_in_tools_imply_their_actions() -> None:
    assert actions("Read", {"filepath": "a"}) == [("tool.call", "a"), ("file.read", "a")]
    assert actions("Write", {"filepath": "a", "content": ""})[1] == ("file.write", "a")
    assert actions("Edit", {"file_path": "a"})[1] == ("file.write", "a")
    assert actions("MultiEdit", {"file_path": "a", "edits": []})[1] == ("file.write", "a")
    assert actions("List", {"dirpath": "d"})[1] == ("file.read", "d")
    assert actions("Search", {"pattern": "x"})[1] == ("file.read", ".")
    fetch = actions("Fetch", {"url": "http://h.example:8080/x"})
    assert fetch[1] == ("network.egress", "h.example")
    assert actions("Checklist", {"checklist": "- [ ] x"}) == [("tool.call", None)]
    assert actions("Bash", {"command": "git push origin x:y"}) == [
        ("tool.call", None),
        ("shell.exec", "git push origin x:y"),
        ("branch.push", "git push origin x:y"),
    ]
    pushes = policy.requests_for("Bash", {"command": "git push origin HEAD"}, run=RUN)
    assert pushes[-1].branch == "agent/r"
    # Brace expansion pushes to branches no glob can see: unknown.
    pushes = policy.requests_for("Bash", {"command": "git push origin {main,x}"}, run=RUN)
    assert pushes[-1].branch is None and pushes[-1].branch_unknown


@pytest.mark.parametrize(
    ("tool", "arguments", "why"),
    [
        ("Read", {}, "filepath"),
        ("Read", {"filepath": 3}, "filepath"),
        ("Bash", {"cmd": "ls"}, "command"),
        ("Fetch", {"url": "file:///etc/passwd"}, "only http"),
        ("Fetch", {"url": "https://"}, "no host"),
        ("Fetch", {"url": "http://h:99999/"}, "malformed"),
    ],
)
def test_malformed_tool_calls_are_denied(tool: str, arguments: dict[str, Any], why: str) -> None:
    policy_set = policy.compile([])
    decision = policy.decide_tool_call(policy_set, tool, arguments, run=RUN)
    assert decision.effect is api.Effect.DENY
    assert why in decision.reason


def test_fetch_host_tricks_resolve_to_the_real_host() -> None:
    for url, host in (
        ("https://pypi.org@evil.com/", "evil.com"),
        ("https://EVIL.com./", "evil.com"),
        ("http://[::1]:8080/", "[::1]"),
    ):
        requests = policy.requests_for("Fetch", {"url": url}, run=RUN)
        assert requests[-1].host == host


def _ci_policy() -> policy.PolicySet:
    return policy.compile(
        [
            api.parse(
                {
                    "apiVersion": api.API_VERSION,
                    "kind": "RunPolicy",
                    "metadata": {"name": "p", "namespace": "n"},
                    "spec": {"defaultEffect": "Allow", "rules": [
                        {"name": "no-push", "actions": ["shell.exec"], "commands": ["git push*"],
                         "effect": "Deny"},
                        {"name": "no-git", "actions": ["file.write"], "paths": [".git/**"],
                         "effect": "Deny"},
                    ]},
                }
            )  # type: ignore[list-item]
        ]
    )


@pytest.mark.parametrize(
    "line",
    [
        "git push",
        "ls; git push",
        "true && git  push origin x",
        "false || GIT_TRACE=1 git push",
        "/usr/bin/git push",
        "./git push",
        "git 'push'",
        "g\"i\"t push",
        "env git push",
        "sh -c 'cd x && git push'",
        "echo ok | xargs git push",
        "echo hi > .git/hooks/pre-push",
        "cat x >> src/../.git/config",
        "echo $(id)",
        "git -C . push origin x",
        "git --no-pager -c user.name=x push",
    ],
)
def test_attacker_cannot_dress_up_a_denied_command(line: str) -> None:
    decision = policy.decide_tool_call(_ci_policy(), "Bash", {"command": line}, run=RUN)
    assert decision.effect is api.Effect.DENY, (line, decision)


def test_mcp_tools_match_server_slash_tool() -> None:
    policy_set = policy.compile(
        [
            api.parse(
                {
                    "apiVersion": api.API_VERSION,
                    "kind": "RunPolicy",
                    "metadata": {"name": "p", "namespace": "n"},
                    "spec": {"rules": [
                        {"name": "gh", "actions": ["tool.call"], "tools": ["github/get_*"],
                         "arguments": [{"name": "repo", "glob": "acme/*"}], "effect": "Allow"},
                    ]},
                }
            )  # type: ignore[list-item]
        ]
    )

    def effect(tool: str, server: str | None, repo: str) -> api.Effect:
        return policy.decide_tool_call(
            policy_set, tool, {"repo": repo}, run=RUN, mcp_server=server
        ).effect

    assert effect("get_issue", "github", "acme/api") is api.Effect.ALLOW
    assert effect("get_issue", "github", "evil/api") is api.Effect.DENY
    assert effect("delete_repo", "github", "acme/api") is api.Effect.DENY
    assert effect("get_issue", None, "acme/api") is api.Effect.DENY
    assert effect("get_issue", "gitlab", "acme/api") is api.Effect.DENY
    # A model naming a tool with a slash cannot pose as a server's tool.
    assert effect("github/get_issue", None, "acme/api") is api.Effect.DENY


def test_permissions_yaml_excludes_only_what_is_denied_outright() -> None:
    text = policy.to_permissions_yaml(_ci_policy())
    exported = yaml.safe_load(text)
    # No spec.allowedEgress on a RunPolicy closes egress, so Fetch can never succeed.
    assert exported["exclude"] == ["Fetch"]
    assert "Bash" in exported["allow"]
    closed = yaml.safe_load(policy.to_permissions_yaml(policy.compile([])))
    assert "Bash" in closed["exclude"] and closed["allow"] == []
