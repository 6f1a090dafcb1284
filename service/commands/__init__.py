"""Subcommands of ``trace-usage``; see :mod:`service.cli`."""

from __future__ import annotations

import sys

_OURS = {"engine", "service", "benchmarks"}


def missing_extra(command: str, err: ModuleNotFoundError, extras: str) -> int:
    """Report, as one line and exit code 2, that ``command`` needs an optional extra that
    is not installed (``make run`` installs only the runtime); re-raise when the missing
    module is one of ours, which would be a bug rather than an install step."""
    package = (err.name or "").split(".")[0]
    if package in _OURS:
        raise err
    print(
        f"trace-usage {command}: needs the Python package {package!r}, which is not "
        f"installed; install it with: pip install -e '.[{extras}]'",
        file=sys.stderr,
    )
    return 2
