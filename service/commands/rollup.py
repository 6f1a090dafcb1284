"""`trace-usage rollup`: score exported calls in bulk, with Polars or on Spark."""

from __future__ import annotations

import argparse
import sys
from typing import Any

import orjson

from engine.errors import InputDataError, TraceUsageError
from service.commands import CommandError, missing_extra, positive_int


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `rollup` subcommand."""
    parser = subparsers.add_parser(
        "rollup",
        help="roll up usage of exported calls, trace by trace, into Parquet",
        description="One row per (call, model) of each call's usage rolled up with its "
        "descendants, every trace being one selection (no limit applies).",
    )
    parser.add_argument(
        "inputs", nargs="+", metavar="INPUT", help="Parquet or JSON Lines: file, dir or glob"
    )
    parser.add_argument(
        "--output", "-o", required=True, help="Parquet file to write (spark: a directory)"
    )
    parser.add_argument("--include-costs", action="store_true", help="price every row")
    parser.add_argument("--prices", help="CSV/Parquet of extra (project) price rows")
    parser.add_argument("--project", help="only this project's traces")
    parser.add_argument("--filter", type=_json, help="CallsFilter as JSON, applied per trace")
    parser.add_argument("--query", type=_json, help='{"$expr": ...} as JSON, applied per trace')
    parser.add_argument("--summary-usage", choices=("own", "auto"), default="own")
    parser.add_argument("--engine", choices=("polars", "spark"), default="polars")
    parser.add_argument("--master", default="local[*]", help="Spark master (--engine spark)")
    parser.add_argument(
        "--buckets",
        type=positive_int,
        help="hash buckets of traces (polars default: by --bucket-rows; spark default: one "
        "group per trace)",
    )
    parser.add_argument(
        "--bucket-rows", type=positive_int, default=500_000, help="calls per bucket (polars)"
    )
    parser.add_argument(
        "--workers", type=positive_int, help="worker processes (polars; default: one per CPU)"
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.set_defaults(func=run)


def _json(text: str) -> dict[str, Any]:
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError as err:
        raise argparse.ArgumentTypeError(f"not JSON: {err}") from err
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("must be a JSON object")
    return value


def run(args: argparse.Namespace) -> int:
    """Run the rollup. Inputs that do not exist or whose format cannot be told, and bad
    options, end with exit code 2; unreadable input with 1 (one line each)."""
    from engine.io import input_files

    common = {
        "include_costs": args.include_costs,
        "prices": args.prices,
        "project_id": args.project,
        "filter": args.filter,
        "query": args.query,
        "summary_usage": args.summary_usage,
    }
    try:
        input_files(args.inputs)
    except InputDataError as err:
        raise CommandError(str(err)) from err
    try:
        if args.engine == "spark":
            try:
                from engine.spark import rollup_spark_files
            except ModuleNotFoundError as err:
                raise missing_extra(err, "spark") from err

            rollup_spark_files(
                args.inputs, args.output, master=args.master, buckets=args.buckets, **common
            )
            print(f"wrote {args.output}", file=sys.stderr)
            return 0
        from engine.batch import rollup_files

        stats = rollup_files(
            args.inputs,
            args.output,
            buckets=args.buckets,
            bucket_rows=args.bucket_rows,
            workers=args.workers,
            progress=not args.no_progress,
            **common,
        )
    except InputDataError as err:
        raise CommandError(str(err), code=1) from err
    except TraceUsageError as err:
        raise CommandError(str(err)) from err
    print(
        f"wrote {stats.rows} rows for {stats.calls} calls in {stats.traces} traces "
        f"to {args.output}",
        file=sys.stderr,
    )
    return 0
