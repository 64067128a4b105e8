"""Reading the wants of an upload-pack request as it streams past, in any chunking, plain or
gzipped, protocol v0 or v2, and giving up cheaply on what is not one."""

from __future__ import annotations

import gzip

import pytest

from continue_orchestrator.gateway import _pktline

A = "a" * 40
B = "b" * 40
C = "c" * 64  # a SHA-256 object id


def pkt(line: str) -> bytes:
    data = line.encode()
    return b"%04x" % (len(data) + 4) + data


V0 = (
    pkt(f"want {A} multi_ack_detailed side-band-64k thin-pack ofs-delta agent=git/2.39\n")
    + pkt(f"want {B}\n")
    + pkt(f"want {A}\n")
    + b"0000"
    + pkt(f"have {'d' * 40}\n")
    + pkt("done\n")
)
V2 = (
    pkt("command=fetch")
    + pkt("agent=git/2.39.5")
    + pkt("object-format=sha1")
    + b"0001"
    + pkt("thin-pack\n")
    + pkt(f"want {C}\n")
    + pkt("want-ref refs/heads/main\n")
    + pkt("done\n")
    + b"0000"
)
LS_REFS = pkt("command=ls-refs\n") + b"0001" + pkt("peel\n") + pkt("ref-prefix HEAD\n") + b"0000"


def scan(body: bytes, step: int, encoding: str | None = None) -> _pktline.Wants:
    wants = _pktline.Wants()
    inflate = _pktline.inflater(encoding)
    for start in range(0, len(body), step):
        chunk = body[start : start + step]
        piece = chunk if inflate is None else inflate(chunk)
        while piece:
            wants.feed(piece)
            piece = b"" if inflate is None else inflate(b"")
    return wants


@pytest.mark.parametrize("step", [1, 3, 7, 64, 1 << 16])
def test_v0_wants_in_any_chunking(step: int) -> None:
    wants = scan(V0, step)
    assert (wants.commits, wants.count, wants.command, wants.done) == ([A, B], 2, "fetch", True)


@pytest.mark.parametrize("step", [1, 5, 1 << 16])
def test_v2_fetch_wants_commits_and_refs(step: int) -> None:
    wants = scan(V2, step)
    assert wants.commits == [C] and wants.refs == ["refs/heads/main"]
    assert (wants.count, wants.command) == (2, "fetch")


def test_v2_ls_refs_wants_nothing() -> None:
    wants = scan(LS_REFS, 4)
    assert (wants.commits, wants.count, wants.command, wants.done) == ([], 0, "ls-refs", True)


@pytest.mark.parametrize("encoding", ["gzip", "x-gzip"])
def test_a_gzipped_request_is_read_inflated(encoding: str) -> None:
    wants = scan(gzip.compress(V0), 5, encoding)
    assert wants.commits == [A, B]


def test_what_is_not_pkt_lines_ends_the_scan() -> None:
    wants = scan(b"POST / HTTP/1.1\r\n" + V0, 8)
    assert wants.done and wants.count == 0


def test_many_wants_are_counted_and_the_kept_ones_bounded() -> None:
    body = b"".join(pkt(f"want {n:040x}\n") for n in range(_pktline.WANTS_KEPT + 10)) + b"0000"
    wants = scan(body, 4096)
    assert wants.count == _pktline.WANTS_KEPT + 10
    assert len(wants.commits) == _pktline.WANTS_KEPT


def test_the_scan_stops_reading_at_its_limit() -> None:
    wants = _pktline.Wants()
    wants.feed(pkt("agent=x\n") * (_pktline.SCAN_LIMIT // 12 + 1))
    assert wants.done and wants.count == 0


def test_an_unknown_encoding_and_a_broken_gzip_say_so() -> None:
    with pytest.raises(ValueError, match="not gzip or deflate"):
        _pktline.inflater("br")
    inflate = _pktline.inflater("gzip")
    assert inflate is not None
    with pytest.raises(ValueError, match="does not inflate"):
        inflate(b"not gzip at all")


def test_a_gzip_bomb_inflates_a_bounded_piece_at_a_time() -> None:
    bomb = gzip.compress(b"0" * (64 << 20))
    inflate = _pktline.inflater("gzip")
    assert inflate is not None
    assert len(inflate(bomb)) == _pktline.INFLATE_PIECE
