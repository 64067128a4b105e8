"""Deterministic OCI image archives without a container engine (hack/build-images.sh).

Two jobs, both byte-for-byte repeatable for the same inputs:

``base ROOTFS.tar OUT.tar --ref NAME --created EPOCH [--layer L.tar]... [--env K=V]... [--no-gzip]``
    Wraps a root filesystem tarball (mmdebstrap's), and further layer tarballs on top of
    it, as an OCI image archive. ``--no-gzip`` stores the layers as they are: for a base
    that only a local builder reads (``buildah push`` compresses every layer of the image
    it builds again, the base's too), compressing it is time spent for nothing.

``archive LAYOUT_DIR OUT.tar --ref NAME``
    Turns an OCI image layout directory (``buildah push IMAGE oci:DIR``) into one tar, the
    image's manifest annotated with its full name, which ``ctr -n k8s.io images import``
    takes (``io.containerd.image.name``; ``org.opencontainers.image.ref.name`` for
    skopeo, buildah and podman).

Both print the image's manifest digest (``sha256:...``): the digest a pod names the image by.
Tar entries are sorted, owned by 0:0, dated 0; gzip headers carry no name and no date.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import os
import sys
import tarfile
from datetime import UTC, datetime
from pathlib import Path

MANIFEST = "application/vnd.oci.image.manifest.v1+json"
INDEX = "application/vnd.oci.image.index.v1+json"
CONFIG = "application/vnd.oci.image.config.v1+json"
LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"
REF_NAME = "org.opencontainers.image.ref.name"
CONTAINERD_NAME = "io.containerd.image.name"
CHUNK = 1 << 20


def _dumps(obj: object) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _gzip_layer(rootfs: Path, out: Path) -> tuple[str, str, int]:
    """Compress ``rootfs`` into ``out``; returns (diff_id, blob digest, blob size)."""
    raw = hashlib.sha256()
    # filename="" and mtime=0: the gzip header holds nothing that varies between builds.
    with (
        rootfs.open("rb") as src,
        out.open("wb") as dst,
        gzip.GzipFile(filename="", mode="wb", fileobj=dst, compresslevel=6, mtime=0) as gz,
    ):
        while chunk := src.read(CHUNK):
            raw.update(chunk)
            gz.write(chunk)
    blob = hashlib.sha256()
    with out.open("rb") as f:
        while chunk := f.read(CHUNK):
            blob.update(chunk)
    return "sha256:" + raw.hexdigest(), "sha256:" + blob.hexdigest(), out.stat().st_size


def _write_archive(out: Path, files: dict[str, bytes | Path]) -> None:
    """One tar of an OCI layout: sorted entries, 0:0, mtime 0, 0644/0755."""
    tmp = out.with_name(out.name + ".partial")
    dirs = sorted({str(Path(n).parent) for n in files if "/" in n} | {"blobs"})
    with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
        entries: list[tuple[str, bytes | Path | None]] = [(d, None) for d in dirs]
        entries += sorted(files.items())
        for name, content in sorted(entries, key=lambda e: e[0]):
            info = tarfile.TarInfo(name)
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.mtime = 0
            if content is None:
                info.type = tarfile.DIRTYPE
                info.mode = 0o755
                tar.addfile(info)
            elif isinstance(content, bytes):
                info.mode = 0o644
                info.size = len(content)
                tar.addfile(info, io.BytesIO(content))
            else:
                info.mode = 0o644
                info.size = content.stat().st_size
                with content.open("rb") as f:
                    tar.addfile(info, f)
    os.replace(tmp, out)


def _index(manifest: bytes, ref: str) -> bytes:
    return _dumps(
        {
            "schemaVersion": 2,
            "mediaType": INDEX,
            "manifests": [
                {
                    "mediaType": MANIFEST,
                    "digest": _digest(manifest),
                    "size": len(manifest),
                    "annotations": {REF_NAME: ref, CONTAINERD_NAME: ref},
                }
            ],
        }
    )


def _tar_layer(rootfs: Path) -> tuple[str, str, int]:
    """An uncompressed layer: (diff_id, blob digest, blob size), the blob being ``rootfs``."""
    raw = hashlib.sha256()
    with rootfs.open("rb") as src:
        while chunk := src.read(CHUNK):
            raw.update(chunk)
    return "sha256:" + raw.hexdigest(), "sha256:" + raw.hexdigest(), rootfs.stat().st_size


def base(
    layers: list[Path],
    out: Path,
    ref: str,
    created: int,
    env: list[str],
    cmd: list[str],
    gzip_layers: bool = True,
) -> str:
    blobs: list[tuple[str, str, int, Path]] = []
    for n, tar in enumerate(layers):
        if gzip_layers:
            gz = out.with_name(f"{out.name}.layer{n}.gz")
            blobs.append((*_gzip_layer(tar, gz), gz))
        else:
            blobs.append((*_tar_layer(tar), tar))
    when = datetime.fromtimestamp(created, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    config = _dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "created": when,
            "config": {"Env": env, "Cmd": cmd},
            "rootfs": {"type": "layers", "diff_ids": [b[0] for b in blobs]},
            "history": [
                {"created": when, "created_by": f"hack/build-images.sh: {tar.name}"}
                for tar in layers
            ],
        }
    )
    manifest = _dumps(
        {
            "schemaVersion": 2,
            "mediaType": MANIFEST,
            "config": {"mediaType": CONFIG, "digest": _digest(config), "size": len(config)},
            "layers": [
                {
                    "mediaType": LAYER_GZIP if gzip_layers else LAYER_TAR,
                    "digest": b[1],
                    "size": b[2],
                }
                for b in blobs
            ],
        }
    )
    files: dict[str, bytes | Path] = {
        "oci-layout": _dumps({"imageLayoutVersion": "1.0.0"}),
        "index.json": _index(manifest, ref),
        "blobs/sha256/" + _digest(config)[7:]: config,
        "blobs/sha256/" + _digest(manifest)[7:]: manifest,
    }
    for _, blob, _, gz in blobs:
        files["blobs/sha256/" + blob[7:]] = gz
    _write_archive(out, files)
    if gzip_layers:
        for *_, gz in blobs:
            gz.unlink()
    return _digest(manifest)


def archive(layout: Path, out: Path, ref: str) -> str:
    index = json.loads((layout / "index.json").read_text())
    manifests = index.get("manifests", [])
    if len(manifests) != 1:
        raise SystemExit(f"oci_layout: {layout} holds {len(manifests)} images, expected 1")
    algo, hexd = manifests[0]["digest"].split(":", 1)
    manifest = (layout / "blobs" / algo / hexd).read_bytes()
    files: dict[str, bytes | Path] = {
        "oci-layout": _dumps({"imageLayoutVersion": "1.0.0"}),
        "index.json": _index(manifest, ref),
    }
    for blob in sorted((layout / "blobs").glob("*/*")):
        files[f"blobs/{blob.parent.name}/{blob.name}"] = blob
    _write_archive(out, files)
    return _digest(manifest)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("base")
    b.add_argument("rootfs", type=Path)
    b.add_argument("out", type=Path)
    b.add_argument("--ref", required=True)
    b.add_argument("--created", type=int, required=True)
    b.add_argument("--layer", type=Path, action="append", default=[])
    b.add_argument("--env", action="append", default=[])
    b.add_argument("--cmd", action="append", default=[])
    b.add_argument("--no-gzip", dest="gzip", action="store_false")
    a = sub.add_parser("archive")
    a.add_argument("layout", type=Path)
    a.add_argument("out", type=Path)
    a.add_argument("--ref", required=True)
    args = parser.parse_args(argv)
    if args.command == "base":
        digest = base(
            [args.rootfs, *args.layer],
            args.out,
            args.ref,
            args.created,
            args.env,
            args.cmd,
            gzip_layers=args.gzip,
        )
    else:
        digest = archive(args.layout, args.out, args.ref)
    print(digest)
    return 0


if __name__ == "__main__":
    sys.exit(main())
