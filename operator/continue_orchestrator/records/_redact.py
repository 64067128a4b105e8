"""Redaction of secret values from everything a record stores.

A secret value (a granted secret, an upstream key, the run token) is replaced by
``[REDACTED:NAME]`` both as written and as JSON escapes it, so no blob, record line or
ledger payload ever holds one. It lives with the records because both the gateway
(writing them) and replay (comparing against them) must redact exactly alike.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any


class Redactor:
    """Replaces each secret value (a key of ``values``) by ``[REDACTED:NAME]``."""

    def __init__(self, values: Mapping[str, str]) -> None:
        pairs: list[tuple[bytes, bytes]] = []
        for value, name in values.items():
            placeholder = f"[REDACTED:{name}]".encode()
            pairs.append((value.encode(), placeholder))
            escaped = json.dumps(value)[1:-1].encode()
            if escaped != value.encode():
                pairs.append((escaped, placeholder))
            ascii_escaped = json.dumps(value, ensure_ascii=True)[1:-1].encode()
            if ascii_escaped not in (value.encode(), escaped):
                pairs.append((ascii_escaped, placeholder))
        # Longest first, so a secret containing another is replaced whole.
        self._pairs = sorted(pairs, key=lambda pair: -len(pair[0]))

    def __call__(self, data: bytes) -> bytes:
        for value, placeholder in self._pairs:
            if value in data:
                data = data.replace(value, placeholder)
        return data

    def json(self, value: Any) -> Any:
        return json.loads(self(json.dumps(value).encode()))
