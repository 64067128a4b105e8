"""``spec.toolResults``: which tool results are withheld from the model, against hostile
output (NULs, lone surrogates, content parts, huge results) and hostile patterns."""

from __future__ import annotations

import time
from typing import Any

import pytest

from continue_orchestrator import api, errors, policy

ALLOW, DENY = api.Effect.ALLOW, api.Effect.DENY
RUN = policy.RunContext(namespace="team", name="run-1", uid="u-1", labels={"tier": "prod"})
KEY = (
    "-----BEGIN OPENSSH PRIVATE KEY-----\n"
    "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW\n"
    "-----END OPENSSH PRIVATE KEY-----\n"
)
PRIVATE_KEY = r"-----BEGIN ([A-Z0-9]+ )*PRIVATE KEY-----"


def make(
    tool_results: dict[str, Any], *, kind: str = "ClusterRunPolicy", name: str = "p"
) -> api.RunPolicy | api.ClusterRunPolicy:
    metadata = {"name": name, "namespace": "team"} if kind == "RunPolicy" else {"name": name}
    resource = api.parse(
        {
            "apiVersion": api.API_VERSION,
            "kind": kind,
            "metadata": metadata,
            "spec": {"defaultEffect": "Allow", "toolResults": tool_results},
        }
    )
    assert isinstance(resource, api.RunPolicy | api.ClusterRunPolicy)
    return resource


def keys_policy(**extra: Any) -> policy.PolicySet:
    rule = {"name": "private-keys", "patterns": [PRIVATE_KEY], "reason": "a private key", **extra}
    return policy.compile([make({"withhold": [rule]})])


def decide(policy_set: policy.PolicySet, tool: str | None, content: Any) -> policy.Decision:
    return policy.decide_tool_result(policy_set, tool, content, run=RUN)


def test_a_private_key_is_withheld_citing_rule_and_reason() -> None:
    policy_set = keys_policy()
    decision = decide(policy_set, "Read", "config:\n" + KEY)
    assert (decision.effect, decision.rule) == (DENY, "p/private-keys")
    assert decision.reason == "a private key"
    assert decision.policy == "ClusterRunPolicy p"
    assert decision.policy_digest == policy_set.digest
    assert isinstance(decision.request, policy.ToolResult)
    assert decision.request.tool == "Read" and decision.request.size == len("config:\n" + KEY)
    clean = decide(policy_set, "Read", "-----BEGIN PUBLIC KEY-----\nMIIB\n")
    assert (clean.effect, clean.rule) == (ALLOW, None)


def test_a_policy_without_tool_results_allows_every_result() -> None:
    policy_set = policy.compile([make({})])
    assert policy_set.tool_results == ()
    assert decide(policy_set, "Read", KEY).effect is ALLOW


def test_tools_select_and_an_unknown_tool_matches_every_glob() -> None:
    policy_set = keys_policy(tools=["Bash", "github/*"])
    assert decide(policy_set, "Read", KEY).effect is ALLOW
    assert decide(policy_set, "Bash", KEY).effect is DENY
    assert decide(policy_set, "github/get_file", KEY).effect is DENY
    # A result whose call the gateway never delivered cannot vouch for its tool.
    assert decide(policy_set, None, KEY).effect is DENY


def test_when_reads_tool_bytes_and_run() -> None:
    rule = {
        "name": "big-prod-fetch",
        "tools": ["Fetch"],
        "when": "result.bytes > 10 && result.run.labels['tier'] == 'prod'"
        " && result.tool == 'Fetch'",
    }
    policy_set = policy.compile([make({"withhold": [rule]})])
    assert decide(policy_set, "Fetch", "x" * 11).effect is DENY
    assert decide(policy_set, "Fetch", "x" * 10).effect is ALLOW
    staging = policy.RunContext(labels={"tier": "staging"})
    assert policy.decide_tool_result(policy_set, "Fetch", "x" * 11, run=staging).effect is ALLOW


def test_a_condition_that_fails_withholds() -> None:
    rule = {"name": "label", "when": "result.run.labels['absent'] == 'x'"}
    decision = decide(policy.compile([make({"withhold": [rule]})]), "Read", "hello")
    assert decision.effect is DENY and "condition failed" in decision.reason


def test_max_bytes_counts_utf8_bytes() -> None:
    policy_set = policy.compile([make({"maxBytes": 4})])
    assert decide(policy_set, "Read", "abcd").effect is ALLOW
    decision = decide(policy_set, "Read", "abcé")  # 5 bytes
    assert (decision.effect, decision.rule) == (DENY, "p/maxBytes")
    assert "5 bytes" in decision.reason and "maxBytes (4)" in decision.reason


def test_the_namespace_cannot_let_through_what_the_baseline_withholds() -> None:
    namespace = make({"withhold": [{"name": "nothing", "tools": ["Nope"]}]}, kind="RunPolicy")
    baseline = make({"withhold": [{"name": "keys", "patterns": [PRIVATE_KEY]}]}, name="base")
    decision = decide(policy.compile([namespace, baseline]), "Read", KEY)
    assert (decision.effect, decision.rule) == (DENY, "base/keys")


# -- hostile output -------------------------------------------------------------------


def test_a_nul_before_the_key_does_not_hide_it() -> None:
    # CEL's binding ends a string at NUL; the key after one must still be seen.
    assert decide(keys_policy(), "Read", "binary\x00header\x00" + KEY).effect is DENY


def test_lone_surrogates_neither_crash_nor_hide_the_key() -> None:
    decision = decide(keys_policy(), "Read", "\ud800 junk \udfff\n" + KEY)
    assert decision.effect is DENY
    assert decide(keys_policy(), "Read", "\ud800 only").effect is ALLOW


@pytest.mark.parametrize(
    "content",
    [
        [{"type": "text", "text": "first part"}, {"type": "text", "text": KEY}],
        [{"type": "text", "text": "see image"}, {"type": "image_url", "image_url": {"url": KEY}}],
        [{"type": "text", "text": "ok", "cache_control": {"note": KEY}}],
        ["bare string part", KEY],
        {"unexpected": {"shape": KEY}},
    ],
    ids=["text-part", "non-text-part", "extra-field", "string-part", "object"],
)
def test_every_part_of_structured_content_is_checked(content: Any) -> None:
    assert decide(keys_policy(), "Read", content).effect is DENY


@pytest.mark.parametrize("content", [None, 42, 3.5, True, [], {}, [{"type": "text"}], ""])
def test_odd_content_is_decided_not_crashed_on(content: Any) -> None:
    assert decide(keys_policy(), "Read", content).effect is ALLOW


def test_a_huge_result_against_a_backtracking_pattern_is_linear() -> None:
    # (x+x+)+y backtracks exponentially in Python's re on "xxxx...x"; RE2 cannot.
    rule = {"name": "evil", "patterns": ["(x+x+)+y", "(a|aa)+$", "(.*a){25}"]}
    policy_set = policy.compile([make({"withhold": [rule]})])
    started = time.perf_counter()
    decision = decide(policy_set, "Bash", "x" * (16 * 1024 * 1024))
    elapsed = time.perf_counter() - started
    assert decision.effect is ALLOW
    assert elapsed < 20, f"{elapsed:.1f} s for 16 MiB"
    # A moderately long input would take Python's re longer than the universe has had.
    assert decide(policy_set, "Bash", "x" * 64 + "y").effect is DENY


def test_a_result_over_max_bytes_is_withheld_before_any_pattern_runs() -> None:
    rule = {"name": "evil", "patterns": ["(x+x+)+y"]}
    policy_set = policy.compile([make({"maxBytes": 1024, "withhold": [rule]})])
    started = time.perf_counter()
    decision = decide(policy_set, "Bash", "x" * (32 * 1024 * 1024))
    assert decision.rule == "p/maxBytes"
    assert time.perf_counter() - started < 5


# -- patterns are data, never CEL --------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "hit", "miss"),
    [
        (r'say "hello"', 'they say "hello"', "say hello"),
        (r"C:\\temp\\\d+", r"path C:\temp\42", r"C:\temp\x"),
        ("line one\nline two", "line one\nline two", "line one line two"),
        ("(?i)aws_secret_access_key", "AWS_SECRET_ACCESS_KEY=x", "aws secret"),
        ("clé", "ma clé", "ma cle"),
        ('a" + "b', 'a"  "b', "ab"),
    ],
    ids=["quotes", "backslashes", "newline", "flags", "unicode", "injection"],
)
def test_patterns_mean_what_re2_says(pattern: str, hit: str, miss: str) -> None:
    policy_set = policy.compile([make({"withhold": [{"name": "r", "patterns": [pattern]}]})])
    assert decide(policy_set, "Read", hit).effect is DENY
    assert decide(policy_set, "Read", miss).effect is ALLOW


@pytest.mark.parametrize(
    ("pattern", "fragment"),
    [
        (r"(a)\1", "not an RE2 regular expression"),
        ("(?=secret)", "not an RE2 regular expression"),
        ("((a{100}){100}){100}", "not an RE2 regular expression"),
        ("(unclosed", "missing )"),
        ("", "empty"),
    ],
    ids=["backreference", "lookahead", "too-large", "syntax", "empty"],
)
def test_bad_patterns_are_refused_where_they_are(pattern: str, fragment: str) -> None:
    rules = [{"name": "ok", "tools": ["Read"]}, {"name": "bad", "patterns": ["fine", pattern]}]
    resource = make({"withhold": rules})
    with pytest.raises(errors.PolicyError) as caught:
        policy.compile([resource])
    assert fragment in caught.value.what
    assert caught.value.where == (
        "ClusterRunPolicy p: spec.toolResults.withhold[1] (bad).patterns[1]"
    )


def test_a_condition_naming_a_missing_key_is_refused_where_it_is() -> None:
    resource = make({"withhold": [{"name": "typo", "when": "result.contents.size() > 0"}]})
    with pytest.raises(errors.PolicyError) as caught:
        policy.compile([resource])
    assert "result has no key 'contents'" in caught.value.what
    assert caught.value.where == "ClusterRunPolicy p: spec.toolResults.withhold[0] (typo).when"


def test_duplicate_rule_names_are_refused() -> None:
    resource = make({"withhold": [{"name": "a", "tools": ["x"]}, {"name": "a", "tools": ["y"]}]})
    with pytest.raises(errors.PolicyError, match="used twice"):
        policy.compile([resource])


@pytest.mark.parametrize(
    ("tool_results", "path", "fragment"),
    [
        ({"withhold": [{"name": "all"}]}, "spec.toolResults.withhold[0]",
         "set at least one of tools, patterns or when"),
        ({"maxBytes": 0}, "spec.toolResults.maxBytes", "greater than or equal to 1"),
        ({"withhold": [{"name": "Bad_Name", "tools": ["x"]}]},
         "spec.toolResults.withhold[0].name", "pattern"),
        ({"withold": []}, "spec.toolResults.withold", "unknown field"),
    ],
    ids=["no-selector", "max-bytes", "name", "typo"],
)  # fmt: skip
def test_shape_errors_name_the_field(
    tool_results: dict[str, Any], path: str, fragment: str
) -> None:
    with pytest.raises(errors.ManifestError) as caught:
        make(tool_results)
    message = caught.value.message
    assert path in message and fragment in message, message


def test_the_crd_states_the_same_cross_field_rule() -> None:
    schema = api.crds()[1]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    rule_schema = schema["properties"]["spec"]["properties"]["toolResults"]["properties"][
        "withhold"
    ]["items"]
    assert rule_schema["x-kubernetes-validations"][0]["message"] == (
        "set at least one of tools, patterns or when"
    )


def test_result_text_renders_parts_one_per_line() -> None:
    parts = [{"type": "text", "text": "a"}, {"type": "image_url", "image_url": {"url": "u"}}]
    text = policy.result_text(parts)
    assert text == 'a\n{"image_url": {"url": "u"}, "type": "image_url"}'
