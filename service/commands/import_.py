"""``trace-usage import INPUT... [--data-dir DIR]``: load calls into the store.

JSON Lines (one Weave call per line, bare or as ``{"start": ...}``, gzip accepted) and
canonical Parquet, read by the reader ``trace-usage rollup`` uses (same rules, same
errors), streamed in batches with a progress bar; re-running it is idempotent (every row
is an upsert).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tqdm import tqdm

from engine.errors import InputDataError
from service.commands import CommandError, load_settings, positive_int


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``import`` subcommand."""
    parser = subparsers.add_parser(
        "import",
        help="import calls from JSON Lines or Parquet files",
        description="Import Weave calls (JSON Lines, optionally gzip'd; or Parquet in the "
        "canonical call schema) into the store of --data-dir. Idempotent.",
    )
    parser.add_argument(
        "files", nargs="+", metavar="INPUT", help="Parquet or JSON Lines: file, dir or glob"
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="store directory (env TRACE_USAGE_DATA_DIR, default data)",
    )
    parser.add_argument(
        "--batch-rows", type=positive_int, default=None, help="rows per transaction"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Import the inputs: exit code 2 for inputs that do not exist or whose format cannot
    be told, 1 (with the reason) for unreadable input or a store held elsewhere."""
    from engine.io import input_files
    from service.importer import BATCH_ROWS, import_files
    from service.store import CallStore
    from service.store_errors import StoreOpenError

    settings = load_settings(**({"data_dir": args.data_dir} if args.data_dir else {}))
    try:
        files = [path for path, _ in input_files(args.files)]
    except InputDataError as err:
        raise CommandError(str(err)) from err
    bars: list[tqdm] = []

    def progress(path: Path, total: int, unit: str):
        bar = tqdm(
            total=total,
            desc=path.name,
            unit=unit,
            unit_scale=True,
            disable=args.quiet,
            file=sys.stderr,
        )
        bars.append(bar)
        return bar.update

    try:
        store = CallStore(settings.db_path)
    except StoreOpenError as err:
        raise CommandError(str(err), code=1) from err
    try:
        stats = import_files(
            store, files, batch_rows=args.batch_rows or BATCH_ROWS, progress=progress
        )
    except InputDataError as err:
        raise CommandError(str(err), code=1) from err
    finally:
        for bar in bars:
            bar.close()
        store.close()
    print(f"imported {stats.rows} rows from {stats.files} file(s) into {settings.db_path}")
    return 0
