"""How the operator tells the gateway about a run, behind a small interface.

The gateway runs as its own Deployment; how it learns of runs (an HTTP admin call, a
watch on run Secrets) is its business. The operator only promises to call
``register`` before the pod exists and ``unregister`` when the run is gone.
``InMemoryGateway`` keeps registrations in the process, for tests and single-process
setups.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Mapping
from typing import Any, Protocol


@dataclasses.dataclass(frozen=True, slots=True)
class Registration:
    """What the gateway needs to serve one run: its token and the policy snapshot."""

    uid: str
    name: str
    namespace: str
    token: str
    expires_at: float
    """Unix time after which the token is refused (the run's deadline plus grace)."""
    policy: bytes
    """The snapshot (canonical JSON) the run was started under; never the live policy."""
    policy_digest: str
    allowed_egress: tuple[str, ...]
    config: str
    secrets: Mapping[str, str] = dataclasses.field(default_factory=dict)
    """Granted secret values, delivered and brokered: models' upstream keys are read from
    them, and the gateway redacts all of them from records."""
    replay_of: str = ""
    """For a ``spec.replayOf`` run: the record digest whose answers the gateway serves."""


class GatewayClient(Protocol):
    def register(self, registration: Registration) -> None: ...

    def unregister(self, uid: str) -> Mapping[str, Any] | None:
        """Stop serving ``uid``; the gateway's answer (``recordDigest``, and ``replay``,
        the replay report's summary, for a replay) if it has one."""
        ...


class InMemoryGateway:
    """Keeps registrations in memory; thread-safe."""

    def __init__(self) -> None:
        self._runs: dict[str, Registration] = {}
        self._lock = threading.Lock()

    def register(self, registration: Registration) -> None:
        with self._lock:
            self._runs[registration.uid] = registration

    def unregister(self, uid: str) -> None:
        with self._lock:
            self._runs.pop(uid, None)

    def get(self, uid: str) -> Registration | None:
        with self._lock:
            return self._runs.get(uid)

    def __len__(self) -> int:
        with self._lock:
            return len(self._runs)
