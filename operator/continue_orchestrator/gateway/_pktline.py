"""Reading a git upload-pack request as it streams past: which commits it wants.

The gateway records what a run fetched (``_git``), and the commits a fetch asks for are
the ``want`` lines of its upload-pack request (protocol v0: the first lines of the body;
v2: the arguments of ``command=fetch``). The request is forwarded as it arrives, never
held whole, so the scan reads the chunks it is shown: pkt-lines (four hex digits of
length, then the line), inflated first when git compressed the body (it gzips requests
over 1 KiB). It stops at the flush that ends the wants, or after ``SCAN_LIMIT`` bytes,
so a long list of ``have`` lines costs nothing.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Callable

SCAN_LIMIT = 1 << 20
"""Bytes of a request (inflated) read for its wants; what follows is forwarded unread."""
WANTS_KEPT = 256
"""Wanted commits kept for the ledger; ``Wants.count`` counts them all."""
INFLATE_PIECE = 1 << 20
"""Largest piece one compressed chunk is inflated into at a time."""

_OID = re.compile(rb"[0-9a-f]{40}(?:[0-9a-f]{24})?")


def inflater(encoding: str | None) -> Callable[[bytes], bytes] | None:
    """A function inflating the successive chunks of a body sent with ``Content-Encoding:
    encoding`` (gzip or deflate), bounded per call; None when the body is plain.

    Each call returns at most ``INFLATE_PIECE`` bytes more than it was given compressed
    input for; what a chunk holds beyond that is returned by the next calls (call with
    ``b""`` until it returns ``b""`` to drain it)."""
    name = (encoding or "").strip().lower()
    if name in ("", "identity"):
        return None
    if name in ("gzip", "x-gzip"):
        inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)
    elif name == "deflate":
        inflate = zlib.decompressobj()
    else:
        raise ValueError(f"Content-Encoding {encoding!r} is not gzip or deflate")

    def piece(chunk: bytes) -> bytes:
        data = inflate.unconsumed_tail + chunk
        try:
            return inflate.decompress(data, INFLATE_PIECE)
        except zlib.error as error:
            raise ValueError(f"the {name} body does not inflate: {error}") from None

    return piece


class Wants:
    """The wants of one upload-pack request, read from its (inflated) bytes in order."""

    def __init__(self) -> None:
        self.commits: list[str] = []
        """The commits wanted, each once, in the order asked (the first ``WANTS_KEPT``)."""
        self.refs: list[str] = []
        """``want-ref`` lines (protocol v2): wanted by ref name rather than commit."""
        self.count = 0
        """How many distinct commits and refs were wanted."""
        self._seen: set[str] = set()
        self.command = ""
        """``fetch`` or ``ls-refs`` under protocol v2; ``fetch`` for a v0 request with wants."""
        self.done = False
        self._buffer = bytearray()
        self._read = 0

    def feed(self, data: bytes) -> None:
        """Read the next bytes of the request (after inflating); cheap once done."""
        if self.done or not data:
            return
        self._read += len(data)
        self._buffer += data
        while not self.done and len(self._buffer) >= 4:
            try:
                length = int(self._buffer[:4], 16)
            except ValueError:
                self.done = True  # not pkt-lines: nothing more to learn
                break
            if length < 4:  # flush (0), delimiter (1), response end (2)
                del self._buffer[:4]
                # v0: the wants end at the first flush; v2: the command's arguments do.
                if length == 0 and (self.count or self.command):
                    self.done = True
                continue
            if len(self._buffer) < length:
                break
            self._line(bytes(self._buffer[4:length]))
            del self._buffer[:length]
        if self._read >= SCAN_LIMIT:
            self.done = True

    def _line(self, line: bytes) -> None:
        if line.startswith(b"command="):
            self.command = line[8:].strip().decode("ascii", "replace")
        elif line.startswith(b"want-ref "):
            if len(self.refs) < WANTS_KEPT:
                self.refs.append(line[9:].strip().decode("utf-8", "replace"))
            self.count += 1
        elif line.startswith(b"want "):
            found = _OID.match(line, 5)
            if found is not None and found.group().decode() not in self._seen:
                self._seen.add(found.group().decode())
                if len(self.commits) < WANTS_KEPT:
                    self.commits.append(found.group().decode())
                self.count += 1
            self.command = self.command or "fetch"
        elif line.startswith((b"have ", b"done")):
            self.done = True  # wants come first; the haves say nothing fetched
