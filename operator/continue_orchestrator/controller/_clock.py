"""The controller's clock: times in what it writes, in the one format ``runs`` owns.

A condition's lastTransitionTime, a run's startTime and completionTime, a held call's
requestedAt and expiresAt, and an Event's timestamps are all RFC 3339 to the second in
UTC (``runs.timestamp``, as Kubernetes writes times, and as the run.finished entry repeats
them), so they compare as text and never differ by a fraction a reader has to strip.
This module only adapts it to the seconds-since-the-epoch the controller computes with.
"""

from __future__ import annotations

import datetime
import time

from continue_orchestrator import runs


def rfc3339(at: float) -> str:
    """``at`` (seconds since the epoch) as ``2026-01-01T00:00:00Z``."""
    return runs.timestamp(datetime.datetime.fromtimestamp(at, datetime.UTC))


def now() -> str:
    """The current time as ``rfc3339`` writes it."""
    return rfc3339(time.time())


def parse(text: str | None) -> float | None:
    """Seconds since the epoch of an RFC 3339 time; None for none or a malformed one."""
    parsed = runs.parse_time(text)
    return parsed.timestamp() if parsed is not None else None
