"""How the gateway answers over HTTP when it refuses: one error shape, one bearer reader.

Agents are OpenAI clients, so every refusal, on the agents' port and the admin port
alike, has the body OpenAI's API gives (``{"error": {"message", "type"}}``), which those
clients show as is. Both ports read a bearer token the same way. Git is the exception
(``_git``): it shows a refusal's body only when it is plain text, and sends a credential
as HTTP Basic when it comes from a credential helper or a URL, so ``git_refusal`` and
``run_token`` are its forms of the two.
"""

from __future__ import annotations

import base64
import binascii

from aiohttp import web


def error(status: int, message: str, kind: str = "invalid_request_error") -> web.Response:
    """A JSON error answer: ``message`` says what failed, ``kind`` is OpenAI's error type."""
    return web.json_response({"error": {"message": message, "type": kind}}, status=status)


def bearer(authorization: str | None) -> str:
    """The token of an ``Authorization: Bearer <token>`` header ("" when there is none)."""
    return (authorization or "").removeprefix("Bearer ").strip()


def run_token(authorization: str | None) -> str:
    """The token of ``Bearer <token>``, or the password of HTTP Basic (any user name), as
    git sends it ("" when there is neither)."""
    scheme, _, value = (authorization or "").strip().partition(" ")
    if scheme.lower() == "bearer":
        return value.strip()
    if scheme.lower() != "basic":
        return ""
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return ""
    return decoded.partition(":")[2]


def git_refusal(status: int, message: str, *, realm: str = "") -> web.Response:
    """A plain-text refusal, which git prints to its user as ``remote: ...`` lines; with
    ``realm``, a 401 that asks git for a credential."""
    headers = {"WWW-Authenticate": f'Basic realm="{realm}"'} if realm else None
    return web.Response(
        status=status, text=message.rstrip("\n") + "\n", content_type="text/plain", headers=headers
    )
