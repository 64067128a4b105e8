"""How the gateway answers over HTTP when it refuses: one error shape, one bearer reader.

Agents are OpenAI clients, so every refusal, on the agents' port and the admin port
alike, has the body OpenAI's API gives (``{"error": {"message", "type"}}``), which those
clients show as is. Both ports read a bearer token the same way.
"""

from __future__ import annotations

from aiohttp import web


def error(status: int, message: str, kind: str = "invalid_request_error") -> web.Response:
    """A JSON error answer: ``message`` says what failed, ``kind`` is OpenAI's error type."""
    return web.json_response({"error": {"message": message, "type": kind}}, status=status)


def bearer(authorization: str | None) -> str:
    """The token of an ``Authorization: Bearer <token>`` header ("" when there is none)."""
    return (authorization or "").removeprefix("Bearer ").strip()
