"""Tests of the test forge itself: the `gitea` fixture the publishing tests build on.

They prove what those tests will rely on: Gitea answers on loopback only, the seeded
`demo` repository clones with plain git at the demo's pinned commit, a branch pushed with
the admin's token can be opened as a pull request through the API and is then listed,
and a push without the token is refused.
"""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path

import pytest
from tests.forge import ForgeError, Gitea
from tests.forge import gitea as forge

pytestmark = pytest.mark.forge


def _listening_addresses(port: int) -> set[str]:
    """The local addresses (hex, as /proc/net/tcp{,6} write them) listening on `port`."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.split(":")
            if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                found.add(address)
    return found


def _clone(gitea: Gitea, dest: Path, *, auth: bool = True) -> Path:
    gitea.git("clone", "--quiet", gitea.clone_url("demo"), str(dest), auth=auth)
    return dest


def test_gitea_answers_on_loopback_only_with_an_admin_token(gitea: Gitea) -> None:
    stamp = dict(line.split("=", 1) for line in (gitea.bin_dir / ".stamp").read_text().splitlines())
    assert gitea.api("GET", "/version")["version"] == stamp["gitea"].removeprefix("v")
    user = gitea.api("GET", "/user")
    assert (user["login"], user["is_admin"]) == (gitea.admin, True)
    assert _listening_addresses(gitea.port) == {"0100007F"}  # 127.0.0.1 and nothing else
    assert gitea.running()


def test_seeded_repository_clones_at_the_demo_commit(gitea: Gitea, tmp_path: Path) -> None:
    clone = _clone(gitea, tmp_path / "demo", auth=False)  # public: no credentials needed
    head = gitea.git("rev-parse", "HEAD", cwd=clone).stdout.strip()
    assert head == gitea.seed_commit
    tracked = set(gitea.git("ls-files", cwd=clone).stdout.split())
    source = {
        str(p.relative_to(forge.DEMO_SOURCE))
        for p in forge.DEMO_SOURCE.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    }
    assert tracked == source


def test_pushed_branch_opens_a_pull_request_that_is_listed(gitea: Gitea, tmp_path: Path) -> None:
    clone = _clone(gitea, tmp_path / "demo")
    branch = f"agent/forge-test-{uuid.uuid4().hex[:8]}"
    gitea.git("checkout", "--quiet", "-b", branch, cwd=clone)
    (clone / "README.md").write_text((clone / "README.md").read_text() + "\nA change.\n")
    gitea.git("commit", "--quiet", "-am", "a change to propose", cwd=clone)
    pushed = gitea.git("rev-parse", "HEAD", cwd=clone).stdout.strip()
    gitea.git("push", "--quiet", "origin", branch, cwd=clone)
    gitea.wait_for_branch(branch, pushed)

    opened = gitea.open_pull(branch, title="A change to propose", body="Evidence here.")

    listed = {pr.number: pr for pr in gitea.pulls("demo")}
    assert opened.number in listed
    pr = listed[opened.number]
    assert (pr.head.ref, pr.head.sha, pr.base.ref) == (branch, pushed, "main")
    assert (pr.state, pr.title, pr.body) == ("open", "A change to propose", "Evidence here.")
    assert [p.number for p in gitea.pulls("demo", state="open")].count(opened.number) == 1


def test_push_without_the_token_is_refused(gitea: Gitea, tmp_path: Path) -> None:
    clone = _clone(gitea, tmp_path / "demo", auth=False)
    branch = f"canary-{uuid.uuid4().hex[:8]}"
    gitea.git("checkout", "--quiet", "-b", branch, cwd=clone)
    with pytest.raises(subprocess.CalledProcessError) as anonymous:
        gitea.git("push", "--quiet", "origin", branch, cwd=clone, auth=False)
    assert "could not read Username" in anonymous.value.stderr  # Gitea answered 401
    forged_url = gitea.clone_url("demo").replace("://", f"://{gitea.admin}:not-the-token@")
    with pytest.raises(subprocess.CalledProcessError) as forged:
        gitea.git("push", "--quiet", forged_url, branch, cwd=clone, auth=False)
    assert "Authentication failed" in forged.value.stderr
    with pytest.raises(ForgeError) as missing:
        gitea.api("GET", f"/repos/{gitea.full_name('demo')}/branches/{branch}")
    assert missing.value.status == 404
