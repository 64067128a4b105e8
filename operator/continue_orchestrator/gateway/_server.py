"""The gateway: an OpenAI-compatible endpoint per run that gates, brokers and records.

``POST /runs/RUN/v1/chat/completions`` authenticates the run token, rewrites the
conversation where the gateway answered the model itself (see ``_conversation``),
forwards to the run's real upstream with the real key, and decides every tool call of
the answer with the run's policy before the agent sees it. Tool results the policy
withholds (``spec.toolResults``) are replaced by a notice before the request goes
upstream (see ``_results``). When streaming, text passes
through as it arrives; a tool call is held until complete, then decided. Every exchange
is stored (as the agent saw it and as it went upstream) before the call it carries is
handed over.
"""

from __future__ import annotations

import asyncio
import collections
import copy
import hashlib
import hmac
import json
import pathlib
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import aiohttp
from aiohttp import web

from continue_orchestrator import errors, records
from continue_orchestrator.gateway import (
    _admin,
    _approvals,
    _conversation,
    _metrics,
    _recorder,
    _registry,
    _replay,
    _results,
)

Message = dict[str, Any]
Entry = tuple[str, str, dict[str, Any]]
_KEEPALIVE_SECONDS = 10.0
_SEALED_KEPT = 4096


class Decision(Protocol):
    """What the gateway reads of a policy decision."""

    @property
    def effect(self) -> Any: ...

    @property
    def rule(self) -> Any: ...

    @property
    def reason(self) -> Any: ...


ToolDecider = Callable[[_registry.RunRegistration, str, Mapping[str, Any]], Decision]


@dataclass(frozen=True)
class _Denial:
    effect: str
    rule: str
    reason: str
    policy_digest: str = ""


def policy_decider(
    registration: _registry.RunRegistration, tool: str, arguments: Mapping[str, Any]
) -> Decision:
    """Decide with ``policy.decide_tool_call`` and the run's ``policy.PolicySet``."""
    from continue_orchestrator import policy

    workspace = registration.workspace
    run = policy.RunContext(
        namespace=registration.namespace,
        name=registration.name,
        uid=registration.uid,
        workspace_root=workspace or "/workspace",
    )
    return policy.decide_tool_call(
        registration.policy_set,
        tool,
        arguments,
        run=run,
        # Symlinks are resolved only in a tree the gateway itself can see (local mode).
        workspace=pathlib.Path(workspace) if workspace and registration.workspace_visible else None,
    )


@dataclass
class _RunState:
    registration: _registry.RunRegistration
    recorder: _recorder.RunRecorder
    conversation: _conversation.Conversation = field(default_factory=_conversation.Conversation)
    delivered: dict[str, str] = field(default_factory=dict)  # tool call id -> tool
    results_seen: set[str] = field(default_factory=set)
    results: _results.Checker = field(default_factory=_results.Checker)
    outcome: dict[str, Any] | None = None
    outcome_event: asyncio.Event = field(default_factory=asyncio.Event)
    replay: _replay.Replay | None = None


@dataclass
class _Verdict:
    allowed: list[Message] = field(default_factory=list)
    denied: list[tuple[Message, str]] = field(default_factory=list)
    decisions: list[dict[str, Any]] = field(default_factory=list)

    def denial_messages(self) -> list[Message]:
        return [
            {"role": "tool", "tool_call_id": call.get("id"), "content": text}
            for call, text in self.denied
        ]


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def _valid_uid(uid: str) -> bool:
    return _admin.UID.fullmatch(uid) is not None


def _error(status: int, message: str, kind: str = "invalid_request_error") -> web.Response:
    return web.json_response({"error": {"message": message, "type": kind}}, status=status)


def _text(message: Mapping[str, Any]) -> str:
    content = message.get("content")
    return content if isinstance(content, str) else ""


def _denial_text(tool: str, rule: str, reason: str) -> str:
    return (
        f"Denied by policy: the {tool} call was not run (rule {rule or 'unnamed'}: "
        f"{reason or 'no reason given'}). Do not retry it; do the task another way "
        "or say why it is needed."
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
        decide: ToolDecider = policy_decider,
        shutdown_timeout: float = 30.0,
    ) -> None:
        self.registry = _registry.Registry()
        self.store = records.BlobStore(record_root)
        self.ledger = ledger
        self.broker: _approvals.ApprovalBroker = broker or _approvals.LocalApprovalBroker()
        self.admin_token = admin_token
        self._admin_digest = _digest(admin_token) if admin_token is not None else None
        self.decide = decide
        self.shutdown_timeout = shutdown_timeout
        self.base_url = ""
        self.admin_url = ""
        self.draining = False
        self.instance = secrets.token_hex(8)
        self._runs: dict[str, _RunState] = {}
        self._sealed: collections.OrderedDict[str, dict[str, Any]] = collections.OrderedDict()
        self._client: aiohttp.ClientSession | None = None
        self._runners: list[web.AppRunner] = []

    # -- lifecycle ---------------------------------------------------------------------

    def app(self, *, public: bool = True, admin: bool = True) -> web.Application:
        """The routes: the agents' (``public``), the operator's and people's (``admin``)."""
        app = web.Application(client_max_size=64 * 1024 * 1024)
        if public:
            app.router.add_post("/runs/{run}/v1/chat/completions", self._chat)
            app.router.add_post("/runs/{run}/chat/completions", self._chat)
            app.router.add_post("/runs/{run}/outcome", self._outcome)
            app.on_startup.append(self._open_client)
            app.on_cleanup.append(self._close_client)
        if admin:
            app.router.add_post("/admin/runs", self._register)
            app.router.add_get("/admin/runs/{run}", self._status)
            app.router.add_delete("/admin/runs/{run}", self._unregister)
            app.router.add_get("/admin/runs/{run}/approvals", self._list_approvals)
            app.router.add_post("/admin/runs/{run}/approvals/{call}", self._decide_approval)
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
        sealed: dict[str, str] = {}
        for uid, state in list(self._runs.items()):
            await state.recorder.drain()
            sealed[uid] = await asyncio.to_thread(state.recorder.record.seal)
            if state.replay is not None:
                await state.replay.model.stop()
        return sealed

    async def _open_client(self, app: web.Application) -> None:
        self._client = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=600),
            auto_decompress=True,
        )

    async def _close_client(self, app: web.Application) -> None:
        if self._client is not None:
            await self._client.close()

    # -- runs --------------------------------------------------------------------------

    def register_run(self, registration: _registry.RunRegistration) -> str:
        """Serve ``registration``; returns the ``apiBase`` its agent must use."""
        redactor = records.Redactor(registration.redactions())
        recorder = _recorder.RunRecorder(registration.uid, self.store, self.ledger, redactor)
        self._runs[registration.uid] = _RunState(registration, recorder)
        self.registry.add(registration)
        _metrics.RUNS.set(len(self._runs))
        return self.api_base(registration.uid)

    async def unregister_run(self, uid: str) -> str | None:
        """Stop serving ``uid``; returns the sealed record's manifest digest."""
        self.registry.remove(uid)
        state = self._runs.pop(uid, None)
        _metrics.RUNS.set(len(self._runs))
        if state is None:
            return None
        await state.recorder.drain()
        digest = await asyncio.to_thread(state.recorder.record.seal)
        self._sealed[uid] = {"recordDigest": digest, "outcome": state.outcome}
        if state.replay is not None:
            self._sealed[uid]["replay"] = await _replay.finish(
                state.replay, self.store, uid, digest, self.ledger
            )
        while len(self._sealed) > _SEALED_KEPT:
            self._sealed.popitem(last=False)
        return digest

    def api_base(self, uid: str) -> str:
        return f"{self.base_url}/runs/{uid}/v1"

    def record(self, uid: str) -> records.RunRecord:
        state = self._runs.get(uid)
        return state.recorder.record if state else records.load(self.store, uid)

    def outcome(self, uid: str) -> dict[str, Any] | None:
        state = self._runs.get(uid)
        return state.outcome if state else None

    def pending_approvals(self, uid: str) -> list[_approvals.Approval]:
        pending = getattr(self.broker, "pending", None)
        return list(pending(uid)) if pending else []

    # -- handlers ----------------------------------------------------------------------

    async def _health(self, request: web.Request) -> web.Response:
        return web.json_response({"ok": True, "instance": self.instance})

    async def _ready(self, request: web.Request) -> web.Response:
        if self.draining:
            return web.json_response({"ready": False, "reason": "shutting down"}, status=503)
        return web.json_response({"ready": True, "runs": len(self._runs)})

    def _authenticate(self, request: web.Request) -> _RunState | None:
        uid = request.match_info["run"]
        registration = self.registry.authenticate(uid, request.headers.get("Authorization"))
        return self._runs.get(uid) if registration else None

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        _metrics.IN_FLIGHT.inc()
        try:
            response = await self._serve_chat(request)
        finally:
            _metrics.IN_FLIGHT.dec()
        _metrics.MODEL_CALLS.labels(
            "true" if response.content_type == "text/event-stream" else "false",
            str(response.status),
        ).inc()
        return response

    async def _serve_chat(self, request: web.Request) -> web.StreamResponse:
        state = self._authenticate(request)
        if state is None:
            _metrics.REFUSED.labels("authentication").inc()
            return _error(401, "invalid or expired run token", "authentication_error")
        raw = await request.read()
        try:
            body = json.loads(raw)
        except ValueError:
            return _error(400, "the request body is not JSON")
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
            return _error(400, "the request needs a `messages` list")
        registration = state.registration
        model = body.get("model")
        upstream = registration.models.get(model) if isinstance(model, str) else None
        if upstream is None:
            return _error(
                400,
                f"model {model!r} is not registered for run {registration.uid}; "
                f"known: {sorted(registration.models)}",
            )
        if not registration.egress_allowed(upstream):
            _metrics.REFUSED.labels("egress").inc()
            await state.recorder.ledger_entries(
                [
                    (
                        "policy.decision",
                        _recorder.ACTOR,
                        {
                            "action": "network.egress",
                            "host": upstream.host,
                            "port": upstream.port,
                            "effect": "Deny",
                            "reason": "host not in the run's allowed egress",
                        },
                    )
                ]
            )
            return _error(
                403,
                f"the run's policy does not allow egress to {upstream.host}:{upstream.port}",
                "permission_error",
            )
        messages: list[Message] = body["messages"]
        # Transcript blobs are written behind the response; bound how far they may lag.
        await state.recorder.backpressure()
        results = await state.results.check(registration, state.delivered, messages)
        await self._record_tool_results(state, messages, results)
        # Splices are matched and made on the checked history, so they see what the model
        # saw whether or not a result in it was withheld.
        upstream_messages, spliced = state.conversation.upstream_messages(results.upstream)
        exchange = _Exchange(
            self, state, request, body, raw, upstream, upstream_messages, spliced, results
        )
        if body.get("stream"):
            return await exchange.stream()
        return await exchange.complete()

    async def _record_tool_results(
        self, state: _RunState, messages: Sequence[Message], results: _results.Results
    ) -> None:
        decided = {id(checked) for checked in results.new}
        loose: list[Entry] = []  # decisions on results already recorded (resent, changed)
        for new in results.new:
            _metrics.TOOL_RESULTS.labels(new.effect).inc()
        for index, message in enumerate(messages):
            checked = results.checked.get(index)
            decision: list[Entry] = []
            if checked is not None and id(checked) in decided:
                decided.discard(id(checked))
                decision = [("policy.decision", _recorder.ACTOR, checked.decision_payload())]
            call = message.get("tool_call_id")
            if message.get("role") != "tool" or not isinstance(call, str):
                loose += decision
                continue
            if call in state.results_seen:
                loose += decision
                continue
            state.results_seen.add(call)
            tool = state.delivered.get(call)
            facts: dict[str, Any] = {
                "toolCallId": call,
                "tool": tool,
                "deliveredByGateway": tool is not None,
            }
            if checked is not None and checked.withheld:
                facts["withheld"] = checked.facts()
            stored = results.stored[index] if results.stored is not None else message
            await state.recorder.exchange(
                "tool.result",
                blobs={"result": json.dumps(stored, sort_keys=True).encode()},
                facts=facts,
                entries=[
                    *decision,
                    ("tool.result", _recorder.ACTOR, {**facts, "result": {"blob": "result"}}),
                ],
            )
        await state.recorder.ledger_entries(loose)

    async def _outcome(self, request: web.Request) -> web.Response:
        state = self._authenticate(request)
        if state is None:
            return _error(401, "invalid or expired run token", "authentication_error")
        raw = await request.read()
        try:
            outcome = json.loads(raw)
        except ValueError:
            return _error(400, "the outcome is not JSON")
        if not isinstance(outcome, dict):
            return _error(400, "the outcome must be a JSON object")
        await state.recorder.drain()
        exchange = await state.recorder.exchange(
            "run.outcome",
            blobs={"outcome": raw},
            facts={
                "exitCode": outcome.get("exitCode"),
                "status": outcome.get("status"),
                "workspaceTreeDigest": outcome.get("workspaceTreeDigest"),
                "cliVersion": outcome.get("cliVersion"),
            },
            entries=[
                (
                    "run.finished",
                    "runner",
                    {
                        "source": "runner",
                        "status": outcome.get("status"),
                        "outcome": {"blob": "outcome"},
                    },
                )
            ],
        )
        state.outcome = outcome
        state.outcome_event.set()
        return web.json_response({"accepted": True, "policyStop": None, "step": exchange.step})

    def _admin(self, request: web.Request) -> web.Response | None:
        if self.admin_token is None:
            return _error(404, "the admin API is disabled (no admin token)", "not_found")
        presented = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        # Equal-length digests: the comparison's time says nothing about the token.
        if not hmac.compare_digest(_digest(presented), self._admin_digest or b""):
            return _error(401, "invalid admin token", "authentication_error")
        return None

    async def _register(self, request: web.Request) -> web.Response:
        refused = self._admin(request)
        if refused is not None:
            return refused
        if self.draining:
            return _error(503, "the gateway is shutting down; register with its successor")
        try:
            body = await request.json()
        except ValueError:
            return _error(400, f"{_admin.WHERE}: the body is not JSON")
        try:
            registration = await asyncio.to_thread(_admin.registration, body)
        except errors.GatewayError as error:
            _metrics.REGISTRATIONS.labels("refused").inc()
            return _error(400, error.message)
        current = self._runs.get(registration.uid)
        if current is not None:
            old = current.registration
            if (old.token_sha256, old.policy_digest) != (
                registration.token_sha256,
                registration.policy_digest,
            ):
                _metrics.REGISTRATIONS.labels("conflict").inc()
                return _error(
                    409,
                    f"run {registration.uid} is registered with a different token or policy; "
                    "a run's token and policy never change (DELETE it first if it is a new run)",
                    "conflict",
                )
            # The same run again (an operator resuming): keep its state and record.
            if current.replay is not None:
                registration = _replay.keep_upstreams(old, registration)
            current.registration = registration
            current.recorder.redact = records.Redactor(registration.redactions())
            self.registry.add(registration)
            created = False
        else:
            replay = None
            if registration.replay_of:
                try:
                    registration, replay = await _replay.start(self.store, registration)
                except errors.GatewayError as error:
                    _metrics.REGISTRATIONS.labels("refused").inc()
                    return _error(400, error.message)
            self.register_run(registration)
            self._runs[registration.uid].replay = replay
            created = True
        _metrics.REGISTRATIONS.labels("created" if created else "repeated").inc()
        return web.json_response(
            {
                "uid": registration.uid,
                "created": created,
                "apiBase": self.api_base(registration.uid),
                "policyDigest": registration.policy_digest,
                "expiresAt": registration.expires_at,
            },
            status=201 if created else 200,
        )

    async def _status(self, request: web.Request) -> web.Response:
        refused = self._admin(request)
        if refused is not None:
            return refused
        uid = request.match_info["run"]
        state = self._runs.get(uid)
        if state is None:
            sealed = self._sealed.get(uid) or await asyncio.to_thread(self._sealed_on_disk, uid)
            if sealed is None:
                return _error(404, f"run {uid} is not registered here", "not_found")
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
                "steps": len(state.recorder.record.exchanges),
                "pendingApprovals": len(self.pending_approvals(uid)),
                "outcome": state.outcome,
            }
        )

    def _sealed_on_disk(self, uid: str) -> dict[str, Any] | None:
        manifest = self.store.root / "runs" / uid / "manifest"
        if not _valid_uid(uid) or not manifest.is_file():
            return None
        return {"recordDigest": manifest.read_text(encoding="utf-8").strip(), "outcome": None}

    async def _unregister(self, request: web.Request) -> web.Response:
        refused = self._admin(request)
        if refused is not None:
            return refused
        uid = request.match_info["run"]
        state = self._runs.get(uid)
        if state is None:
            return _error(404, f"run {uid} is not registered here", "not_found")
        outcome = state.outcome
        digest = await self.unregister_run(uid)
        replay = self._sealed.get(uid, {}).get("replay")
        return web.json_response(
            {"uid": uid, "recordDigest": digest, "outcome": outcome, "replay": replay}
        )

    async def _list_approvals(self, request: web.Request) -> web.Response:
        refused = self._admin(request)
        if refused is not None:
            return refused
        run = request.match_info["run"]
        return web.json_response(
            {"approvals": [approval.to_json() for approval in self.pending_approvals(run)]}
        )

    async def _decide_approval(self, request: web.Request) -> web.Response:
        refused = self._admin(request)
        if refused is not None:
            return refused
        decide = getattr(self.broker, "decide", None)
        if decide is None:
            return _error(409, "this gateway's approvals are decided elsewhere (RunApproval)")
        try:
            body = await request.json()
            decision = body["decision"]
            if decision not in ("approve", "deny"):
                raise ValueError(decision)
        except (ValueError, KeyError, TypeError):
            return _error(400, 'the body must be {"decision": "approve"|"deny", "by": NAME}')
        try:
            approval = decide(
                request.match_info["run"],
                request.match_info["call"],
                approved=decision == "approve",
                by=str(body.get("by") or ""),
                reason=str(body.get("reason") or ""),
            )
        except errors.GatewayError as error:
            return _error(409, error.message, "conflict")
        return web.json_response({"decided": True, "approval": approval.to_json()})

    # -- gating --------------------------------------------------------------------------

    async def gate(
        self,
        state: _RunState,
        message: Mapping[str, Any],
        keepalive: Callable[[], Awaitable[None]] | None = None,
    ) -> _Verdict:
        """Decide every tool call of ``message``; ledger entries are written before return."""
        verdict = _Verdict()
        entries: list[Entry] = []
        registration = state.registration
        for call in message.get("tool_calls") or []:
            function = call.get("function") or {}
            tool = str(function.get("name") or "")
            call_id = str(call.get("id") or "")
            decision, arguments = self._decide(registration, tool, function.get("arguments"))
            effect = str(decision.effect)
            rule, reason = str(decision.rule or ""), str(decision.reason or "")
            record: dict[str, Any] = {
                "callId": call_id,
                "tool": tool,
                "arguments": arguments,
                "effect": effect,
                "rule": rule,
                "reason": reason,
                "policyDigest": str(getattr(decision, "policy_digest", "") or ""),
            }
            entries.append(("policy.decision", _recorder.ACTOR, dict(record)))
            if effect == "RequireApproval":
                await state.recorder.ledger_entries(entries)
                entries = []
                effect, reason, approval_entries = await self._approve(
                    state, call_id, tool, arguments, decision, keepalive
                )
                record["approval"] = approval_entries[-1][2]
                entries.extend(approval_entries)
            verdict.decisions.append(record)
            _metrics.DECISIONS.labels(effect).inc()
            if effect == "Allow":
                verdict.allowed.append(dict(call))
                state.delivered[call_id] = tool
                entries.append(
                    (
                        "tool.call",
                        _recorder.ACTOR,
                        {"callId": call_id, "tool": tool, "arguments": arguments},
                    )
                )
            else:
                verdict.denied.append((dict(call), _denial_text(tool, rule, reason)))
        await state.recorder.ledger_entries(entries)
        return verdict

    def _decide(
        self, registration: _registry.RunRegistration, tool: str, raw: Any
    ) -> tuple[Decision, Any]:
        try:
            arguments = json.loads(raw) if isinstance(raw, str) and raw.strip() else {}
        except ValueError:
            return _Denial("Deny", "gateway.arguments", "the arguments are not valid JSON"), raw
        if not isinstance(arguments, dict):
            return _Denial("Deny", "gateway.arguments", "the arguments are not an object"), raw
        try:
            return self.decide(registration, tool, arguments), arguments
        except Exception as error:  # fail closed: a broken policy denies
            return _Denial("Deny", "gateway.policy-error", f"the policy failed: {error}"), arguments

    async def _approve(
        self,
        state: _RunState,
        call_id: str,
        tool: str,
        arguments: Any,
        decision: Decision,
        keepalive: Callable[[], Awaitable[None]] | None,
    ) -> tuple[str, str, list[Entry]]:
        registration = state.registration
        approval = _approvals.Approval(
            id=call_id,
            run=registration.uid,
            tool=tool,
            arguments=arguments if isinstance(arguments, dict) else {"raw": arguments},
            rule=str(decision.rule or ""),
            reason=str(decision.reason or ""),
            approvers=tuple(getattr(decision, "approvers", ()) or ()),
            timeout=registration.approval_timeout,
        )
        await state.recorder.ledger_entries(
            [("approval.requested", _recorder.ACTOR, approval.to_json())]
        )
        waiting = asyncio.ensure_future(self.broker.request(registration.uid, approval))
        deadline = time.monotonic() + registration.approval_timeout
        try:
            while not waiting.done():
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                await asyncio.wait({waiting}, timeout=min(left, _KEEPALIVE_SECONDS))
                if not waiting.done() and keepalive is not None:
                    await keepalive()
        finally:
            if not waiting.done():
                waiting.cancel()
        if waiting.done() and not waiting.cancelled() and waiting.exception() is None:
            outcome = waiting.result()
            payload: dict[str, Any] = {
                "callId": call_id,
                "tool": tool,
                "by": outcome.decided_by,
                "reason": outcome.reason,
            }
            if outcome.groups is not None:
                payload["groups"] = list(outcome.groups)
            if outcome.approved:
                return "Allow", approval.reason, [("approval.granted", outcome.decided_by, payload)]
            why = f"a person ({outcome.decided_by}) denied it" + (
                f": {outcome.reason}" if outcome.reason else ""
            )
            return "Deny", why, [("approval.denied", outcome.decided_by, payload)]
        why = f"no approval within {registration.approval_timeout:g} s"
        payload = {"callId": call_id, "tool": tool, "by": "timeout", "reason": why}
        return "Deny", why, [("approval.denied", _recorder.ACTOR, payload)]

    async def post(
        self, upstream: _registry.Upstream, body: Mapping[str, Any]
    ) -> tuple[aiohttp.ClientResponse, bytes]:
        assert self._client is not None
        data = json.dumps(body).encode()
        response = await self._client.post(
            upstream.api_base.rstrip("/") + "/chat/completions",
            data=data,
            headers={
                "Authorization": f"Bearer {upstream.api_key}",
                "Content-Type": "application/json",
            },
        )
        return response, data


class _Exchange:
    """One agent request and everything it causes upstream, until the agent's answer."""

    def __init__(
        self,
        gateway: Gateway,
        state: _RunState,
        request: web.Request,
        body: dict[str, Any],
        raw: bytes,
        upstream: _registry.Upstream,
        upstream_messages: list[Message],
        spliced: int,
        results: _results.Results,
    ) -> None:
        self.gateway = gateway
        self.state = state
        self.request = request
        self.body = body
        self.raw = raw
        self.upstream = upstream
        # The history as checked: splices made on it match the next request's checked form.
        self.messages: list[Message] = results.upstream
        # What the record keeps of the agent's request: withheld results never in clear.
        self.stored_body = (
            body if results.stored is None else {**body, "messages": results.stored}
        )
        self.stored_raw = (
            raw if results.stored is None else json.dumps(self.stored_body).encode()
        )
        self.upstream_messages = upstream_messages
        self.spliced = spliced
        self.rounds: list[tuple[bytes, bytes, int]] = []  # upstream request, response, status
        self.hidden: list[Message] = []
        self.decisions: list[dict[str, Any]] = []

    def _upstream_body(self) -> dict[str, Any]:
        return {**self.body, "messages": self.upstream_messages + self.hidden}

    async def _open(self) -> tuple[aiohttp.ClientResponse | None, bytes, web.Response | None]:
        try:
            response, sent = await self.gateway.post(self.upstream, self._upstream_body())
        except aiohttp.ClientError as error:
            return (
                None,
                b"",
                _error(502, f"upstream {self.upstream.host} failed: {error}", "upstream_error"),
            )
        return response, sent, None

    def _remember(self, verdict: _Verdict, full: Message, delivered: Message) -> None:
        self.decisions.extend(verdict.decisions)
        if self.hidden or verdict.denied:
            upstream_view = [*self.hidden, full, *verdict.denial_messages()]
            self.state.conversation.add(
                _conversation.Splice.at(self.messages, delivered, upstream_view)
            )

    async def _record(self, agent_response: bytes, status: int) -> None:
        registration = self.state.registration
        blobs: dict[str, bytes] = {"agentRequest": self.stored_raw, "agentResponse": agent_response}
        for number, (sent, received, _) in enumerate(self.rounds):
            blobs[f"upstreamRequest{number}"] = sent
            blobs[f"upstreamResponse{number}"] = received
        replacements = {registration.workspace: "<WORKSPACE>"} if registration.workspace else {}
        body = self.stored_body

        def request_hash() -> str:  # milliseconds for a long request: off the response path
            try:
                return records.normalised_request_hash(body, replacements=replacements)
            except errors.OrchestratorError:
                # Not canonical JSON (a lone surrogate, say): hash the bytes as sent rather
                # than let one odd request keep the exchange out of the record.
                facts["requestHashOf"] = "raw agent request"
                return records.digest_of(self.stored_raw)

        facts = {
            "model": self.body.get("model"),
            "provider": self.upstream.provider,
            "stream": bool(self.body.get("stream")),
            "status": status,
            "upstreamRounds": len(self.rounds),
            "splicesApplied": self.spliced,
            "decisions": self.decisions,
        }
        self.state.recorder.later(
            "model",
            blobs=blobs,
            request_hash=request_hash,
            facts=facts,
            entries=[
                (
                    "model.request",
                    _recorder.ACTOR,
                    {
                        "requestHash": {"exchange": "requestHash"},
                        "agentRequest": {"blob": "agentRequest"},
                        "upstreamRequest": {"blob": "upstreamRequest0"},
                    },
                ),
                (
                    "model.response",
                    _recorder.ACTOR,
                    {
                        "status": status,
                        "agentResponse": {"blob": "agentResponse"},
                        "upstreamResponse": {"blob": f"upstreamResponse{len(self.rounds) - 1}"},
                        "upstreamRounds": len(self.rounds),
                    },
                ),
            ],
        )

    # -- non-streaming -----------------------------------------------------------------

    async def complete(self) -> web.StreamResponse:
        text = ""
        registration = self.state.registration
        while True:
            response, sent, failure = await self._open()
            if failure is not None or response is None:
                return failure or _error(502, "upstream failed")
            async with response:
                received = await response.read()
            self.rounds.append((sent, received, response.status))
            if response.status != 200:
                await self._record(received, response.status)
                return web.Response(
                    status=response.status, body=received, content_type="application/json"
                )
            try:
                completion = json.loads(received)
                full: Message = dict(completion["choices"][0]["message"])
            except (ValueError, KeyError, IndexError, TypeError):
                await self._record(received, 502)
                return _error(502, "the upstream answer is not a chat completion", "upstream_error")
            if not full.get("tool_calls") and not self.hidden:
                # Nothing to decide or rewrite: hand over the provider's bytes as they are.
                await self._record(received, 200)
                return web.Response(body=received, content_type="application/json")
            text += _text(full)
            verdict = await self.gateway.gate(self.state, full)
            last_round = len(self.rounds) > registration.max_denied_rounds
            if verdict.allowed or not verdict.denied or last_round:
                break
            self.decisions.extend(verdict.decisions)
            self.hidden += [full, *verdict.denial_messages()]
        delivered: Message = {"role": "assistant", "content": text or None}
        if verdict.allowed:
            delivered["tool_calls"] = verdict.allowed
        elif verdict.denied:
            delivered["content"] = text + _stopped(len(self.rounds))
        self._remember(verdict, full, delivered)
        answer = copy.deepcopy(completion)
        answer["choices"][0]["message"] = delivered
        answer["choices"][0]["finish_reason"] = (
            "tool_calls"
            if verdict.allowed
            else (completion["choices"][0].get("finish_reason") or "stop")
        )
        if not verdict.allowed and answer["choices"][0]["finish_reason"] == "tool_calls":
            answer["choices"][0]["finish_reason"] = "stop"
        data = json.dumps(answer).encode()
        await self._record(data, 200)
        return web.Response(body=data, content_type="application/json")

    # -- streaming -----------------------------------------------------------------------

    async def stream(self) -> web.StreamResponse:
        registration = self.state.registration
        agent = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        sent_to_agent = bytearray()

        async def send(data: bytes) -> None:
            if not agent.prepared:
                await agent.prepare(self.request)
            sent_to_agent.extend(data)
            await agent.write(data)

        async def keepalive() -> None:
            await send(b": waiting for an approval\n\n")

        while True:
            response, sent, failure = await self._open()
            if failure is not None or response is None:
                if agent.prepared:
                    await self._finish_with_text(send, None, "\n[gateway: upstream failed]")
                    await self._record(bytes(sent_to_agent), 502)
                    return agent
                return failure or _error(502, "upstream failed")
            async with response:
                if response.status != 200:
                    received = await response.read()
                    self.rounds.append((sent, received, response.status))
                    await self._record(received, response.status)
                    if agent.prepared:
                        await self._finish_with_text(send, None, "\n[gateway: upstream error]")
                        return agent
                    return web.Response(
                        status=response.status,
                        body=received,
                        content_type=response.content_type,
                    )
                relay = _Relay(send)
                await relay.run(response)
            self.rounds.append((sent, bytes(relay.raw), 200))
            full = relay.message()
            verdict = await self.gateway.gate(self.state, full, keepalive)
            last_round = len(self.rounds) > registration.max_denied_rounds
            if verdict.allowed or not verdict.denied or last_round:
                break
            self.decisions.extend(verdict.decisions)
            self.hidden += [full, *verdict.denial_messages()]

        delivered: Message = {"role": "assistant", "content": relay.text or None}
        template = relay.template or {
            "id": "chatcmpl-gateway",
            "created": int(time.time()),
            "model": self.body.get("model"),
        }
        for index, call in enumerate(verdict.allowed):
            function = call.get("function") or {}
            delta = {
                "tool_calls": [
                    {
                        "index": index,
                        "id": call.get("id"),
                        "type": "function",
                        "function": {
                            "name": function.get("name"),
                            "arguments": function.get("arguments"),
                        },
                    }
                ]
            }
            await send(_chunk(template, delta, None))
        if verdict.allowed:
            delivered["tool_calls"] = verdict.allowed
            finish = "tool_calls"
        elif verdict.denied:
            note = _stopped(len(self.rounds))
            await send(_chunk(template, {"content": note}, None))
            finish = "stop"
        else:
            finish = relay.finish or "stop"
        self._remember(verdict, full, delivered)
        await send(_chunk(template, {}, finish))
        for tail in relay.tail:
            await send(tail)
        await send(b"data: [DONE]\n\n")
        await agent.write_eof()
        await self._record(bytes(sent_to_agent), 200)
        return agent

    async def _finish_with_text(
        self,
        send: Callable[[bytes], Awaitable[None]],
        template: Mapping[str, Any] | None,
        text: str,
    ) -> None:
        template = template or {
            "id": "chatcmpl-gateway",
            "created": int(time.time()),
            "model": self.body.get("model"),
        }
        await send(_chunk(template, {"content": text}, None))
        await send(_chunk(template, {}, "stop"))
        await send(b"data: [DONE]\n\n")


def _stopped(rounds: int) -> str:
    return (
        f"\n[gateway: the model's tool calls were denied by policy {rounds} times in a row; "
        "stopping this turn]"
    )


def _chunk(template: Mapping[str, Any], delta: Mapping[str, Any], finish: str | None) -> bytes:
    payload = {
        "id": template.get("id"),
        "object": "chat.completion.chunk",
        "created": template.get("created"),
        "model": template.get("model"),
        "choices": [{"index": 0, "delta": dict(delta), "finish_reason": finish}],
    }
    return b"data: " + json.dumps(payload).encode() + b"\n\n"


class _Relay:
    """Reads one upstream SSE stream: text goes on at once, tool calls are assembled."""

    def __init__(self, send: Callable[[bytes], Awaitable[None]]) -> None:
        self.send = send
        self.raw = bytearray()
        self.text = ""
        self.calls: dict[int, dict[str, Any]] = {}
        self.finish: str | None = None
        self.template: dict[str, Any] | None = None
        self.tail: list[bytes] = []

    async def run(self, response: aiohttp.ClientResponse) -> None:
        async for line in response.content:
            self.raw.extend(line)
            if not line.startswith(b"data:"):
                continue
            data = line[5:].strip()
            if data == b"[DONE]":
                continue
            try:
                chunk = json.loads(data)
            except ValueError:
                continue
            await self._chunk(chunk, line)

    async def _chunk(self, chunk: dict[str, Any], line: bytes) -> None:
        if self.template is None:
            self.template = {key: chunk.get(key) for key in ("id", "created", "model")}
        choices = chunk.get("choices") or []
        if not choices:
            self.tail.append(b"data: " + json.dumps(chunk).encode() + b"\n\n")
            return
        choice = choices[0]
        delta = choice.get("delta") or {}
        finish = choice.get("finish_reason")
        calls = delta.get("tool_calls")
        if not calls and not finish:
            self.text += delta.get("content") or ""
            await self.send(line.rstrip(b"\r\n") + b"\n\n")
            return
        for part in calls or []:
            slot = self.calls.setdefault(
                int(part.get("index", 0)),
                {"id": "", "type": "function", "function": {"name": "", "arguments": ""}},
            )
            if part.get("id"):
                slot["id"] = part["id"]
            function = part.get("function") or {}
            slot["function"]["name"] += function.get("name") or ""
            slot["function"]["arguments"] += function.get("arguments") or ""
        rest = {key: value for key, value in delta.items() if key != "tool_calls"}
        if rest.get("content"):
            self.text += rest["content"]
            await self.send(_chunk(chunk, rest, None))
        if finish:
            self.finish = finish

    def message(self) -> Message:
        message: Message = {"role": "assistant", "content": self.text or None}
        if self.calls:
            message["tool_calls"] = [self.calls[index] for index in sorted(self.calls)]
        return message
