"""How long to wait before trying a forge call again, and when to stop.

Both backends retry what may pass later (a 429 or 5xx answer, a refused or dropped
connection, a timeout) with the same bounded exponential backoff, honouring the
forge's ``Retry-After`` unless it asks for longer than a caller can sensibly block:
then the transient ``errors.ForgeError`` goes up, carrying ``retry_after``, for the
caller to schedule (publication is retried from the operator's loop, not in a thread).
"""

from __future__ import annotations

import dataclasses

from continue_orchestrator import errors


@dataclasses.dataclass(frozen=True)
class Backoff:
    """``attempts`` tries in all; waits ``base_seconds``, doubling, at most
    ``max_seconds``; a ``Retry-After`` up to ``max_retry_after`` is waited for as given."""

    attempts: int = 4
    base_seconds: float = 0.5
    max_seconds: float = 8.0
    max_retry_after: float = 60.0

    def __post_init__(self) -> None:
        if self.attempts < 1 or self.base_seconds < 0 or self.max_seconds < self.base_seconds:
            raise errors.ForgeError(
                f"backoff {self} is not usable",
                where="forge retry settings",
                fix="attempts >= 1 and 0 <= base_seconds <= max_seconds",
            )

    def delay(self, failed_attempt: int, retry_after: float | None = None) -> float | None:
        """Seconds to wait after try number ``failed_attempt`` (1-based) failed
        transiently, or None: no tries left, or the forge asked to wait too long."""
        if failed_attempt >= self.attempts:
            return None
        if retry_after is not None:
            return retry_after if retry_after <= self.max_retry_after else None
        return float(min(self.max_seconds, self.base_seconds * 2 ** (failed_attempt - 1)))


DEFAULT = Backoff()
NO_RETRY = Backoff(attempts=1)
