"""A run's evidence as a pull request body (``runs.evidence_body``).

Built from a constructed run as the real pipeline builds it: ledger entries, a sealed
record with a streamed model answer and the runner's report in it, and ``runs.facts``.
Checked: the same inputs give the same bytes; each section says what its source says;
quoted text cannot break out of its code fence; the body stays within GitHub's limit,
cutting the largest sections first and saying so; a missing re-verification is named.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import pathlib
import re
from datetime import UTC, datetime
from typing import Any

from continue_orchestrator import api, ledger, records, runner, runs

IMAGE = "registry.example/runner@sha256:" + "a" * 64
COMMIT = "1" * 40
BUNDLE_DIGEST = "sha256:" + "b" * 64
FINAL = "Fixed: rounding is half up now. Pushing was denied, so I left it for review."
PATCH = (
    b"diff --git a/src/p.py b/src/p.py\n"
    b"index " + b"1" * 40 + b".." + b"2" * 40 + b" 100644\n"
    b"--- a/src/p.py\n+++ b/src/p.py\n@@ -1,3 +1,3 @@\n"
    b" def f():\n-    return 1\n+    return 2\n+    # done\n"
    b"diff --git a/logo.png b/logo.png\nnew file mode 100644\n"
    b"index 0000000000000000000000000000000000000000..3333333333333333333333333333333333333333\n"
    b"GIT binary patch\nliteral 4\nLcmZ?wb^rez0RR91\n\n"
)


def _entry(sequence: int, kind: ledger.Kind, payload: dict[str, Any], **extra: Any) -> ledger.Entry:
    return ledger.Entry(
        sequence=sequence, run_uid="u", time=extra.get("time", "2026-11-23T10:05:00.000000Z"),
        kind=kind, actor=extra.get("actor", "gateway"),
        payload_json=ledger.canonical(payload).decode(),
        payload_digest="0" * 64, prev_hash="0" * 64, entry_hash="0" * 64,
    )  # fmt: skip


ENTRIES = [
    _entry(1, ledger.Kind.RUN_CREATED, {"name": "fix-it"}),
    _entry(2, ledger.Kind.POLICY_DECISION, {"callId": "a", "tool": "Read",
           "arguments": {"filepath": "src/p.py"}, "effect": "Allow", "rule": "reads"}),
    _entry(3, ledger.Kind.TOOL_CALL, {"callId": "a"}),
    _entry(4, ledger.Kind.POLICY_DECISION, {"callId": "b", "tool": "Bash",
           "arguments": {"command": "git push origin HEAD:main"}, "effect": "Deny",
           "rule": "no-push", "reason": "pushing is the orchestrator's job"}),
    _entry(5, ledger.Kind.POLICY_DECISION, {"callId": "c", "tool": "Write",
           "arguments": {"filepath": "tests/t.py"}, "effect": "RequireApproval",
           "rule": "hold-tests"}),
    _entry(6, ledger.Kind.APPROVAL_GRANTED, {"callId": "c", "by": "alice"},
           time="2026-11-23T10:06:00.000000Z"),
    _entry(7, ledger.Kind.TOOL_CALL, {"callId": "c"}),
    _entry(8, ledger.Kind.RUN_FINISHED, {"phase": "Succeeded"}),
]  # fmt: skip


def _run(*, verify: bool = True, url: str = "https://github.com/acme/widgets") -> api.AgentRun:
    spec: dict[str, Any] = {
        "agent": {"configMapKeyRef": {"name": "agent", "key": "config.yaml"}},
        "prompt": "fix the failing test",
        "repository": {"url": url, "ref": "main", "commit": COMMIT},
        "policyRef": {"name": "default"},
    }
    if verify:
        spec["verify"] = [{"name": "unit-tests", "command": "python3 -m unittest -v"}]
    resource = api.parse(
        {
            "apiVersion": api.API_VERSION,
            "kind": "AgentRun",
            "metadata": {"name": "fix-it", "namespace": "team-a"},
            "spec": spec,
        }
    )
    assert isinstance(resource, api.AgentRun)
    return resource


def _verify(output: str = "Ran 3 tests in 0.001s\n\nOK\n", **result: Any) -> runner.VerifyResult:
    values: dict[str, Any] = {"exit_code": 0, "duration_seconds": 1.25, "output": output,
                              "output_bytes": len(output.encode()), **result}  # fmt: skip
    return runner.VerifyResult(
        name="unit-tests", command="python3 -m unittest -v", result=runner.ProcessResult(**values)
    )


def _outcome(*, verify: list[runner.VerifyResult] | None = None, **fields: Any) -> runner.Outcome:
    diff = runner.DiffReport(
        base=COMMIT,
        files=[
            runner.ChangedFile(status="M", path="src/p.py"),
            runner.ChangedFile(status="A", path="logo.png"),
        ],
        digest="sha256:" + "d" * 64,
        size=len(PATCH),
        truncated=False,
        patch_base64=base64.b64encode(PATCH).decode(),
    )
    values: dict[str, Any] = {"diff": diff, "cli_version": "1.5.47", "base_commit": COMMIT,
                              "workspace_tree_digest": "sha256:" + "e" * 64, **fields}  # fmt: skip
    return runner.Outcome(
        run="u", status=runner.Status.SUCCEEDED, exit_code=0,
        verify=[_verify()] if verify is None else verify,
        started_at="2026-11-23T10:00:00Z", finished_at="2026-11-23T10:09:00Z", **values,
    )  # fmt: skip


def _record(tmp_path: pathlib.Path, *answers: records.ChatAnswer) -> records.RunRecord:
    store = records.BlobStore(tmp_path / "records")
    record = records.RunRecord(store, "u")
    for answer in answers:
        request = store.put(b'{"model": "m", "messages": []}')
        response = store.put(b"".join(answer.events()))
        record.append(
            "model",
            blobs={"upstreamRequest0": request, "upstreamResponse0": response},
            facts={"model": "m", "provider": "openai", "stream": True, "upstreamRounds": 1},
        )
    record.seal()
    return record


def _inputs(
    tmp_path: pathlib.Path,
    *,
    outcome: runner.Outcome | None = None,
    run: api.AgentRun | None = None,
    finish: runs.Finish | None = None,
    entries: list[ledger.Entry] = ENTRIES,
    **fields: Any,
) -> runs.EvidenceInputs:
    run = run or _run()
    finish = finish or runs.Finish(
        phase=api.Phase.SUCCEEDED, reason="Completed",
        started_at=datetime(2026, 11, 23, 10, tzinfo=UTC),
        finished_at=datetime(2026, 11, 23, 10, 10, tzinfo=UTC),
        inputs_digest="sha256:" + "3" * 64, policy_digest="sha256:" + "4" * 64,
    )  # fmt: skip
    record = _record(
        tmp_path,
        records.ChatAnswer(id="1", model="m", text="Let me read it.", text_delta=4),
        records.ChatAnswer(id="2", model="m", text=FINAL, text_delta=7),
        records.ChatAnswer(id="3", model="m", text=""),  # no text: not the final message
    )
    evidence = runs.Evidence(record_digest="sha256:" + "5" * 64, outcome=outcome or _outcome())
    facts = runs.facts(
        run, uid="u", finish=finish, entries=entries, evidence=evidence, merkle_root="6" * 64,
        runner_image=IMAGE, builder_id="urn:test", stopped_by="spec.cancel",
    )  # fmt: skip
    values: dict[str, Any] = {
        "run": run, "facts": facts, "finish": finish, "entries": entries, "record": record,
        "evidence": evidence,
        "provenance": runs.Provenance(
            bundle_digest=BUNDLE_DIGEST, bundle="/state/attestations/u.sigstore.json",
            key="/state/keys/dev.pub", ledger="sqlite:////state/ledger.db",
            ledger_key="/state/keys/dev.pub",
        ),
        **fields,
    }  # fmt: skip
    return runs.EvidenceInputs(**values)


def _section(body: str, title: str) -> str:
    start = body.index(f"### {title}")
    end = body.find("\n### ", start + 1)
    return body[start : end if end != -1 else len(body)]


def _outside_fences(body: str) -> list[str]:
    """The body's lines outside code fences; fails if a fence is left open."""
    outside: list[str] = []
    open_: str | None = None
    for line in body.split("\n"):
        if open_ is None:
            found = re.match(r"(`{3,})", line)
            open_ = found.group(1) if found else None
            if open_ is None:
                outside.append(line)
        elif line.strip() and set(line.strip()) == {"`"} and len(line.strip()) >= len(open_):
            open_ = None
    assert open_ is None, f"fence {open_} left open"
    return outside


def _fences_balanced(body: str) -> bool:
    return bool(_outside_fences(body))


def test_the_same_inputs_render_the_same_bytes(tmp_path: pathlib.Path) -> None:
    first = runs.evidence_body(_inputs(tmp_path / "a"))
    second = runs.evidence_body(_inputs(tmp_path / "b"))
    assert first.encode() == second.encode()
    assert first.endswith("\n") and _fences_balanced(first)


def test_the_headline_names_the_run_its_phase_and_the_pinned_commit(
    tmp_path: pathlib.Path,
) -> None:
    body = runs.evidence_body(_inputs(tmp_path))
    head = body[: body.index("### ")]
    assert head.startswith("## Agent run `team-a/fix-it`: Succeeded")
    assert "uid `u`" in head and "Succeeded (`Completed`)" in head
    assert f"`https://github.com/acme/widgets` at commit `{COMMIT}`" in head
    assert "1 allowed, 1 denied, 1 approved by a person" in head


def test_a_credential_in_the_repository_url_never_reaches_the_body(
    tmp_path: pathlib.Path,
) -> None:
    canary = "ghp_CANARY0123456789"
    run = _run(url=f"https://x-access-token:{canary}@github.com/acme/widgets")
    body = runs.evidence_body(_inputs(tmp_path, run=run))
    assert canary not in body
    assert f"`https://github.com/acme/widgets` at commit `{COMMIT}`" in body


def test_verify_results_show_command_exit_code_duration_and_the_output_tail(
    tmp_path: pathlib.Path,
) -> None:
    output = "".join(f"line {n}\n" for n in range(100)) + "FAILED (failures=1)\n"
    outcome = _outcome(verify=[_verify(output, exit_code=1, duration_seconds=2.5)])
    verify = _section(runs.evidence_body(_inputs(tmp_path, outcome=outcome)), "Verify results")
    assert "| agent's sandbox | `unit-tests` | `python3 -m unittest -v` | 1 | 2.5 s |" in verify
    assert "last 40 line(s)" in verify
    assert "FAILED (failures=1)" in verify and "line 99" in verify
    assert "line 60\n" not in verify  # only the tail
    # The second run is absent and said to be.
    assert "**fresh sandbox:** not re-verified" in verify


def test_a_fresh_sandbox_run_is_shown_beside_the_agents(tmp_path: pathlib.Path) -> None:
    fresh = runs.VerifyRun(label=runs.FRESH_SANDBOX, results=(_verify("OK again\n"),))
    agent = runs.agent_verify_run(runs.Evidence(outcome=_outcome()))
    assert agent is not None
    verify = _section(
        runs.evidence_body(_inputs(tmp_path, verify_runs=(agent, fresh))), "Verify results"
    )
    assert "| agent's sandbox | `unit-tests` |" in verify
    assert "| fresh sandbox | `unit-tests` |" in verify
    assert "not re-verified" not in verify and "OK again" in verify


def test_no_report_and_no_verify_commands_are_said_plainly(tmp_path: pathlib.Path) -> None:
    inputs = _inputs(tmp_path / "a")
    lost = dataclasses.replace(inputs, evidence=runs.Evidence())
    verify = _section(runs.evidence_body(lost), "Verify results")
    assert "the runner's report did not reach the record" in verify
    assert "No diff was taken" in runs.evidence_body(lost)
    none = _section(runs.evidence_body(_inputs(tmp_path / "b", run=_run(verify=False),
                                               outcome=_outcome(verify=[]))),
                    "Verify results")  # fmt: skip
    assert "The AgentRun names no verify commands." in none


def test_the_diff_stat_counts_lines_per_file_and_names_the_digest(
    tmp_path: pathlib.Path,
) -> None:
    diff = _section(runs.evidence_body(_inputs(tmp_path)), "Diff")
    assert "2 file(s) changed, +2 -1; digest `sha256:" + "d" * 64 + "`" in diff
    assert "| `src/p.py` | modified | 2 | 1 |" in diff
    assert "| `logo.png` | added | binary |  |" in diff


def test_a_cut_patch_leaves_the_files_past_the_cut_uncounted(tmp_path: pathlib.Path) -> None:
    cut = _outcome()
    assert cut.diff is not None
    kept = PATCH[: PATCH.index(b"GIT binary")]
    truncated = cut.diff.model_copy(
        update={"truncated": True, "patch_base64": base64.b64encode(kept).decode()}
    )
    diff = _section(
        runs.evidence_body(_inputs(tmp_path, outcome=cut.model_copy(update={"diff": truncated}))),
        "Diff",
    )
    assert "| `src/p.py` | modified | 2 | 1 |" in diff
    assert "| `logo.png` | added | ? | ? |" in diff
    assert "kept only the start of the patch" in diff


def test_the_reasoning_summary_is_the_last_words_and_the_decided_calls(
    tmp_path: pathlib.Path,
) -> None:
    reasoning = _section(runs.evidence_body(_inputs(tmp_path)), "Reasoning summary")
    assert f"```text\n{FINAL}\n```" in reasoning
    assert "| 1 | `Read` | `src/p.py` | allowed | `reads` | — |" in reasoning
    assert (
        "| 2 | `Bash` | `git push origin HEAD:main` | **denied** | `no-push` | — | "
        "`pushing is the orchestrator's job` |"
    ) in reasoning
    assert "| 3 | `Write` | `tests/t.py` | held, approved | `hold-tests` | `alice` |" in reasoning


def test_interventions_say_who_and_when(tmp_path: pathlib.Path) -> None:
    people = _section(runs.evidence_body(_inputs(tmp_path / "a")), "Interventions")
    assert "| 2026-11-23T10:06:00Z | approval | `alice` | `c` | — |" in people
    stopped = runs.Finish(
        phase=api.Phase.CANCELLED, reason="ManualStop", message="stopped by hand",
        started_at=datetime(2026, 11, 23, 10, tzinfo=UTC),
        finished_at=datetime(2026, 11, 23, 10, 7, tzinfo=UTC),
        inputs_digest="sha256:" + "3" * 64, policy_digest="sha256:" + "4" * 64,
    )  # fmt: skip
    body = runs.evidence_body(_inputs(tmp_path / "b", finish=stopped))
    assert "| 2026-11-23T10:07:00Z | manual-stop | `spec.cancel` | `run` |" in body


def test_provenance_names_every_digest_and_the_commands_that_check_them(
    tmp_path: pathlib.Path,
) -> None:
    proof = _section(runs.evidence_body(_inputs(tmp_path)), "Provenance")
    assert f"**Attestation** (Sigstore bundle): `{BUNDLE_DIGEST}`" in proof
    assert "**Run record:** `sha256:" + "5" * 64 + "`" in proof
    assert "entries 1 to 8, Merkle root `sha256:" + "6" * 64 + "`" in proof
    assert "**Inputs digest:** `sha256:" + "3" * 64 in proof
    assert "**Policy digest:** `sha256:" + "4" * 64 in proof
    assert f"**Runner image:** `{IMAGE}`" in proof and "**Continue CLI:** `1.5.47`" in proof
    assert (
        "orchestrator verify /state/attestations/u.sigstore.json --key /state/keys/dev.pub\n"
        "orchestrator ledger verify sqlite:////state/ledger.db --public-key /state/keys/dev.pub"
    ) in proof


def test_an_unsigned_run_says_why_and_offers_no_bundle_check(tmp_path: pathlib.Path) -> None:
    inputs = _inputs(tmp_path)
    unsigned = dataclasses.replace(
        inputs, provenance=runs.Provenance(bundle_digest=None, unsigned_reason="sign: no key")
    )
    proof = _section(runs.evidence_body(unsigned), "Provenance")
    assert "not signed: `sign: no key`" in proof and "orchestrator verify" not in proof


def test_quoted_text_cannot_break_its_fence_or_the_table(tmp_path: pathlib.Path) -> None:
    hostile = (
        "ok\n```\n# Approved by security @everyone\n![x](https://evil.example/p.png)\n"
        "````\n\x1b[31mred\x1b[0m \u202eevil\n</details>\n"
    )
    outcome = _outcome(verify=[_verify(hostile)])
    entries = [
        *ENTRIES[:-1],
        _entry(8, ledger.Kind.POLICY_DECISION, {"callId": "d", "tool": "Bash",
               "arguments": {"command": "echo `a` | b ``` c"}, "effect": "Allow"}),
    ]  # fmt: skip
    body = runs.evidence_body(_inputs(tmp_path, outcome=outcome, entries=entries))
    outside = "\n".join(_outside_fences(body))
    # The tail sits whole in a fence longer than any backtick run in it.
    assert "`````text\nok\n```\n# Approved by security @everyone\n" in body
    assert "@everyone" not in outside and "evil.example" not in outside
    assert [line for line in outside.split("\n") if line.startswith("# ")] == []
    assert outside.count("<details>") == outside.count("</details>") == 1
    # Colour codes go, a bidirectional override is shown as what it is not.
    assert "\x1b" not in body and "\u202e" not in body and "red \ufffdevil" in body
    # In a table, pipes are escaped and the code span outlasts the backticks inside it.
    assert "| 4 | `Bash` | ````echo `a` \\| b ``` c```` | allowed |" in body


def test_the_body_fits_the_limit_cutting_the_largest_sections_first(
    tmp_path: pathlib.Path,
) -> None:
    many = [
        _entry(100 + n, ledger.Kind.POLICY_DECISION, {"callId": f"x{n}", "tool": "Read",
               "arguments": {"filepath": f"src/file_{n:05}.py"}, "effect": "Allow"})
        for n in range(2_000)
    ]  # fmt: skip
    inputs = _inputs(tmp_path, entries=[*ENTRIES[:-1], *many, ENTRIES[-1]])
    whole = runs.evidence_body(inputs, limit=10_000_000)
    assert len(whole) > runs.BODY_LIMIT
    body = runs.evidence_body(inputs)
    assert len(body) <= runs.BODY_LIMIT
    assert body == runs.evidence_body(inputs)
    assert _fences_balanced(body)
    reasoning = _section(body, "Reasoning summary")
    assert "Cut to keep this body under 65,536 characters" in reasoning
    # Only the largest section was cut; the others are whole, provenance included.
    for title in ("Verify results", "Diff", "Interventions", "Provenance"):
        assert _section(body, title) == _section(whole, title), title
    assert body.startswith(whole[: whole.index("### Verify results")])


def test_two_large_sections_are_cut_to_a_common_size(tmp_path: pathlib.Path) -> None:
    many = [
        _entry(100 + n, ledger.Kind.POLICY_DECISION, {"callId": f"x{n}", "tool": "Read",
               "arguments": {"filepath": f"src/file_{n:05}.py"}, "effect": "Allow"})
        for n in range(600)
    ]  # fmt: skip
    long_tail = "x" * 60 + "\n"
    outcome = _outcome(verify=[_verify(long_tail * 40) for _ in range(12)])
    inputs = _inputs(tmp_path, outcome=outcome, entries=[*ENTRIES[:-1], *many, ENTRIES[-1]])
    body = runs.evidence_body(inputs, limit=40_000)
    assert len(body) <= 40_000 and _fences_balanced(body)
    verify, reasoning = _section(body, "Verify results"), _section(body, "Reasoning summary")
    assert "Cut to keep this body under 40,000 characters" in verify
    assert "Cut to keep this body under 40,000 characters" in reasoning
    assert abs(len(verify) - len(reasoning)) < 500
    assert body.count("<details>") == body.count("</details>")


def test_the_final_message_reads_whole_and_streamed_answers(tmp_path: pathlib.Path) -> None:
    store = records.BlobStore(tmp_path / "records")
    record = records.RunRecord(store, "w")
    whole = records.ChatAnswer(id="1", model="m", text="said whole").completion()
    record.append(
        "model",
        blobs={"upstreamRequest0": store.put(b"{}"),
               "upstreamResponse0": store.put(json.dumps(whole).encode())},
        facts={"upstreamRounds": 1},
    )  # fmt: skip
    assert runs.final_message(record) == "said whole"
    assert runs.final_message(records.RunRecord(store, "empty")) is None
