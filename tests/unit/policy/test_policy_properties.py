"""Properties that must hold for every input, not just the ones we thought of.

- No path that escapes the workspace is ever allowed by a workspace-scoped rule, however
  it is spelled (dots, slashes, absolute, NUL, backslashes, home).
- Adding a Deny rule anywhere never makes any decision less strict.
"""

from __future__ import annotations

import posixpath
import shlex
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from continue_orchestrator import api, policy

ROOT = "/workspace"
RUN = policy.RunContext(namespace="n", name="r", branch="agent/r", workspace_root=ROOT)

segments = st.sampled_from(
    ["..", ".", "", "a", "b", ".git", "workspace", "~", "\\..", "..\\", "a\x00", " ", "…", "%2e%2e"]
)
paths = st.builds(
    lambda absolute, parts: ("/" if absolute else "") + "/".join(parts),
    st.booleans(),
    st.lists(segments, min_size=0, max_size=8),
) | st.text(alphabet="./\\~a\x00w", max_size=16)


def escapes(path: str) -> bool:
    """The oracle: does ``path`` name something outside the workspace?"""
    if path.startswith("/"):
        path = "/" + path.lstrip("/")  # POSIX leaves '//' implementation-defined; Linux: '/'
    joined = posixpath.normpath(posixpath.join(ROOT, path))
    return not (joined == ROOT or joined.startswith(ROOT + "/"))


def _scoped_allow_everything() -> policy.PolicySet:
    document = {
        "apiVersion": api.API_VERSION,
        "kind": "RunPolicy",
        "metadata": {"name": "p", "namespace": "n"},
        "spec": {
            "defaultEffect": "Allow",
            "rules": [
                {"name": "ws", "actions": ["file.read", "file.write"], "paths": ["**"],
                 "effect": "Allow"},
            ],
        },
    }
    return policy.compile([api.parse(document)])  # type: ignore[list-item]


ALLOW_ALL = _scoped_allow_everything()


@settings(max_examples=400, deadline=None)
@given(paths)
def test_no_escaping_path_is_ever_allowed(path: str) -> None:
    for tool, argument in (("Read", "filepath"), ("Write", "filepath"), ("Edit", "file_path")):
        decision = policy.decide_tool_call(ALLOW_ALL, tool, {argument: path}, run=RUN)
        if escapes(path) or "\x00" in path:
            assert decision.effect is api.Effect.DENY, (tool, path, decision)
        if decision.effect is api.Effect.ALLOW:
            assert not escapes(path)


@settings(max_examples=400, deadline=None)
@given(paths)
def test_normalised_paths_stay_inside(path: str) -> None:
    try:
        normal = policy.normalise(path, root=ROOT)
    except policy.PathRejectedError:
        return
    assert ".." not in normal.split("/")
    assert not normal.startswith("/")
    assert not escapes(normal)
    assert policy.normalise(normal, root=ROOT) == normal


@settings(max_examples=150, deadline=None)
@given(st.lists(st.sampled_from(["a", "..", ".", ".git", "x y", "$(id)", ";", ">"]), max_size=6))
def test_no_escaping_redirection_is_allowed(parts: list[str]) -> None:
    target = "/".join(parts) or "."
    line = f"echo hi > {shlex.quote(target)}"
    decision = policy.decide_tool_call(ALLOW_ALL, "Bash", {"command": line}, run=RUN)
    if escapes(target):
        assert decision.effect is api.Effect.DENY, (line, decision)


ACTIONS = ["tool.call", "file.read", "file.write", "shell.exec", "branch.push", "secret.read"]
EFFECTS = ["Allow", "Deny", "RequireApproval"]
WHENS = [
    None,
    'request.run.namespace == "n"',
    'request.path.startsWith("src")',
    "request.arguments.missing == 1",
    'request.command.contains("push")',
]

rules = st.fixed_dictionaries(
    {
        "actions": st.lists(st.sampled_from(ACTIONS), min_size=1, max_size=3, unique=True),
        "effect": st.sampled_from(EFFECTS),
    },
    optional={
        "tools": st.lists(st.sampled_from(["Read", "Write", "Bash", "B*", "*"]), min_size=1,
                          max_size=2),
        "paths": st.lists(st.sampled_from(["src/**", "*.py", ".git/**", "**"]), min_size=1,
                          max_size=2),
        "commands": st.lists(st.sampled_from(["git push*", "ls*", "*"]), min_size=1, max_size=2),
        "branches": st.lists(st.sampled_from(["main", "agent/**"]), min_size=1, max_size=2),
        "when": st.sampled_from(WHENS),
    },
)
policies = st.lists(
    st.tuples(st.lists(rules, max_size=6), st.sampled_from(EFFECTS), st.booleans()),
    min_size=1,
    max_size=2,
)
tool_calls = st.sampled_from(
    [
        ("Read", {"filepath": "src/a.py"}),
        ("Read", {"filepath": ".git/config"}),
        ("Write", {"filepath": "src/a.py", "content": ""}),
        ("Write", {"filepath": "b.py", "content": ""}),
        ("Bash", {"command": "ls -la"}),
        ("Bash", {"command": "git push origin main"}),
        ("Bash", {"command": "cd src && git push"}),
        ("Checklist", {"checklist": "x"}),
    ]
)


def _build(spec: list[tuple[list[dict[str, Any]], str, bool]]) -> list[Any]:
    built = []
    for index, (rule_list, default, cluster) in enumerate(spec):
        named = [{**r, "name": f"r{i}"} for i, r in enumerate(rule_list)]
        named = [{k: v for k, v in r.items() if v is not None} for r in named]
        document = {
            "apiVersion": api.API_VERSION,
            "kind": "ClusterRunPolicy" if cluster else "RunPolicy",
            "metadata": {"name": f"p{index}"} | ({} if cluster else {"namespace": "n"}),
            "spec": {"defaultEffect": default, "rules": named,
                     "approvers": {"groups": ["g"]}},
        }
        built.append(api.parse(document))
    return built


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(policies, rules, st.data(), tool_calls)
def test_adding_a_deny_rule_never_loosens_a_decision(
    spec: list[tuple[list[dict[str, Any]], str, bool]],
    deny: dict[str, Any],
    data: st.DataObject,
    call: tuple[str, dict[str, Any]],
) -> None:
    before = policy.compile(_build(spec))
    target = data.draw(st.integers(0, len(spec) - 1))
    rule_list, default, cluster = spec[target]
    position = data.draw(st.integers(0, len(rule_list)))
    denied = [*rule_list[:position], {**deny, "effect": "Deny"}, *rule_list[position:]]
    after = policy.compile(_build([*spec[:target], (denied, default, cluster), *spec[target + 1:]]))
    tool, arguments = call
    old = policy.decide_tool_call(before, tool, arguments, run=RUN)
    new = policy.decide_tool_call(after, tool, arguments, run=RUN)
    assert policy.STRICTNESS[new.effect] >= policy.STRICTNESS[old.effect], (old, new)
    if old.effect is api.Effect.DENY:
        assert new.effect is api.Effect.DENY


GLOBS = ["src/**", "*.py", "**/*.py", ".git/**", "**", "a/*/c", "[ab]*", "?", "**/x/**"]


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.tuples(st.lists(st.sampled_from(GLOBS), min_size=1, max_size=3),
                  st.sampled_from(EFFECTS), st.booleans()),
        min_size=1, max_size=12,
    ),
    st.lists(st.sampled_from(["a", "b", "c", "x", "src", ".git", "m.py"]), min_size=1,
             max_size=5),
)
def test_grouped_rules_decide_as_rules_tried_one_by_one(
    spec: list[tuple[list[str], str, bool]], parts: list[str]
) -> None:
    rule_list = [
        {"name": f"r{i}", "actions": ["file.read"], "paths": globs, "effect": effect}
        | ({"when": 'request.run.namespace == "n"'} if conditional else {})
        for i, (globs, effect, conditional) in enumerate(spec)
    ]
    policy_set = policy.compile(_build([(rule_list, "Deny", False)]))
    path = "/".join(parts)
    request = policy.Request(api.Action.FILE_READ, path=path, run=RUN)
    compiled = policy_set.compiled[0]
    expected = next(
        (r.qualified for r in compiled.candidates(api.Action.FILE_READ, None)
         if r.paths is not None and r.paths.fullmatch(path)),
        None,
    )
    assert policy.decide(policy_set, request).rule == expected
