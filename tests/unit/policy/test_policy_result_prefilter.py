"""The literal prefilter in front of tool-result patterns: it may only ever say "cannot
match" when RE2 agrees, so a result is never let through because of it."""

from __future__ import annotations

import pathlib
import time

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from continue_orchestrator import api, policy
from continue_orchestrator.policy import _cel, _prefilter

from .test_policy_tool_results import decide, make

BASELINE = pathlib.Path(__file__).resolve().parents[3] / "policies" / "baseline.yaml"


def baseline() -> policy.PolicySet:
    resource = api.parse(yaml.safe_load(BASELINE.read_text()))
    assert isinstance(resource, api.ClusterRunPolicy)
    return policy.compile([resource])


def re2_finds(pattern: str, text: str) -> bool:
    program = _cel.compile_condition(
        f"result.content.matches({__import__('json').dumps(pattern)})", _cel.RESULT_ENV
    )
    bound = _cel.activation({"content": _cel.holdable(text)}, _cel.RESULT_ENV, "result")
    return _cel.evaluate(program, bound)


@pytest.mark.parametrize(
    ("pattern", "literals"),
    [
        (r"\b(AKIA|ASIA)[0-9A-Z]{16}\b", ("AKIA", "ASIA")),
        ("-----BEGIN ((RSA|EC) )?PRIVATE KEY-----", (" PRIVATE KEY-----",)),
        (r"\bxox[abposr]-[A-Za-z0-9-]{10,}", ("xox",)),
        ("abc?", ("ab",)),
        ("(?i)Token=", ("token=",)),
    ],
)
def test_literals_every_match_must_contain(pattern: str, literals: tuple[str, ...]) -> None:
    found = _prefilter.prefilter(pattern)
    assert found is not None and found.literals == literals


@pytest.mark.parametrize(
    "pattern",
    [
        "[[:alpha:]]x",  # RE2: a POSIX class; Python would read '[', ':', 'a', ... then ']'
        "a{,2}b",  # RE2: the literal text 'a{,2}b'; Python: 0 to 2 'a's
        r"\pLabc",  # Unicode classes: Python's parser refuses them
        r"x*",  # nothing any match must contain
        ".+",
        "(?i)é",  # a non-ASCII literal under case folding
    ],
)
def test_patterns_the_filter_does_not_understand_are_always_run(pattern: str) -> None:
    assert _prefilter.prefilter(pattern) is None


def test_re2_reading_of_a_brace_is_kept_without_a_filter() -> None:
    rules = {"withhold": [{"name": "r", "patterns": ["a{,2}b"]}]}
    policy_set = policy.compile([make(rules)])
    assert decide(policy_set, "Read", "xa{,2}b").effect is api.Effect.DENY
    assert decide(policy_set, "Read", "aab").effect is api.Effect.ALLOW


@pytest.mark.parametrize(
    "text",
    [
        "AWS_SECRET_ACCESS_KEY = abcdefghijklmnopqrstuvwxyz0123",
        "aws_\u017fecret_access_key: abcdefghijklmnopqrstuvwxyz0123",  # LONG S folds to s
        "aw\u212a".replace("\u212a", "s") + "_secret_access_\u212aey=abcdefghijklmnopqrstuvwxyz",
    ],
)
def test_case_folded_credentials_are_still_withheld(text: str) -> None:
    # RE2's (?i) matches KELVIN SIGN for k and LONG S for s; the filter must not skip them.
    assert re2_finds(r"(?i)aws_secret_access_key\s*[=:]\s*\S{20,}", text)
    assert decide(baseline(), "Bash", text).effect is api.Effect.DENY


def test_a_nul_inside_a_literal_does_not_pass_it() -> None:
    assert decide(baseline(), "Read", "AKIA\x00ABCDEFGHIJKLMNOP").effect is api.Effect.ALLOW
    assert decide(baseline(), "Read", "x\x00AKIAABCDEFGHIJKLMNOP").effect is api.Effect.DENY


def test_a_clean_result_against_the_baseline_is_fast() -> None:
    policy_set = baseline()
    text = pathlib.Path(policy.__file__).read_text() * 2
    decide(policy_set, "Read", text)
    samples = []
    for _ in range(50):
        start = time.perf_counter()
        assert decide(policy_set, "Read", text).effect is api.Effect.ALLOW
        samples.append(time.perf_counter() - start)
    # ~3.5 ms before the prefilter on an idle machine; generous for a loaded one.
    assert sorted(samples)[25] < 0.002


_ATOMS = st.sampled_from(
    ["a", "b", "K", "k", "s", "-", "_", ".", r"\d", "[ab]", "[a-c]", "[^a]", r"\b", "^", "$"]
)


@st.composite
def _patterns(draw: st.DrawFn, depth: int = 0) -> str:
    pieces = []
    for _ in range(draw(st.integers(1, 4))):
        if depth < 2 and draw(st.booleans()):
            inner = "|".join(draw(st.lists(_patterns(depth + 1), min_size=1, max_size=3)))
            piece = f"({inner})"
        else:
            piece = draw(_ATOMS)
        piece += draw(st.sampled_from(["", "", "?", "*", "+", "{2}", "{1,3}"]))
        pieces.append(piece)
    return draw(st.sampled_from(["", "(?i)"])) + "".join(pieces)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    pattern=_patterns(),
    text=st.text(alphabet="abcABCKks\u212a\u017f-_.019 \x00\n", max_size=12),
)
def test_the_filter_never_skips_a_match(pattern: str, text: str) -> None:
    found = _prefilter.prefilter(pattern)
    if found is None:
        return
    held = _cel.holdable(text)
    if re2_finds(pattern, text):
        assert found.may_match(held, _prefilter.fold(held)), (pattern, text, found)
