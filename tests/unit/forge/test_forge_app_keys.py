"""Each GitHub App forge signs in with its own key, whatever other Apps the process holds.

githubkit caches an App's JWT by the App's id in a process-wide cache unless told
otherwise; a second App of the same id (a rotated key, a test) was then signed in with
the first one's JWT. GitHub's token endpoint is an httpx ``MockTransport`` here that
verifies each JWT with the key of the App it was made for.
"""

from __future__ import annotations

import datetime

import httpx
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from continue_orchestrator import forge


def _pem(key: rsa.RSAPrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


def test_two_apps_of_one_id_each_sign_in_with_their_own_key() -> None:
    verified: list[str] = []

    def endpoint_for(key: rsa.RSAPrivateKey, label: str) -> httpx.MockTransport:
        def answer(request: httpx.Request) -> httpx.Response:
            signed = request.headers["authorization"].removeprefix("Bearer ")
            jwt.decode(signed, key.public_key(), algorithms=["RS256"])  # raises if not its key
            verified.append(label)
            expires = datetime.datetime.now(datetime.UTC) + datetime.timedelta(hours=1)
            return httpx.Response(201, json={"token": f"ghs_{label}_0123456789abcdef",
                                             "expires_at": expires.isoformat()})  # fmt: skip

        return httpx.MockTransport(answer)

    repo = forge.Repository("https://github.com/acme/payments.git")
    first, second = (rsa.generate_private_key(public_exponent=65537, key_size=2048)
                     for _ in range(2))  # fmt: skip
    for key, label in ((first, "first"), (second, "second")):
        app = forge.GitHubApp(app_id=4242, private_key=_pem(key), installation_id=1)
        credential = forge.for_url(repo, app, transport=endpoint_for(key, label)).git_credential(
            repo
        )
        assert credential.secret == f"ghs_{label}_0123456789abcdef"
    assert verified == ["first", "second"]
