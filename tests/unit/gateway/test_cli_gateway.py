"""``orchestrator gateway`` and the operator's gateway flags refuse to start half-configured."""

from __future__ import annotations

import pathlib

import pytest

from continue_orchestrator import cli


def _gateway(tmp_path: pathlib.Path, *extra: str, token: str = "t" * 40) -> list[str]:
    (tmp_path / "admin-token").write_text(token)
    return [
        "gateway",
        "--listen",  # never a well-known port, should a check below fail to stop it
        "127.0.0.1:0",
        "--record-root",
        str(tmp_path / "records"),
        "--ledger",
        f"sqlite:///{tmp_path / 'ledger.db'}",
        "--admin-token-file",
        str(tmp_path / "admin-token"),
        *extra,
    ]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (["--listen", "8080"], "'8080' is not HOST:PORT"),
        (["--admin-listen", "127.0.0.1:http"], "--admin-listen: '127.0.0.1:http' is not HOST"),
        (["--ledger", ""], "no ledger: decisions must be committed somewhere"),
        (["--record-root", ""], "no record store"),
        (["--admin-token-file", "/nonexistent/token"], "cannot read the admin token"),
    ],
)
def test_gateway_refuses_to_start_without_what_it_needs(
    tmp_path: pathlib.Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    change: list[str],
    message: str,
) -> None:
    monkeypatch.delenv("ORCHESTRATOR_ADMIN_TOKEN", raising=False)
    assert cli.main(_gateway(tmp_path, *change)) == 1
    assert message in capsys.readouterr().err
    assert not (tmp_path / "ledger.db").exists()


def test_a_short_admin_token_is_refused(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(_gateway(tmp_path, token="short")) == 1
    assert "shorter than 32 characters" in capsys.readouterr().err


def test_operator_with_a_gateway_url_needs_its_admin_token(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ORCHESTRATOR_GATEWAY_ADMIN_TOKEN_FILE", raising=False)
    argv = [
        "operator",
        "--runner-image",
        "runner@sha256:" + "0" * 64,
        "--ledger",
        f"sqlite:///{tmp_path / 'ledger.db'}",
        "--gateway-admin-url",
        "http://127.0.0.1:1",
    ]
    assert cli.main(argv) == 1
    assert "gateway admin URL is set but no admin token file" in capsys.readouterr().err
    assert cli.main([*argv, "--gateway-admin-token-file", str(tmp_path / "missing")]) == 1
    assert "cannot read the gateway admin token" in capsys.readouterr().err
