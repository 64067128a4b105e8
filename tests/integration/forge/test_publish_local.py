"""``runs.publish`` against a real Gitea: a run's diff becomes one pull request, once.

The pipeline runs as ``orchestrator run`` runs it, with the Gitea backend of ``forge``
and real git; only the fresh sandbox is played by running the verify commands directly
on the clean checkout (the gVisor one is in tests/e2e/test_publish_demo.py). Checked: a
pull request opens from ``agent/<run name>`` with the evidence body, its head commit is
the run's, with the trailers, by the orchestrator's identity; publishing again pushes
nothing and opens no second pull request; a path the policy denies for ``file.write``
fails publication naming the rule, and no branch appears; a failing verify command in
the fresh checkout stops it before the push.
"""

from __future__ import annotations

import base64
import pathlib
import subprocess
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import pytest
import yaml
from tests.forge import ForgeError, Gitea
from tests.forge import gitea as forge_fixture

from continue_orchestrator import api, digest, errors, forge, ledger, policy, runner, runs

pytestmark = [pytest.mark.forge]

BUNDLE = "sha256:" + "b" * 64
RECORD = "sha256:" + "c" * 64
FINISHED = datetime(2026, 11, 23, 10, 5, 7, tzinfo=UTC)
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
    - {{name: no-notes, actions: [file.write], paths: ["NOTES.md"], effect: Deny,
       reason: notes stay out of the repository}}
    - {{name: push, actions: [branch.push], branches: ["agent/*"], effect: Allow,
       repositories: ["{repository}"]}}
    - {{name: open, actions: [pullRequest.create], effect: Allow,
       repositories: ["{repository}"]}}
"""


class Around:
    """The surroundings a test gives: verify on the host, entries in a list."""

    def __init__(self) -> None:
        self.entries: list[tuple[ledger.Kind, dict[str, Any]]] = []

    def approve(self, decision: policy.Decision) -> None:
        raise errors.PublicationError("no approvals here", step="approval", rule=decision.rule)

    def verify(
        self, checkout: pathlib.Path, commands: Sequence[api.VerifyCommand]
    ) -> tuple[runner.VerifyResult, ...]:
        results = []
        for command in commands:
            done = subprocess.run(["/bin/sh", "-c", command.command], cwd=checkout,
                                  capture_output=True, text=True, timeout=120)  # fmt: skip
            results.append(runner.VerifyResult(
                name=command.name, command=command.command,
                result=runner.ProcessResult(exit_code=done.returncode, output=done.stdout),
            ))  # fmt: skip
        return tuple(results)

    def record(self, kind: ledger.Kind, payload: dict[str, Any]) -> None:
        self.entries.append((kind, payload))

    def body(self, fresh: runs.VerifyRun) -> str:
        return f"evidence\n\n{fresh.label}: " + ", ".join(
            f"{r.name}={r.result.exit_code}" for r in fresh.results
        )

    def kinds(self) -> list[ledger.Kind]:
        return [kind for kind, _ in self.entries]


def _repository(gitea: Gitea) -> str:
    """A fresh copy of the seed repository; its name."""
    name = f"publish-{uuid.uuid4().hex[:8]}"
    gitea.api("POST", "/user/repos", {"name": name, "default_branch": "main"})
    seed = gitea.state_dir / "seed" / f"{forge_fixture.SEED_REPO}.git"
    gitea.git("push", "--quiet", gitea.clone_url(name), "main", cwd=seed)
    gitea.wait_for_branch("main", gitea.seed_commit, repo=name)
    return name


def _patch(gitea: Gitea, tmp_path: pathlib.Path, files: dict[str, str]) -> bytes:
    """The runner's kind of patch (``git diff --binary --full-index``) of ``files``."""
    work = tmp_path / "agent"
    seed = gitea.state_dir / "seed" / f"{forge_fixture.SEED_REPO}.git"
    subprocess.run(["git", "clone", "-q", str(seed), str(work)], check=True,
                   env=forge_fixture.git_env())  # fmt: skip
    for path, text in files.items():
        (work / path).write_text(text)
    subprocess.run(["git", "add", "-A"], cwd=work, check=True, env=forge_fixture.git_env())
    return subprocess.run(
        ["git", "diff", "--cached", "--binary", "--full-index", gitea.seed_commit],
        cwd=work, check=True, capture_output=True, env=forge_fixture.git_env(),
    ).stdout  # fmt: skip


def _inputs(
    gitea: Gitea,
    name: str,
    patch: bytes,
    scratch: pathlib.Path,
    verify: str,
    output: dict[str, Any] | None = None,
) -> runs.PublishInputs:
    url = gitea.clone_url(name)
    run = api.AgentRun.model_validate({
        "apiVersion": "orchestrator.continue.dev/v1alpha1", "kind": "AgentRun",
        "metadata": {"name": name, "namespace": "shop"},
        "spec": {
            "policyRef": {"name": "fixer"},
            "repository": {"url": url, "ref": "main", "commit": gitea.seed_commit},
            "agent": {"configMapKeyRef": {"name": "agent", "key": "config.yaml"}},
            "prompt": "Round prices half up.",
            "verify": [{"name": "unit-tests", "command": verify}],
            "output": {"pullRequest": {"enabled": True, **(output or {})}},
        },
    })  # fmt: skip
    outcome = runner.Outcome.model_validate({
        "run": "u-1", "status": "Succeeded", "exitCode": 0,
        "diff": {"base": gitea.seed_commit, "files": [], "digest": digest.text(patch),
                 "size": len(patch), "truncated": False,
                 "patchBase64": base64.b64encode(patch).decode()},
        "startedAt": "2026-11-23T10:00:00Z", "finishedAt": "2026-11-23T10:05:07Z",
    })  # fmt: skip
    document = yaml.safe_load(POLICY.format(repository=url.removesuffix(".git")))
    scratch.mkdir(parents=True, exist_ok=True)
    compiled = policy.compile([api.RunPolicy.model_validate(document)])
    return runs.PublishInputs(
        run=run, uid=f"{name}-uid", policy_set=compiled,
        outcome=outcome, bundle_digest=BUNDLE, record_digest=RECORD, finished_at=FINISHED,
        scratch=scratch,
    )  # fmt: skip


def _connect(gitea: Gitea) -> Any:
    return lambda url: forge.for_url(url, forge.Token(token=gitea.token, username=gitea.admin))


def test_a_run_is_published_once_with_its_evidence_and_trailers(
    gitea: Gitea, tmp_path: pathlib.Path
) -> None:
    name = _repository(gitea)
    patch = _patch(gitea, tmp_path, {"src/shop/pricing.py": FIX})
    around = Around()
    first = runs.publish(_inputs(gitea, name, patch, tmp_path / "one", "python3 -m unittest"),
                         _connect(gitea), around)  # fmt: skip
    assert first.state == "opened", first
    assert first.pushed and first.branch == f"agent/{name}"
    pull = first.pull_request
    assert pull is not None and pull.head_branch == f"agent/{name}" and pull.state == "open"
    assert pull.head_sha == first.head_sha
    assert [r.passed for r in first.verify] == [True]
    assert around.kinds() == [
        ledger.Kind.PUBLICATION_CHECKED, ledger.Kind.PUBLICATION_VERIFIED,
        ledger.Kind.PUBLICATION_PUSHED, ledger.Kind.PULL_REQUEST_OPENED,
        ledger.Kind.PUBLICATION_SUMMARY,
    ]  # fmt: skip
    (opened,) = gitea.pulls(name)
    assert opened.number == pull.number
    detail = gitea.api("GET", f"/repos/{gitea.full_name(name)}/pulls/{pull.number}")
    assert detail["body"] == f"evidence\n\n{runs.FRESH_SANDBOX}: unit-tests=0"
    assert detail["draft"] is True and pull.draft is True  # spec.output.pullRequest.draft's default
    commit = gitea.api("GET", f"/repos/{gitea.full_name(name)}/git/commits/{first.head_sha}")
    message = commit["commit"]["message"]
    assert f"Orchestrator-Run: shop/{name} ({name}-uid)" in message
    assert f"Orchestrator-Attestation: {BUNDLE}" in message
    assert f"Orchestrator-Record: {RECORD}" in message
    assert commit["commit"]["author"]["email"] == runs.COMMITTER[1]
    assert [p["sha"] for p in commit["parents"]] == [gitea.seed_commit]
    assert first.summary_url and f"/pulls/{pull.number}" in first.summary_url

    again = runs.publish(_inputs(gitea, name, patch, tmp_path / "two", "python3 -m unittest"),
                         _connect(gitea), Around())  # fmt: skip
    assert again.state == "opened", again
    assert again.head_sha == first.head_sha and not again.pushed
    assert again.pull_request is not None and again.pull_request.number == pull.number
    assert len(gitea.pulls(name)) == 1


def test_a_path_the_policy_denies_blocks_publication(gitea: Gitea, tmp_path: pathlib.Path) -> None:
    name = _repository(gitea)
    files = {"src/shop/pricing.py": FIX, "NOTES.md": "agent notes\n", "README.md": "mine\n"}
    patch = _patch(gitea, tmp_path, files)
    around = Around()
    done = runs.publish(_inputs(gitea, name, patch, tmp_path / "s", "true"), _connect(gitea),
                        around)  # fmt: skip
    assert done.state == "failed" and done.step == "policy"
    assert done.rule == "fixer/no-notes" and "NOTES.md" in done.message
    # Every denied path is named, the one no rule allows (the default) too.
    assert "path='README.md'" in done.message, done.message
    assert around.kinds() == [ledger.Kind.PUBLICATION_FAILED]
    assert around.entries[0][1]["rule"] == "fixer/no-notes"
    with pytest.raises(ForgeError) as missing:
        gitea.api("GET", f"/repos/{gitea.full_name(name)}/branches/agent%2F{name}")
    assert missing.value.status == 404
    assert gitea.pulls(name) == []


def test_a_verify_failure_in_the_fresh_checkout_stops_before_the_push(
    gitea: Gitea, tmp_path: pathlib.Path
) -> None:
    name = _repository(gitea)
    patch = _patch(gitea, tmp_path, {"src/shop/pricing.py": FIX})
    done = runs.publish(_inputs(gitea, name, patch, tmp_path / "s", "exit 3"), _connect(gitea),
                        Around())  # fmt: skip
    assert done.state == "failed" and done.step == "verify" and not done.pushed
    assert [r.result.exit_code for r in done.verify] == [3]
    with pytest.raises(ForgeError):
        gitea.api("GET", f"/repos/{gitea.full_name(name)}/branches/agent%2F{name}")


def test_a_forge_that_refuses_fails_publication_with_its_message(
    gitea: Gitea, tmp_path: pathlib.Path
) -> None:
    name = _repository(gitea)
    patch = _patch(gitea, tmp_path, {"src/shop/pricing.py": FIX})
    around = Around()
    inputs = _inputs(gitea, name, patch, tmp_path / "s", "true", {"base": "no-such-base"})
    done = runs.publish(inputs, _connect(gitea), around)
    assert done.state == "failed" and done.step == "pullRequest", done
    assert "the forge said" in done.message, done.message
    assert around.kinds()[-1] is ledger.Kind.PUBLICATION_FAILED
    assert around.entries[-1][1]["step"] == "pullRequest"
    assert gitea.pulls(name) == []


def test_a_run_that_changed_nothing_is_not_published(gitea: Gitea, tmp_path: pathlib.Path) -> None:
    name = _repository(gitea)
    patch = _patch(gitea, tmp_path, {})
    assert patch == b""
    done = runs.publish(_inputs(gitea, name, patch, tmp_path / "s", "true"), _connect(gitea),
                        Around())  # fmt: skip
    assert done.state == "failed" and done.step == "diff" and "changed nothing" in done.message
    assert gitea.pulls(name) == []
