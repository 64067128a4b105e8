"""Git for publishing: a clean clone, the run's patch committed on it, a push.

Publication never touches the agent's workspace or its ``.git``: it clones the
repository afresh at the pinned commit into a directory of its own, applies the patch
the runner reported, and commits it with a fixed identity and the run's own dates, so
the same run always makes the same commit (``COMMITTER``, ``commit``). The forge
credential reaches git only as a one-off ``http.extraHeader`` in the environment of the
one git process that fetches or pushes (``GIT_CONFIG_COUNT``), as the runner passes its
own: never in a URL, a config file or argv (argv is readable by every user through
/proc). Every command runs with repository-controlled hooks off and no user or system
configuration.
"""

from __future__ import annotations

import base64
import dataclasses
import os
import pathlib
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from datetime import datetime

from continue_orchestrator import errors, forge, runner

COMMITTER = ("Continue Orchestrator", "orchestrator@continue-orchestrator.invalid")
"""Author and committer of every published commit: the orchestrator, not a person."""
GIT_TIMEOUT_SECONDS = 600

_SAFE_CONFIG = {
    "core.fsmonitor": "false",
    "core.hooksPath": "/dev/null",
    "core.autocrlf": "false",
    "commit.gpgSign": "false",
    "safe.directory": "*",
}
"""Repository-controlled hooks off: a clone runs none of the repository's code."""
_SAFE = tuple(arg for key, value in _SAFE_CONFIG.items() for arg in ("-c", f"{key}={value}"))


@dataclasses.dataclass(frozen=True)
class Clone:
    """A clean clone at the pinned commit, in a directory publication owns."""

    path: pathlib.Path
    base: str

    def git(self, *args: str, step: str, extra: Mapping[str, str] | None = None) -> str:
        return _git(args, self.path, step=step, extra=extra)


# Which certificate authorities git trusts for HTTPS: the deployment's choice (the chart's
# trust.caBundle sets them), not configuration of git's behaviour, and no secret.
_TRUST = ("GIT_SSL_CAINFO", "GIT_SSL_CAPATH", "SSL_CERT_FILE", "SSL_CERT_DIR")


def _environment(home: str, extra: Mapping[str, str] | None) -> dict[str, str]:
    """No user or system config, no prompts, nothing of this process's environment but
    PATH and the CA trust (`_TRUST`)."""
    return {
        **{name: os.environ[name] for name in _TRUST if os.environ.get(name)},
        "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
        "HOME": home,
        "LANG": "C.UTF-8",
        "TZ": "UTC",
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_ASKPASS": "/bin/false",
        **(extra or {}),
    }


def _git(
    args: Sequence[str],
    cwd: pathlib.Path,
    *,
    step: str,
    extra: Mapping[str, str] | None = None,
    stdin: bytes | None = None,
) -> str:
    try:
        with tempfile.TemporaryDirectory(prefix="publish-home-") as home:
            result = subprocess.run(
                ["git", *_SAFE, *args],
                cwd=cwd,
                env=_environment(home, extra),
                input=stdin,
                capture_output=True,
                timeout=GIT_TIMEOUT_SECONDS,
            )
    except (OSError, subprocess.TimeoutExpired) as error:
        raise errors.PublicationError(f"git {args[0]} did not run: {error}", step=step,
                                      where=str(cwd)) from error  # fmt: skip
    if result.returncode != 0:
        said = result.stderr.decode(errors="replace").strip().splitlines()[-3:]
        raise errors.PublicationError(
            f"git {args[0]} failed: {' / '.join(said) or f'exit {result.returncode}'}",
            step=step,
            where=str(cwd),
        )
    return result.stdout.decode(errors="replace")


def credential_header(credential: forge.GitCredential | None) -> dict[str, str]:
    """The forge credential as one git process's ``http.extraHeader`` (environment)."""
    if credential is None:
        return {}
    basic = base64.b64encode(f"{credential.username}:{credential.secret}".encode()).decode()
    return {
        "GIT_CONFIG_COUNT": "1",
        "GIT_CONFIG_KEY_0": "http.extraHeader",
        "GIT_CONFIG_VALUE_0": f"Authorization: Basic {basic}",
    }


def clone(
    url: str, commit: str, destination: pathlib.Path, credential: forge.GitCredential | None
) -> Clone:
    """Clone ``url`` into ``destination`` (empty or absent) and check out ``commit``."""
    destination.mkdir(parents=True, exist_ok=True)
    header = credential_header(credential)
    _git(["init", "--quiet", "."], destination, step="commit")
    _git(
        ["fetch", "--quiet", "--no-tags", url, commit],
        destination,
        step="commit",
        extra=header,
    )
    _git(["checkout", "--quiet", "--detach", commit], destination, step="commit")
    return Clone(destination, commit)


def apply(checkout: Clone, patch: bytes) -> tuple[str, ...]:
    """Apply ``patch`` to the index and tree; return the paths it changes (sorted)."""
    if patch:
        _git(runner.GIT_APPLY, checkout.path, step="commit", stdin=patch)
    names = checkout.git("diff", "--cached", "--no-renames", "--name-only", "-z", checkout.base,
                         step="commit")  # fmt: skip
    return tuple(sorted(name for name in names.split("\0") if name))


def commit(checkout: Clone, message: str, when: datetime) -> str:
    """Commit the index as ``COMMITTER`` at ``when``; return the commit's sha."""
    stamp = f"{int(when.timestamp())} +0000"
    name, email = COMMITTER
    identity = {
        "GIT_AUTHOR_NAME": name, "GIT_AUTHOR_EMAIL": email, "GIT_AUTHOR_DATE": stamp,
        "GIT_COMMITTER_NAME": name, "GIT_COMMITTER_EMAIL": email, "GIT_COMMITTER_DATE": stamp,
    }  # fmt: skip
    _git(["commit", "--quiet", "--no-verify", "--allow-empty", "--cleanup=verbatim", "-F", "-"],
         checkout.path, step="commit", extra=identity, stdin=message.encode())  # fmt: skip
    return checkout.git("rev-parse", "HEAD", step="commit").strip()


def remote_head(url: str, branch: str, credential: forge.GitCredential | None) -> str | None:
    """The sha ``branch`` points at on ``url``; None when there is no such branch."""
    with tempfile.TemporaryDirectory(prefix="publish-ls-") as scratch:
        listed = _git(["ls-remote", "--heads", url, f"refs/heads/{branch}"],
                      pathlib.Path(scratch), step="push",
                      extra=credential_header(credential))  # fmt: skip
    for line in listed.splitlines():
        sha, _, ref = line.partition("\t")
        if ref == f"refs/heads/{branch}":
            return sha
    return None


def push(checkout: Clone, url: str, branch: str, credential: forge.GitCredential | None) -> None:
    """Push HEAD to ``branch`` of ``url`` (a new branch, or a fast-forward of it)."""
    checkout.git("push", "--quiet", "--no-verify", url, f"HEAD:refs/heads/{branch}",
                 step="push", extra=credential_header(credential))  # fmt: skip


def verify_copy(checkout: Clone, destination: pathlib.Path) -> Clone:
    """A second checkout of HEAD for the verify commands, so what they write (caches,
    build output) never reaches the commit."""
    head = checkout.git("rev-parse", "HEAD", step="verify").strip()
    return clone(str(checkout.path), head, destination, None)
