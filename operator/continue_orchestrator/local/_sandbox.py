"""The local sandbox: gVisor in a network namespace whose only peer is the gateway.

Local mode has no cluster to give it a gVisor pod and a NetworkPolicy, so it builds
the same fences on one machine (as root):

- network: a fresh network namespace joined to the host by one veth pair, with no
  default route, IPv6 off, and an nftables table on the host end that drops everything
  from the sandbox except TCP to the ports ``allow_tcp`` opens (the gateway). Without
  that table the host end would expose every host service listening on 0.0.0.0.
- kernel: the command runs under ``runsc --rootless do`` (gVisor) inside that namespace,
  entered with ``nsenter --net`` (``ip netns exec`` remounts /sys and breaks runsc).
- filesystem: a root assembled in a private mount namespace from read-only binds of
  the system directories and the caller's ``Bind`` list, a minimal /etc, an empty
  /tmp, and nothing else: host homes, keys, ledgers and the caller's secrets are not
  in it. Writable binds (the workspace) write through to the host.

Everything is torn down on ``close`` (also on Ctrl-C through the context manager), and
leftovers of a killed process are removed by the next ``Sandbox`` (``cleanup_stale``).
``mode="none"`` runs the command directly: an explicit, loudly labelled opt-out.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import os
import pathlib
import py_compile
import random
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Literal

from continue_orchestrator import errors
from continue_orchestrator.runner import _process

Mode = Literal["gvisor", "none"]
Completed = _process.Completed
"""How a command run in the sandbox ended: exit code, deadline, output tails."""

NETNS_DIR = pathlib.Path("/var/run/netns")
_PREFIX = "cosbx"
_SYSTEM_DIRS = ("usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32", "opt")
_ETC_ENTRIES = (
    "passwd", "group", "nsswitch.conf", "ld.so.cache", "ld.so.conf", "ld.so.conf.d",
    "ssl", "ca-certificates", "ca-certificates.conf", "alternatives", "localtime",
    "mime.types", "python3", "python3.11", "gitconfig",
)  # fmt: skip
RUNSC_HELP = (
    "install gVisor: 'apt-get install runsc' on Debian 12 or later (make sandbox-deps), "
    "or see https://gvisor.dev/docs/user_guide/install/; "
    "'--sandbox none' runs without any isolation"
)
NONE_WARNING = (
    "WARNING: --sandbox none: the agent runs directly on this machine with your user's "
    "files and network. No gVisor, no network fence. Use only for code you trust."
)


@dataclasses.dataclass(frozen=True)
class Bind:
    """A host path shown at ``target`` inside the sandbox (same path when unset)."""

    source: str
    target: str | None = None
    writable: bool = False

    @property
    def inside(self) -> str:
        return self.target or self.source


def python_binds() -> list[Bind]:
    """Read-only binds that let this project's Python (venv, interpreter, source) run inside."""
    package_parent = pathlib.Path(__file__).resolve().parents[2]
    paths = dict.fromkeys(
        os.path.realpath(p) for p in (sys.prefix, sys.base_prefix, str(package_parent))
    )
    system = tuple(f"/{name}" for name in _SYSTEM_DIRS)
    return [
        Bind(path)
        for path in paths
        if not any(path == d or path.startswith(d + "/") for d in system)
    ]


def default_bytecode_cache() -> pathlib.Path:
    """Where ``bytecode_cache`` keeps the sandbox's bytecode on this machine."""
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return pathlib.Path(cache, "continue-orchestrator", "pycache")


def bytecode_cache(directory: pathlib.Path, roots: Sequence[str]) -> pathlib.Path:
    """Compiled bytecode, for the sandbox's ``PYTHONPYCACHEPREFIX``, of what runs in it.

    The sandbox sees the interpreter, venv and package source read-only, so without this
    every sandboxed Python recompiles any module whose ``__pycache__`` entry is missing
    or stale (after each edit, or always where bytecode is not written) on every run:
    about a second of CPU for the runner's imports. The cache holds this process's loaded
    modules and the package's source under ``roots``; entries are timestamp-checked pycs,
    so the interpreter ignores any that no longer match their source. Bind the result
    read-only.
    """
    directory.mkdir(parents=True, exist_ok=True)
    package = pathlib.Path(__file__).resolve().parents[1]
    sources = {str(path) for path in package.rglob("*.py")}
    for module in list(sys.modules.values()):
        source = getattr(module, "__file__", None)
        if isinstance(source, str) and source.endswith(".py"):
            sources.add(source)
    inside = tuple(root.rstrip("/") + "/" for root in roots)
    for source in sorted(sources):
        if source.startswith(inside):
            _cache_one(directory, source)
    return directory


def _cache_one(directory: pathlib.Path, source: str) -> None:
    head, name = os.path.split(source)
    pyc = f"{name[:-3]}.{sys.implementation.cache_tag}.pyc"
    target = directory / head.lstrip("/") / pyc
    try:
        stat = os.stat(source)
        with contextlib.suppress(FileNotFoundError):
            # Written after the source last changed: the interpreter checks the rest.
            if os.stat(target).st_mtime_ns >= stat.st_mtime_ns:
                return
        target.parent.mkdir(parents=True, exist_ok=True)
        beside = os.path.join(head, "__pycache__", pyc)
        if _fresh(pathlib.Path(beside), stat):
            temporary = target.with_name(f".{pyc}.{os.getpid()}")
            shutil.copyfile(beside, temporary)
            os.replace(temporary, target)
        else:
            py_compile.compile(
                source, cfile=str(target), dfile=source, doraise=True,
                invalidation_mode=py_compile.PycInvalidationMode.TIMESTAMP,
            )  # fmt: skip
    except (OSError, py_compile.PyCompileError, SyntaxError, ValueError):
        pass  # the sandboxed interpreter compiles it itself, as it would without a cache


def _fresh(pyc: pathlib.Path, source: os.stat_result) -> bool:
    """Whether ``pyc`` is a timestamp pyc of this interpreter that matches ``source``."""
    try:
        with pyc.open("rb") as handle:
            header = handle.read(16)
    except OSError:
        return False
    return (
        len(header) == 16
        and header[:4] == importlib.util.MAGIC_NUMBER
        and header[4:8] == b"\0\0\0\0"
        and int.from_bytes(header[8:12], "little") == int(source.st_mtime) & 0xFFFFFFFF
        and int.from_bytes(header[12:16], "little") == source.st_size & 0xFFFFFFFF
    )


def runsc_path() -> str:
    """The runsc binary, or a SandboxError saying how to get it."""
    found = shutil.which("runsc") or shutil.which("runsc", path="/usr/sbin:/usr/local/sbin")
    if not found:
        raise errors.SandboxError("gVisor's runsc is not installed", where="local", fix=RUNSC_HELP)
    return found


class Sandbox:
    """One sandbox: create with ``with Sandbox() as box``, then ``box.run(...)``.

    ``host_address`` is where the gateway must listen (the host end of the veth pair);
    ``allow_tcp(port)`` opens that one port to the sandbox.
    """

    def __init__(self, *, mode: Mode = "gvisor") -> None:
        self.mode: Mode = mode
        self.host_address = "127.0.0.1"
        self.sandbox_address = ""
        self.name = ""
        self._host_if = ""
        self._scratch: pathlib.Path | None = None
        self._ports: list[int] = []
        self._runsc = ""

    def __enter__(self) -> Sandbox:
        self.open()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def open(self) -> None:
        if self.mode == "none":
            print(NONE_WARNING, file=sys.stderr, flush=True)
            return
        self._runsc = runsc_path()
        for tool in ("ip", "nsenter", "unshare", "nft", "mount"):
            if not shutil.which(tool) and not shutil.which(tool, path="/usr/sbin:/sbin"):
                raise errors.SandboxError(
                    f"{tool} is not installed",
                    where="local sandbox",
                    fix="make sandbox-deps (iproute2, util-linux, nftables)",
                )
        if os.geteuid() != 0:
            raise errors.SandboxError(
                "the local sandbox needs root to create its network namespace",
                where="local sandbox",
                fix="run as root (sudo), or use --sandbox none to run without isolation",
            )
        cleanup_stale()
        try:
            self._create_network()
            self._scratch = pathlib.Path(tempfile.mkdtemp(prefix=f"{self.name}-"))
        except BaseException:
            self.close()
            raise

    def _create_network(self) -> None:
        for _ in range(20):
            tag = f"{os.getpid()}-{random.randrange(16**4):04x}"
            index = random.randrange(1, 16384)
            third, fourth = index >> 6, (index & 63) * 4
            self.name = f"{_PREFIX}-{tag}"
            self._host_if = f"cs{tag.split('-')[1]}{os.getpid() % 1000:03d}h"
            self.host_address = f"10.213.{third}.{fourth + 1}"
            self.sandbox_address = f"10.213.{third}.{fourth + 2}"
            if not _address_in_use(self.host_address):
                break
        else:
            raise errors.SandboxError("no free 10.213.0.0/16 address pair", where="local sandbox")
        peer = self._host_if[:-1] + "s"
        _ip("netns", "add", self.name)
        _ip("link", "add", self._host_if, "type", "veth", "peer", "name", peer)
        _sysctl(f"net.ipv6.conf.{self._host_if}.disable_ipv6", "1")
        _ip("link", "set", peer, "netns", self.name)
        _nft(_FIREWALL.format(table=self._table, interface=self._host_if))
        _ip("addr", "add", f"{self.host_address}/30", "dev", self._host_if)
        _ip("link", "set", self._host_if, "up")
        _ip("-n", self.name, "link", "set", "lo", "up")
        _ip("-n", self.name, "addr", "add", f"{self.sandbox_address}/30", "dev", peer)
        _ip("-n", self.name, "link", "set", peer, "up")
        _run(["nsenter", f"--net={NETNS_DIR / self.name}", "sysctl", "-q", "-w",
              "net.ipv6.conf.all.disable_ipv6=1"], "disable IPv6 in the sandbox")  # fmt: skip

    @property
    def _table(self) -> str:
        return self.name.replace("-", "_")

    def allow_tcp(self, port: int) -> None:
        """Let the sandbox open TCP connections to ``host_address:port``."""
        if self.mode == "none" or port in self._ports:
            return
        _nft(
            f"insert rule inet {self._table} input iifname {self._host_if} "
            f"ip daddr {self.host_address} tcp dport {int(port)} accept\n"
        )
        self._ports.append(port)

    def run(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str],
        cwd: str,
        binds: Sequence[Bind] = (),
        timeout: float,
        limit: int = 65536,
    ) -> _process.Completed:
        """Run ``argv`` in the sandbox with exactly ``env``; output tails are kept."""
        if self.mode == "none":
            return _process.run(argv, cwd=cwd, env=env, timeout=timeout, limit=limit)
        if self._scratch is None:
            raise errors.SandboxError("the sandbox is not open", where=self.name)
        root = pathlib.Path(tempfile.mkdtemp(prefix="root-", dir=self._scratch))
        script = _mount_script(root, binds)
        inner = [
            "nsenter", f"--net={NETNS_DIR / self.name}",
            self._runsc, "--rootless", "--network=host",
            f"--root={self._scratch / 'runsc-state'}",
            "do", "-quiet", "-force-overlay=false", "-root", str(root), "-cwd", cwd,
            "--", *argv,
        ]  # fmt: skip
        script += "exec " + shlex.join(inner) + "\n"
        completed = _process.run(
            ["unshare", "--mount", "--propagation", "private", "/bin/sh", "-ec", script],
            cwd="/",
            env=env,
            timeout=timeout,
            limit=limit,
        )
        with contextlib.suppress(OSError):
            shutil.rmtree(root)
        return completed

    def close(self) -> None:
        """Remove the firewall table, the namespace, the veth pair and scratch files."""
        if self.mode == "none":
            return
        if self._host_if:
            _nft(f"delete table inet {self._table}\n", check=False)
            _ip("link", "del", self._host_if, check=False)
        if self.name:
            _ip("netns", "del", self.name, check=False)
        if self._scratch is not None:
            shutil.rmtree(self._scratch, ignore_errors=True)
            self._scratch = None


_FIREWALL = """\
table inet {table} {{
  chain input {{
    type filter hook input priority -150; policy accept;
    iifname "{interface}" meta l4proto tcp reject with tcp reset
    iifname "{interface}" drop
  }}
  chain forward {{
    type filter hook forward priority -150; policy accept;
    iifname "{interface}" drop
    oifname "{interface}" drop
  }}
}}
"""


def _mount_script(root: pathlib.Path, binds: Sequence[Bind]) -> str:
    lines = ["set -e"]
    q = shlex.quote
    for name in _SYSTEM_DIRS:
        host = pathlib.Path("/") / name
        if host.is_symlink():
            lines.append(f"ln -s {q(os.readlink(host))} {q(str(root / name))}")
        elif host.is_dir():
            lines += _bind_lines(str(host), root / name, writable=False)
    etc = root / "etc"
    lines.append(f"mkdir -p {q(str(etc))} {q(str(root / 'tmp'))} {q(str(root / 'dev'))}")
    lines.append(f"chmod 1777 {q(str(root / 'tmp'))}")
    lines.append(f"printf '127.0.0.1 localhost\\n' > {q(str(etc / 'hosts'))}")
    lines.append(f": > {q(str(etc / 'resolv.conf'))}")
    for entry in _ETC_ENTRIES:
        host = pathlib.Path("/etc") / entry
        if host.exists():
            lines += _bind_lines(str(host), etc / entry, writable=False)
    for bind in binds:
        if not os.path.exists(bind.source):
            raise errors.SandboxError(
                "a path to bind into the sandbox does not exist", where=bind.source
            )
        inside = pathlib.PurePosixPath(bind.inside)
        if not inside.is_absolute() or ".." in inside.parts:
            raise errors.SandboxError("bind targets must be absolute", where=bind.inside)
        lines += _bind_lines(bind.source, root / inside.relative_to("/"), writable=bind.writable)
    return "\n".join(lines) + "\n"


def _bind_lines(source: str, target: pathlib.Path, *, writable: bool) -> list[str]:
    q = shlex.quote
    make = (
        f"mkdir -p {q(str(target))}"
        if os.path.isdir(source)
        else (f"mkdir -p {q(str(target.parent))} && touch {q(str(target))}")
    )
    lines = [make, f"mount --rbind {q(source)} {q(str(target))}"]
    if not writable:
        lines.append(f"mount -o remount,bind,ro {q(str(target))}")
    return lines


def cleanup_stale() -> list[str]:
    """Remove namespaces, veths and tables left by sandboxes whose process is gone."""
    removed: list[str] = []
    if not NETNS_DIR.is_dir():
        return removed
    for entry in NETNS_DIR.iterdir():
        match = re.fullmatch(rf"{_PREFIX}-(\d+)-([0-9a-f]{{4}})", entry.name)
        if not match or _alive(int(match.group(1))):
            continue
        pid, tag = int(match.group(1)), match.group(2)
        _nft(f"delete table inet {entry.name.replace('-', '_')}\n", check=False)
        _ip("link", "del", f"cs{tag}{pid % 1000:03d}h", check=False)
        _ip("netns", "del", entry.name, check=False)
        removed.append(entry.name)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _address_in_use(address: str) -> bool:
    result = subprocess.run(["ip", "-o", "-4", "addr", "show"], capture_output=True, text=True)
    return f" {address}/" in result.stdout


def _run(argv: Sequence[str], what: str, *, check: bool = True, stdin: str | None = None) -> None:
    result = subprocess.run(list(argv), input=stdin, capture_output=True, text=True)
    if check and result.returncode != 0:
        raise errors.SandboxError(
            f"cannot {what}: {result.stderr.strip() or f'exit {result.returncode}'}",
            where="local sandbox",
            fix="run as root with iproute2 and nftables installed (make sandbox-deps)",
        )


def _ip(*args: str, check: bool = True) -> None:
    _run(["ip", *args], f"run ip {' '.join(args)}", check=check)


def _nft(ruleset: str, *, check: bool = True) -> None:
    _run(["nft", "-f", "-"], "load the sandbox firewall", check=check, stdin=ruleset)


def _sysctl(key: str, value: str) -> None:
    _run(["sysctl", "-q", "-w", f"{key}={value}"], f"set {key}", check=False)
