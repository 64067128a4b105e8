"""Git smart HTTP for a run's own repository: fetch only, with the credential the gateway holds.

The runner clones the run's repository from ``/runs/RUN/git/OWNER/NAME.git`` on the
agents' port, so the sandbox needs no route to the forge and no credential for it: the
run token opens the endpoint, and the gateway fetches from the forge with the credential
it was registered with (``_git_fetch``). Git sends the run token as the password of HTTP
Basic (any user name; from a credential helper, or ``http.extraHeader`` as the runner
does) or as ``Authorization: Bearer``; a wrong or expired token gets 401, like an
unknown run. Only ``git-upload-pack`` of the registered repository is served
(``GET .../info/refs?service=git-upload-pack`` and ``POST .../git-upload-pack``,
protocol v0 and v2). A push (``git-receive-pack``), another repository, dumb HTTP and any
other path are refused with 403 and a plain-text message git shows its user, a
``policy.decision`` ledger entry (``effect: Deny``, ``rule: gateway.git-…``) and a
count in ``orchestrator_gateway_refused_calls``. Each fetch that wanted commits is
recorded as a ``repository.fetch`` entry with those commits (``_pktline``).

The forge credential is the registration's token; a run registered without one whose
repository is on the GitHub of the gateway's App (``_forge_tokens``) fetches with an
installation token minted for it. When that token cannot be minted, git gets 502 and
a message saying what failed and what to do, the run's ledger a ``repository.fetch``
entry with the ``error``, and ``orchestrator_gateway_refused_calls`` a count
(``git-forge-credential``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from aiohttp import web

from continue_orchestrator import errors, ledger, records
from continue_orchestrator.gateway import (
    _forge_tokens,
    _git_fetch,
    _http,
    _metrics,
    _pktline,
    _recorder,
    _registry,
    _runs,
)

ROUTE = "/runs/{run}/git/{tail:.+}"
RECEIVE_PACK = "git-receive-pack"
_SUFFIXES = ("/info/refs", f"/{_git_fetch.UPLOAD_PACK}", f"/{RECEIVE_PACK}")
_WHO = "continue-orchestrator gateway"


@dataclasses.dataclass(frozen=True)
class Asked:
    """What a request to the git endpoint asks for."""

    repository: str
    """The repository path it names, as ``_registry.repository_key`` writes it."""
    service: str
    """``git-upload-pack``, ``git-receive-pack``, or what else was asked (for messages)."""
    advertise: bool
    """Whether it asks for the ref advertisement (``info/refs``) rather than the exchange."""
    well_formed: bool
    """Whether it is a smart-HTTP request at all (right method, a service named)."""

    @classmethod
    def of(cls, request: web.Request) -> Asked:
        tail = request.match_info["tail"]
        for suffix in _SUFFIXES:
            if not tail.endswith(suffix):
                continue
            repository = _registry.repository_key(tail.removesuffix(suffix))
            if suffix != "/info/refs":
                return cls(repository, suffix[1:], False, request.method == "POST")
            service = request.query.get("service", "")
            smart = request.method == "GET" and bool(service)
            return cls(repository, service or "dumb HTTP (info/refs)", True, smart)
        repository, _, rest = tail.partition(".git/")
        asked = f"{request.method} {rest or tail}"
        return cls(_registry.repository_key(repository), asked, False, False)

    @property
    def label(self) -> str:
        """The request's kind, for the metrics."""
        if self.service == RECEIVE_PACK:
            return "receive-pack"
        if self.service != _git_fetch.UPLOAD_PACK:
            return "other"
        return "advertisement" if self.advertise else "upload-pack"


@dataclasses.dataclass(frozen=True)
class Refusal:
    """Why a request is refused: what git shows, and what the ledger and metrics get."""

    message: str
    rule: str
    action: str
    reason: str


def refusal(
    asked: Asked, origin: _registry.GitOrigin | None, uid: str, *, local: bool
) -> Refusal | None:
    """Why the run ``uid`` may not have what ``asked`` asks for, or None if it may."""
    if asked.service == RECEIVE_PACK:
        return Refusal(
            f"{_WHO}: push refused. Run {uid} may only fetch its repository through the "
            "gateway; nothing is pushed from inside the sandbox (a run's changes leave it as "
            "the diff the runner reports). This refusal is in the run's ledger.",
            "gateway.git-fetch-only",
            "branch.push",
            "the gateway's git endpoint serves fetches only",
        )
    if asked.service != _git_fetch.UPLOAD_PACK or not asked.well_formed:
        return Refusal(
            f"{_WHO}: {asked.service} is not served. This endpoint answers git's smart HTTP "
            f"fetch only (GET info/refs?service={_git_fetch.UPLOAD_PACK}, POST "
            f"{_git_fetch.UPLOAD_PACK}). This refusal is in the run's ledger.",
            "gateway.git-upload-pack-only",
            "repository.access",
            f"{asked.service} is not git smart-HTTP fetch",
        )
    if origin is None or asked.repository != origin.key:
        own = f"its own repository, {origin.path}" if origin else "no repository (none registered)"
        return Refusal(
            f"{_WHO}: fetch of {asked.repository}.git refused. Run {uid} may fetch {own}. "
            "This refusal is in the run's ledger.",
            "gateway.git-run-repository",
            "repository.access",
            "not the run's repository",
        )
    if origin.local_path is not None and not local:
        return Refusal(
            f"{_WHO}: {origin.url} is a local path, and this gateway serves forge "
            "repositories over http(s) only (local repositories are served in local mode).",
            "gateway.git-local-repository",
            "repository.access",
            "a local repository on a gateway that serves none",
        )
    if origin.local_path is None and not origin.remote:
        return Refusal(
            f"{_WHO}: the run's repository URL is not http(s), and the gateway speaks git's "
            "smart HTTP to forges: give the repository's https:// clone URL in "
            "spec.repository.url (not ssh:// or git@host:path).",
            "gateway.git-smart-http",
            "repository.access",
            "the repository URL is not http(s)",
        )
    return None


class GitAPI:
    """The ``/runs/RUN/git/`` handlers; holds the HTTP client the fetches from forges share,
    and the GitHub App whose installation tokens fetch for runs registered without a token."""

    def __init__(
        self,
        runs: _runs.Runs,
        *,
        local_repositories: bool = False,
        app_tokens: _forge_tokens.AppTokens | None = None,
    ) -> None:
        self.runs = runs
        self.local_repositories = local_repositories
        self.app_tokens = app_tokens
        # Packs pass through as the forge encoded them; git on the other side decodes.
        self._upstream = _http.Upstream(decompress=False)

    def add_routes(self, app: web.Application) -> None:
        app.router.add_route("*", ROUTE, self.serve)
        self._upstream.attach(app)

    async def serve(self, request: web.Request) -> web.StreamResponse:
        uid = request.match_info["run"]
        asked = Asked.of(request)
        state = self.runs.authenticate_token(
            uid, _http.run_token(request.headers.get("Authorization"))
        )
        if state is None:
            _metrics.REFUSED.labels("authentication").inc()
            _metrics.GIT_REQUESTS.labels(asked.label, "401").inc()
            return _http.git_refusal(
                401, f"{_WHO}: invalid or expired run token", realm=f"run {uid}"
            )
        origin = state.registration.repository
        refused = refusal(asked, origin, uid, local=self.local_repositories)
        if refused is not None:
            _metrics.GIT_REQUESTS.labels(asked.label, "403").inc()
            return await self._refuse(state, asked, refused)
        assert origin is not None  # refusal() said so
        try:
            credential = await self._credential(state, origin)
        except errors.ForgeError as error:
            _metrics.GIT_REQUESTS.labels(asked.label, "502").inc()
            return await self._unminted(state, origin, error)
        wants = _pktline.Wants()
        served = await self._fetch(request, origin, asked, wants, credential)
        _metrics.GIT_REQUESTS.labels(asked.label, str(served.status)).inc()
        if served.status == 200 and wants.count:
            await state.recorder.ledger_entries([fetched(origin, request, wants, served)])
        return served.response

    async def _fetch(
        self,
        request: web.Request,
        origin: _registry.GitOrigin,
        asked: Asked,
        wants: _pktline.Wants,
        credential: _git_fetch.Credential | None,
    ) -> _git_fetch.Served:
        body = None
        if not asked.advertise:
            body = _git_fetch.request_body(request, _scanner(request, wants))
        if origin.local_path is not None:
            return await _git_fetch.from_directory(
                origin.local_path, request, advertise=asked.advertise, body=body
            )
        return await _git_fetch.from_forge(
            self._upstream.session,
            origin,
            request,
            advertise=asked.advertise,
            body=body,
            credential=credential,
        )

    async def _credential(
        self, state: _runs.RunState, origin: _registry.GitOrigin
    ) -> _git_fetch.Credential | None:
        """What the fetch signs in to the forge with: the registration's token, else an
        installation token of the gateway's App if the repository is on its GitHub, else
        nothing. Raises ``errors.ForgeError`` when the App's token cannot be minted."""
        registered = _git_fetch.Credential.registered(origin)
        tokens = self.app_tokens
        if registered is not None or origin.local_path is not None or tokens is None:
            return registered
        if not tokens.serves(origin.url):
            return None
        minted = await tokens.credential(origin.url)
        _redact_also(state, minted.secret)
        return _git_fetch.Credential(
            minted.username,
            minted.secret,
            held=f"the installation token of GitHub App {tokens.app_id}",
            fix=_INSTALL_THE_APP,
        )

    async def _unminted(
        self, state: _runs.RunState, origin: _registry.GitOrigin, error: errors.ForgeError
    ) -> web.StreamResponse:
        """Answer a fetch whose App token could not be minted, and record why."""
        _metrics.REFUSED.labels("git-forge-credential").inc()
        app = self.app_tokens.app_id if self.app_tokens else "?"
        said = f"{error.what} ({error.where})" if error.where else error.what
        await state.recorder.ledger_entries(
            [
                (
                    ledger.Kind.REPOSITORY_FETCH.value,
                    _recorder.ACTOR,
                    {
                        "repository": origin.url,
                        "path": origin.path,
                        "credential": f"github-app:{app}",
                        "error": said,
                    },
                )
            ]
        )
        return _http.git_refusal(
            502,
            f"{_WHO}: could not get an installation token of GitHub App {app} to fetch "
            f"{origin.path}: {said}. {_INSTALL_THE_APP}. This failure is in the run's ledger.",
        )

    async def _refuse(
        self, state: _runs.RunState, asked: Asked, refused: Refusal
    ) -> web.StreamResponse:
        _metrics.REFUSED.labels(refused.rule.removeprefix("gateway.")).inc()
        origin = state.registration.repository
        await state.recorder.ledger_entries(
            [
                (
                    ledger.Kind.POLICY_DECISION.value,
                    _recorder.ACTOR,
                    {
                        "action": refused.action,
                        "repository": origin.url if origin else None,
                        "requested": f"{asked.repository}.git",
                        "service": asked.service,
                        "effect": "Deny",
                        "rule": refused.rule,
                        "reason": refused.reason,
                    },
                )
            ]
        )
        return _http.git_refusal(403, refused.message)


_INSTALL_THE_APP = (
    "Install the gateway's GitHub App on the repository with read access to its contents, "
    "and check the App's id and private key (orchestrator gateway --github-app-id, "
    "--github-app-key-file); or name a token that may read the repository in the run's "
    "spec.repository.credentialsSecretRef"
)


def _redact_also(state: _runs.RunState, secret: str) -> None:
    """Make the run's records redact ``secret`` (a minted token) too, as they redact the
    registration's own credential."""
    if state.recorder.redact(secret.encode()) == secret.encode():
        values = {**state.registration.redactions(), secret: "forge-credential"}
        state.recorder.redact = records.Redactor(values)


def _scanner(request: web.Request, wants: _pktline.Wants) -> Callable[[bytes], None]:
    """What each chunk of the request body is shown to: inflated, then ``wants``."""
    try:
        inflate = _pktline.inflater(request.headers.get("Content-Encoding"))
    except ValueError:
        inflate = None
        wants.done = True  # the fetch itself says what is wrong with the encoding

    def seen(chunk: bytes) -> None:
        if wants.done:
            return
        if inflate is None:
            wants.feed(chunk)
            return
        try:
            piece = inflate(chunk)
            while piece and not wants.done:
                wants.feed(piece)
                piece = inflate(b"")
        except ValueError:
            wants.done = True

    return seen


def fetched(
    origin: _registry.GitOrigin,
    request: web.Request,
    wants: _pktline.Wants,
    served: _git_fetch.Served,
) -> _recorder.Entry:
    """The ``repository.fetch`` ledger entry of a fetch that wanted ``wants``."""
    payload: dict[str, Any] = {
        "repository": origin.url,
        "path": origin.path,
        "protocol": 2 if "version=2" in _git_fetch.protocol(request) else 0,
        "command": wants.command or "fetch",
        "wants": wants.commits,
        "wantCount": wants.count,
        "bytes": served.sent,
    }
    if wants.refs:
        payload["wantRefs"] = wants.refs
    return (ledger.Kind.REPOSITORY_FETCH.value, _recorder.ACTOR, payload)
