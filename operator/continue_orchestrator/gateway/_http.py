"""How the gateway speaks HTTP: one error shape, one bearer reader, one upstream client.

Agents are OpenAI clients, so every refusal, on the agents' port and the admin port
alike, has the body OpenAI's API gives (``{"error": {"message", "type"}}``), which those
clients show as is. Both ports read a bearer token the same way, and each set of routes
that calls out holds an ``Upstream`` client for the app's life. Git is the exception
(``_git``): it shows a refusal's body only when it is plain text, and sends a credential
as HTTP Basic when it comes from a credential helper or a URL, so ``git_refusal`` and
``run_token`` are its forms of the two.
"""

from __future__ import annotations

import base64
import binascii

import aiohttp
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


class Upstream:
    """The HTTP client a set of routes calls out with: opened when the app starts, closed
    when it stops (``attach``), shared by every request meanwhile. A call may take as
    long as it streams; 30 s to connect, 10 min of silence at most. ``decompress``:
    whether bodies are decoded (a model's JSON) or passed on as encoded (a git pack)."""

    def __init__(self, *, decompress: bool) -> None:
        self._decompress = decompress
        self._session: aiohttp.ClientSession | None = None

    def attach(self, app: web.Application) -> None:
        app.on_startup.append(self._open)
        app.on_cleanup.append(self._close)

    @property
    def session(self) -> aiohttp.ClientSession:
        assert self._session is not None, "the app has not started"
        return self._session

    async def _open(self, app: web.Application) -> None:
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=600),
            auto_decompress=self._decompress,
        )

    async def _close(self, app: web.Application) -> None:
        if self._session is not None:
            await self._session.close()
