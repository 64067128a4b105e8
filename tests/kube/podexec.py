"""podexec: test infrastructure standing in for the kubelet. Not part of the product.

The project's machines have no container runtime and no kubelet, yet the
operator's tests need its Pods to run and to report back. `PodExecutor`
registers a Node, binds the Pods of the namespaces it is told to watch to that
Node (pods/binding), runs each container's `command` + `args` as a local
process, and reports phases, conditions and container exit codes through the
pods/status subresource, like a kubelet would.

How a container runs (chosen once per executor; `runtime=` or $PODEXEC_RUNTIME):

* ``runsc`` (used when gVisor's `runsc` is on PATH): one gVisor sandbox per
  container from a generated OCI bundle whose root is the host's `/`
  (read-only when `readOnlyRootFilesystem`, else behind an in-memory overlay,
  so nothing is written to the host) and whose volume mounts are bind mounts
  at the real `mountPath`s. `--network=host` by default (no CNI here: pods
  reach loopback services as with `hostNetwork`), or `network="none"`.
  `host_paths=` (the checkout and the Python environment the tests run from)
  are bound back, read-only, at their own path wherever a volume would hide
  them: a checkout under /tmp stays visible to a pod whose /tmp is an emptyDir.
* ``process``: a plain subprocess on the host. Nothing can be mounted at the
  real paths without privileges, so each pod gets a root directory and every
  `mountPath` and `workingDir` is materialised beneath it, exposed to the
  process as ``$PODEXEC_ROOT`` (e.g. `/etc/cfg/key` is at
  ``$PODEXEC_ROOT/etc/cfg/key``). Commands and args are not rewritten.

In both, the image is ignored (the host's programs run), `command` is
required, and env (`value` with `$(VAR)` expansion, `secretKeyRef`,
`configMapKeyRef`, `fieldRef`), `envFrom`, volumes (secret, configMap,
emptyDir, downwardAPI, projected incl. serviceAccountToken via TokenRequest,
hostPath) and `workingDir` are honoured. Volumes are written once at start
(no live updates). `activeDeadlineSeconds` kills the pod and fails it with
reason DeadlineExceeded; deleting a pod kills its processes and then removes it
(grace 0, as the kubelet does). `restartPolicy` Never/OnFailure/Always is
followed with a capped back-off. Container output goes to files; read it with
`PodExecutor.logs()` (`kubectl logs` needs a kubelet and does not work).
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from tests.kube.rest import JSON, MERGE_PATCH, ApiError, KubeREST

log = logging.getLogger("podexec")

TERMINAL = ("Succeeded", "Failed")
_VAR_REF = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.\-]*)\)")


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _micro_now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def expand(text: str, env: dict[str, str]) -> str:
    """Kubernetes `$(VAR)` expansion: defined names are replaced, `$$` escapes."""

    def sub(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        return env.get(m.group(1), m.group(0))

    return _VAR_REF.sub(sub, text)


class NotReadyError(Exception):
    """Something the pod needs is missing (e.g. a Secret); retried like the kubelet does."""


class UnsupportedError(Exception):
    """The pod uses something podexec does not implement; the pod fails with this message."""


@dataclass
class _Container:
    spec: JSON
    init: bool
    restarts: int = 0
    popen: subprocess.Popen[bytes] | None = None
    cid: str = ""
    started_at: str = ""
    state: JSON = field(default_factory=lambda: {"waiting": {"reason": "ContainerCreating"}})
    last_state: JSON = field(default_factory=dict)
    done: bool = False
    next_start: float = 0.0

    @property
    def name(self) -> str:
        return str(self.spec["name"])


class PodExecutor:
    """Runs the Pods of watched namespaces as local processes (see the module doc)."""

    def __init__(
        self,
        rest: KubeREST,
        workdir: Path,
        *,
        node_name: str = "podexec",
        namespaces: Iterable[str] = (),
        runtime: str | None = None,
        network: str = "host",
        host_paths: Iterable[Path] = (),
    ) -> None:
        self.rest = rest
        self.workdir = workdir
        resolved = {Path(p).resolve() for p in host_paths}
        # One bind for a path and what is inside it (a venv in the checkout).
        self.host_paths = tuple(sorted(p for p in resolved
                                       if not any(p != q and p.is_relative_to(q)
                                                  for q in resolved)))
        self.node_name = node_name
        self.namespaces: set[str] = set(namespaces)
        chosen = runtime or os.environ.get("PODEXEC_RUNTIME") or (
            "runsc" if shutil.which("runsc") else "process"
        )
        if chosen not in ("runsc", "process"):
            raise ValueError(f"unknown podexec runtime {chosen!r}")
        if chosen == "runsc" and not shutil.which("runsc"):
            raise RuntimeError("podexec runtime 'runsc' asked for, but runsc is not on PATH")
        self.runtime = chosen
        self.network = network
        self._lock = threading.RLock()
        self._runners: dict[str, _PodRunner] = {}
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        api = urlparse(rest.server)
        self.api_host, self.api_port = api.hostname or "127.0.0.1", str(api.port or 443)

    # -- lifecycle -------------------------------------------------------------------
    def start(self) -> PodExecutor:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._register_node()
        for target, name in ((self._watch_loop, "watch"), (self._heartbeat_loop, "heartbeat")):
            t = threading.Thread(target=target, name=f"podexec-{name}", daemon=True)
            t.start()
            self._threads.append(t)
        log.info("podexec: node %s ready, runtime=%s network=%s, workdir %s",
                 self.node_name, self.runtime, self.network, self.workdir)
        return self

    def stop(self) -> None:
        self._stop.set()
        with self._lock:
            runners = list(self._runners.values())
        for r in runners:
            r.request_kill("executor stopping")
        for r in runners:
            r.join(timeout=15)
        self.rest.close()  # ends the watch; an open watch also delays API server shutdown
        for t in self._threads:
            t.join(timeout=2)

    def watch_namespace(self, namespace: str) -> None:
        """Start running the pods of `namespace` (existing ones included)."""
        with self._lock:
            self.namespaces.add(namespace)
        for pod in self.rest.get(f"/api/v1/namespaces/{namespace}/pods").get("items", []):
            self._handle("ADDED", pod)

    # -- results for tests -------------------------------------------------------------
    def logs(self, namespace: str, pod: str, container: str | None = None) -> str:
        """What a container wrote to stdout and stderr (all of its runs)."""
        found = sorted(self.workdir.glob(f"pods/{namespace}_{pod}_*/logs/{container or '*'}.log"))
        return "".join(p.read_text(errors="replace") for p in found)

    def wait_for_phase(
        self, namespace: str, name: str, phases: Iterable[str] = TERMINAL, timeout: float = 60.0
    ) -> JSON:
        """Poll the pod until its phase is one of `phases`; returns the pod."""
        wanted = set(phases)
        deadline = time.monotonic() + timeout
        pod: JSON = {}
        while time.monotonic() < deadline:
            pod = self.rest.get(f"/api/v1/namespaces/{namespace}/pods/{name}")
            if pod.get("status", {}).get("phase") in wanted:
                return pod
            time.sleep(0.2)
        raise TimeoutError(
            f"pod {namespace}/{name} not in {sorted(wanted)} after {timeout}s: "
            f"{json.dumps(pod.get('status', {}))}\nlogs:\n{self.logs(namespace, name)}"
        )

    # -- node ----------------------------------------------------------------------------
    def _register_node(self) -> None:
        node = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": self.node_name, "labels": {
                "kubernetes.io/hostname": self.node_name, "kubernetes.io/os": "linux",
                "podexec.test/stand-in-for-kubelet": "true"}},
        }
        with contextlib.suppress(ApiError):
            self.rest.request("POST", "/api/v1/nodes", node)
        self._node_status()
        lease = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": self.node_name, "namespace": "kube-node-lease"},
            "spec": {"holderIdentity": self.node_name, "leaseDurationSeconds": 40,
                     "renewTime": _micro_now()},
        }
        with contextlib.suppress(ApiError):
            self.rest.request(
                "POST", "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases", lease)

    def _node_status(self) -> None:
        now = _now()
        capacity = {"cpu": str(os.cpu_count() or 2), "memory": "16Gi", "pods": "110"}
        status = {
            "capacity": capacity,
            "allocatable": capacity,
            "addresses": [{"type": "InternalIP", "address": "127.0.0.1"},
                          {"type": "Hostname", "address": self.node_name}],
            "conditions": [{
                "type": "Ready", "status": "True", "reason": "PodExecutorReady",
                "message": f"podexec (test stand-in for the kubelet, runtime {self.runtime})",
                "lastHeartbeatTime": now, "lastTransitionTime": now}],
            "nodeInfo": {
                "machineID": "", "systemUUID": "", "bootID": "",
                "kernelVersion": os.uname().release,
                "osImage": "podexec", "containerRuntimeVersion": f"podexec://{self.runtime}",
                "kubeletVersion": "podexec", "kubeProxyVersion": "", "operatingSystem": "linux",
                "architecture": "amd64"},
        }
        self.rest.request("PATCH", f"/api/v1/nodes/{self.node_name}/status",
                          {"status": status}, content_type=MERGE_PATCH)

    def _heartbeat_loop(self) -> None:
        n = 0
        while not self._stop.wait(10):
            n += 1
            try:
                self.rest.request(
                    "PATCH",
                    f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{self.node_name}",
                    {"spec": {"renewTime": _micro_now()}}, content_type=MERGE_PATCH)
                if n % 3 == 0:
                    self._node_status()
            except Exception:
                log.exception("podexec: node heartbeat failed")

    # -- watching pods ------------------------------------------------------------------------
    def _watch_loop(self) -> None:
        rv = ""
        while not self._stop.is_set():
            try:
                if not rv:
                    listing = self.rest.get("/api/v1/pods")
                    for pod in listing.get("items", []):
                        self._handle("ADDED", pod)
                    rv = listing["metadata"]["resourceVersion"]
                for event in self.rest.watch("/api/v1/pods", timeout_seconds=15,
                                             resourceVersion=rv):
                    if self._stop.is_set():
                        return
                    obj = event["object"]
                    if event["type"] == "ERROR":
                        rv = ""  # e.g. 410 Gone: list again
                        break
                    rv = obj["metadata"]["resourceVersion"]
                    if event["type"] != "BOOKMARK":
                        self._handle(event["type"], obj)
            except Exception:
                if self._stop.is_set():
                    return
                log.exception("podexec: watch failed; listing again")
                rv = ""
                time.sleep(0.5)

    def _handle(self, kind: str, pod: JSON) -> None:
        meta, spec = pod["metadata"], pod.get("spec", {})
        ns, uid = meta["namespace"], meta["uid"]
        with self._lock:
            if ns not in self.namespaces or self._stop.is_set():
                return
            runner = self._runners.get(uid)
            if kind == "DELETED":
                if runner:
                    runner.request_kill("pod deleted")
                return
            if meta.get("deletionTimestamp"):
                if runner:
                    runner.request_kill("pod deleted", delete_after=True)
                elif spec.get("nodeName") == self.node_name:
                    self._delete_now(pod)
                return
            if runner or pod.get("status", {}).get("phase") in TERMINAL:
                return
            node = spec.get("nodeName")
            if not node:
                self._bind(pod)
                return
            if node != self.node_name:
                return
            runner = _PodRunner(self, pod)
            self._runners[uid] = runner
            runner.start()

    def _bind(self, pod: JSON) -> None:
        meta = pod["metadata"]
        binding = {
            "apiVersion": "v1", "kind": "Binding",
            "metadata": {"name": meta["name"], "namespace": meta["namespace"], "uid": meta["uid"]},
            "target": {"apiVersion": "v1", "kind": "Node", "name": self.node_name},
        }
        try:
            self.rest.request(
                "POST", f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}/binding",
                binding)
            log.info("podexec: bound %s/%s to node %s", meta["namespace"], meta["name"],
                     self.node_name)
        except ApiError as e:
            if e.status not in (404, 409, 422):
                raise
            log.warning("podexec: %s status not written: %s", self.key, e)

    def _delete_now(self, pod: JSON) -> None:
        meta = pod["metadata"]
        with contextlib.suppress(ApiError):
            self.rest.request(
                "DELETE", f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}",
                {"apiVersion": "v1", "kind": "DeleteOptions", "gracePeriodSeconds": 0,
                 "preconditions": {"uid": meta["uid"]}})

    def _forget(self, uid: str) -> None:
        with self._lock:
            self._runners.pop(uid, None)


class _PodRunner(threading.Thread):
    """Runs one pod from start to a terminal phase, or until it is deleted."""

    def __init__(self, executor: PodExecutor, pod: JSON) -> None:
        meta = pod["metadata"]
        super().__init__(name=f"podexec-{meta['namespace']}/{meta['name']}", daemon=True)
        self.ex = executor
        self.pod = pod
        self.ns, self.pod_name, self.uid = meta["namespace"], meta["name"], meta["uid"]
        self.key = f"{self.ns}/{self.pod_name}"
        self.root = executor.workdir / "pods" / f"{self.ns}_{self.pod_name}_{self.uid[:8]}"
        self.volumes: dict[str, Path] = {}
        spec = pod["spec"]
        self.containers = [_Container(c, True) for c in spec.get("initContainers", [])]
        self.containers += [_Container(c, False) for c in spec.get("containers", [])]
        self.restart_policy = spec.get("restartPolicy", "Always")
        self._kill = threading.Event()
        self._kill_reason = ""
        self._delete_after = False
        self._start_time = ""
        self._started_mono = 0.0
        self._last_status = ""
        self._envs: dict[str, dict[str, str]] = {}

    def request_kill(self, reason: str, delete_after: bool = False) -> None:
        self._kill_reason = self._kill_reason or reason
        self._delete_after = self._delete_after or delete_after
        self._kill.set()

    # -- main loop ------------------------------------------------------------------
    def run(self) -> None:
        try:
            self._run()
        except Exception as e:
            log.exception("podexec: %s crashed", self.key)
            with contextlib.suppress(Exception):
                self._kill_all()
                self._report("Failed", reason="PodExecutorError", message=f"podexec: {e}")
        finally:
            if self._delete_after:
                self.ex._delete_now(self.pod)
                log.info("podexec: %s deleted", self.key)
            self.ex._forget(self.uid)

    def _run(self) -> None:
        spec = self.pod["spec"]
        self._start_time = _now()
        self._started_mono = time.monotonic()
        deadline = spec.get("activeDeadlineSeconds")
        (self.root / "logs").mkdir(parents=True, exist_ok=True)
        # Volumes: wait for missing Secrets/ConfigMaps like the kubelet does.
        while True:
            try:
                self._materialise_volumes()
                self._prepare_envs()
                break
            except UnsupportedError as e:
                self._report("Failed", reason="Unsupported", message=str(e))
                return
            except NotReadyError as e:
                self._report("Pending", waiting=("CreateContainerConfigError", str(e)))
                if self._kill.wait(1.0):
                    return
                if deadline and time.monotonic() - self._started_mono > deadline:
                    self._report("Failed", reason="DeadlineExceeded",
                                 message="Pod was active on the node longer than the "
                                         "specified deadline")
                    return
        self._report("Pending")
        while True:
            if self._kill.is_set():
                self._kill_all()
                self._report_current()
                return
            if deadline and time.monotonic() - self._started_mono > deadline:
                log.info("podexec: %s passed activeDeadlineSeconds=%s; killing", self.key,
                         deadline)
                self._kill_all()
                self._report("Failed", reason="DeadlineExceeded",
                             message="Pod was active on the node longer than the specified "
                                     "deadline")
                return
            phase = self._step()
            if phase in TERMINAL:
                self._report(phase)
                return
            self._kill.wait(0.1)

    def _step(self) -> str:
        """Start, reap and restart containers; returns the pod phase now."""
        changed = False
        inits = [c for c in self.containers if c.init]
        mains = [c for c in self.containers if not c.init]
        pending_init = next((c for c in inits if not c.done), None)
        runnable = [pending_init] if pending_init else mains
        for c in runnable:
            if c.popen is None and not c.done and time.monotonic() >= c.next_start:
                self._launch(c)
                changed = True
            elif c.popen is not None and c.popen.poll() is not None:
                self._reap(c)
                changed = True
        if any(c.init and c.done and c.state["terminated"]["exitCode"] != 0 for c in inits):
            phase = "Failed"
        elif pending_init is None and all(c.done for c in mains):
            codes = [c.state["terminated"]["exitCode"] for c in mains]
            phase = "Succeeded" if all(code == 0 for code in codes) else "Failed"
        else:
            phase = "Pending" if pending_init else "Running"
        if changed and phase not in TERMINAL:
            self._report(phase)
        return phase

    def _reap(self, c: _Container, may_restart: bool = True) -> None:
        assert c.popen is not None
        rc = c.popen.returncode
        code = 128 - rc if rc < 0 else rc  # killed by signal N -> 128+N
        self._cleanup_sandbox(c)
        c.popen = None
        c.state = {"terminated": {
            "exitCode": code, "reason": "Completed" if code == 0 else "Error",
            "startedAt": c.started_at, "finishedAt": _now(), "containerID": f"podexec://{c.cid}"}}
        log.info("podexec: %s container %s exited %d", self.key, c.name, code)
        if c.init:
            restart = code != 0 and self.restart_policy != "Never"
        else:
            restart = self.restart_policy == "Always" or (
                self.restart_policy == "OnFailure" and code != 0)
        if restart and may_restart and not self._kill.is_set():
            c.last_state, c.restarts = c.state, c.restarts + 1
            c.state = {"waiting": {"reason": "CrashLoopBackOff" if code else "Completed"}}
            c.next_start = time.monotonic() + min(10.0, 0.5 * 2 ** min(c.restarts, 5))
        else:
            c.done = True

    def _kill_all(self) -> None:
        running = [c for c in self.containers if c.popen is not None]
        grace = min(float(self.pod["spec"].get("terminationGracePeriodSeconds", 30)), 5.0)
        for c in running:
            self._signal(c, signal.SIGTERM)
        end = time.monotonic() + grace
        for c in running:
            assert c.popen is not None
            while c.popen.poll() is None and time.monotonic() < end:
                time.sleep(0.05)
            if c.popen.poll() is None:
                self._signal(c, signal.SIGKILL)
                c.popen.wait(timeout=10)
            self._reap(c, may_restart=False)

    # -- processes ----------------------------------------------------------------
    def _launch(self, c: _Container) -> None:
        spec = c.spec
        env = self._envs[c.name]
        command = [expand(a, env) for a in spec.get("command", [])]
        args = [expand(a, env) for a in spec.get("args", [])]
        if not command:
            raise UnsupportedError(
                f"container {c.name}: podexec runs `command` (+ `args`) on the host and ignores "
                "the image, so `command` is required")
        argv = command + args
        c.cid = f"{self.uid[:8]}-{c.name}-{c.restarts}"
        c.started_at = _now()
        out = (self.root / "logs" / f"{c.name}.log").open("ab")
        try:
            if self.ex.runtime == "runsc":
                c.popen = self._launch_runsc(c, argv, env, out)
            else:
                c.popen = self._launch_process(c, argv, env, out)
        finally:
            out.close()
        c.state = {"running": {"startedAt": c.started_at}}
        log.info("podexec: %s container %s started (%s, pid %d): %s", self.key, c.name,
                 self.ex.runtime, c.popen.pid, argv)

    def _security(self, c: _Container) -> JSON:
        return {**self.pod["spec"].get("securityContext", {}), **c.spec.get("securityContext", {})}

    def _launch_process(
        self, c: _Container, argv: list[str], env: dict[str, str], out: Any
    ) -> subprocess.Popen[bytes]:
        rootfs = self.root / "rootfs"
        for m in c.spec.get("volumeMounts", []):
            target = rootfs / m["mountPath"].lstrip("/")
            source = self.volumes[m["name"]] / m.get("subPath", "")
            target.parent.mkdir(parents=True, exist_ok=True)
            if not target.is_symlink():
                target.symlink_to(source)
        cwd = rootfs / c.spec.get("workingDir", "").lstrip("/")
        cwd.mkdir(parents=True, exist_ok=True)
        sec = self._security(c)
        run_as = sec.get("runAsUser") if os.geteuid() == 0 else None
        return subprocess.Popen(
            argv, cwd=cwd, env={**env, "PODEXEC_ROOT": str(rootfs), "PWD": str(cwd)},
            stdin=subprocess.DEVNULL,
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            user=run_as, group=sec.get("runAsGroup", run_as) if run_as is not None else None,
        )

    def _launch_runsc(
        self, c: _Container, argv: list[str], env: dict[str, str], out: Any
    ) -> subprocess.Popen[bytes]:
        sec = self._security(c)
        read_only = bool(sec.get("readOnlyRootFilesystem", False))
        mounts: list[JSON] = [{"destination": "/proc", "type": "proc", "source": "proc"}]
        for m in c.spec.get("volumeMounts", []):
            source = self.volumes[m["name"]] / m.get("subPath", "")
            mounts.append({"destination": m["mountPath"], "type": "bind", "source": str(source),
                           "options": ["rbind", "ro" if m.get("readOnly") else "rw"]})
        # After the volumes, so they are bound over them (a checkout under an emptyDir /tmp).
        mounts += [{"destination": str(path), "type": "bind", "source": str(path),
                    "options": ["rbind", "ro"]} for path in self._hidden_host_paths(c)]
        config = {
            "ociVersion": "1.0.0",
            "process": {
                "user": {"uid": int(sec.get("runAsUser", 0)),
                         "gid": int(sec.get("runAsGroup", sec.get("runAsUser", 0)))},
                "args": argv,
                "env": [f"{k}={v}" for k, v in env.items()],
                "cwd": c.spec.get("workingDir") or "/",
            },
            "root": {"path": "/", "readonly": read_only},
            "hostname": self.pod_name[:63],
            "mounts": mounts,
            # A network namespace in the spec would give the pod no network at all, even
            # with --network=host; leave it out so host networking really is the host's.
            "linux": {"namespaces": [{"type": t} for t in
                                     ("pid", "mount", "ipc", "uts",
                                      *(() if self.ex.network == "host" else ("network",)))]},
        }
        bundle = self.root / "bundles" / c.cid
        bundle.mkdir(parents=True, exist_ok=True)
        (bundle / "config.json").write_text(json.dumps(config))
        return subprocess.Popen(
            [*self._runsc(), f"--network={self.ex.network}",
             f"--overlay2={'none' if read_only else 'root:memory'}",
             "run", "--bundle", str(bundle), c.cid],
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def _hidden_host_paths(self, c: _Container) -> list[Path]:
        """The executor's host paths that one of the container's volumes would hide."""
        mount_paths = [Path(m["mountPath"]) for m in c.spec.get("volumeMounts", [])]
        return [path for path in self.ex.host_paths
                if any(path.is_relative_to(mount) for mount in mount_paths)]

    def _runsc(self) -> list[str]:
        return ["runsc", "--rootless", f"--root={self.ex.workdir / 'runsc-state'}"]

    def _signal(self, c: _Container, sig: signal.Signals) -> None:
        if c.popen is None:
            return
        if self.ex.runtime == "runsc":
            subprocess.run([*self._runsc(), "kill", c.cid, str(int(sig))],
                           capture_output=True, check=False, timeout=30)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(c.popen.pid, sig)

    def _cleanup_sandbox(self, c: _Container) -> None:
        if self.ex.runtime == "runsc":
            subprocess.run([*self._runsc(), "delete", "--force", c.cid],
                           capture_output=True, check=False, timeout=30)

    # -- volumes and env --------------------------------------------------------------
    def _get(self, kind: str, name: str, optional: bool) -> JSON | None:
        try:
            return self.ex.rest.get(f"/api/v1/namespaces/{self.ns}/{kind}/{name}")
        except ApiError as e:
            if e.status == 404:
                if optional:
                    return None
                raise NotReadyError(f"{kind[:-1]} {name!r} not found") from e
            raise

    def _object_files(self, kind: str, ref: JSON) -> dict[str, bytes]:
        obj = self._get(kind, ref["name"], bool(ref.get("optional")))
        if obj is None:
            return {}
        files = {k: base64.b64decode(v) for k, v in (obj.get("data") or {}).items()} \
            if kind == "secrets" else {k: v.encode() for k, v in (obj.get("data") or {}).items()}
        files.update({k: base64.b64decode(v) for k, v in (obj.get("binaryData") or {}).items()})
        if "items" in ref:
            picked = {}
            for item in ref["items"]:
                if item["key"] not in files:
                    if ref.get("optional"):
                        continue
                    raise NotReadyError(f"key {item['key']!r} not in {kind[:-1]} {ref['name']!r}")
                picked[item["path"]] = files[item["key"]]
            return picked
        return files

    def _field(self, path: str) -> str:
        meta, spec = self.pod["metadata"], self.pod["spec"]
        m = re.fullmatch(r"metadata\.(labels|annotations)\['(.+)'\]", path)
        if m:
            return str(meta.get(m.group(1), {}).get(m.group(2), ""))
        values = {
            "metadata.name": meta["name"], "metadata.namespace": meta["namespace"],
            "metadata.uid": meta["uid"], "spec.nodeName": self.ex.node_name,
            "spec.serviceAccountName": spec.get("serviceAccountName", ""),
            "status.hostIP": "127.0.0.1", "status.podIP": "127.0.0.1",
            "status.hostIPs": "127.0.0.1", "status.podIPs": "127.0.0.1",
        }
        if path not in values:
            raise UnsupportedError(f"fieldRef {path!r} is not supported by podexec")
        return str(values[path])

    def _token(self, source: JSON) -> bytes:
        sa = self.pod["spec"].get("serviceAccountName", "default")
        body: JSON = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {
            "expirationSeconds": int(source.get("expirationSeconds", 3600)),
            "boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": self.pod_name,
                               "uid": self.uid}}}
        if source.get("audience"):
            body["spec"]["audiences"] = [source["audience"]]
        answer = self.ex.rest.request(
            "POST", f"/api/v1/namespaces/{self.ns}/serviceaccounts/{sa}/token", body)
        return str(answer["status"]["token"]).encode()

    def _materialise_volumes(self) -> None:
        for vol in self.pod["spec"].get("volumes", []):
            name = vol["name"]
            target = self.root / "volumes" / name
            if "hostPath" in vol:
                self.volumes[name] = Path(vol["hostPath"]["path"])
                continue
            files: dict[str, bytes] = {}
            mode = 0o644
            if "emptyDir" in vol:
                target.mkdir(parents=True, exist_ok=True)
                target.chmod(0o777)
                self.volumes[name] = target
                continue
            if "secret" in vol:
                src = vol["secret"]
                files = self._object_files(
                    "secrets", {**src, "name": src["secretName"]})
                mode = src.get("defaultMode", mode)
            elif "configMap" in vol:
                files = self._object_files("configmaps", vol["configMap"])
                mode = vol["configMap"].get("defaultMode", mode)
            elif "downwardAPI" in vol:
                files = self._downward(vol["downwardAPI"].get("items", []))
                mode = vol["downwardAPI"].get("defaultMode", mode)
            elif "projected" in vol:
                mode = vol["projected"].get("defaultMode", mode)
                for source in vol["projected"].get("sources", []):
                    if "secret" in source:
                        files.update(self._object_files("secrets", source["secret"]))
                    elif "configMap" in source:
                        files.update(self._object_files("configmaps", source["configMap"]))
                    elif "downwardAPI" in source:
                        files.update(self._downward(source["downwardAPI"].get("items", [])))
                    elif "serviceAccountToken" in source:
                        sat = source["serviceAccountToken"]
                        files[sat["path"]] = self._token(sat)
                    else:
                        raise UnsupportedError(
                            f"projected source {sorted(source)} in volume {name!r} "
                            "is not supported by podexec")
            else:
                kinds = sorted(k for k in vol if k != "name")
                raise UnsupportedError(
                    f"volume {name!r} of type {kinds} is not supported by podexec")
            if target.exists():
                shutil.rmtree(target)
            target.mkdir(parents=True)
            # The kubelet gives volume files to the pod's fsGroup, so a non-root pod reads them.
            fs_group = (self.pod["spec"].get("securityContext") or {}).get("fsGroup")
            for rel, data in files.items():
                path = target / rel
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(data)
                path.chmod(mode)
                if fs_group is not None and os.geteuid() == 0:
                    for owned in [path, *path.relative_to(target).parents]:
                        os.chown(target / owned, -1, int(fs_group))
            self.volumes[name] = target

    def _downward(self, items: list[JSON]) -> dict[str, bytes]:
        out = {}
        for item in items:
            if "fieldRef" not in item:
                raise UnsupportedError("downwardAPI items other than fieldRef are not supported")
            out[item["path"]] = self._field(item["fieldRef"]["fieldPath"]).encode()
        return out

    def _prepare_envs(self) -> None:
        for c in self.containers:
            env = {
                "PATH": os.environ.get("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:"
                                               "/usr/bin:/sbin:/bin"),
                "HOSTNAME": self.pod_name,
                "HOME": "/root" if int(self._security(c).get("runAsUser", 0)) == 0 else "/",
                "KUBERNETES_SERVICE_HOST": self.ex.api_host,
                "KUBERNETES_SERVICE_PORT": self.ex.api_port,
                "KUBERNETES_SERVICE_PORT_HTTPS": self.ex.api_port,
            }
            for src in c.spec.get("envFrom", []):
                prefix = src.get("prefix", "")
                if "configMapRef" in src:
                    data = self._object_files("configmaps", src["configMapRef"])
                elif "secretRef" in src:
                    data = self._object_files("secrets", src["secretRef"])
                else:
                    raise UnsupportedError(f"envFrom {sorted(src)} is not supported by podexec")
                env.update({prefix + k: v.decode() for k, v in data.items()})
            for var in c.spec.get("env", []):
                env[var["name"]] = self._env_value(var, env)
            self._envs[c.name] = env

    def _env_value(self, var: JSON, env: dict[str, str]) -> str:
        if "valueFrom" not in var:
            return expand(var.get("value", ""), env)
        ref = var["valueFrom"]
        for key, kind in (("secretKeyRef", "secrets"), ("configMapKeyRef", "configmaps")):
            if key in ref:
                sel = ref[key]
                files = self._object_files(kind, {"name": sel["name"],
                                                  "optional": sel.get("optional", False)})
                if sel["key"] not in files:
                    if sel.get("optional"):
                        return ""
                    raise NotReadyError(f"key {sel['key']!r} not in {kind[:-1]} {sel['name']!r}")
                return files[sel["key"]].decode()
        if "fieldRef" in ref:
            return self._field(ref["fieldRef"]["fieldPath"])
        raise UnsupportedError(f"env {var['name']}: valueFrom {sorted(ref)} is not supported")

    # -- status ------------------------------------------------------------------
    def _report_current(self) -> None:
        mains = [c for c in self.containers if not c.init]
        codes = [c.state.get("terminated", {}).get("exitCode", 1) for c in mains]
        phase = "Succeeded" if mains and all(code == 0 for code in codes) else "Failed"
        self._report(phase)

    def _container_status(self, c: _Container) -> JSON:
        status: JSON = {
            "name": c.name, "image": c.spec.get("image", "podexec"),
            "imageID": f"podexec://{c.spec.get('image', 'podexec')}",
            "ready": "running" in c.state, "started": "running" in c.state,
            "restartCount": c.restarts, "state": c.state,
        }
        if c.cid:
            status["containerID"] = f"podexec://{c.cid}"
        if c.last_state:
            status["lastState"] = c.last_state
        return status

    def _report(
        self,
        phase: str,
        *,
        reason: str = "",
        message: str = "",
        waiting: tuple[str, str] | None = None,
    ) -> None:
        if waiting:
            for c in self.containers:
                if c.popen is None and not c.done:
                    c.state = {"waiting": {"reason": waiting[0], "message": waiting[1]}}
        if phase == "Failed" and reason == "DeadlineExceeded":
            for c in self.containers:
                if "terminated" not in c.state:
                    c.state = {"terminated": {"exitCode": 137, "reason": "DeadlineExceeded",
                                              "startedAt": c.started_at or self._start_time,
                                              "finishedAt": _now()}}
        now = _now()
        mains = [c for c in self.containers if not c.init]
        inits = [c for c in self.containers if c.init]
        ready = phase == "Running" and all("running" in c.state for c in mains)
        initialized = all(c.done for c in inits)

        def cond(kind: str, ok: bool) -> JSON:
            return {"type": kind, "status": "True" if ok else "False",
                    "lastProbeTime": None, "lastTransitionTime": now}

        status: JSON = {
            "phase": phase,
            "hostIP": "127.0.0.1", "hostIPs": [{"ip": "127.0.0.1"}],
            "podIP": "127.0.0.1", "podIPs": [{"ip": "127.0.0.1"}],
            "startTime": self._start_time,
            "conditions": [cond("PodScheduled", True), cond("Initialized", initialized),
                           cond("ContainersReady", ready), cond("Ready", ready)],
            "containerStatuses": [self._container_status(c) for c in mains],
            "reason": reason or None,
            "message": message or None,
        }
        if inits:
            status["initContainerStatuses"] = [self._container_status(c) for c in inits]
        fingerprint = json.dumps({k: v for k, v in status.items() if k != "conditions"},
                                 sort_keys=True)
        if fingerprint == self._last_status:
            return
        self._last_status = fingerprint
        try:
            self.ex.rest.request(
                "PATCH", f"/api/v1/namespaces/{self.ns}/pods/{self.pod_name}/status",
                {"metadata": {"uid": self.uid}, "status": status}, content_type=MERGE_PATCH)
            log.info("podexec: %s phase %s%s", self.key, phase, f" ({reason})" if reason else "")
        except ApiError as e:
            if e.status not in (404, 409, 422):
                raise
            log.warning("podexec: %s status not written: %s", self.key, e)

