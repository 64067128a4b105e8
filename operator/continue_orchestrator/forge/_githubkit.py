"""How this package uses githubkit: one configuration, one retry rule, one error mapping.

githubkit (typed, generated from GitHub's own OpenAPI description, token and GitHub
App auth built in) makes the GitHub calls. What it is configured with is decided once
here and shared by the App's token minting and the repository calls:

- REST API version ``2022-11-28``: the version GitHub Enterprise Server supports too;
- ``Accept: application/vnd.github+json, application/json``: GitHub answers JSON to
  either, and a plain OpenAPI tool (the Prism mock the tests validate against) can
  only negotiate the second;
- no HTTP cache (a cached pull request would hide its merge), a timeout, and retries by
  ``_retry.Backoff`` instead of githubkit's own (which waits out a rate limit however
  long the forge asks);
- every githubkit failure becomes ``errors.ForgeError`` through ``_failure``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
from collections.abc import Callable, Iterator
from typing import Any, Final, TypeVar

import githubkit
import githubkit.config
import githubkit.exception
import githubkit.typing
import httpx
import pydantic
from githubkit_schemas.v2022_11_28.rest import RestNamespace

from continue_orchestrator import errors
from continue_orchestrator.forge import _failure, _forge, _retry

API_VERSION: Final = "2022-11-28"
ACCEPT = "application/vnd.github+json, application/json"
USER_AGENT = "continue-orchestrator"

_M = TypeVar("_M", bound=pydantic.BaseModel)
_NEVER_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)


def failure(exc: Exception) -> errors.ForgeError:
    """The ``errors.ForgeError`` for a githubkit (or request-building) failure."""
    if isinstance(exc, githubkit.exception.RequestFailed):
        response = exc.response
        return _failure.from_response(
            "GitHub",
            exc.request.method,
            str(exc.request.url),
            response.status_code,
            dict(response.headers.items()),
            response.content,
        )
    if isinstance(exc, githubkit.exception.RequestError) and isinstance(
        exc.exc, httpx.TransportError
    ):
        request = exc.exc.request
        return _failure.no_answer("GitHub", request.method, str(request.url), repr(exc.exc))
    inner = exc.exc if isinstance(exc, githubkit.exception.RequestError) else exc
    fix = (
        "the request does not fit GitHub's schema (githubkit checks it before sending)"
        if isinstance(inner, pydantic.ValidationError)
        else "check the GitHub credential (an App's private key must be an RSA PEM)"
    )
    return errors.ForgeError(
        f"the GitHub request could not be made: {inner!r}", where="GitHub", fix=fix
    )


def _may_repeat(exc: Exception) -> bool:
    """Whether sending the request again cannot apply it twice."""
    if isinstance(exc, githubkit.exception.RequestFailed):
        return True  # GitHub answered: it applied the request, or refused it whole
    if isinstance(exc, githubkit.exception.RequestError) and isinstance(
        exc.exc, httpx.TransportError
    ):
        return exc.exc.request.method != "POST" or isinstance(exc.exc, _NEVER_SENT)
    return False


@dataclasses.dataclass(frozen=True)
class Retry:
    """githubkit's retry hook, deciding by ``_retry.Backoff``."""

    backoff: _retry.Backoff

    def __call__(
        self, exc: githubkit.exception.GitHubException, retry_count: int
    ) -> githubkit.typing.RetryOption:
        found = failure(exc)
        if not (found.transient and _may_repeat(exc)):
            return githubkit.typing.RetryOption(False)
        wait = self.backoff.delay(retry_count + 1, found.retry_after)
        if wait is None:
            return githubkit.typing.RetryOption(False)
        # githubkit waits 60 s for a zero timedelta; a zero wait is the smallest one
        return githubkit.typing.RetryOption(True, datetime.timedelta(seconds=max(wait, 0.001)))


def config(endpoint: _forge.Endpoint) -> githubkit.Config:
    """githubkit's configuration for the API at ``endpoint``."""
    base = githubkit.config.get_config(
        base_url=endpoint.api_url,
        user_agent=USER_AGENT,
        timeout=endpoint.timeout,
        transport=endpoint.transport,
        http_cache=False,
        # githubkit's default cache is process-wide and keys an App's JWT by its id alone:
        # another App of that id (a rotated key) would be signed in with the old JWT.
        cache_strategy=githubkit.cache.MemCacheStrategy(),
        auto_retry=Retry(endpoint.backoff),
    )
    return dataclasses.replace(base, accept=ACCEPT)


def rest(client: githubkit.GitHub[Any]) -> RestNamespace:
    """The client's REST namespace at ``API_VERSION``."""
    return client.rest(API_VERSION)


def read(
    client: githubkit.GitHub[Any],
    model: type[_M],
    where: str,
    call: Callable[[RestNamespace], githubkit.Response[Any, Any]],
) -> _M:
    """``call`` on the client's REST namespace; its JSON answer read as ``model``.
    Failures leave as ``errors.ForgeError``; ``where`` names the call in messages."""
    with calls():
        answer = call(rest(client))
    return _failure.parse(model, answer.json(), forge="GitHub", where=where)


@contextlib.contextmanager
def calls() -> Iterator[None]:
    """Run githubkit calls; their failures leave as ``errors.ForgeError``."""
    try:
        yield
    except githubkit.exception.GitHubException as e:
        raise failure(e) from e
    except pydantic.ValidationError as e:  # githubkit checks request bodies before sending
        raise failure(e) from e
