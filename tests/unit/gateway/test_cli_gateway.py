"""``orchestrator gateway`` and the operator's gateway flags refuse to start half-configured."""

from __future__ import annotations

import argparse
import pathlib

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from continue_orchestrator import cli
from continue_orchestrator.cli import _gateway as gateway_command


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
        (
            ["--github-api-url", "https://ghe.example/api/v3", "--github-app-installation-id", "1"],
            "--github-app-installation-id, --github-api-url given without a GitHub App",
        ),
        (["--github-app-id", "4242"], "a GitHub App without its private key"),
        (
            ["--github-app-id", "4242", "--github-app-key-file", "/nonexistent/app.pem"],
            "cannot read the GitHub App's private key",
        ),
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


@pytest.mark.parametrize(
    ("key", "api_url", "message"),
    [
        ("not a key", "", "does not load as an unencrypted PEM private key"),
        ("", "https://ghe.example/api/v1", "is neither https://api.github.com nor"),
    ],
)
def test_a_github_app_that_cannot_mint_is_refused_at_start(
    tmp_path: pathlib.Path,
    capsys: pytest.CaptureFixture[str],
    key: str,
    api_url: str,
    message: str,
) -> None:
    pem = (
        key
        or rsa.generate_private_key(public_exponent=65537, key_size=2048)
        .private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
        .decode()
    )
    (tmp_path / "app.pem").write_text(pem)
    flags = ["--github-app-id", "4242", "--github-app-key-file", str(tmp_path / "app.pem")]
    if api_url:
        flags += ["--github-api-url", api_url]
    assert cli.main(_gateway(tmp_path, *flags)) == 1
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


def test_the_github_app_flags_make_the_gateways_app(tmp_path: pathlib.Path) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    ).decode()
    (tmp_path / "app.pem").write_text(pem)
    args = argparse.Namespace(
        github_app_id="4242",
        github_app_key_file=str(tmp_path / "app.pem"),
        github_app_installation_id=9,
        github_api_url="https://ghe.example/api/v3",
    )
    tokens = gateway_command._app_tokens(args)
    assert tokens is not None
    assert (tokens.app_id, tokens.api_url, tokens.web_root) == (
        4242,
        "https://ghe.example/api/v3",
        "https://ghe.example",
    )
    assert tokens.serves("https://ghe.example/acme/payments.git")
    dotcom = gateway_command._app_tokens(
        argparse.Namespace(**{**vars(args), "github_api_url": "", "github_app_id": "Iv1.abc"})
    )
    assert dotcom is not None and (dotcom.app_id, dotcom.web_root) == (
        "Iv1.abc",
        "https://github.com",
    )
    none = {k: "" if k != "github_app_installation_id" else None for k in vars(args)}
    assert gateway_command._app_tokens(argparse.Namespace(**none)) is None
