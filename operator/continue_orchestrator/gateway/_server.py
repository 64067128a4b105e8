"""The gateway: an OpenAI-compatible endpoint per run that gates, brokers and records.

``Gateway`` puts the parts together and runs them: the runs it serves (``_runs``), the
agents' endpoints (``_model_api``, each request an ``_exchange.Exchange``, streamed
through ``_relay``), the tool-call gate (``_gate``), the runs' git endpoint (``_git``)
and the admin API (``_admin_http``).
It listens, and on a stop lets requests in flight finish and seals every record.
"""

from __future__ import annotations

import asyncio
import secrets
from typing import Any

from aiohttp import web

from continue_orchestrator import records
from continue_orchestrator.gateway import (
    _admin_http,
    _approvals,
    _forge_tokens,
    _gate,
    _git,
    _model_api,
    _recorder,
    _registry,
    _runs,
)


class Gateway:
    """The gateway server. ``register_run`` each run, then point its agent at ``base_url``."""

    def __init__(
        self,
        *,
        record_root: str,
        ledger: _recorder.LedgerSink | None = None,
        broker: _approvals.ApprovalBroker | None = None,
        admin_token: str | None = None,
        decide: _gate.ToolDecider = _gate.policy_decider,
        shutdown_timeout: float = 30.0,
        local_repositories: bool = False,
        app_tokens: _forge_tokens.AppTokens | None = None,
    ) -> None:
        """``local_repositories``: serve runs whose repository is a local path (``file://``)
        from this machine's disk, as local mode does; a cluster's gateway fetches from
        forges only. ``app_tokens``: the GitHub App whose installation tokens fetch a
        run's GitHub repository when its registration carries no forge token."""
        self.store = records.BlobStore(record_root)
        self.ledger = ledger
        self.registry = _runs.Runs(self.store, ledger)
        """The runs served now: ``get(uid)`` is a run's registration, ``uids()`` all."""
        self.admin_token = admin_token
        self.shutdown_timeout = shutdown_timeout
        self.base_url = ""
        self.admin_url = ""
        self.draining = False
        self.instance = secrets.token_hex(8)
        self._gate = _gate.Gate(decide, broker or _approvals.LocalApprovalBroker())
        self._model_api = _model_api.ModelAPI(self.registry, self._gate)
        self._git_api = _git.GitAPI(
            self.registry, local_repositories=local_repositories, app_tokens=app_tokens
        )
        self._admin_api = _admin_http.AdminAPI(self.registry, self, admin_token)
        self._runners: list[web.AppRunner] = []

    @property
    def broker(self) -> _approvals.ApprovalBroker:
        """Who decides held tool calls; replaceable before the first one is held."""
        return self._gate.broker

    @broker.setter
    def broker(self, broker: _approvals.ApprovalBroker) -> None:
        self._gate.broker = broker

    @property
    def decide(self) -> _gate.ToolDecider:
        return self._gate.decide

    # -- lifecycle ---------------------------------------------------------------------

    def app(self, *, public: bool = True, admin: bool = True) -> web.Application:
        """The routes: the agents' (``public``), the operator's and people's (``admin``)."""
        app = web.Application(client_max_size=64 * 1024 * 1024)
        if public:
            self._model_api.add_routes(app)
            self._git_api.add_routes(app)
        if admin:
            self._admin_api.add_routes(app)
        app.router.add_get("/healthz", self._health)
        app.router.add_get("/readyz", self._ready)
        return app

    async def start(
        self, host: str = "127.0.0.1", port: int = 0, *, admin: tuple[str, int] | None = None
    ) -> str:
        """Listen; return the base URL (``http://host:port``).

        With ``admin`` (host, port) the admin API listens there only, so a NetworkPolicy
        can keep sandboxes, which reach the public port, away from it.
        """
        apps = [(self.app(admin=admin is None), host, port)]
        if admin is not None:
            apps.append((self.app(public=False), *admin))
        urls = []
        for app, bind, wanted in apps:
            runner = web.AppRunner(
                app,
                access_log=None,
                handler_cancellation=True,
                shutdown_timeout=self.shutdown_timeout,
            )
            await runner.setup()
            await web.TCPSite(runner, bind, wanted).start()
            self._runners.append(runner)
            shown = f"[{bind}]" if ":" in bind else bind
            urls.append(f"http://{shown}:{runner.addresses[0][1]}")
        self.base_url = urls[0]
        self.admin_url = urls[-1]
        return self.base_url

    async def stop(self) -> dict[str, str]:
        """Stop gracefully: refuse new connections, let requests in flight finish (up to
        ``shutdown_timeout``), then write every pending record and seal each live run's
        record as it stands. Returns run uid -> record digest of what was sealed."""
        self.draining = True
        runners, self._runners = self._runners, []
        await asyncio.gather(*(runner.cleanup() for runner in runners))
        return await self.registry.seal_all()

    # -- runs --------------------------------------------------------------------------

    def register_run(self, registration: _registry.RunRegistration) -> str:
        """Serve ``registration``; returns the ``apiBase`` its agent must use."""
        self.registry.add(registration)
        return self.api_base(registration.uid)

    async def unregister_run(self, uid: str) -> str | None:
        """Stop serving ``uid``; returns the sealed record's manifest digest."""
        sealed = await self.registry.seal(uid)
        return None if sealed is None else str(sealed["recordDigest"])

    def api_base(self, uid: str) -> str:
        return f"{self.base_url}/runs/{uid}/v1"

    def record(self, uid: str) -> records.RunRecord:
        state = self.registry.state(uid)
        return state.recorder.record if state else records.load(self.store, uid)

    def outcome(self, uid: str) -> dict[str, Any] | None:
        state = self.registry.state(uid)
        return state.outcome if state else None

    def pending_approvals(self, uid: str) -> list[_approvals.Approval]:
        return _approvals.pending(self.broker, uid)

    # -- probes ------------------------------------------------------------------------

    async def _health(self, request: web.Request) -> web.Response:
        return web.json_response({"ok": True, "instance": self.instance})

    async def _ready(self, request: web.Request) -> web.Response:
        if self.draining:
            return web.json_response({"ready": False, "reason": "shutting down"}, status=503)
        return web.json_response({"ready": True, "runs": len(self.registry)})
