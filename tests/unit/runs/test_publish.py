"""Publication's own decisions (``runs.publish``'s parts), without a forge.

Checked: what the spec asks for (branch ``agent/<name>`` by default, base from the ref,
title from the prompt); every changed path asked of the policy as ``file.write`` again,
and the branch and repository as ``branch.push`` / ``pullRequest.create``; the commit
message's trailers; a commit on a clean clone of a real repository that is the same
every time for the same run; a push that happens once; and a patch that is cut, redacted
or altered refusing publication.
"""

from __future__ import annotations

import base64
import pathlib
import subprocess
from datetime import UTC, datetime
from typing import Any

import pytest
import yaml

from continue_orchestrator import api, digest, errors, forge, policy, runner, runs
from continue_orchestrator.runs import _publish, _publish_git

REPO = "https://forge.example/shop/prices.git"
RECORD = "sha256:" + "c" * 64
BUNDLE = "sha256:" + "b" * 64
FINISHED = datetime(2026, 11, 23, 10, 5, 7, tzinfo=UTC)

POLICY = """\
apiVersion: orchestrator.continue.dev/v1alpha1
kind: RunPolicy
metadata: {name: fixer, namespace: shop}
spec:
  defaultEffect: Deny
  approvers: {users: [alice]}
  rules:
    - {name: sources, actions: [file.write], paths: ["src/**"], effect: Allow}
    - {name: no-ci, actions: [file.write], paths: [".github/**"], effect: Deny,
       reason: CI is off limits}
    - {name: tests-held, actions: [file.write], paths: ["tests/**"], effect: RequireApproval}
    - {name: push-agent, actions: [branch.push], branches: ["agent/*"], effect: Allow,
       repositories: ["https://forge.example/shop/*"]}
    - {name: open-pr, actions: [pullRequest.create], effect: Allow,
       repositories: ["https://forge.example/shop/prices"]}
"""


def _run(output: dict[str, Any] | None = None, ref: str = "main") -> api.AgentRun:
    spec: dict[str, Any] = {
        "policyRef": {"name": "fixer"},
        "repository": {"url": REPO, "ref": ref, "commit": "1" * 40},
        "agent": {"configMapKeyRef": {"name": "agent", "key": "config.yaml"}},
        "prompt": "\n  Fix the rounding in src/pricing.py so prices round half up.\nMore.",
    }
    if output is not None:
        spec["output"] = {"pullRequest": output}
    return api.AgentRun.model_validate({
        "apiVersion": "orchestrator.continue.dev/v1alpha1", "kind": "AgentRun",
        "metadata": {"name": "fix-rounding", "namespace": "shop"}, "spec": spec,
    })  # fmt: skip


def _policy() -> policy.PolicySet:
    return policy.compile([api.RunPolicy.model_validate(yaml.safe_load(POLICY))])


CONTEXT = policy.RunContext(namespace="shop", name="fix-rounding", uid="u-1")


def test_the_spec_asks_for_a_pull_request_only_when_enabled() -> None:
    assert runs.publication_target(_run()) is None
    assert runs.publication_target(_run({"enabled": False})) is None
    spot = runs.publication_target(_run({"enabled": True}))
    assert spot == runs.PublicationTarget(
        repository=REPO, base="main", branch="agent/fix-rounding",
        title="Fix the rounding in src/pricing.py so prices round half up.", draft=True,
    )  # fmt: skip
    named = runs.publication_target(
        _run({"enabled": True, "branch": "fixes/r", "base": "release", "title": "T"})
    )
    assert named is not None and (named.branch, named.base, named.title) == (
        "fixes/r",
        "release",
        "T",
    )
    spaced = runs.publication_target(_run({"enabled": True, "title": "Fix\n\nOrchestrator-Run: x"}))
    assert spaced is not None and spaced.title == "Fix Orchestrator-Run: x"  # one line, always
    ready = runs.publication_target(_run({"enabled": True, "draft": False}))
    assert ready is not None and ready.draft is False  # a draft unless the spec says not
    headless = runs.publication_target(_run({"enabled": True}, ref="HEAD"))
    assert headless is not None and headless.base == ""


def test_the_api_default_branch_text_names_the_default() -> None:
    described = api.PullRequestOutput.model_fields["branch"].description or ""
    assert runs.default_branch("RUN-NAME") in described


def test_every_changed_path_is_asked_of_the_policy_as_a_write() -> None:
    decisions = runs.check_paths(_policy(), CONTEXT, ["src/p.py", ".github/ci.yml", "tests/t.py",
                                                      "README.md"])  # fmt: skip
    assert [(d.effect, d.rule) for d in decisions] == [
        (api.Effect.ALLOW, "fixer/sources"),
        (api.Effect.DENY, "fixer/no-ci"),
        (api.Effect.REQUIRE_APPROVAL, "fixer/tests-held"),
        (api.Effect.DENY, None),
    ]
    assert all(d.request.action is api.Action.FILE_WRITE for d in decisions)  # type: ignore[union-attr]


def test_the_branch_and_the_pull_request_are_gated() -> None:
    spot = runs.publication_target(_run({"enabled": True}))
    assert spot is not None
    push, create = runs.gates(_policy(), CONTEXT, spot)
    assert (push.effect, push.rule) == (api.Effect.ALLOW, "fixer/push-agent")
    assert (create.effect, create.rule) == (api.Effect.ALLOW, "fixer/open-pr")
    main = runs.PublicationTarget(repository=REPO, base="main", branch="main", title="t",
                                  draft=True)  # fmt: skip
    assert runs.gates(_policy(), CONTEXT, main)[0].effect is api.Effect.DENY
    other = runs.PublicationTarget(repository="https://forge.example/else/x", base="main",
                                   branch="agent/x", title="t", draft=False)  # fmt: skip
    assert [d.effect for d in runs.gates(_policy(), CONTEXT, other)] == [api.Effect.DENY] * 2


def test_the_commit_message_carries_the_trailers() -> None:
    message = runs.commit_message("Fix rounding", namespace="shop", name="fix-rounding",
                                  uid="u-1", attestation=BUNDLE, record=RECORD)  # fmt: skip
    assert message == (
        "Fix rounding\n\n"
        "Orchestrator-Run: shop/fix-rounding (u-1)\n"
        f"Orchestrator-Attestation: {BUNDLE}\n"
        f"Orchestrator-Record: {RECORD}\n"
    )


def _git(cwd: pathlib.Path, *args: str) -> str:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(cwd), "GIT_CONFIG_NOSYSTEM": "1",
           "GIT_AUTHOR_NAME": "a", "GIT_AUTHOR_EMAIL": "a@x", "GIT_COMMITTER_NAME": "a",
           "GIT_COMMITTER_EMAIL": "a@x"}  # fmt: skip
    done = subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture
def origin(tmp_path: pathlib.Path) -> tuple[pathlib.Path, str, bytes]:
    """A bare origin with one commit, and a patch against it (as the runner takes it)."""
    work = tmp_path / "work"
    work.mkdir()
    _git(work, "init", "-q", "-b", "main")
    (work / "src").mkdir()
    (work / "src" / "p.py").write_text("def f():\n    return 1\n")
    _git(work, "add", ".")
    _git(work, "commit", "-qm", "seed")
    base = _git(work, "rev-parse", "HEAD").strip()
    (work / "src" / "p.py").write_text("def f():\n    return 2\n")
    (work / "NEW.md").write_text("new\n")
    _git(work, "add", ".")
    patch = subprocess.run(["git", "diff", "--cached", "--binary", "--full-index", base],
                           cwd=work, capture_output=True, check=True).stdout  # fmt: skip
    bare = tmp_path / "origin.git"
    _git(tmp_path, "clone", "-q", "--bare", str(work), str(bare))
    return bare, base, patch


def _commit(
    origin: tuple[pathlib.Path, str, bytes], where: pathlib.Path
) -> tuple[_publish_git.Clone, tuple[str, ...], str]:
    bare, base, patch = origin
    checkout = _publish_git.clone(str(bare), base, where, None)
    paths = _publish_git.apply(checkout, patch)
    message = runs.commit_message("Fix", namespace="shop", name="fix-rounding", uid="u-1",
                                  attestation=BUNDLE, record=RECORD)  # fmt: skip
    return checkout, paths, _publish_git.commit(checkout, message, FINISHED)


def test_the_commit_is_built_on_a_clean_clone_and_is_the_same_every_time(
    origin: tuple[pathlib.Path, str, bytes], tmp_path: pathlib.Path
) -> None:
    checkout, paths, sha = _commit(origin, tmp_path / "one")
    assert paths == ("NEW.md", "src/p.py")
    again = _commit(origin, tmp_path / "two")[2]
    assert again == sha
    shown = _git(checkout.path, "log", "-1", "--format=%an <%ae>|%cn <%ce>|%at|%ct|%P%n%B")
    head, body = shown.split("\n", 1)
    name, email = runs.COMMITTER
    stamp = str(int(FINISHED.timestamp()))
    assert head == f"{name} <{email}>|{name} <{email}>|{stamp}|{stamp}|{origin[1]}"
    assert "Orchestrator-Run: shop/fix-rounding (u-1)" in body
    trailers = _git(checkout.path, "log", "-1", "--format=%(trailers:only,unfold)")
    assert f"Orchestrator-Attestation: {BUNDLE}" in trailers
    assert f"Orchestrator-Record: {RECORD}" in trailers


def test_a_branch_is_pushed_once(
    origin: tuple[pathlib.Path, str, bytes], tmp_path: pathlib.Path
) -> None:
    bare = str(origin[0])
    checkout, _, sha = _commit(origin, tmp_path / "one")
    assert _publish_git.remote_head(bare, "agent/fix-rounding", None) is None
    _publish_git.push(checkout, bare, "agent/fix-rounding", None)
    assert _publish_git.remote_head(bare, "agent/fix-rounding", None) == sha
    copy = _publish_git.verify_copy(checkout, tmp_path / "verify")
    assert (copy.path / "NEW.md").read_text() == "new\n"
    assert not (checkout.path / "verify").exists()


def test_the_credential_is_an_extra_header_of_one_process() -> None:
    header = _publish_git.credential_header(forge.GitCredential("bot", "s3cret"))
    assert header["GIT_CONFIG_KEY_0"] == "http.extraHeader"
    assert (
        header["GIT_CONFIG_VALUE_0"]
        == "Authorization: Basic " + base64.b64encode(b"bot:s3cret").decode()
    )


def _outcome(patch: bytes, **diff: Any) -> runner.Outcome:
    encoded = base64.b64encode(patch).decode()
    fields = {"base": "1" * 40, "files": [], "digest": digest.text(patch), "size": len(patch),
              "truncated": False, "patchBase64": encoded, **diff}  # fmt: skip
    return runner.Outcome.model_validate({
        "run": "u-1", "status": "Succeeded", "exitCode": 0, "diff": fields,
        "startedAt": "2026-11-23T10:00:00Z", "finishedAt": "2026-11-23T10:05:07Z",
    })  # fmt: skip


def test_a_patch_that_is_not_the_one_taken_is_refused() -> None:
    patch = b"diff --git a/x b/x\n"
    assert _publish._patch(_outcome(patch))[1] == patch
    for outcome, said in [
        (None, "no diff"),
        (_outcome(patch, truncated=True), "cut at its limit"),
        (_outcome(patch, digest="sha256:" + "0" * 64), "not the patch the runner took"),
        (_outcome(patch).model_copy(update={"redacted": ["KEY"]}), "redacted"),
    ]:
        with pytest.raises(errors.PublicationError) as refused:
            _publish._patch(outcome)
        assert said in refused.value.message and refused.value.step == "diff"


def test_publish_git_keeps_the_deployments_ca_trust_and_nothing_else_of_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: pathlib.Path
) -> None:
    """git talks to a forge behind a private CA with the bundle the chart's trust.caBundle
    names; the rest of the operator's environment (a token, git config) stays out."""
    bundle = tmp_path / "ca.crt"
    monkeypatch.setenv("GIT_SSL_CAINFO", str(bundle))
    monkeypatch.setenv("SSL_CERT_FILE", str(bundle))
    monkeypatch.setenv("GITHUB_TOKEN", "ghp_canary")
    monkeypatch.setenv("GIT_CONFIG_PARAMETERS", "'core.sshCommand=evil'")
    env = _publish_git._environment(str(tmp_path), None)
    assert env["GIT_SSL_CAINFO"] == str(bundle) and env["SSL_CERT_FILE"] == str(bundle)
    assert "GITHUB_TOKEN" not in env and "GIT_CONFIG_PARAMETERS" not in env
    script = "import os; print(os.environ.get('GIT_SSL_CAINFO', '-'))"
    seen = _publish_git._git(["-c", f"alias.ca=!python3 -c \"{script}\"", "ca"], tmp_path,
                             step="test")  # fmt: skip
    assert seen.strip() == str(bundle)
