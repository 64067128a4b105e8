"""One spelling of time in what the controller writes: RFC 3339, whole seconds, UTC.

A condition's lastTransitionTime, a run's startTime and completionTime, a held call's
requestedAt and expiresAt, and an Event's timestamps are all written by ``rfc3339``, so
they compare as text and never differ by a fraction a reader has to strip. ``parse``
reads them, and the API server's own timestamps, back.
"""

from __future__ import annotations

import datetime
import time

_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


def rfc3339(at: float) -> str:
    """``at`` (seconds since the epoch) as ``2026-01-01T00:00:00Z``."""
    return datetime.datetime.fromtimestamp(at, datetime.UTC).strftime(_FORMAT)


def now() -> str:
    """The current time as ``rfc3339`` writes it."""
    return rfc3339(time.time())


def parse(text: str | None) -> float | None:
    """Seconds since the epoch of an RFC 3339 time; None for none or a malformed one."""
    if not text:
        return None
    try:
        value = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return (value if value.tzinfo else value.replace(tzinfo=datetime.UTC)).timestamp()
