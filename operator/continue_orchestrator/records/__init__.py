"""Record store: content-addressed blobs and the ordered record of each run.

``BlobStore`` keeps immutable bytes named by their SHA-256; ``RunRecord`` lists a run's
exchanges in order, each pointing at blobs, and seals into one manifest digest. The
gateway writes both; replay and attestations read them.
"""

from continue_orchestrator.records._blobs import BlobStore, digest_of
from continue_orchestrator.records._record import (
    Exchange,
    RunRecord,
    load,
    normalised_request_hash,
)

__all__ = ["BlobStore", "Exchange", "RunRecord", "digest_of", "load", "normalised_request_hash"]
