"""Flags of the long-running commands also come from the environment, and a bad value
from either place is a usage error naming the flag and the variable, not a traceback."""

from __future__ import annotations

import argparse
import pathlib

import pytest

from continue_orchestrator import cli


def _parse(*argv: str) -> argparse.Namespace:
    return cli.build_parser(argv[0]).parse_args(list(argv))


def test_the_environment_sets_a_default_and_a_flag_wins(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ORCHESTRATOR_WORKERS", "4")
    monkeypatch.setenv("ORCHESTRATOR_RESYNC_SECONDS", "2.5")
    monkeypatch.setenv("ORCHESTRATOR_WATCH_NAMESPACES", "team-a, team-b")
    monkeypatch.setenv("ORCHESTRATOR_ALLOW_UNPINNED_RUNNER_IMAGE", "1")
    monkeypatch.setenv("ORCHESTRATOR_SIGNING_KEY_DIR", "/keys")
    args = _parse("operator")
    assert args.workers == 4 and args.resync_seconds == 2.5
    assert args.namespace == ["team-a", "team-b"]
    assert args.allow_unpinned_runner_image is True
    assert args.signing_key_dir == pathlib.Path("/keys")
    assert _parse("operator", "--workers", "2").workers == 2


def test_defaults_without_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("WORKERS", "METRICS_PORT", "SIGSTORE_TOKEN", "GATEWAY_GRACE_SECONDS"):
        monkeypatch.delenv(f"ORCHESTRATOR_{name}", raising=False)
    args = _parse("operator")
    assert args.workers == 16 and args.metrics_port is None
    assert args.sigstore_token == pathlib.Path("/var/run/secrets/tokens/sigstore/token")
    assert _parse("gateway").grace_seconds == 25.0


@pytest.mark.parametrize(
    ("command", "variable", "value", "message"),
    [
        ("operator", "ORCHESTRATOR_WORKERS", "many",
         "argument --workers: 'many' is not a whole number (given as --workers or in "
         "$ORCHESTRATOR_WORKERS)"),
        ("operator", "ORCHESTRATOR_RESYNC_SECONDS", "30s", "'30s' is not a number"),
        ("operator", "ORCHESTRATOR_ALLOW_UNPINNED_RUNNER_IMAGE", "yes",
         "$ORCHESTRATOR_ALLOW_UNPINNED_RUNNER_IMAGE='yes' (for --allow-unpinned-runner-image) "
         "is not 1, 0, true or false"),
        ("gateway", "ORCHESTRATOR_GATEWAY_APPROVALS", "cluster",
         "$ORCHESTRATOR_GATEWAY_APPROVALS='cluster' (for --approvals) is not one of local, "
         "kubernetes"),
        ("gateway", "ORCHESTRATOR_METRICS_PORT", "9090/tcp", "'9090/tcp' is not a whole number"),
    ],
)  # fmt: skip
def test_a_bad_value_from_the_environment_is_a_usage_error(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    command: str,
    variable: str,
    value: str,
    message: str,
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(SystemExit) as exit_:
        cli.main([command])
    assert exit_.value.code == 2
    assert message in capsys.readouterr().err


def test_a_flag_overrides_a_bad_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORCHESTRATOR_WORKERS", "many")
    assert _parse("operator", "--workers", "3").workers == 3


def test_help_works_whatever_the_environment_holds(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("ORCHESTRATOR_WORKERS", "many")
    with pytest.raises(SystemExit) as exit_:
        cli.main(["operator", "--help"])
    assert exit_.value.code == 0
    assert "$ORCHESTRATOR_WORKERS, default 16" in capsys.readouterr().out
