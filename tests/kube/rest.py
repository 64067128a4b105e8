"""A small JSON client for the Kubernetes API, for the test infrastructure.

The official `kubernetes` client is generated code whose models and patch
content types change between releases; the pod executor and the control-plane
helpers only need plain JSON over HTTPS, so they use this instead and stay
independent of it. Tests themselves are free to use `ControlPlane.api_client()`.
"""

from __future__ import annotations

import base64
import json
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import urllib3
import yaml

JSON = dict[str, Any]

MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_PATCH = "application/strategic-merge-patch+json"


class ApiError(Exception):
    """A non-2xx answer from the API server."""

    def __init__(self, status: int, body: str, method: str, path: str) -> None:
        self.status = status
        self.body = body
        try:
            self.reason = str(json.loads(body).get("reason", ""))
            self.message = str(json.loads(body).get("message", body))
        except ValueError:
            self.reason, self.message = "", body
        super().__init__(f"{method} {path}: {status} {self.message}")


class KubeREST:
    """JSON over HTTPS to one API server with a client certificate or bearer token."""

    def __init__(
        self,
        server: str,
        ca_file: Path,
        cert_file: Path | None = None,
        key_file: Path | None = None,
        token: str | None = None,
    ) -> None:
        self.server = server.rstrip("/")
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._pool = urllib3.PoolManager(
            num_pools=4,
            maxsize=8,
            cert_reqs="CERT_REQUIRED",
            ca_certs=str(ca_file),
            cert_file=str(cert_file) if cert_file else None,
            key_file=str(key_file) if key_file else None,
        )
        self._streams: set[urllib3.BaseHTTPResponse] = set()

    @classmethod
    def from_kubeconfig(cls, path: Path) -> KubeREST:
        """Read the current context of a kubeconfig (inline data or file references)."""
        cfg = yaml.safe_load(path.read_text())
        ctx_name = cfg["current-context"]
        ctx = next(c["context"] for c in cfg["contexts"] if c["name"] == ctx_name)
        cluster = next(c["cluster"] for c in cfg["clusters"] if c["name"] == ctx["cluster"])
        user = next(u["user"] for u in cfg["users"] if u["name"] == ctx["user"])
        spill = Path(tempfile.mkdtemp(prefix="kuberest-"))

        def material(data_key: str, file_key: str, section: dict[str, Any]) -> Path | None:
            if data_key in section:
                target = spill / data_key
                target.write_bytes(base64.b64decode(section[data_key]))
                target.chmod(0o600)
                return target
            return Path(section[file_key]) if file_key in section else None

        ca = material("certificate-authority-data", "certificate-authority", cluster)
        if ca is None:
            raise ValueError(f"{path}: the test client needs a CA for {cluster['server']}")
        return cls(
            cluster["server"],
            ca,
            material("client-certificate-data", "client-certificate", user),
            material("client-key-data", "client-key", user),
            user.get("token"),
        )

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        params: dict[str, str] | None = None,
        content_type: str = "application/json",
        timeout: float = 30.0,
    ) -> JSON:
        """One API call; returns the decoded JSON answer or raises `ApiError`."""
        headers = {**self._headers, "Accept": "application/json"}
        data = None
        if body is not None:
            headers["Content-Type"] = content_type
            data = json.dumps(body).encode()
        resp = self._pool.request(
            method,
            self.server + path + _query(params),
            body=data,
            headers=headers,
            timeout=timeout,
            retries=False,
        )
        text = resp.data.decode("utf-8", "replace")
        if resp.status >= 300:
            raise ApiError(resp.status, text, method, path)
        return json.loads(text) if text else {}

    def get(self, path: str, **params: str) -> JSON:
        return self.request("GET", path, params=params or None)

    def watch(self, path: str, *, timeout_seconds: int = 60, **params: str) -> Iterator[JSON]:
        """Stream watch events (`{"type": ..., "object": ...}`) until the server ends it."""
        query = {**params, "watch": "true", "timeoutSeconds": str(timeout_seconds),
                 "allowWatchBookmarks": "true"}
        resp = self._pool.request(
            "GET",
            self.server + path + _query(query),
            headers={**self._headers, "Accept": "application/json"},
            preload_content=False,
            timeout=urllib3.Timeout(connect=10.0, read=timeout_seconds + 30.0),
            retries=False,
        )
        self._streams.add(resp)
        try:
            if resp.status >= 300:
                raise ApiError(resp.status, resp.read().decode(), "WATCH", path)
            buffer = b""
            for chunk in resp.stream(65536):
                buffer += chunk
                while b"\n" in buffer:
                    line, buffer = buffer.split(b"\n", 1)
                    if line.strip():
                        yield json.loads(line)
        finally:
            self._streams.discard(resp)
            resp.release_conn()

    def close(self) -> None:
        """End open watches (from any thread) and drop pooled connections."""
        for resp in list(self._streams):
            resp.shutdown()
        self._pool.clear()


def _query(params: dict[str, str] | None) -> str:
    return "?" + urlencode(params) if params else ""
