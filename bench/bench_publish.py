"""Publishing against a real forge: a finished run to its pull request, and clones.

Both halves run against the local Gitea of tests/forge/gitea.py (hack/build-gitea.sh),
started once for the bench as the tests start it.

1. Run end to pull request opened: ``orchestrator run``'s publication step
   (``local._publish.publish`` over ``runs.publish``) for a finished run's record (the
   runner's patch, attestation and record digests), without the agent: fresh clone,
   policy check, commit with trailers, the verify command again in a fresh gVisor
   sandbox, push and pull request, each on its own branch, so every iteration pushes and
   opens a pull request for real. The peer, timed in the same run on other branches, is
   the bare minimum a forge asks for the same change: clone, apply, commit, push, open
   the pull request over the API; ``ratio`` = peer / publication (< 1: what the checks,
   the ledger and the fresh sandbox cost).
2. Clone throughput through the gateway's git endpoint: a repository of
   ``BENCH_PUBLISH_REPO_MB`` MB of random (incompressible) content is pushed to Gitea,
   a run is registered on an in-process ``gateway.Gateway`` with the forge credential,
   and the same repository is cloned alternately straight from Gitea and through the
   gateway; ``ratio`` = gateway / direct throughput (goal >= 0.8).
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import os
import pathlib
import shutil
import statistics
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import yaml
from tests.forge import gitea as forge_fixture
from tests.unit.controller import _builders

from continue_orchestrator import api, digest, gateway, ledger, policy, runner, runs
from continue_orchestrator.local import _context, _inputs, _options
from continue_orchestrator.local import _publish as local_publish

PUBLISH_RUNS = int(os.environ.get("BENCH_PUBLISH_RUNS", "5"))
CLONES = int(os.environ.get("BENCH_PUBLISH_CLONES", "3"))
REPO_MB = int(os.environ.get("BENCH_PUBLISH_REPO_MB", "64"))
ADMIN_TOKEN = "bench-admin-token-for-the-git-endpoint-0123"
VERIFY = "python3 -m unittest"
FIX = '''"""Prices in cents."""


def apply_discount(cents: int, percent: int) -> int:
    """The price after a discount of ``percent``, rounded half up to a whole cent."""
    return (cents * (100 - percent) + 50) // 100
'''
POLICY = """\
apiVersion: orchestrator.continue.dev/v1alpha1
kind: RunPolicy
metadata: {{name: fixer, namespace: shop}}
spec:
  defaultEffect: Deny
  rules:
    - {{name: sources, actions: [file.write], paths: ["src/**"], effect: Allow}}
    - {{name: push, actions: [branch.push], branches: ["agent/*"], effect: Allow,
       repositories: ["{repository}"]}}
    - {{name: open, actions: [pullRequest.create], effect: Allow,
       repositories: ["{repository}"]}}
"""


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _git(*args: str, cwd: pathlib.Path | None = None, header: str = "") -> None:
    config = ["-c", f"http.extraHeader={header}"] if header else []
    subprocess.run(["git", *config, *args], cwd=cwd, env=forge_fixture.git_env(), check=True,
                   capture_output=True, timeout=600)  # fmt: skip


def _new_repository(server: forge_fixture.Gitea, source: pathlib.Path, prefix: str) -> str:
    """A new repository on the forge with ``source``'s main; its name."""
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    server.api("POST", "/user/repos", {"name": name, "default_branch": "main"})
    server.git("push", "--quiet", server.clone_url(name), "main", cwd=source)
    head = subprocess.run(["git", "rev-parse", "main"], cwd=source, check=True,
                          capture_output=True, text=True).stdout.strip()  # fmt: skip
    server.wait_for_branch("main", head, repo=name)
    return name


# -- 1. run end to pull request --------------------------------------------------------


def _patch(server: forge_fixture.Gitea, work: pathlib.Path) -> bytes:
    """The runner's kind of patch (``git diff --binary --full-index``) of the fix."""
    checkout = work / "agent"
    _git("clone", "-q", str(_seed(server)), str(checkout))
    (checkout / "src" / "shop" / "pricing.py").write_text(FIX)
    _git("add", "-A", cwd=checkout)
    return subprocess.run(
        ["git", "diff", "--cached", "--binary", "--full-index", server.seed_commit],
        cwd=checkout, check=True, capture_output=True, env=forge_fixture.git_env(),
    ).stdout  # fmt: skip


def _seed(server: forge_fixture.Gitea) -> pathlib.Path:
    return server.state_dir / "seed" / f"{forge_fixture.SEED_REPO}.git"


def _agent_run(url: str, name: str, commit: str) -> api.AgentRun:
    return api.AgentRun.model_validate({
        "apiVersion": "orchestrator.continue.dev/v1alpha1", "kind": "AgentRun",
        "metadata": {"name": name, "namespace": "shop"},
        "spec": {
            "policyRef": {"name": "fixer"},
            "repository": {"url": url, "ref": "main", "commit": commit},
            "agent": {"configMapKeyRef": {"name": "agent", "key": "config.yaml"}},
            "prompt": "Round prices half up.",
            "verify": [{"name": "unit-tests", "command": VERIFY}],
            "output": {"pullRequest": {"enabled": True}},
        },
    })  # fmt: skip


def _publish_once(
    server: forge_fixture.Gitea, url: str, patch: bytes, book: ledger.Ledger, state: pathlib.Path
) -> float:
    """One publication of the finished run, as ``orchestrator run`` publishes; seconds."""
    name = f"bench-{uuid.uuid4().hex[:8]}"
    agent_run = _agent_run(url, name, server.seed_commit)
    document = yaml.safe_load(POLICY.format(repository=url.removesuffix(".git")))
    run_policy = api.RunPolicy.model_validate(document)
    inputs = _inputs.Inputs(run=agent_run, manifest=state / "agentrun.yaml",
                            policies=(run_policy,), config="", git_token=server.token)  # fmt: skip
    options = _options.Options(state_dir=state, sandbox="gvisor", approvals="approve")
    local_run = _context.LocalRun.start(inputs, options, lambda _text: None)
    outcome = runner.Outcome.model_validate({
        "run": local_run.uid, "status": "Succeeded", "exitCode": 0,
        "diff": {"base": server.seed_commit, "files": [], "digest": digest.text(patch),
                 "size": len(patch), "truncated": False,
                 "patchBase64": base64.b64encode(patch).decode()},
        "startedAt": "2026-11-23T10:00:00Z", "finishedAt": "2026-11-23T10:05:07Z",
    })  # fmt: skip
    publish_inputs = runs.PublishInputs(
        run=agent_run, uid=local_run.uid, policy_set=policy.compile([run_policy]),
        outcome=outcome, bundle_digest=digest.text(b"bundle " + name.encode()),
        record_digest=digest.text(b"record " + name.encode()),
        finished_at=datetime.now(UTC), scratch=state,
    )  # fmt: skip
    around = local_publish.Surroundings(
        local_run,
        book,
        lambda fresh: f"evidence of {name}\n\n{fresh.label}",
        workspace=runs.WORKSPACE_DIR,
    )
    started = time.perf_counter()
    done = local_publish.publish(local_run, publish_inputs, around)
    elapsed = time.perf_counter() - started
    if done.failed or done.pull_request is None or not done.pushed:
        raise RuntimeError(f"bench publish: publication did not open a pull request: {done}")
    return elapsed


def _bare_once(server: forge_fixture.Gitea, name: str, patch: bytes, work: pathlib.Path) -> float:
    """The peer: clone, apply, commit, push and open the pull request, nothing else."""
    branch = f"bare/{uuid.uuid4().hex[:8]}"
    checkout = work / branch.replace("/", "-")
    started = time.perf_counter()
    _git("clone", "-q", server.clone_url(name), str(checkout), header=server.auth_header)
    subprocess.run(["git", "apply", "--index", "-"], input=patch, cwd=checkout, check=True,
                   env=forge_fixture.git_env(), capture_output=True)  # fmt: skip
    _git("commit", "-q", "-m", "Round prices half up.", cwd=checkout)
    _git("push", "-q", server.clone_url(name), f"HEAD:refs/heads/{branch}", cwd=checkout,
         header=server.auth_header)  # fmt: skip
    server.open_pull(branch, repo=name, title="Round prices half up.", body="bare")
    elapsed = time.perf_counter() - started
    shutil.rmtree(checkout)
    return elapsed


def _publications(server: forge_fixture.Gitea, work: pathlib.Path) -> dict[str, list[float]]:
    name = _new_repository(server, _seed(server), "publish")
    url = server.clone_url(name)
    patch = _patch(server, work)
    times: dict[str, list[float]] = {"publish": [], "bare": []}
    state = work / "state"
    state.mkdir()
    with ledger.open(f"sqlite:///{state / 'ledger.db'}") as book:
        for number in range(PUBLISH_RUNS + 1):  # the first of each is a warm-up
            scratch = state / f"p{number}"
            scratch.mkdir()
            published = _publish_once(server, url, patch, book, scratch)
            bare = _bare_once(server, name, patch, work)
            if number:
                times["publish"].append(published)
                times["bare"].append(bare)
    return times


# -- 2. clone throughput ---------------------------------------------------------------


def _big_repository(work: pathlib.Path) -> pathlib.Path:
    """A repository with ``REPO_MB`` MB of random bytes in 4 MB files, one commit."""
    source = work / "big"
    _git("init", "-q", "-b", "main", str(source))
    for number in range(max(1, REPO_MB // 4)):
        (source / f"blob-{number:03d}.bin").write_bytes(os.urandom(4 << 20))
    _git("add", "-A", cwd=source)
    _git("commit", "-q", "-m", "incompressible content for the clone bench", cwd=source)
    return source


@dataclasses.dataclass
class _Gateway:
    """The real gateway (SQLite ledger, admin API) on an event loop in its own thread."""

    root: pathlib.Path
    loop: asyncio.AbstractEventLoop = dataclasses.field(default_factory=asyncio.new_event_loop)

    def __post_init__(self) -> None:
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.book = ledger.open(f"sqlite:///{self.root / 'gateway-ledger.db'}")
        self.server = gateway.Gateway(record_root=str(self.root / "records"), ledger=self.book,
                                      admin_token=ADMIN_TOKEN)  # fmt: skip
        self.url: str = self.call(self.server.start())

    def call(self, coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(120)

    def register(self, plan: runs.Plan) -> None:
        registration = runs.registration(plan, expires_at=time.time() + 3600)
        models = {"m": gateway.Upstream("http://127.0.0.1:9/v1", "sk-unused")}

        async def register() -> None:
            async with gateway.Client(self.url, ADMIN_TOKEN) as client:
                await client.register(registration, models=models)

        self.call(register())

    def stop(self) -> None:
        self.call(self.server.stop())
        self.book.close()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


def _timed_clone(url: str, header: str, dest: pathlib.Path) -> tuple[float, int]:
    """Seconds for ``git clone --bare`` of ``url``, and the bytes of the packs it got."""
    started = time.perf_counter()
    _git("clone", "--quiet", "--bare", url, str(dest), header=header)
    elapsed = time.perf_counter() - started
    size = sum(p.stat().st_size for p in (dest / "objects" / "pack").glob("*.pack"))
    shutil.rmtree(dest)
    return elapsed, size


def _clones(server: forge_fixture.Gitea, work: pathlib.Path) -> dict[str, list[float]]:
    source = _big_repository(work)
    name = _new_repository(server, source, "big")
    commit = subprocess.run(["git", "rev-parse", "main"], cwd=source, check=True,
                            capture_output=True, text=True).stdout.strip()  # fmt: skip
    shutil.rmtree(source)
    served = _Gateway(work)
    try:
        uid = f"bench-{uuid.uuid4().hex[:8]}"
        run = _builders.agent_run(
            repository={"url": server.clone_url(name), "ref": "main", "commit": commit}
        )
        plan = _builders.make_plan(_builders.make_settings(), run=run,
                                   git_token=server.token.encode())  # fmt: skip
        plan = dataclasses.replace(plan, uid=uid)
        served.register(plan)
        through = runs.git_url(served.url, uid, server.clone_url(name))
        run_auth = "Basic " + base64.b64encode(f"run:{plan.token}".encode()).decode()
        targets: dict[str, Callable[[pathlib.Path], tuple[float, int]]] = {
            "direct": lambda dest: _timed_clone(server.clone_url(name), server.auth_header, dest),
            "gateway": lambda dest: _timed_clone(through, f"Authorization: {run_auth}", dest),
        }
        rates: dict[str, list[float]] = {"direct": [], "gateway": [], "megabytes": []}
        for number in range(CLONES + 1):  # the first of each is a warm-up
            for which, clone in targets.items():
                seconds, size = clone(work / f"clone-{which}")
                if number:
                    rates[which].append(size / 1e6 / seconds)
                    rates["megabytes"].append(size / 1e6)
    finally:
        served.stop()
    return rates


def run() -> Iterator[dict[str, Any]]:
    with tempfile.TemporaryDirectory(prefix="bench-publish-") as work:
        server = forge_fixture.Gitea(pathlib.Path(work) / "gitea")
        server.start()
        try:
            times = _publications(server, pathlib.Path(work))
            rates = _clones(server, pathlib.Path(work))
        finally:
            server.stop()
    load = round(os.getloadavg()[0], 1)
    for q, label in ((0.5, "p50"), (0.99, "p99")):
        ours, bare = _pct(times["publish"], q), _pct(times["bare"], q)
        yield {"name": f"publish.run_end_to_pull_request_{label}", "value": round(ours, 3),
               "unit": "s", "baseline": round(bare, 3), "ratio": round(bare / ours, 3),
               "note": "baseline: bare clone, apply, commit, push, open the pull request",
               "runs": len(times["publish"]), "load_average": load}  # fmt: skip
    direct, through = statistics.median(rates["direct"]), statistics.median(rates["gateway"])
    yield {"name": "publish.clone_direct", "value": round(direct, 1), "unit": "MB/s",
           "megabytes": round(statistics.median(rates["megabytes"]), 1),
           "clones": len(rates["direct"])}  # fmt: skip
    yield {"name": "publish.clone_through_gateway", "value": round(through, 1), "unit": "MB/s",
           "baseline": round(direct, 1), "ratio": round(through / direct, 3), "goal": 0.8,
           "clones": len(rates["gateway"]), "load_average": load}  # fmt: skip
