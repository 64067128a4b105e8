"""Canonical JSON (RFC 8785) for ledger payloads.

An entry commits to the SHA-256 of its payload's canonical bytes, so the bytes must be
the same whoever writes them. ``rfc8785`` is the reference, but it is pure Python and
costs tens of microseconds per payload. For the payloads the ledger mostly sees (objects
of strings, safe integers, booleans and nulls, with keys below U+D800) Python's C JSON
encoder already emits exactly RFC 8785, so those take the fast path; anything else
(floats, exotic keys) goes through ``rfc8785``. The tests check the two agree.

Reading back what the ledger wrote (an entry, a checkpoint, a proof, a line of an
export) fails one way too: ``reading`` turns a missing key or a value of the wrong type
into a ``LedgerError`` saying what the document is not.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from typing import Any

import rfc8785

from continue_orchestrator import errors

JSONObject = dict[str, Any]

_MAX_SAFE_INTEGER = 2**53 - 1
_encode_plain = json.JSONEncoder(
    ensure_ascii=False, separators=(",", ":"), sort_keys=True, allow_nan=False
).encode


def _plain(value: object) -> bool:
    """Whether Python's encoder writes RFC 8785 for ``value`` (no floats, no tuples)."""
    kind = type(value)
    if kind is str or kind is bool or value is None:
        return True
    if kind is int:
        return -_MAX_SAFE_INTEGER <= value <= _MAX_SAFE_INTEGER  # type: ignore[operator]
    if kind is dict:
        for key, item in value.items():  # type: ignore[attr-defined]
            # Code-point order equals RFC 8785's UTF-16 order below the surrogates.
            if type(key) is not str or (not key.isascii() and max(key) >= "\ud800"):
                return False
            if not _plain(item):
                return False
        return True
    if kind is list:
        return all(_plain(item) for item in value)  # type: ignore[attr-defined]
    return False


def canonical(value: object, *, where: str = "payload") -> bytes:
    """Return the RFC 8785 bytes of ``value``; raise ``LedgerError`` if it is not JSON."""
    try:
        if _plain(value):
            return _encode_plain(value).encode("utf-8")
        return rfc8785.dumps(value)  # type: ignore[arg-type]
    except (rfc8785.CanonicalizationError, UnicodeEncodeError, TypeError, ValueError) as error:
        raise errors.LedgerError(
            f"cannot be written as canonical JSON: {error}",
            where=where,
            fix="use only JSON values: objects with string keys, arrays, strings without "
            "lone surrogates, integers within +-(2**53-1), finite floats, booleans, null",
        ) from None
    except RecursionError:
        raise errors.LedgerError(
            "is nested too deeply to canonicalise", where=where, fix="flatten the payload"
        ) from None


@contextlib.contextmanager
def reading(failure: str, *, where: str, fix: str) -> Iterator[None]:
    """Around reading a JSON document the ledger wrote: a missing key or a value of the
    wrong type (``AttributeError``, ``KeyError``, ``TypeError``, ``ValueError``) raises
    ``errors.LedgerError`` with ``failure`` ("is not a ledger entry") and why."""
    try:
        yield
    except (AttributeError, KeyError, TypeError, ValueError) as error:
        raise errors.LedgerError(f"{failure}: {error!s}", where=where, fix=fix) from None
