"""What one ledger entry is, and how its hash is computed.

An entry's hash is the RFC 6962 leaf hash of its *header*: the canonical JSON (RFC 8785)
of every field except the payload, which enters only through its digest. That is what
lets a tombstone erase a payload's bytes (a leaked secret, a legal request) while the
hash chain and the Merkle tree still verify.
"""

from __future__ import annotations

import dataclasses
import datetime
import enum
import hashlib
import json
import re
from typing import Any, NamedTuple

from continue_orchestrator import errors
from continue_orchestrator.ledger import _canonical

FORMAT_VERSION = 1
GENESIS_HASH = "0" * 64

# C implementation; its escaping is RFC 8785's (short escapes, lowercase \u00XX).
_encode_string = json.encoder.encode_basestring
_sha256 = hashlib.sha256
_NAME = re.compile(r"[^\x00-\x1f\x7f\"\\]{1,253}")
_HEX64 = re.compile(r"[0-9a-f]{64}")
_valid_names: set[str] = set()  # run UIDs and actors repeat; check each once


class Kind(enum.StrEnum):
    """What an entry records. Add members here; never rename or remove one."""

    RUN_CREATED = "run.created"
    RUN_STARTED = "run.started"
    RUN_FINISHED = "run.finished"
    POLICY_DECISION = "policy.decision"
    MODEL_REQUEST = "model.request"
    MODEL_RESPONSE = "model.response"
    TOOL_CALL = "tool.call"
    TOOL_RESULT = "tool.result"
    APPROVAL_REQUESTED = "approval.requested"
    APPROVAL_GRANTED = "approval.granted"
    APPROVAL_DENIED = "approval.denied"
    SECRET_READ = "secret.read"
    PULL_REQUEST_OPENED = "pull_request.opened"
    ATTESTATION_PUBLISHED = "attestation.published"
    REPLAY_STARTED = "replay.started"
    REPLAY_FINISHED = "replay.finished"
    TOMBSTONE = "tombstone"
    REPOSITORY_FETCH = "repository.fetch"
    PUBLICATION_CHECKED = "publication.checked"
    """The diff's paths and the branch and pull request passed policy (runs.publish)."""
    PUBLICATION_VERIFIED = "publication.verified"
    """The verify commands ran again in a fresh sandbox on the commit to be pushed."""
    PUBLICATION_PUSHED = "publication.pushed"
    PUBLICATION_SUMMARY = "publication.summary"
    PUBLICATION_FAILED = "publication.failed"
    PULL_REQUEST_MERGED = "pull_request.merged"
    """The run's pull request was merged, as the operator's poller read it from the forge."""
    PULL_REQUEST_CLOSED = "pull_request.closed"
    """The run's pull request was closed without being merged (read as for merged)."""


# A secret.read entry may name a secret, never carry its value.
SECRET_READ_FIELDS = frozenset({"name", "namespace", "key", "purpose"})


HeaderFields = tuple[int, str, str, str, str, str, str]
"""What an entry's hash covers, in ``header``'s order: sequence, run_uid, time, kind,
actor, payload_digest, prev_hash."""
EntryRow = tuple[int, str, str, str, str, str, str, str]
"""An entry as stored: its ``HeaderFields``, then its entry_hash."""


def header(
    sequence: int,
    run_uid: str,
    time: str,
    kind: str,
    actor: str,
    payload_digest: str,
    prev_hash: str,
) -> bytes:
    """RFC 8785 bytes of the hashed fields (keys in sorted order, integers plain)."""
    return (
        f'{{"actor":{_encode_string(actor)},"kind":{_encode_string(kind)},'
        f'"payload_digest":{_encode_string(payload_digest)},'
        f'"prev_hash":{_encode_string(prev_hash)},"run_uid":{_encode_string(run_uid)},'
        f'"sequence":{int(sequence)},"time":{_encode_string(time)},"v":{FORMAT_VERSION}}}'
    ).encode()


def entry_hash(*fields: *HeaderFields) -> str:
    """The entry hash of ``header(*fields)``: its RFC 6962 leaf hash, in hex."""
    return _sha256(b"\x00" + header(*fields)).hexdigest()


def chained(sequence: int, item: Prepared, time: str, prev_hash: str) -> EntryRow:
    """``item`` as entry ``sequence`` after ``prev_hash``: the row to store, hash last."""
    fields = (sequence, item.run_uid, time, item.kind, item.actor, item.payload_digest, prev_hash)
    return (*fields, entry_hash(*fields))


def payload_digest(canonical_payload: bytes) -> str:
    return _sha256(canonical_payload).hexdigest()


def now() -> str:
    """RFC 3339 UTC with microseconds, the one time format the ledger writes."""
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclasses.dataclass(frozen=True, slots=True)
class Entry:
    """One ledger entry. ``payload_json`` (the canonical text) is None exactly when a
    tombstone redacted it; ``payload`` parses it on each access."""

    sequence: int
    run_uid: str
    time: str
    kind: Kind
    actor: str
    payload_json: str | None
    payload_digest: str
    prev_hash: str
    entry_hash: str

    @property
    def redacted(self) -> bool:
        return self.payload_json is None

    @property
    def payload(self) -> dict[str, Any] | None:
        if self.payload_json is None:
            return None
        try:
            value = json.loads(self.payload_json)
        except ValueError:
            value = None
        if not isinstance(value, dict):
            raise errors.LedgerError(
                "stored payload is not a JSON object",
                where=f"ledger entry {self.sequence}",
                fix="the ledger may have been altered: run 'orchestrator ledger verify'",
            )
        return value

    def computed_hash(self) -> str:
        """The entry hash its fields give now (``entry_hash`` unless altered)."""
        return entry_hash(
            self.sequence,
            self.run_uid,
            self.time,
            self.kind.value,
            self.actor,
            self.payload_digest,
            self.prev_hash,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "sequence": self.sequence,
            "run_uid": self.run_uid,
            "time": self.time,
            "kind": self.kind.value,
            "actor": self.actor,
            "payload": self.payload,
            "redacted": self.redacted,
            "payload_digest": self.payload_digest,
            "prev_hash": self.prev_hash,
            "entry_hash": self.entry_hash,
        }

    @classmethod
    def from_json(cls, data: Any, *, where: str) -> Entry:
        with _canonical.reading(
            "is not a ledger entry",
            where=where,
            fix="pass an entry written by 'orchestrator ledger export' or 'prove'",
        ):
            payload = data["payload"]
            if payload is not None and not isinstance(payload, dict):
                raise TypeError("payload is not an object")
            text = None if payload is None else _canonical.canonical(payload, where=where)
            return cls(
                sequence=_int(data["sequence"]),
                run_uid=str(data["run_uid"]),
                time=str(data["time"]),
                kind=parse_kind(str(data["kind"]), where=where),
                actor=str(data["actor"]),
                payload_json=None if text is None else text.decode("utf-8"),
                payload_digest=str(data["payload_digest"]),
                prev_hash=str(data["prev_hash"]),
                entry_hash=str(data["entry_hash"]),
            )


def _int(value: Any) -> int:
    if type(value) is not int:
        raise TypeError(f"expected an integer, got {value!r}")
    return value


def parse_kind(value: str, *, where: str) -> Kind:
    try:
        return Kind(value)
    except ValueError:
        raise errors.LedgerError(
            f"unknown entry kind {value!r}",
            where=where,
            fix=f"use one of: {', '.join(k.value for k in Kind)}",
        ) from None


class Append(NamedTuple):
    """One entry to append; ``Ledger.append_many`` takes a sequence of these."""

    run_uid: str
    kind: Kind | str
    actor: str
    payload: dict[str, Any]


@dataclasses.dataclass(frozen=True, slots=True)
class Prepared:
    """An ``Append`` checked and canonicalised, ready to be chained under the write lock."""

    run_uid: str
    kind: str
    actor: str
    payload: bytes
    payload_digest: str


def prepare(item: Append, *, where: str = "ledger append", tombstone: bool = False) -> Prepared:
    """Validate ``item`` and canonicalise its payload; raise ``LedgerError`` if it is bad."""
    run_uid, kind, actor, payload = item
    kind = parse_kind(kind, where=where) if not isinstance(kind, Kind) else kind
    if kind is Kind.TOMBSTONE and not tombstone:
        raise errors.LedgerError(
            "a tombstone cannot be appended directly",
            where=where,
            fix="call Ledger.tombstone(), which also redacts what the tombstone names",
        )
    for field, value in (("run_uid", run_uid), ("actor", actor)):
        if type(value) is str and value in _valid_names:
            continue
        if not isinstance(value, str) or not _NAME.fullmatch(value):
            raise errors.LedgerError(
                f"{field} {value!r} is not 1-253 characters without quotes, backslashes "
                "or control characters",
                where=where,
                fix=f"pass the {field} as a plain identifier string",
            )
        if len(_valid_names) > 4096:
            _valid_names.clear()
        _valid_names.add(value)
    if not isinstance(payload, dict):
        raise errors.LedgerError(
            f"payload must be a JSON object, not {type(payload).__name__}",
            where=where,
            fix="wrap the value in an object, e.g. {'value': ...}",
        )
    if kind is Kind.SECRET_READ and not payload.keys() <= SECRET_READ_FIELDS:
        extra = sorted(str(key) for key in payload.keys() - SECRET_READ_FIELDS)
        raise errors.LedgerError(
            f"a secret.read entry may only name the secret; unexpected fields {extra}",
            where=where,
            fix=f"record only {sorted(SECRET_READ_FIELDS)}; never a secret's value",
        )
    data = _canonical.canonical(payload, where=f"{where}: payload")
    return Prepared(run_uid, kind.value, actor, data, payload_digest(data))


def is_hex_digest(value: str) -> bool:
    return _HEX64.fullmatch(value) is not None
