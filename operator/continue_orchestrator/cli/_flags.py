"""Flags that may also come from the environment, as the chart's Deployments set them.

The long-running commands (``gateway``, ``operator``) take every setting as a flag or
from an environment variable named in the flag's help. The flag wins, then the
variable, then the default. A bad value from either is a usage error that names the
flag and, when it came from there, the variable: never a traceback at start-up.

The gateway's admin token is read here too, for the gateway that checks it and for the
commands that present it (``approve``, ``operator``), so all of them read it alike.
"""

from __future__ import annotations

import argparse
import inspect
import os
import pathlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeAlias

from continue_orchestrator import errors

Convert = Callable[[str], Any]
if TYPE_CHECKING:  # argparse's class is generic to the type checker only
    Subparsers: TypeAlias = argparse._SubParsersAction[argparse.ArgumentParser]
else:
    Subparsers = argparse._SubParsersAction
ADMIN_TOKEN_ENV = "ORCHESTRATOR_ADMIN_TOKEN"
"""The variable holding the gateway's admin token itself, where no token file is given."""


def add(
    parser: argparse.ArgumentParser,
    flag: str,
    *,
    env: str,
    help: str,
    type: Convert = str,
    default: Any = None,
    show_default: bool = True,
    **options: Any,
) -> None:
    """``flag``, defaulting to ``$env`` when set, else to ``default``."""
    raw = os.environ.get(env, "")
    choices = options.get("choices")
    if raw and choices is not None and raw not in choices:
        parser.error(f"${env}={raw!r} (for {flag}) is not one of {', '.join(choices)}")
    shown = f", default {default}" if show_default and default not in (None, "") else ""
    parser.add_argument(
        flag,
        type=_converter(type, flag, env),
        # argparse converts a string default with ``type`` only when the flag is not
        # given, so a bad variable is reported then, and a flag can override it.
        default=raw if raw else default,
        help=f"{help} (${env}{shown})",
        **options,
    )


def add_switch(parser: argparse.ArgumentParser, flag: str, *, env: str, help: str) -> None:
    """An on/off ``flag``, on when given or when ``$env`` is ``1`` or ``true``."""
    raw = os.environ.get(env, "").strip().lower()
    if raw not in ("", "0", "1", "false", "true"):
        parser.error(f"${env}={raw!r} (for {flag}) is not 1, 0, true or false")
    parser.add_argument(
        flag, action="store_true", default=raw in ("1", "true"), help=f"{help} (${env}=1)"
    )


def add_list(parser: argparse.ArgumentParser, flag: str, *, env: str, help: str) -> None:
    """A repeatable ``flag``; ``$env`` holds the values comma-separated."""
    values = [value.strip() for value in os.environ.get(env, "").split(",") if value.strip()]
    parser.add_argument(
        flag, action="append", default=values, help=f"{help} (${env}, comma-separated)"
    )


def _converter(convert: Convert, flag: str, env: str) -> Convert:
    if convert is str:
        return convert
    kind = "a whole number" if convert is int else "a number" if convert is float else "valid"

    def checked(text: str) -> Any:
        try:
            return convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{text!r} is not {kind} (given as {flag} or in ${env})"
            ) from None

    checked.__name__ = getattr(convert, "__name__", flag)
    return checked


def read_token(path: str | os.PathLike[str], *, what: str, where: str, fix: str) -> str:
    """The token in the file at ``path``, without surrounding whitespace; raises
    ``errors.GatewayError`` saying it cannot read ``what``."""
    try:
        return pathlib.Path(path).read_text(encoding="utf-8").strip()
    except OSError as error:
        raise errors.GatewayError(
            f"cannot read {what}: {error.strerror}", where=where, fix=fix
        ) from None


def admin_token(path: str | os.PathLike[str] | None, *, where: str, fix: str) -> str:
    """The gateway's admin token: from the file at ``path`` when given, else from
    ``$ORCHESTRATOR_ADMIN_TOKEN``; surrounding whitespace is no part of it. "" if unset."""
    if path:
        return read_token(path, what="the admin token", where=where, fix=fix)
    return os.environ.get(ADMIN_TOKEN_ENV, "").strip()


def command(subparsers: Subparsers, name: str, text: str) -> argparse.ArgumentParser:
    """Add the command ``name``: the first paragraph of ``text`` is its one-line help in
    ``orchestrator --help``, the rest its description in ``orchestrator NAME --help``.

    Every command's help is written once, as prose, where the command is defined.
    """
    help_text, _, description = inspect.cleandoc(text).partition("\n\n")
    return subparsers.add_parser(
        name,
        help=" ".join(help_text.split()),
        description=" ".join(description.split()) or None,
    )
