"""How the operator tells the gateway about a run, behind a small interface.

The gateway runs as its own Deployment; how it learns of runs (an HTTP admin call, a
watch on run Secrets) is its business. The operator only promises to call
``register`` (with ``runs.registration(plan)``) before the pod exists and
``unregister`` when the run is gone.
``InMemoryGateway`` keeps registrations in the process, for tests and single-process
setups.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any, Protocol

from continue_orchestrator import runs


class GatewayClient(Protocol):
    def register(self, registration: runs.Registration) -> None: ...

    def unregister(self, uid: str) -> Mapping[str, Any] | None:
        """Stop serving ``uid``; the gateway's answer (``recordDigest``, and ``replay``,
        the replay report's summary, for a replay) if it has one."""
        ...


class InMemoryGateway:
    """Keeps registrations in memory; thread-safe."""

    def __init__(self) -> None:
        self._runs: dict[str, runs.Registration] = {}
        self._lock = threading.Lock()

    def register(self, registration: runs.Registration) -> None:
        with self._lock:
            self._runs[registration.uid] = registration

    def unregister(self, uid: str) -> None:
        with self._lock:
            self._runs.pop(uid, None)

    def get(self, uid: str) -> runs.Registration | None:
        with self._lock:
            return self._runs.get(uid)

    def __len__(self) -> int:
        with self._lock:
            return len(self._runs)
