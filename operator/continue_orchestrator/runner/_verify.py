"""Verify again in a fresh sandbox: the run's verify commands on a clean checkout with the
run's patch applied, with no agent and no model (publication's second step).

The agent's own verify results are its word; this is the operator's. The sandbox is a
new one, so nothing the agent left behind (a background process, a planted file outside
the diff, a poisoned cache) is there. It clones exactly as a run does (``_run.clone``,
through the gateway's git endpoint with the run token), applies the patch as
publication commits it (``_workspace.apply``), names the tree it verifies
(``_workspace.tree_digest``, so the operator can check it is the tree it publishes) and
runs the verify commands with the very loop a run uses (``_run.verify``). The Continue
CLI is never started and no model config is written.
"""

from __future__ import annotations

import pathlib
from collections.abc import Mapping

from continue_orchestrator import errors
from continue_orchestrator.runner import _bundle, _outcome, _run, _workspace


def verify_only(
    bundle: _bundle.RunBundle,
    patch: pathlib.Path,
    *,
    environ: Mapping[str, str] | None = None,
    log: _run.Log = _run.stderr_log,
    deliver: bool = True,
) -> _outcome.Outcome:
    """Clone at the pinned commit, apply ``patch``, run the verify commands and report the
    outcome (no agent result; the diff and tree digest of the verified workspace); never
    raises for a failed verification.

    Reads the run token from ``environ`` (default: the process environment, from which
    the token's variable is then removed). Granted secrets are not read: the verify
    commands never get them, in a run or here.
    """
    environ = _run.take_environ(environ)
    started = _run.now()
    token = ""
    state = _run.Progress()

    def finish(status: _outcome.Status, message: str = "") -> _outcome.Outcome:
        known = {"run token": token}
        outcome = _run.build_outcome(bundle, status, message, started, state, known)
        return _run.conclude(bundle, outcome, token=token, deliver=deliver, log=log)

    try:
        token = _bundle.run_token(bundle, environ)
    except errors.OrchestratorError as error:
        return finish(_outcome.Status.CONFIG_ERROR, error.message)
    where = f"patch {patch}"
    try:
        content = patch.read_bytes()
    except OSError as error:
        return finish(
            _outcome.Status.WORKSPACE_ERROR, f"{where}: cannot read the patch: {error.strerror}"
        )

    workspace = pathlib.Path(bundle.paths.workspace)
    try:
        state.base = _run.clone(bundle, token, log)
        log(f"applying {where} ({len(content)} bytes)")
        _workspace.apply(workspace, content, where=where)
        state.tree = _workspace.tree_digest(workspace)
        state.diff = _workspace.diff(workspace, state.base, limit=bundle.diff_limit_bytes)
    except errors.OrchestratorError as error:
        return finish(_outcome.Status.WORKSPACE_ERROR, error.message)
    try:
        pathlib.Path(bundle.paths.home).mkdir(parents=True, exist_ok=True)
    except OSError as error:
        return finish(_outcome.Status.CONFIG_ERROR, f"cannot create HOME: {error}")

    _run.verify(bundle, state.verify, log)
    return finish(*_run.verify_status(state.verify))
