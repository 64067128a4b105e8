"""A local run set up as the operator sets one up: plan, bundle, registration, ledger.

The plan, the bundle and the registration are ``runs``' builders, as in the cluster;
local mode changes only where things are (the run directory and workspace of the
sandbox, or of the host with ``--sandbox none``) and who plays the model. The runner
clones through the in-process gateway's git endpoint, as a pod does, and the forge
credential (``--repository-credential``) goes to the gateway's registration only. The run
directory holds what a pod's mounted Secret holds, one file each; the ledger gets the
operator's ``run.created``, ``secret.read`` and ``run.started`` entries, plus what a
replay needs (``_digests.run_created_fields``).
"""

from __future__ import annotations

import os
import pathlib
import time
from collections.abc import Mapping
from typing import Any

from continue_orchestrator import gateway, ledger, policy, records, runner, runs
from continue_orchestrator.local import _admission, _context, _digests, _options


def plan(
    run: _context.LocalRun,
    admitted: _admission.Admitted,
    *,
    image: str,
    token: str,
) -> runs.Plan:
    """The operator's plan for ``run``: ``image`` plays the runner image."""
    inputs, brokered, literals = run.inputs, admitted.brokered, admitted.literals
    snapshot = runs.snapshot(
        policy.snapshot_content(inputs.policies), runtime_class=runs.RUNTIME_CLASS
    )
    spec = inputs.run.spec
    return runs.Plan(
        run=inputs.run,
        uid=run.uid,
        namespace=inputs.namespace,
        name=run.uid,
        snapshot=snapshot,
        config=literals.text,
        secret_values={
            m.name: inputs.secrets[m.name].encode() for m in spec.secrets if m.name not in brokered
        },
        brokered_values={
            **{m.name: inputs.secrets[m.name].encode() for m in spec.secrets if m.name in brokered},
            **{name: value.encode() for name, value in literals.values.items()},
        },
        inputs_digest=runs.inputs_digest(
            inputs.run,
            config=literals.text,
            snapshot=snapshot,
            runner_image=image,
            runner_command=runs.RUNNER_COMMAND,
        ),
        token=token,
        git_token=inputs.git_token.encode() if inputs.git_token is not None else None,
        permissions_yaml=policy.to_permissions_yaml(admitted.policy_set),
    )


def bundle(
    run: _context.LocalRun, plan: runs.Plan, *, gateway_url: str, cn: str
) -> runner.RunBundle:
    """The operator's bundle; local mode changes only where things are."""
    made = runs.bundle(plan, gateway_url=gateway_url)
    update: dict[str, Any] = {"run": run.uid}
    if run.options.sandbox == "none":
        update.update(
            secrets_dir=str(run.run_dir / "secrets"),
            token_file=str(run.run_dir / "token"),
            paths=runner.Paths(workspace=str(run.workspace), home=str(run.root / "home"), cn=cn),
        )
    else:
        update["paths"] = runner.Paths(cn=cn)
    return made.model_copy(update=update)


def registration(
    run: _context.LocalRun,
    plan: runs.Plan,
    made: runner.RunBundle,
    model: _options.ModelServer | None,
    model_base: str,
) -> gateway.RunRegistration:
    """The run as the operator registers it: the same admin-API body, parsed by the
    gateway's own parser (policy recompiled and checked against its digest)."""
    source = runs.registration(plan, expires_at=time.time() + plan.timeout_seconds + 300)
    models = None
    if model is not None:
        # A local model stands in for every upstream, and is handed the credential the
        # real one would get (the gateway's Authorization header), as a provider is.
        real = gateway.upstreams_from_config(plan.config, source.secrets)
        models = {
            name: gateway.Upstream(model_base, upstream.api_key, upstream.provider)
            for name, upstream in real.items()
        }
    body = gateway.registration_body(
        source,
        models=models,
        workspace=made.paths.workspace,
        approval_timeout=float(run.inputs.run_policy.spec.approval_timeout_seconds),
    )
    if model is not None:
        body["allowedEgress"] = sorted({*body["allowedEgress"], f"127.0.0.1:{model.port}"})
    return gateway.parse_registration(body)


def decider(run: _context.LocalRun, policy_set: policy.PolicySet) -> gateway.ToolDecider:
    """Tool calls decided against the compiled set, paths against the run's workspace."""
    context = policy.RunContext(
        namespace=run.inputs.namespace, name=run.inputs.name, uid=run.uid,
        workspace_root="/workspace" if run.options.sandbox != "none" else str(run.workspace),
    )  # fmt: skip

    def decide(
        registration: gateway.RunRegistration, tool: str, arguments: Mapping[str, Any]
    ) -> gateway.Decision:
        decision: gateway.Decision = policy.decide_tool_call(
            policy_set, tool, arguments, run=context, workspace=run.workspace
        )
        return decision

    return decide


def write_private(path: pathlib.Path, text: str) -> None:
    """``text`` in a new file only its owner can read."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        handle.write(text)


def write_run_dir(
    run: _context.LocalRun, made: runner.RunBundle, token: str, brokered: frozenset[str]
) -> None:
    """The pod's run directory: token, bundle and delivered secrets, one file each (the
    brokered model credentials stay with the gateway, as the operator keeps them)."""
    write_private(run.run_dir / "token", token)
    write_private(run.run_dir / "bundle.json", made.model_dump_json(by_alias=True))
    (run.run_dir / "secrets").mkdir(exist_ok=True)
    for mapping in run.inputs.run.spec.secrets:
        if mapping.name not in brokered:
            write_private(run.run_dir / "secrets" / mapping.name, run.inputs.secrets[mapping.name])


def record_start(
    run: _context.LocalRun,
    book: ledger.Ledger,
    plan: runs.Plan,
    *,
    image: str,
    cn: str,
) -> None:
    """The operator's ``run.created`` and ``secret.read`` entries (``runs.start_entries``,
    with what only local mode adds), and ``run.started``."""
    inputs, sandbox = run.inputs, run.options.sandbox
    fields = _digests.run_created_fields(
        inputs, records.BlobStore(str(run.records)),
        policy_digest=plan.snapshot.digest, runner_image=image,
        cli=_digests.cli_version(cn, _options.CN_VERSION),
    )  # fmt: skip
    items = runs.start_entries(
        plan, run.actor, runner_image=image, replay_inputs=fields["replayInputs"],
        extra={"sandbox": sandbox, "mode": "local",
               "inputsDocument": fields["inputsDocument"]},
    )  # fmt: skip
    items.append(ledger.Append(run.uid, ledger.Kind.RUN_STARTED, run.actor, {
        "name": inputs.name, "namespace": inputs.namespace,
        "startTime": run.started.isoformat(), "sandbox": sandbox,
    }))  # fmt: skip
    book.append_many(items)
    where = "gVisor sandbox" if sandbox != "none" else "NO SANDBOX"
    run.say(f"phase: Running ({where})")
