"""`trace-usage rollup` (not implemented yet)."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `rollup` subcommand."""
    parser = subparsers.add_parser("rollup", help="not implemented yet")
    parser.set_defaults(func=lambda args: print("not implemented yet") or 2)
