"""When the operator publishes a run, and what it says when it will not."""

from __future__ import annotations

import pathlib
from typing import Any

import pytest
from tests.unit.controller import _fake_kube
from tests.unit.controller._fake_kube import FakeKube

from continue_orchestrator import controller, ledger
from continue_orchestrator.controller import _closing, _publication, _sandbox, _verify_pod

SPEC = {
    "agent": {"config": "name: a\nversion: 0.0.1\nschema: v1\nmodels: []\n"},
    "prompt": "fix the failing test",
    "repository": {"url": "https://github.com/acme/widgets", "ref": "main"},
    "policyRef": {"name": "default"},
    "output": {"pullRequest": {"enabled": True}},
}
SIGNED = {"signed": "true", "digest": "sha256:" + "a" * 64, "location": "configmap:team-a/x"}


def _publisher(
    kube: FakeKube, settings: controller.Settings, tmp_path: pathlib.Path, *, attesting: bool
) -> _publication.Publisher:
    book = ledger.open(f"sqlite:///{tmp_path / 'ledger.db'}")
    gateway = controller.InMemoryGateway()
    return _publication.Publisher(
        kube, book, _sandbox.Sandbox(kube, book, gateway, settings),
        _verify_pod.VerifyPod(kube, gateway, settings, None), settings,
        records_root=None, closing=_closing.Closing(), attesting=attesting,
    )  # fmt: skip


def _run(kube: FakeKube, status: dict[str, Any], **spec: Any) -> dict[str, Any]:
    kube.add_run(status)
    kube.objects[_fake_kube.PATH]["spec"] = {**SPEC, **spec}
    return dict(kube.objects[_fake_kube.PATH])


def _published(kube: FakeKube) -> dict[str, Any] | None:
    conditions = kube.objects[_fake_kube.PATH]["status"].get("conditions") or []
    return next((c for c in conditions if c["type"] == "Published"), None)


def test_an_operator_that_signs_nothing_says_so_instead_of_ignoring_the_request(
    settings: controller.Settings, tmp_path: pathlib.Path
) -> None:
    kube = FakeKube()
    body = _run(kube, {"phase": "Succeeded"})
    assert _publisher(kube, settings, tmp_path, attesting=False).publish(body) is None
    published = _published(kube)
    assert published is not None
    assert (published["status"], published["reason"]) == ("False", "NotAttested")
    assert "--signing-key-dir" in published["message"]


def test_a_run_whose_signing_failed_is_not_published(
    settings: controller.Settings, tmp_path: pathlib.Path
) -> None:
    kube = FakeKube()
    failed = {"signed": "failed", "reason": "Rekor is unreachable"}
    body = _run(kube, {"phase": "Succeeded", "attestation": failed})
    assert _publisher(kube, settings, tmp_path, attesting=True).publish(body) is None
    published = _published(kube)
    assert published is not None and published["reason"] == "NotAttested"
    assert "Rekor is unreachable" in published["message"]


@pytest.mark.parametrize(
    ("status", "spec"),
    [
        ({"phase": "Failed", "attestation": SIGNED}, {}),  # the agent did not succeed
        ({"phase": "Succeeded", "attestation": SIGNED}, {"output": {}}),  # asks for no PR
        ({"phase": "Succeeded", "attestation": {"signed": "false"}}, {}),  # not signed yet
        (
            {
                "phase": "Succeeded",
                "attestation": SIGNED,
                "conditions": [
                    {
                        "type": "Published",
                        "status": "True",
                        "reason": "Opened",
                        "message": "done",
                        "lastTransitionTime": "2026-12-03T00:00:00Z",
                    }
                ],
            },
            {},
        ),  # opened before
    ],
)
def test_nothing_is_published_or_written_for_a_run_that_needs_no_publication(
    settings: controller.Settings, tmp_path: pathlib.Path, status: Any, spec: Any
) -> None:
    kube = FakeKube()
    body = _run(kube, status, **spec)
    before = [c["type"] for c in status.get("conditions", [])]
    assert _publisher(kube, settings, tmp_path, attesting=True).publish(body) is None
    after = kube.objects[_fake_kube.PATH]["status"].get("conditions") or []
    assert [c["type"] for c in after] == before
