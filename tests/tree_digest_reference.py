"""An independent implementation of the workspace tree digest, written from
docs/attestation.md ("Workspace tree digest") rather than from the runner's code, so a
test comparing the two checks the documented algorithm and not the runner against itself."""

from __future__ import annotations

import hashlib
import os
import stat


def reference_tree_digest(workspace: str | os.PathLike[str]) -> str:
    root = os.fsencode(workspace)
    lines: list[bytes] = []
    for directory, subdirectories, files in os.walk(root, followlinks=False):
        if directory == root and b".git" in subdirectories:
            subdirectories.remove(b".git")
        # os.walk lists links to directories among the directories; they are entries too.
        names = files + [d for d in subdirectories if os.path.islink(os.path.join(directory, d))]
        for name in names:
            full = os.path.join(directory, name)
            relative = os.path.relpath(full, root)
            if directory == root and name == b".git":
                continue
            mode = os.lstat(full).st_mode
            if stat.S_ISLNK(mode):
                kind, content = b"link", os.readlink(full)
            elif stat.S_ISREG(mode):
                kind = b"exec" if mode & stat.S_IXUSR else b"file"
                with open(full, "rb") as handle:
                    content = handle.read()
            else:
                kind, content = b"other", b""
            digest = hashlib.sha256(content).hexdigest().encode()
            lines.append(relative + b"\0" + kind + b" " + digest + b" " + relative + b"\0")
    listing = b"".join(line.split(b"\0", 1)[1] for line in sorted(lines))
    return "sha256:" + hashlib.sha256(listing).hexdigest()
