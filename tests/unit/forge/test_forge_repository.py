"""`forge.Repository`: every URL form a person pastes reads as the same repository, and
anything that is not a repository on a forge fails naming the URL (never its password)."""

from __future__ import annotations

import pytest

from continue_orchestrator import errors, forge

GITHUB = ("https", "github.com", "", "acme", "payments", "https://github.com/acme/payments.git")


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://github.com/acme/payments.git", GITHUB),
        ("https://github.com/acme/payments", GITHUB),
        ("https://github.com/acme/payments/", GITHUB),
        ("https://GitHub.com/acme/payments.git", GITHUB),
        ("https://github.com:443/acme/payments", GITHUB),
        ("git@github.com:acme/payments.git", GITHUB),
        ("ssh://git@github.com/acme/payments.git", GITHUB),
        ("ssh://git@github.com:2222/acme/payments", GITHUB),
        ("https://x-access-token@github.com/acme/payments", GITHUB),
        (
            "http://127.0.0.1:3000/forge-admin/demo.git",
            ("http", "127.0.0.1:3000", "", "forge-admin", "demo",
             "http://127.0.0.1:3000/forge-admin/demo.git"),
        ),
        (
            "https://code.example/git/acme/tools.git",
            ("https", "code.example", "/git", "acme", "tools",
             "https://code.example/git/acme/tools.git"),
        ),
        (
            "https://[::1]:8443/a/b.c",
            ("https", "[::1]:8443", "", "a", "b.c", "https://[::1]:8443/a/b.c.git"),
        ),
    ],
)  # fmt: skip
def test_url_forms(url: str, expected: tuple[str, ...]) -> None:
    repo = forge.Repository(url)
    got = (repo.scheme, repo.host, repo.path_prefix, repo.owner, repo.name, repo.clone_url)
    assert got == expected
    assert repo.url == url
    assert repo.full_name == f"{expected[3]}/{expected[4]}"
    assert str(repo) == repo.clone_url


def test_case_of_owner_and_name_is_kept_and_equal_urls_are_equal() -> None:
    repo = forge.Repository("https://github.com/Octocat/Hello-World.git")
    assert repo.full_name == "Octocat/Hello-World"
    assert forge.Repository(repo.url) == repo


@pytest.mark.parametrize(
    ("url", "loopback", "hostname"),
    [
        ("http://127.0.0.1:3000/o/n", True, "127.0.0.1"),
        ("http://localhost/o/n", True, "localhost"),
        ("https://[::1]/o/n", True, "::1"),
        ("https://github.com/o/n", False, "github.com"),
        ("https://10.0.0.1:8443/o/n", False, "10.0.0.1"),
    ],
)
def test_loopback(url: str, loopback: bool, hostname: str) -> None:
    repo = forge.Repository(url)
    assert (repo.loopback, repo.hostname) == (loopback, hostname)


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("file:///srv/git/demo.git", "file:// is not a forge URL"),
        ("https://github.com/acme", "names no OWNER/NAME"),
        ("https://github.com/", "names no OWNER/NAME"),
        ("https://github.com/acme/payments?tab=code", "has a query or fragment"),
        ("https://github.com/acme/payments#readme", "has a query or fragment"),
        ("https://github.com/acme/../payments", "is not a forge name"),
        ("https://github.com/ac me/payments", "is not a forge name"),
        ("payments", "is not a URL"),
        ("https:///acme/payments", "names no host"),
    ],
)
def test_not_a_repository_url_fails_naming_it(url: str, says: str) -> None:
    with pytest.raises(errors.ForgeError) as failed:
        forge.Repository(url)
    assert says in str(failed.value)
    assert failed.value.where == f"repository URL {url}"
    assert not failed.value.transient


def test_a_password_in_the_url_is_refused_and_never_repeated() -> None:
    with pytest.raises(errors.ForgeError) as failed:
        forge.Repository("https://bot:ghp_SECRET123@github.com/acme/payments.git")
    message = str(failed.value)
    assert "ghp_SECRET123" not in message
    assert "https://bot:***@github.com/acme/payments.git" in message
    assert "carries a password" in message
