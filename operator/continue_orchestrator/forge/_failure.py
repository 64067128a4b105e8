"""A forge's error answer as an ``errors.ForgeError``: transient or not, its own words.

GitHub and Gitea answer failures alike (an HTTP status and a JSON ``message``, GitHub
adding an ``errors`` list), and whether a retry can help follows from the status and
the rate-limit headers, not from which forge said it. Both backends map their failures
here, so a 403 means the same thing whichever forge sent it: a rate limit (GitHub says
so with ``x-ratelimit-remaining: 0`` or ``Retry-After``) is transient, a refusal
(missing permission, a protected branch) is not.
"""

from __future__ import annotations

import email.utils
import json
import time
from collections.abc import Mapping
from typing import TypeVar

import pydantic

from continue_orchestrator import errors

_MAX_MESSAGE = 600
_Model = TypeVar("_Model", bound=pydantic.BaseModel)

_FIXES = {
    401: "check the credential: the token (or the GitHub App's id and private key) may be "
    "wrong, expired or revoked",
    403: "give the token or App the permission this needs (pull requests: write; issues: "
    "write for comments; checks: write for check runs); a protected branch answers 403 too",
    404: "check the repository URL and that the credential can see the repository (a forge "
    "answers 404, not 403, for a private repository it hides)",
    409: "the forge's message says what conflicts",
    422: "the forge's message says which field it refused",
}


def _headers(headers: Mapping[str, str]) -> dict[str, str]:
    return {key.lower(): value for key, value in headers.items()}


def forge_message(body: bytes | str) -> str:
    """The forge's own words from an error body: ``message`` and any ``errors``
    details (GitHub's validation list), or the text itself when it is not JSON."""
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    try:
        document = json.loads(text)
    except ValueError:
        document = None
    if not isinstance(document, dict):
        return " ".join(text.split())[:_MAX_MESSAGE]
    parts = [str(document["message"])] if document.get("message") else []
    for item in document.get("errors") or []:
        if isinstance(item, dict):
            detail = item.get("message") or " ".join(
                str(item[key]) for key in ("resource", "field", "code") if item.get(key)
            )
            parts.append(str(detail))
        elif item:
            parts.append(str(item))
    return "; ".join(p for p in parts if p)[:_MAX_MESSAGE]


def retry_after(headers: Mapping[str, str], *, now: float | None = None) -> float | None:
    """Seconds the forge asked to wait: ``Retry-After`` (seconds or an HTTP date), or,
    with no requests left (``x-ratelimit-remaining: 0``), until ``x-ratelimit-reset``."""
    found = _headers(headers)
    clock = time.time() if now is None else now
    value = found.get("retry-after", "").strip()
    if value:
        if value.isdigit():
            return float(value)
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        return max(0.0, when.timestamp() - clock)
    reset = found.get("x-ratelimit-reset", "").strip()
    if found.get("x-ratelimit-remaining") == "0" and reset.isdigit():
        return max(0.0, int(reset) - clock)
    return None


def _rate_limited(status: int, headers: dict[str, str], message: str) -> bool:
    if status == 429:
        return True
    return status == 403 and (
        headers.get("x-ratelimit-remaining") == "0"
        or "retry-after" in headers
        or "rate limit" in message.lower()
    )


def from_response(
    forge: str,
    method: str,
    url: str,
    status: int,
    headers: Mapping[str, str],
    body: bytes | str,
    *,
    now: float | None = None,
) -> errors.ForgeError:
    """The error for an answer with status ``status`` to ``method url`` from ``forge``
    (``"GitHub"``, ``"Gitea"``)."""
    found = _headers(headers)
    message = forge_message(body)
    said = f": {message}" if message else ""
    where = f"{forge} {method} {url}"
    if _rate_limited(status, found, message):
        wait = retry_after(found, now=now)
        return errors.ForgeError(
            f"{forge} rate limit reached ({status}){said}",
            where=where,
            fix="retried with backoff"
            + (f"; the forge asks to wait {wait:.0f}s" if wait is not None else ""),
            transient=True,
            status=status,
            forge_message=message,
            retry_after=wait,
        )
    if status >= 500 or status == 408:
        return errors.ForgeError(
            f"{forge} failed the request ({status}){said}",
            where=where,
            fix="retried with backoff; if it persists, the forge itself is in trouble",
            transient=True,
            status=status,
            forge_message=message,
            retry_after=retry_after(found, now=now),
        )
    return errors.ForgeError(
        f"{forge} refused the request ({status}){said}",
        where=where,
        fix=_FIXES.get(status, "the forge's message says why"),
        status=status,
        forge_message=message,
    )


def no_answer(forge: str, method: str, url: str, reason: str) -> errors.ForgeError:
    """The (transient) error for a request that got no answer: no connection, a reset
    or a timeout."""
    return errors.ForgeError(
        f"{forge} did not answer: {reason}",
        where=f"{forge} {method} {url}",
        fix="retried with backoff; check that the forge is reachable from here",
        transient=True,
    )


def parse(model: type[_Model], answer: object, *, forge: str, where: str) -> _Model:
    """``answer`` (decoded JSON) as ``model``; a forge answer that is not one raises
    ``errors.ForgeError`` naming the call (``where``) and the first wrong field."""
    try:
        return model.model_validate(answer)
    except pydantic.ValidationError as e:
        first = e.errors()[0]
        field = ".".join(str(part) for part in first["loc"]) or "the answer"
        raise errors.ForgeError(
            f"{forge}'s answer does not read as {model.__name__.strip('_')}: "
            f"{field}: {first['msg']}",
            where=f"{forge} {where}",
            fix=f"check that the API URL is {forge}'s REST API",
        ) from e
