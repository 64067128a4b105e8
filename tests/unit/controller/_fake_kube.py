"""An in-memory stand-in for the API server, enough for the status writer and Events.

It keeps objects by path, bumps ``metadata.resourceVersion`` on every write, answers a
merge patch whose resourceVersion is stale with 409 and a missing object with 404, the
way kube-apiserver does; ``before_patch`` lets a test play another writer that gets in
between a read and a write.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from continue_orchestrator import api, controller

JSON = dict[str, Any]
NAMESPACE, NAME, UID = "team-a", "fix-it", "0b6f3f7e-1111-4222-8333-944445555666"
PATH = f"/apis/{api.GROUP}/{api.VERSION}/namespaces/{NAMESPACE}/agentruns/{NAME}"


def _merge(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    merged = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = _merge(merged.get(key), value)
    return merged


class FakeKube(controller.Kube):
    def __init__(self) -> None:
        super().__init__(client=None)
        self.objects: dict[str, JSON] = {}
        self.patches: list[JSON] = []
        self.reads = 0
        self.before_patch: Callable[[FakeKube], None] = lambda kube: None
        self._version = 0

    def _bump(self, obj: JSON) -> None:
        self._version += 1
        obj["metadata"]["resourceVersion"] = str(self._version)

    def add_run(self, status: JSON | None = None, *, uid: str = UID) -> JSON:
        run: JSON = {
            "apiVersion": api.API_VERSION,
            "kind": "AgentRun",
            "metadata": {"name": NAME, "namespace": NAMESPACE, "uid": uid, "generation": 1},
            "spec": {"prompt": "fix it"},
            "status": status or {"phase": "Pending"},
        }
        self._bump(run)
        self.objects[PATH] = run
        return copy.deepcopy(run)

    def write_status(self, change: JSON) -> None:
        """Another writer's status write, straight into the store."""
        run = self.objects[PATH]
        run["status"] = _merge(run.get("status") or {}, change)
        self._bump(run)

    def get(self, path: str, **query: str) -> JSON | None:
        self.reads += 1
        found = self.objects.get(path)
        return copy.deepcopy(found) if found is not None else None

    def create(self, path: str, body: JSON) -> JSON:
        key = f"{path}/{body['metadata']['name']}"
        if key in self.objects:
            raise controller.ApiError(409, "AlreadyExists", "exists", f"POST {path}")
        self.objects[key] = copy.deepcopy(body)
        return body

    def delete(self, path: str, *, grace_seconds: int | None = None) -> bool:
        return self.objects.pop(path, None) is not None

    def merge_patch(self, path: str, body: JSON) -> JSON:
        self.before_patch(self)
        self.patches.append(copy.deepcopy(body))
        assert path.endswith("/status"), path
        run = self.objects.get(path.removesuffix("/status"))
        if run is None:
            raise controller.ApiError(404, "NotFound", "gone", f"PATCH {path}")
        wanted = body.get("metadata", {}).get("resourceVersion")
        if wanted is not None and wanted != run["metadata"]["resourceVersion"]:
            raise controller.ApiError(409, "Conflict", "the object has been modified", path)
        run["status"] = _merge(run.get("status") or {}, body["status"])
        self._bump(run)
        return copy.deepcopy(run)

    def events(self) -> list[JSON]:
        return [obj for obj in self.objects.values() if obj.get("kind") == "Event"]
