"""`forge.for_url`: the backend and API URL a repository URL implies, what may override
them, and the credentials and transports it refuses; plus the small shared rules (the
summary marker, a pull request's state, secrets kept out of reprs)."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from continue_orchestrator import errors, forge
from continue_orchestrator.forge import _summary, _wire

TOKEN = forge.Token("secret-token-value")


@pytest.mark.parametrize(
    ("url", "kind", "api"),
    [
        ("https://github.com/acme/payments.git", "github", "https://api.github.com"),
        ("git@github.com:acme/payments.git", "github", "https://api.github.com"),
        ("https://gitea.example/acme/payments", "gitea", "https://gitea.example/api/v1"),
        ("https://code.example/git/acme/x", "gitea", "https://code.example/git/api/v1"),
        ("https://codeberg.org/acme/x", "gitea", "https://codeberg.org/api/v1"),
    ],
)
def test_kind_and_api_url_follow_the_host(url: str, kind: str, api: str) -> None:
    repo = forge.Repository(url)
    assert forge.kind_of(repo) == kind
    assert forge.api_url_of(repo, forge.kind_of(repo)) == api
    backend = forge.for_url(url, TOKEN)
    assert backend.kind == kind
    assert isinstance(backend, forge.GitHub if kind == "github" else forge.Gitea)


def test_github_enterprise_is_named_by_kind_and_served_at_api_v3() -> None:
    repo = forge.Repository("https://ghe.example/acme/payments")
    assert forge.api_url_of(repo, "github") == "https://ghe.example/api/v3"
    assert isinstance(forge.for_url(repo, TOKEN, kind="github"), forge.GitHub)


def test_plain_http_only_to_this_machine() -> None:
    assert forge.for_url("http://127.0.0.1:3000/o/n", TOKEN).kind == "gitea"
    with pytest.raises(errors.ForgeError, match="plain HTTP to another machine"):
        forge.for_url("http://gitea.internal/o/n", TOKEN)
    with pytest.raises(errors.ForgeError, match="plain HTTP to another machine"):
        forge.for_url("https://github.com/o/n", TOKEN, api_url="http://api.example")
    with pytest.raises(errors.ForgeError, match="is not an http"):
        forge.for_url("https://github.com/o/n", TOKEN, api_url="ftp://api.example")


def test_a_github_app_cannot_sign_in_to_gitea() -> None:
    app = forge.GitHubApp(app_id=1, private_key="-----BEGIN RSA PRIVATE KEY-----")
    with pytest.raises(errors.ForgeError, match="cannot sign in to Gitea"):
        forge.for_url("https://gitea.example/o/n", app)


def test_an_app_key_that_is_not_an_rsa_pem_fails_before_any_request() -> None:
    with pytest.raises(errors.ForgeError, match="does not load as an unencrypted PEM"):
        forge.for_url("https://github.com/o/n", forge.GitHubApp(1, "not a key"))
    ec_pem = (
        ec.generate_private_key(ec.SECP256R1())
        .private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        .decode()
    )
    with pytest.raises(errors.ForgeError, match="not an RSA key"):
        forge.for_url("https://github.com/o/n", forge.GitHubApp(1, ec_pem))


def test_secrets_stay_out_of_reprs() -> None:
    assert "secret-token-value" not in repr(TOKEN)
    assert "KEY" not in repr(forge.GitHubApp(app_id=7, private_key="-----BEGIN KEY-----"))
    credential = forge.GitCredential(username="x-access-token", secret="ghs_abc")
    assert "ghs_abc" not in repr(credential)


def test_the_summary_marker_names_the_commit() -> None:
    sha = "A" * 40
    text = _summary.body(head_sha=sha.lower(), title="Evidence", summary="tests passed")
    assert (
        text == f"<!-- continue-orchestrator:summary {'a' * 40} -->\n### Evidence\n\ntests passed\n"
    )
    ours = _summary.Comment(id=2, html_url="u2", body=text)
    other = _summary.Comment(id=1, html_url="u1", body="LGTM")
    assert _summary.ours([other, ours], "a" * 40) == ours
    assert _summary.ours([other, ours], "b" * 40) is None
    assert _summary.commit(sha) == "a" * 40
    with pytest.raises(errors.ForgeError, match="is not a commit id"):
        _summary.commit("main")


@pytest.mark.parametrize(
    ("state", "merged", "merged_at", "public"),
    [
        ("open", None, None, "open"),
        ("open", None, "2011-01-26T19:01:12Z", "open"),  # as GitHub's own example has it
        ("closed", True, None, "merged"),
        ("closed", None, "2011-01-26T19:01:12Z", "merged"),
        ("closed", False, None, "closed"),
    ],
)
def test_a_pull_requests_state(
    state: str, merged: bool | None, merged_at: str | None, public: str
) -> None:
    pull = _wire.Pull.model_validate(
        {
            "number": 3,
            "html_url": "https://forge/o/n/pulls/3",
            "state": state,
            "merged": merged,
            "merged_at": merged_at,
            "head": {"ref": "agent/x", "sha": "1" * 40, "repo": {"full_name": "o/n"}},
            "base": {"ref": "main", "sha": "2" * 40},
        }
    )
    assert pull.public().state == public
    assert pull.is_from("O/N", "agent/x")
    assert not pull.is_from("fork/n", "agent/x")
