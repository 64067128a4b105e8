"""Splitting a Bash tool call's command line into the simple commands it runs.

A policy says ``git push*`` is denied; the agent sends ``cd src && X=1 git "push"``.
This module tokenises the line the way a POSIX shell would (quotes, escapes,
operators, redirections) and yields every simple command, each in every *view* a rule
should see: as written, without leading ``NAME=value`` assignments, with a path-qualified
program reduced to its name, and with wrappers (``env``, ``nohup``, ``timeout``,
``sudo``, ``sh -c``, ``eval``, ``find -exec`` ...) peeled off. The engine decides every
view and the strictest effect wins, so a deny cannot be dodged by dressing a command up,
and an allow must hold for the command in every form.

What a shell parser cannot promise, and what we therefore refuse outright:
command substitution (`` `...` ``, ``$(...)``), process substitution (``<(...)``),
here-documents (``<<``), and a program name computed at run time (``$CMD args``). The
values of variables, aliases, shell functions defined elsewhere, and what a program
does with its arguments (``make``, ``npm run``, a script) are beyond any parser: the
sandbox is the fence for those.
"""

from __future__ import annotations

import dataclasses
import re
import shlex

_MAX_DEPTH = 8
_SEPARATORS = frozenset({"&&", "||", ";", ";;", "|", "|&", "&", "(", ")", "\n"})
_REDIRECTS = frozenset({">", ">>", ">|", "&>", "&>>", "<", "<>", ">&", "<&"})
_READS = frozenset({"<", "<&"})
_HARMLESS_TARGETS = frozenset({"/dev/null", "/dev/stdout", "/dev/stderr"})
_RESERVED_PREFIX = frozenset(
    {"{", "}", "!", "if", "then", "else", "elif", "do", "while", "until", "fi", "done", "time"}
)
_ASSIGNMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*=")
_SHELLS = frozenset({"sh", "bash", "dash", "zsh", "ksh", "ash", "busybox"})
_GIT_OPTIONS_WITH_VALUE = frozenset(
    {"-C", "-c", "--git-dir", "--work-tree", "--namespace", "--config-env", "--super-prefix"}
)
_SUBSTITUTION = "command substitution cannot be checked before it runs"
_OPERATORS = ("&>>", "&&", "||", ";;", "|&", "&>", ">>", ">|", ">&", "<&", "<>", "<<")


class ShellRejectedError(ValueError):
    """The command line cannot be checked before it runs; the message says why."""


@dataclasses.dataclass(frozen=True, slots=True)
class SimpleCommand:
    """One view of one simple command."""

    argv: tuple[str, ...]
    text: str
    """``argv`` quoted back into one canonical line; command globs match this."""


@dataclasses.dataclass(frozen=True, slots=True)
class Redirect:
    """A file a redirection reads or writes."""

    path: str
    write: bool


@dataclasses.dataclass(frozen=True, slots=True)
class CommandLine:
    """Everything a command line runs and every file its redirections touch."""

    commands: tuple[SimpleCommand, ...]
    redirects: tuple[Redirect, ...]


@dataclasses.dataclass(slots=True)
class _Word:
    text: str
    dynamic: bool


_Token = _Word | str


def _tokenise(line: str) -> list[_Token]:
    tokens: list[_Token] = []
    word: list[str] = []
    started = False
    dynamic = False
    i = 0
    n = len(line)

    brace = False

    def flush() -> None:
        nonlocal word, started, dynamic, brace
        if started:
            text = "".join(word)
            expands = brace and ("," in text or ".." in text)
            tokens.append(_Word(text, dynamic or expands))
        word, started, dynamic, brace = [], False, False, False

    while i < n:
        char = line[i]
        if char == "'":
            end = line.find("'", i + 1)
            if end < 0:
                raise ShellRejectedError("unclosed single quote")
            word.append(line[i + 1 : end])
            started = True
            i = end + 1
            continue
        if char == '"':
            i += 1
            started = True
            while True:
                if i >= n:
                    raise ShellRejectedError("unclosed double quote")
                inner = line[i]
                if inner == '"':
                    i += 1
                    break
                if inner == "\\" and i + 1 < n and line[i + 1] in '$`"\\\n':
                    if line[i + 1] != "\n":
                        word.append(line[i + 1])
                    i += 2
                    continue
                if inner == "`" or line.startswith("$(", i):
                    raise ShellRejectedError(_SUBSTITUTION)
                if inner == "$":
                    dynamic = True
                word.append(inner)
                i += 1
            continue
        if char == "\\":
            if i + 1 < n and line[i + 1] != "\n":
                word.append(line[i + 1])
                started = True
            i += 2
            continue
        if char == "`" or line.startswith("$(", i):
            raise ShellRejectedError(_SUBSTITUTION)
        if line.startswith("<(", i) or line.startswith(">(", i):
            raise ShellRejectedError("process substitution cannot be checked before it runs")
        if char == "$":
            dynamic = True
            word.append(char)
            started = True
            i += 1
            continue
        if char == "#" and not started:
            end = line.find("\n", i)
            i = n if end < 0 else end
            continue
        if char in " \t\r":
            flush()
            i += 1
            continue
        if char in "\n;&|()<>":
            if char in "<>" and started and not dynamic and "".join(word).isdigit():
                word, started = [], False
            flush()
            operator = next((op for op in _OPERATORS if line.startswith(op, i)), char)
            if operator == "<<":
                raise ShellRejectedError("here-documents and here-strings are not checked")
            tokens.append(operator)
            i += len(operator)
            continue
        if char in "*?[" or (char == "~" and not started):
            dynamic = True  # expanded by the shell: pathname or home expansion
        elif char == "{":
            brace = True
        word.append(char)
        started = True
        i += 1
    flush()
    return tokens


def _strip_options(argv: list[str], *, with_value: frozenset[str] = frozenset()) -> list[str]:
    rest = list(argv)
    while rest and rest[0].startswith("-") and rest[0] != "-":
        option = rest.pop(0)
        if option == "--":
            break
        if option in with_value and rest:
            rest.pop(0)
    return rest


def _unwrap(argv: list[str]) -> list[list[str]] | str | None:
    """Commands ``argv`` runs on its behalf: argv lists, a shell string, or None."""
    program = argv[0].rsplit("/", 1)[-1]
    args = argv[1:]
    if program in _SHELLS:
        if program == "busybox" and args:
            return [args]
        for index, arg in enumerate(args):
            if arg.startswith("-") and "c" in arg.lstrip("-") and not arg.startswith("--"):
                if index + 1 >= len(args):
                    raise ShellRejectedError(f"{program} -c without a command")
                return args[index + 1]
        return [args] if args else None
    if program == "git":
        rest = list(args)
        while rest and rest[0].startswith("-"):
            option = rest.pop(0)
            if option in _GIT_OPTIONS_WITH_VALUE and rest:
                rest.pop(0)
        return [[argv[0], *rest]] if len(rest) != len(args) and rest else None
    if program == "eval":
        return " ".join(args)
    if program == "env":
        rest = _strip_options(args, with_value=frozenset({"-u", "-C", "-S"}))
        while rest and _ASSIGNMENT.match(rest[0]):
            rest.pop(0)
        return [rest] if rest else None
    if program in ("nohup", "builtin", "command", "exec", "time", "nice", "stdbuf"):
        rest = _strip_options(args, with_value=frozenset({"-n", "-a"}))
        return [rest] if rest else None
    if program in ("sudo", "doas"):
        rest = _strip_options(args, with_value=frozenset({"-u", "-g", "-C", "-D", "-h", "-p"}))
        return [rest] if rest else None
    if program == "timeout":
        rest = _strip_options(args, with_value=frozenset({"-s", "-k", "--signal"}))
        return [rest[1:]] if len(rest) > 1 else None
    if program == "xargs":
        rest = _strip_options(args, with_value=frozenset({"-I", "-n", "-P", "-L", "-d", "-E"}))
        return [rest] if rest else None
    if program == "find":
        found: list[list[str]] = []
        for index, arg in enumerate(args):
            if arg in ("-exec", "-execdir", "-ok", "-okdir"):
                inner: list[str] = []
                for part in args[index + 1 :]:
                    if part in (";", "+"):
                        break
                    inner.append(part)
                if inner:
                    found.append(inner)
        return found or None
    return None


def _views(argv: list[str], depth: int) -> list[SimpleCommand]:
    if depth > _MAX_DEPTH:
        raise ShellRejectedError("commands nested too deeply to check")
    views = [SimpleCommand(tuple(argv), shlex.join(argv))]
    stripped = list(argv)
    while stripped and _ASSIGNMENT.match(stripped[0]):
        stripped.pop(0)
    if not stripped:
        return views
    if stripped != argv:
        views.append(SimpleCommand(tuple(stripped), shlex.join(stripped)))
    if "/" in stripped[0]:
        named = [stripped[0].rsplit("/", 1)[-1], *stripped[1:]]
        views.append(SimpleCommand(tuple(named), shlex.join(named)))
    inner = _unwrap(stripped)
    if isinstance(inner, str):
        views.extend(_split(inner, depth + 1).commands)
    elif inner is not None:
        for nested in inner:
            if nested:
                views.extend(_views(nested, depth + 1))
    return views


def _split(line: str, depth: int) -> CommandLine:
    if depth > _MAX_DEPTH:
        raise ShellRejectedError("commands nested too deeply to check")
    tokens = _tokenise(line)
    commands: list[SimpleCommand] = []
    redirects: list[Redirect] = []
    argv: list[_Word] = []

    def finish() -> None:
        words = list(argv)
        argv.clear()
        while words and words[0].text in _RESERVED_PREFIX and not words[0].dynamic:
            words.pop(0)
        while words and words[-1].text == "}" and not words[-1].dynamic:
            words.pop()
        if not words:
            return
        first = next((w for w in words if not _ASSIGNMENT.match(w.text)), None)
        if first is not None and first.dynamic:
            raise ShellRejectedError(
                f"the program {first.text!r} is expanded at run time and cannot be checked"
            )
        commands.extend(_views([w.text for w in words], depth))

    index = 0
    while index < len(tokens):
        token = tokens[index]
        index += 1
        if isinstance(token, _Word):
            argv.append(token)
        elif token in _SEPARATORS:
            finish()
        elif token in _REDIRECTS:
            target = tokens[index] if index < len(tokens) else None
            index += 1
            if not isinstance(target, _Word):
                raise ShellRejectedError(f"redirection {token!r} without a target")
            if token in (">&", "<&") and (target.text.isdigit() or target.text == "-"):
                continue
            if target.dynamic:
                raise ShellRejectedError(
                    f"redirection target {target.text!r} is expanded at run time"
                )
            if target.text not in _HARMLESS_TARGETS:
                redirects.append(Redirect(target.text, write=token not in _READS))
        else:
            raise ShellRejectedError(f"unexpected shell operator {token!r}")
    finish()
    return CommandLine(tuple(dict.fromkeys(commands)), tuple(dict.fromkeys(redirects)))


def split(line: str) -> CommandLine:
    """Every simple command (in every view) and redirection of ``line``.

    Raises ``ShellRejectedError`` for what cannot be checked before it runs.
    """
    if "\x00" in line:
        raise ShellRejectedError("command contains a NUL byte")
    if not line.strip():
        raise ShellRejectedError("empty command")
    return _split(line, 0)


CURRENT_BRANCH = None
"""In ``pushed_branches``: the branch checked out (a bare ``git push``, ``HEAD``)."""
UNKNOWN_BRANCH = ""
"""In ``pushed_branches``: branches that cannot be known from the command (``--all``)."""


def pushed_branches(argv: tuple[str, ...]) -> list[str | None] | None:
    """Branches a ``git ... push`` command pushes to, or None if it is not a git push.

    Entries are branch names, ``CURRENT_BRANCH`` or ``UNKNOWN_BRANCH``.
    """
    if not argv or argv[0].rsplit("/", 1)[-1] != "git":
        return None
    rest = list(argv[1:])
    while rest and rest[0].startswith("-"):
        option = rest.pop(0)
        if option in _GIT_OPTIONS_WITH_VALUE and rest:
            rest.pop(0)
    if not rest or rest[0] != "push":
        return None
    positional: list[str] = []
    unknown = False
    args = rest[1:]
    while args:
        arg = args.pop(0)
        if arg in ("--all", "--mirror", "--tags", "--branches"):
            unknown = True
        elif arg in ("-o", "--push-option", "--repo", "--receive-pack", "--exec") and args:
            args.pop(0)
        elif arg == "--":
            positional.extend(args)
            break
        elif not arg.startswith("-"):
            positional.append(arg)
    branches: list[str | None] = []
    if unknown:
        branches.append(UNKNOWN_BRANCH)
    elif len(positional) < 2:
        branches.append(CURRENT_BRANCH)
    for refspec in positional[1:]:
        destination = refspec.lstrip("+").split(":")[-1].removeprefix("refs/heads/")
        if destination in ("HEAD", "@"):
            branches.append(CURRENT_BRANCH)
        elif not destination or any(c in destination for c in "*?[{$~"):
            branches.append(UNKNOWN_BRANCH)
        else:
            branches.append(destination)
    return branches
