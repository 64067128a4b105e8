"""Tiny OCI images written without Docker or a registry, for the real node's tests.

`busybox_image` packs Debian's static busybox (package busybox-static) into a one-layer
OCI image layout tar: deterministic (fixed mtimes, sorted entries, no compression), so
two builds give one digest. `tests.kube.node.Node.import_image` loads any OCI archive
into the node's containerd and returns a by-digest reference.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import tarfile
from collections.abc import Sequence
from pathlib import Path

BUSYBOX = Path("/usr/bin/busybox")
# The applets the smoke tests use, as symlinks to /bin/busybox.
APPLETS = (
    "sh",
    "cat",
    "echo",
    "ls",
    "sleep",
    "dmesg",
    "nc",
    "httpd",
    "ip",
    "ifconfig",
    "hostname",
    "id",
    "ps",
    "test",
    "true",
    "false",
    "uname",
    "env",
    "mkdir",
    "timeout",
    "seq",
    "grep",
)
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"


def _sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _add(
    tar: tarfile.TarFile,
    name: str,
    *,
    data: bytes | None = None,
    mode: int = 0o755,
    kind: bytes = tarfile.REGTYPE,
    link: str = "",
) -> None:
    info = tarfile.TarInfo(name)
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    info.mode = mode
    info.type = kind
    info.linkname = link
    if data is not None:
        info.size = len(data)
    tar.addfile(info, io.BytesIO(data) if data is not None else None)


def _layer(files: dict[str, bytes]) -> bytes:
    busybox = BUSYBOX.read_bytes()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for d in ("bin", "etc", "proc", "sys", "dev", "tmp", "root", "var", "var/run"):
            _add(tar, d, kind=tarfile.DIRTYPE, mode=0o1777 if d == "tmp" else 0o755)
        _add(tar, "bin/busybox", data=busybox)
        for applet in sorted(APPLETS):
            _add(tar, f"bin/{applet}", kind=tarfile.SYMTYPE, link="busybox", mode=0o777)
        base = {
            "etc/passwd": b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534::/:/bin/sh\n",
            "etc/group": b"root:x:0:\nnogroup:x:65534:\n",
        }
        for name, data in sorted({**base, **files}.items()):
            _add(tar, name, data=data, mode=0o644)
    return buf.getvalue()


def oci_archive(
    dest: Path,
    name: str,
    layer: bytes,
    *,
    entrypoint: Sequence[str] = (),
    cmd: Sequence[str] = ("/bin/sh",),
    env: Sequence[str] = ("PATH=/bin",),
) -> str:
    """Write a one-layer OCI image layout as a tar at `dest`, its index naming the image
    `name` (repository:tag); returns the manifest digest."""
    config = {
        "architecture": "amd64",
        "os": "linux",
        "created": "1970-01-01T00:00:00Z",
        "config": {"Env": list(env), "Entrypoint": list(entrypoint) or None, "Cmd": list(cmd)},
        "rootfs": {"type": "layers", "diff_ids": [_sha(layer)]},
        "history": [{"created": "1970-01-01T00:00:00Z", "created_by": "tests/kube/images.py"}],
    }
    config_blob = json.dumps(config, sort_keys=True, separators=(",", ":")).encode()
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": _sha(config_blob), "size": len(config_blob)},
        "layers": [{"mediaType": OCI_LAYER, "digest": _sha(layer), "size": len(layer)}],
    }
    manifest_blob = json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()
    digest = _sha(manifest_blob)
    index = {
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [
            {
                "mediaType": OCI_MANIFEST,
                "digest": digest,
                "size": len(manifest_blob),
                "platform": {"architecture": "amd64", "os": "linux"},
                "annotations": {
                    "io.containerd.image.name": name,
                    "org.opencontainers.image.ref.name": name.rpartition(":")[2],
                },
            }
        ],
    }
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(dest, mode="w", format=tarfile.PAX_FORMAT) as tar:
        _add(tar, "oci-layout", data=b'{"imageLayoutVersion":"1.0.0"}', mode=0o644)
        _add(
            tar,
            "index.json",
            data=json.dumps(index, sort_keys=True, separators=(",", ":")).encode(),
            mode=0o644,
        )
        _add(tar, "blobs", kind=tarfile.DIRTYPE)
        _add(tar, "blobs/sha256", kind=tarfile.DIRTYPE)
        for blob in (layer, config_blob, manifest_blob):
            _add(tar, f"blobs/sha256/{_sha(blob)[7:]}", data=blob, mode=0o644)
    return digest


def busybox_image(
    dest: Path,
    name: str = "continue-orchestrator.local/busybox:test",
    *,
    entrypoint: Sequence[str] = (),
    cmd: Sequence[str] = ("/bin/sh",),
    files: dict[str, bytes] | None = None,
) -> str:
    """An OCI archive of Debian's static busybox at `dest`; returns its manifest digest."""
    if not BUSYBOX.exists() or shutil.which("busybox") is None:
        raise FileNotFoundError(
            f"{BUSYBOX} is missing: apt-get install busybox-static (hack/build-node.sh does)"
        )
    return oci_archive(dest, name, _layer(files or {}), entrypoint=entrypoint, cmd=cmd)
