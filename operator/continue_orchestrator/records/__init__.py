"""Record store: content-addressed blobs and the ordered record of each run.

``BlobStore`` keeps immutable bytes named by their SHA-256; ``RunRecord`` lists a run's
exchanges in order, each pointing at blobs, and seals into one manifest digest. The
gateway writes both; replay and attestations read them.
``ReplayModel`` plays a sealed record back as an upstream model; ``compare`` and
``build_replay_report`` say where a replay departs from it (docs/replay.md).
``ChatServer`` is the OpenAI-compatible server it and ``local.ScriptedModel`` both are:
``ChatAnswer`` is one assistant turn, sent whole or streamed by ``chat_response``.
"""

from continue_orchestrator.records._blobs import BlobStore, digest_of
from continue_orchestrator.records._chat import (
    ChatAnswer,
    ChatServer,
    ChatToolCall,
    chat_error,
    chat_response,
    message_text,
)
from continue_orchestrator.records._record import (
    Exchange,
    RunRecord,
    load,
    normalised_request_hash,
)
from continue_orchestrator.records._redact import Redactor
from continue_orchestrator.records._replay import (
    NORMALISATION_VERSION,
    Divergence,
    RecordedTurn,
    ReplayModel,
    compare,
    normalise,
    record_by_digest,
    recorded_turns,
    replay_model,
    request_digest,
    working_directory,
)
from continue_orchestrator.records._replay_report import (
    INPUT_NAMES,
    InputDrift,
    ReplayReport,
    RunSummary,
    input_digests,
    input_drift,
    spec_digest,
    summarise,
)
from continue_orchestrator.records._replay_report import build as build_replay_report

__all__ = [
    "INPUT_NAMES",
    "NORMALISATION_VERSION",
    "BlobStore",
    "ChatAnswer",
    "ChatServer",
    "ChatToolCall",
    "Divergence",
    "Exchange",
    "InputDrift",
    "RecordedTurn",
    "Redactor",
    "ReplayModel",
    "ReplayReport",
    "RunRecord",
    "RunSummary",
    "build_replay_report",
    "chat_error",
    "chat_response",
    "compare",
    "digest_of",
    "input_digests",
    "input_drift",
    "load",
    "message_text",
    "normalise",
    "normalised_request_hash",
    "record_by_digest",
    "recorded_turns",
    "replay_model",
    "request_digest",
    "spec_digest",
    "summarise",
    "working_directory",
]
