"""Start a throwaway PostgreSQL server on loopback, for tests and benchmarks.

Uses Debian's server binaries (``hack/install-postgres.sh`` installs them); installs
nothing itself. PostgreSQL refuses to run as root, so as root the data directory is
given to the ``postgres`` system user and the server runs under ``runuser``. TCP only
(no Unix socket), authentication ``trust`` on 127.0.0.1, superuser ``postgres``.

    python hack/pgtemp.py DIR   # start, print the admin URL, stop on Ctrl-C
"""

from __future__ import annotations

import contextlib
import dataclasses
import glob
import os
import pathlib
import pwd
import shutil
import socket
import subprocess
import sys
import time


class UnavailableError(RuntimeError):
    """The server cannot be started here; the message says how to fix that."""


@dataclasses.dataclass
class Server:
    data: pathlib.Path
    port: int
    bindir: pathlib.Path
    as_user: list[str]

    @property
    def admin_url(self) -> str:
        return self.url("postgres")

    def url(self, database: str, user: str = "postgres") -> str:
        return f"postgresql://{user}@127.0.0.1:{self.port}/{database}"

    def stop(self) -> None:
        subprocess.run(
            [
                *self.as_user,
                str(self.bindir / "pg_ctl"),
                "-D",
                str(self.data),
                "-m",
                "immediate",
                "stop",
            ],
            capture_output=True,
            check=False,
        )


def bindir() -> pathlib.Path:
    found = shutil.which("pg_ctl")
    if found:
        return pathlib.Path(os.path.realpath(found)).parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    if candidates:
        return pathlib.Path(candidates[-1]).parent
    raise UnavailableError(
        "PostgreSQL server binaries (pg_ctl, initdb) not found: run 'make test-deps' "
        "(hack/install-postgres.sh installs Debian's postgresql package)"
    )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def start(directory: pathlib.Path, *, durable: bool = True) -> Server:
    """Initialise and start a server in ``directory``; ``durable=False`` turns fsync off."""
    binaries = bindir()
    as_user: list[str] = []
    data = directory / "data"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            raise UnavailableError(
                "running as root and there is no 'postgres' user to run the server as: "
                "run 'make test-deps'"
            ) from None
        as_user = ["runuser", "-u", "postgres", "--"]
        directory.mkdir(parents=True, exist_ok=True)
        shutil.chown(directory, "postgres")
    log = directory / "server.log"
    initdb = subprocess.run(
        [
            *as_user,
            str(binaries / "initdb"),
            "-D",
            str(data),
            "-U",
            "postgres",
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--no-sync",
            "--locale=C",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if initdb.returncode != 0:
        raise UnavailableError(f"initdb failed: {initdb.stderr.strip()}")
    options = [
        "-c",
        "listen_addresses=127.0.0.1",
        "-c",
        "unix_socket_directories=",
        "-c",
        "max_connections=200",
    ]
    if not durable:
        options += ["-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"]
    for _attempt in range(5):
        port = _free_port()
        started = subprocess.run(
            [
                *as_user,
                str(binaries / "pg_ctl"),
                "-D",
                str(data),
                "-l",
                str(log),
                "-w",
                "-t",
                "60",
                "-o",
                " ".join([*options, "-p", str(port)]),
                "start",
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if started.returncode == 0:
            server = Server(data, port, binaries, as_user)
            _wait(server)
            return server
        time.sleep(0.2)
    tail = log.read_text(errors="replace")[-2000:] if log.exists() else started.stderr
    raise UnavailableError(f"pg_ctl start failed: {tail.strip()}")


def _wait(server: Server) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", server.port)):
            return
        time.sleep(0.1)
    raise UnavailableError(f"the server on port {server.port} did not accept connections")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python hack/pgtemp.py DIRECTORY")
    running = start(pathlib.Path(sys.argv[1]).resolve())
    print(running.admin_url, flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        running.stop()
