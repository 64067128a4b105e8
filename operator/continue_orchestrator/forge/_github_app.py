"""GitHub App installation tokens: minted per repository, reused until near expiry.

A GitHub App authenticates as itself with a short JWT signed by its private key, and
acts on a repository with an installation token (one hour) minted with that JWT. The
same token serves the REST calls and git over HTTP (``x-access-token``), so this
module mints it explicitly through githubkit (githubkit signs the JWT and would also
mint tokens inside its own auth flow, but keeps them to itself, and git needs the
token). A token is scoped to the one repository it was minted for and minted again
``REFRESH_BEFORE`` its expiry, so a clone or a publication never starts on a token
about to lapse.
"""

from __future__ import annotations

import datetime
import threading
from collections.abc import Callable

import githubkit
import pydantic
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from continue_orchestrator import errors
from continue_orchestrator.forge import _clock, _githubkit, _model, _repository

REFRESH_BEFORE = datetime.timedelta(minutes=5)
GIT_USERNAME = "x-access-token"


class _Installation(pydantic.BaseModel):
    id: int


class _Token(pydantic.BaseModel):
    token: str = pydantic.Field(min_length=1, repr=False)
    expires_at: datetime.datetime


def _check_key(app: _model.GitHubApp) -> None:
    """A private key that is not an RSA key in PEM fails here, before any request."""
    try:
        key = serialization.load_pem_private_key(app.private_key.encode(), password=None)
    except (ValueError, TypeError) as e:
        raise errors.ForgeError(
            "the GitHub App's private key does not load as an unencrypted PEM private key",
            where=f"GitHub App {app.app_id}",
            fix="use the .pem file GitHub generated for the App (BEGIN RSA PRIVATE KEY)",
        ) from e
    if not isinstance(key, rsa.RSAPrivateKey):
        raise errors.ForgeError(
            f"the GitHub App's private key is a {type(key).__name__}, not an RSA key",
            where=f"GitHub App {app.app_id}",
            fix="GitHub Apps sign with RS256: use the App's RSA key",
        )


def fresh(credential: _model.GitCredential, now: datetime.datetime) -> bool:
    """Whether a minted token may still be handed out at ``now``."""
    expires = credential.expires_at
    return expires is not None and expires - now > REFRESH_BEFORE


class InstallationTokens:
    """Installation tokens of ``app``, one per repository, minted through ``config``."""

    def __init__(
        self,
        app: _model.GitHubApp,
        config: githubkit.Config,
        *,
        clock: Callable[[], datetime.datetime] = _clock.utc_now,
    ) -> None:
        _check_key(app)
        self._app = app
        self._client = githubkit.GitHub(
            githubkit.AppAuthStrategy(app.app_id, app.private_key), config=config
        )
        self._clock = clock
        self._lock = threading.Lock()
        self._tokens: dict[str, _model.GitCredential] = {}
        self._installations: dict[str, int] = {}

    def credential(self, repo: _repository.Repository) -> _model.GitCredential:
        """A token for ``repo`` with more than ``REFRESH_BEFORE`` left, minted if needed."""
        key = repo.full_name.lower()
        with self._lock:
            cached = self._tokens.get(key)
            if cached is not None and fresh(cached, self._clock()):
                return cached
            minted = self._mint(repo)
            self._tokens[key] = minted
            return minted

    def _installation(self, repo: _repository.Repository) -> int:
        if self._app.installation_id is not None:
            return self._app.installation_id
        key = repo.full_name.lower()
        if key not in self._installations:
            found = _githubkit.read(
                self._client,
                _Installation,
                f"GET /repos/{repo.full_name}/installation",
                lambda rest: rest.apps.get_repo_installation(repo.owner, repo.name),
            )
            self._installations[key] = found.id
        return self._installations[key]

    def _mint(self, repo: _repository.Repository) -> _model.GitCredential:
        installation = self._installation(repo)
        token = _githubkit.read(
            self._client,
            _Token,
            f"POST /app/installations/{installation}/access_tokens",
            lambda rest: rest.apps.create_installation_access_token(
                installation, repositories=[repo.name]
            ),
        )
        return _model.GitCredential(
            username=GIT_USERNAME, secret=token.token, expires_at=token.expires_at
        )
