"""Subcommands of ``trace-usage``; see :mod:`service.cli`. Shared here: the one-line error
every command ends with instead of a traceback, and the argument checks they share."""

from __future__ import annotations

import argparse
from typing import Any

_OURS = {"engine", "service", "benchmarks"}


class CommandError(Exception):
    """Ends a command with one line on stderr (``trace-usage <command>: <message>``) and
    exit code ``code``: 2 for a bad argument or setting, 1 for input or a store that cannot
    be used."""

    def __init__(self, message: str, code: int = 2) -> None:
        super().__init__(message)
        self.code = code


def missing_extra(err: ModuleNotFoundError, extras: str) -> CommandError:
    """The error for a command that needs an optional extra that is not installed
    (``make run`` installs only the runtime); re-raises when the missing module is one of
    ours, which would be a bug rather than an install step."""
    package = (err.name or "").split(".")[0]
    if package in _OURS:
        raise err
    return CommandError(
        f"needs the Python package {package!r}, which is not installed; install it with: "
        f"pip install -e '.[{extras}]'"
    )


def positive_int(text: str) -> int:
    """argparse type: an integer of at least 1 (``--workers 0`` is refused, not ignored)."""
    try:
        value = int(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from err
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def load_settings(**given: Any) -> Any:
    """:class:`service.settings.Settings` from ``given`` flags, then ``TRACE_USAGE_*``, then
    the defaults; a value out of range or of the wrong type is a :class:`CommandError`
    that names the flag or environment variable it came from."""
    from pydantic import ValidationError

    from service.settings import Settings

    try:
        return Settings(**given)
    except ValidationError as err:
        problems = []
        for error in err.errors():
            name = str(error["loc"][0]) if error["loc"] else "settings"
            source = (
                "--" + name.replace("_", "-") if name in given else f"TRACE_USAGE_{name.upper()}"
            )
            problems.append(f"{source}={error.get('input')!s}: {error['msg']}")
        raise CommandError("; ".join(problems)) from err
