"""`trace-usage keys` (not implemented yet)."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `keys` subcommand."""
    parser = subparsers.add_parser("keys", help="not implemented yet")
    parser.set_defaults(func=lambda args: print("not implemented yet") or 2)
