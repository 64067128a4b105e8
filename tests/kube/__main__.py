"""`python -m tests.kube up|down|status`: the test control plane for people.

`make cluster-up` starts etcd, kube-apiserver and kube-controller-manager in
the background (state in ${XDG_RUNTIME_DIR:-/tmp}/continue-orchestrator-cluster)
and prints the `export KUBECONFIG=...` line; `make cluster-down` stops them.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

from tests.kube.controlplane import ControlPlane, ensure_binaries


def state_dir() -> Path:
    base = os.environ.get("XDG_RUNTIME_DIR") or "/tmp"
    return Path(base) / "continue-orchestrator-cluster"


def up() -> int:
    directory = state_dir()
    if (directory / "state.json").exists():
        cp = ControlPlane.attach(directory)
        if cp.running():
            print(f"# already running at {cp.server}", file=sys.stderr)
            print(f"export KUBECONFIG={cp.kubeconfig}")
            return 0
        cp.stop()
    shutil.rmtree(directory, ignore_errors=True)
    cp = ControlPlane(directory, ensure_binaries(), tie_to_parent=False)
    cp.start()
    print(f"# control plane up in {cp.startup_seconds:.1f}s at {cp.server}; "
          f"logs in {cp.log_dir}; kubectl in {cp.bin_dir}", file=sys.stderr)
    print("# no kubelet: pods stay Pending unless tests.kube.podexec runs them",
          file=sys.stderr)
    print(f"export KUBECONFIG={cp.kubeconfig} PATH={cp.bin_dir}:$PATH")
    return 0


def down() -> int:
    directory = state_dir()
    if not (directory / "state.json").exists():
        print("# no control plane running", file=sys.stderr)
        return 0
    ControlPlane.attach(directory).stop()
    shutil.rmtree(directory, ignore_errors=True)
    print("# control plane stopped", file=sys.stderr)
    return 0


def status() -> int:
    directory = state_dir()
    if (directory / "state.json").exists() and ControlPlane.attach(directory).running():
        print(f"running; export KUBECONFIG={directory / 'kubeconfig'}")
        return 0
    print("not running")
    return 1


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.kube", description=__doc__)
    parser.add_argument("command", choices=["up", "down", "status"])
    return {"up": up, "down": down, "status": status}[parser.parse_args().command]()


if __name__ == "__main__":
    sys.exit(main())
