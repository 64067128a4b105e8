"""Canonical JSON and the Merkle tree against their specifications."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest
import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from continue_orchestrator import errors, ledger
from continue_orchestrator.ledger import _entry, _merkle

_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**53) + 1, max_value=2**53 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(), children, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=400, deadline=None)
@given(_json)
def test_canonical_is_rfc8785(value: Any) -> None:
    try:
        expected = rfc8785.dumps(value)
    except (rfc8785.CanonicalizationError, UnicodeEncodeError):
        with pytest.raises(errors.LedgerError):
            ledger.canonical(value)
        return
    assert ledger.canonical(value) == expected


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.text(), st.text() | st.integers(-(2**53) + 1, 2**53 - 1), max_size=6))
def test_fast_path_keys_and_strings_match_rfc8785(value: dict[str, Any]) -> None:
    # Keys and strings across the whole of Unicode, incl. control characters and astral
    # code points, where code point order and UTF-16 order disagree.
    try:
        expected = rfc8785.dumps(value)
    except (rfc8785.CanonicalizationError, UnicodeEncodeError):
        return
    assert ledger.canonical(value) == expected


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 2**40), st.text(), st.text(), st.text(), st.text())
def test_entry_header_is_rfc8785(sequence: int, run: str, time: str, kind: str, actor: str) -> None:
    fields = {
        "actor": actor, "kind": kind, "payload_digest": "ab" * 32, "prev_hash": "cd" * 32,
        "run_uid": run, "sequence": sequence, "time": time, "v": 1,
    }  # fmt: skip
    try:
        expected = rfc8785.dumps(fields)
    except (rfc8785.CanonicalizationError, UnicodeEncodeError):
        return
    assert _entry.header(sequence, run, time, kind, actor, "ab" * 32, "cd" * 32) == expected


@pytest.mark.parametrize(
    "value",
    [{"n": 2**60}, {"f": float("nan")}, {"s": "\ud800"}, {1: "non-string key"}, {"o": object()}],
)
def test_not_json_is_refused_with_a_reason(value: Any) -> None:
    with pytest.raises(errors.LedgerError, match="canonical JSON"):
        ledger.canonical(value)


def _mth(leaves: list[bytes]) -> bytes:
    """RFC 6962 section 2.1, literally."""
    if not leaves:
        return hashlib.sha256(b"").digest()
    if len(leaves) == 1:
        return leaves[0]
    k = 1
    while k * 2 < len(leaves):
        k *= 2
    return _merkle.node_hash(_mth(leaves[:k]), _mth(leaves[k:]))


def _path(m: int, leaves: list[bytes]) -> list[bytes]:
    """RFC 6962 section 2.1.1 PATH(m, D[n]), literally."""
    if len(leaves) == 1:
        return []
    k = 1
    while k * 2 < len(leaves):
        k *= 2
    if m < k:
        return [*_path(m, leaves[:k]), _mth(leaves[k:])]
    return [*_path(m - k, leaves[k:]), _mth(leaves[:k])]


def _leaves(n: int) -> list[bytes]:
    return [_merkle.leaf_hash(b"leaf %d" % i) for i in range(n)]


@pytest.mark.parametrize("n", [0, 1, 2, 3, 4, 5, 7, 8, 9, 16, 17, 31, 33, 100])
def test_root_and_frontier_match_rfc6962(n: int) -> None:
    leaves = _leaves(n)
    assert _merkle.root(leaves) == _mth(leaves)
    frontier = _merkle.Frontier()
    for size, leaf in enumerate(leaves, start=1):
        frontier.append(leaf)
        assert frontier.root() == _mth(leaves[:size])
    resumed = _merkle.Frontier(frontier.size, frontier.roots)
    assert resumed.root() == frontier.root()


@pytest.mark.parametrize("n", [1, 2, 3, 5, 8, 13, 21, 64, 65])
def test_inclusion_paths_match_rfc6962_and_verify(n: int) -> None:
    leaves = _leaves(n)
    root = _mth(leaves)
    for m in range(n):
        path = _merkle.inclusion_path(m, leaves)
        assert path == _path(m, leaves)
        assert _merkle.verify_inclusion(leaves[m], m, n, path, root)
        # The same path must not prove another leaf or root, nor survive a bent node.
        other = leaves[(m + 1) % n] if n > 1 else _merkle.leaf_hash(b"other")
        assert not _merkle.verify_inclusion(other, m, n, path, root)
        assert not _merkle.verify_inclusion(leaves[m], m, n, path, hashlib.sha256(b"x").digest())
        if path:
            bent = [*path[:-1], hashlib.sha256(path[-1]).digest()]
            assert not _merkle.verify_inclusion(leaves[m], m, n, bent, root)
            assert not _merkle.verify_inclusion(leaves[m], m, n, path[:-1], root)


def test_entry_hash_is_the_merkle_leaf_of_its_header() -> None:
    header = _entry.header(3, "run", "t", "tool.call", "gw", "ab" * 32, "cd" * 32)
    assert json.loads(header)["sequence"] == 3
    expected = _merkle.leaf_hash(header).hex()
    assert _entry.entry_hash(3, "run", "t", "tool.call", "gw", "ab" * 32, "cd" * 32) == expected
