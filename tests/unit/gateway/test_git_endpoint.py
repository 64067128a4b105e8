"""The gateway's git endpoint, routing and refusals: fetch of the run's own repository only.

Requests go through aiohttp's test client (what the endpoint answers, byte for byte) and
through the real git client (what a person or an agent sees); the repository is a local
one, as local mode serves it. A refusal is a 403 whose plain-text body git prints as
`remote: ...`, a `policy.decision` ledger entry and a count; a fetch is recorded as a
`repository.fetch` entry naming the commit it wanted.
"""

from __future__ import annotations

import asyncio
import pathlib
from collections.abc import Awaitable, Callable

import pytest
from tests.runner_support import REPO_FILES, Origin, make_origin
from tests.unit.gateway import _git_support
from tests.unit.gateway._git_support import RUN, TOKEN, basic

from continue_orchestrator import gateway, ledger, runs
from continue_orchestrator.gateway import _metrics

Check = Callable[[_git_support.Served, Origin], Awaitable[None]]


def _origin_of(origin: Origin) -> gateway.GitOrigin:
    return gateway.GitOrigin(url=origin.url, path=runs.git_path(origin.url))


def _with_endpoint(tmp_path: pathlib.Path, check: Check, *, local: bool = True) -> None:
    origin = make_origin(tmp_path, REPO_FILES)

    async def main() -> None:
        async with _git_support.served(
            tmp_path, origin=_origin_of(origin), local_repositories=local
        ) as served:
            await check(served, origin)

    asyncio.run(main())


def _refused(kind: str) -> float:
    return _metrics.REFUSED.labels(kind)._value.get()


def _denials(served: _git_support.Served) -> list[dict[str, object]]:
    return [e.payload or {} for e in served.entries() if e.kind is ledger.Kind.POLICY_DECISION]


def test_git_clone_through_the_endpoint_is_at_the_commit_and_recorded(
    tmp_path: pathlib.Path,
) -> None:
    async def check(served: _git_support.Served, origin: Origin) -> None:
        for version in ("0", "2"):
            dest = tmp_path / f"clone-v{version}"
            url = served.git_url(origin.url)
            cloned = await served.git("-c", f"protocol.version={version}", "clone", url, str(dest))
            assert cloned.returncode == 0, cloned.stderr
            head = (await served.git("-C", str(dest), "rev-parse", "HEAD", authorization="")).stdout
            assert head.strip() == origin.commit
            assert (dest / "src" / "answer.py").read_text() == "ANSWER = 41\n"
        fetches = [e for e in served.entries() if e.kind is ledger.Kind.REPOSITORY_FETCH]
        assert [(e.payload or {})["protocol"] for e in fetches] == [0, 2], [
            e.payload for e in served.entries()
        ]
        for entry in fetches:
            payload = entry.payload or {}
            assert payload["wants"] == [origin.commit] and payload["wantCount"] == 1
            assert payload["repository"] == origin.url and payload["command"] == "fetch"
            assert int(payload["bytes"]) > 0 and entry.actor == "gateway"
        assert _denials(served) == []

    _with_endpoint(tmp_path, check)


def test_bearer_and_basic_with_any_user_open_it_and_nothing_else_does(
    tmp_path: pathlib.Path,
) -> None:
    async def check(served: _git_support.Served, origin: Origin) -> None:
        refs = served.git_url(origin.url) + "/info/refs?service=git-upload-pack"
        path = refs.removeprefix(served.base)
        for good in (f"Bearer {TOKEN}", basic(TOKEN), basic(TOKEN, user="x-access-token")):
            async with served.client.get(path, headers={"Authorization": good}) as response:
                assert response.status == 200, await response.text()
                assert response.content_type == "application/x-git-upload-pack-advertisement"
                assert (await response.read()).startswith(b"001e# service=git-upload-pack\n0000")
        answers = []
        for bad in (None, f"Bearer {'x' * 40}", basic("x" * 40), basic("", user=TOKEN), "Bearer"):
            headers = {"Authorization": bad} if bad else {}
            async with served.client.get(path, headers=headers) as response:
                answers.append((response.status, await response.text()))
                assert response.headers["WWW-Authenticate"] == f'Basic realm="run {RUN}"'
        async with served.client.get(
            path.replace(f"/runs/{RUN}/", "/runs/run-2/"), headers={"Authorization": basic(TOKEN)}
        ) as response:
            answers.append((response.status, await response.text()))
        assert len(set(answers)) == 1 and answers[0][0] == 401  # unknown run looks the same
        assert "invalid or expired run token" in answers[0][1]
        assert served.entries() == []  # nothing is attributed to a run it could not name
        listed = await served.git("ls-remote", served.git_url(origin.url), authorization="")
        assert listed.returncode != 0 and "could not read Username" in listed.stderr  # asked

    _with_endpoint(tmp_path, check)


@pytest.mark.parametrize(
    ("method", "tail", "rule", "action", "said"),
    [
        ("GET", "/info/refs?service=git-receive-pack", "gateway.git-fetch-only", "branch.push",
         "push refused"),
        ("POST", "/git-receive-pack", "gateway.git-fetch-only", "branch.push", "push refused"),
        ("GET", "/info/refs", "gateway.git-upload-pack-only", "repository.access",
         "dumb HTTP (info/refs) is not served"),
        ("GET", "/objects/info/packs", "gateway.git-upload-pack-only", "repository.access",
         "GET objects/info/packs is not served"),
        ("POST", "/info/refs?service=git-upload-pack", "gateway.git-upload-pack-only",
         "repository.access", "is not served"),
        ("GET", "/git-upload-pack", "gateway.git-upload-pack-only", "repository.access",
         "is not served"),
        ("POST", "/git-upload-archive", "gateway.git-upload-pack-only", "repository.access",
         "POST git-upload-archive is not served"),
    ],
)  # fmt: skip
def test_what_is_not_a_fetch_is_refused_with_a_message_an_entry_and_a_count(
    tmp_path: pathlib.Path, method: str, tail: str, rule: str, action: str, said: str
) -> None:
    async def check(served: _git_support.Served, origin: Origin) -> None:
        path = served.git_url(origin.url).removeprefix(served.base) + tail
        before = _refused(rule.removeprefix("gateway."))
        headers = {"Authorization": basic(TOKEN)}
        async with served.client.request(method, path, headers=headers, data=b"0000") as response:
            assert response.status == 403
            assert response.content_type == "text/plain"
            text = await response.text()
        assert said in text and "in the run's ledger" in text
        assert _refused(rule.removeprefix("gateway.")) == before + 1
        (denial,) = _denials(served)
        assert denial["rule"] == rule and denial["action"] == action
        assert denial["effect"] == "Deny" and denial["repository"] == origin.url
        assert [e.actor for e in served.entries()] == ["gateway"]

    _with_endpoint(tmp_path, check)


def test_another_repository_is_refused_even_with_the_run_token(tmp_path: pathlib.Path) -> None:
    (tmp_path / "other-place").mkdir()
    other = make_origin(tmp_path / "other-place", {"x": "other\n"})

    async def check(served: _git_support.Served, origin: Origin) -> None:
        url = f"{served.base}/runs/{RUN}/git/acme/other.git"
        cloned = await served.git("clone", url, str(tmp_path / "other"))
        assert cloned.returncode != 0
        own = runs.git_path(origin.url)
        assert "remote: continue-orchestrator gateway: fetch of acme/other.git refused" in (
            cloned.stderr
        )
        assert f"may fetch its own repository, {own}" in cloned.stderr
        # A path that names the other origin's directory is no way around it either.
        sneaky = served.git_url(other.url)
        assert sneaky != served.git_url(origin.url)
        assert (await served.git("clone", sneaky, str(tmp_path / "sneaky"))).returncode != 0
        assert [d["rule"] for d in _denials(served)] == ["gateway.git-run-repository"] * 2
        assert [d["requested"] for d in _denials(served)] == [
            "acme/other.git",
            runs.git_path(other.url),
        ]
        assert not (tmp_path / "other").exists() or not any((tmp_path / "other").iterdir())

    _with_endpoint(tmp_path, check)


def test_git_push_through_the_endpoint_is_refused_and_nothing_lands(
    tmp_path: pathlib.Path,
) -> None:
    async def check(served: _git_support.Served, origin: Origin) -> None:
        url = served.git_url(origin.url)
        dest = tmp_path / "work"
        assert (await served.git("clone", url, str(dest))).returncode == 0
        (dest / "canary").write_text("should never land\n")
        for args in (("add", "canary"), ("commit", "-qm", "canary")):
            identity = ("-c", "user.name=a", "-c", "user.email=a@b")
            await served.git(*identity, "-C", str(dest), *args, authorization="", check=True)
        pushed = await served.git("-C", str(dest), "push", url, "HEAD:refs/heads/canary")
        assert pushed.returncode != 0
        assert "remote: continue-orchestrator gateway: push refused." in pushed.stderr
        assert "403" in pushed.stderr
        branches = await served.git("-C", str(origin.path), "branch", "--list", authorization="")
        assert "canary" not in branches.stdout and "main" in branches.stdout
        (denial,) = _denials(served)
        assert (denial["action"], denial["service"]) == ("branch.push", "git-receive-pack")

    _with_endpoint(tmp_path, check)


def test_a_local_repository_is_served_only_by_a_gateway_told_to(tmp_path: pathlib.Path) -> None:
    async def check(served: _git_support.Served, origin: Origin) -> None:
        cloned = await served.git("clone", served.git_url(origin.url), str(tmp_path / "c"))
        assert cloned.returncode != 0
        assert "is a local path, and this gateway serves forge repositories" in cloned.stderr
        (denial,) = _denials(served)
        assert denial["rule"] == "gateway.git-local-repository"

    _with_endpoint(tmp_path, check, local=False)


def test_a_run_without_a_repository_fetches_nothing(tmp_path: pathlib.Path) -> None:
    async def main() -> None:
        async with _git_support.served(tmp_path, origin=None) as served:
            cloned = await served.git("clone", f"{served.base}/runs/{RUN}/git/a/b.git", "x")
            assert cloned.returncode != 0
            assert "may fetch no repository (none registered)" in cloned.stderr

    asyncio.run(main())


def test_an_ssh_repository_is_refused_saying_to_use_https(tmp_path: pathlib.Path) -> None:
    url = "git@github.com:acme/payments.git"

    async def main() -> None:
        origin = gateway.GitOrigin(url=url, path=runs.git_path(url))
        async with _git_support.served(tmp_path, origin=origin) as served:
            cloned = await served.git("ls-remote", served.git_url(url))
            assert cloned.returncode != 0
            assert "give the repository's https:// clone URL" in cloned.stderr
            assert runs.git_path(url) == "acme/payments.git"

    asyncio.run(main())


def test_the_runners_path_is_the_registered_one_for_every_url_form() -> None:
    for url, path in [
        ("https://github.com/acme/payments.git", "acme/payments.git"),
        ("https://github.com/acme/payments", "acme/payments.git"),
        ("https://gitea.example/sub/acme/payments.git/", "acme/payments.git"),
        ("file:///var/tmp/orchestrator-demo/origin.git", "orchestrator-demo/origin.git"),
        ("/srv/repo", "srv/repo.git"),
        ("ssh://git@host/acme/x.git", "acme/x.git"),
    ]:  # fmt: skip
        assert runs.git_path(url) == path
        clone = runs.git_url("http://gateway:8080/", "uid-1", url)
        assert clone == f"http://gateway:8080/runs/uid-1/git/{path}"
        assert gateway.GitOrigin(url="https://h/x", path=path).key == path.removesuffix(".git")
