"""The local sandbox, attacked from inside: only the gateway's port answers, the host's
files are not there, and nothing is left behind. Then the whole runner, with the real
Continue CLI, inside gVisor talking to a gateway on the host end."""

from __future__ import annotations

import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator

import pytest
from tests.runner_support import (
    Origin,
    StandInGateway,
    bundle_for,
    cn_path,
    origin,
    stand_in_gateway,
)

from continue_orchestrator import errors, local, runner

__all__ = ["cn_path", "origin", "stand_in_gateway"]

pytestmark = [
    pytest.mark.sandbox,
    pytest.mark.skipif(os.geteuid() != 0, reason="the local sandbox needs root"),
]

PATH = "/usr/local/bin:/usr/bin:/bin"
OTHER_HOST_ADDRESS = "10.213.255.77"


@pytest.fixture
def box() -> Iterator[local.Sandbox]:
    with local.Sandbox() as sandbox:
        yield sandbox


def _listen(host: str) -> socket.socket:
    server = socket.create_server((host, 0))
    server.listen()
    return server


def _probe(box: local.Sandbox, targets: list[tuple[str, int]], before: str = "") -> dict[str, str]:
    code = textwrap.dedent(f"""
        import json, socket, subprocess
        {before}
        results = {{}}
        for host, port in {targets!r}:
            try:
                socket.create_connection((host, port), timeout=3).close()
                results[f"{{host}}:{{port}}"] = "connected"
            except OSError as error:
                results[f"{{host}}:{{port}}"] = type(error).__name__
        print(json.dumps(results))
    """)
    done = box.run(["/usr/bin/python3", "-c", code], env={"PATH": PATH}, cwd="/", timeout=120)
    assert done.exit_code == 0, done.stderr.decode()
    result: dict[str, str] = json.loads(done.stdout.decode().strip().splitlines()[-1])
    return result


@pytest.fixture
def other_host_address() -> Iterator[str]:
    """A second address of this machine (on its loopback), which the sandbox must not reach."""
    subprocess.run(["ip", "addr", "add", f"{OTHER_HOST_ADDRESS}/32", "dev", "lo"], check=True)
    try:
        yield OTHER_HOST_ADDRESS
    finally:
        subprocess.run(["ip", "addr", "del", f"{OTHER_HOST_ADDRESS}/32", "dev", "lo"], check=False)


def test_only_the_gateway_port_answers(box: local.Sandbox, other_host_address: str) -> None:
    gateway = _listen(box.host_address)
    everywhere = _listen("0.0.0.0")
    loopback = _listen("127.0.0.1")
    gateway_port = gateway.getsockname()[1]
    box.allow_tcp(gateway_port)
    port = everywhere.getsockname()[1]
    targets = [
        (box.host_address, gateway_port),
        (box.host_address, port),
        ("127.0.0.1", loopback.getsockname()[1]),
        (other_host_address, port),
        (other_host_address, gateway_port),
    ]
    # The attacker first tries to route around the fence; it must not matter if it can.
    attack = (
        f"subprocess.run(['/usr/sbin/ip', 'route', 'add', 'default', 'via', "
        f"'{box.host_address}'], capture_output=True)"
    )
    results = _probe(box, targets, before=attack)
    assert results.pop(f"{box.host_address}:{gateway_port}") == "connected"
    assert all(outcome != "connected" for outcome in results.values()), results
    for server in (gateway, everywhere, loopback):
        server.close()


def test_host_files_are_not_in_the_sandbox(box: local.Sandbox, tmp_path: pathlib.Path) -> None:
    writable, readonly = tmp_path / "rw", tmp_path / "ro"
    writable.mkdir()
    readonly.mkdir()
    (readonly / "input").write_text("given")
    secret_home = pathlib.Path.home() / ".cache"
    code = textwrap.dedent(f"""
        import os
        print("home-visible", os.path.exists({str(secret_home)!r}))
        print("shadow-visible", os.path.exists("/etc/shadow"))
        print("input", open("/in/input").read())
        open("/work/out", "w").write("made inside")
        for path in ("/usr/planted", "/in/planted"):
            try:
                open(path, "w")
                print("wrote", path)
            except OSError as error:
                print("refused", path, error.errno)
    """)
    done = box.run(
        ["/usr/bin/python3", "-c", code],
        env={"PATH": PATH},
        cwd="/work",
        binds=[
            local.Bind(str(writable), "/work", writable=True),
            local.Bind(str(readonly), "/in"),
        ],
        timeout=120,
    )
    lines = done.stdout.decode().splitlines()
    assert done.exit_code == 0, done.stderr.decode()
    assert "home-visible False" in lines and "shadow-visible False" in lines
    assert "input given" in lines
    assert not [line for line in lines if line.startswith("wrote")]
    assert (writable / "out").read_text() == "made inside"
    assert not (readonly / "planted").exists()


def _leftovers(name: str) -> list[str]:
    found = []
    if (pathlib.Path("/var/run/netns") / name).exists():
        found.append("netns")
    tables = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True).stdout
    if name.replace("-", "_") in tables:
        found.append("nft table")
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    if f"cs{name.split('-')[2]}" in links:
        found.append("veth")
    return found


def test_close_and_interrupts_leave_nothing_behind() -> None:
    with local.Sandbox() as sandbox:
        name = sandbox.name
        assert _leftovers(name) == ["netns", "nft table", "veth"]
    assert _leftovers(name) == []

    with pytest.raises(KeyboardInterrupt), local.Sandbox() as sandbox:
        name = sandbox.name
        raise KeyboardInterrupt
    assert _leftovers(name) == []

    # A process killed outright cannot clean up; the next sandbox does.
    child = subprocess.Popen(
        [sys.executable, "-c",
         "from continue_orchestrator import local; import time\n"
         "box = local.Sandbox(); box.open(); print(box.name, flush=True); time.sleep(600)"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert child.stdout is not None
    name = child.stdout.readline().strip()
    assert _leftovers(name) == ["netns", "nft table", "veth"]
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert name in local.cleanup_stale()
    assert _leftovers(name) == []


def test_missing_runsc_says_how_to_get_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(errors.SandboxError) as raised:
        local.Sandbox().open()
    assert "apt-get install runsc" in raised.value.message
    assert "--sandbox none" in raised.value.message


def test_sandbox_none_is_loud(capsys: pytest.CaptureFixture[str], tmp_path: pathlib.Path) -> None:
    with local.Sandbox(mode="none") as sandbox:
        done = sandbox.run(["/bin/sh", "-c", "echo direct"], env={"PATH": PATH}, cwd=str(tmp_path),
                           timeout=30)  # fmt: skip
    assert done.stdout == b"direct\n"
    assert "WARNING: --sandbox none" in capsys.readouterr().err


WRITE_SCRIPT = """
turns:
  - text: "Fixing."
    tool_calls:
      - name: Write
        arguments: {filepath: src/answer.py, content: "ANSWER = 42\\n"}
  - text: "Done."
    expect: {last_role: tool}
"""


@pytest.mark.cli
def test_runner_with_the_real_cli_inside_gvisor(
    stand_in_gateway: Callable[..., StandInGateway],
    origin: Origin,
    tmp_path: pathlib.Path,
    cn_path: str,
) -> None:
    with local.Sandbox() as box:
        gateway = stand_in_gateway(WRITE_SCRIPT, host=box.host_address)
        box.allow_tcp(int(gateway.url.rsplit(":", 1)[1]))
        workspace = tmp_path / "workspace"
        workspace.mkdir()
        bundle = bundle_for(
            gateway, origin, tmp_path, cn_path,
            verify=[{"name": "answer", "command": "sh tests/check.sh"}],
            paths={"workspace": "/workspace", "home": "/tmp/home", "cn": cn_path},
        )  # fmt: skip
        (tmp_path / "bundle.json").write_text(bundle.model_dump_json(by_alias=True))
        cn_prefix = str(pathlib.Path(cn_path).parents[2])
        python = sys.executable
        done = box.run(
            [python, "-m", "continue_orchestrator.runner", "--bundle", "/run-in/bundle.json"],
            env={"PATH": PATH, runner.TOKEN_ENV: gateway.token},
            cwd="/",
            binds=[
                local.Bind(str(workspace), "/workspace", writable=True),
                local.Bind(str(tmp_path), "/run-in"),
                local.Bind(str(origin.path)),
                local.Bind(cn_prefix),
                *local.python_binds(),
            ],
            timeout=300,
        )
    stderr = done.stderr.decode()
    assert done.exit_code == 0, stderr
    assert gateway.model.failures == [] and gateway.model.exhausted
    (outcome,) = gateway.outcomes
    assert outcome["status"] == "Succeeded"
    assert outcome["verify"][0]["result"]["exitCode"] == 0
    assert [f["path"] for f in outcome["diff"]["files"]] == ["src/answer.py"]
    # The agent's system prompt saw the pinned paths, not the host's.
    assert (workspace / "src" / "answer.py").read_text() == "ANSWER = 42\n"
