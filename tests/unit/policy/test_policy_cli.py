"""``orchestrator policy test|explain|permissions`` and ``validate`` compiling policies."""

from __future__ import annotations

import json
import pathlib
import textwrap

import pytest

from continue_orchestrator import cli

POLICY = textwrap.dedent(
    """\
    apiVersion: orchestrator.continue.dev/v1alpha1
    kind: ClusterRunPolicy
    metadata: {name: floor}
    spec:
      defaultEffect: Allow
      rules:
        - {name: no-main, actions: [branch.push], branches: [main], effect: Deny,
           reason: not main}
    ---
    apiVersion: orchestrator.continue.dev/v1alpha1
    kind: RunPolicy
    metadata: {name: team, namespace: a}
    spec:
      rules:
        - {name: tools, actions: [tool.call], tools: [Bash, Read], effect: Allow}
        - {name: git, actions: [shell.exec], commands: ["git push*"], effect: Allow}
        - {name: push, actions: [branch.push], effect: Allow}
        - {name: read, actions: [file.read], paths: ["src/**"], effect: Allow}
    """
)


@pytest.fixture
def policy_file(tmp_path: pathlib.Path) -> pathlib.Path:
    path = tmp_path / "policy.yaml"
    path.write_text(POLICY)
    return path


def write(tmp_path: pathlib.Path, name: str, text: str) -> pathlib.Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def test_policy_test_passes_and_fails_with_a_table(
    policy_file: pathlib.Path, tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cases = write(tmp_path, "cases.yaml", """\
        run: {namespace: a, branch: agent/x}
        cases:
          - name: push own branch
            toolCall: {name: Bash, arguments: {command: git push}}
            expect: Allow
          - name: push main
            toolCall: {name: Bash, arguments: {command: git push origin main}}
            expect: Deny
            expectRule: floor/no-main
          - name: read src
            request: {action: file.read, path: src/a}
            expect: Allow
        """)
    assert cli.main(["policy", "test", str(policy_file), str(cases)]) == 0
    out = capsys.readouterr().out
    assert "3 passed, 0 failed" in out
    assert "floor/no-main" in out

    wrong = write(tmp_path, "wrong.yaml", """\
        cases:
          - name: read docs
            request: {action: file.read, path: docs/a}
            expect: Allow
          - name: read src but wrong rule
            request: {action: file.read, path: src/a}
            expect: Allow
            expectRule: team/nope
        """)
    assert cli.main(["policy", "test", str(policy_file), str(wrong)]) == 1
    out = capsys.readouterr().out
    assert out.count("FAIL") == 2
    assert "0 passed, 2 failed" in out


def test_policy_test_rejects_a_misspelt_case(
    policy_file: pathlib.Path, tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cases = write(tmp_path, "cases.yaml", """\
        cases:
          - name: typo
            request: {action: file.read, pth: src/a}
            expect: Allow
        """)
    assert cli.main(["policy", "test", str(policy_file), str(cases)]) == 1
    err = capsys.readouterr().err
    assert "cases.yaml" in err and "cases[0].request.pth" in err


def test_explain_names_the_rule_and_every_policy(
    policy_file: pathlib.Path, tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    request = write(tmp_path, "request.yaml", """\
        run: {namespace: a}
        toolCall: {name: Bash, arguments: {command: "cd src && git push origin main"}}
        """)
    assert cli.main(["policy", "explain", str(policy_file), str(request)]) == 0
    out = capsys.readouterr().out
    assert "effect:  Deny" in out
    assert "rule:    floor/no-main" in out
    assert "reason:  not main" in out
    assert "branch.push Bash command='git push origin main' branch='main'" in out
    assert "RunPolicy a/team: Allow by team/push" in out
    assert "RunPolicy a/team: Deny by default" in out  # 'cd src' is not allowed


def test_explain_lists_the_files_a_glob_could_reach_as_the_decision_does(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`cat src/*.py` is denied because the glob could read src/id_rsa.py; explain shows
    that request, not only the glob itself."""
    baseline = pathlib.Path(__file__).resolve().parents[3] / "policies" / "baseline.yaml"
    request = write(tmp_path, "request.yaml", """\
        toolCall: {name: Bash, arguments: {command: "cat src/*.py"}}
        """)
    assert cli.main(["policy", "explain", str(baseline), str(request)]) == 0
    out = capsys.readouterr().out
    assert "effect:  Deny" in out
    assert "file.read Bash path='src/id_rsa.py'" in out
    assert "Deny by baseline/no-secret-files" in out


def test_permissions_prints_continue_permissions(
    policy_file: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["policy", "permissions", str(policy_file)]) == 0
    out = capsys.readouterr().out
    assert "exclude:\n- Write" in out


def test_validate_compiles_cel(tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = write(tmp_path, "bad.yaml", POLICY.replace(
        "effect: Deny,", 'effect: Deny, when: "request.branch ==",'))
    assert cli.main(["validate", str(bad)]) == 1
    err = capsys.readouterr().err
    assert "bad.yaml" in err
    assert "ClusterRunPolicy floor: spec.rules[0] (no-main).when" in err
    assert "column 18" in err


def test_validate_runs_a_policys_cases_beside_it(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write(tmp_path, "team.yaml", POLICY)
    cases = write(tmp_path, "team.cases.yaml", """\
        run: {namespace: a, branch: agent/x}
        cases:
          - name: push main
            toolCall: {name: Bash, arguments: {command: git push origin main}}
            expect: Deny
            expectRule: floor/no-main
        """)
    assert cli.main(["validate", str(tmp_path / "team.yaml"), str(cases)]) == 0
    assert "1 test case(s) pass" in capsys.readouterr().out

    cases.write_text(cases.read_text().replace("expect: Deny", "expect: Allow"))
    assert cli.main(["validate", str(cases)]) == 1
    err = capsys.readouterr().err
    assert "team.cases.yaml: case 'push main': expected Allow (floor/no-main)" in err
    assert "decides Deny (floor/no-main)" in err


def test_validate_reports_a_bad_or_orphaned_cases_file(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    orphan = write(tmp_path, "lonely.cases.yaml", """\
        cases:
          - {name: read, request: {action: file.read, path: a}, expect: Allow}
        """)
    assert cli.main(["validate", str(orphan)]) == 1
    assert "no policy beside it" in capsys.readouterr().err

    write(tmp_path, "team.yaml", POLICY)
    misspelt = write(tmp_path, "team.cases.yaml", """\
        cases:
          - {name: read, request: {action: file.read, path: a}, expcet: Allow}
        """)
    assert cli.main(["validate", str(misspelt)]) == 1
    err = capsys.readouterr().err
    assert "team.cases.yaml" in err and "expcet" in err


def test_validate_checks_the_whole_policy_library(capsys: pytest.CaptureFixture[str]) -> None:
    library = pathlib.Path(__file__).resolve().parents[3] / "policies"
    files = sorted(str(p) for p in library.glob("*.yaml"))
    assert any(f.endswith(".cases.yaml") for f in files)
    assert cli.main(["validate", *files]) == 0, capsys.readouterr().err


def test_explain_decides_a_tool_result(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    library = pathlib.Path(__file__).resolve().parents[3] / "policies" / "baseline.yaml"
    key = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n"
    result = write(tmp_path, "result.yaml", f"""\
        toolResult: {{tool: Read, content: {json.dumps(key)}}}
        """)
    assert cli.main(["policy", "explain", str(library), str(result)]) == 0
    out = capsys.readouterr().out
    assert "effect:  Deny" in out and "rule:    baseline/" in out

    plain = write(tmp_path, "plain.yaml", "toolResult: {tool: Read, content: 'print(1)'}\n")
    assert cli.main(["policy", "explain", str(library), str(plain)]) == 0
    assert "effect:  Allow" in capsys.readouterr().out
