"""Prepare the workspace from the repository at its pinned commit, and diff it afterwards.

The clone fetches through the gateway's git endpoint for the run, with the run token
(the forge credential stays with the gateway), and then names the repository's own URL
as ``origin``. The clone is the only step that sees a git credential: it reaches git as
a one-off ``http.extraHeader`` through ``GIT_CONFIG_*`` variables of that one process,
never as a remote URL or a config entry, and the clone is checked for it before the
agent starts. The diff is taken with a private index against the pinned commit, with every
repository-controlled command hook (fsmonitor, hooks, external diff, textconv) off,
so a file the agent planted cannot run code in, or hide changes from, the diff.
``tree_digest`` names the final workspace for the attestation (docs/attestation.md,
"Workspace tree digest"); it reads through directory descriptors and never follows a
symbolic link, so a link the agent planted cannot point it outside the workspace.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import os
import pathlib
import stat
import subprocess
import tempfile
import urllib.parse
from collections.abc import Mapping, Sequence

from continue_orchestrator import digest, errors
from continue_orchestrator.runner import _bundle

BRANCH = "orchestrator-run"
"""Local branch the agent works on; fixed, so the agent's view is the same every run."""
AGENT_IDENTITY = ("Continue agent", "agent@orchestrator.invalid")

_SAFE_GIT = (
    "-c", "core.fsmonitor=false",
    "-c", "core.hooksPath=/dev/null",
    "-c", "core.untrackedCache=false",
    "-c", "safe.directory=*",
    "-c", "diff.external=",
    "-c", "core.pager=cat",
)  # fmt: skip


@dataclasses.dataclass(frozen=True)
class ChangedFile:
    """One path in the diff, with git's status letter (A, M, D, T)."""

    status: str
    path: str


@dataclasses.dataclass(frozen=True)
class Diff:
    """The workspace against the pinned commit, tracked and untracked files alike."""

    base: str
    patch: bytes
    """``git diff --binary`` output, possibly cut at the limit."""
    files: tuple[ChangedFile, ...]
    digest: str
    """sha256 of the full patch, even when ``patch`` was cut."""
    size: int
    truncated: bool


def git_env(home: str, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """A minimal environment for git: no user or system config, no prompts."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
        "HOME": home,
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "TZ": "UTC",
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_ASKPASS": "/bin/false",
        "SSH_ASKPASS": "/bin/false",
    }
    env.update(extra or {})
    return env


def split_credentials(url: str) -> tuple[str, _bundle.Credentials | None]:
    """The URL without userinfo, and credentials if the URL carried a password."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or "@" not in parts.netloc:
        return url, None
    userinfo, _, host = parts.netloc.rpartition("@")
    clean = urllib.parse.urlunsplit(parts._replace(netloc=host))
    username, _, password = userinfo.partition(":")
    if not password:
        return clean, None
    return clean, _bundle.Credentials(
        username=urllib.parse.unquote(username) or "x-access-token",
        token=urllib.parse.unquote(password),
    )


def prepare(
    repository: _bundle.RepositoryPin,
    destination: pathlib.Path,
    *,
    credentials: _bundle.Credentials | None = None,
    fetch_url: str | None = None,
) -> str:
    """Clone ``repository`` into ``destination`` at its pinned commit; return that commit.

    With ``fetch_url`` (the gateway's git endpoint) the clone fetches from there and
    ``origin`` is then set to the repository's own URL, so the workspace looks as a
    direct clone would."""
    url, from_url = split_credentials(repository.url)
    where = f"repository {url}"
    credentials = credentials or from_url
    if destination.exists() and any(destination.iterdir()):
        raise errors.RunnerError(
            "the workspace is not empty", where=str(destination), fix="give the run a fresh volume"
        )
    destination.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="clone-home-") as home:
        # For a file:// origin, git runs upload-pack as a separate process that gets no
        # -c options; safe.directory reaches it only through the (throwaway) global config.
        pathlib.Path(home, ".gitconfig").write_text("[safe]\n\tdirectory = *\n")
        extra: dict[str, str] = {}
        if credentials is not None:
            basic = base64.b64encode(
                f"{credentials.username}:{credentials.token}".encode()
            ).decode()
            extra = {
                "GIT_CONFIG_COUNT": "1",
                "GIT_CONFIG_KEY_0": "http.extraHeader",
                "GIT_CONFIG_VALUE_0": f"Authorization: Basic {basic}",
            }
        clone = ["clone", "--quiet", "--no-checkout", "--origin", "origin"]
        if repository.ref != "HEAD":
            clone += ["--branch", repository.ref]
        source = fetch_url or url
        _git([*clone, "--", source, str(destination)], "/", git_env(home, extra), where)
        env = git_env(home)
        if fetch_url:
            _git(["remote", "set-url", "origin", url], destination, env, where)
        tip = _git(["rev-parse", "--verify", "HEAD^{commit}"], destination, env, where).strip()
        commit = tip
        if repository.commit:
            commit = repository.commit
            if not _git_ok(["cat-file", "-e", f"{commit}^{{commit}}"], destination, env):
                raise errors.RunnerError(
                    f"commit {commit} is not in the repository",
                    where=where,
                    fix="pin a commit that exists on the ref",
                )
            if not _git_ok(["merge-base", "--is-ancestor", commit, tip], destination, env):
                raise errors.RunnerError(
                    f"ref {repository.ref!r} does not contain commit {commit}",
                    where=where,
                    fix="pin a commit reachable from the ref, or change the ref",
                )
        _git(["checkout", "--quiet", "-B", BRANCH, commit], destination, env, where)
        _git(["config", "user.name", AGENT_IDENTITY[0]], destination, env, where)
        _git(["config", "user.email", AGENT_IDENTITY[1]], destination, env, where)
    if credentials is not None:
        _check_scrubbed(destination / ".git", credentials)
    return commit


def diff(workspace: pathlib.Path, base: str, *, limit: int) -> Diff:
    """Everything the agent changed since ``base``: edits, new files, deletions, binaries."""
    where = f"workspace {workspace}"
    with tempfile.TemporaryDirectory(prefix="runner-diff-") as scratch:
        env = git_env(scratch, {"GIT_INDEX_FILE": os.path.join(scratch, "index")})
        _git(["read-tree", base], workspace, env, where)
        _git(["add", "--all", "--", "."], workspace, env, where)
        flags = ["--cached", "--no-renames", "--no-ext-diff", "--no-textconv", base]
        names = _git_bytes(["diff", "--name-status", "-z", *flags], workspace, env, where)
        patch = _git_bytes(["diff", "--binary", "--full-index", *flags], workspace, env, where)
    fields = names.split(b"\0")
    files = tuple(
        ChangedFile(fields[i].decode(), os.fsdecode(fields[i + 1]))
        for i in range(0, len(fields) - 1, 2)
    )
    return Diff(
        base=base,
        patch=patch[:limit],
        files=files,
        digest=digest.text(patch),
        size=len(patch),
        truncated=len(patch) > limit,
    )


APPLY = ("apply", "--index", "--binary", "--whitespace=nowarn", "-")
"""``git apply`` of a runner's patch (from stdin), as the verify sandbox applies it and
publication commits it: the tree verified is the tree published."""


def apply(workspace: pathlib.Path, patch: bytes, *, where: str) -> None:
    """Apply ``patch``, a ``diff`` of this workspace's base, to its index and tree: all of it
    or nothing (``git apply`` is atomic), exactly as written (no whitespace fixes), and
    never through a symbolic link or outside the workspace (git refuses both). The
    options are the ones publication commits the patch with (``runs`` publishing), so
    the tree verified is the tree published. An empty patch changes nothing. Raises
    ``errors.RunnerError`` naming ``where`` (the patch) when it does not apply."""
    if not patch:
        return
    with tempfile.TemporaryDirectory(prefix="runner-apply-") as scratch:
        env = git_env(scratch)
        try:
            _git_bytes(list(APPLY), workspace, env, where, stdin=patch)
        except errors.RunnerError as error:
            raise errors.RunnerError(
                f"the patch does not apply to the pinned commit: {error.what}",
                where=where,
                fix="give the patch the runner reported for this repository and commit "
                "(the outcome's diff, whole and unredacted)",
            ) from None


TREE_MAX_DEPTH = 512
"""Deeper workspaces get no tree digest rather than one file descriptor per level."""
_CHUNK = 1 << 20
_EMPTY_SHA256 = digest.Digest.of(b"").hex.encode()


def tree_digest(workspace: pathlib.Path) -> str:
    """``sha256:`` + SHA-256 of the workspace's canonical listing, ``.git`` excluded.

    One record per non-directory entry, sorted by path bytes: ``KIND SP HEX SP PATH NUL``.
    KIND is ``file``, ``exec`` (owner execute bit set), ``link`` (HEX hashes the link's
    target, which is never followed) or ``other`` (fifo, socket, device: HEX hashes
    nothing). PATH is the raw bytes relative to the workspace, ``/``-separated. Raises
    ``errors.RunnerError`` when an entry cannot be read.
    """
    where = f"workspace {workspace}"
    records: list[tuple[bytes, bytes]] = []
    try:
        root = os.open(workspace, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as error:
        raise errors.RunnerError(
            f"cannot open the workspace: {error.strerror}", where=where
        ) from error
    # Depth-first with one open descriptor per level: (dir fd, path prefix, names left).
    stack: list[tuple[int, bytes, list[bytes]]] = []
    try:
        stack.append((root, b"", _names(root, b"", where)))
        while stack:
            directory, prefix, names = stack[-1]
            if not names:
                os.close(directory)
                stack.pop()
                continue
            name = names.pop()
            path = prefix + name
            if not prefix and name == b".git":
                continue
            try:
                info = os.stat(name, dir_fd=directory, follow_symlinks=False)
                if stat.S_ISDIR(info.st_mode):
                    if len(stack) >= TREE_MAX_DEPTH:
                        raise errors.RunnerError(
                            f"the workspace is nested deeper than {TREE_MAX_DEPTH} directories",
                            where=f"{where}: {os.fsdecode(path)}",
                        )
                    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
                    child = os.open(name, flags, dir_fd=directory)
                    try:
                        listed = _names(child, path, where)
                    except BaseException:
                        os.close(child)
                        raise
                    stack.append((child, path + b"/", listed))
                    continue
                if stat.S_ISLNK(info.st_mode):
                    target = os.readlink(name, dir_fd=directory)
                    records.append((path, b"link " + digest.Digest.of(target).hex.encode()))
                elif stat.S_ISREG(info.st_mode):
                    records.append((path, _file_record(directory, name)))
                else:
                    records.append((path, b"other " + _EMPTY_SHA256))
            except OSError as error:
                raise errors.RunnerError(
                    f"cannot read {os.fsdecode(path)!r} for the tree digest: {error.strerror}",
                    where=where,
                ) from error
    finally:
        for directory, _, _ in stack:
            os.close(directory)
    listing = hashlib.sha256()
    for path, record in sorted(records):
        listing.update(record + b" " + path + b"\0")
    return str(digest.Digest.from_hash(listing))


def _names(directory: int, path: bytes, where: str) -> list[bytes]:
    try:
        return [os.fsencode(name) for name in os.listdir(directory)]
    except OSError as error:
        raise errors.RunnerError(
            f"cannot list {os.fsdecode(path) or '.'!r} for the tree digest: {error.strerror}",
            where=where,
        ) from error


def _file_record(directory: int, name: bytes) -> bytes:
    # O_NOFOLLOW and O_NONBLOCK: a file swapped for a link or a fifo is neither followed
    # nor waited on; fstat then says what was really opened.
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    descriptor = os.open(name, flags, dir_fd=directory)
    try:
        info = os.fstat(descriptor)
        if not stat.S_ISREG(info.st_mode):
            return b"other " + _EMPTY_SHA256
        content = hashlib.sha256()
        while chunk := os.read(descriptor, _CHUNK):
            content.update(chunk)
    finally:
        os.close(descriptor)
    kind = b"exec " if info.st_mode & stat.S_IXUSR else b"file "
    return kind + digest.Digest.from_hash(content).hex.encode()


def _check_scrubbed(git_dir: pathlib.Path, credentials: _bundle.Credentials) -> None:
    needles = {credentials.token.encode(), base64.b64encode(credentials.token.encode())}
    for path in git_dir.rglob("*"):
        if path.is_file() and path.stat().st_size < 1 << 20:
            content = path.read_bytes()
            if any(needle in content for needle in needles):
                raise errors.RunnerError(
                    "git credentials were found in the cloned repository's metadata",
                    where=str(path),
                    fix="report this as a bug; the agent was not started",
                )


def _git_bytes(
    args: Sequence[str],
    cwd: pathlib.Path | str,
    env: Mapping[str, str],
    where: str,
    stdin: bytes = b"",
) -> bytes:
    result = subprocess.run(
        ["git", *_SAFE_GIT, *args],
        cwd=cwd,
        env=dict(env),
        input=stdin,
        capture_output=True,
        check=False,
    )
    if result.returncode != 0:
        lines = result.stderr.decode(errors="replace").strip().splitlines()
        # What the other side said (a gateway's refusal) comes before git's own last word.
        said = [line.removeprefix("remote: ") for line in lines if line.startswith("remote: ")]
        message = "; ".join([*said, lines[-1]]) if lines else f"exit {result.returncode}"
        raise errors.RunnerError(f"git {args[0]} failed: {message}", where=where)
    return result.stdout


def _git(args: Sequence[str], cwd: pathlib.Path | str, env: Mapping[str, str], where: str) -> str:
    return _git_bytes(args, cwd, env, where).decode(errors="replace")


def _git_ok(args: Sequence[str], cwd: pathlib.Path, env: Mapping[str, str]) -> bool:
    result = subprocess.run(
        ["git", *_SAFE_GIT, *args], cwd=cwd, env=dict(env), capture_output=True, check=False
    )
    return result.returncode == 0
