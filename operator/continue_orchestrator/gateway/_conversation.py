"""Keeping the model's conversation consistent when the agent never saw part of it.

When the gateway denies every tool call of a model turn, it answers the model itself
(the assistant turn, then a ``role: tool`` result saying the call was denied and why)
and hands the agent only the model's next turn. When it denies some calls of a turn and
passes others, the agent sees the turn without the denied calls. Either way the agent's
history now lacks messages the model did see. A ``Splice`` remembers, for the position
the delivered assistant message will take in the agent's history, what the model saw in
its place; later requests are rewritten with it before they go upstream. A splice applies
only where the agent's message still matches (an assistant message with exactly the
delivered call ids, after the same preceding message), so a history the agent rewrote
(compaction, a fresh conversation) is forwarded as is rather than corrupted.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

Message = dict[str, Any]


def _fingerprint(message: Mapping[str, Any] | None) -> str:
    if message is None:
        return ""
    content = message.get("content")
    text = content if isinstance(content, str) else json.dumps(content, sort_keys=True)
    key = json.dumps([message.get("role"), text, message.get("tool_call_id")])
    return hashlib.sha256(key.encode()).hexdigest()


def call_ids(message: Mapping[str, Any]) -> tuple[str, ...]:
    return tuple(sorted(str(call.get("id")) for call in message.get("tool_calls") or []))


@dataclass(frozen=True)
class Splice:
    index: int
    previous: str
    delivered_calls: tuple[str, ...]
    upstream: tuple[Message, ...]

    @classmethod
    def at(
        cls,
        history: Sequence[Mapping[str, Any]],
        delivered: Mapping[str, Any],
        upstream: Sequence[Message],
    ) -> Splice:
        """A splice for ``delivered``, about to be appended to the agent's ``history``."""
        return cls(
            index=len(history),
            previous=_fingerprint(history[-1] if history else None),
            delivered_calls=call_ids(delivered),
            upstream=tuple(upstream),
        )

    def matches(self, messages: Sequence[Mapping[str, Any]]) -> bool:
        if self.index >= len(messages):
            return False
        message = messages[self.index]
        previous = messages[self.index - 1] if self.index else None
        return (
            message.get("role") == "assistant"
            and call_ids(message) == self.delivered_calls
            and _fingerprint(previous) == self.previous
        )


class Conversation:
    """The splices of one run, by position in the agent's history."""

    def __init__(self) -> None:
        self._splices: dict[int, Splice] = {}

    def add(self, splice: Splice) -> None:
        self._splices[splice.index] = splice

    def upstream_messages(self, messages: Sequence[Message]) -> tuple[list[Message], int]:
        """``messages`` as the model must see them, and how many splices applied."""
        if not self._splices:
            return list(messages), 0
        result: list[Message] = []
        applied = 0
        for index, message in enumerate(messages):
            splice = self._splices.get(index)
            if splice is not None and splice.matches(messages):
                result.extend(splice.upstream)
                applied += 1
            else:
                result.append(message)
        return result, applied
