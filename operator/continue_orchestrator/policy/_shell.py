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

import collections
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
    """A file a redirection, or a program given it as an argument, reads or writes."""

    path: str
    write: bool
    expands: bool = False
    """``path`` is a glob the shell expands, or (``UNKNOWN_PATH``) not known at all: it is
    decided as the strictest file it could name."""


@dataclasses.dataclass(frozen=True, slots=True)
class CommandLine:
    """Everything a command line runs and every file its redirections touch."""

    commands: tuple[SimpleCommand, ...]
    redirects: tuple[Redirect, ...]
    """Redirections and the files programs are told to read or write (``_files``)."""


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


UNKNOWN_ARGUMENT = "\x00"
"""An argument known only at run time (what ``xargs`` appends, ``find -exec``'s ``{}``);
no command line can spell it, since a NUL byte is refused."""
UNKNOWN_PATH = "**"
"""The glob of a file known only at run time: it could be any file."""

_SHELL_OPTIONS_WITH_VALUE = frozenset({"-o", "+o", "-O", "+O", "--rcfile", "--init-file"})
_INFO = frozenset({"--version", "--help", "-h", "-help", "-version"})
_INTERPRETER = re.compile(
    r"(?:python[0-9.]*|pypy[0-9.]*|node|nodejs|perl[0-9.]*|ruby[0-9.]*|php[0-9.]*|lua[0-9.]*"
    r"|bun|Rscript|R|irb|tclsh|wish)"
)
# family -> (inline-code flags, short flags taking a value, long flags taking a value,
#            extra flags that only print and exit, flags that run a module or file)
_FAMILIES: dict[str, tuple[frozenset[str], frozenset[str], frozenset[str], frozenset[str]]] = {
    "python": (frozenset({"-c"}), frozenset({"-W", "-X", "-Q"}), frozenset(),
               frozenset({"-V"})),
    "node": (frozenset({"-e", "--eval", "-p", "--print"}), frozenset({"-r", "-C"}),
             frozenset({"--require", "--import", "--loader", "--experimental-loader",
                        "--conditions", "--input-type", "--env-file"}),
             frozenset({"-v"})),
    "perl": (frozenset({"-e", "-E"}), frozenset({"-I"}),
             frozenset(), frozenset({"-v", "-V"})),
    "ruby": (frozenset({"-e"}), frozenset({"-I", "-r", "-E", "-C"}), frozenset(),
             frozenset({"-v"})),
    "php": (frozenset({"-r"}), frozenset({"-c", "-d", "-z"}), frozenset(),
            frozenset({"-v", "-i", "-m"})),
    "lua": (frozenset({"-e"}), frozenset({"-l"}), frozenset(), frozenset({"-v"})),
    "bun": (frozenset({"-e", "--eval", "-p", "--print"}), frozenset(), frozenset(),
            frozenset({"-v"})),
    "Rscript": (frozenset({"-e"}), frozenset(), frozenset(), frozenset()),
}
_MODULE_FLAGS = frozenset({"-m"})
# Environment variables whose value is a command line some program runs through a shell.
_COMMAND_VARIABLES = frozenset(
    {"GIT_SSH_COMMAND", "GIT_PAGER", "GIT_EDITOR", "GIT_SEQUENCE_EDITOR", "GIT_EXTERNAL_DIFF",
     "GIT_ASKPASS", "SSH_ASKPASS", "GIT_PROXY_COMMAND", "GIT_SSH", "PAGER", "EDITOR", "VISUAL",
     "MANPAGER"}
)
# Environment variables that make programs run or read code the command line does not show.
_UNSEEN_VARIABLES = frozenset(
    {"BASH_ENV", "ENV", "LD_PRELOAD", "LD_AUDIT", "GIT_EXEC_PATH", "GIT_TEMPLATE_DIR",
     "PROMPT_COMMAND"}
)
# git configuration whose value is a command line git runs (through a shell).
_GIT_COMMAND_KEYS = re.compile(
    r"core\.(sshcommand|pager|editor|askpass|gitproxy|fsmonitor)|sequence\.editor|pager\..+"
    r"|diff\.external|diff\..+\.(textconv|command)|filter\..+\.(clean|smudge|process)"
    r"|merge\..+\.driver|gpg(\..+)?\.program|uploadpack\.packobjectshook"
    r"|interactive\.difffilter|credential(\..+)?\.helper|alias\..+|difftool\..+\.cmd"
    r"|mergetool\..+\.cmd|sendemail\..+cmd|sendemail\.(smtpserver|tocmd|cccmd)"
)
# git configuration that makes git run, or read, what the command line does not show.
_GIT_UNSEEN_KEYS = re.compile(
    r"core\.(hookspath|worktree)|include\.path|includeif\..+|init\.templatedir"
    r"|remote\..+\.(uploadpack|receivepack|vcs)|protocol\.(.+\.)?allow|url\..+insteadof"
)
_GIT_PROGRAM_OPTIONS = frozenset({"--upload-pack", "-u", "--receive-pack", "--exec", "-x",
                                  "--extcmd"})
_GIT_CONFIG_READS = frozenset(
    {"--get", "--get-all", "--get-regexp", "--get-urlmatch", "-l", "--list", "--get-color",
     "--get-colorbool", "get", "list"}
)
_GIT_CONFIG_WRITES = frozenset(
    {"--add", "--unset", "--unset-all", "--replace-all", "--rename-section",
     "--remove-section", "-e", "--edit", "set", "unset", "rename-section", "remove-section",
     "edit"}
)


def _option_value(
    arg: str, rest: collections.deque[str], names: frozenset[str]
) -> tuple[bool, str | None]:
    """Whether ``arg`` is one of ``names`` (``-x V``, ``-xV``, ``--long=V``, ``--long V``),
    consuming its value from ``rest``."""
    for name in names:
        if arg == name:
            return True, rest.popleft() if rest else None
        if name.startswith("--") and arg.startswith(name + "="):
            return True, arg[len(name) + 1 :]
        if not name.startswith("--") and len(name) == 2 and arg.startswith(name) and (
            len(arg) > 2 and not arg.startswith("--")
        ):
            return True, arg[2:]
    return False, None


def _shell_operands(args: list[str]) -> list[str]:
    rest = list(args)
    while rest and rest[0][:1] in "-+" and rest[0] not in ("-", "--"):
        if rest.pop(0) in _SHELL_OPTIONS_WITH_VALUE and rest:
            rest.pop(0)
    if rest and rest[0] == "--":
        rest.pop(0)
    return rest


def _shell_reads_stdin(args: list[str]) -> bool:
    if any(a.startswith("-") and not a.startswith("--") and "c" in a for a in args):
        return False
    if any(a in ("--version", "--help") for a in args):
        return False
    if any(a.startswith("-") and not a.startswith("--") and "s" in a[1:] for a in args):
        return True
    operands = _shell_operands(args)
    return not operands or operands[0] == "-"


def _family(program: str) -> str | None:
    if not _INTERPRETER.fullmatch(program):
        return None
    for family in _FAMILIES:
        if program.startswith(family):
            return family
    if program.startswith("pypy"):
        return "python"
    if program == "nodejs":
        return "node"
    return program  # irb, tclsh, wish, R: no inline flag, stdin when given no file


def _interpreter(argv: list[str]) -> tuple[str, str | None] | None:
    """(what the interpreter runs: "code", "file", "stdin" or "info"; the inline code)."""
    program = argv[0].rsplit("/", 1)[-1]
    family = _family(program)
    if family is None:
        return None
    inline, short_values, long_values, info = _FAMILIES.get(
        family, (frozenset(), frozenset(), frozenset(), frozenset())
    )
    rest = collections.deque(argv[1:])
    while rest:
        arg = rest.popleft()
        if arg == "--":
            return ("file", None) if rest and rest[0] != "-" else ("stdin", None)
        if arg == "-":
            return "stdin", None
        if arg in _INFO or arg in info:
            return "info", None
        if not arg.startswith("-"):
            return "file", None
        is_inline, code = _option_value(arg, rest, frozenset(f for f in inline if len(f) > 2))
        if is_inline:
            return "code", code
        if arg.startswith("--"):
            if arg.split("=", 1)[0] in long_values and "=" not in arg and rest:
                rest.popleft()
            continue
        # a cluster of short flags: -Ic, -uc CODE, -W ignore, -mpytest
        for position, flag in enumerate(arg[1:], start=1):
            name = "-" + flag
            attached = arg[position + 1 :]
            if name in inline:
                return "code", attached or (rest.popleft() if rest else None)
            if family == "python" and name in _MODULE_FLAGS:
                return "file", None
            if name in short_values:
                if not attached and rest:
                    rest.popleft()
                break
    return "stdin", None


def _refuse_unseen_program(argv: list[str]) -> None:
    """Refuse a program whose own program the parser cannot see: stdin, a sourced file."""
    program = argv[0].rsplit("/", 1)[-1]
    if UNKNOWN_ARGUMENT in argv[0]:
        raise ShellRejectedError("the program to run comes from input at run time (xargs, find)")
    if program in ("source", "."):
        raise ShellRejectedError(
            f"{program} runs the commands of a file in this shell; they cannot be checked"
        )
    if program in ("at", "batch"):
        raise ShellRejectedError(f"{program} reads the commands it runs from stdin")
    if program in _SHELLS and program != "busybox" and _shell_reads_stdin(argv[1:]):
        raise ShellRejectedError(
            f"{program} without -c reads its program from stdin, which cannot be checked"
        )
    found = _interpreter(argv)
    if found is not None and found[0] == "stdin":
        raise ShellRejectedError(
            f"{program} given no code or file reads its program from stdin, which cannot be "
            "checked"
        )


def _inline_code(argv: list[str]) -> tuple[str, ...] | None:
    """The interpreter-given-code view: ``PROGRAM -c CODE`` (``-e`` for the others), the
    program by name and every spelling of the flag (``-Ic``, ``--eval=``) made one."""
    found = _interpreter(argv)
    if found is None or found[0] != "code":
        return None
    code = found[1]
    if code is None:
        raise ShellRejectedError(f"{argv[0]} without the code to run")
    if UNKNOWN_ARGUMENT in code:
        raise ShellRejectedError(f"{argv[0]} runs code known only at run time")
    program = argv[0].rsplit("/", 1)[-1]
    family = _family(program) or program
    flag = {"python": "-c", "php": "-r"}.get(family, "-e")
    return (program, flag, code)


def _environment(assignment: str, depth: int, found: _Found) -> None:
    """Decide what a ``NAME=value`` assignment makes programs run."""
    name, _, value = assignment.partition("=")
    if name in _UNSEEN_VARIABLES or name.startswith("GIT_CONFIG"):
        raise ShellRejectedError(
            f"{name}= makes programs run or read code the command line does not show"
        )
    if name == "GIT_DIR" and value not in (".git", "") and not value.endswith("/.git"):
        raise ShellRejectedError(
            "GIT_DIR= points git at a repository whose config and hooks run programs the "
            "command line does not show"
        )
    if name in _COMMAND_VARIABLES and value:
        if UNKNOWN_ARGUMENT in value:
            raise ShellRejectedError(f"{name}= holds a command known only at run time")
        _split_into(value, depth + 1, found)


def _xargs(args: list[str]) -> list[list[str]] | None:
    """``xargs CMD ARGS``: CMD runs with arguments read at run time appended (or put in
    place of the ``-I`` string)."""
    rest = collections.deque(args)
    replace: str | None = None
    with_value = frozenset({"-n", "-P", "-L", "-d", "-E", "-s", "-a", "--max-args",
                            "--max-procs", "--max-lines", "--delimiter", "--eof",
                            "--max-chars", "--arg-file", "--process-slot-var"})
    while rest and rest[0].startswith("-") and rest[0] != "-":
        option = rest.popleft()
        if option == "--":
            break
        matched, value = _option_value(option, rest, frozenset({"-I", "--replace"}))
        if matched:
            replace = value or "{}"
            continue
        if option.startswith("-i"):
            replace = option[2:] or "{}"
            continue
        _option_value(option, rest, with_value)
    if not rest:
        return None  # runs echo
    if replace:
        return [[arg.replace(replace, UNKNOWN_ARGUMENT) for arg in rest]]
    return [[*rest, UNKNOWN_ARGUMENT]]


def _parallel(args: list[str]) -> list[list[str]] | None:
    rest = _strip_options(args, with_value=frozenset({"-j", "-S", "--jobs", "-a"}))
    command: list[str] = []
    for arg in rest:
        if arg.startswith(":::"):
            break
        command.append(arg)
    if not command:
        raise ShellRejectedError("parallel without a command runs command lines from stdin")
    if any("{" in arg for arg in command):
        return [[re.sub(r"\{[^}]*\}", UNKNOWN_ARGUMENT, arg) for arg in command]]
    return [[*command, UNKNOWN_ARGUMENT]]


# program -> (short/long options taking a value, whether operand 0 is not a file
#             (a pattern, a script, a mode), what the operands are: "read" or "write")
_FILE_PROGRAMS: dict[str, tuple[frozenset[str], bool, bool]] = {
    "cat": (frozenset(), False, False),
    "tac": (frozenset({"-s"}), False, False),
    "head": (frozenset({"-n", "-c"}), False, False),
    "tail": (frozenset({"-n", "-c", "--pid", "-s"}), False, False),
    "less": (frozenset({"-b", "-h", "-j", "-k", "-o", "-O", "-p", "-P", "-t", "-T", "-x", "-y",
                        "-z"}), False, False),
    "more": (frozenset({"-n"}), False, False),
    "nl": (frozenset({"-b", "-d", "-f", "-h", "-i", "-l", "-n", "-s", "-v", "-w"}), False,
           False),
    "wc": (frozenset(), False, False),
    "sort": (frozenset({"-k", "-t", "-S", "-T", "-o", "--output"}), False, False),
    "uniq": (frozenset({"-f", "-s", "-w"}), False, False),
    "od": (frozenset({"-A", "-j", "-N", "-t", "-w"}), False, False),
    "xxd": (frozenset({"-c", "-g", "-l", "-o", "-s"}), False, False),
    "hexdump": (frozenset({"-e", "-f", "-n", "-s"}), False, False),
    "strings": (frozenset({"-n", "-t", "-e"}), False, False),
    "base64": (frozenset({"-w"}), False, False),
    "md5sum": (frozenset(), False, False),
    "sha1sum": (frozenset(), False, False),
    "sha256sum": (frozenset(), False, False),
    "sha512sum": (frozenset(), False, False),
    "diff": (frozenset({"-U", "-C", "-x", "-X", "-I", "--label"}), False, False),
    "cmp": (frozenset({"-i", "-n"}), False, False),
    "comm": (frozenset(), False, False),
    "grep": (frozenset({"-e", "-f", "-m", "-A", "-B", "-C", "-d", "-D", "--include",
                        "--exclude", "--exclude-dir", "--label", "--color"}), True, False),
    "egrep": (frozenset({"-e", "-f", "-m", "-A", "-B", "-C"}), True, False),
    "fgrep": (frozenset({"-e", "-f", "-m", "-A", "-B", "-C"}), True, False),
    "rg": (frozenset({"-e", "-f", "-g", "-m", "-A", "-B", "-C", "-t", "-T", "--glob",
                      "--type"}), True, False),
    "awk": (frozenset({"-F", "-v", "-f"}), True, False),
    "gawk": (frozenset({"-F", "-v", "-f"}), True, False),
    "jq": (frozenset({"--arg", "--argjson", "-L", "--indent"}), True, False),
    "tee": (frozenset(), False, True),
    "truncate": (frozenset({"-s", "--size", "-r", "--reference"}), False, True),
    "touch": (frozenset({"-r", "-d", "-t", "--reference", "--date"}), False, True),
    "rm": (frozenset(), False, True),
    "rmdir": (frozenset(), False, True),
    "unlink": (frozenset(), False, True),
    "shred": (frozenset({"-n", "-s", "--iterations", "--size"}), False, True),
    "mkdir": (frozenset({"-m", "--mode"}), False, True),
    "chmod": (frozenset({"--reference"}), True, True),
    "chown": (frozenset({"--reference", "--from"}), True, True),
    "chgrp": (frozenset({"--reference"}), True, True),
}
_READ_OPTIONS = frozenset({"-f", "--file", "-r", "--reference", "-X", "--exclude-from"})
_COPY_PROGRAMS = frozenset({"cp", "mv", "install", "ln"})
_HARMLESS_OPERANDS = frozenset({"-", "/dev/stdin", *_HARMLESS_TARGETS})


def _access(path: str, *, write: bool) -> Redirect | None:
    if path in _HARMLESS_OPERANDS or not path:
        return None
    if UNKNOWN_ARGUMENT in path or "$" in path or (
        "{" in path and ("," in path or ".." in path)
    ):
        return Redirect(UNKNOWN_PATH, write=write, expands=True)
    return Redirect(path, write=write, expands=any(c in path for c in "*?["))


def _operands(args: list[str], with_value: frozenset[str]) -> tuple[list[str], list[str]]:
    """(operands, values of the options that name files to read) of ``args``."""
    rest = collections.deque(args)
    operands: list[str] = []
    reads: list[str] = []
    while rest:
        arg = rest.popleft()
        if arg == "--":
            operands.extend(rest)
            break
        if not arg.startswith("-") or arg == "-":
            operands.append(arg)
            continue
        matched, value = _option_value(arg, rest, with_value)
        if matched and value is not None:
            name = arg.split("=", 1)[0] if arg.startswith("--") else arg[:2]
            if name in _READ_OPTIONS:
                reads.append(value)
    return operands, reads


def _files(argv: list[str]) -> list[Redirect]:
    """Files a program is told in its arguments to read or write (docs/policy.md has the
    table)."""
    program = argv[0].rsplit("/", 1)[-1]
    args = argv[1:]
    found: list[Redirect | None] = []
    if program in _FILE_PROGRAMS:
        with_value, first_is_not_file, write = _FILE_PROGRAMS[program]
        operands, reads = _operands(args, with_value)
        if first_is_not_file and operands and not (
            program in ("grep", "egrep", "fgrep", "rg")
            and any(a in ("-e", "-f") or a.startswith(("-e", "-f", "--regexp", "--file"))
                    for a in args)
        ) and not (program in ("awk", "gawk") and any(a.startswith("-f") for a in args)):
            operands = operands[1:]
        if program in ("awk", "gawk"):
            operands = [o for o in operands if not _ASSIGNMENT.match(o)]
        found += [_access(path, write=write) for path in operands]
        found += [_access(path, write=False) for path in reads]
        if program == "sort":
            found += [_access(v, write=True) for v in _option_values(args, "-o", "--output")]
    elif program == "sed":
        found += _sed(args)
    elif program == "dd":
        for arg in args:
            if arg.startswith("of="):
                found.append(_access(arg[3:], write=True))
            elif arg.startswith("if="):
                found.append(_access(arg[3:], write=False))
    elif program in _COPY_PROGRAMS:
        found += _copy(program, args)
    elif program == "tar":
        found += _tar(args)
    elif program == "find":
        found += _find(args)
    return [f for f in found if f is not None]


def _option_values(args: list[str], short: str, long: str) -> list[str]:
    values: list[str] = []
    rest = collections.deque(args)
    while rest:
        arg = rest.popleft()
        matched, value = _option_value(arg, rest, frozenset({short, long}))
        if matched and value is not None:
            values.append(value)
    return values


def _sed(args: list[str]) -> list[Redirect | None]:
    in_place = any(
        a.startswith("--in-place") or (a.startswith("-") and not a.startswith("--") and "i" in a)
        for a in args
    )
    operands, _ = _operands(args, frozenset({"-e", "-f", "--expression", "--file", "-l"}))
    scripts = [a for a in args if a in ("-e", "-f") or a.startswith(("-e", "-f", "--expr"))]
    if not scripts and operands:
        operands = operands[1:]
    found = [_access(path, write=in_place) for path in operands]
    if in_place:
        found += [_access(path, write=False) for path in operands]
    found += [_access(path, write=False) for path in _option_values(args, "-f", "--file")]
    return found


def _copy(program: str, args: list[str]) -> list[Redirect | None]:
    """cp/mv/install/ln SOURCE... DEST: DEST and DEST/NAME of each source are written;
    sources are read (mv: written, they go away; ln: written, a link lends their access)."""
    with_value = frozenset({"-t", "--target-directory", "-S", "--suffix", "-m", "--mode",
                            "-o", "--owner", "-g", "--group"})
    operands, _ = _operands(args, with_value)
    targets = _option_values(args, "-t", "--target-directory")
    if program == "install" and any(a in ("-d", "--directory") for a in args):
        return [_access(path, write=True) for path in operands]
    if targets:
        sources, destination = operands, targets[-1]
    elif len(operands) >= 2:
        sources, destination = operands[:-1], operands[-1]
    elif operands and program == "ln":
        sources, destination = operands, "."
    else:
        return [_access(path, write=True) for path in operands]
    found = [_access(destination, write=True)]
    for source in sources:
        name = source.rstrip("/").rsplit("/", 1)[-1]
        if name not in ("", ".", ".."):
            found.append(_access(f"{destination.rstrip('/')}/{name}", write=True))
        found.append(_access(source, write=program in ("mv", "ln")))
        if program == "ln" or program == "mv":
            found.append(_access(source, write=False))
    return found


def _tar(args: list[str]) -> list[Redirect | None]:
    flags = args[0] if args and not args[0].startswith("-") else ""
    rest = args[1:] if flags else list(args)
    letters = flags + "".join(a[1:] for a in rest if a.startswith("-") and not a.startswith("--"))
    longs = {a.split("=", 1)[0] for a in rest if a.startswith("--")}
    extract = "x" in letters or "--extract" in longs or "--get" in longs
    create = bool({"c", "r", "u", "A"} & set(letters)) or bool(
        {"--create", "--append", "--update"} & longs
    )
    archives = _option_values(rest, "-f", "--file")
    if "f" in flags and not archives:
        positional = [a for a in rest if not a.startswith("-")]
        archives = positional[:1]
        rest = [a for a in rest if a not in archives[:1]]
    directories = _option_values(rest, "-C", "--directory") or ["."]
    operands, _ = _operands(rest, frozenset({"-f", "--file", "-C", "--directory", "-T",
                                             "--files-from", "-X", "--exclude-from"}))
    found = [_access(path, write=create) for path in archives]
    if extract:
        # The archive's member names are known only at run time: any file under -C.
        found.append(Redirect(f"{directories[-1].rstrip('/')}/**".removeprefix("./"),
                              write=True, expands=True))
    elif create:
        found += [_access(path, write=False) for path in operands]
    return found


def _find(args: list[str]) -> list[Redirect | None]:
    roots: list[str] = []
    for arg in args:
        if arg.startswith(("-", "(", "!", ")")) and arg not in ("-",):
            break
        roots.append(arg)
    found: list[Redirect | None] = []
    for index, arg in enumerate(args):
        if arg == "-delete":
            found += [Redirect(f"{root.rstrip('/')}/**".removeprefix("./"), write=True,
                               expands=True) for root in roots or ["."]]
        elif arg in ("-fprint", "-fprint0", "-fprintf", "-fls") and index + 1 < len(args):
            found.append(_access(args[index + 1], write=True))
    return found


def _git(argv: list[str], depth: int, found: _Found) -> None:
    """What a git command can do beyond its subcommand: configuration that runs programs
    (``-c core.sshCommand=``, aliases), options that do (``--upload-pack``), ``git config``
    writes; each is decided as what it runs, or refused when that cannot be seen."""
    rest = list(argv[1:])
    directory = ""
    aliases: dict[str, str] = {}
    while rest and rest[0].startswith("-"):
        option = rest.pop(0)
        key_value: str | None = None
        if option in ("-c", "--config-env") and rest:
            key_value = rest.pop(0)
        elif option.startswith("-c") and len(option) > 2:
            key_value = option[2:]
        elif option.startswith("--config-env="):
            key_value = option.split("=", 1)[1]
        elif option.startswith("--exec-path="):
            raise ShellRejectedError("git --exec-path= runs git programs from another directory")
        elif option in ("--git-dir", "-C", "--work-tree", "--namespace", "--super-prefix"):
            value = rest.pop(0) if rest else ""
            if option == "-C":
                directory = f"{directory}{value.rstrip('/')}/"
            elif option == "--git-dir":
                _git_dir(value)
        elif option.startswith("--git-dir="):
            _git_dir(option.split("=", 1)[1])
        if key_value is not None:
            key, _, value = key_value.partition("=")
            if option.startswith("--config-env"):
                _git_config(key, UNKNOWN_ARGUMENT, depth, found)
            _git_config(key, value, depth, found)
            if key.lower().startswith("alias.") and not value.startswith("!"):
                aliases[key[len("alias.") :]] = value
    if not rest:
        return
    command, args = rest[0], rest[1:]
    if command in aliases:
        try:
            expanded = shlex.split(aliases[command])
        except ValueError:
            raise ShellRejectedError(
                f"git alias {command} cannot be split: unbalanced quotes"
            ) from None
        if expanded:
            _views([argv[0], *expanded, *args], depth + 1, found)
    if command == "config":
        _git_config_command(args, directory, depth, found)
    elif command in ("clone", "init"):
        for arg in args:
            if arg.startswith(("--template", "--separate-git-dir")):
                raise ShellRejectedError(
                    f"git {command} {arg.split('=', 1)[0]} installs hooks or config the "
                    "command line does not show"
                )
        values = _option_values(args, "-c", "--config")
        for key_value in values:
            key, _, value = key_value.partition("=")
            _git_config(key, value, depth, found)
    elif command == "submodule" and "foreach" in args:
        script = args[args.index("foreach") + 1 :]
        script = [a for a in script if a not in ("--recursive", "-q", "--quiet")]
        if script:
            _split_into(" ".join(script), depth + 1, found)
    elif command == "bisect" and args[:1] == ["run"] and len(args) > 1:
        _views(args[1:], depth + 1, found)
    elif command == "filter-branch":
        for index, arg in enumerate(args):
            if arg.endswith("-filter") and index + 1 < len(args):
                _split_into(args[index + 1], depth + 1, found)
    if command in ("push", "fetch", "pull", "clone", "ls-remote", "archive", "rebase",
                   "difftool", "mergetool", "send-pack", "fetch-pack"):
        for index, arg in enumerate(args):
            following = collections.deque(args[index + 1 : index + 2])
            matched, program = _option_value(arg, following, _GIT_PROGRAM_OPTIONS)
            if matched and not (arg == "-u" and command in ("push", "pull", "fetch")) and not (
                arg == "-x" and command not in ("rebase", "difftool")
            ):
                if program is None or UNKNOWN_ARGUMENT in program:
                    raise ShellRejectedError(
                        f"git {command} {arg} runs a program known only at run time"
                    )
                _split_into(program, depth + 1, found)


def _git_dir(value: str) -> None:
    if value not in (".git", "") and not value.rstrip("/").endswith("/.git") and (
        value.rstrip("/") != ".git"
    ):
        raise ShellRejectedError(
            "git --git-dir= points git at a repository whose config and hooks run programs "
            "the command line does not show"
        )


def _git_config(key: str, value: str, depth: int, found: _Found) -> None:
    """Decide one git configuration ``key=value`` for what it makes git run."""
    lowered = key.lower()
    if _GIT_UNSEEN_KEYS.fullmatch(lowered):
        raise ShellRejectedError(
            f"git config {key} makes git run or read what the command line does not show"
        )
    if not _GIT_COMMAND_KEYS.fullmatch(lowered):
        return
    if UNKNOWN_ARGUMENT in value:
        raise ShellRejectedError(f"git config {key} runs a command known only at run time")
    if lowered.startswith("alias."):
        if value.startswith("!"):
            _split_into(value[1:], depth + 1, found)
        return
    if lowered.startswith("credential") and not value.startswith("!"):
        if value.strip():
            raise ShellRejectedError(
                f"git config {key}={value} runs git-credential-{value}, a program the "
                "command line does not show"
            )
        return
    if lowered == "core.fsmonitor" and value.lower() in ("true", "false", "0", "1", ""):
        return
    command = value[1:] if value.startswith("!") else value
    if command.strip():
        _split_into(command, depth + 1, found)


def _git_config_command(args: list[str], directory: str, depth: int, found: _Found) -> None:
    """``git config`` that changes a configuration file writes it: a ``file.write``."""
    values = {"-f", "--file", "--blob", "--type", "--default", "--comment"}
    positional: list[str] = []
    target = f"{directory}.git/config"
    rest = collections.deque(args)
    writes = False
    reads = False
    while rest:
        arg = rest.popleft()
        name = arg.split("=", 1)[0]
        if name in ("-f", "--file"):
            value = arg.split("=", 1)[1] if "=" in arg else (rest.popleft() if rest else "")
            target = value if value.startswith("/") else f"{directory}{value}"
        elif name in values:
            if "=" not in arg and rest:
                rest.popleft()
        elif arg == "--global":
            target = "~/.gitconfig"
        elif arg == "--system":
            target = "/etc/gitconfig"
        elif arg == "--worktree":
            target = f"{directory}.git/config.worktree"
        elif name in _GIT_CONFIG_WRITES or (not positional and arg in _GIT_CONFIG_WRITES):
            writes = True
        elif name in _GIT_CONFIG_READS:
            reads = True
        elif not arg.startswith("-"):
            positional.append(arg)
    if positional and positional[0] in _GIT_CONFIG_WRITES:
        writes = True
        positional = positional[1:]
    elif positional and positional[0] in _GIT_CONFIG_READS:
        reads = True
    if not reads and len(positional) >= 2:
        writes = True
        _git_config(positional[0], positional[1], depth, found)
    if writes:
        found.files.append(Redirect(target, write=True))


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
                if UNKNOWN_ARGUMENT in args[index + 1]:
                    raise ShellRejectedError(
                        f"{program} -c runs a command line known only at run time"
                    )
                return args[index + 1]
        operands = _shell_operands(args)
        return [operands] if operands else None
    if program == "git":
        rest = list(args)
        while rest and rest[0].startswith("-"):
            option = rest.pop(0)
            if option in _GIT_OPTIONS_WITH_VALUE and rest:
                rest.pop(0)
        return [[argv[0], *rest]] if len(rest) != len(args) and rest else None
    if program == "eval":
        if any(UNKNOWN_ARGUMENT in arg for arg in args):
            raise ShellRejectedError("eval runs a command line known only at run time")
        return " ".join(args)
    if program == "env":
        rest = _strip_options(args, with_value=frozenset({"-u", "-C", "-S"}))
        # The assignments stay: they are decided too (GIT_SSH_COMMAND=..., BASH_ENV=...).
        return [rest] if rest else None
    if program in ("export", "declare", "typeset", "readonly", "local"):
        return [[*(a for a in args if _ASSIGNMENT.match(a)), "true"]]
    if program in ("nohup", "builtin", "command", "exec", "time", "nice", "stdbuf"):
        if program == "command" and any(a in ("-v", "-V") for a in args):
            return None  # prints what the name is; runs nothing
        rest = _strip_options(args, with_value=frozenset({"-n", "-a"}))
        return [rest] if rest else None
    if program in ("sudo", "doas"):
        rest = _strip_options(args, with_value=frozenset({"-u", "-g", "-C", "-D", "-h", "-p"}))
        if not rest and any(a in ("-s", "-i", "--shell", "--login") for a in args):
            raise ShellRejectedError(f"{program} -s/-i starts a shell that reads stdin")
        return [rest] if rest else None
    if program == "timeout":
        rest = _strip_options(args, with_value=frozenset({"-s", "-k", "--signal"}))
        return [rest[1:]] if len(rest) > 1 else None
    if program == "xargs":
        return _xargs(args)
    if program == "parallel":
        return _parallel(args)
    if program == "find":
        found: list[list[str]] = []
        for index, arg in enumerate(args):
            if arg in ("-exec", "-execdir", "-ok", "-okdir"):
                inner: list[str] = []
                for part in args[index + 1 :]:
                    if part in (";", "+"):
                        break
                    inner.append(part.replace("{}", UNKNOWN_ARGUMENT))
                if inner:
                    found.append(inner)
        return found or None
    if program == "watch":
        rest = _strip_options(args, with_value=frozenset({"-n", "-d", "--interval"}))
        return " ".join(rest) if rest else None
    if program == "setsid":
        rest = _strip_options(args)
        return [rest] if rest else None
    return None


_EXAMINED = frozenset(
    {*_SHELLS, *_FILE_PROGRAMS, *_COPY_PROGRAMS, "source", ".", "at", "batch", "sed", "dd",
     "tar", "find", "git"}
)
"""Programs ``_views`` looks into (besides interpreters); the rest cost nothing more."""


class _Found:
    """What one command line runs and touches, gathered through every nesting."""

    __slots__ = ("commands", "files")

    def __init__(self) -> None:
        self.commands: list[SimpleCommand] = []
        self.files: list[Redirect] = []


def _views(argv: list[str], depth: int, found: _Found) -> None:
    if depth > _MAX_DEPTH:
        raise ShellRejectedError("commands nested too deeply to check")
    found.commands.append(SimpleCommand(tuple(argv), shlex.join(argv)))
    stripped = list(argv)
    assignments: list[str] = []
    while stripped and _ASSIGNMENT.match(stripped[0]):
        assignments.append(stripped.pop(0))
    for assignment in assignments:
        _environment(assignment, depth, found)
    if not stripped:
        return
    if stripped != argv:
        found.commands.append(SimpleCommand(tuple(stripped), shlex.join(stripped)))
    if "/" in stripped[0]:
        named = [stripped[0].rsplit("/", 1)[-1], *stripped[1:]]
        found.commands.append(SimpleCommand(tuple(named), shlex.join(named)))
    program = stripped[0].rsplit("/", 1)[-1]
    if program in _EXAMINED or UNKNOWN_ARGUMENT in program or _INTERPRETER.fullmatch(program):
        _refuse_unseen_program(stripped)
        inline = _inline_code(stripped)
        if inline is not None:
            found.commands.append(SimpleCommand(inline, shlex.join(inline)))
        found.files.extend(_files(stripped))
        if program == "git":
            _git(stripped, depth, found)
    inner = _unwrap(stripped)
    if isinstance(inner, str):
        _split_into(inner, depth + 1, found)
    elif inner is not None:
        for nested in inner:
            if nested:
                _views(nested, depth + 1, found)


def _split(line: str, depth: int) -> CommandLine:
    found = _Found()
    _split_into(line, depth, found)
    return CommandLine(tuple(dict.fromkeys(found.commands)), tuple(dict.fromkeys(found.files)))


def _split_into(line: str, depth: int, found: _Found) -> None:
    if depth > _MAX_DEPTH:
        raise ShellRejectedError("commands nested too deeply to check")
    tokens = _tokenise(line)
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
        _views([w.text for w in words], depth, found)

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
                found.files.append(Redirect(target.text, write=token not in _READS))
        else:
            raise ShellRejectedError(f"unexpected shell operator {token!r}")
    finish()


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
        elif not destination or any(c in destination for c in "*?[{$~" + UNKNOWN_ARGUMENT):
            branches.append(UNKNOWN_BRANCH)
        else:
            branches.append(destination)
    return branches
