"""The admin API over HTTP: the operator registers, inspects and unregisters runs, and
people list and decide pending approvals.

Every route needs the admin token (compared as a digest, in constant time); without an
admin token the API is off. A registration body is read by ``_admin`` (which trusts
nothing in it); registering a run again with the same token and policy is a no-op, and
with another token or policy a conflict. ``Gateway.start`` can put these routes on a port
of their own, which the sandboxes cannot reach.
"""

from __future__ import annotations

import asyncio
import hmac
import time
from collections.abc import Awaitable, Callable
from typing import Protocol

from aiohttp import web

from continue_orchestrator import errors
from continue_orchestrator.gateway import (
    _admin,
    _approvals,
    _http,
    _metrics,
    _registry,
    _replay,
    _runs,
)

Handler = Callable[[web.Request], Awaitable[web.Response]]


class Host(Protocol):
    """What the admin API reads of the gateway it serves (``Gateway`` has it)."""

    broker: _approvals.ApprovalBroker
    draining: bool

    def api_base(self, uid: str) -> str: ...


class AdminAPI:
    """The ``/admin`` handlers of one gateway."""

    def __init__(self, runs: _runs.Runs, host: Host, admin_token: str | None) -> None:
        self.runs = runs
        self.host = host
        self._token_digest = (
            _registry.token_digest(admin_token) if admin_token is not None else None
        )

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post("/admin/runs", self._guarded(self.register))
        app.router.add_get("/admin/runs/{run}", self._guarded(self.status))
        app.router.add_delete("/admin/runs/{run}", self._guarded(self.unregister))
        app.router.add_get("/admin/runs/{run}/approvals", self._guarded(self.approvals))
        app.router.add_post("/admin/runs/{run}/approvals/{call}", self._guarded(self.decide))

    def _guarded(self, handler: Handler) -> Handler:
        async def guarded(request: web.Request) -> web.Response:
            refused = self._refused(request)
            return refused if refused is not None else await handler(request)

        return guarded

    def _refused(self, request: web.Request) -> web.Response | None:
        if self._token_digest is None:
            return _http.error(404, "the admin API is disabled (no admin token)", "not_found")
        presented = _registry.token_digest(_http.bearer(request.headers.get("Authorization")))
        # Equal-length digests: the comparison's time says nothing about the token.
        if not hmac.compare_digest(presented, self._token_digest):
            return _http.error(401, "invalid admin token", "authentication_error")
        return None

    async def register(self, request: web.Request) -> web.Response:
        if self.host.draining:
            return _http.error(503, "the gateway is shutting down; register with its successor")
        try:
            body = await request.json()
        except ValueError:
            return _http.error(400, f"{_admin.WHERE}: the body is not JSON")
        try:
            registration = await asyncio.to_thread(_admin.registration, body)
        except errors.GatewayError as error:
            _metrics.REGISTRATIONS.labels("refused").inc()
            return _http.error(400, error.message)
        current = self.runs.state(registration.uid)
        if current is not None:
            old = current.registration
            if (old.token_sha256, old.policy_digest) != (
                registration.token_sha256,
                registration.policy_digest,
            ):
                _metrics.REGISTRATIONS.labels("conflict").inc()
                return _http.error(
                    409,
                    f"run {registration.uid} is registered with a different token or policy; "
                    "a run's token and policy never change (DELETE it first if it is a new run)",
                    "conflict",
                )
            self.runs.renew(current, registration)
            registration = current.registration
        else:
            replay = None
            if registration.replay_of:
                try:
                    registration, replay = await _replay.start(self.runs.store, registration)
                except errors.GatewayError as error:
                    _metrics.REGISTRATIONS.labels("refused").inc()
                    return _http.error(400, error.message)
            self.runs.add(registration, replay)
        created = current is None
        _metrics.REGISTRATIONS.labels("created" if created else "repeated").inc()
        return web.json_response(
            {
                "uid": registration.uid,
                "created": created,
                "apiBase": self.host.api_base(registration.uid),
                "policyDigest": registration.policy_digest,
                "expiresAt": registration.expires_at,
            },
            status=201 if created else 200,
        )

    async def status(self, request: web.Request) -> web.Response:
        uid = request.match_info["run"]
        state = self.runs.state(uid)
        if state is None:
            sealed = await self.runs.sealed(uid)
            if sealed is None:
                return _not_registered(uid)
            return web.json_response({"uid": uid, "registered": False, **sealed})
        registration = state.registration
        await state.recorder.drain()  # so ``steps`` counts every exchange answered so far
        return web.json_response(
            {
                "uid": uid,
                "registered": True,
                "name": registration.name,
                "namespace": registration.namespace,
                "policyDigest": registration.policy_digest,
                "expiresAt": registration.expires_at,
                "expired": time.time() >= registration.expires_at,
                "models": sorted(registration.models),
                "repository": registration.repository.url if registration.repository else None,
                "steps": len(state.recorder.record.exchanges),
                "pendingApprovals": len(_approvals.pending(self.host.broker, uid)),
                "outcome": state.outcome,
            }
        )

    async def unregister(self, request: web.Request) -> web.Response:
        uid = request.match_info["run"]
        sealed = await self.runs.seal(uid)
        if sealed is None:
            return _not_registered(uid)
        return web.json_response(
            {
                "uid": uid,
                "recordDigest": sealed["recordDigest"],
                "outcome": sealed["outcome"],
                "replay": sealed.get("replay"),
            }
        )

    async def approvals(self, request: web.Request) -> web.Response:
        pending = _approvals.pending(self.host.broker, request.match_info["run"])
        return web.json_response({"approvals": [approval.to_json() for approval in pending]})

    async def decide(self, request: web.Request) -> web.Response:
        decide = getattr(self.host.broker, "decide", None)
        if decide is None:
            return _http.error(409, "this gateway's approvals are decided elsewhere (RunApproval)")
        try:
            body = await request.json()
            decision = body["decision"]
            if decision not in ("approve", "deny"):
                raise ValueError(decision)
        except (ValueError, KeyError, TypeError):
            return _http.error(400, 'the body must be {"decision": "approve"|"deny", "by": NAME}')
        try:
            approval = decide(
                request.match_info["run"],
                request.match_info["call"],
                approved=decision == "approve",
                by=str(body.get("by") or ""),
                reason=str(body.get("reason") or ""),
            )
        except errors.GatewayError as error:
            return _http.error(409, error.message, "conflict")
        return web.json_response({"decided": True, "approval": approval.to_json()})


def _not_registered(uid: str) -> web.Response:
    return _http.error(404, f"run {uid} is not registered here", "not_found")
