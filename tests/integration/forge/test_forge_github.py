"""The GitHub backend of `continue_orchestrator.forge`, every request checked against
GitHub's published OpenAPI description.

There is no network here, so GitHub itself cannot answer. Stoplight Prism
(`hack/install-prism.sh`) serves `@octokit/openapi`'s `generated/api.github.com.json`
(the api.github.com description, references kept; Prism resolves them) as a mock with
request validation: a request whose path, query, headers or body the description does
not allow is answered 422 with an `sl-violations` header and logged as a violation.
The backend runs every operation against it, through a transport that records each
exchange; a test fails on any request-side violation, in a header or in Prism's log.

Prism answers with the description's examples (pull request #1347 from `new-topic` of
`octocat/Hello-World`, installation 1, token `ghs_16C7…` expiring 2016-07-11T22:14:10Z),
so the tests use that repository and branch. Some of GitHub's own examples do not match
its schemas (Prism logs "Violation: response…" for them); those are GitHub's, not ours,
and are not counted. `Prefer: code=N` picks an error answer the description defines.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from tests.kube.controlplane import _die_with_parent, free_port

from continue_orchestrator import errors, forge

REPO_ROOT = Path(__file__).resolve().parents[3]
INSTALL = REPO_ROOT / "hack" / "install-prism.sh"
DESCRIPTION = Path("node_modules/@octokit/openapi/generated/api.github.com.json")
REPO = forge.Repository("https://github.com/octocat/Hello-World.git")
EXAMPLE_TOKEN = "ghs_16C7e42F292c6912E7710c838347Ae178B4a"
EXAMPLE_EXPIRY = datetime.datetime(2016, 7, 11, 22, 14, 10, tzinfo=datetime.UTC)
HEAD_SHA = "6dcb09b5b57875f334f61aebed695e2e4193db5e"
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@dataclasses.dataclass
class Prism:
    """A `prism mock` process on loopback serving GitHub's description."""

    url: str
    log: Path
    popen: subprocess.Popen[bytes]

    def mark(self) -> int:
        return self.log.stat().st_size

    def request_violations(self, since: int) -> list[str]:
        """Prism's log lines since `since` that say a request broke the description."""
        with self.log.open("rb") as f:
            f.seek(since)
            lines = f.read().decode("utf-8", "replace").splitlines()
        return [
            line
            for line in lines
            if "Violation: request" in line or "Request did not pass the validation" in line
        ]


@pytest.fixture(scope="module")
def prism(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prism]:
    prefix = Path(
        subprocess.run(
            ["bash", str(INSTALL)], check=True, capture_output=True, text=True
        ).stdout.strip()
    )
    port = free_port()
    log = tmp_path_factory.mktemp("prism") / "prism.log"
    with log.open("wb") as out:
        popen = subprocess.Popen(
            [str(prefix / "node_modules/.bin/prism"), "mock", "--host", "127.0.0.1",
             "--port", str(port), str(prefix / DESCRIPTION)],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )  # fmt: skip
    server = Prism(f"http://127.0.0.1:{port}", log, popen)
    try:
        _wait_until_up(server)
        yield server
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(popen.pid, signal.SIGTERM)
        popen.wait(10)


def _wait_until_up(server: Prism, timeout: float = 120.0) -> None:
    """Poll until Prism answers (it reads the 13 MB description first: ~20 s)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.popen.poll() is not None:
            raise RuntimeError(f"prism exited {server.popen.returncode}:\n{server.log.read_text()}")
        try:
            with _NO_PROXY.open(f"{server.url}/zen", timeout=2):
                return
        except urllib.error.HTTPError:
            return  # it answered
        except OSError:
            time.sleep(0.2)
    raise TimeoutError(f"prism not up after {timeout:.0f}s:\n{server.log.read_text()[-3000:]}")


@dataclasses.dataclass(frozen=True)
class Exchange:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    status: int
    violations: list[dict[str, object]]

    @property
    def request_violations(self) -> list[dict[str, object]]:
        return [v for v in self.violations if v.get("location", [None])[0] == "request"]  # type: ignore[index]


class Recorder(httpx.HTTPTransport):
    """The real transport, keeping each exchange; `prefer` adds Prism's `Prefer` header to
    requests whose method and path match (to get an error answer GitHub documents)."""

    def __init__(self) -> None:
        super().__init__()
        self.exchanges: list[Exchange] = []
        self.prefer: dict[tuple[str, str], str] = {}

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        preference = self.prefer.get((request.method, request.url.path))
        if preference:
            request.headers["Prefer"] = preference
        response = super().handle_request(request)
        response.read()
        self.exchanges.append(
            Exchange(
                request.method,
                request.url.path,
                dict(request.url.params),
                dict(request.headers),
                request.content,
                response.status_code,
                json.loads(response.headers.get("sl-violations", "[]")),
            )
        )
        return response

    def to(self, method: str, path: str) -> list[Exchange]:
        return [e for e in self.exchanges if (e.method, e.path) == (method, path)]


@pytest.fixture
def recorder(prism: Prism) -> Iterator[Recorder]:
    """Records the test's exchanges; after it, fails on any request Prism found invalid."""
    recording, since = Recorder(), prism.mark()
    yield recording
    broken = [(e.method, e.path, e.request_violations) for e in recording.exchanges]
    assert [b for b in broken if b[2]] == [], "requests GitHub's description does not allow"
    assert prism.request_violations(since) == []
    assert recording.exchanges, "the test made no request"


@pytest.fixture(scope="module")
def app_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _pem(key: rsa.RSAPrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    ).decode()


class Clock:
    def __init__(self, now: datetime.datetime) -> None:
        self.now = now

    def __call__(self) -> datetime.datetime:
        return self.now


def _token_forge(prism: Prism, recorder: Recorder, **options: object) -> forge.Forge:
    return forge.for_url(
        REPO,
        forge.Token("ghp_test-token"),
        api_url=prism.url,
        transport=recorder,
        **options,  # type: ignore[arg-type]
    )


def test_every_pull_request_operation_with_a_token(prism: Prism, recorder: Recorder) -> None:
    backend = _token_forge(prism, recorder)
    assert isinstance(backend, forge.GitHub)

    found = backend.find_pull_request(REPO, "new-topic")
    assert isinstance(found, forge.PullRequest)
    assert (found.number, found.head_branch, found.base_branch, found.state) == (
        1347,
        "new-topic",
        "master",
        "open",
    )
    (listed,) = recorder.to("GET", "/repos/octocat/Hello-World/pulls")
    assert listed.query == {"state": "open", "head": "octocat:new-topic", "per_page": "100"}
    assert backend.find_pull_request(REPO, "someone-elses-branch") is None

    updated = backend.open_pull_request(
        REPO, head_branch="new-topic", base_branch="master", title="Agent change", body="evidence",
        draft=True,
    )  # fmt: skip
    assert updated.number == 1347
    (patch,) = recorder.to("PATCH", "/repos/octocat/Hello-World/pulls/1347")
    assert json.loads(patch.body) == {"body": "evidence"}

    created = backend.open_pull_request(
        REPO, head_branch="agent/fresh", base_branch="master", title="Agent change", body="new",
        draft=True,
    )  # fmt: skip
    assert isinstance(created, forge.PullRequest)
    (post,) = recorder.to("POST", "/repos/octocat/Hello-World/pulls")
    assert json.loads(post.body) == {
        "head": "agent/fresh",
        "base": "master",
        "title": "Agent change",
        "body": "new",
        "draft": True,  # GitHub's own field: the title stays as it is
    }
    ready = backend.open_pull_request(
        REPO, head_branch="agent/ready", base_branch="master", title="Agent change", body="new",
        draft=False,
    )  # fmt: skip
    assert isinstance(ready, forge.PullRequest)
    posted = recorder.to("POST", "/repos/octocat/Hello-World/pulls")
    assert [json.loads(p.body)["draft"] for p in posted] == [True, False]

    got = backend.get_pull_request(REPO, 1347)
    assert (got.number, got.state, got.head_sha) == (1347, "open", HEAD_SHA)

    credential = backend.git_credential(REPO)
    assert (credential.username, credential.secret, credential.expires_at) == (
        "x-access-token",
        "ghp_test-token",
        None,
    )
    for exchange in recorder.exchanges:
        assert exchange.headers["authorization"] == "token ghp_test-token"
        assert exchange.headers["x-github-api-version"] == "2022-11-28"
        assert exchange.status < 300, exchange


def test_with_a_token_the_summary_is_a_pull_request_comment(
    prism: Prism, recorder: Recorder
) -> None:
    backend = _token_forge(prism, recorder)
    pr = backend.get_pull_request(REPO, 1347)

    url = backend.post_summary(REPO, pr, head_sha=HEAD_SHA, title="Run summary", summary="ok")

    assert url.startswith("https://github.com/")
    assert recorder.to("GET", "/repos/octocat/Hello-World/issues/1347/comments")
    (post,) = recorder.to("POST", "/repos/octocat/Hello-World/issues/1347/comments")
    body = json.loads(post.body)["body"]
    assert body.startswith(f"<!-- continue-orchestrator:summary {HEAD_SHA} -->\n### Run summary")
    assert recorder.to("POST", "/repos/octocat/Hello-World/check-runs") == []


def test_a_github_app_mints_an_installation_token_and_posts_a_check_run(
    prism: Prism, recorder: Recorder, app_key: rsa.RSAPrivateKey
) -> None:
    clock = Clock(EXAMPLE_EXPIRY - datetime.timedelta(hours=1))
    backend = forge.for_url(
        REPO,
        forge.GitHubApp(app_id=4242, private_key=_pem(app_key)),
        api_url=prism.url,
        transport=recorder,
        clock=clock,
    )

    credential = backend.git_credential(REPO)
    assert (credential.username, credential.secret, credential.expires_at) == (
        "x-access-token",
        EXAMPLE_TOKEN,
        EXAMPLE_EXPIRY,
    )
    (lookup,) = recorder.to("GET", "/repos/octocat/Hello-World/installation")
    (mint,) = recorder.to("POST", "/app/installations/1/access_tokens")
    assert json.loads(mint.body) == {"repositories": ["Hello-World"]}
    for exchange in (lookup, mint):  # as the App: a JWT it signed with its key
        scheme, _, token = exchange.headers["authorization"].partition(" ")
        claims = jwt.decode(token, app_key.public_key(), algorithms=["RS256"])
        assert (scheme, claims["iss"]) == ("Bearer", "4242")
        assert 0 < claims["exp"] - claims["iat"] <= 600  # GitHub's limit: ten minutes

    pr = backend.get_pull_request(REPO, 1347)
    (get,) = recorder.to("GET", "/repos/octocat/Hello-World/pulls/1347")
    assert get.headers["authorization"] == f"token {EXAMPLE_TOKEN}"

    url = backend.post_summary(REPO, pr, head_sha=HEAD_SHA, title="Run summary", summary="ok")
    assert url.startswith("https://github.com/")
    (check,) = recorder.to("POST", "/repos/octocat/Hello-World/check-runs")
    sent = json.loads(check.body)
    assert {k: sent[k] for k in ("name", "head_sha", "status", "conclusion", "output")} == {
        "name": forge.CHECK_NAME,
        "head_sha": HEAD_SHA,
        "status": "completed",
        "conclusion": "neutral",
        "output": {"title": "Run summary", "summary": "ok"},
    }
    assert recorder.to("POST", "/repos/octocat/Hello-World/issues/1347/comments") == []
    assert len(recorder.to("POST", "/app/installations/1/access_tokens")) == 1  # reused


def test_an_installation_token_is_minted_again_before_it_expires(
    prism: Prism, recorder: Recorder, app_key: rsa.RSAPrivateKey
) -> None:
    clock = Clock(EXAMPLE_EXPIRY - datetime.timedelta(minutes=30))
    backend = forge.for_url(
        REPO,
        forge.GitHubApp(app_id=4242, private_key=_pem(app_key), installation_id=1),
        api_url=prism.url,
        transport=recorder,
        clock=clock,
    )
    backend.git_credential(REPO)
    backend.git_credential(REPO)
    assert len(recorder.to("POST", "/app/installations/1/access_tokens")) == 1
    assert recorder.to("GET", "/repos/octocat/Hello-World/installation") == []  # given

    clock.now = EXAMPLE_EXPIRY - forge.REFRESH_BEFORE + datetime.timedelta(seconds=1)
    backend.git_credential(REPO)
    assert len(recorder.to("POST", "/app/installations/1/access_tokens")) == 2


def test_a_server_error_is_retried_then_reported_transient(
    prism: Prism, recorder: Recorder
) -> None:
    backend = _token_forge(
        prism, recorder, backoff=forge.Backoff(attempts=3, base_seconds=0.01, max_seconds=0.02)
    )
    recorder.prefer[("GET", "/repos/octocat/Hello-World/pulls/1347")] = "code=503"
    with pytest.raises(errors.ForgeError) as failed:
        backend.get_pull_request(REPO, 1347)
    assert (failed.value.status, failed.value.transient) == (503, True)
    assert len(recorder.to("GET", "/repos/octocat/Hello-World/pulls/1347")) == 3


def test_a_missing_pull_request_is_a_404_with_githubs_message(
    prism: Prism, recorder: Recorder
) -> None:
    backend = _token_forge(prism, recorder)
    recorder.prefer[("GET", "/repos/octocat/Hello-World/pulls/1347")] = "code=404"
    with pytest.raises(errors.ForgeError) as failed:
        backend.get_pull_request(REPO, 1347)
    assert (failed.value.status, failed.value.transient) == (404, False)
    assert failed.value.forge_message
    assert len(recorder.to("GET", "/repos/octocat/Hello-World/pulls/1347")) == 1  # no retry


def test_refused_app_credentials_are_not_transient(
    prism: Prism, recorder: Recorder, app_key: rsa.RSAPrivateKey
) -> None:
    backend = forge.for_url(
        REPO,
        forge.GitHubApp(app_id=4242, private_key=_pem(app_key), installation_id=1),
        api_url=prism.url,
        transport=recorder,
    )
    recorder.prefer[("POST", "/app/installations/1/access_tokens")] = "code=401"
    with pytest.raises(errors.ForgeError) as failed:
        backend.git_credential(REPO)
    assert (failed.value.status, failed.value.transient) == (401, False)
    assert "check the credential" in str(failed.value)


def test_the_check_catches_a_request_the_description_does_not_allow(prism: Prism) -> None:
    """The harness itself: a request GitHub's description forbids is caught both ways."""
    recording, since = Recorder(), prism.mark()
    with httpx.Client(transport=recording) as client:
        client.get(f"{prism.url}/repos/octocat/Hello-World/pulls", params={"state": "bogus"})
    (exchange,) = recording.exchanges
    assert exchange.status == 422
    assert [v["location"] for v in exchange.request_violations] == [["request", "query", "state"]]
    assert prism.request_violations(since)
