"""``orchestrator run``: the operator's pipeline for one AgentRun, on one machine.

The pieces are the operator's own: the plan, the policy snapshot, the inputs digest,
the runner bundle, the finish and the facts come from ``runs``, the gateway is
``gateway.Gateway``, the sandbox runs the same ``python -m continue_orchestrator.runner``
a pod runs, with the run directory and workspace at the pod's paths, and it clones
through the gateway's git endpoint as a pod does (the gateway also serves a local
``file://`` origin, such as the demo's, from this machine's disk). Only the
surroundings differ: gVisor in a network namespace instead of a pod and NetworkPolicy,
a SQLite ledger and a record store under the state directory, approvals through the
gateway's local admin endpoint, and an attestation signed with a development key that
says so. This module is the order of the steps; each step is its own module
(``_admission``, ``_setup``, ``_sandboxed``, ``_progress``, ``_end``).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable

from continue_orchestrator import gateway, ledger
from continue_orchestrator.local import (
    _admission,
    _context,
    _end,
    _inputs,
    _options,
    _progress,
    _publish,
    _report,
    _sandbox,
    _sandboxed,
    _scripted,
    _setup,
)


def run(
    inputs: _inputs.Inputs, options: _options.Options, *, say: _options.Say = print
) -> _report.Report:
    """Run ``inputs`` end to end and return the report (also written as report.json)."""
    try:
        return asyncio.run(_main(_context.LocalRun.start(inputs, options, say)))
    except asyncio.CancelledError:  # SIGTERM: stopped, recorded and cleaned up like Ctrl-C
        raise KeyboardInterrupt from None


async def _main(run: _context.LocalRun) -> _report.Report:
    options = run.options
    # SIGTERM (kill, systemd) stops the run as Ctrl-C does: recorded, sandbox removed.
    main_task = asyncio.current_task()
    if main_task is not None:
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, main_task.cancel)
    admitted = _admission.admit(run)
    cn = _admission.find_cn(options.cn)
    script = _scripted.Script.from_file(options.model_script) if options.model_script else None
    image = _options.runner_image()
    run.run_dir.mkdir(parents=True, exist_ok=True)
    run.workspace.mkdir(exist_ok=True)
    book = ledger.open(run.ledger_url)
    model: _options.ModelServer | None = None
    model_base = ""
    server: gateway.Gateway | None = None
    try:
        with _sandbox.Sandbox(mode=options.sandbox) as box:
            if options.model is not None:
                model = options.model
                model_base = await model.start()
                run.say(f"model: {type(model).__name__} at {model_base}")
            elif script is not None:
                model = _scripted.ScriptedModel(script)
                model_base = await model.start()
                run.say(f"model: scripted ({options.model_script}) at {model_base}")
            admin_token = gateway.new_token()
            server = gateway.Gateway(
                record_root=str(run.records),
                ledger=book,
                admin_token=admin_token,
                decide=_setup.decider(run, admitted.policy_set),
                local_repositories=True,  # the demo's origin is a directory on this machine
            )
            base_url = await server.start(host=box.host_address)
            box.allow_tcp(int(base_url.rsplit(":", 1)[1]))
            plan = _setup.plan(run, admitted, image=image, token=gateway.new_token())
            bundle = _setup.bundle(run, plan, gateway_url=base_url, cn=cn)
            server.register_run(_setup.registration(run, plan, bundle, model, model_base))
            token_file = run.root / "admin-token"
            _setup.write_private(token_file, admin_token)
            _setup.write_run_dir(run, bundle, plan.token, admitted.brokered)
            _setup.record_start(run, book, plan, image=image, cn=cn)
            run.say(f"gateway: {base_url} (run {run.uid})")
            run.say(
                f"approvals: orchestrator approvals {run.uid} --gateway {base_url} "
                f"--admin-token-file {token_file}"
            )
            progress = _progress.Progress(run, server, book, token_file)
            try:
                completed = await _sandboxed.execute(run, box, bundle, cn, progress)
            except asyncio.CancelledError:
                await _end.stopped(run, server, book, plan)
                raise
            await progress.poll()
            record_digest = await server.unregister_run(run.uid)

            # Inside the sandbox's lifetime: the gateway listens on its host end.
            def finish(waiter: _publish.Waiter | None) -> _report.Report:
                return _end.finish(
                    run, book, plan, completed,
                    record_digest=record_digest, image=image, gateway_url=base_url,
                    waiter=waiter,
                )  # fmt: skip

            command = f"--gateway {base_url} --admin-token-file {token_file}"
            report = await _ending(run, server, finish, command=command)
    finally:
        if server is not None:
            await server.stop()
        if model is not None:
            await model.stop()
        book.close()
    (run.root / "report.json").write_text(
        report.model_dump_json(by_alias=True, indent=2), encoding="utf-8"
    )
    return report


async def _ending(
    run: _context.LocalRun,
    server: gateway.Gateway,
    finish: Callable[[_publish.Waiter | None], _report.Report],
    *,
    command: str,
) -> _report.Report:
    """The run's end (``finish``: ``_end.finish``), in a worker thread while the gateway
    still serves: a publication step that needs approval is held there until
    ``orchestrator approve|deny`` (``command`` is what it needs besides the run and call)
    decides it. Ctrl-C refuses it, and the end completes before the gateway and the
    ledger close."""
    broker = server.broker
    waiter = None
    if isinstance(broker, gateway.LocalApprovalBroker):
        timeout = float(run.inputs.run_policy.spec.approval_timeout_seconds)
        waiter = _publish.Waiter(broker, asyncio.get_running_loop(), command, timeout)
    ending = asyncio.ensure_future(asyncio.to_thread(finish, waiter))
    try:
        return await asyncio.shield(ending)
    except asyncio.CancelledError:
        if waiter is not None:
            waiter.refuse_pending(run.uid, run.actor)
        with contextlib.suppress(Exception):
            await ending
        raise
