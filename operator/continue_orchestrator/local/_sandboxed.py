"""The runner in the sandbox: the same ``python -m continue_orchestrator.runner`` a pod runs.

In gVisor the run directory and the workspace are bound at the pod's paths, with the
Continue CLI and the Python the runner needs; the repository is not (even a ``file://``
origin is cloned through the gateway's git endpoint, as in a pod). With ``--sandbox
none`` the runner runs on the host with host paths. While it
runs, progress is told every quarter second; Ctrl-C kills the runner's process groups
before the sandbox's network is torn down under it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pathlib
import signal
import sys

from continue_orchestrator import runner
from continue_orchestrator.local import _context, _progress, _sandbox

_SANDBOX_PATH = "/usr/local/bin:/usr/bin:/bin"


async def execute(
    run: _context.LocalRun,
    box: _sandbox.Sandbox,
    bundle: runner.RunBundle,
    cn: str,
    progress: _progress.Progress,
) -> _sandbox.Completed:
    """Run the runner in ``box`` until it exits, telling ``progress`` meanwhile."""
    argv = [sys.executable, "-m", "continue_orchestrator.runner"]
    timeout = float(run.inputs.run.spec.timeout_seconds + 120)
    if run.options.sandbox == "none":
        (run.root / "home").mkdir(exist_ok=True)
        env = {"PATH": os.environ.get("PATH", _SANDBOX_PATH),
               runner.BUNDLE_FILE_ENV: str(run.run_dir / "bundle.json")}  # fmt: skip
        binds: list[_sandbox.Bind] = []
    else:
        pod_run_dir = str(pathlib.PurePosixPath(str(bundle.token_file)).parent)
        python = _sandbox.python_binds()
        pycache = await asyncio.to_thread(
            _sandbox.bytecode_cache,
            _sandbox.default_bytecode_cache(),
            [bind.source for bind in python],
        )
        env = {"PATH": _SANDBOX_PATH, runner.BUNDLE_FILE_ENV: f"{pod_run_dir}/bundle.json",
               "PYTHONPYCACHEPREFIX": str(pycache)}  # fmt: skip
        binds = [
            _sandbox.Bind(str(run.workspace), bundle.paths.workspace, True),
            _sandbox.Bind(str(run.run_dir), pod_run_dir),
            _sandbox.Bind(str(pathlib.Path(cn).parents[2])),
            *python,
            _sandbox.Bind(str(pycache)),
        ]
    run.say("sandbox: starting the runner (clone, agent, verify)")
    task = asyncio.ensure_future(
        asyncio.to_thread(
            box.run, argv, env=env, cwd="/" if binds else str(run.root),
            binds=binds, timeout=timeout,
        )
    )  # fmt: skip
    try:
        while not task.done():
            await progress.poll()
            await asyncio.wait({task}, timeout=0.25)
    except asyncio.CancelledError:
        _stop_children()
        raise
    completed = task.result()
    run.say(f"sandbox: runner exited {completed.exit_code}")
    if completed.exit_code not in (0, None) and completed.stderr:
        tail = completed.stderr.decode(errors="replace").strip().splitlines()[-8:]
        for line in tail:
            run.say(f"  | {line}")
    return completed


def _stop_children() -> None:
    """Kill the process groups of this process's own children (the sandboxed runner).

    ``Sandbox.run`` blocks in a worker thread; on Ctrl-C nothing else would stop it
    before the sandbox's network is torn down under it.
    """
    me = os.getpid()
    for entry in pathlib.Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == me:
            with contextlib.suppress(OSError):
                os.killpg(int(entry.name), signal.SIGKILL)
