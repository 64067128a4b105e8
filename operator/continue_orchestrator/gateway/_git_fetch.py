"""Where the gateway's git endpoint gets what a run fetches: the forge, or a local repository.

For a forge (``GitOrigin.remote``) the request goes to its smart-HTTP URL with the forge
credential the gateway holds (a ``Credential``: the registration's token, or a GitHub
App installation token the gateway minted; HTTP Basic), the ``Git-Protocol`` header
passed on, and
both bodies streamed chunk by chunk with their encodings untouched: the client's
request as it arrives, the pack as the forge sends it. Redirects are not followed (a
credential is never sent to a host the run was not registered with). For a local
repository (local mode; the demo's origin is a directory) the gateway runs
``git upload-pack --stateless-rpc`` on it, as ``git http-backend`` would, with no user
or system configuration. Either way the caller sees a ``Served``: the response, its
status and how many bytes were sent, before the response is ended, so what it records
of the fetch is written before git has its whole answer.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import os
import re
from collections.abc import AsyncIterator, Callable

import aiohttp
from aiohttp import web

from continue_orchestrator.gateway import _http, _pktline, _registry

UPLOAD_PACK = "git-upload-pack"
CHUNK = 1 << 16
REQUEST_LIMIT = 64 << 20
"""Largest upload-pack request (inflated) fed to a local repository: wants and haves."""

_PROTOCOL = re.compile(r"[A-Za-z0-9=:._-]{1,256}")
_FORWARDED_REQUEST = ("Content-Type", "Accept", "Accept-Encoding", "Content-Encoding")
_FORWARDED_RESPONSE = ("Content-Type", "Content-Encoding", "Cache-Control", "Expires", "Pragma")
_ADVERTISEMENT = f"application/x-{UPLOAD_PACK}-advertisement"
_RESULT = f"application/x-{UPLOAD_PACK}-result"
_NO_CACHE = {"Cache-Control": "no-cache, max-age=0, must-revalidate", "Pragma": "no-cache"}


@dataclasses.dataclass(frozen=True)
class Credential:
    """What the gateway signs in to the forge with, and what to say when it is refused."""

    username: str
    secret: str = dataclasses.field(repr=False)
    held: str = "the credential the gateway holds"
    """Names the credential in messages."""
    fix: str = (
        "the run's spec.repository.credentialsSecretRef must name a token that may read it "
        "(orchestrator run: --repository-credential)"
    )
    """What to do when the forge refuses it."""

    @classmethod
    def registered(cls, origin: _registry.GitOrigin) -> Credential | None:
        """The credential the run was registered with, or None if it carries none."""
        return cls(origin.username, origin.token) if origin.token else None


@dataclasses.dataclass
class Served:
    """What one git request was answered with."""

    response: web.StreamResponse
    status: int
    sent: int = 0
    """Body bytes written to the client."""


def protocol(request: web.Request) -> str:
    """The client's ``Git-Protocol`` header (``version=2``) if well-formed, else ""."""
    value = request.headers.get("Git-Protocol", "")
    return value if _PROTOCOL.fullmatch(value) else ""


async def request_body(request: web.Request, seen: Callable[[bytes], None]) -> AsyncIterator[bytes]:
    """The request body's chunks as they arrive, each shown to ``seen`` first."""
    async for chunk in request.content.iter_chunked(CHUNK):
        seen(chunk)
        yield chunk


async def _stream(
    request: web.Request,
    status: int,
    headers: dict[str, str],
    first: bytes,
    rest: AsyncIterator[bytes],
) -> Served:
    response = web.StreamResponse(status=status, headers=headers)
    await response.prepare(request)
    served = Served(response, status, len(first))
    await response.write(first)
    async for chunk in rest:
        await response.write(chunk)
        served.sent += len(chunk)
    return served  # ended (write_eof) by aiohttp once the handler returns


def _refused(status: int, message: str) -> Served:
    return Served(_http.git_refusal(status, message), status)


# -- a forge --------------------------------------------------------------------------


async def from_forge(
    client: aiohttp.ClientSession,
    origin: _registry.GitOrigin,
    request: web.Request,
    *,
    advertise: bool,
    body: AsyncIterator[bytes] | None,
    credential: Credential | None,
) -> Served:
    """Forward ``request`` (info/refs when ``advertise``, else the upload-pack POST with
    ``body``) to the forge, signed in with ``credential``; stream its answer back."""
    base = origin.url.rstrip("/")
    url = f"{base}/info/refs?service={UPLOAD_PACK}" if advertise else f"{base}/{UPLOAD_PACK}"
    headers = {
        name: request.headers[name] for name in _FORWARDED_REQUEST if name in request.headers
    }
    agent = request.headers.get("User-Agent", "")
    headers["User-Agent"] = agent if agent.startswith("git/") else "git/continue-orchestrator"
    if protocol(request):
        headers["Git-Protocol"] = protocol(request)
    if credential is not None:
        pair = f"{credential.username}:{credential.secret}".encode()
        headers["Authorization"] = "Basic " + base64.b64encode(pair).decode()
    host = f"the forge at {_host(origin.url)}"
    try:
        upstream = await client.request(
            "GET" if advertise else "POST",
            url,
            data=body,
            headers=headers,
            allow_redirects=False,
        )
    except (aiohttp.ClientError, TimeoutError) as error:
        return _refused(502, f"the gateway could not reach {host}: {error or type(error).__name__}")
    async with upstream:
        if upstream.status != 200:
            return _refused(*_forge_failure(upstream, host, origin, credential))
        answer = {
            name: upstream.headers[name] for name in _FORWARDED_RESPONSE if name in upstream.headers
        }
        first = await upstream.content.read(CHUNK)
        return await _stream(request, 200, answer, first, upstream.content.iter_chunked(CHUNK))


def _host(url: str) -> str:
    return url.split("://", 1)[-1].split("/", 1)[0]


def _forge_failure(
    upstream: aiohttp.ClientResponse,
    host: str,
    origin: _registry.GitOrigin,
    credential: Credential | None,
) -> tuple[int, str]:
    status = upstream.status
    if status in (401, 403):
        held = credential.held if credential else "no credential"
        fix = credential.fix if credential else Credential.fix
        return 502, f"{host} refused to serve {origin.path} with {held} (HTTP {status}); {fix}"
    if status == 404:
        return 404, f"{host} has no repository {origin.path}, or its credential cannot see it"
    if 300 <= status < 400:
        moved = upstream.headers.get("Location", "elsewhere")
        return 502, (
            f"{host} redirected the fetch of {origin.path} (HTTP {status}, to {moved}); the "
            "gateway follows no redirect: put the repository's current URL in "
            "spec.repository.url"
        )
    return 502, f"{host} answered HTTP {status} to the fetch of {origin.path}"


# -- a local repository ---------------------------------------------------------------


def _git_environment(protocol_header: str) -> dict[str, str]:
    env = {
        "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
        "HOME": "/nonexistent",
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": os.devnull,
        "LANG": "C",
    }
    if protocol_header:
        env["GIT_PROTOCOL"] = protocol_header
    return env


async def from_directory(
    path: str,
    request: web.Request,
    *,
    advertise: bool,
    body: AsyncIterator[bytes] | None,
) -> Served:
    """Answer ``request`` from the local repository at ``path`` with ``git upload-pack``."""
    version = protocol(request)
    argv = ["git", "-c", "safe.directory=*", "upload-pack", "--stateless-rpc"]
    argv += ["--advertise-refs", path] if advertise else [path]
    process = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL if body is None else asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=_git_environment(version),
    )
    assert process.stdout is not None and process.stderr is not None
    errors_read = asyncio.ensure_future(process.stderr.read())
    feeding = None
    if body is not None:
        feeding = asyncio.ensure_future(
            _feed(process, body, request.headers.get("Content-Encoding"))
        )
    try:
        first = await process.stdout.read(CHUNK)
        if not first:
            await process.wait()
            said = (await errors_read).decode(errors="replace").strip().splitlines()
            problem = said[-1] if said else f"exit {process.returncode}"
            if feeding is not None and feeding.done() and feeding.exception() is not None:
                problem = str(feeding.exception())
            return _refused(502, f"git upload-pack failed on {path}: {problem}")
        # v0 advertisements begin with the service line, as git http-backend writes it.
        if advertise and "version=2" not in version:
            first = _service_line() + first
        headers = {"Content-Type": _ADVERTISEMENT if advertise else _RESULT, **_NO_CACHE}
        served = await _stream(request, 200, headers, first, _read(process.stdout))
        await process.wait()
        return served
    finally:
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
        for task in (feeding, errors_read):
            if task is not None and not task.done():
                task.cancel()
            if task is not None:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task


def _service_line() -> bytes:
    line = f"# service={UPLOAD_PACK}\n".encode()
    return f"{len(line) + 4:04x}".encode() + line + b"0000"


async def _read(stream: asyncio.StreamReader) -> AsyncIterator[bytes]:
    while chunk := await stream.read(CHUNK):
        yield chunk


async def _feed(
    process: asyncio.subprocess.Process, body: AsyncIterator[bytes], encoding: str | None
) -> None:
    """Write the request, inflated, to upload-pack's input, then close it."""
    assert process.stdin is not None
    inflate = _pktline.inflater(encoding)
    total = 0
    try:
        async for chunk in body:
            piece = chunk if inflate is None else inflate(chunk)
            while piece:
                total += len(piece)
                if total > REQUEST_LIMIT:
                    raise ValueError(f"the upload-pack request is over {REQUEST_LIMIT >> 20} MiB")
                process.stdin.write(piece)
                await process.stdin.drain()
                piece = b"" if inflate is None else inflate(b"")
    except (BrokenPipeError, ConnectionResetError):
        pass  # upload-pack stopped reading: its answer (or error) says why
    finally:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            process.stdin.close()
