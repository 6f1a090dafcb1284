"""``trace-usage import FILE... [--data-dir DIR]``: load calls into the store.

JSON Lines (one Weave call per line, gzip accepted) and canonical Parquet, streamed in
batches with a progress bar; re-running it is idempotent (every row is an upsert).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tqdm import tqdm

from engine.errors import InputDataError


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``import`` subcommand."""
    parser = subparsers.add_parser(
        "import",
        help="import calls from JSON Lines or Parquet files",
        description="Import Weave calls (JSON Lines, optionally gzip'd; or Parquet in the "
        "canonical call schema) into the store of --data-dir. Idempotent.",
    )
    parser.add_argument("files", nargs="+", type=Path, metavar="FILE")
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="store directory (env TRACE_USAGE_DATA_DIR, default data)",
    )
    parser.add_argument("--batch-rows", type=int, default=None, help="rows per transaction")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Import the files; exit code 1 (with the reason) on unreadable input."""
    from service.importer import BATCH_ROWS, import_files
    from service.settings import Settings
    from service.store import CallStore, StoreLockedError

    settings = Settings(**({"data_dir": args.data_dir} if args.data_dir else {}))
    missing = [str(p) for p in args.files if not p.is_file()]
    if missing:
        print(f"trace-usage import: no such file: {', '.join(missing)}", file=sys.stderr)
        return 2
    bars: list[tqdm] = []

    def progress(path: Path, total: int):
        unit = "rows" if path.suffix == ".parquet" else "B"
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
    except StoreLockedError as err:
        print(f"trace-usage import: {err}", file=sys.stderr)
        return 1
    try:
        stats = import_files(
            store, args.files, batch_rows=args.batch_rows or BATCH_ROWS, progress=progress
        )
    except InputDataError as err:
        print(f"trace-usage import: {err}", file=sys.stderr)
        return 1
    finally:
        for bar in bars:
            bar.close()
        store.close()
    print(f"imported {stats.rows} rows from {stats.files} file(s) into {settings.db_path}")
    return 0
