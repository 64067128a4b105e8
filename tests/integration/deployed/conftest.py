"""Fixtures for the deployed path on a real node (tests/kube/node.py): the chart's
operator and gateway running as real pods from the images hack/build-images.sh builds,
imported into the node's containerd. Marker `node`, deselected by default
(pyproject.toml): `pytest -m node tests/integration/deployed`.

The control plane listens on 127.0.0.1 only and the node has no cluster DNS, so two
bridges are made here, each removed afterwards (docs/testing.md, "The deployed path on
a real node"):

- pods reach the API server through the `kubernetes` Service's address (10.96.0.1:443,
  which the serving certificate names): an nftables table of ours DNATs that address,
  from the pod network only, to a TCP relay on the node's address that forwards to the
  API server's loopback port (kube-proxy's own rule would send pods to 127.0.0.1, which
  in a pod's network namespace is the pod);
- the operator is told the gateway's Service by its ClusterIP (operator.extraEnv), not
  by name.
"""

from __future__ import annotations

import contextlib
import importlib.util
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from tests.kube import ControlPlane, external, node_plugin
from tests.kube.controlplane import REPO_ROOT
from tests.kube.node import Node
from tests.kube.node_plugin import pytest_runtest_makereport

KUBERNETES_SERVICE_IP = "10.96.0.1"
NFT_TABLE = "continue_e2e_apiserver"

# `node` is tests/integration/conftest.py's, shared with tests/integration/node.
__all__ = ["pytest_runtest_makereport"]
IMAGES = ("operator", "runner")


def pytest_collection_finish(session: pytest.Session) -> None:
    """Build what the node lacks, and this checkout's images, before any test starts
    (outside the per-test timeouts)."""
    node_plugin.pytest_collection_finish(session)
    if not session.config.option.collectonly and any(
        "images" in getattr(item, "fixturenames", ()) for item in session.items
    ):
        for kind in IMAGES:
            _archive(kind)


class Relay:
    """A TCP relay: accepts on (host, port), connects each client to `target`."""

    def __init__(
        self, host: str, target: tuple[str, int], tls: ssl.SSLContext | None = None
    ) -> None:
        self.target = target
        self.tls = tls  # terminate TLS with this server context, relay plain to target
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, 0))
        self.sock.listen(64)
        self.port: int = self.sock.getsockname()[1]
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.closed:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        try:
            if self.tls is not None:
                client.settimeout(10)
                client = self.tls.wrap_socket(client, server_side=True)
                client.settimeout(None)
            upstream = socket.create_connection(self.target, timeout=10)
        except OSError:
            client.close()
            return
        upstream.settimeout(None)

        def pump(src: socket.socket, dst: socket.socket) -> None:
            with contextlib.suppress(OSError):
                while data := src.recv(65536):
                    dst.sendall(data)
            with contextlib.suppress(OSError):
                dst.shutdown(socket.SHUT_WR)

        t = threading.Thread(target=pump, args=(upstream, client), daemon=True)
        t.start()
        pump(client, upstream)
        t.join()
        client.close()
        upstream.close()

    def close(self) -> None:
        self.closed = True
        self.sock.close()


def _nft(script: str, check: bool = True) -> None:
    subprocess.run(["nft", "-f", "-"], input=script, text=True, check=check, capture_output=True)


@pytest.fixture(scope="session")
def apiserver_for_pods(kube: ControlPlane, node: Node) -> Iterator[Relay | None]:
    """Pods reach the API server at 10.96.0.1:443, as in any cluster (a user's cluster
    does that itself: nothing to do there)."""
    if external.requested():
        yield None
        return
    port = int(kube.server.rsplit(":", 1)[1])
    relay = Relay(node.node_ip, ("127.0.0.1", port))
    _nft(f"delete table ip {NFT_TABLE}", check=False)
    _nft(
        f"""table ip {NFT_TABLE} {{
  chain prerouting {{
    type nat hook prerouting priority -150; policy accept;
    ip saddr {node.pod_cidr} ip daddr {KUBERNETES_SERVICE_IP} tcp dport 443 \\
      dnat to {node.node_ip}:{relay.port}
  }}
}}
"""
    )
    try:
        yield relay
    finally:
        _nft(f"delete table ip {NFT_TABLE}", check=False)
        relay.close()


def _archive(kind: str) -> Path:
    """The image archive of this checkout, built by hack/build-images.sh when missing
    (`make e2e` builds both first, outside the per-test timeout)."""
    script = REPO_ROOT / "hack" / "build-images.sh"
    printed = subprocess.run(
        ["bash", str(script), "--print", kind], check=True, capture_output=True, text=True
    ).stdout.split()
    archive = Path(printed[0])
    if not archive.exists():
        print(f"\n[images] building the {kind} image of this checkout", file=sys.stderr)
        subprocess.run(["bash", str(script), kind], check=True, stdout=sys.stderr)
    return archive


@pytest.fixture(scope="session")
def images(node: Node) -> dict[str, str]:
    """By-digest references of the operator and runner images, imported into the node."""
    return {kind: node.import_image(_archive(kind)) for kind in IMAGES}


@pytest.fixture
def fresh_name() -> str:
    return uuid.uuid4().hex[:6]


def _pgtemp() -> Any:
    spec = importlib.util.spec_from_file_location("pgtemp", REPO_ROOT / "hack" / "pgtemp.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["pgtemp"] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def ledger_url(node: Node) -> Iterator[str]:
    """A PostgreSQL ledger the pods reach on the node's address (the chart's ledger: the
    operator and the gateway are two pods, which cannot share one SQLite file).
    hack/pgtemp.py starts it on loopback; it is restarted here listening on the node's
    address too, trusting the pod network."""
    pgtemp = _pgtemp()
    # Not under pytest's basetemp: its parent is 0700 and the server runs as `postgres`.
    directory = Path(tempfile.mkdtemp(prefix="co-e2e-ledger-"))
    server = pgtemp.start(directory, durable=False)
    server.stop()
    with (server.data / "pg_hba.conf").open("a") as hba:
        hba.write(f"host all all {node.pod_cidr} trust\n")
    options = (
        f"-c listen_addresses=127.0.0.1,{node.node_ip} -c unix_socket_directories= "
        f"-c max_connections=200 -c fsync=off -p {server.port}"
    )
    subprocess.run(
        [*server.as_user, str(server.bindir / "pg_ctl"), "-D", str(server.data), "-l",
         str(server.data.parent / "server.log"), "-w", "-t", "60", "-o", options, "start"],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    try:
        yield f"postgresql://postgres@{node.node_ip}:{server.port}/postgres"
    finally:
        server.stop()
        shutil.rmtree(directory, ignore_errors=True)


@dataclass(frozen=True)
class ForgeTLS:
    """TLS for the test forge as pods reach it: a CA of the test's, a serving certificate
    for the node's address, and the bundle the chart's `trust.caBundle` gives the operator
    and the gateway (the system's CAs plus this one). The operator refuses plain http to
    a forge on another machine, as it should."""

    context: ssl.SSLContext
    ca_cert: Path
    bundle: Path


@pytest.fixture(scope="session")
def forge_tls(node: Node, tmp_path_factory: pytest.TempPathFactory) -> ForgeTLS:
    from tests.kube.certs import CertAuthority

    directory = tmp_path_factory.mktemp("forge-tls")
    ca = CertAuthority(directory)
    pair = ca.issue("forge", node.node_ip, server_hosts=(node.node_ip,))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pair.cert, pair.key)
    bundle = directory / "ca-certificates.crt"
    system = Path("/etc/ssl/certs/ca-certificates.crt")
    bundle.write_text((system.read_text() if system.exists() else "") + ca.pair.cert.read_text())
    return ForgeTLS(context, ca.pair.cert, bundle)


@pytest.fixture(scope="session")
def forge_for_pods(
    node: Node, forge_tls: ForgeTLS, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Any, str]]:
    """A real Gitea (tests/forge, on loopback, seeded with the demo repository) and the
    https base URL pods reach it at: a TLS-terminating relay on the node's address, its
    certificate from `forge_tls`. Git's smart HTTP does not care which host it was asked
    under."""
    from tests.forge import Gitea

    server = Gitea(tmp_path_factory.mktemp("gitea"))
    server.start()
    relay = Relay(node.node_ip, ("127.0.0.1", server.port), tls=forge_tls.context)
    try:
        yield server, f"https://{node.node_ip}:{relay.port}"
    finally:
        relay.close()
        server.stop()


class ModelThread:
    """The demo's scripted model on the node's address, on a loop of its own."""

    def __init__(self, host: str, script: Path) -> None:
        import asyncio

        from continue_orchestrator import local

        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, daemon=True).start()
        self.model = local.ScriptedModel(local.Script.from_file(script))
        self.base = self.call(self.model.start(host, 0))
        self.hostport = self.base.split("//", 1)[1].split("/", 1)[0]

    def call(self, coroutine: Any) -> Any:
        import asyncio

        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(60)

    def stop(self) -> None:
        self.call(self.model.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)


@pytest.fixture
def scripted_model(node: Node) -> Iterator[ModelThread]:
    model = ModelThread(node.node_ip, REPO_ROOT / "examples" / "demo" / "model-script.yaml")
    try:
        yield model
    finally:
        model.stop()


@pytest.fixture(scope="session")
def release(
    kube: ControlPlane,
    node: Node,
    images: dict[str, str],
    ledger_url: str,
    apiserver_for_pods: Relay | None,
    forge_tls: ForgeTLS,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Any]:
    """The chart installed in `co-system-<id>`, its operator and gateway pods Ready,
    trusting the test forge's CA (`trust.caBundle`)."""
    from tests.integration.deployed.deployed_support import Release

    namespace = kube.create_namespace(f"co-system-{uuid.uuid4().hex[:6]}")
    it = Release(
        kube, node, namespace, images, ledger_url, tmp_path_factory.mktemp("release"),
        ca_bundle=forge_tls.bundle,
    )  # fmt: skip
    try:
        it.install()
        print(f"\n[deployed] timings: {it.timings}", file=sys.stderr)
        yield it
    finally:
        it.uninstall()
        kube.delete_namespace(namespace)


class Canary:
    """A TCP listener that records every connection it accepts (none may arrive)."""

    def __init__(self, host: str) -> None:
        self.accepted: list[tuple[str, int]] = []
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, 0))
        self.sock.listen(8)
        self.host, self.port = host, self.sock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, peer = self.sock.accept()
            except OSError:
                return
            self.accepted.append(peer)
            conn.close()

    def close(self) -> None:
        self.sock.close()
