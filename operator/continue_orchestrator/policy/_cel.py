"""CEL ``when`` conditions: compiled once, evaluated on demand.

Two environments: rules see the map variable ``request``, tool-result rules the map
variable ``result``; their keys are documented in docs/policy.md. The strings extension
is on (``split``, ``lowerAscii``, ...). ``matches`` is RE2: linear in its input, so a
pattern cannot be made to backtrack by what it is matched against.
"""

from __future__ import annotations

import re
from typing import Any

from cel_expr_python import cel
from cel_expr_python.ext import ext_strings

from continue_orchestrator import errors

_ENV = cel.NewEnv(
    variables={"request": cel.Type.Map(cel.Type.STRING, cel.Type.DYN)},
    extensions=[ext_strings.ExtStrings()],
)
RESULT_ENV = cel.NewEnv(
    variables={"result": cel.Type.Map(cel.Type.STRING, cel.Type.DYN)},
    extensions=[ext_strings.ExtStrings()],
)
"""The environment of tool-result conditions: the variable ``result``."""
_LOCATION = re.compile(r"<input>:(\d+):(\d+): ([^\n]*)")


class CompileError(ValueError):
    """A condition does not compile; ``line`` and ``column`` are 1-based."""

    def __init__(self, message: str, *, line: int, column: int) -> None:
        self.line = line
        self.column = column
        super().__init__(message)


class EvaluationError(RuntimeError):
    """A condition failed at run time (missing key, type error, non-boolean result)."""


def compile_condition(source: str, env: Any = None) -> Any:
    """Compile ``source`` (in ``env``, else the ``request`` one); raises ``CompileError``
    with the line and column of the fault."""
    try:
        expression = (env or _ENV).compile(source)
    except RuntimeError as error:
        found = _LOCATION.search(str(error))
        if found is None:
            raise CompileError(str(error), line=1, column=1) from None
        raise CompileError(
            found.group(3), line=int(found.group(1)), column=int(found.group(2))
        ) from None
    result = expression.return_type()
    if not (result == cel.Type.BOOL or result == cel.Type.DYN):
        raise CompileError(
            f"the condition yields {result.name().lower()}, not a boolean", line=1, column=1
        )
    return expression


def compile_when(
    source: str, known: frozenset[str], *, where: str, variable: str = "request"
) -> Any:
    """A rule's ``when`` condition over ``variable`` (``request`` or ``result``, whose keys
    are ``known``), compiled; raises ``errors.PolicyError`` at ``{where}.when`` naming the
    line and column of the fault."""
    try:
        program = compile_condition(source, RESULT_ENV if variable == "result" else None)
        check_keys(source, known, variable)
    except CompileError as error:
        raise errors.PolicyError(
            f"when condition does not compile at line {error.line}, column "
            f"{error.column}: {error}",
            where=f"{where}.when",
            fix=f"see docs/policy.md for the {variable} fields CEL can read",
        ) from None
    return program


_STRING = re.compile(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'')
_REFERENCE = re.compile(r"(?<![\w.])request\b(?:\s*\.\s*([A-Za-z_]\w*)(?!\s*\())?")
_RESULT_REFERENCE = re.compile(r"(?<![\w.])result\b(?:\s*\.\s*([A-Za-z_]\w*)(?!\s*\())?")


def _blank_strings(source: str) -> str:
    """``source`` with string literals' contents blanked, positions kept."""
    return _STRING.sub(lambda m: m.group(0)[0] + " " * (len(m.group(0)) - 2) + m.group(0)[-1],
                       source)


def referenced_keys(source: str, known: frozenset[str]) -> frozenset[str] | None:
    """The keys of ``request`` that ``source`` reads, or None if it may read any.

    Only ``request.KEY`` with a known key counts; any other use of ``request`` (passed
    whole, indexed, a method on it) needs the whole map.
    """
    keys = set()
    for found in _REFERENCE.finditer(_blank_strings(source)):
        key = found.group(1)
        if key is None or key not in known:
            return None
        keys.add(key)
    return frozenset(keys)


def check_keys(source: str, known: frozenset[str], variable: str = "request") -> None:
    """Refuse ``VARIABLE.KEY`` for a key the variable never has: a typo would deny forever."""
    reference = _RESULT_REFERENCE if variable == "result" else _REFERENCE
    for found in reference.finditer(_blank_strings(source)):
        key = found.group(1)
        if key is not None and key not in known:
            line = source.count("\n", 0, found.start(1)) + 1
            column = found.start(1) - (source.rfind("\n", 0, found.start(1)) + 1) + 1
            raise CompileError(
                f"{variable} has no key {key!r}; it has {', '.join(sorted(known))}",
                line=line,
                column=column,
            )


def holdable(text: str) -> str:
    """``text`` as CEL can hold it. The binding cuts a string at its first NUL, which
    would hide what follows from every condition (``"a\\x00DROP".contains("DROP")`` is
    false), and refuses lone surrogates: NUL becomes U+FFFD, and so does each byte of a
    lone surrogate."""
    if "\x00" in text:
        text = text.replace("\x00", "\ufffd")
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            text = text.encode("utf-8", "surrogatepass").decode("utf-8", "replace")
    return text


def holdable_data(value: Any) -> Any:
    """``value`` with every string in it ``holdable``."""
    if isinstance(value, str):
        return holdable(value)
    if isinstance(value, dict):
        return {holdable_data(k): holdable_data(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [holdable_data(item) for item in value]
    return value


def activation(data: dict[str, Any], env: Any = None, variable: str = "request") -> Any:
    """An activation binding ``variable`` to ``data`` (whose strings the caller made
    ``holdable``), shared by every condition of a decision."""
    try:
        return (env or _ENV).Activation({variable: data})
    except Exception as error:
        raise EvaluationError(f"{variable} cannot be given to CEL: {error}") from None


def evaluate(expression: Any, bound: Any) -> bool:
    """Evaluate a compiled condition; any error or a non-boolean is ``EvaluationError``."""
    try:
        value = expression.eval(bound)
    except Exception as error:
        raise EvaluationError(str(error)) from None
    result = value.value()
    if result is True or result is False:
        return result
    if value.type() == cel.Type.ERROR or value.type() == cel.Type.UNKNOWN:
        raise EvaluationError(str(result))
    raise EvaluationError(f"condition yielded {value.type().name().lower()}, not a boolean")
