"""One run inside the sandbox: workspace, config, agent, diff, verify, report.

The order is deliberate. Everything that can stop a run for policy or configuration
(secret grants, the config rewrite) happens before the agent starts, so a refused run
never executed a single tool. The clone goes through the gateway's git endpoint with the
run token (no forge credential is ever here); the token's variable is gone from this
process's environment before the agent is spawned, and the agent gets an environment
built from nothing, with a fixed HOME, TZ, locale and working directory so its system prompt is
the same every run. The diff is taken before the verify commands so it holds the
agent's work and not test artefacts.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime
import json
import os
import pathlib
import sys
from collections.abc import Callable, Mapping

from continue_orchestrator import api, errors
from continue_orchestrator.runner import _bundle, _config, _outcome, _process, _workspace

# Continue CLI knobs: no telemetry or metrics leave the sandbox; no colour codes in logs.
_AGENT_ENV = {
    "TZ": "UTC",
    "LANG": "C.UTF-8",
    "LC_ALL": "C.UTF-8",
    "NO_COLOR": "1",
    "FORCE_COLOR": "0",
    "CI": "1",
    "CONTINUE_CLI_ENABLE_TELEMETRY": "0",
    "CONTINUE_METRICS_ENABLED": "0",
    "CONTINUE_CLI_DISABLE_COMMIT_SIGNATURE": "1",
}

Log = Callable[[str], None]


def stderr_log(line: str) -> None:
    print(f"runner: {line}", file=sys.stderr, flush=True)


@dataclasses.dataclass
class Progress:
    """How far the run got; the outcome reports whatever is set."""

    base: str | None = None
    config: _config.RewrittenConfig | None = None
    agent: tuple[list[str], _process.Completed] | None = None
    diff: _workspace.Diff | None = None
    tree: str | None = None
    cli_version: str | None = None
    verify: list[tuple[api.VerifyCommand, _process.Completed]] = dataclasses.field(
        default_factory=list
    )


def agent_environment(bundle: _bundle.RunBundle, global_dir: pathlib.Path) -> dict[str, str]:
    """The agent's whole environment: nothing inherited but a PATH that finds node."""
    path = ":".join(
        dict.fromkeys([os.path.dirname(bundle.paths.cn), *_find_node(), bundle.paths.path])
    )
    return {
        **_AGENT_ENV,
        "PATH": path,
        "HOME": bundle.paths.home,
        "CONTINUE_GLOBAL_DIR": str(global_dir),
        "PWD": bundle.paths.workspace,
    }


def _find_node() -> list[str]:
    for directory in os.environ.get("PATH", "").split(":"):
        if directory and os.access(os.path.join(directory, "node"), os.X_OK):
            return [directory]
    return []


def continue_dir(bundle: _bundle.RunBundle) -> pathlib.Path:
    """The Continue CLI's global directory (config, permissions), under the fixed HOME."""
    return pathlib.Path(bundle.paths.home) / ".continue"


def prepare_agent_files(
    bundle: _bundle.RunBundle, token: str, secret_values: Mapping[str, str]
) -> tuple[pathlib.Path, _config.RewrittenConfig, pathlib.Path]:
    """Write the rewritten config.yaml and permissions.yaml; raise before any agent runs."""
    rewritten = _config.rewrite_config(
        bundle.config,
        api_base=bundle.api_base,
        api_key=token,
        allowed_secrets=bundle.allowed_secrets,
        secret_values=secret_values,
        where=f"run {bundle.run}: config.yaml",
    )
    global_dir = continue_dir(bundle)
    global_dir.mkdir(parents=True, exist_ok=True)
    config_path = global_dir / "run-config.yaml"
    _write_private(config_path, rewritten.text)
    _write_private(global_dir / "permissions.yaml", bundle.permissions_yaml)
    return config_path, rewritten, global_dir


def _write_private(path: pathlib.Path, text: str) -> None:
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        handle.write(text)


def run(
    bundle: _bundle.RunBundle,
    *,
    environ: Mapping[str, str] | None = None,
    log: Log = stderr_log,
    deliver: bool = True,
    prepare: bool = True,
) -> _outcome.Outcome:
    """Run the whole pipeline and report the outcome; never raises for a failed run.

    Reads the token and secrets from ``environ`` (default: the process environment, from
    which the token's variable is then removed).
    ``prepare=False`` takes the workspace as already cloned by a separate step.
    """
    environ = take_environ(environ)
    started = now()
    token = ""
    secrets: dict[str, str] = {}
    state = Progress()

    def finish(status: _outcome.Status, message: str = "") -> _outcome.Outcome:
        known = {**secrets, "run token": token}
        outcome = build_outcome(bundle, status, message, started, state, known)
        return conclude(bundle, outcome, token=token, deliver=deliver, log=log)

    try:
        token = _bundle.run_token(bundle, environ)
        secrets = _bundle.secret_values(bundle, environ)
    except errors.OrchestratorError as error:
        return finish(_outcome.Status.CONFIG_ERROR, error.message)

    workspace = pathlib.Path(bundle.paths.workspace)
    try:
        base = clone(bundle, token, log) if prepare else _workspace_head(workspace)
        state.base = base
    except errors.OrchestratorError as error:
        return finish(_outcome.Status.WORKSPACE_ERROR, error.message)

    try:
        config_path, rewritten, global_dir = prepare_agent_files(bundle, token, secrets)
    except errors.PolicyStopError as error:
        return finish(_outcome.Status.POLICY_STOPPED, error.message)
    except errors.OrchestratorError as error:
        return finish(_outcome.Status.CONFIG_ERROR, error.message)
    except OSError as error:
        return finish(_outcome.Status.CONFIG_ERROR, f"cannot write the agent's config: {error}")
    state.config = rewritten

    if not os.access(bundle.paths.cn, os.X_OK):
        return finish(
            _outcome.Status.CONFIG_ERROR,
            f"the Continue CLI is not at {bundle.paths.cn} (set paths.cn in the bundle; "
            "hack/install-cn.sh installs the pinned version)",
        )
    state.cli_version = cli_version(bundle.paths.cn)
    argv = [bundle.paths.cn, "-p", "--config", str(config_path), bundle.prompt]
    log(f"starting the agent ({len(rewritten.models)} model(s) through {bundle.api_base})")
    agent = _process.run(
        argv,
        cwd=str(workspace),
        env=agent_environment(bundle, global_dir),
        timeout=bundle.agent_timeout_seconds,
        limit=bundle.output_limit_bytes,
    )
    state.agent = (argv, agent)
    log(f"agent exited {agent.exit_code} after {agent.duration_seconds}s")

    try:
        state.tree = _workspace.tree_digest(workspace)
    except errors.OrchestratorError as error:
        log(f"no workspace tree digest: {error.message}")
    try:
        state.diff = _workspace.diff(workspace, base, limit=bundle.diff_limit_bytes)
    except errors.OrchestratorError as error:
        return finish(_outcome.Status.WORKSPACE_ERROR, error.message)

    if agent.timed_out:
        return finish(
            _outcome.Status.TIMED_OUT,
            f"the agent ran past its {bundle.agent_timeout_seconds}s timeout",
        )
    if agent.exit_code != 0:
        return finish(_outcome.Status.AGENT_FAILED, f"the Continue CLI exited {agent.exit_code}")

    verify(bundle, state.verify, log)
    return finish(*verify_status(state.verify))


def take_environ(environ: Mapping[str, str] | None) -> dict[str, str]:
    """The environment to read the token and secrets from: ``environ``, or a copy of the
    process environment, from which the credentials' variables are then removed."""
    if environ is not None:
        return dict(environ)
    taken = dict(os.environ)
    prefix = _bundle.SECRET_ENV_PREFIX
    for name in [*_bundle.CREDENTIAL_ENV, *(n for n in taken if n.startswith(prefix))]:
        os.environ.pop(name, None)
    return taken


def verify(
    bundle: _bundle.RunBundle,
    results: list[tuple[api.VerifyCommand, _process.Completed]],
    log: Log = stderr_log,
) -> None:
    """Run the bundle's verify commands in the workspace, appending each result as it ends
    (so a run cut short still reports the ones that finished): ``/bin/sh -c`` in the
    agent's environment, each with its own timeout, output merged and cut to the limit."""
    environment = agent_environment(bundle, continue_dir(bundle))
    for command in bundle.verify:
        log(f"verify {command.name}: {command.command}")
        completed = _process.run(
            ["/bin/sh", "-c", command.command],
            cwd=bundle.paths.workspace,
            env=environment,
            timeout=command.timeout_seconds,
            limit=bundle.output_limit_bytes,
            merge_stderr=True,
        )
        results.append((command, completed))
        log(f"verify {command.name}: exit {completed.exit_code}")


def verify_status(
    results: list[tuple[api.VerifyCommand, _process.Completed]],
) -> tuple[_outcome.Status, str]:
    """SUCCEEDED when every verify command exited 0, else VERIFY_FAILED naming the others."""
    failed = [command.name for command, completed in results if completed.exit_code != 0]
    if failed:
        return _outcome.Status.VERIFY_FAILED, f"verify failed: {', '.join(failed)}"
    return _outcome.Status.SUCCEEDED, ""


def conclude(
    bundle: _bundle.RunBundle,
    outcome: _outcome.Outcome,
    *,
    token: str,
    deliver: bool,
    log: Log = stderr_log,
) -> _outcome.Outcome:
    """Log the outcome and, with ``deliver`` and a token, report it to the gateway: the
    exit code becomes REPORT_FAILED when it is not accepted, and POLICY_STOPPED when the
    gateway answers that it stopped the run."""
    status, message = outcome.status, outcome.message
    log(f"{status.value}: {message}" if message else status.value)
    if not (deliver and token):
        return outcome
    try:
        receipt = _outcome.report(bundle.outcome_url, token, outcome)
    except errors.RunnerError as error:
        log(error.message)
        return outcome.model_copy(update={"exit_code": int(_outcome.ExitCode.REPORT_FAILED)})
    if receipt.policy_stop and status is not _outcome.Status.POLICY_STOPPED:
        log(f"the gateway stopped the run for policy: {receipt.policy_stop}")
        return outcome.model_copy(
            update={
                "status": _outcome.Status.POLICY_STOPPED,
                "exit_code": int(_outcome.ExitCode.POLICY_STOPPED),
                "message": receipt.policy_stop,
            }
        )
    return outcome


def clone(bundle: _bundle.RunBundle, token: str, log: Log = stderr_log) -> str:
    """Clone the bundle's repository into its workspace at the pinned commit: through the
    gateway's git endpoint with the run ``token`` when the bundle names one."""
    url = _workspace.split_credentials(bundle.repository.url)[0]
    workspace = pathlib.Path(bundle.paths.workspace)
    if bundle.git_url is None:
        log(f"cloning {url}")
        return _workspace.prepare(bundle.repository, workspace)
    log(f"cloning {url} through the gateway ({bundle.git_url})")
    return _workspace.prepare(
        bundle.repository,
        workspace,
        credentials=_bundle.Credentials(username="run", token=token),
        fetch_url=bundle.git_url,
    )


def cli_version(cn: str) -> str | None:
    """The version in the package.json of the npm package whose ``bin`` is ``cn``.

    Reading it costs a file read; ``cn --version`` would start node (seconds). A
    package.json that does not declare ``cn`` as its binary is not believed.
    """
    executable = os.path.realpath(cn)
    for parent in pathlib.Path(executable).parents:
        manifest = parent / "package.json"
        if not manifest.is_file():
            continue
        try:
            data = json.loads(manifest.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if not isinstance(data, dict) or not isinstance(data.get("version"), str):
            return None
        bins = data.get("bin")
        targets = bins.values() if isinstance(bins, dict) else [bins]
        if not any(
            isinstance(target, str) and os.path.realpath(parent / target) == executable
            for target in targets
        ):
            return None
        name, version = str(data.get("name") or ""), str(data["version"])
        return version if name == "@continuedev/cli" else f"{name}@{version}"
    return None


def _workspace_head(workspace: pathlib.Path) -> str:
    env = _workspace.git_env(str(workspace))
    return _workspace._git(["rev-parse", "HEAD"], workspace, env, str(workspace)).strip()


def now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds")


def _result(
    completed: _process.Completed, secrets: Mapping[str, str], found: set[str]
) -> _outcome.ProcessResult:
    output, names = _outcome.redact(completed.stdout.decode(errors="replace"), secrets)
    found |= names
    return _outcome.ProcessResult(
        exit_code=completed.exit_code,
        timed_out=completed.timed_out,
        duration_seconds=completed.duration_seconds,
        output=output,
        output_bytes=completed.stdout_bytes,
        truncated=completed.stdout_bytes > len(completed.stdout),
    )


def build_outcome(
    bundle: _bundle.RunBundle,
    status: _outcome.Status,
    message: str,
    started: str,
    state: Progress,
    secrets: Mapping[str, str],
) -> _outcome.Outcome:
    found: set[str] = set()
    message, names = _outcome.redact(message, secrets)
    found |= names
    agent = None
    if state.agent is not None:
        argv, completed = state.agent
        stderr, names = _outcome.redact(completed.stderr.decode(errors="replace"), secrets)
        found |= names
        redacted_argv = []
        for arg in argv:
            text, names = _outcome.redact(arg, secrets)
            found |= names
            redacted_argv.append(text)
        agent = _outcome.AgentResult(
            argv=redacted_argv, result=_result(completed, secrets, found), stderr=stderr
        )
    verify = [
        _outcome.VerifyResult(
            name=command.name, command=command.command, result=_result(completed, secrets, found)
        )
        for command, completed in state.verify
    ]
    diff = None
    if state.diff is not None:
        taken = state.diff
        patch = taken.patch
        for name, value in secrets.items():
            if len(value) >= 4 and value.encode() in patch:
                patch = patch.replace(value.encode(), f"[REDACTED:{name}]".encode())
                found.add(name)
        diff = _outcome.DiffReport(
            base=taken.base,
            files=[_outcome.ChangedFile(status=f.status, path=f.path) for f in taken.files],
            digest=taken.digest,
            size=taken.size,
            truncated=taken.truncated,
            patch_base64=base64.b64encode(patch).decode(),
        )
    config = state.config
    return _outcome.Outcome(
        run=bundle.run,
        status=status,
        exit_code=int(status.exit_code),
        message=message,
        base_commit=state.base,
        models=list(config.models) if config else [],
        resolved_secrets=sorted(config.resolved) if config else [],
        agent=agent,
        verify=verify,
        diff=diff,
        workspace_tree_digest=state.tree,
        cli_version=state.cli_version,
        redacted=sorted(found),
        started_at=started,
        finished_at=now(),
    )
