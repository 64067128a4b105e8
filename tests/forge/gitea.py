"""Start a real Gitea on loopback for the tests that push branches and open pull requests.

Gitea (built from Go modules by `hack/build-gitea.sh`) runs as a local process on a free
127.0.0.1 port with SQLite in a temp work dir, `INSTALL_LOCK`, no mailer and nothing that
reaches out (offline mode, no update checker, no migrations, webhooks to loopback only).
`start()` waits for `GET /api/v1/version`, creates an admin user and an access token
with `gitea admin user create`, and seeds the repository `demo` from
`examples/demo/repo` (made a git repository by `hack/demo-origin.sh`, so its one commit
is the demo's pinned commit) with a push over smart HTTP.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pydantic
from tests.kube.controlplane import _die_with_parent, _http_ok, _Proc, _wait, free_port

REPO_ROOT = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO_ROOT / "hack" / "build-gitea.sh"
DEMO_ORIGIN = REPO_ROOT / "hack" / "demo-origin.sh"
DEMO_SOURCE = REPO_ROOT / "examples" / "demo" / "repo"
ADMIN = "forge-admin"  # "admin" is a name Gitea reserves
SEED_REPO = "demo"

# Loopback never goes through a proxy, whatever the environment says.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class ForgeError(Exception):
    """A Gitea API call answered with an error status; carries it and Gitea's message."""

    def __init__(self, method: str, url: str, status: int, body: str) -> None:
        self.status = status
        self.body = body
        super().__init__(f"Gitea {method} {url} answered {status}: {body[:2000]}")


class Branch(pydantic.BaseModel):
    """One side of a pull request (Gitea's PRBranchInfo)."""

    ref: str
    sha: str


class PullRequest(pydantic.BaseModel):
    """The fields of Gitea's PullRequest the tests read."""

    number: int
    title: str
    body: str = ""
    state: str  # "open" or "closed"
    merged: bool = False
    html_url: str
    head: Branch
    base: Branch


def bin_dir() -> Path:
    """Where `hack/build-gitea.sh` puts (or has put) the gitea binary and its static files."""
    out = subprocess.run(
        ["bash", str(BUILD_SCRIPT), "--print"], check=True, capture_output=True, text=True
    ).stdout
    return Path(out.strip())


def ensure_binary() -> Path:
    """Return the bin dir, building Gitea first when it is missing (cold: minutes)."""
    directory = bin_dir()
    needed = (directory / "gitea", directory / "static" / "options", directory / ".stamp")
    if not all(p.exists() for p in needed):
        print(f"[tests.forge] building Gitea into {directory}", file=sys.stderr)
        subprocess.run(["bash", str(BUILD_SCRIPT)], check=True, stdout=sys.stderr)
    return directory


def app_ini(state_dir: Path, port: int, static_root: Path) -> str:
    """Gitea's configuration: loopback only, SQLite and every path under `state_dir`,
    installed, and nothing that mails or reaches out (gravatar and federated avatars are
    off by default; OFFLINE_MODE serves no CDN assets)."""
    data = state_dir / "data"
    return f"""\
APP_NAME = continue-orchestrator test forge
RUN_MODE = prod
WORK_PATH = {state_dir}

[server]
PROTOCOL = http
HTTP_ADDR = 127.0.0.1
HTTP_PORT = {port}
DOMAIN = 127.0.0.1
ROOT_URL = http://127.0.0.1:{port}/
DISABLE_SSH = true
START_SSH_SERVER = false
LFS_START_SERVER = false
OFFLINE_MODE = true
APP_DATA_PATH = {data}
; no bindata in this build: templates, locales and options are read from disk
STATIC_ROOT_PATH = {static_root}

[database]
DB_TYPE = sqlite3
PATH = {data / "gitea.db"}
SQLITE_JOURNAL_MODE = WAL

[repository]
ROOT = {state_dir / "repositories"}
DEFAULT_BRANCH = main
DISABLE_MIGRATIONS = true

[security]
INSTALL_LOCK = true
SECRET_KEY = {secrets.token_hex(32)}
INTERNAL_TOKEN = {secrets.token_urlsafe(64)}
; webhooks and OAuth2 clients may call loopback only
ALLOWED_HOST_LIST = loopback

[service]
DISABLE_REGISTRATION = true
ENABLE_NOTIFY_MAIL = false
NO_REPLY_ADDRESS = noreply.invalid

[mailer]
ENABLED = false

[cron.update_checker]
ENABLED = false

[oauth2]
ENABLED = false

[actions]
ENABLED = false

[packages]
ENABLED = false

[indexer]
ISSUE_INDEXER_TYPE = db
REPO_INDEXER_ENABLED = false

[session]
PROVIDER = memory

[cache]
ADAPTER = memory

[log]
MODE = console
LEVEL = Info
"""


def git_env() -> dict[str, str]:
    """An environment for git that reads no user or system config and never prompts."""
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith("GIT_")},
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_TERMINAL_PROMPT": "0",
        "NO_PROXY": "127.0.0.1",
        "no_proxy": "127.0.0.1",
        "GIT_AUTHOR_NAME": "Forge Test",
        "GIT_AUTHOR_EMAIL": "forge-test@example.invalid",
        "GIT_COMMITTER_NAME": "Forge Test",
        "GIT_COMMITTER_EMAIL": "forge-test@example.invalid",
    }


@dataclass
class Gitea:
    """A Gitea server on loopback, state in `state_dir`; `start()`, then `stop()`.

    `base_url`, `admin` and `token` (scope `all`), `clone_url(repo)`, `api(...)`,
    `pulls(repo)`, `open_pull(...)`, `git(...)` (authenticated as the admin), `log_path`.
    A repository name without an owner is the admin's.
    """

    state_dir: Path
    bin_dir: Path = field(default_factory=ensure_binary)
    tie_to_parent: bool = True
    port: int = 0
    admin: str = ADMIN
    password: str = field(default_factory=lambda: secrets.token_urlsafe(18))
    token: str = ""
    seed_commit: str = ""
    ready_seconds: float = 0.0  # process start to API ready
    startup_seconds: float = 0.0  # process start to admin, token and seeded repository
    _proc: _Proc | None = None

    # -- paths and addresses -------------------------------------------------------
    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.state_dir / "logs" / "gitea.log"

    @property
    def config_path(self) -> Path:
        return self.state_dir / "custom" / "conf" / "app.ini"

    def full_name(self, repo: str) -> str:
        """`owner/name`; a bare name is the admin's repository."""
        return repo if "/" in repo else f"{self.admin}/{repo}"

    def clone_url(self, repo: str = SEED_REPO) -> str:
        """The smart HTTP URL, without credentials (see `git` and `auth_header`)."""
        return f"{self.base_url}/{self.full_name(repo)}.git"

    # -- lifecycle -----------------------------------------------------------------
    def start(self, timeout: float = 120.0) -> None:
        t0 = time.monotonic()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.log_path.parent.mkdir(exist_ok=True)
        self.port = free_port()
        self._write_config()
        try:
            self._proc = self._spawn()
            proc = self._proc
            _wait(
                "gitea",
                lambda: _http_ok(f"{self.base_url}/api/v1/version", proc),
                timeout,
                lambda: self.log_tail(40),
            )
            self.ready_seconds = time.monotonic() - t0
            self._create_admin()
            self.seed_commit = self._seed(SEED_REPO)
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - t0

    def stop(self, grace: float = 5.0) -> None:
        """SIGTERM to Gitea's process group (it and its git children), SIGKILL after grace."""
        proc, self._proc = self._proc, None
        if proc is None or proc.popen is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.popen.wait(grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.popen.wait()

    def running(self) -> bool:
        return (
            self._proc is not None
            and self._proc.popen is not None
            and self._proc.popen.poll() is None
        )

    def _write_config(self) -> None:
        self.config_path.parent.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(app_ini(self.state_dir, self.port, self.bin_dir / "static"))
        self.config_path.chmod(0o600)

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("GITEA_")}
        env |= {"GITEA_WORK_DIR": str(self.state_dir), "HOME": str(self.state_dir / "home")}
        if os.geteuid() == 0:  # CI containers and this machine run tests as root
            env["GITEA_I_AM_BEING_UNSAFE_RUNNING_AS_ROOT"] = "true"
        return env

    def _gitea_args(self, *args: str) -> list[str]:
        return [
            str(self.bin_dir / "gitea"),
            *args,
            "--config",
            str(self.config_path),
            "--work-path",
            str(self.state_dir),
            "--custom-path",
            str(self.state_dir / "custom"),
        ]

    def _spawn(self) -> _Proc:
        with self.log_path.open("ab") as out:
            popen = subprocess.Popen(
                self._gitea_args("web"),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent if self.tie_to_parent else None,
                cwd=self.state_dir,
                env=self._env(),
            )
        return _Proc("gitea", popen, popen.pid, self.log_path)

    def _create_admin(self) -> None:
        result = subprocess.run(
            self._gitea_args(
                "admin",
                "user",
                "create",
                "--admin",
                "--username",
                self.admin,
                "--password",
                self.password,
                "--email",
                f"{self.admin}@example.invalid",
                "--must-change-password=false",
                "--access-token",
                "--access-token-name",
                "tests",
                "--access-token-scopes",
                "all",
            ),
            capture_output=True,
            text=True,
            cwd=self.state_dir,
            env=self._env(),
            check=False,
        )
        found = re.search(r"Access token was successfully created\.\.\. (\S+)", result.stdout)
        if result.returncode != 0 or found is None:
            raise RuntimeError(
                f"gitea admin user create exited {result.returncode} without a token\n"
                f"{result.stdout}\n{result.stderr}"
            )
        self.token = found.group(1)

    def _seed(self, name: str) -> str:
        """Create the admin's repository `name` and push the demo repository's main to it."""
        bare = self.state_dir / "seed" / f"{name}.git"
        commit = subprocess.run(
            ["bash", str(DEMO_ORIGIN), str(DEMO_SOURCE), str(bare)],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.split()[-1]
        self.api(
            "POST",
            "/user/repos",
            {"name": name, "default_branch": "main", "auto_init": False, "private": False},
        )
        self.git("push", "--quiet", self.clone_url(name), "main", cwd=bare)
        self.wait_for_branch("main", commit, repo=name)
        return commit

    def wait_for_branch(
        self, branch: str, sha: str, *, repo: str = SEED_REPO, timeout: float = 30.0
    ) -> None:
        """Poll until Gitea has processed a push: `branch` of `repo` is at `sha`.

        Gitea updates its database from a push in a queue after git returns; until then
        the repository can still read as empty (and 1.27.3's branch API panics on it)."""
        full = self.full_name(repo)

        def pushed() -> bool:
            if self.api("GET", f"/repos/{full}")["empty"]:
                return False
            try:
                answer = self.api("GET", f"/repos/{full}/branches/{branch}")
            except ForgeError as e:
                if e.status == 404:
                    return False
                raise
            return bool(answer["commit"]["id"] == sha)

        _wait(f"branch {branch} of {full} at {sha}", pushed, timeout, lambda: self.log_tail(20))

    # -- clients ---------------------------------------------------------------------
    def api(self, method: str, path: str, body: Any = None) -> Any:
        """Call `/api/v1{path}` as the admin; the decoded JSON answer (None when empty).
        Raises ForgeError on an error status."""
        url = f"{self.base_url}/api/v1{path}"
        request = urllib.request.Request(
            url,
            method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={
                "Authorization": f"token {self.token}",
                "Accept": "application/json",
                "Content-Type": "application/json",
            },
        )
        try:
            with _OPENER.open(request, timeout=30) as response:
                raw = response.read()
        except urllib.error.HTTPError as e:
            raise ForgeError(method, url, e.code, e.read().decode(errors="replace")) from e
        return json.loads(raw) if raw else None

    def pulls(self, repo: str = SEED_REPO, state: str = "all") -> list[PullRequest]:
        """The repository's pull requests (`state`: open, closed or all), newest first."""
        answer = self.api("GET", f"/repos/{self.full_name(repo)}/pulls?state={state}&limit=50")
        return [PullRequest.model_validate(item) for item in answer]

    def open_pull(
        self, head: str, *, repo: str = SEED_REPO, base: str = "main", title: str, body: str = ""
    ) -> PullRequest:
        """Open a pull request from branch `head` into `base` as the admin."""
        answer = self.api(
            "POST",
            f"/repos/{self.full_name(repo)}/pulls",
            {"head": head, "base": base, "title": title, "body": body},
        )
        return PullRequest.model_validate(answer)

    def private_copy(self, prefix: str) -> tuple[str, str]:
        """A private copy of the seed repository named `prefix-<random>`, and a read-only
        token that can fetch it: (name, token). A clone without a credential fails."""
        name = f"{prefix}-{uuid.uuid4().hex[:8]}"
        self.api("POST", "/user/repos", {"name": name, "private": True, "default_branch": "main"})
        seed = self.state_dir / "seed" / f"{SEED_REPO}.git"
        self.git("push", "--quiet", self.clone_url(name), "main", cwd=seed)
        self.wait_for_branch("main", self.seed_commit, repo=name)
        # Gitea mints tokens for a user only with that user's password (HTTP Basic).
        login = base64.b64encode(f"{self.admin}:{self.password}".encode()).decode()
        request = urllib.request.Request(
            f"{self.base_url}/api/v1/users/{self.admin}/tokens",
            method="POST",
            data=json.dumps({"name": f"read-{name}", "scopes": ["read:repository"]}).encode(),
            headers={"Authorization": f"Basic {login}", "Content-Type": "application/json"},
        )
        with _OPENER.open(request, timeout=30) as response:
            return name, str(json.loads(response.read())["sha1"])

    @property
    def auth_header(self) -> str:
        """HTTP Basic with the admin's token as password: how git authenticates to Gitea."""
        pair = base64.b64encode(f"{self.admin}:{self.token}".encode()).decode()
        return f"Authorization: Basic {pair}"

    def git(
        self, *args: str, cwd: Path | None = None, auth: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Run git; with `auth` it sends the admin's token (in a header, not in any URL or
        config a clone keeps). Raises CalledProcessError, whose stderr is git's message."""
        config = ["-c", f"http.extraHeader={self.auth_header}"] if auth else []
        return subprocess.run(
            ["git", *config, *args],
            cwd=cwd,
            env=git_env(),
            check=True,
            capture_output=True,
            text=True,
        )

    # -- logs --------------------------------------------------------------------------
    def log_tail(self, lines: int = 30) -> str:
        """The last lines of Gitea's log, for failure reports."""
        if not self.log_path.exists():
            return f"(no log at {self.log_path})"
        tail = self.log_path.read_text(errors="replace").splitlines()[-lines:]
        return f"----- {self.log_path} (last {len(tail)} lines) -----\n" + "\n".join(tail)
