"""``trace-usage`` command line: one subcommand module each under ``service/commands``.

Each module exposes ``register(subparsers)``, which adds its parser and sets ``func`` to a
callable taking the parsed ``argparse.Namespace`` and returning an exit code. A command
that cannot go on raises :class:`service.commands.CommandError`: one line on stderr and a
non-zero exit code, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from service.commands import CommandError

COMMANDS = ("serve", "import_", "keys", "rollup", "bench")


def build_parser() -> argparse.ArgumentParser:
    """The full parser, with every subcommand registered."""
    parser = argparse.ArgumentParser(
        prog="trace-usage", description="Weave /trace/usage engine and service."
    )
    subparsers = parser.add_subparsers(dest="command", required=True)
    for name in COMMANDS:
        importlib.import_module(f"service.commands.{name}").register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``trace-usage`` script."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except CommandError as err:
        command = " ".join(filter(None, (args.command, getattr(args, "action", None))))
        print(f"trace-usage {command}: {err}", file=sys.stderr)
        return err.code


if __name__ == "__main__":
    sys.exit(main())
