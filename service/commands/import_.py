"""`trace-usage import` (not implemented yet)."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `import` subcommand."""
    parser = subparsers.add_parser("import", help="not implemented yet")
    parser.set_defaults(func=lambda args: print("not implemented yet") or 2)
