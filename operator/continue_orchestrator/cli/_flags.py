"""Flags that may also come from the environment, as the chart's Deployments set them.

The long-running commands (``gateway``, ``operator``) take every setting as a flag or
from an environment variable named in the flag's help. The flag wins, then the
variable, then the default. A bad value from either is a usage error that names the
flag and, when it came from there, the variable: never a traceback at start-up.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from typing import Any

Convert = Callable[[str], Any]


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
