"""A small blocking Kubernetes REST client over the official client's transport.

The operator speaks JSON to a handful of paths; the generated typed APIs would add
model conversions and version churn for nothing. Authentication, TLS and kubeconfig
handling stay with ``kubernetes.client`` (in-cluster service account or KUBECONFIG).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import kubernetes

from continue_orchestrator import api

JSON = dict[str, Any]


class ApiError(Exception):
    """The API server answered with an error status."""

    def __init__(self, status: int, reason: str, message: str, path: str) -> None:
        self.status = status
        self.reason = reason
        self.message_text = message
        self.path = path
        super().__init__(f"{status} {reason} on {path}: {message}")


class Kube:
    """Thread-safe: the underlying urllib3 pool is shared between handler threads."""

    def __init__(self, client: Any) -> None:
        self._client = client

    @classmethod
    def from_environment(cls, *, pool_size: int = 32) -> Kube:
        configuration = kubernetes.client.Configuration()
        loader: Any = kubernetes.config
        try:
            loader.load_incluster_config(client_configuration=configuration)
        except loader.ConfigException:
            loader.load_kube_config(client_configuration=configuration)
        configuration.connection_pool_maxsize = pool_size
        return cls(kubernetes.client.ApiClient(configuration))

    def close(self) -> None:
        self._client.close()

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        query: dict[str, str] | None = None,
        content_type: str = "application/json",
        timeout: float = 30.0,
    ) -> JSON:
        headers = {"Accept": "application/json", "Content-Type": content_type}
        serialized = self._client.param_serialize(
            method,
            path,
            query_params=list((query or {}).items()),
            header_params=headers,
            body=body,
            auth_settings=["BearerToken"],
        )
        response = self._client.call_api(*serialized, _request_timeout=timeout)
        response.read()
        text = response.data.decode("utf-8") if response.data else ""
        if not 200 <= response.status <= 299:
            reason, message = str(response.reason), text
            try:
                status = json.loads(text)
                reason, message = status.get("reason", reason), status.get("message", text)
            except ValueError:
                pass
            raise ApiError(response.status, reason, message, f"{method} {path}")
        return json.loads(text) if text else {}

    def get(self, path: str, **query: str) -> JSON | None:
        """The object, or None if it does not exist."""
        try:
            return self.request("GET", path, query=query or None)
        except ApiError as error:
            if error.status == 404:
                return None
            raise

    def create(self, path: str, body: JSON) -> JSON:
        return self.request("POST", path, body)

    def merge_patch(self, path: str, body: JSON) -> JSON:
        """JSON merge patch; a ``metadata.resourceVersion`` in ``body`` makes it a CAS."""
        return self.request("PATCH", path, body, content_type="application/merge-patch+json")

    def delete(self, path: str, *, grace_seconds: int | None = None) -> bool:
        """True if this call deleted it, False if it was already gone."""
        body: JSON = {"propagationPolicy": "Background"}
        if grace_seconds is not None:
            body["gracePeriodSeconds"] = grace_seconds
        try:
            self.request("DELETE", path, body)
        except ApiError as error:
            if error.status == 404:
                return False
            raise
        return True

    def watch(
        self, path: str, *, resource_version: str, timeout_seconds: int = 30, **query: str
    ) -> Iterator[JSON]:
        """Events (``{"type": ..., "object": ...}``) of a collection after
        ``resource_version``, until the server ends the watch after ``timeout_seconds``.
        An expired resource version raises ``ApiError`` with status 410."""
        params = {
            **query,
            "watch": "1",
            "resourceVersion": resource_version,
            "timeoutSeconds": str(timeout_seconds),
        }
        serialized = self._client.param_serialize(
            "GET",
            path,
            query_params=list(params.items()),
            header_params={"Accept": "application/json"},
            auth_settings=["BearerToken"],
        )
        response = self._client.call_api(*serialized, _request_timeout=timeout_seconds + 15)
        raw = response.response
        try:
            if not 200 <= response.status <= 299:
                response.read()
                raise ApiError(response.status, str(response.reason), str(response.data), path)
            pending = b""
            for chunk in raw.stream(65536, decode_content=True):
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    if not line.strip():
                        continue
                    event = json.loads(line)
                    if event.get("type") == "ERROR":
                        status = event.get("object") or {}
                        raise ApiError(
                            int(status.get("code") or 500),
                            str(status.get("reason", "")),
                            str(status.get("message", "")),
                            f"WATCH {path}",
                        )
                    yield event
        finally:
            raw.release_conn()


def agentruns(namespace: str | None, name: str | None = None, *, status: bool = False) -> str:
    """AgentRuns of ``namespace`` (None: of every namespace, to list), or the one named."""
    if namespace is None:
        return f"/apis/{api.GROUP}/{api.VERSION}/agentruns"
    path = f"/apis/{api.GROUP}/{api.VERSION}/namespaces/{namespace}/agentruns"
    if name:
        path += f"/{name}"
        if status:
            path += "/status"
    return path


def core(namespace: str, plural: str, name: str | None = None) -> str:
    path = f"/api/v1/namespaces/{namespace}/{plural}"
    return f"{path}/{name}" if name else path


def network_policies(namespace: str, name: str | None = None) -> str:
    path = f"/apis/networking.k8s.io/v1/namespaces/{namespace}/networkpolicies"
    return f"{path}/{name}" if name else path
