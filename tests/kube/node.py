"""A real one-node cluster on this machine: containerd, kubelet, kube-proxy, kube-scheduler.

`Node(control_plane, state_dir).start()` joins a real node to a running
`tests.kube.controlplane.ControlPlane`:

- containerd v2 (built by hack/build-node.sh) with its own root, state and socket under
  `state_dir`, two runtime handlers driven by containerd's runc shim: `runc` (Debian's
  runc) and `runsc` (Debian's gVisor runsc through a wrapper script, `options.BinaryName`;
  gVisor's own containerd shim is not packaged), and a pause image made here from busybox;
- CNI: a bridge with host-local IPAM on `pod_cidr` (the bridge's address is the node's
  InternalIP) and portmap; an nftables table of our own drops anything forwarded between
  the bridge and other interfaces, so pods reach only the node, each other and Services;
- kubelet (cgroupfs driver on this machine's cgroup v1, `failCgroupV1: false`), a client
  certificate for `system:node:<name>` in `system:nodes` and a serving certificate both
  signed by the control plane's CA, so `kubectl logs` works through the API server;
- kube-proxy in nftables mode (Services), kube-scheduler (the control plane has none);
- RuntimeClasses `gvisor` (handler runsc) and `runc`.

`stop()` deletes the node's pods, stops every process it started, unmounts what was
mounted under `state_dir`, removes the bridge and the nftables tables, and restores the
sysctls it changed. `import_image(path)` loads an OCI archive and returns a reference by
digest for pods with `imagePullPolicy: Never` (there is no registry).
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import fcntl
import ipaddress
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from tests.kube.certs import CertAuthority, Pair
from tests.kube.controlplane import (
    REPO_ROOT,
    SERVICE_CIDR,
    ControlPlane,
    _alive,
    _die_with_parent,
    _Proc,
    free_port,
)
from tests.kube.images import busybox_image
from tests.kube.rest import ApiError

BUILD_SCRIPT = REPO_ROOT / "hack" / "build-node.sh"
RUNSC = Path("/usr/bin/runsc")
RUNC = Path("/usr/sbin/runc")
PAUSE_IMAGE = "continue-orchestrator.local/pause:busybox"
# gVisor's flags for the runsc handler. ptrace is the platform this runsc (20221219)
# defaults to. --network=host: gVisor passes socket calls to the kernel's network stack
# *of the pod's network namespace* (runsc joins the netns containerd made and CNI
# filled); its own netstack (--network=sandbox) refuses to start on this kernel: runsc
# 20221219 decides it is in the root netns when /proc/sys/net/core/rmem_default exists,
# which kernel 6.18 now shows in every netns ("cannot run with network enabled in root
# network namespace"). The local sandbox runs runsc the same way (local/_sandbox.py).
RUNSC_FLAGS = ("--platform=ptrace", "--network=host")
RUNTIME_CLASSES = {"gvisor": "runsc", "runc": "runc"}
# containerd's runc shim runs `<BinaryName> --root .. --log .. create --bundle DIR ..`,
# `start`, `state`, `kill`, `delete`, `exec`: runsc takes the same global flags and
# subcommands, and ours go first. What the shim cannot do is gVisor's multi-container
# pod: runsc puts a container whose spec says it belongs to a pod sandbox
# (annotation io.kubernetes.cri.container-type=container) into that sandbox, where the
# runc shim neither sees it exit (it waits on the sandbox's pid) nor gets its output
# (runsc hands the sandbox the stdio of `runsc start`). So before `create` the wrapper
# renames that annotation: every container, the pause one too, is a gVisor sandbox of
# its own (as with `docker run --runtime=runsc`), all in the pod's network namespace.
# And the shim takes a failed `kill` of an exited container for "already finished" only
# when runc's words say so ("container not running"); runsc says "sandbox is not running"
# or "cannot signal container ... in state created|stopped", so the wrapper adds runc's.
RUNSC_WRAPPER = """#!/bin/sh
# containerd's runc shim drives gVisor's runsc through this (options.BinaryName);
# written by tests/kube/node.py, see RUNSC_WRAPPER there.
prev=""
for arg in "$@"; do
  case "$prev" in --bundle|-bundle|-b)
    [ -f "$arg/config.json" ] && sed -i \\
      's/"io[.]kubernetes[.]cri[.]container-type"/"x-runsc-wrapper.cri-container-type"/' \\
      "$arg/config.json" ;;
  esac
  case "$arg" in --bundle=*|-bundle=*)
    b="${{arg#*=}}"
    [ -f "$b/config.json" ] && sed -i \\
      's/"io[.]kubernetes[.]cri[.]container-type"/"x-runsc-wrapper.cri-container-type"/' \\
      "$b/config.json" ;;
  esac
  prev="$arg"
done
case " $* " in
  *" kill "*)
    out=$({runsc} {flags} "$@" 2>&1) && exit 0
    rc=$?
    case "$out" in
      *"is not running"*|*"in state created"*|*"in state stopped"*)
        echo "container not running: $out" >&2 ;;
      *) printf '%s\\n' "$out" >&2 ;;
    esac
    exit $rc ;;
esac
exec {runsc} {flags} "$@"
"""


Dirs = tuple[Path, Path, Path, Path]


def node_dirs() -> Dirs:
    """(kubelet/kube-proxy/kube-scheduler dir, containerd dir, CNI plugin dir,
    kube-router dir)."""
    out = subprocess.run(
        ["bash", str(BUILD_SCRIPT), "--print"], check=True, capture_output=True, text=True
    ).stdout.split()
    return Path(out[0]), Path(out[1]), Path(out[2]), Path(out[3])


def ensure_node_binaries() -> Dirs:
    """Build or install whatever the node lacks (hack/build-node.sh), return `node_dirs()`."""
    node_dir, ctrd_dir, cni_dir, kr_dir = node_dirs()
    needed = [node_dir / n for n in ("kubelet", "kube-proxy", "kube-scheduler", ".stamp")]
    needed += [ctrd_dir / n for n in ("containerd", "containerd-shim-runc-v2", "ctr", ".stamp")]
    needed += [cni_dir / "bridge", RUNC, RUNSC, Path("/usr/bin/busybox")]
    needed += [kr_dir / "kube-router", kr_dir / ".stamp"]
    if not all(p.exists() for p in needed):
        print(f"[tests.kube] building the node into {node_dir}, {ctrd_dir}", file=sys.stderr)
        subprocess.run(["bash", str(BUILD_SCRIPT)], check=True, stdout=sys.stderr)
    return node_dir, ctrd_dir, cni_dir, kr_dir


def load_ca(pki: Path) -> CertAuthority:
    """The control plane's CA (pki/ca.crt, pki/ca.key), to issue the node's certificates."""
    ca = CertAuthority.__new__(CertAuthority)
    ca.directory = pki
    ca._cert = x509.load_pem_x509_certificate((pki / "ca.crt").read_bytes())
    key = serialization.load_pem_private_key((pki / "ca.key").read_bytes(), None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    ca._key = key
    ca.pair = Pair(pki / "ca.crt", pki / "ca.key")
    return ca


def _serving_and_client(
    ca: CertAuthority, name: str, cn: str, orgs: tuple[str, ...], hosts: tuple[str, ...]
) -> Pair:
    """A certificate usable both as a TLS server (hosts) and as a client: the kubelet's."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    sans: list[x509.GeneralName] = []
    for host in hosts:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            sans.append(x509.DNSName(host))
    cert = (
        x509.CertificateBuilder()
        .subject_name(
            x509.Name(
                [x509.NameAttribute(x509.NameOID.ORGANIZATION_NAME, o) for o in orgs]
                + [x509.NameAttribute(x509.NameOID.COMMON_NAME, cn)]
            )
        )
        .issuer_name(ca._cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=7))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(
            x509.ExtendedKeyUsage([x509.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        .sign(ca._key, hashes.SHA256())
    )
    crt, k = ca.directory / f"{name}.crt", ca.directory / f"{name}.key"
    crt.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    k.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    k.chmod(0o600)
    return Pair(crt, k)


def _run(argv: list[str], check: bool = True, **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, check=check, capture_output=True, text=True, **kw)


def _wait(
    what: str, probe: Callable[[], bool], timeout: float, on_fail: Callable[[], str] = lambda: ""
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if probe():
            return
        time.sleep(0.2)
    raise TimeoutError(f"{what} not ready after {timeout:.0f}s\n{on_fail()}")


def _sysctl(path: str, value: str) -> str:
    p = Path("/proc/sys") / path
    old = p.read_text().strip()
    if old != value:
        p.write_text(value)
    return old


def _remove_chains(ours: re.Pattern[str]) -> None:
    """Delete the iptables/ip6tables chains whose names match, and every jump to them."""
    for tool in ("iptables", "ip6tables"):
        for table in ("filter", "nat", "mangle"):
            rules = _run([tool, "-t", table, "-S"], check=False).stdout.splitlines()
            chains = [
                r.split()[1] for r in rules if r.startswith("-N ") and ours.match(r.split()[1])
            ]
            for rule in rules:  # jumps into those chains first
                parts = shlex.split(rule)
                if (
                    parts[:1] == ["-A"]
                    and "-j" in parts
                    and ours.match(parts[parts.index("-j") + 1])
                ):
                    _run([tool, "-t", table, "-D", *parts[1:]], check=False)
            for chain in chains:
                _run([tool, "-t", table, "-F", chain], check=False)
            for chain in chains:
                _run([tool, "-t", table, "-X", chain], check=False)


@dataclass(frozen=True)
class ArchiveImage:
    """What an OCI image archive names, for loading it into a containerd without a
    registry: the local node (`Node.import_image`) and a kind cluster
    (`tests.kube.external.KindNode`) load the archive their own way, then apply `tags()`."""

    archive: Path  # an OCI archive tar (a layout directory is tarred first)
    ref_name: str  # repository:tag pods' images are known by
    named: str | None  # the name the archive's index gives it (what an import creates)
    digest: str  # the manifest digest

    @classmethod
    def open(cls, path: Path, name: str | None, stack: contextlib.ExitStack) -> ArchiveImage:
        if path.is_dir():
            tmp = Path(stack.enter_context(tempfile.TemporaryDirectory()))
            archive = tmp / "image.tar"
            with tarfile.open(archive, "w") as tar:
                for child in sorted(path.iterdir()):
                    tar.add(child, arcname=child.name)
            path = archive
        with tarfile.open(path) as tar:
            member = tar.extractfile("index.json")
            if member is None:
                raise ValueError(f"{path}: not an OCI archive (no index.json)")
            index: dict[str, Any] = json.load(member)
        entries = index.get("manifests") or []
        if not entries:
            raise ValueError(f"{path}: no manifests in index.json")
        annotations = entries[0].get("annotations") or {}
        named = annotations.get("io.containerd.image.name") or annotations.get(
            "org.opencontainers.image.ref.name"
        )
        ref_name = name or named
        if not ref_name or ":" not in ref_name.rsplit("/", 1)[-1]:
            raise ValueError(f"{path}: give a name (repository:tag); the index has {ref_name!r}")
        return cls(path, ref_name, named, entries[0]["digest"])

    @property
    def by_digest(self) -> str:
        """`repository@sha256:...`: what pods name with `imagePullPolicy: Never`."""
        repository = self.ref_name.split("@")[0].rsplit(":", 1)[0]
        return f"{repository}@{self.digest}"

    def tags(self) -> list[tuple[str, str]]:
        """(source, target) pairs for `ctr images tag --force` after the import: the name
        asked for, and the by-digest name (the CRI resolves `repo@sha256:...` only through
        an image of that name; a pull makes one, an import does not)."""
        pairs = []
        if self.named and self.named != self.ref_name:
            pairs.append((self.named, self.ref_name))
        pairs.append((self.ref_name, self.by_digest))
        return pairs


@dataclass
class Node:
    """One real node joined to `control_plane`; its state, sockets and logs in `state_dir`."""

    control_plane: ControlPlane
    state_dir: Path
    name: str = "node-1"
    pod_cidr: str = "10.88.0.0/16"
    bridge: str = "cni-co0"
    runsc_flags: tuple[str, ...] = RUNSC_FLAGS
    # Enforce NetworkPolicy with kube-router's firewall (iptables + ipset); see
    # docs/testing.md for why not kube-network-policies.
    network_policy: bool = True
    procs: dict[str, _Proc] = field(default_factory=dict)
    kubelet_port: int = 0  # chosen free at start; the kubelet listens on node_ip
    startup_seconds: float = 0.0
    _sysctls: dict[str, str] = field(default_factory=dict)
    _dirs: Dirs | None = None
    _lock: IO[bytes] | None = None

    # -- paths ------------------------------------------------------------------------
    @property
    def node_ip(self) -> str:
        """The node's InternalIP: the pod bridge's gateway address (kubelet refuses
        loopback, and the machine's own interface is not ours to use)."""
        return str(next(ipaddress.ip_network(self.pod_cidr).hosts()))

    @property
    def log_dir(self) -> Path:
        return self.state_dir / "logs"

    @property
    def containerd_socket(self) -> Path:
        return self.state_dir / "containerd" / "containerd.sock"

    @property
    def pki(self) -> Path:
        return self.state_dir / "pki"

    @property
    def cgroup_root(self) -> str:
        return f"/continue-node-{self.name}"

    @property
    def nft_table(self) -> str:
        return f"continue_node_{re.sub(r'[^a-z0-9]', '_', self.bridge)}"

    # -- lifecycle ----------------------------------------------------------------------
    def start(self, timeout: float = 120.0, lock_timeout: float = 900.0) -> Node:
        """Bring the node up and wait until it is Ready. One node per machine at a time
        (the bridge, kube-proxy's nftables table and the kubelet's iptables chains are
        machine-wide): a second one waits up to `lock_timeout` s for the first to stop."""
        t0 = time.monotonic()
        self._dirs = ensure_node_binaries()
        for d in (self.log_dir, self.pki, self.state_dir / "containerd", self.state_dir / "cni"):
            d.mkdir(parents=True, exist_ok=True)
        self._lock_machine(lock_timeout)
        try:
            self._host_network()
            self._certificates()
            self._start_containerd(timeout)
            self.import_image(self._pause_archive(), name=PAUSE_IMAGE)
            self._start_scheduler(timeout)
            self._start_kubelet()
            self._start_kube_proxy(timeout)
            self.wait_ready(timeout)
            if self.network_policy:  # it finds its Node at start: after registration
                self._start_kube_router(timeout)
            self._runtime_classes()
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - t0
        return self

    def stop(self, grace: float = 30.0) -> None:
        """Everything `start` did, undone; safe to call twice or after a failed start."""
        errors: list[str] = []
        if "kubelet" in self.procs and _alive(self.procs["kubelet"]):
            with contextlib.suppress(Exception):
                self._drain(grace)
        for name in ("kube-router", "kube-proxy", "kubelet", "kube-scheduler"):
            self._terminate(name)
        if self.network_policy:
            with contextlib.suppress(Exception):
                self._kube_router_cleanup()
        if "containerd" in self.procs:
            with contextlib.suppress(Exception):
                self._remove_containers()
            self._terminate("containerd")
        self._kill_leftover_shims()
        # the kubelet's own iptables chains (a canary, and a rule dropping packets to
        # 127.0.0.0/8 from elsewhere), which it leaves behind
        with contextlib.suppress(Exception):
            _remove_chains(re.compile(r"^(KUBE-FIREWALL|KUBE-KUBELET-CANARY|KUBE-IPTABLES-HINT)$"))
        with contextlib.suppress(Exception):
            self._kube_proxy_cleanup()
        for step in (self._unmount_all, self._remove_cgroups, self._remove_network):
            try:
                step()
            except Exception as e:  # keep going: leave as little behind as possible
                errors.append(f"{step.__name__}: {e}")
        for key, old in self._sysctls.items():
            with contextlib.suppress(OSError):
                _sysctl(key, old)
        self._sysctls.clear()
        if self._lock is not None:
            self._lock.close()  # releases the flock
            self._lock = None
        if errors:
            print("[tests.kube.node] cleanup: " + "; ".join(errors), file=sys.stderr)

    def _lock_machine(self, timeout: float) -> None:
        # held for the node's whole life, closed (unlocked) by stop()
        lock = Path("/run/lock/continue-orchestrator-node.lock").open("ab")  # noqa: SIM115
        deadline = time.monotonic() + timeout
        said = False
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    lock.close()
                    raise TimeoutError(
                        f"another real node has held {lock.name} for {timeout:.0f}s"
                    ) from None
                if not said:
                    print(
                        f"[tests.kube.node] waiting for another node to stop ({lock.name})",
                        file=sys.stderr,
                    )
                    said = True
                time.sleep(1)
        self._lock = lock

    # -- host network ------------------------------------------------------------------
    def _host_network(self) -> None:
        net = ipaddress.ip_network(self.pod_cidr)
        # Services route pod -> node -> pod (forwarding on the bridge); bridged replies
        # must pass conntrack to be un-NATed (br_netfilter, built into this kernel).
        self._sysctls["net/ipv4/ip_forward"] = _sysctl("net/ipv4/ip_forward", "1")
        self._sysctls["net/bridge/bridge-nf-call-iptables"] = _sysctl(
            "net/bridge/bridge-nf-call-iptables", "1"
        )
        if _run(["ip", "link", "show", self.bridge], check=False).returncode != 0:
            _run(["ip", "link", "add", self.bridge, "type", "bridge"])
        _run(["ip", "addr", "replace", f"{self.node_ip}/{net.prefixlen}", "dev", self.bridge])
        _run(["ip", "link", "set", self.bridge, "up"])
        # Nothing crosses between the pod bridge and any other interface: pods reach the
        # node, each other and Services (DNAT to pods), never the machine's network.
        t = self.nft_table
        rules = f"""
table inet {t} {{
  chain forward {{
    type filter hook forward priority -10; policy accept;
    iifname "{self.bridge}" oifname != "{self.bridge}" drop
    oifname "{self.bridge}" iifname != "{self.bridge}" drop
  }}
}}
"""
        _run(["nft", "delete", "table", "inet", t], check=False)
        _run(["nft", "-f", "-"], input=rules)

    def _remove_network(self) -> None:
        _run(["nft", "delete", "table", "inet", self.nft_table], check=False)
        for link in json.loads(_run(["ip", "-j", "link", "show"]).stdout or "[]"):
            # veth ends CNI left on our bridge (only if a pod's teardown was skipped)
            if link.get("master") == self.bridge:
                _run(["ip", "link", "del", link["ifname"]], check=False)
        _run(["ip", "link", "del", self.bridge], check=False)

    # -- certificates and kubeconfigs -----------------------------------------------------
    def _certificates(self) -> None:
        ca = load_ca(self.control_plane.pki)
        node_ca = CertAuthority.__new__(CertAuthority)
        node_ca.__dict__.update(ca.__dict__, directory=self.pki)
        shutil.copy(ca.pair.cert, self.pki / "ca.crt")
        self._kubeconfig(
            "kubelet",
            node_ca.issue("kubelet-client", f"system:node:{self.name}", orgs=("system:nodes",)),
        )
        self._kubelet_serving = _serving_and_client(
            node_ca,
            "kubelet-serving",
            f"system:node:{self.name}",
            ("system:nodes",),
            (self.node_ip, self.name, "localhost", "127.0.0.1"),
        )
        self._kubeconfig("kube-proxy", node_ca.issue("kube-proxy", "system:kube-proxy"))
        self._kubeconfig("kube-scheduler", node_ca.issue("kube-scheduler", "system:kube-scheduler"))

    def kubeconfig(self, component: str) -> Path:
        return self.state_dir / f"{component}.kubeconfig"

    def _kubeconfig(self, component: str, pair: Pair) -> None:
        def b64(p: Path) -> str:
            return base64.b64encode(p.read_bytes()).decode()

        cfg = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "local",
                    "cluster": {
                        "server": self.control_plane.server,
                        "certificate-authority-data": b64(self.pki / "ca.crt"),
                    },
                }
            ],
            "users": [
                {
                    "name": component,
                    "user": {
                        "client-certificate-data": b64(pair.cert),
                        "client-key-data": b64(pair.key),
                    },
                }
            ],
            "contexts": [{"name": "local", "context": {"cluster": "local", "user": component}}],
            "current-context": "local",
        }
        path = self.kubeconfig(component)
        path.write_text(yaml.safe_dump(cfg))
        path.chmod(0o600)

    # -- processes ----------------------------------------------------------------------
    def _spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> _Proc:
        log = self.log_dir / f"{name}.log"
        with log.open("ab") as out:
            popen = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent,
                cwd=self.state_dir,
                env={**os.environ, **(env or {})},
            )
        proc = _Proc(name, popen, popen.pid, log)
        self.procs[name] = proc
        return proc

    def _terminate(self, name: str, grace: float = 10.0) -> None:
        proc = self.procs.pop(name, None)
        if proc is None:
            return
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

    def _check_alive(self, name: str) -> None:
        proc = self.procs[name]
        if not _alive(proc):
            raise RuntimeError(f"{name} exited early; log: {proc.log}\n" + self.log_tail(name))

    def log_tail(self, *names: str, lines: int = 40) -> str:
        parts = []
        for name in names or (
            "containerd",
            "kubelet",
            "kube-proxy",
            "kube-scheduler",
            "kube-router",
        ):
            log = self.log_dir / f"{name}.log"
            if log.exists():
                tail = log.read_text(errors="replace").splitlines()[-lines:]
                parts.append(f"----- {log} (last {len(tail)} lines) -----\n" + "\n".join(tail))
        return "\n".join(parts)

    # -- containerd -----------------------------------------------------------------------
    def _start_containerd(self, timeout: float) -> None:
        _, ctrd_dir, cni_dir, _ = self._dirs or node_dirs()
        base = self.state_dir / "containerd"
        runsc = base / "runsc"
        # The runc shim runs `<BinaryName> --root .. --log .. create --bundle ..`: runsc
        # takes the same global flags and subcommands, and our flags go first.
        debug = os.environ.get("NODE_RUNSC_DEBUG")
        extra = f" --debug --debug-log={self.log_dir}/runsc/" if debug else ""
        runsc.write_text(
            RUNSC_WRAPPER.format(runsc=RUNSC, flags=" ".join(self.runsc_flags) + extra)
        )
        runsc.chmod(0o755)
        cni_conf = self.state_dir / "cni" / "net.d"
        cni_conf.mkdir(parents=True, exist_ok=True)
        (cni_conf / "10-continue-node.conflist").write_text(
            json.dumps(
                {
                    "cniVersion": "1.0.0",
                    "name": "continue-node",
                    "plugins": [
                        {
                            "type": "bridge",
                            "bridge": self.bridge,
                            "isGateway": True,
                            "ipMasq": False,
                            "hairpinMode": True,
                            "ipam": {
                                "type": "host-local",
                                "ranges": [[{"subnet": self.pod_cidr, "gateway": self.node_ip}]],
                                "routes": [{"dst": "0.0.0.0/0"}],
                                "dataDir": str(self.state_dir / "cni" / "ipam"),
                            },
                        },
                        {"type": "portmap", "capabilities": {"portMappings": True}},
                    ],
                },
                indent=2,
            )
        )
        cri_runtime = 'plugins."io.containerd.cri.v1.runtime"'
        runtimes = f"{cri_runtime}.containerd.runtimes"
        config = f"""version = 3
root = "{base / "root"}"
state = "{base / "state"}"
disabled_plugins = [
  "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.blockfile",
  "io.containerd.snapshotter.v1.erofs", "io.containerd.internal.v1.opt",
  "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing",
  "io.containerd.nri.v1.nri",
]

[grpc]
  address = "{self.containerd_socket}"

[ttrpc]
  address = "{self.containerd_socket}.ttrpc"

[plugins."io.containerd.grpc.v1.cri"]
  disable_tcp_service = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"

[plugins."io.containerd.cri.v1.images"]
  snapshotter = "overlayfs"
  [plugins."io.containerd.cri.v1.images".pinned_images]
    sandbox = "{PAUSE_IMAGE}"

[{cri_runtime}]
  enable_selinux = false
  netns_mounts_under_state_dir = true
  # This VM gives root every capability but CAP_SYS_RESOURCE, so no process may lower
  # its oom_score_adj below 0: the kubelet's -998 for sandboxes would fail in runc.
  restrict_oom_score_adj = true
  [{cri_runtime}.cni]
    bin_dirs = ["{cni_dir}"]
    conf_dir = "{cni_conf}"
    max_conf_num = 1
  [{cri_runtime}.containerd]
    default_runtime_name = "runc"
  [{runtimes}.runc]
    runtime_type = "io.containerd.runc.v2"
    [{runtimes}.runc.options]
      BinaryName = "{RUNC}"
      Root = "{base / "runc"}"
      SystemdCgroup = false
  [{runtimes}.runsc]
    runtime_type = "io.containerd.runc.v2"
    [{runtimes}.runsc.options]
      BinaryName = "{runsc}"
      Root = "{base / "runsc-state"}"
      SystemdCgroup = false
"""
        (base / "config.toml").write_text(config)
        proc = self._spawn(
            "containerd",
            [
                str(ctrd_dir / "containerd"),
                f"--config={base / 'config.toml'}",
                "--log-level=info",
            ],
            env={"PATH": f"{ctrd_dir}:{os.environ['PATH']}"},
        )

        def up() -> bool:
            if not _alive(proc):
                self._check_alive("containerd")
            return self.ctr("version", check=False).returncode == 0

        _wait("containerd", up, timeout, lambda: self.log_tail("containerd"))

    def ctr(
        self, *args: str, check: bool = True, namespace: str = "k8s.io", timeout: float = 120.0
    ) -> subprocess.CompletedProcess[str]:
        _, ctrd_dir, _, _ = self._dirs or node_dirs()
        argv = [
            str(ctrd_dir / "ctr"),
            f"--address={self.containerd_socket}",
            f"--namespace={namespace}",
            *args,
        ]
        result = _run(argv, check=False, timeout=timeout)
        if check and result.returncode != 0:
            raise RuntimeError(
                f"ctr {' '.join(args)} exited {result.returncode}: {result.stderr}{result.stdout}"
            )
        return result

    def _pause_archive(self) -> Path:
        path = self.state_dir / "images" / "pause.tar"
        # The pod sandbox's one process: sleeps until killed (containerd stops sandboxes
        # with SIGKILL). Made from busybox like the test images: there is no registry.
        busybox_image(path, PAUSE_IMAGE, entrypoint=("/bin/sleep", "2147483647"), cmd=())
        return path

    def import_image(self, path: Path, name: str | None = None) -> str:
        """Import an OCI archive (a tar, or an OCI layout directory) into containerd's
        `k8s.io` namespace and return `repository@sha256:<manifest digest>`, the
        reference pods use with `imagePullPolicy: Never`. `name` (repository:tag)
        overrides the name in the archive's index (`io.containerd.image.name`, or the
        `org.opencontainers.image.ref.name` annotation)."""
        with contextlib.ExitStack() as stack:
            image = ArchiveImage.open(Path(path), name, stack)
            # Unpacked for the overlayfs snapshotter the CRI uses; named from the index.
            self.ctr("images", "import", "--all-platforms", str(image.archive))
            for source, target in image.tags():
                self.ctr("images", "tag", "--force", source, target)
        return image.by_digest

    def _remove_containers(self) -> None:
        """Kill and delete every task and container left in our containerd."""
        tasks = self.ctr("tasks", "ls", "-q", check=False).stdout.split()
        for task in tasks:
            self.ctr("tasks", "kill", "--all", "--signal", "SIGKILL", task, check=False)
        for task in tasks:
            self.ctr("tasks", "delete", "--force", task, check=False)
        for container in self.ctr("containers", "ls", "-q", check=False).stdout.split():
            self.ctr("containers", "delete", container, check=False)

    def _kill_leftover_shims(self) -> None:
        """Shims outlive containerd by design, and so do runsc's sandbox and gofer
        processes of a sandbox that failed half-way: ours name our socket or our state
        directory on their command lines."""
        marks = (str(self.containerd_socket).encode(), str(self.state_dir).encode())
        for pid_dir in Path("/proc").glob("[0-9]*"):
            try:
                cmdline = (pid_dir / "cmdline").read_bytes()
            except OSError:
                continue
            if (
                int(pid_dir.name) != os.getpid()
                and any(m in cmdline for m in marks)
                and (b"containerd-shim" in cmdline or b"runsc" in cmdline)
            ):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid_dir.name), signal.SIGKILL)

    def _unmount_all(self) -> None:
        """Unmount (lazily, deepest first) everything mounted under state_dir: kubelet's
        volumes, containerd's snapshots, sandbox /dev/shm, network namespaces."""
        root = str(self.state_dir.resolve())
        for _ in range(3):
            mounts = []
            for line in Path("/proc/self/mountinfo").read_text().splitlines():
                point = line.split()[4].encode().decode("unicode_escape")
                if point == root or point.startswith(root + "/"):
                    mounts.append(point)
            if not mounts:
                return
            for point in sorted(set(mounts), key=len, reverse=True):
                _run(["umount", "-l", point], check=False)

    def _remove_cgroups(self) -> None:
        for hierarchy in Path("/sys/fs/cgroup").iterdir():
            top = hierarchy / self.cgroup_root.lstrip("/")
            if not top.is_dir():
                continue
            for d in sorted(
                (p for p in top.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True
            ):
                with contextlib.suppress(OSError):
                    d.rmdir()
            with contextlib.suppress(OSError):
                top.rmdir()

    # -- kube-scheduler ---------------------------------------------------------------
    def _start_scheduler(self, timeout: float) -> None:
        node_dir = (self._dirs or node_dirs())[0]
        kubeconfig = self.kubeconfig("kube-scheduler")
        self._spawn(
            "kube-scheduler",
            [
                str(node_dir / "kube-scheduler"),
                f"--kubeconfig={kubeconfig}",
                f"--authentication-kubeconfig={kubeconfig}",
                f"--authorization-kubeconfig={kubeconfig}",
                "--bind-address=127.0.0.1",
                f"--secure-port={free_port()}",
                f"--cert-dir={self.pki / 'scheduler'}",
                "--leader-elect=false",
                "--profiling=false",
                "--v=1",
            ],
        )

    # -- kubelet ------------------------------------------------------------------------
    def _start_kubelet(self) -> None:
        node_dir = (self._dirs or node_dirs())[0]
        for hierarchy in Path("/sys/fs/cgroup").iterdir():
            if hierarchy.is_dir() and (hierarchy / "cgroup.procs").exists():
                (hierarchy / self.cgroup_root.lstrip("/")).mkdir(exist_ok=True)
        self.kubelet_port = free_port()
        config = {
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            # cgroup v1 is what this machine mounts; kubelet 1.35+ refuses it unless told.
            "failCgroupV1": False,
            "cgroupDriver": "cgroupfs",
            "cgroupRoot": self.cgroup_root,
            "failSwapOn": False,
            "address": self.node_ip,
            "port": self.kubelet_port,
            "readOnlyPort": 0,
            "healthzBindAddress": "127.0.0.1",
            "healthzPort": free_port(),
            "tlsCertFile": str(self._kubelet_serving.cert),
            "tlsPrivateKeyFile": str(self._kubelet_serving.key),
            "authentication": {
                "anonymous": {"enabled": False},
                "webhook": {"enabled": True},
                "x509": {"clientCAFile": str(self.pki / "ca.crt")},
            },
            "authorization": {"mode": "Webhook"},
            "containerRuntimeEndpoint": f"unix://{self.containerd_socket}",
            "podLogsDir": str(self.state_dir / "pod-logs"),
            "resolvConf": "",
            "clusterDomain": "cluster.local",
            "clusterDNS": [],
            "registerNode": True,
            "rotateCertificates": False,
            "serverTLSBootstrap": False,
            "imageGCHighThresholdPercent": 100,
            "evictionHard": {
                "memory.available": "100Mi",
                "nodefs.available": "1%",
                "imagefs.available": "1%",
                "nodefs.inodesFree": "1%",
            },
            "enforceNodeAllocatable": ["pods"],
            "syncFrequency": "10s",
            "fileCheckFrequency": "10s",
            "nodeStatusUpdateFrequency": "5s",
            "maxPods": 50,
            "localStorageCapacityIsolation": True,
            "containerLogMaxSize": "10Mi",
        }
        cfg = self.state_dir / "kubelet-config.yaml"
        cfg.write_text(yaml.safe_dump(config))
        self._spawn(
            "kubelet",
            [
                str(node_dir / "kubelet"),
                f"--config={cfg}",
                f"--kubeconfig={self.kubeconfig('kubelet')}",
                f"--root-dir={self.state_dir / 'kubelet'}",
                f"--cert-dir={self.pki / 'kubelet'}",
                f"--hostname-override={self.name}",
                f"--node-ip={self.node_ip}",
                "--v=1",
            ],
        )

    def node_object(self) -> dict[str, Any] | None:
        try:
            return self.control_plane.rest.get(f"/api/v1/nodes/{self.name}")
        except ApiError:
            return None

    def ready(self) -> bool:
        node = self.node_object()
        conditions = ((node or {}).get("status") or {}).get("conditions") or []
        taints = ((node or {}).get("spec") or {}).get("taints") or []
        return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions) and not any(
            t["key"].startswith("node.kubernetes.io/not-ready") for t in taints
        )

    def wait_ready(self, timeout: float = 120.0) -> None:
        def probe() -> bool:
            for name in ("containerd", "kubelet", "kube-scheduler", "kube-proxy"):
                if name in self.procs:
                    self._check_alive(name)
            return self.ready()

        _wait(f"node {self.name} Ready", probe, timeout, self.log_tail)

    # -- kube-proxy ----------------------------------------------------------------------
    def _start_kube_proxy(self, timeout: float) -> None:
        node_dir = (self._dirs or node_dirs())[0]
        config = {
            "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
            "kind": "KubeProxyConfiguration",
            "clientConnection": {"kubeconfig": str(self.kubeconfig("kube-proxy"))},
            "mode": "nftables",
            "hostnameOverride": self.name,
            "bindAddress": self.node_ip,
            "healthzBindAddress": f"127.0.0.1:{free_port()}",
            "metricsBindAddress": f"127.0.0.1:{free_port()}",
            "clusterCIDR": self.pod_cidr,
            "nodePortAddresses": [f"{self.node_ip}/32"],
            # leave the machine's conntrack sysctls alone
            "conntrack": {
                "maxPerCore": 0,
                "min": 0,
                "tcpEstablishedTimeout": "0s",
                "tcpCloseWaitTimeout": "0s",
            },
        }
        cfg = self.state_dir / "kube-proxy-config.yaml"
        cfg.write_text(yaml.safe_dump(config))
        self._spawn("kube-proxy", [str(node_dir / "kube-proxy"), f"--config={cfg}", "--v=1"])

    # -- NetworkPolicy: kube-router's firewall only ------------------------------------
    @property
    def kube_router(self) -> Path:
        return (self._dirs or node_dirs())[3] / "kube-router"

    def _start_kube_router(self, timeout: float) -> None:
        rest = self.control_plane.rest
        role = {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": "continue-node:kube-router"},
            "rules": [
                {
                    "apiGroups": [""],
                    "verbs": ["get", "list", "watch"],
                    "resources": ["pods", "namespaces", "nodes", "services", "endpoints"],
                },
                {
                    "apiGroups": ["networking.k8s.io"],
                    "verbs": ["get", "list", "watch"],
                    "resources": ["networkpolicies"],
                },
                {
                    "apiGroups": ["discovery.k8s.io"],
                    "verbs": ["get", "list", "watch"],
                    "resources": ["endpointslices"],
                },
            ],
        }
        binding = {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": "continue-node:kube-router"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": "continue-node:kube-router",
            },
            "subjects": [
                {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "User",
                    "name": "system:kube-router",
                }
            ],
        }
        for path, body in (("clusterroles", role), ("clusterrolebindings", binding)):
            try:
                rest.request("POST", f"/apis/rbac.authorization.k8s.io/v1/{path}", body)
            except ApiError as e:
                if e.status != 409:
                    raise
        ca = load_ca(self.control_plane.pki)
        node_ca = CertAuthority.__new__(CertAuthority)
        node_ca.__dict__.update(ca.__dict__, directory=self.pki)
        self._kubeconfig("kube-router", node_ca.issue("kube-router", "system:kube-router"))
        health = free_port()
        self._spawn(
            "kube-router",
            [
                str(self.kube_router),
                f"--kubeconfig={self.kubeconfig('kube-router')}",
                f"--hostname-override={self.name}",
                "--run-firewall=true",
                "--run-router=false",
                "--run-service-proxy=false",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                f"--health-port={health}",
                "--metrics-port=0",
                "--enable-ipv6=false",
                "--iptables-sync-period=10s",
                "--v=1",
            ],
        )

        def healthy() -> bool:
            self._check_alive("kube-router")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{health}/healthz", timeout=2) as r:
                    return bool(r.status == 200)
            except OSError:
                return False

        _wait("kube-router", healthy, timeout, lambda: self.log_tail("kube-router"))

    def _kube_router_cleanup(self) -> None:
        """Remove kube-router's firewall chains and ipsets (its own --cleanup-config would
        also flush every IPVS service and routing state on the machine)."""
        _remove_chains(re.compile(r"^(KUBE-ROUTER-|KUBE-POD-FW-|KUBE-NWPLCY-)"))
        for name in _run(["ipset", "list", "-n"], check=False).stdout.split():
            if name.startswith(("KUBE-SRC-", "KUBE-DST-", "kube-router-")):
                _run(["ipset", "destroy", name], check=False)

    def _kube_proxy_cleanup(self) -> None:
        # kube-proxy's nftables mode keeps everything in its own tables
        for family in ("ip", "ip6"):
            _run(["nft", "delete", "table", family, "kube-proxy"], check=False)

    # -- cluster objects -------------------------------------------------------------------
    def _runtime_classes(self) -> None:
        for name, handler in RUNTIME_CLASSES.items():
            body = {
                "apiVersion": "node.k8s.io/v1",
                "kind": "RuntimeClass",
                "metadata": {"name": name},
                "handler": handler,
            }
            try:
                self.control_plane.rest.request("POST", "/apis/node.k8s.io/v1/runtimeclasses", body)
            except ApiError as e:
                if e.status != 409:
                    raise

    def pods(self) -> list[dict[str, Any]]:
        out = self.control_plane.rest.get(
            "/api/v1/pods", fieldSelector=f"spec.nodeName={self.name}"
        )
        items: list[dict[str, Any]] = out.get("items") or []
        return items

    def _drain(self, timeout: float) -> None:
        """Delete the node's pods and wait until the kubelet has stopped them (CNI DEL
        runs then, so no veth, IP or netns is left behind)."""
        for pod in self.pods():
            meta = pod["metadata"]
            with contextlib.suppress(ApiError):
                self.control_plane.rest.request(
                    "DELETE",
                    f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}",
                    {"apiVersion": "v1", "kind": "DeleteOptions", "gracePeriodSeconds": 0},
                )
        with contextlib.suppress(TimeoutError):
            _wait("pods gone", lambda: not self.pods(), timeout)
