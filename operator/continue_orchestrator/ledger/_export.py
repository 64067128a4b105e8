"""JSONL export: the whole ledger, with its checkpoints, in a file that verifies alone.

Line 1 is a header (origin, size); then one line per checkpoint; then one line per entry
with its payload as JSON (``null`` once redacted). An auditor needs only this file and
the public key: ``orchestrator ledger verify ledger.jsonl --public-key key.pem``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import pathlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, TextIO

from continue_orchestrator import errors
from continue_orchestrator.ledger import _backend, _canonical, _checkpoint, _entry

if TYPE_CHECKING:
    from continue_orchestrator.ledger import _ledger

_LINE_SEPARATORS = str.maketrans({"\u2028": "\\u2028", "\u2029": "\\u2029"})
EXPORT_TYPE = "continue-orchestrator.dev/ledger-export/v1"
_ENTRY_FIELDS = (
    "sequence", "run_uid", "time", "kind", "actor", "payload_digest", "prev_hash", "entry_hash",
)  # fmt: skip


def export(ledger: _ledger.Ledger, out: TextIO) -> int:
    """Write ``ledger`` as JSONL to ``out`` from one snapshot; return the entry count."""
    with ledger._session() as session:
        size, _ = session.head()
        checkpoints = [checkpoint for checkpoint, _ in session.checkpoints()]
        header = {
            "type": EXPORT_TYPE,
            "origin": session.origin(),
            "size": size,
            "checkpoints": len(checkpoints),
            "exported": _entry.now(),
        }
        out.write(json.dumps(header, ensure_ascii=False) + "\n")
        for checkpoint in checkpoints:
            out.write(json.dumps(checkpoint.to_json(), ensure_ascii=False) + "\n")
        written = 0
        for row in session.rows(start=0, stop=None, run_uid=None, limit=None):
            fields = json.dumps(
                {"type": "entry", **dict(zip(_ENTRY_FIELDS, row[:8], strict=True))},
                ensure_ascii=False,
            )
            # The stored canonical text is spliced in: what was hashed is what ships. U+2028
            # and U+2029 can only occur inside its strings; escaped, no line splitter trips.
            line = f'{fields[:-1]},"payload":{row[8] if row[8] is not None else "null"}}}'
            out.write(line.translate(_LINE_SEPARATORS) + "\n")
            written += 1
    return written


@dataclasses.dataclass
class Material:
    origin: str
    size: int
    checkpoints: list[_checkpoint.Checkpoint]
    rows: Iterator[_backend.Row]


@contextlib.contextmanager
def read(path: str | pathlib.Path) -> Iterator[Material]:
    """Open an export for verification; entries are streamed, checkpoints read up front."""
    where = str(path)
    try:
        handle = pathlib.Path(path).open(encoding="utf-8")  # noqa: SIM115 (closed below)
    except OSError as error:
        raise errors.LedgerError(
            f"cannot read the export: {error.strerror}",
            where=where,
            fix="pass a file written by 'orchestrator ledger export', or a ledger URL",
        ) from None
    with handle:
        first = _line(handle.readline(), where, 1)
        if first.get("type") != EXPORT_TYPE:
            raise errors.LedgerError(
                f"line 1 is not a ledger export header (type {first.get('type')!r})",
                where=where,
                fix="pass a file written by 'orchestrator ledger export'",
            )
        count = first.get("checkpoints")
        if type(count) is not int or count < 0:
            raise errors.LedgerError(
                "the header does not say how many checkpoints follow", where=f"{where}:1"
            )
        checkpoints = [
            _checkpoint.Checkpoint.from_json(
                _line(handle.readline(), where, 2 + i), where=f"{where}:{2 + i}"
            )
            for i in range(count)
        ]
        yield Material(
            origin=str(first.get("origin", "")),
            size=int(first.get("size", 0)),
            checkpoints=checkpoints,
            rows=_rows(handle, where, 2 + count),
        )


def _line(text: str, where: str, number: int) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError as error:
        raise errors.LedgerError(
            f"line {number} is not JSON ({error})",
            where=where,
            fix="the export is damaged or not an export",
        ) from None
    if not isinstance(value, dict):
        raise errors.LedgerError(f"line {number} is not a JSON object", where=where)
    return value


def _rows(handle: TextIO, where: str, first_number: int) -> Iterator[_backend.Row]:
    for number, text in enumerate(handle, start=first_number):
        if not text.strip():
            continue
        line = _line(text, where, number)
        with _canonical.reading(
            f"line {number} is not a ledger entry", where=where, fix="the export is damaged"
        ):
            if line["type"] != "entry":
                raise ValueError(f"type {line['type']!r} where an entry belongs")
            fields = [line[name] for name in _ENTRY_FIELDS]
            if type(fields[0]) is not int or not all(isinstance(f, str) for f in fields[1:]):
                raise ValueError("a field has the wrong type")
            payload = line["payload"]
        text_payload = None
        if payload is not None:
            try:
                text_payload = _canonical.canonical(payload).decode("utf-8")
            except errors.LedgerError:
                text_payload = "not canonical JSON"  # fails the digest check, as it should
        yield (*fields, text_payload)
