"""A small JSON-over-HTTP client for forge REST APIs, with timeouts and bounded retries.

The Gitea backend needs a handful of JSON calls; the standard library does that without
a new dependency (GitHub goes through githubkit instead). Every call has a timeout;
a transient failure (429, 5xx, no connection, a timeout) is retried with
``_retry.Backoff``; anything else becomes the forge's ``errors.ForgeError`` at once.
A POST is repeated only when the forge answered (it refused it whole) or the
connection was never made, so a request that may have been applied is not sent twice.
"""

from __future__ import annotations

import http.client
import json
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping

from continue_orchestrator import errors
from continue_orchestrator.forge import _failure, _retry

Query = Mapping[str, str | int]


def _may_repeat(method: str, failure: errors.ForgeError) -> bool:
    if method != "POST" or failure.status is not None:
        return True
    cause = failure.__cause__
    reason = cause.reason if isinstance(cause, urllib.error.URLError) else cause
    return isinstance(reason, ConnectionRefusedError)


class Client:
    """JSON calls to ``base_url`` (e.g. ``https://gitea.example/api/v1``) as ``forge``."""

    def __init__(
        self,
        forge: str,
        base_url: str,
        *,
        headers: Mapping[str, str],
        timeout: float,
        backoff: _retry.Backoff,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.forge = forge
        self.base_url = base_url.rstrip("/")
        self._headers = {
            "Accept": "application/json",
            "User-Agent": "continue-orchestrator",
            **headers,
        }
        self._timeout = timeout
        self._backoff = backoff
        self._sleep = sleep
        self._opener = urllib.request.build_opener()

    def url(self, path: str, query: Query | None = None) -> str:
        """The full URL of ``path`` (which starts with ``/``) with ``query``."""
        suffix = f"?{urllib.parse.urlencode(query)}" if query else ""
        return f"{self.base_url}{path}{suffix}"

    def call(
        self, method: str, path: str, *, query: Query | None = None, body: object = None
    ) -> object:
        """The decoded JSON answer (None when empty); ``errors.ForgeError`` on failure,
        after retrying transient ones."""
        url = self.url(path, query)
        data = None if body is None else json.dumps(body).encode("utf-8")
        attempt = 0
        while True:
            attempt += 1
            try:
                return self._once(method, url, data)
            except errors.ForgeError as failure:
                repeat = failure.transient and _may_repeat(method, failure)
                wait = self._backoff.delay(attempt, failure.retry_after) if repeat else None
                if wait is None:
                    raise
            self._sleep(wait)

    def _once(self, method: str, url: str, data: bytes | None) -> object:
        headers = dict(self._headers)
        if data is not None:
            headers["Content-Type"] = "application/json"
        request = urllib.request.Request(url, data=data, method=method, headers=headers)
        try:
            with self._opener.open(request, timeout=self._timeout) as response:
                raw = response.read()
        except urllib.error.HTTPError as e:
            with e:
                answer = e.read()
            raise _failure.from_response(
                self.forge, method, url, e.code, dict(e.headers.items()), answer
            ) from e
        except urllib.error.URLError as e:
            raise _failure.no_answer(self.forge, method, url, str(e.reason)) from e
        except (TimeoutError, ConnectionError, http.client.HTTPException) as e:
            raise _failure.no_answer(self.forge, method, url, repr(e)) from e
        if not raw:
            return None
        try:
            return json.loads(raw)
        except ValueError as e:
            raise errors.ForgeError(
                f"{self.forge} answered with something that is not JSON: {raw[:200]!r}",
                where=f"{self.forge} {method} {url}",
                fix="check that the API URL points at the forge's REST API",
            ) from e
