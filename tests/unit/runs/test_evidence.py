"""What the runner measures reaches the attestation: a runner outcome posted to the real
gateway lands in the sealed record (manifest facts and the outcome blob), and
``runs.evidence_from_records`` reads back the workspace tree digest, the CLI
version and each model's provider from that record instead of placeholders."""

from __future__ import annotations

import asyncio
import json
import pathlib
from typing import Any

import aiohttp
import pytest
from tests.tree_digest_reference import reference_tree_digest
from tests.unit.gateway.test_admin_api import ADMIN, TOKEN, body

from continue_orchestrator import gateway, local, records, runner, runs


def _gateway_run(tmp_path: pathlib.Path, outcome: dict[str, Any]) -> str:
    """Register run-1, make one model call, post ``outcome``, unregister; the record digest."""
    turns = [{"text": "Done."}]

    async def main() -> str:
        model = local.ScriptedModel(local.Script.from_data({"turns": turns}))
        await model.start()
        server = gateway.Gateway(record_root=str(tmp_path / "records"), admin_token=ADMIN)
        await server.start()
        try:
            admin = {"Authorization": f"Bearer {ADMIN}"}
            run = {"Authorization": f"Bearer {TOKEN}"}
            async with aiohttp.ClientSession(base_url=server.base_url) as session:
                document = body(f"http://127.0.0.1:{model.port}/v1")
                document["models"]["m"]["provider"] = "anthropic"
                async with session.post("/admin/runs", json=document, headers=admin) as answer:
                    assert answer.status == 201, await answer.text()
                request = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
                async with session.post(
                    "/runs/run-1/v1/chat/completions", json=request, headers=run
                ) as answer:
                    assert answer.status == 200, await answer.text()
                async with session.post("/runs/run-1/outcome", json=outcome, headers=run) as answer:
                    assert answer.status == 200, await answer.text()
                async with session.delete("/admin/runs/run-1", headers=admin) as answer:
                    return str((await answer.json())["recordDigest"])
        finally:
            await server.stop()
            await model.stop()

    return asyncio.run(main())


def _outcome(**fields: Any) -> dict[str, Any]:
    return runner.Outcome(
        run="run-1",
        status=runner.Status.SUCCEEDED,
        exit_code=0,
        started_at="2026-11-23T10:00:00.000+00:00",
        finished_at="2026-11-23T10:01:00.000+00:00",
        **fields,
    ).wire()


def test_the_runners_measurements_reach_the_evidence(tmp_path: pathlib.Path) -> None:
    workspace = tmp_path / "workspace"
    workspace.mkdir()
    (workspace / "answer.py").write_text("ANSWER = 42\n")
    tree = runner.tree_digest(workspace)
    assert tree == reference_tree_digest(workspace)
    diff = runner.DiffReport(
        base="0" * 40, files=[], digest="sha256:" + "d" * 64, size=0, truncated=False,
        patch_base64="",
    )  # fmt: skip
    digest = _gateway_run(
        tmp_path, _outcome(workspace_tree_digest=tree, cli_version="1.5.47", diff=diff)
    )

    store = records.BlobStore(str(tmp_path / "records"))
    manifest = json.loads(store.get(digest))
    [finished] = [e for e in manifest["exchanges"] if e["kind"] == "run.outcome"]
    assert finished["facts"]["workspaceTreeDigest"] == tree
    assert finished["facts"]["cliVersion"] == "1.5.47"
    [model] = [e for e in manifest["exchanges"] if e["kind"] == "model"]
    assert model["facts"]["provider"] == "anthropic"

    evidence = runs.evidence_from_records(tmp_path / "records")("run-1")
    assert evidence is not None
    assert evidence.record_digest == digest
    assert evidence.workspace_tree_digest == tree
    assert evidence.cli_version == "1.5.47"
    assert evidence.diff_digest == "sha256:" + "d" * 64
    assert [(m.provider, m.model, m.requests) for m in evidence.models] == [("anthropic", "m", 1)]


@pytest.mark.parametrize("missing", ["workspaceTreeDigest", "cliVersion"])
def test_an_outcome_without_a_measurement_yields_none_not_a_placeholder(
    tmp_path: pathlib.Path, missing: str
) -> None:
    outcome = _outcome(workspace_tree_digest="sha256:" + "a" * 64, cli_version="1.5.47")
    del outcome[missing]  # a runner from before these fields existed
    _gateway_run(tmp_path, outcome)
    evidence = runs.evidence_from_records(tmp_path / "records")("run-1")
    assert evidence is not None
    values = {
        "workspaceTreeDigest": evidence.workspace_tree_digest,
        "cliVersion": evidence.cli_version,
    }
    assert values.pop(missing) is None
    assert next(iter(values.values())) is not None
