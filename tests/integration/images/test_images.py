"""The images built without Docker (hack/build-images.sh, docs/images.md).

Each image archive is unpacked with umoci into an OCI runtime bundle, as a container
runtime would, and its entrypoint is run from the bundle's own config (user, env,
working directory) under gVisor (`runsc run`): the runner image must hold what the runner
needs (Python with this package, git, Node.js, the pinned Continue CLI) and run as the
non-root user the pod security context demands; the operator image must run
`orchestrator operator|gateway` as the chart's Deployments do, with the ledger's native
core built. The reproducibility test builds the runner image a second time, from scratch
in an empty store of its own, side by side with the first build (started with it: the
network-bound steps overlap), and compares digests.

Marker `images` (deselected by default; `make images` builds, `pytest -m images` tests).
A cold build of both images takes minutes on two cores; the fixture builds what the cache
lacks, outside the per-test timeout only in the sense that it is given its own.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tarfile
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from continue_orchestrator.controller._manifests import NON_ROOT_UID

pytestmark = [pytest.mark.images, pytest.mark.timeout(3600)]

CHECKOUT = Path(__file__).resolve().parents[3]
BUILD = CHECKOUT / "hack" / "build-images.sh"
CN_VERSION = "1.5.47"  # hack/install-cn.sh, runner-image/cn/package.json
NODE_VERSION = "v20.20.2"  # hack/build-images.sh


class Build:
    """hack/build-images.sh running in the background; `result()` waits for it."""

    def __init__(self, *args: str, env: dict[str, str] | None = None) -> None:
        self.proc = subprocess.Popen(
            [str(BUILD), *args],
            cwd=CHECKOUT,
            env={**os.environ, **(env or {})},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def result(self) -> dict[str, tuple[Path, str]]:
        """{name: (archive, digest)} once the build has ended; fails the test if it failed."""
        stdout, stderr = self.proc.communicate()
        assert self.proc.returncode == 0, f"build-images failed:\n{stderr[-4000:]}"
        images = {}
        for line in stdout.splitlines():
            name, archive, digest = line.split()
            images[name] = (Path(archive), digest)
        return images

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()  # the script's trap removes its store
            self.proc.communicate(timeout=120)


REBUILD_TEST = "test_the_runner_image_builds_again_to_the_same_digest"


@pytest.fixture(scope="module")
def rebuild(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Build | None]:
    """The runner image's second build (`--rebuild`: an empty store of its own, its own
    archive), started before the first so that the two run side by side; only when the
    reproducibility test is selected."""
    if not any(item.name == REBUILD_TEST for item in request.session.items):
        yield None
        return
    again = Build("--rebuild", "runner", env={"IMAGES_OUT": str(tmp_path_factory.mktemp("again"))})
    try:
        yield again
    finally:
        again.stop()


@pytest.fixture(scope="module")
def images(rebuild: Build | None) -> dict[str, tuple[Path, str]]:
    return Build().result()


def index_of(archive: Path) -> dict[str, Any]:
    with tarfile.open(archive) as tar:
        member = tar.extractfile("index.json")
        assert member is not None
        data: dict[str, Any] = json.load(member)
    return data


def blob(archive: Path, digest: str) -> bytes:
    with tarfile.open(archive) as tar:
        member = tar.extractfile(f"blobs/sha256/{digest.removeprefix('sha256:')}")
        assert member is not None
        return member.read()


class Bundle:
    """An image unpacked by umoci into an OCI runtime bundle, run with runsc."""

    def __init__(self, archive: Path, work: Path) -> None:
        self.work = work
        layout = work / "layout"
        layout.mkdir(parents=True)
        with tarfile.open(archive) as tar:
            tar.extractall(layout, filter="tar")
        ref = index_of(archive)["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"]
        self.path = work / "bundle"
        subprocess.run(
            ["umoci", "unpack", "--image", f"{layout}:{ref}", str(self.path)],
            check=True,
            capture_output=True,
        )
        shutil.rmtree(layout)
        self.config: dict[str, Any] = json.loads((self.path / "config.json").read_text())
        self.state = work / "runsc"
        manifest = json.loads(blob(archive, index_of(archive)["manifests"][0]["digest"]))
        self.image_config: dict[str, Any] = json.loads(blob(archive, manifest["config"]["digest"]))

    @property
    def process(self) -> dict[str, Any]:
        return dict(self.config["process"])

    def run(self, args: Sequence[str] | None = None, *, entrypoint: bool = True) -> str:
        """Runs the image's entrypoint (with `args` in place of CMD), or `args` alone,
        as the image's user under gVisor with no network; returns stdout+stderr."""
        config = json.loads(json.dumps(self.config))
        process = config["process"]
        process["terminal"] = False
        if args is not None:
            process["args"] = (self.entrypoint if entrypoint else []) + list(args)
        # A read-only root as in the pod; /tmp writable as the pod's emptyDir is.
        config["root"]["readonly"] = True
        if all(m["destination"] != "/tmp" for m in config["mounts"]):  # else a VOLUME
            config["mounts"].append(
                {
                    "destination": "/tmp",
                    "type": "tmpfs",
                    "source": "tmpfs",
                    "options": ["nosuid", "nodev", "mode=1777"],
                }
            )
        (self.path / "config.json").write_text(json.dumps(config))
        name = f"images-{uuid.uuid4().hex[:8]}"
        try:
            out = subprocess.run(
                [
                    "runsc",
                    f"--root={self.state}",
                    "--network=none",
                    "--ignore-cgroups",
                    "run",
                    "--bundle",
                    str(self.path),
                    name,
                ],
                capture_output=True,
                text=True,
                timeout=300,
                check=False,
            )
        finally:
            subprocess.run(
                ["runsc", f"--root={self.state}", "delete", "--force", name],
                capture_output=True,
                check=False,
            )
        assert out.returncode == 0, (
            f"{process['args']} exited {out.returncode}:\n{out.stdout}\n{out.stderr}"
        )
        return out.stdout + out.stderr

    @property
    def entrypoint(self) -> list[str]:
        return list(self.image_config["config"].get("Entrypoint") or [])


@pytest.fixture
def unpack(tmp_path: Path) -> Iterator[Any]:
    if not shutil.which("runsc"):
        pytest.fail("runsc (gVisor) is needed: make sandbox-deps")

    def _unpack(archive: Path) -> Bundle:
        return Bundle(archive, tmp_path / archive.name.split("-")[0])

    yield _unpack


def test_the_archives_name_the_image_for_ctr_import(
    images: dict[str, tuple[Path, str]],
) -> None:
    for archive, digest in images.values():
        (entry,) = index_of(archive)["manifests"]
        assert entry["digest"] == digest
        name = entry["annotations"]["io.containerd.image.name"]
        assert name == entry["annotations"]["org.opencontainers.image.ref.name"]
        assert ":" in name.rsplit("/", 1)[-1], name
        manifest = json.loads(blob(archive, digest))
        for layer in manifest["layers"]:  # every blob the manifest names is in the archive
            assert len(blob(archive, layer["digest"])) == layer["size"]


def test_the_runner_image_holds_what_the_runner_needs(
    images: dict[str, tuple[Path, str]],
    unpack: Any,
) -> None:
    bundle = unpack(images["runner"][0])
    config = bundle.image_config["config"]
    assert config["User"] == f"{NON_ROOT_UID}:{NON_ROOT_UID}"
    assert bundle.process["user"]["uid"] == NON_ROOT_UID
    assert bundle.process["user"]["gid"] == NON_ROOT_UID
    assert config["WorkingDir"] == "/workspace"
    assert bundle.entrypoint == [
        "/usr/bin/tini",
        "--",
        "/opt/orchestrator/bin/python",
        "-m",
        "continue_orchestrator.runner",
    ]

    # The entrypoint itself, as the pod runs it (under gVisor, as 65532, read-only root).
    assert "--prepare-only" in bundle.run(["--help"])
    # What it calls: the pinned cn on PATH, node, git; and who it runs as.
    assert bundle.run(["cn", "--version"], entrypoint=False).strip() == CN_VERSION
    assert bundle.run(["node", "--version"], entrypoint=False).strip() == NODE_VERSION
    assert bundle.run(["git", "--version"], entrypoint=False).startswith("git version 2.39")
    assert bundle.run(["id", "-u"], entrypoint=False).strip() == str(NON_ROOT_UID)
    out = bundle.run(
        ["python", "-c", "import continue_orchestrator, sys; print(sys.version)"], entrypoint=False
    )
    assert out.startswith("3.11."), out


def test_the_operator_image_runs_the_charts_commands(
    images: dict[str, tuple[Path, str]],
    unpack: Any,
) -> None:
    bundle = unpack(images["operator"][0])
    assert bundle.image_config["config"]["User"] == f"{NON_ROOT_UID}:{NON_ROOT_UID}"
    assert bundle.process["user"]["uid"] == NON_ROOT_UID
    # The chart's Deployments: command [orchestrator], args [operator|gateway, ...].
    assert "--peering" in bundle.run(["orchestrator", "operator", "--help"], entrypoint=False)
    assert "--admin-listen" in bundle.run(["orchestrator", "gateway", "--help"], entrypoint=False)
    # What those commands import when they start (kopf, the controller, the gateway).
    bundle.run(
        [
            "python",
            "-c",
            "import kopf, continue_orchestrator.controller, continue_orchestrator.gateway",
        ],
        entrypoint=False,
    )
    # The ledger's native core was built by the pip install, not skipped.
    out = bundle.run(
        ["python", "-c", "import continue_orchestrator.ledger._native as n; print(n.__file__)"],
        entrypoint=False,
    )
    assert out.strip().endswith(".so"), out
    assert bundle.run(["git", "--version"], entrypoint=False).startswith("git version")


def test_the_runner_image_builds_again_to_the_same_digest(
    images: dict[str, tuple[Path, str]],
    rebuild: Build | None,
) -> None:
    assert rebuild is not None
    first_archive, first = images["runner"]
    second_archive, second = rebuild.result()["runner"]
    assert first_archive != second_archive
    if first == second:
        return
    m1 = json.loads(blob(first_archive, first))
    m2 = json.loads(blob(second_archive, second))
    differ = [
        (n, a["digest"], b["digest"])
        for n, (a, b) in enumerate(zip(m1["layers"], m2["layers"], strict=True))
        if a["digest"] != b["digest"]
    ]
    c1 = json.loads(blob(first_archive, m1["config"]["digest"]))
    c2 = json.loads(blob(second_archive, m2["config"]["digest"]))
    config_differs = [k for k in sorted(set(c1) | set(c2)) if c1.get(k) != c2.get(k)]
    pytest.fail(
        f"two builds of the runner image differ: {first} vs {second}; "
        f"layers (index, first, second): {differ}; config keys: {config_differs}"
    )
