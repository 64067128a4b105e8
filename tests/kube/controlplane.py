"""Start a real Kubernetes control plane on loopback for the tests.

etcd, kube-apiserver and kube-controller-manager (built by
`hack/build-k8s.sh`) run as local processes on free 127.0.0.1 ports, with
certificates generated here, RBAC authorization, a client-certificate admin in
`system:masters` and service-account signing keys, the way controller-runtime's
envtest starts them. kube-controller-manager runs too, for garbage collection,
namespace deletion, service accounts and their tokens, so the ServiceAccount
admission plugin stays on. There is no kubelet: see `tests.kube.podexec`, or
`tests.kube.node` for a real one joined to this control plane.
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from tests.kube.certs import CertAuthority, Pair, service_account_keys
from tests.kube.rest import ApiError, KubeREST

REPO_ROOT = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO_ROOT / "hack" / "build-k8s.sh"
COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager")
SERVICE_CIDR = "10.96.0.0/16"


class KubectlError(Exception):
    """kubectl exited non-zero; carries its stderr, which holds the server's message."""

    def __init__(self, args: list[str], result: subprocess.CompletedProcess[str]) -> None:
        self.result = result
        self.stderr = result.stderr
        super().__init__(f"kubectl {' '.join(args)} exited {result.returncode}: {result.stderr}")


def _build_dirs() -> tuple[Path, Path]:
    out = subprocess.run(
        ["bash", str(BUILD_SCRIPT), "--print-all"], check=True, capture_output=True, text=True
    ).stdout.split()
    return Path(out[0]), Path(out[1])


def ensure_binaries() -> Path:
    """Return the directory holding etcd, kube-apiserver, kube-controller-manager, kubectl
    and helm, building whatever is missing first (cold: tens of minutes; progress on stderr)."""
    k8s_dir, helm_dir = _build_dirs()
    needed = [k8s_dir / n for n in (*COMPONENTS, "kubectl", ".stamp")]
    needed += [helm_dir / "helm", helm_dir / ".stamp"]
    if not all(p.exists() for p in needed):
        print(f"[tests.kube] building the control plane into {k8s_dir}", file=sys.stderr)
        subprocess.run(["bash", str(BUILD_SCRIPT)], check=True, stdout=sys.stderr)
    return k8s_dir


def helm_binary() -> Path:
    """The helm built by `hack/build-k8s.sh` (call `ensure_binaries` first)."""
    return _build_dirs()[1] / "helm"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _die_with_parent() -> None:
    """In the child: get SIGTERM when the parent (pytest) dies, even by SIGKILL."""
    pr_set_pdeathsig = 1
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def _wait(what: str, probe: Callable[[], bool], timeout: float, on_fail: Callable[[], str]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if probe():
            return
        time.sleep(0.1)
    raise TimeoutError(f"{what} not ready after {timeout:.0f}s\n{on_fail()}")


@dataclass
class _Proc:
    name: str
    popen: subprocess.Popen[bytes] | None
    pid: int
    log: Path


@dataclass
class ControlPlane:
    """etcd + kube-apiserver + kube-controller-manager on loopback, state in `state_dir`.

    `start()` brings it up and `stop()` tears it down; logs stay in `state_dir/logs`.
    With `tie_to_parent` the processes also die when this Python process dies.
    """

    state_dir: Path
    bin_dir: Path = field(default_factory=ensure_binaries)
    tie_to_parent: bool = True
    ports: dict[str, int] = field(default_factory=dict)
    procs: list[_Proc] = field(default_factory=list)
    startup_seconds: float = 0.0
    _rest: KubeREST | None = None

    # -- paths -----------------------------------------------------------------
    @property
    def kubeconfig(self) -> Path:
        """The admin kubeconfig (client certificate in `system:masters`)."""
        return self.state_dir / "kubeconfig"

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.ports['apiserver']}"

    @property
    def pki(self) -> Path:
        return self.state_dir / "pki"

    @property
    def log_dir(self) -> Path:
        return self.state_dir / "logs"

    @property
    def rest(self) -> KubeREST:
        """A shared small JSON client as admin (see `tests.kube.rest`)."""
        if self._rest is None:
            self._rest = self.new_rest()
        return self._rest

    def new_rest(self) -> KubeREST:
        """A JSON client of its own (its `close()` ends only its own watches)."""
        return KubeREST(
            self.server, self.pki / "ca.crt", self.pki / "admin.crt", self.pki / "admin.key"
        )

    # -- lifecycle ---------------------------------------------------------------
    def start(self, timeout: float = 90.0) -> None:
        t0 = time.monotonic()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(exist_ok=True)
        for name in ("etcd", "etcd-peer", "apiserver", "controller-manager"):
            self.ports[name] = free_port()
        ca = CertAuthority(self.pki)
        serving = ca.issue(
            "apiserver",
            "kube-apiserver",
            server_hosts=(
                "127.0.0.1", "localhost", "10.96.0.1", "kubernetes", "kubernetes.default",
                "kubernetes.default.svc", "kubernetes.default.svc.cluster.local",
            ),
        )
        admin = ca.issue("admin", "admin", orgs=("system:masters",))
        kcm = ca.issue("controller-manager", "system:kube-controller-manager")
        # How the API server reaches a real node's kubelet (logs, exec): tests.kube.node
        ca.issue("apiserver-kubelet-client", "kube-apiserver-kubelet-client",
                 orgs=("system:masters",))
        sa = service_account_keys(self.pki)
        self._write_kubeconfig(self.kubeconfig, admin, "admin")
        kcm_kubeconfig = self.state_dir / "controller-manager.kubeconfig"
        self._write_kubeconfig(kcm_kubeconfig, kcm, "system:kube-controller-manager")
        try:
            self._start_etcd(timeout)
            # In sequence: kube-controller-manager gives up if the API server is
            # not healthy within 20 s, which a loaded 2-core machine can exceed.
            api = self._spawn_apiserver(serving, sa, ca.pair)
            self._wait_apiserver(api, timeout)
            kcm = self._spawn_controller_manager(kcm_kubeconfig, sa, ca.pair)
            self._wait_controller_manager(kcm, timeout)
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - t0
        self._save_state()

    def stop(self, grace: float = 3.0) -> None:
        """Terminate the processes one by one, newest first (the API server needs etcd
        to shut down quickly), killing any that outlive `grace` seconds."""
        for proc in reversed(self.procs):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            deadline = time.monotonic() + grace
            while _alive(proc) and time.monotonic() < deadline:
                time.sleep(0.05)
            if _alive(proc):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
            if proc.popen is not None:
                proc.popen.wait()
        self.procs.clear()
        (self.state_dir / "state.json").unlink(missing_ok=True)

    def _spawn(self, name: str, args: list[str]) -> _Proc:
        log = self.log_dir / f"{name}.log"
        with log.open("ab") as out:
            popen = subprocess.Popen(
                [str(self.bin_dir / name), *args],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent if self.tie_to_parent else None,
                cwd=self.state_dir,
            )
        proc = _Proc(name, popen, popen.pid, log)
        self.procs.append(proc)
        return proc

    def _start_etcd(self, timeout: float) -> None:
        client = f"http://127.0.0.1:{self.ports['etcd']}"
        peer = f"http://127.0.0.1:{self.ports['etcd-peer']}"
        proc = self._spawn("etcd", [
            "--name=default",
            f"--data-dir={self.state_dir / 'etcd'}",
            f"--listen-client-urls={client}",
            f"--advertise-client-urls={client}",
            f"--listen-peer-urls={peer}",
            f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster=default={peer}",
            "--unsafe-no-fsync=true",
            "--log-level=warn",
        ])
        _wait("etcd", lambda: _http_ok(f"{client}/health", proc), timeout, self._tail_on_fail)

    def _spawn_apiserver(self, serving: Pair, sa: Pair, ca: Pair) -> _Proc:
        port = self.ports["apiserver"]
        return self._spawn("kube-apiserver", [
            "--advertise-address=127.0.0.1",
            "--endpoint-reconciler-type=none",  # 1.37 refuses loopback endpoints
            "--bind-address=127.0.0.1",
            f"--secure-port={port}",
            f"--cert-dir={self.pki}",
            f"--tls-cert-file={serving.cert}",
            f"--tls-private-key-file={serving.key}",
            f"--client-ca-file={ca.cert}",
            f"--etcd-servers=http://127.0.0.1:{self.ports['etcd']}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            f"--service-account-issuer=https://127.0.0.1:{port}",
            f"--service-account-key-file={sa.cert}",
            f"--service-account-signing-key-file={sa.key}",
            # Node: a real node's kubelet (tests.kube.node) acts as system:node:<name>
            "--authorization-mode=Node,RBAC",
            "--enable-admission-plugins=NodeRestriction",
            f"--kubelet-client-certificate={self.pki / 'apiserver-kubelet-client.crt'}",
            f"--kubelet-client-key={self.pki / 'apiserver-kubelet-client.key'}",
            f"--kubelet-certificate-authority={ca.cert}",
            "--kubelet-preferred-address-types=InternalIP",  # never look a node name up
            "--allow-privileged=true",
            "--profiling=false",
            "--v=1",
        ])

    def _spawn_controller_manager(self, kubeconfig: Path, sa: Pair, ca: Pair) -> _Proc:
        return self._spawn("kube-controller-manager", [
            f"--kubeconfig={kubeconfig}",
            f"--authentication-kubeconfig={kubeconfig}",
            f"--authorization-kubeconfig={kubeconfig}",
            "--bind-address=127.0.0.1",
            f"--secure-port={self.ports['controller-manager']}",
            f"--cert-dir={self.pki / 'kcm'}",
            "--controllers=*",
            "--leader-elect=false",
            f"--service-account-private-key-file={sa.key}",
            f"--root-ca-file={ca.cert}",
            "--use-service-account-credentials=true",
            f"--cluster-signing-cert-file={ca.cert}",
            f"--cluster-signing-key-file={ca.key}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--profiling=false",
            "--v=1",
        ])

    def _wait_apiserver(self, api: _Proc, timeout: float) -> None:
        ctx = self._ssl_context()
        _wait("kube-apiserver", lambda: _http_ok(f"{self.server}/readyz", api, ctx),
              timeout, self._tail_on_fail)

    def _wait_controller_manager(self, kcm: _Proc, timeout: float) -> None:
        insecure = ssl.create_default_context()
        insecure.check_hostname = False
        insecure.verify_mode = ssl.CERT_NONE  # its self-signed serving cert; loopback only
        _wait(
            "kube-controller-manager",
            lambda: _http_ok(
                f"https://127.0.0.1:{self.ports['controller-manager']}/healthz", kcm, insecure),
            timeout,
            self._tail_on_fail,
        )
        # Pods need the `default` ServiceAccount (ServiceAccount admission).
        self.wait_for_service_account("default")

    def _ssl_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.pki / "ca.crt"))
        ctx.load_cert_chain(str(self.pki / "admin.crt"), str(self.pki / "admin.key"))
        return ctx

    def _write_kubeconfig(self, path: Path, user: Pair, user_name: str) -> None:
        def b64(p: Path) -> str:
            return base64.b64encode(p.read_bytes()).decode()

        cfg = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "local", "cluster": {
                "server": self.server, "certificate-authority-data": b64(self.pki / "ca.crt")}}],
            "users": [{"name": user_name, "user": {
                "client-certificate-data": b64(user.cert), "client-key-data": b64(user.key)}}],
            "contexts": [{"name": "local", "context": {"cluster": "local", "user": user_name}}],
            "current-context": "local",
        }
        path.write_text(yaml.safe_dump(cfg))
        path.chmod(0o600)

    # -- state for `python -m tests.kube up/down` ----------------------------------
    def _save_state(self) -> None:
        state = {
            "bin_dir": str(self.bin_dir),
            "ports": self.ports,
            "procs": [{"name": p.name, "pid": p.pid, "log": str(p.log)} for p in self.procs],
        }
        (self.state_dir / "state.json").write_text(json.dumps(state, indent=2))

    @classmethod
    def attach(cls, state_dir: Path) -> ControlPlane:
        """A handle on a control plane started by another process (`make cluster-up`)."""
        state = json.loads((state_dir / "state.json").read_text())
        cp = cls(state_dir, Path(state["bin_dir"]), tie_to_parent=False, ports=state["ports"])
        cp.procs = [_Proc(p["name"], None, p["pid"], Path(p["log"])) for p in state["procs"]]
        return cp

    def running(self) -> bool:
        return bool(self.procs) and all(_alive(p) for p in self.procs)

    # -- logs ------------------------------------------------------------------------
    def log_tail(self, lines: int = 30) -> str:
        """The last lines of each component's log, for failure reports."""
        parts = []
        for name in COMPONENTS:
            log = self.log_dir / f"{name}.log"
            if log.exists():
                tail = log.read_text(errors="replace").splitlines()[-lines:]
                parts.append(f"----- {log} (last {len(tail)} lines) -----\n" + "\n".join(tail))
        return "\n".join(parts)

    def _tail_on_fail(self) -> str:
        return self.log_tail(40)

    # -- conveniences for tests --------------------------------------------------------
    def env(self) -> dict[str, str]:
        """os.environ with KUBECONFIG set and the built binaries first on PATH."""
        path = f"{self.bin_dir}{os.pathsep}{helm_binary().parent}{os.pathsep}{os.environ['PATH']}"
        return {**os.environ, "KUBECONFIG": str(self.kubeconfig), "PATH": path}

    def kubectl(
        self,
        *args: str,
        input: str | None = None,
        check: bool = True,
        as_user: str | None = None,
        as_groups: Iterable[str] = (),
        timeout: float = 60.0,
    ) -> subprocess.CompletedProcess[str]:
        """Run the built kubectl against this cluster; raises `KubectlError` if `check`."""
        argv = [str(self.bin_dir / "kubectl"), f"--kubeconfig={self.kubeconfig}"]
        if as_user:
            argv.append(f"--as={as_user}")
        argv += [f"--as-group={g}" for g in as_groups]
        argv += list(args)
        result = subprocess.run(
            argv, input=input, capture_output=True, text=True, timeout=timeout, check=False
        )
        if check and result.returncode != 0:
            raise KubectlError(list(args), result)
        return result

    def api_client(self) -> Any:
        """A new `kubernetes.client.ApiClient` for this cluster, as admin."""
        from kubernetes import config

        return config.new_client_from_config(config_file=str(self.kubeconfig))

    def create_namespace(self, name: str, labels: dict[str, str] | None = None) -> str:
        """Create a namespace (idempotent) and wait for its `default` ServiceAccount."""
        body = {"apiVersion": "v1", "kind": "Namespace",
                "metadata": {"name": name, "labels": labels or {}}}
        try:
            self.rest.request("POST", "/api/v1/namespaces", body)
        except ApiError as e:
            if e.status != 409:
                raise
        self.wait_for_service_account(name)
        return name

    def delete_namespace(self, name: str, wait: bool = False, timeout: float = 60.0) -> None:
        with contextlib.suppress(ApiError):
            self.rest.request("DELETE", f"/api/v1/namespaces/{name}")
        if wait:
            def gone() -> bool:
                try:
                    self.rest.get(f"/api/v1/namespaces/{name}")
                except ApiError as e:
                    return e.status == 404
                return False

            _wait(f"namespace {name} deletion", gone, timeout, lambda: "")

    def wait_for_service_account(self, namespace: str, timeout: float = 30.0) -> None:
        def exists() -> bool:
            try:
                self.rest.get(f"/api/v1/namespaces/{namespace}/serviceaccounts/default")
            except ApiError:
                return False
            return True

        _wait(f"ServiceAccount {namespace}/default", exists, timeout, self._tail_on_fail)

    def apply(self, *paths: Path | str) -> str:
        """`kubectl apply --server-side -f` each path; returns kubectl's output."""
        args = ["apply", "--server-side"]
        for p in paths:
            args += ["-f", str(p)]
        return self.kubectl(*args).stdout

    def wait_established(self, crd_names: Iterable[str], timeout: float = 30.0) -> None:
        """Wait until each CustomResourceDefinition has condition Established=True."""
        for name in crd_names:
            def established(name: str = name) -> bool:
                try:
                    crd = self.rest.get(
                        f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}"
                    )
                except ApiError:
                    return False
                conditions = (crd.get("status") or {}).get("conditions") or []
                return any(
                    c["type"] == "Established" and c["status"] == "True" for c in conditions
                )

            _wait(f"CRD {name} Established", established, timeout, lambda: "")


def _alive(proc: _Proc) -> bool:
    if proc.popen is not None:
        return proc.popen.poll() is None
    try:
        os.kill(proc.pid, 0)
    except ProcessLookupError:
        return False
    # A zombie or a reused pid is not ours any more.
    try:
        stat = Path(f"/proc/{proc.pid}/stat").read_text()
        cmdline = Path(f"/proc/{proc.pid}/cmdline").read_bytes()
    except OSError:
        return False
    return stat.split(") ", 1)[1][0] != "Z" and proc.name.encode() in cmdline


def _http_ok(url: str, proc: _Proc, ctx: ssl.SSLContext | None = None) -> bool:
    if not _alive(proc):
        raise RuntimeError(f"{proc.name} exited early; log: {proc.log}\n"
                           + "\n".join(proc.log.read_text(errors="replace").splitlines()[-40:]))
    try:
        with urllib.request.urlopen(url, timeout=2, context=ctx) as resp:
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError):
        return False
