"""The decision semantics: order, defaults, stricter wins, fences, CEL, digests, index."""

from __future__ import annotations

import time
from typing import Any

import pytest

from continue_orchestrator import api, errors, policy

ALLOW, DENY, ASK = api.Effect.ALLOW, api.Effect.DENY, api.Effect.REQUIRE_APPROVAL
RUN = policy.RunContext(namespace="team", name="run-1", uid="u-1", branch="agent/fix-1")


def make(
    rules: list[dict[str, Any]],
    *,
    kind: str = "RunPolicy",
    name: str = "p",
    **spec: Any,
) -> api.RunPolicy | api.ClusterRunPolicy:
    metadata = {"name": name, "namespace": "team"} if kind == "RunPolicy" else {"name": name}
    if any(r.get("effect") == "RequireApproval" for r in rules):
        spec.setdefault("approvers", {"groups": ["leads"]})
    document = {
        "apiVersion": api.API_VERSION,
        "kind": kind,
        "metadata": metadata,
        "spec": {"rules": rules, **spec},
    }
    resource = api.parse(document)
    assert isinstance(resource, api.RunPolicy | api.ClusterRunPolicy)
    return resource


def rule(name: str, effect: str, *actions: str, **selectors: Any) -> dict[str, Any]:
    return {"name": name, "effect": effect, "actions": list(actions), **selectors}


def req(action: str, **fields: Any) -> policy.Request:
    return policy.Request(api.Action(action), run=RUN, **fields)


def test_default_default_is_deny() -> None:
    policy_set = policy.compile([make([])])
    decision = policy.decide(policy_set, req("file.read", path="a"))
    assert decision.effect is DENY
    assert decision.rule is None
    assert "default effect is Deny" in decision.reason


def test_no_policy_at_all_denies() -> None:
    decision = policy.decide(policy.compile([]), req("file.read", path="a"))
    assert decision.effect is DENY


def test_first_matching_rule_decides_within_a_policy() -> None:
    policy_set = policy.compile(
        [
            make(
                [
                    rule("secret-dir", "Deny", "file.read", paths=["src/secret/**"], reason="no"),
                    rule("src", "Allow", "file.read", paths=["src/**"]),
                ]
            )
        ]
    )
    assert policy.decide(policy_set, req("file.read", path="src/a.py")).rule == "p/src"
    denied = policy.decide(policy_set, req("file.read", path="src/secret/k"))
    assert (denied.effect, denied.rule, denied.reason) == (DENY, "p/secret-dir", "no")


def test_stricter_effect_wins_across_policies() -> None:
    baseline = make([rule("pr", "RequireApproval", "pullRequest.create")], kind="ClusterRunPolicy",
                    name="baseline")
    namespace = make([rule("pr", "Allow", "pullRequest.create")], name="ns")
    for order in ([baseline, namespace], [namespace, baseline]):
        decision = policy.decide(policy.compile(order), req("pullRequest.create"))
        assert decision.effect is ASK
        assert decision.rule == "baseline/pr"
        assert decision.policy == "ClusterRunPolicy baseline"
        deciding = policy.compile(order).find(decision.policy)
        assert deciding is baseline
        assert deciding.spec.approvers is not None
        assert deciding.spec.approvers.groups == ["leads"]


def test_deny_beats_require_approval_and_a_rule_is_cited_over_a_default() -> None:
    baseline = make([], kind="ClusterRunPolicy", name="baseline", defaultEffect="Allow")
    namespace = make([rule("w", "Allow", "file.write", paths=["src/**"])], name="ns")
    decision = policy.decide(policy.compile([baseline, namespace]), req("file.write", path="src/x"))
    assert (decision.effect, decision.rule) == (ALLOW, "ns/w")
    strict = make([rule("no", "Deny", "file.write")], name="strict")
    ask = make([rule("ask", "RequireApproval", "file.write")], name="ask")
    decision = policy.decide(policy.compile([ask, strict]), req("file.write", path="src/x"))
    assert (decision.effect, decision.rule) == (DENY, "strict/no")


def test_selectors_are_anded_and_entries_ored() -> None:
    policy_set = policy.compile(
        [
            make(
                [
                    rule(
                        "both",
                        "Allow",
                        "tool.call",
                        tools=["Edit", "Write"],
                        arguments=[{"name": "file_path", "glob": "src/**"}],
                    )
                ]
            )
        ]
    )
    ok = req("tool.call", tool="Edit", arguments={"file_path": "src/a/b.py"})
    wrong_tool = req("tool.call", tool="Read", arguments={"file_path": "src/a/b.py"})
    wrong_arg = req("tool.call", tool="Edit", arguments={"file_path": "docs/x"})
    missing_arg = req("tool.call", tool="Edit", arguments={})
    assert policy.decide(policy_set, ok).effect is ALLOW
    for request in (wrong_tool, wrong_arg, missing_arg):
        assert policy.decide(policy_set, request).effect is DENY, request


def test_argument_regex_must_match_the_whole_value() -> None:
    policy_set = policy.compile(
        [make([rule("r", "Allow", "tool.call", tools=["Bash"],
                    arguments=[{"name": "command", "regex": "pytest( -q)?"}])])]
    )
    allowed = req("tool.call", tool="Bash", arguments={"command": "pytest -q"})
    assert policy.decide(policy_set, allowed).effect is ALLOW
    smuggled = req("tool.call", tool="Bash", arguments={"command": "pytest -q; rm -rf /"})
    assert policy.decide(policy_set, smuggled).effect is DENY


def test_cel_condition_sees_the_request() -> None:
    policy_set = policy.compile(
        [
            make(
                [
                    rule("ns", "Allow", "network.egress", hosts=["*.openai.com:443"],
                         when='request.run.namespace == "team" && request.port == 443'),
                ],
                allowedEgress=["api.openai.com:443"],
            )
        ]
    )
    allowed = req("network.egress", host="api.openai.com", port=443)
    assert policy.decide(policy_set, allowed).effect is ALLOW
    other_run = policy.Request(api.Action.NETWORK_EGRESS, host="api.openai.com", port=443,
                               run=policy.RunContext(namespace="other"))
    assert policy.decide(policy_set, other_run).effect is DENY


def test_cel_error_at_run_time_denies_with_the_error_as_reason() -> None:
    policy_set = policy.compile(
        [make([rule("typed", "Allow", "file.read", when="request.arguments.size + 1 > 0")],
              defaultEffect="Allow")]
    )
    decision = policy.decide(policy_set, req("file.read", path="a", arguments={"size": "big"}))
    assert decision.effect is DENY
    assert decision.rule == "p/typed"
    assert "when condition failed" in decision.reason
    assert "overload" in decision.reason.lower()


def test_cel_missing_key_denies_even_when_rule_would_allow() -> None:
    policy_set = policy.compile(
        [make([rule("k", "Allow", "file.read", when="request.arguments.nope == 'x'")],
              defaultEffect="Allow")]
    )
    assert policy.decide(policy_set, req("file.read", path="a")).effect is DENY


@pytest.mark.parametrize(
    ("when", "column"),
    [
        ("request.run.namespace ==", 25),
        ("request.tool == 'x' && nope", 24),
        ("1 + 2", 1),
        ('request.tool == "Bash" && request.comand == "ls"', 35),
    ],
)
def test_cel_compile_error_names_policy_rule_and_column(when: str, column: int) -> None:
    resource = make([rule("first", "Deny", "file.read"), rule("cond", "Allow", "file.read",
                                                               when=when)])
    with pytest.raises(errors.PolicyError) as caught:
        policy.compile([resource])
    message = caught.value.message
    assert "RunPolicy team/p" in message
    assert "spec.rules[1] (cond).when" in message
    assert f"column {column}" in message


def test_bad_globs_and_regexes_fail_at_compile_time() -> None:
    with pytest.raises(errors.PolicyError, match=r"paths\[0\] '/etc/\*\*' must be relative"):
        policy.compile([make([rule("abs", "Deny", "file.read", paths=["/etc/**"])])])
    with pytest.raises(errors.PolicyError, match=r"unclosed character class"):
        policy.compile([make([rule("cls", "Deny", "file.read", paths=["src/[ab"])])])
    with pytest.raises(errors.PolicyError, match=r"arguments\[0\].regex"):
        policy.compile([make([rule("re", "Deny", "tool.call",
                                    arguments=[{"name": "x", "regex": "("}])])])
    with pytest.raises(errors.PolicyError, match="used twice"):
        policy.compile([make([rule("dup", "Deny", "file.read"), rule("dup", "Deny", "file.read")])])


def test_secrets_outside_allowed_secrets_are_denied_whatever_the_rules() -> None:
    namespace = make([rule("all", "Allow", "secret.read")], allowedSecrets=["OPENAI_API_KEY"])
    policy_set = policy.compile([namespace])
    assert policy.decide(policy_set, req("secret.read", secret="OPENAI_API_KEY")).effect is ALLOW
    decision = policy.decide(policy_set, req("secret.read", secret="AWS_SECRET"))
    assert decision.effect is DENY
    assert "allowedSecrets" in decision.reason
    # A ClusterRunPolicy without a list adds no fence; with one, it is a ceiling.
    open_baseline = make([], kind="ClusterRunPolicy", name="b", defaultEffect="Allow")
    assert policy.decide(policy.compile([open_baseline, namespace]),
                         req("secret.read", secret="OPENAI_API_KEY")).effect is ALLOW
    ceiling = make([], kind="ClusterRunPolicy", name="b", defaultEffect="Allow",
                   allowedSecrets=["GITHUB_TOKEN"])
    assert policy.decide(policy.compile([ceiling, namespace]),
                         req("secret.read", secret="OPENAI_API_KEY")).effect is DENY


def test_egress_needs_the_namespace_allow_list() -> None:
    namespace = make([rule("egress", "Allow", "network.egress", hosts=["*:443"])],
                     allowedEgress=["pypi.org:443", "*.pythonhosted.org:443"])
    policy_set = policy.compile([namespace])
    for host in ("pypi.org", "PyPI.org.", "files.pythonhosted.org"):
        assert policy.decide(policy_set, req("network.egress", host=host, port=443)).effect \
            is ALLOW, host
    for host, port in (("pypi.org", 80), ("evil.com", 443), ("pythonhosted.org", 443)):
        decision = policy.decide(policy_set, req("network.egress", host=host, port=port))
        assert decision.effect is DENY, (host, port)
        assert "allowedEgress" in decision.reason
    closed = policy.compile([make([rule("e", "Allow", "network.egress")])])
    assert policy.decide(closed, req("network.egress", host="pypi.org", port=443)).effect is DENY


def test_unknown_branch_meets_deny_rules_but_not_allow_rules() -> None:
    policy_set = policy.compile(
        [
            make(
                [
                    rule("main", "Deny", "branch.push", branches=["main"]),
                    rule("agent", "Allow", "branch.push", branches=["agent/**"]),
                ],
                defaultEffect="Allow",
            )
        ]
    )
    unknown = req("branch.push", branch_unknown=True)
    assert policy.decide(policy_set, unknown).rule == "p/main"
    assert policy.decide(policy_set, req("branch.push", branch="agent/x/y")).effect is ALLOW


def test_repository_globs_ignore_a_trailing_git_suffix() -> None:
    policy_set = policy.compile(
        [make([rule("acme", "Allow", "repository.access",
                    repositories=["https://github.com/acme/*"])])]
    )
    for url in ("https://github.com/acme/api", "https://github.com/acme/api.git"):
        assert policy.decide(policy_set, req("repository.access", repository=url)).effect is ALLOW
    for url in ("https://github.com/acme/api/../../evil/x", "https://github.com/evil/api"):
        assert policy.decide(policy_set, req("repository.access", repository=url)).effect is DENY


def test_digest_is_canonical_and_changes_with_any_rule() -> None:
    a = make([rule("r", "Allow", "file.read", paths=["src/**"])])
    same = make([rule("r", "Allow", "file.read", paths=["src/**"])], defaultEffect="Deny")
    changed = make([rule("r", "Allow", "file.read", paths=["src/*"])])
    digest = policy.compile([a]).digest
    assert digest.startswith("sha256:") and len(digest) == 71
    assert policy.compile([same]).digest == digest
    assert policy.compile([changed]).digest != digest
    assert policy.decide(policy.compile([a]), req("file.read", path="src/a")).policy_digest \
        == digest


def test_index_hands_a_request_only_the_rules_for_its_action_and_tool() -> None:
    rules = [rule(f"bash-{i}", "Deny", "tool.call", tools=["Bash"],
                  arguments=[{"name": "command", "glob": f"cmd{i}"}]) for i in range(200)]
    rules.append(rule("read", "Allow", "tool.call", tools=["Read"]))
    rules.append(rule("mcp", "Deny", "tool.call", tools=["github/*"]))
    policy_set = policy.compile([make(rules)])
    _, found = policy.outcomes(policy_set, req("tool.call", tool="Read"))
    assert [(o.effect, o.considered) for o in found] == [(ALLOW, 1)]
    _, found = policy.outcomes(policy_set, req("tool.call", tool="create_issue",
                                               mcp_server="github"))
    assert [(o.rule, o.considered) for o in found] == [("p/mcp", 1)]
    _, found = policy.outcomes(policy_set, req("tool.call", tool="Bash",
                                               arguments={"command": "cmd7"}))
    assert found[0].rule == "p/bash-7"
    assert found[0].considered == 200


def test_argument_matchers_on_a_path_argument_see_the_normalised_path() -> None:
    policy_set = policy.compile(
        [make([rule("edit-src", "Allow", "tool.call", "file.write", tools=["Edit"],
                    arguments=[{"name": "file_path", "glob": "src/**"}])])]
    )
    ok = policy.decide_tool_call(policy_set, "Edit", {"file_path": "/workspace/src/a.py"},
                                 run=RUN)
    assert (ok.effect, ok.rule) == (ALLOW, "p/edit-src")
    sneaky = policy.decide_tool_call(policy_set, "Edit", {"file_path": "src/../.git/config"},
                                     run=RUN)
    assert sneaky.effect is DENY


def test_a_condition_gets_only_the_keys_it_reads_and_strings_are_not_keys() -> None:
    policy_set = policy.compile(
        [make([rule("labels", "Allow", "file.read",
                    when='request.run.labels["request.nope"] == "x" && request.path != ""')])]
    )
    labelled = policy.RunContext(namespace="team", labels={"request.nope": "x"})
    allowed = policy.Request(api.Action.FILE_READ, path="a", run=labelled)
    assert policy.decide(policy_set, allowed).effect is ALLOW
    assert policy.decide(policy_set, req("file.read", path="a")).effect is DENY


@pytest.mark.parametrize("hidden", ["\x00", "\x00\x00", "\udce2"])
def test_a_nul_or_a_lone_surrogate_cannot_hide_text_from_a_condition(hidden: str) -> None:
    """CEL's binding cut strings at NUL: 'ok\\x00DROP TABLE' read as 'ok' to a condition."""
    policy_set = policy.compile(
        [
            make(
                [
                    rule("no-drops", "Deny", "tool.call", tools=["Write"],
                         when='request.arguments.content.contains("DROP TABLE")'),
                    rule("writes", "Allow", "tool.call", tools=["Write"]),
                ]
            )
        ]
    )  # fmt: skip
    attack = req("tool.call", tool="Write", arguments={"content": f"ok{hidden}DROP TABLE x"})
    decision = policy.decide(policy_set, attack)
    assert decision.effect is DENY and decision.rule == "p/no-drops", decision
    harmless = req("tool.call", tool="Write", arguments={"content": f"ok{hidden}SELECT 1"})
    assert policy.decide(policy_set, harmless).effect is ALLOW


def test_a_backtracking_argument_regex_cannot_stall_a_decision() -> None:
    """A model-crafted argument against a pattern like (a+)+b would run for longer than
    the universe with Python's re; the decision ends in ~50 ms, denied, saying why."""
    policy_set = policy.compile(
        [make([rule("slow", "Allow", "tool.call", tools=["Write"],
                    arguments=[{"name": "content", "regex": "(a+)+b"}])])]
    )  # fmt: skip
    attack = req("tool.call", tool="Write", arguments={"content": "a" * 5000 + "c"})
    started = time.monotonic()
    decision = policy.decide(policy_set, attack)
    assert time.monotonic() - started < 5
    assert decision.effect is DENY and decision.rule == "p/slow"
    assert "an argument regex ran out of time" in decision.reason
    assert "arguments[0].regex ran over 50 ms on a 5001-character argument" in decision.reason
    fine = req("tool.call", tool="Write", arguments={"content": "aaab"})
    assert policy.decide(policy_set, fine).effect is ALLOW


def test_an_argument_regex_that_does_not_compile_names_its_place() -> None:
    with pytest.raises(errors.PolicyError) as raised:
        policy.compile(
            [make([rule("bad", "Allow", "tool.call", tools=["Bash"],
                        arguments=[{"name": "command", "regex": "(unclosed"}])])]
        )  # fmt: skip
    assert "spec.rules[0] (bad).arguments[0].regex" in raised.value.message
