"""The gateway's git endpoint in front of a real Gitea: the runner's clone, and what is refused.

A private repository is made on the test forge from the demo's seed (so a clone without
a credential fails), and a run is registered with the real gateway over its admin API
with a read-only Gitea token as the forge credential, as the operator registers one
(`runs.registration` of a plan whose AgentRun names the repository). The runner's own
clone (`runner.prepare_workspace`, with only the run token) then checks out the pinned
commit through the gateway, and the gateway's fetch is in the ledger. With a wrong forge
credential the same clone fails, saying so: the gateway's credential is what Gitea saw.
A `git push` through the endpoint is refused with its message and a ledger entry, and
the canary branch never appears in Gitea; another repository and a wrong run token are
refused too.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import pathlib
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from tests.forge import ForgeError, Gitea
from tests.forge import gitea as forge
from tests.unit.controller import _builders

from continue_orchestrator import api, errors, gateway, ledger, runner, runs

pytestmark = pytest.mark.forge

ADMIN_TOKEN = "admin-token-for-the-git-gateway-test-0123"


@dataclasses.dataclass
class Private:
    """A private copy of the demo repository on the forge, and a read-only token for it."""

    name: str
    url: str
    commit: str
    token: str


@pytest.fixture(scope="module")
def private(gitea: Gitea) -> Private:
    name, token = gitea.private_copy("private")
    return Private(name, gitea.clone_url(name), gitea.seed_commit, token)


class GatewayThread:
    """The real gateway (SQLite ledger, record store, admin API) on a loop of its own."""

    def __init__(self, root: pathlib.Path) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.book = ledger.open(f"sqlite:///{root / 'ledger.db'}")
        self.records = root / "records"
        self.server = gateway.Gateway(
            record_root=str(self.records), ledger=self.book, admin_token=ADMIN_TOKEN
        )
        self.url = self.call(self.server.start())

    def call(self, coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(120)

    def register(self, plan: runs.Plan) -> None:
        registration = runs.registration(plan, expires_at=time.time() + 600)
        models = {"m": gateway.Upstream("http://127.0.0.1:9/v1", "sk-unused")}

        async def register() -> None:
            async with gateway.Client(self.url, ADMIN_TOKEN) as client:
                await client.register(registration, models=models)

        self.call(register())

    def entries(self, uid: str) -> list[ledger.Entry]:
        return list(self.book.entries(run_uid=uid))

    def stop(self) -> None:
        self.call(self.server.stop())
        self.book.close()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.fixture
def served(tmp_path: pathlib.Path) -> Iterator[GatewayThread]:
    started = GatewayThread(tmp_path)
    try:
        yield started
    finally:
        started.stop()


def _plan(private: Private, uid: str, *, forge_token: str) -> runs.Plan:
    settings = _builders.make_settings()
    run = _builders.agent_run(
        repository={"url": private.url, "ref": "main", "commit": private.commit}
    )
    plan = _builders.make_plan(settings, run=run, git_token=forge_token.encode())
    return dataclasses.replace(plan, uid=uid)


def _bundle(plan: runs.Plan, served: GatewayThread, workspace: pathlib.Path) -> runner.RunBundle:
    """The bundle the operator writes, with the run directory and workspace under
    ``workspace``'s parent instead of the pod's paths."""
    made = runs.bundle(plan, gateway_url=served.url)
    token_file = workspace.parent / "run" / "token"
    token_file.parent.mkdir(parents=True)
    token_file.write_text(plan.token)
    paths = runner.Paths(workspace=str(workspace), home=str(workspace.parent / "home"))
    return made.model_copy(update={"paths": paths, "token_file": str(token_file)})


def _git(
    *args: str, header: str = "", cwd: pathlib.Path | None = None
) -> subprocess.CompletedProcess[str]:
    config = ["-c", f"http.extraHeader=Authorization: {header}"] if header else []
    return subprocess.run(
        ["git", *config, *args],
        cwd=cwd,
        env={**forge.git_env(), "GIT_ASKPASS": "/bin/false"},
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


def gitea_path(private: Private) -> str:
    """The repository's path on the gateway's git endpoint: owner/name.git."""
    return runs.git_path(private.url)


def _basic(token: str) -> str:
    return "Basic " + base64.b64encode(f"run:{token}".encode()).decode()


def test_the_runner_clones_the_private_repository_through_the_gateway(
    gitea: Gitea, private: Private, served: GatewayThread, tmp_path: pathlib.Path
) -> None:
    # The repository is private: without a credential the forge gives nothing.
    direct = _git("ls-remote", private.url)
    assert direct.returncode != 0

    uid = f"run-{uuid.uuid4().hex[:8]}"
    plan = _plan(private, uid, forge_token=private.token)
    served.register(plan)
    bundle = _bundle(plan, served, tmp_path / "workspace")
    assert bundle.git_url == f"{served.url}/runs/{uid}/git/{gitea.admin}/{private.name}.git"
    assert private.token not in bundle.model_dump_json()

    commit = runner.prepare_workspace(bundle, {})

    assert commit == private.commit
    workspace = tmp_path / "workspace"
    head = _git("-C", str(workspace), "rev-parse", "HEAD").stdout.strip()
    assert head == private.commit
    assert _git("-C", str(workspace), "remote", "get-url", "origin").stdout.strip() == private.url
    for path in (workspace / ".git").rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert private.token.encode() not in data and plan.token.encode() not in data
    fetches = [e for e in served.entries(uid) if e.kind is ledger.Kind.REPOSITORY_FETCH]
    assert fetches, "the gateway recorded no fetch"
    assert all(e.actor == "gateway" for e in fetches)
    assert [(e.payload or {})["wants"] for e in fetches] == [[private.commit]]
    assert (fetches[0].payload or {})["repository"] == private.url

    # Both wire protocols, as a person's git would speak them.
    for version in ("0", "2"):
        dest = tmp_path / f"clone-v{version}"
        cloned = _git(
            "-c", f"protocol.version={version}", "clone", "--quiet", bundle.git_url or "",
            str(dest), header=_basic(plan.token),
        )  # fmt: skip
        assert cloned.returncode == 0, cloned.stderr
        assert _git("-C", str(dest), "rev-parse", "HEAD").stdout.strip() == private.commit


def test_with_a_wrong_forge_credential_the_clone_fails_saying_so(
    private: Private, served: GatewayThread, tmp_path: pathlib.Path
) -> None:
    uid = f"run-{uuid.uuid4().hex[:8]}"
    plan = _plan(private, uid, forge_token="0" * 40)
    served.register(plan)
    bundle = _bundle(plan, served, tmp_path / "workspace")
    with pytest.raises(errors.RunnerError) as failed:
        runner.prepare_workspace(bundle, {})
    message = failed.value.message
    assert "git clone failed: continue-orchestrator gateway" not in message  # not a refusal
    assert f"refused to serve {gitea_path(private)} with the credential the gateway holds" in (
        message
    ), message
    assert [e.kind for e in served.entries(uid)] == []


def test_push_another_repository_and_a_wrong_token_are_refused(
    gitea: Gitea, private: Private, served: GatewayThread, tmp_path: pathlib.Path
) -> None:
    uid = f"run-{uuid.uuid4().hex[:8]}"
    plan = _plan(private, uid, forge_token=private.token)
    served.register(plan)
    bundle = _bundle(plan, served, tmp_path / "workspace")
    runner.prepare_workspace(bundle, {})
    workspace = tmp_path / "workspace"
    git_url = bundle.git_url or ""

    # A push through the endpoint, as the agent would try it with the token it holds.
    canary = f"canary-{uuid.uuid4().hex[:8]}"
    (workspace / "CANARY").write_text("must never reach the forge\n")
    _git("-C", str(workspace), "add", "CANARY")
    _git("-C", str(workspace), "commit", "-qm", "canary")
    for header in (_basic(plan.token), f"Bearer {plan.token}"):
        pushed = _git("-C", str(workspace), "push", git_url, f"HEAD:refs/heads/{canary}",
                      header=header)  # fmt: skip
        assert pushed.returncode != 0
        assert "remote: continue-orchestrator gateway: push refused." in pushed.stderr
        assert "fetch its repository through the gateway" in pushed.stderr
    with pytest.raises(ForgeError) as missing:
        gitea.api("GET", f"/repos/{gitea.full_name(private.name)}/branches/{canary}")
    assert missing.value.status == 404
    branches = gitea.api("GET", f"/repos/{gitea.full_name(private.name)}/branches")
    assert [b["name"] for b in branches] == ["main"]

    # Another repository on the same forge, with the same run token.
    other = f"{served.url}/runs/{uid}/git/{gitea.full_name(forge.SEED_REPO)}.git"
    listed = _git("ls-remote", other, header=_basic(plan.token))
    assert listed.returncode != 0
    assert f"fetch of {gitea.full_name(forge.SEED_REPO)}.git refused" in listed.stderr
    assert f"may fetch its own repository, {gitea.admin}/{private.name}.git" in listed.stderr

    # A wrong run token: 401, and nothing in the run's ledger for it.
    before = len(served.entries(uid))
    wrong = _git("ls-remote", git_url, header=_basic("x" * 43))
    assert wrong.returncode != 0 and "could not read Username" in wrong.stderr
    assert len(served.entries(uid)) == before

    denials = [
        e.payload or {} for e in served.entries(uid) if e.kind is ledger.Kind.POLICY_DECISION
    ]
    assert [(d["action"], d["rule"]) for d in denials] == [
        ("branch.push", "gateway.git-fetch-only"),
        ("branch.push", "gateway.git-fetch-only"),
        ("repository.access", "gateway.git-run-repository"),
    ]
    assert all(d["effect"] == "Deny" and d["repository"] == private.url for d in denials)
    everything = json.dumps([e.payload for e in served.entries(uid)])
    assert private.token not in everything
    for path in served.records.rglob("*"):
        assert not path.is_file() or private.token.encode() not in path.read_bytes()


def test_verify_only_clones_through_the_gateway_and_reports_the_verified_tree(
    private: Private, served: GatewayThread, tmp_path: pathlib.Path
) -> None:
    """Publication's fresh sandbox (``runner --verify-only``) with only a run token: the
    clone comes through the gateway, the patch is the runner's own diff of an edited
    workspace, and the gateway records the outcome with the verified tree's digest."""
    uid = f"run-{uuid.uuid4().hex[:8]}"
    plan = _plan(private, uid, forge_token=private.token)
    served.register(plan)
    edited = tmp_path / "agent" / "workspace"
    base = runner.prepare_workspace(_bundle(plan, served, edited), {})
    (edited / "NOTES.md").write_text("verified again\n")
    patch = runner.diff(edited, base, limit=1 << 20).patch
    patch_file = tmp_path / "run.patch"
    patch_file.write_bytes(patch)
    verify = (
        api.VerifyCommand(name="notes", command="grep -q 'verified again' NOTES.md"),
        api.VerifyCommand(name="fails", command="echo no; exit 4"),
    )
    bundle = _bundle(plan, served, tmp_path / "verify" / "workspace")
    bundle = bundle.model_copy(update={"verify": verify})

    outcome = runner.verify_only(bundle, patch_file, environ={}, log=lambda _: None)

    assert outcome.status is runner.Status.VERIFY_FAILED, outcome.message
    assert outcome.exit_code == runner.ExitCode.VERIFY_FAILED
    assert [(v.name, v.result.exit_code) for v in outcome.verify] == [("notes", 0), ("fails", 4)]
    assert outcome.agent is None and outcome.base_commit == private.commit
    assert outcome.workspace_tree_digest == runner.tree_digest(edited)
    fetches = [e for e in served.entries(uid) if e.kind is ledger.Kind.REPOSITORY_FETCH]
    assert len(fetches) == 2  # the agent's clone and the verify sandbox's
    finished = [e for e in served.entries(uid) if e.kind is ledger.Kind.RUN_FINISHED]
    assert [(e.actor, (e.payload or {})["status"]) for e in finished] == [
        ("runner", "VerifyFailed")
    ]
