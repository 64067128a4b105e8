"""From a Continue tool call to every request it implies, decided together.

The names are those of the pinned Continue CLI (1.5.47, read from its bundle): Read
(``filepath``), Write (``filepath``, ``content``), Edit and MultiEdit (``file_path``),
List (``dirpath``), Search (``pattern``, ``path``), Diff (``path``), Bash
(``command``, ``timeout``), Fetch (``url``). MCP tools reach the model under their bare
MCP names; the caller passes the server when it knows it.
"""

from __future__ import annotations

import dataclasses
import pathlib
import urllib.parse
from collections.abc import Mapping

from continue_orchestrator import api
from continue_orchestrator.policy import _engine, _glob, _request, _shell

BUILT_IN_TOOLS = (
    "Read",
    "Write",
    "Edit",
    "MultiEdit",
    "List",
    "Search",
    "Diff",
    "Bash",
    "Fetch",
    "Checklist",
    "Skills",
    "Status",
    "Exit",
    "Subagent",
    "AskQuestion",
    "ReportFailure",
    "UploadArtifact",
    "CheckBackgroundJob",
)
"""Every tool the pinned Continue CLI offers the model itself."""

# tool -> (argument holding the path, action, whether the argument may be absent)
_PATH_TOOLS: dict[str, tuple[str, api.Action, bool]] = {
    "Read": ("filepath", api.Action.FILE_READ, False),
    "Write": ("filepath", api.Action.FILE_WRITE, False),
    "Edit": ("file_path", api.Action.FILE_WRITE, False),
    "MultiEdit": ("file_path", api.Action.FILE_WRITE, False),
    "List": ("dirpath", api.Action.FILE_READ, False),
    "Search": ("path", api.Action.FILE_READ, True),
    "Diff": ("path", api.Action.FILE_READ, True),
    "UploadArtifact": ("filePath", api.Action.FILE_READ, False),
}
IMPLIED_ACTION: dict[str, api.Action] = {
    **{tool: action for tool, (_, action, _) in _PATH_TOOLS.items()},
    "Bash": api.Action.SHELL_EXEC,
    "Fetch": api.Action.NETWORK_EGRESS,
}
"""The action every call of a built-in tool implies besides tool.call."""
_DEFAULT_PORTS = {"http": 80, "https": 443}


class UnmappableError(ValueError):
    """The tool call cannot be turned into requests; the message says why."""


def requests_for(
    tool_name: str,
    arguments: Mapping[str, object],
    *,
    run: _request.RunContext,
    mcp_server: str | None = None,
    policy_set: _engine.PolicySet | None = None,
) -> list[_request.Request]:
    """Every request a tool call implies, ``tool.call`` first. Raises ``UnmappableError``.

    With ``policy_set``, a file a shell glob names is also requested as a file of each
    Deny or RequireApproval path rule the glob could reach."""
    server = None if tool_name in BUILT_IN_TOOLS else mcp_server
    call = _request.Request(
        api.Action.TOOL_CALL, tool=tool_name, mcp_server=server, arguments=arguments, run=run
    )
    found = [call]
    if server is not None or tool_name not in BUILT_IN_TOOLS:
        return found
    if tool_name in _PATH_TOOLS:
        name, action, optional = _PATH_TOOLS[tool_name]
        value = arguments.get(name)
        if value is None and optional:
            value = "."
        if not isinstance(value, str):
            raise UnmappableError(f"{tool_name} needs a string argument {name!r}")
        # The tool.call carries the path too, so a rule on tool.call matches it normalised.
        found[0] = call = dataclasses.replace(call, path=value, path_argument=name)
        found.append(dataclasses.replace(call, action=action))
    elif tool_name == "Bash":
        command = arguments.get("command")
        if not isinstance(command, str):
            raise UnmappableError("Bash needs a string argument 'command'")
        found.extend(_shell_requests(command, call, policy_set))
    elif tool_name == "Fetch":
        url = arguments.get("url")
        if not isinstance(url, str):
            raise UnmappableError("Fetch needs a string argument 'url'")
        host, port = _host_port(url)
        found.append(
            dataclasses.replace(call, action=api.Action.NETWORK_EGRESS, host=host, port=port)
        )
    return found


def _shell_requests(
    line: str, call: _request.Request, policy_set: _engine.PolicySet | None
) -> list[_request.Request]:
    try:
        parsed = _shell.split(line)
    except _shell.ShellRejectedError as error:
        raise UnmappableError(f"Bash command cannot be checked: {error}") from None
    found: list[_request.Request] = []
    for view in parsed.commands:
        command = dataclasses.replace(
            call, action=api.Action.SHELL_EXEC, command=view.text, argv=view.argv
        )
        found.append(command)
        for branch in _shell.pushed_branches(view.argv) or ():
            target = (call.run.branch if branch is _shell.CURRENT_BRANCH else branch) or None
            found.append(
                dataclasses.replace(
                    command,
                    action=api.Action.BRANCH_PUSH,
                    branch=target,
                    branch_unknown=target is None,
                )
            )
    for redirect in parsed.redirects:
        action = api.Action.FILE_WRITE if redirect.write else api.Action.FILE_READ
        found.append(dataclasses.replace(call, action=action, path=redirect.path))
        if redirect.expands:
            found.extend(
                dataclasses.replace(call, action=action, path=path)
                for path in _reachable(policy_set, redirect.path, action)
            )
    return found


def _reachable(
    policy_set: _engine.PolicySet | None, glob: str, action: api.Action
) -> list[str]:
    """A file ``glob`` could name for each Deny or RequireApproval path rule on ``action``
    it could reach: deciding these too decides the glob as the strictest file it could be."""
    if policy_set is None:
        return []
    paths: dict[str, None] = {}
    for compiled in policy_set.compiled:
        for rule_glob in compiled.strict_paths.get(action, ()):
            path = _glob.witness(glob, rule_glob)
            if path is not None:
                paths[path.rstrip("/") or "."] = None
    return list(paths)


def _host_port(url: str) -> tuple[str, int]:
    try:
        parts = urllib.parse.urlsplit(url.strip())
        port = parts.port
    except ValueError as error:
        raise UnmappableError(f"Fetch URL {url!r} is malformed: {error}") from None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS:
        raise UnmappableError(f"Fetch URL {url!r}: only http and https are fetched, not {scheme!r}")
    host = (parts.hostname or "").rstrip(".")
    if not host:
        raise UnmappableError(f"Fetch URL {url!r} has no host")
    if ":" in host:
        host = f"[{host}]"
    return host, port if port is not None else _DEFAULT_PORTS[scheme]


def decide_tool_call(
    policy_set: _engine.PolicySet,
    tool_name: str,
    arguments: Mapping[str, object],
    *,
    run: _request.RunContext,
    workspace: pathlib.Path | None = None,
    mcp_server: str | None = None,
) -> _request.Decision:
    """Decide a tool call the model asked for: the strictest decision of all it implies."""
    try:
        requests = requests_for(
            tool_name, arguments, run=run, mcp_server=mcp_server, policy_set=policy_set
        )
    except UnmappableError as error:
        request = _request.Request(
            api.Action.TOOL_CALL, tool=tool_name, mcp_server=mcp_server, arguments=arguments,
            run=run,
        )
        return _engine.deny(policy_set, request, str(error))
    implied = [_engine.decide(policy_set, r, workspace=workspace) for r in requests[1:]]
    # The tool.call of a tool that implies further requests is decided by rules only;
    # the policies' defaults speak through the implied requests.
    call = _engine.decide_or_abstain(
        policy_set, requests[0], workspace=workspace, defaults=not implied
    )
    # Implied requests first: of equally strict decisions, theirs cite the specific rule.
    return _request.strictest(implied + ([call] if call is not None else []))
