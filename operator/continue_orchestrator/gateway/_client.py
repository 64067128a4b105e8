"""The operator's side of the admin API: register, inspect and unregister runs.

``Client`` is asynchronous (aiohttp). ``BlockingClient`` wraps it for the operator's
handler threads and satisfies ``controller.GatewayClient``; it also remembers what it
registered and, when the gateway's instance id changes (a restarted gateway forgets its
runs), registers the live ones again. The body is built here from what the operator
already holds: the run's policy snapshot, its config.yaml and the granted secret values,
from which each model's real endpoint and key are read, and the run's repository with
the forge credential its git endpoint fetches with.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
import re
import threading
import time
import urllib.parse
from collections.abc import Collection, Mapping
from typing import Any, Protocol

import aiohttp
import yaml

from continue_orchestrator import errors
from continue_orchestrator.gateway import _registry

log = logging.getLogger(__name__)

PROVIDER_BASES = {
    "openai": "https://api.openai.com/v1",
    "anthropic": "https://api.anthropic.com/v1",
}
_SECRET_REFERENCE = re.compile(r"\$\{\{\s*secrets\.([A-Za-z0-9_.\-/]+)\s*\}\}")


class RepositorySource(Protocol):
    """The run's repository and the forge credential (``runs.GitOrigin`` has this)."""

    @property
    def url(self) -> str: ...
    @property
    def path(self) -> str: ...
    @property
    def username(self) -> str: ...
    @property
    def token(self) -> str: ...


class RunSource(Protocol):
    """What the operator knows of a run (``runs.Registration`` has exactly this)."""

    @property
    def uid(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def namespace(self) -> str: ...
    @property
    def token(self) -> str: ...
    @property
    def expires_at(self) -> float: ...
    @property
    def policy(self) -> bytes: ...
    @property
    def policy_digest(self) -> str: ...
    @property
    def allowed_egress(self) -> Collection[str]: ...
    @property
    def config(self) -> str: ...
    @property
    def secrets(self) -> Mapping[str, str]: ...
    @property
    def repository(self) -> RepositorySource | None: ...
    @property
    def agent(self) -> bool:
        """False for a sandbox that runs no agent and calls no model (a verify sandbox)."""
        ...


def upstreams_from_config(config: str, secrets: Mapping[str, str]) -> dict[str, _registry.Upstream]:
    """Each model of ``config`` (config.yaml text): its real apiBase and key.

    Each ``${{ secrets.NAME }}`` in a key is replaced by its value from ``secrets`` (a
    template such as ``team-7:${{ secrets.NAME }}`` is resolved whole); a missing value
    is an error naming the model, never an empty key.
    """
    try:
        document = yaml.safe_load(config) or {}
    except yaml.YAMLError as error:
        raise errors.GatewayError(
            f"config.yaml does not parse: {error}", where="gateway registration"
        ) from None
    found: dict[str, _registry.Upstream] = {}
    models = document.get("models") if isinstance(document, dict) else None
    for index, entry in enumerate(models or []):
        where = f"config.yaml models[{index}]"
        if not isinstance(entry, dict):
            raise errors.GatewayError("a model must be a mapping", where=where)
        name = str(entry.get("model") or entry.get("name") or f"model-{index}")
        provider = str(entry.get("provider") or "openai")
        base = str(entry.get("apiBase") or PROVIDER_BASES.get(provider, ""))
        key = str(entry.get("apiKey") or "").strip()
        for secret in _SECRET_REFERENCE.findall(key):
            if not secrets.get(secret):
                raise errors.GatewayError(
                    f"model {name!r} takes its apiKey from secret {secret!r}, which the run "
                    "was not given",
                    where=where,
                    fix=f"map {secret} in the AgentRun's spec.secrets and allow it in policy",
                )
        # A template ("Bearer ${{ secrets.X }}") is resolved whole, as Continue would.
        key = _SECRET_REFERENCE.sub(lambda match: secrets[match.group(1)], key)
        if not key:
            raise errors.GatewayError(
                f"model {name!r} has no apiKey", where=where, fix="set apiKey: ${{ secrets.NAME }}"
            )
        found[name] = _registry.Upstream(base, key, provider)
    if not found:
        raise errors.GatewayError("config.yaml has no models", where="gateway registration")
    return found


def registration_body(
    run: RunSource,
    *,
    models: Mapping[str, _registry.Upstream] | None = None,
    workspace: str | None = None,
    approval_timeout: float | None = None,
) -> dict[str, Any]:
    """The ``POST /admin/runs`` body for ``run`` (models from its config unless given)."""
    try:
        manifests = json.loads(run.policy)
    except ValueError as error:
        raise errors.GatewayError(
            f"the policy snapshot is not JSON: {error}", where=f"run {run.uid}"
        ) from None
    if not run.agent:
        upstreams: Mapping[str, _registry.Upstream] = {}
    elif models is not None:
        upstreams = models
    else:
        upstreams = upstreams_from_config(run.config, run.secrets)
    body: dict[str, Any] = {
        "uid": run.uid,
        "agent": run.agent,
        "name": run.name,
        "namespace": run.namespace,
        "token": run.token,
        "expiresAt": run.expires_at,
        "policy": {"digest": run.policy_digest, "manifests": manifests},
        "models": {
            name: {"apiBase": up.api_base, "apiKey": up.api_key, "provider": up.provider}
            for name, up in upstreams.items()
        },
        "allowedEgress": sorted(run.allowed_egress),
        "secrets": dict(run.secrets),
    }
    if workspace is not None:
        body["workspace"] = workspace
    if approval_timeout is not None:
        body["approvalTimeoutSeconds"] = approval_timeout
    if run.repository is not None:
        body["repository"] = {
            "url": run.repository.url,
            "path": run.repository.path,
            "username": run.repository.username,
            "token": run.repository.token,
        }
    replay_of = getattr(run, "replay_of", None)  # optional in RunSource
    if replay_of:
        body["replayOf"] = {"record": str(replay_of)}
    return body


class Client:
    """The gateway's admin API. ``async with Client(url, token) as client: ...``"""

    def __init__(self, admin_url: str, admin_token: str, *, timeout: float = 30.0) -> None:
        self.admin_url = admin_url.rstrip("/")
        self._token = admin_token
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _call(
        self, method: str, path: str, body: Mapping[str, Any] | None = None
    ) -> tuple[int, Any]:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        url = self.admin_url + path
        try:
            async with self._session.request(
                method,
                url,
                json=body,
                headers={"Authorization": f"Bearer {self._token}"},
            ) as response:
                text = await response.text()
                status = response.status
        except (aiohttp.ClientError, TimeoutError) as error:
            raise errors.GatewayError(
                f"cannot reach the gateway: {error or type(error).__name__}",
                where=f"{method} {url}",
                fix="check the gateway's admin URL and that it runs",
            ) from None
        try:
            answer = json.loads(text) if text else {}
        except ValueError:
            answer = {"error": {"message": text[:200]}}
        if status >= 400 and status != 404:
            message = (answer.get("error") or {}).get("message") or f"HTTP {status}"
            raise errors.GatewayError(
                message,
                where=f"{method} {url} (HTTP {status})",
                fix="check the admin token" if status == 401 else "",
            )
        return status, answer

    async def register(
        self,
        run: RunSource | Mapping[str, Any],
        *,
        models: Mapping[str, _registry.Upstream] | None = None,
        workspace: str | None = None,
        approval_timeout: float | None = None,
    ) -> dict[str, Any]:
        """Register ``run`` (a ``RunSource`` or a ready body); answers with its apiBase.

        Registering the same run again (same token and policy) is a no-op that keeps
        the gateway's state, so it is safe to repeat."""
        body = (
            dict(run)
            if isinstance(run, Mapping)
            else registration_body(
                run, models=models, workspace=workspace, approval_timeout=approval_timeout
            )
        )
        _, answer = await self._call("POST", "/admin/runs", body)
        return dict(answer)

    async def unregister(self, uid: str) -> str | None:
        """Seal the run's record; its digest, or None if the gateway does not serve it."""
        answer = await self.unregister_run(uid)
        return None if answer is None else str(answer["recordDigest"])

    async def unregister_run(self, uid: str) -> dict[str, Any] | None:
        """Seal the run's record: ``recordDigest``, ``outcome`` and, for a replay,
        ``replay`` (the report's summary and ``report``); None if not served."""
        status, answer = await self._call("DELETE", f"/admin/runs/{_quote(uid)}")
        return None if status == 404 else dict(answer)

    async def status(self, uid: str) -> dict[str, Any] | None:
        """``registered``, ``steps``, ``outcome``, ``recordDigest`` once sealed; None if unknown."""
        status, answer = await self._call("GET", f"/admin/runs/{_quote(uid)}")
        return None if status == 404 else dict(answer)

    async def instance(self) -> str:
        """The gateway process's random id; it changes when the gateway restarts."""
        _, answer = await self._call("GET", "/healthz")
        return str(answer.get("instance", ""))


def _quote(uid: str) -> str:
    return urllib.parse.quote(uid, safe="")


class BlockingClient:
    """``Client`` for threads: satisfies ``controller.GatewayClient``.

    Runs its own event loop in a daemon thread. Every ``watch_seconds`` it reads the
    gateway's instance id; when it changes, every run this client registered and did not
    unregister (and that has not expired) is registered again.
    """

    def __init__(
        self, admin_url: str, admin_token: str, *, timeout: float = 30.0, watch_seconds: float = 5.0
    ) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="gateway-client", daemon=True
        )
        self._thread.start()
        self.client = Client(admin_url, admin_token, timeout=timeout)
        self._bodies: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()
        self._instance: str | None = None
        self._watch: concurrent.futures.Future[None] | None = None
        if watch_seconds > 0:
            self._watch = asyncio.run_coroutine_threadsafe(
                self._watch_instance(watch_seconds), self._loop
            )

    def _run(self, coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    def register(self, registration: RunSource) -> None:
        body = registration_body(registration)
        self._run(self.client.register(body))
        with self._lock:
            self._bodies[registration.uid] = body

    def unregister(self, uid: str) -> dict[str, Any] | None:
        with self._lock:
            self._bodies.pop(uid, None)
        answer: dict[str, Any] | None = self._run(self.client.unregister_run(uid))
        return answer

    def status(self, uid: str) -> dict[str, Any] | None:
        result: dict[str, Any] | None = self._run(self.client.status(uid))
        return result

    def registered(self) -> list[str]:
        with self._lock:
            return sorted(self._bodies)

    def close(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
        self._run(self.client.close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    async def _watch_instance(self, every: float) -> None:
        while True:
            try:
                current = await self.client.instance()
                if self._instance is not None and current != self._instance:
                    log.warning("gateway restarted (instance %s); registering runs again", current)
                    await self.reregister()
                self._instance = current
            except errors.GatewayError as error:
                log.info("gateway not reachable: %s", error)
            except Exception:  # the watcher must outlive any one failure
                log.exception("gateway watch failed")
            await asyncio.sleep(every)

    async def reregister(self) -> list[str]:
        """Register again every remembered run that has not expired; their uids."""
        with self._lock:
            bodies = list(self._bodies.values())
        done = []
        for body in bodies:
            if float(body["expiresAt"]) <= time.time():
                with self._lock:
                    self._bodies.pop(body["uid"], None)
                continue
            try:
                await self.client.register(body)
                done.append(str(body["uid"]))
            except errors.GatewayError as error:
                log.error("could not register run %s again: %s", body["uid"], error)
        return done
